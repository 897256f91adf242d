"""Run an encoder-decoder LM graph (SpikeLM BART, `spikecc.compiler.frontends.spikelm_bart`) in the CPU simulator.

The graph's metadata ``seq2seq`` names its two parts' nodes. The protocol, the same as the torch reference's
`spikecc.models.spikelm_bart.generate`:

1. encode the prompt with the graph's tokenizer; pad it to the graph's source length (``seq_len``) with
   ``pad_token_id`` and build its 1/0 mask;
2. run the encoder part for T steps (one spike step each) on ids and mask; its output at the last step is the
   encoder output (the mean over the T steps);
3. run the decoder part token by token (T steps each) from ``decoder_start_token_id``, feeding the encoder output
   and the mask at every step; take the argmax of the logits at each token's last step; stop after the requested
   number of tokens or at ``eos_token_id``.

Each part runs in its own `Simulator` over the part's nodes (the host carries the encoder output between them).
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.cpu.lm_runner import LayerActivity, LMRun, graph_tokenizer, layer_activity, prompt_ids
from spikecc.backends.cpu.simulator import Simulator
from spikecc.errors import GraphError, InputFileError
from spikecc.ir import Graph


def part_of(graph: Graph, output: str) -> Graph:
    """The sub-graph of the nodes `output` depends on (its ancestors), with their edges and annotations."""
    if output not in graph.nodes:
        raise GraphError(f"graph metadata 'seq2seq' names node '{output}', which the graph does not have")
    keep, todo = {output}, [output]
    while todo:
        for e in graph.in_edges(todo.pop()):
            if e.src not in keep:
                keep.add(e.src)
                todo.append(e.src)
    sub = Graph(metadata=dict(graph.metadata))
    for name, op in graph.nodes.items():
        if name in keep:
            sub.add_node(name, op)
            if name in graph.annotations:
                sub.annotations[name] = dict(graph.annotations[name])
    sub.edges = [e for e in graph.edges if e.dst in keep]
    return sub


class Seq2SeqSimulator:
    """The encoder and decoder parts of an encoder-decoder LM graph, each in a `Simulator`, plus the tokenizer."""

    def __init__(self, graph: Graph) -> None:
        self.tokenizer = graph_tokenizer(graph)
        meta = graph.metadata
        self.graph, self.family = graph, str(meta["family"])
        self.parts = dict(meta["seq2seq"])
        self.substeps = int(meta.get("substeps", 1))
        self.source_len = int(meta["seq_len"])
        self.pad, self.eos = int(meta["pad_token_id"]), int(meta["eos_token_id"])
        self.start_token = int(meta["decoder_start_token_id"])
        self.encoder = Simulator(part_of(graph, self.parts["encoder_output"]))
        self.decoder = Simulator(part_of(graph, self.parts["logits"]))
        self.source_tokens = 0  # real tokens of the last source encoded
        self.spiking = {name: [n for n in sim.order if sim.signals[n].is_spiking and n not in sim.graph.inputs()
                               and n not in sim.graph.outputs()]
                        for name, sim in (("encoder", self.encoder), ("decoder", self.decoder))}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (the graph's tokenizer)."""
        return self.tokenizer.encode(text)

    def decode(self, ids) -> str:
        """Text of token ids (the graph's tokenizer; special tokens skipped)."""
        return self.tokenizer.decode(ids)

    def run_encoder(self, ids: list[int], record: dict[str, list] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The encoder output (source_len, d) and the mask of a source, padded to the graph's source length."""
        L = self.source_len
        if len(ids) > L:
            raise InputFileError(f"the prompt has {len(ids)} tokens but the graph takes sources of at most {L}; "
                                 "shorten it or export the model for a longer source")
        src = np.full(L, float(self.pad))
        src[:len(ids)] = ids
        mask = np.zeros(L)
        mask[:len(ids)] = 1.0
        self.encoder.start()
        out = None
        steps = []
        for _ in range(self.substeps):
            out = self.encoder.step({self.parts["source"]: src, self.parts["source_mask"]: mask})
            steps.append(out)
        if record is not None:
            for n in record:
                record[n].append(np.stack([o[n] for o in steps]))
        return out[self.parts["encoder_output"]].reshape(L, -1).copy(), mask

    def feed(self, token: int, memory: np.ndarray, mask: np.ndarray, record: dict[str, list] | None = None) \
            -> np.ndarray:
        """One decoder token for its T steps; returns the logits at the last step."""
        outs, subs = None, {n: [] for n in (record or {})}
        feeds = {self.parts["token"]: np.array([float(token)]), self.parts["memory"]: memory,
                 self.parts["memory_mask"]: mask}
        for _ in range(self.substeps):
            outs = self.decoder.step(feeds)
            for n in subs:
                subs[n].append(outs[n].copy())
        if record is not None:
            for n, v in subs.items():
                record[n].append(np.stack(v))
        return outs[self.parts["logits"]].copy()

    def generate(self, prompt: str, n_tokens: int, record: bool = False) -> LMRun:
        """Greedy decoding of `prompt` (module docstring). `token_ids` of the result are the start token and the
        generated ids; `logits` one row per token fed (all of them but the last generated); `spikes` hold both parts'
        layers: encoder layers shaped (1, T, source_len * features), decoder layers (tokens fed, T, features)."""
        ids = prompt_ids(self.tokenizer, prompt)
        enc_rec = {n: [] for n in self.spiking["encoder"]} if record else None
        dec_rec = {n: [] for n in self.spiking["decoder"]} if record else None
        memory, mask = self.run_encoder(ids, enc_rec)
        self.source_tokens = len(ids)
        self.decoder.start()
        fed, logits, generated = [self.start_token], [], []
        for _ in range(n_tokens):
            logits.append(self.feed(fed[-1], memory, mask, dec_rec))
            nxt = int(np.argmax(logits[-1]))
            if nxt == self.eos:
                break
            generated.append(nxt)
            fed.append(nxt)
        spikes = {n: np.stack(v) for rec in (enc_rec or {}, dec_rec or {}) for n, v in rec.items() if v}
        counts = {**self.encoder.step_counts(), **self.decoder.step_counts()}
        return LMRun(prompt=prompt, text=self.decode(generated), token_ids=fed,
                     logits=np.stack(logits) if logits else np.zeros((0, 0)), spikes=spikes, counts=counts)

    def activity(self, run: LMRun) -> list[LayerActivity]:
        """Encoder layers per source token (the source is presented once), decoder layers per decoder token."""
        enc = layer_activity(self.encoder, self.encoder.graph, self.spiking["encoder"], run.counts,
                             self.source_tokens, self.substeps, steps=self.substeps)
        dec = layer_activity(self.decoder, self.decoder.graph, self.spiking["decoder"], run.counts,
                             len(run.token_ids), self.substeps)
        return enc + dec
