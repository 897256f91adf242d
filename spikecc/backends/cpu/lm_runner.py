"""Run a spiking language-model graph token by token in the CPU simulator: prompts, greedy generation,
and per-layer activity statistics.

An LM graph (written by a frontend in spikecc.compiler.frontends) says in its metadata:
    family     "spikegpt" | "spikelm" | "spikerwkv"
    vocab      the characters, in id order (character models), or
    tokenizer  the text of a Hugging Face tokenizer.json (BPE models; spikecc.models.tokenizer)
    substeps   simulator steps per token (1 for SpikeGPT, whose SNN time axis is the token axis; SpikeLM's T)
and has one Input (the token id, fed at every sub-step of its token) and one Output (the logits, read at
the token's last sub-step). Prompts are encoded and generated ids decoded by that tokenizer (`encode`, `decode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np

from spikecc.backends.cpu.simulator import NodeCounts, Simulator
from spikecc.errors import GraphError, InputFileError
from spikecc.ir import Graph
from spikecc.models.tokenizer import Tokenizer, require_tokenizer


@dataclass
class LMRun:
    prompt: str
    text: str  # the generated continuation
    token_ids: list[int]  # prompt + generated, the ids fed to the model
    logits: np.ndarray  # (tokens fed, vocab): logits after each fed token
    spikes: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (tokens fed, substeps, n)
    counts: dict[str, NodeCounts] = field(default_factory=dict)


@dataclass
class LayerActivity:
    layer: str
    neurons: int
    rate: float  # spikes per neuron per simulator step
    positive: float  # share of that rate from positive spikes
    negative: float  # and from negative spikes (ternary layers)
    spikes_per_token: float
    synops_per_token: float  # synaptic operations these spikes cause in the synapses they feed, per token


def graph_tokenizer(graph: Graph) -> Tokenizer:
    """The tokenizer an LM graph carries in its metadata; a one-line error when it is not an LM or has none."""
    meta = graph.metadata
    if "family" not in meta:
        raise GraphError("graph metadata lacks 'family': it is not a spiking LM exported by spikecc (export a "
                         "checkpoint with `spikecc export` or pass the checkpoint itself)")
    return require_tokenizer(meta, f"this {meta['family']} graph")


def prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids of a non-empty prompt (a generation needs at least one token to start from)."""
    if not prompt:
        raise InputFileError("the prompt is empty; give at least one character")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise InputFileError(f"the prompt {prompt!r} encodes to no tokens")
    return ids


class LMSimulator:
    """A Simulator plus the token protocol of LM graphs."""

    def __init__(self, graph: Graph, mode: str = "float") -> None:
        """`mode`: "float", or "fixed" to run a compiled model's neuro-core part bit-accurately (its host ops stay
        float: each node runs in its own number format, spikecc.ir.formats)."""
        meta = graph.metadata
        if "seq2seq" in meta:
            raise GraphError(f"a {meta.get('family')} graph is an encoder-decoder; run it with open_lm_simulator "
                             "(the seq2seq runner), not LMSimulator")
        self.tokenizer = graph_tokenizer(graph)
        self.graph = graph
        self.family = str(meta["family"])
        self.substeps = int(meta.get("substeps", 1))
        (self.input,) = graph.inputs()
        (self.output,) = graph.outputs()
        self.sim = Simulator(graph, mode=mode)
        self.spiking = [n for n, op in graph.nodes.items()
                        if self.sim.signals[n].is_spiking and not isinstance(op, (nir.Input, nir.Output))]

    @property
    def vocab(self) -> str | None:
        """The characters of a character-level model, in id order (None for a BPE tokenizer)."""
        return getattr(self.tokenizer, "chars", None)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (the graph's tokenizer)."""
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        """Text of token ids (the graph's tokenizer; special tokens skipped)."""
        return self.tokenizer.decode(ids)

    def feed(self, token: int, record: dict[str, list] | None = None) -> np.ndarray:
        """Present one token for `substeps` steps; returns the logits after it."""
        outs = None
        subs: dict[str, list] = {n: [] for n in (record or {})}
        for _ in range(self.substeps):
            outs = self.sim.step({self.input: np.array([float(token)])})
            for n in subs:
                subs[n].append(outs[n].copy())
        if record is not None:
            for n, v in subs.items():
                record[n].append(np.stack(v))
        return outs[self.output].copy()

    def generate(self, prompt: str, n_tokens: int, record: bool = False) -> LMRun:
        """Feed `prompt`, then greedily (argmax, lowest id on ties) generate `n_tokens` characters.

        Models with learned absolute positions (metadata `context`) run incrementally while the text fits;
        past it they re-read the last `context` characters from a fresh state for every new token, as the
        torch reference's `generate` does (spikes are recorded only in the incremental part).
        """
        ids = prompt_ids(self.tokenizer, prompt)
        context = int(self.graph.metadata.get("context", 0)) or None
        self.sim.start()
        rec: dict[str, list] | None = {n: [] for n in self.spiking} if record else None
        stepping = context is None or len(ids) <= context
        logits = [self.feed(t, rec) for t in ids] if stepping else []
        fed = len(ids) if stepping else 0
        generated: list[int] = []
        for _ in range(n_tokens):
            if not stepping:  # re-read the window from a fresh state
                self.sim.start()
                for t in ids[-context:]:
                    last = self.feed(t)
                logits.append(last)
            nxt = int(np.argmax(logits[-1]))
            generated.append(nxt)
            ids.append(nxt)
            if stepping:
                if context is None or fed < context:
                    logits.append(self.feed(nxt, rec))
                    fed += 1
                else:
                    stepping = False
        spikes = {n: np.stack(v) for n, v in rec.items() if v} if rec else {}
        return LMRun(prompt=prompt, text=self.decode(generated), token_ids=ids,
                     logits=np.stack(logits), spikes=spikes, counts=self.sim.step_counts())

    def caused_synops(self, name: str) -> int:
        """Synaptic operations the spikes of `name` caused since the run started (`caused_synops`)."""
        return caused_synops(self.sim, self.graph, name)

    def activity(self, run: LMRun) -> list[LayerActivity]:
        return layer_activity(self.sim, self.graph, self.spiking, run.counts, len(run.token_ids), self.substeps)


def caused_synops(sim: Simulator, graph: Graph, name: str) -> int:
    """Synaptic operations the spikes of `name` caused since `sim` started: each spike of neuron i costs the
    fan-out of i in every synapse it feeds (host ops such as LayerNorm cost none here)."""
    events = sim.neuron_events[name]
    total = 0
    for edge in graph.out_edges(name):
        kernel = sim.kernels[edge.dst]
        per_port = getattr(kernel, "port_synops", None)  # ops that count per input (attention's K, V)
        fan = getattr(kernel, "fanout", None)
        if per_port is not None and edge.port in per_port:
            total += per_port[edge.port]
        elif fan is not None and len(fan) == len(events):
            total += int(events @ fan)
    return total


def layer_activity(sim: Simulator, graph: Graph, spiking: list[str], counts: dict[str, NodeCounts], tokens: int,
                   substeps: int, steps: int | None = None) -> list[LayerActivity]:
    """One row per spiking layer of a run of `tokens` tokens, `substeps` simulator steps each (or `steps` in all:
    an encoder sees its whole source in one presentation)."""
    n_tok = max(1, tokens)
    steps = n_tok * substeps if steps is None else steps
    rows = []
    for name in spiking:
        c = counts[name]
        rows.append(LayerActivity(
            layer=name, neurons=c.neurons, rate=c.rate(steps),
            positive=(c.events - c.negative) / max(1, c.neurons * steps),
            negative=c.negative / max(1, c.neurons * steps),
            spikes_per_token=c.events / n_tok, synops_per_token=caused_synops(sim, graph, name) / n_tok))
    return rows


def open_lm_simulator(graph: Graph, mode: str = "float"):
    """The runner for an LM graph: `Seq2SeqSimulator` for encoder-decoder graphs (metadata ``seq2seq``), else
    `LMSimulator` (in `mode`). Both offer `encode`, `decode`, `generate` and `activity`."""
    if "seq2seq" in graph.metadata:
        from spikecc.backends.cpu.seq2seq_runner import Seq2SeqSimulator

        return Seq2SeqSimulator(graph)
    return LMSimulator(graph, mode=mode)
