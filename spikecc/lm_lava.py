"""Running a compiled language model in Lava (`spikecc lava BUILD`), and checking it against everything else
(`spikecc verify BUILD`). Driver level: it composes the ONNX host program (spikecc.backends.onnx) with the
Lava backend (spikecc.backends.lava), which do not import each other."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from spikecc.driver import lm_build_graph
from spikecc.errors import InputFileError
from spikecc.ir import Graph


@dataclass
class LavaGeneration:
    prompt_ids: list[int]
    text: str
    result: object  # spikecc.backends.lava.lm_network.LMLavaResult


def lava_generate(graph: Graph, prompt: str, n_tokens: int, mode: str, on_token=None) -> LavaGeneration:
    """Greedy generation of `n_tokens` after `prompt`, inside Lava (Loihi2SimCfg, fixed_pt or floating_pt).
    `on_token(i, fed, seconds)` is called after each fed token's Lava steps (prompt tokens first)."""
    from spikecc.backends.lava.lm_network import run_lm_lava
    from spikecc.backends.lava.lm_schedule import lm_schedule
    from spikecc.backends.onnx import export_host_program
    from spikecc.backends.onnx.runner import HostRunner
    from spikecc.models.tokenizer import require_tokenizer

    tok = require_tokenizer(graph.metadata, "the build")
    if not prompt:
        raise InputFileError("the prompt is empty; give at least one character")
    ids = tok.encode(prompt)
    context = int(graph.metadata.get("context", 0) or 0)
    if context and len(ids) + n_tokens > context:
        raise InputFileError(f"the prompt ({len(ids)} tokens) and {n_tokens} new tokens exceed the model's context of "
                             f"{context}; generate fewer tokens")
    program = export_host_program(graph, mode)
    schedule = lm_schedule(graph, program.stages, program.core_phases)
    result = run_lm_lava(graph, schedule, partial(HostRunner, program), ids, n_tokens, mode, on_token=on_token)
    return LavaGeneration(ids, tok.decode(result.tokens), result)


# -- verify -------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One side of a comparison: generated tokens, logits per fed token, and per node its value at each graph
    step (neuro-core nodes; host payloads entering the cores)."""

    name: str
    tokens: list[int]
    logits: np.ndarray
    values: dict[str, np.ndarray]


EXACT_PAIRS = (("reference", "spikecc float"), ("spikecc fixed", "lava fixed_pt"),
               ("spikecc float", "lava floating_pt"))
REPORTED_PAIRS = (("spikecc float", "spikecc fixed"),)


def recorded_nodes(g: Graph) -> list[str]:
    """What verify compares per graph step: every neuro-core node that sends (neurons, routers, relays) and every
    host-to-core payload, in graph order."""
    from spikecc.ir.loihi_ops import LoihiDense
    from spikecc.ir.neurocore_ops import HostToCore

    return [n for n, op in g.nodes.items()
            if (g.annotation(n, "partition") == "neurocore" and not isinstance(op, LoihiDense))
            or isinstance(op, HostToCore)]


def simulator_run(graph: Graph, mode: str, ids: list[int], n_tokens: int, nodes: list[str], name: str) -> Run:
    """Greedy generation in spikecc's simulator, recording `nodes` at every graph step."""
    from spikecc.backends.cpu.lm_runner import LMSimulator

    lm = LMSimulator(graph, mode=mode)
    lm.sim.start()
    rec: dict[str, list] = {n: [] for n in nodes}
    fed, logits, tokens = list(ids), [], []
    for i in range(len(ids) + n_tokens):
        logits.append(lm.feed(fed[i], rec))
        if i >= len(ids) - 1 and len(tokens) < n_tokens:
            tokens.append(int(np.argmax(logits[-1])))
            fed.append(tokens[-1])
    values = {n: np.concatenate(v).reshape(-1, np.asarray(v[0]).shape[-1]) for n, v in rec.items() if v}
    return Run(name, tokens, np.stack(logits), values)


def reference_run(checkpoint: Path, ids: list[int], n_tokens: int, graph: Graph) -> Run | None:
    """The torch reference model's greedy generation (None where the family has no incremental `step`), with
    its spikes under the graph's layer names, as unit spikes (sign), per graph step."""
    import torch

    from spikecc.compiler.frontends import load_lm

    lm = load_lm(checkpoint)
    model, substeps = lm.model, int(graph.metadata.get("substeps", 1))
    if model is None or not hasattr(model, "step") or not hasattr(model, "init_state"):
        return None
    batched = lm.family == "spikegpt"
    state = model.init_state(1, dtype=torch.float64) if batched else model.init_state()
    fed, logits, tokens = list(ids), [], []
    spikes: dict[str, list] = {}
    with torch.no_grad():
        for i in range(len(ids) + n_tokens):
            tok = torch.tensor([fed[i]]) if batched else fed[i]
            out, state, sp = model.step(tok, state)
            logits.append(out.reshape(-1).double().numpy())
            for name, s in sp.items():
                a = np.sign(s.double().numpy()).reshape(substeps, -1)
                spikes.setdefault(name, []).append(a)
            if i >= len(ids) - 1 and len(tokens) < n_tokens:
                tokens.append(int(np.argmax(logits[-1])))
                fed.append(tokens[-1])
    values = {n: np.concatenate(v) for n, v in spikes.items() if n in graph.nodes}
    return Run("reference", tokens, np.stack(logits), values)


FLOAT_RTOL = 1e-9  # graded values of two float runs: the host's float64 arithmetic may round differently


def compare(a: Run, b: Run, graph: Graph) -> dict:
    """Token agreement, per-layer agreement (share of equal values over the steps both ran), the first divergence
    and the largest logit difference.

    Layers: every recorded node (neuro-core neurons, routers and relays; host-to-core payloads), and the logits
    (under the Output's name, at the last graph step of each token). Spikes must be equal; graded values and
    logits of two float runs equal within FLOAT_RTOL, integer payloads of two fixed-point runs exactly. Between a
    float and a fixed-point run only spikes are compared: graded values are real numbers on one side and integer
    payloads of per-channel units on the other.

    The first divergence is the earliest graph step, ties broken by execution order, so it is the first layer a
    fault reached: its name, step, element, the values on both sides, and what feeds it (`fed_by`: the synapse
    layers of a neuro-core node; the host ops behind a payload or the logits)."""
    from spikecc.ir.infer import infer_signals

    signals = infer_signals(graph)
    fixed = ("fixed" in a.name, "fixed" in b.name)
    substeps = int(graph.metadata.get("substeps", 1))
    n_tok = min(len(a.tokens), len(b.tokens))
    same_tokens = sum(int(x == y) for x, y in zip(a.tokens, b.tokens))
    order = {n: i for i, n in enumerate(graph.schedule()[0])}
    (output,) = graph.outputs()
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, bool]] = {}  # node -> (steps, a, b, exact)
    for node in sorted(set(a.values) & set(b.values), key=order.get):
        x, y = a.values[node], b.values[node]
        steps = min(len(x), len(y))
        spikes = signals[node].kind in ("binary", "ternary")
        if steps == 0 or x.shape[1:] != y.shape[1:] or (not spikes and fixed[0] != fixed[1]):
            continue
        series[node] = (np.arange(steps), x[:steps], y[:steps], spikes or all(fixed))
    rows = min(len(a.logits), len(b.logits))
    if fixed[0] == fixed[1] and rows:  # the host's float64 logits, the same computation on both sides
        series[output] = (np.arange(rows) * substeps + substeps - 1, a.logits[:rows], b.logits[:rows], False)
    layers, first = {}, None
    for node, (steps, x, y, exact) in series.items():
        eq = x == y if exact else np.isclose(x, y, rtol=FLOAT_RTOL, atol=1e-12)
        layers[node] = float(eq.mean())
        if not eq.all():
            row, el = (int(v) for v in np.argwhere(~eq)[0])
            step = int(steps[row])
            if first is None or (step, order[node]) < (first["step"], order[first["layer"]]):
                first = {"layer": node, "step": step, "element": el, a.name: float(x[row, el]),
                         b.name: float(y[row, el]), "fed_by": fed_by(graph, node)}
    diff = float(np.abs(a.logits[:rows] - b.logits[:rows]).max()) if rows else 0.0
    exact = same_tokens == n_tok == len(a.tokens) == len(b.tokens) and first is None
    return {"a": a.name, "b": b.name, "tokens_agree": same_tokens, "tokens": n_tok, "exact": exact,
            "layer_agreement": layers, "first_divergence": first, "max_logit_difference": diff}


def fed_by(graph: Graph, node: str) -> list[str]:
    """What computes `node`'s input, back to the previous recorded layer: for a neuro-core node its synapse layers
    (LoihiDense), for a host payload or the output the host ops behind it (in execution order)."""
    from spikecc.ir.loihi_ops import LoihiDense
    from spikecc.ir.neurocore_ops import CoreToHost

    recorded = set(recorded_nodes(graph))
    order = {n: i for i, n in enumerate(graph.schedule()[0])}
    seen, todo, found = set(), [node], []
    while todo:
        for e in graph.in_edges(todo.pop()):
            src, op = e.src, graph.nodes[e.src]
            if src in seen or src in recorded or isinstance(op, CoreToHost) or not graph.in_edges(src):
                continue  # stop at the previous recorded layer, the cores' messages and the Input
            seen.add(src)
            found.append(src)
            if not isinstance(op, LoihiDense):  # a synapse's own input was recorded as a layer
                todo.append(src)
    core = graph.annotation(node, "partition") == "neurocore"
    return sorted((n for n in found if not core or isinstance(graph.nodes[n], LoihiDense)), key=order.get)


def verify_build(build: str | Path, prompt: str, n_tokens: int, checkpoint: str | Path | None = None,
                 lava_edit=None) -> dict:
    """Every pair of (reference, spikecc float, spikecc fixed, Lava fixed_pt, Lava floating_pt) on a greedy
    generation from `prompt`. `lava_edit(graph) -> graph` changes what Lava runs (tests plant faults with it)."""
    from spikecc.models.tokenizer import require_tokenizer

    build = Path(build)
    float_graph, fixed_graph = lm_build_graph(build, False), lm_build_graph(build, True)
    tok = require_tokenizer(fixed_graph.metadata, str(build))
    ids = tok.encode(prompt)
    runs: dict[str, Run] = {}
    ref = reference_run(_find_checkpoint(build, checkpoint), ids, n_tokens, float_graph)
    if ref is not None:
        runs["reference"] = ref
    for mode, graph in (("float", float_graph), ("fixed", fixed_graph)):
        nodes = recorded_nodes(graph)
        runs[f"spikecc {mode}"] = simulator_run(graph, mode, ids, n_tokens, nodes, f"spikecc {mode}")
        lava_graph = lava_edit(graph) if lava_edit is not None else graph
        gen = lava_generate(lava_graph, prompt, n_tokens, mode)
        name = f"lava {'fixed_pt' if mode == 'fixed' else 'floating_pt'}"
        runs[name] = Run(name, gen.result.tokens, gen.result.logits, gen.result.outputs)
    pairs = []
    for a, b in EXACT_PAIRS + REPORTED_PAIRS:
        if a in runs and b in runs:
            cmp = compare(runs[a], runs[b], float_graph)
            cmp["required"] = (a, b) in EXACT_PAIRS
            pairs.append(cmp)
    texts = {name: tok.decode(r.tokens) for name, r in runs.items()}
    missing = [] if "reference" in runs else ["reference (this family's torch model has no incremental step)"]
    return {"prompt": prompt, "tokens": n_tokens, "texts": texts, "pairs": pairs, "not_run": missing,
            "ok": all(p["exact"] for p in pairs if p["required"])}


def _find_checkpoint(build: Path, given: str | Path | None) -> Path:
    """The checkpoint a build came from: the one given (its hash must be the manifest's), else the manifest's file
    name beside the build or in the current directory, if its hash matches."""
    import json

    from spikecc.files import sha256_file

    try:
        entry = json.loads((build / "manifest.json").read_text())["input"]
    except (OSError, ValueError, KeyError, TypeError):
        raise InputFileError(f"{build}: manifest.json does not name the checkpoint the build came from; compile "
                             "the checkpoint again with spikecc compile") from None
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise InputFileError(f"{path}: no such checkpoint; give the checkpoint {build} was compiled from "
                                 f"({entry['path']})")
        if sha256_file(path) != entry.get("sha256"):
            raise InputFileError(f"{path}: not the checkpoint {build} was compiled from (its SHA-256 differs from "
                                 f"the manifest's {entry['path']}); give that checkpoint or compile this one")
        return path
    for folder in (build.parent, Path.cwd()):
        path = folder / entry["path"]
        if path.is_file() and entry.get("sha256") == sha256_file(path):
            return path
    raise InputFileError(f"{build}: verify runs the checkpoint the build was compiled from ({entry['path']}), which "
                         "is neither beside the build nor in the current directory; give --checkpoint PATH")
