"""Compiling a spiking language model for Loihi 2 (`spikecc compile CHECKPOINT -o BUILD`): the build driver's LM
path. Like spikecc.driver it sits above the compiler and the backends.

    checkpoint -> frontend graph -> lm_passes (exact and float passes) -> calibration run -> quantize
               -> quantization and partition reports (measured by running float and fixed side by side)
               -> mapping onto the target (budget) -> build directory

Calibration. The quantize pass needs the range of every graded host -> neuro-core message. It comes from a short
run of the float graph over a calibration text (teacher-forced, from a fresh state): by default a slice of the
held-out tail of the offline Shakespeare corpus the example models were not trained on (the validation split of
spikecc.models.data), cut to the model's context; `calibration_text` gives another. The same run gives the
measured firing rates the mapping uses (activity.npz).

The build directory:
    input.nir            the graph the frontend exported from the checkpoint (NIR + spikecc ops)
    float.nir            after the passes, before quantization: the lowered graph in float form
    lowered.nir          quantized: neuro-core nodes in Loihi 2 fixed point, host nodes in float
    manifest.json        input hash, versions, options, passes, calibration text hash, files (hashes)
    quantization.json / quantization.txt   per layer: scales, clipped and zeroed weights, SQNR, spike agreement
    partition.json / partition.txt         per token: ops, parameters and boundary messages on each side
    activity.npz         per node, events per neuron per step on the calibration text
    budget.json / budget.txt / budget.html (+ plots)   the mapping onto the target's cores and chips
    lava/                a generated Lava module that rebuilds the whole process graph and generates text in Lava
                         without spikecc, both modes, with the mapping's core assignment (spikecc.lm_deploy);
                         causal models only (an encoder build has none)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spikecc.compiler.pipeline import LMOptions, lm_passes, run_passes
from spikecc.errors import BudgetError, InputFileError
from spikecc.files import atomic_directory, check_build_dir, npz_bytes, sha256_file, write_json
from spikecc.ir import Graph, write
from spikecc.ir.neurocore_ops import HostToCore
from spikecc.lm_deploy import write_lm_lava

if TYPE_CHECKING:
    from spikecc.calibration import EncoderCalibration

CALIBRATION_TOKENS = 256  # at most; cut to the model's context


@dataclass
class LMBuild:
    """What `compile_lm` produced (also written to the build directory)."""

    path: Path
    family: str
    float_graph: Graph
    fixed_graph: Graph
    quantization: dict
    partition: dict
    budget: object | None  # spikecc.compiler.mapping.Mapping
    calibration: str = ""  # how an encoder was calibrated, in one line (spikecc.calibration)


def calibration_ids(graph: Graph, text: str | None, tokens: int = CALIBRATION_TOKENS) -> tuple[list[int], str]:
    """Token ids of the calibration text (module docstring) and the text itself, cut to the model's context."""
    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.models.data import shakespeare_text

    lm = LMSimulator(graph)
    if text is None:
        corpus = shakespeare_text()
        tail = corpus[int(len(corpus) * 0.9):]
        chars = lm.vocab
        text = "".join(c for c in tail[:4096] if chars is None or c in chars)
    ids = lm.encode(text)
    context = int(graph.metadata.get("context", 0) or 0)
    limit = min(tokens, context) if context else tokens
    ids = ids[:limit]
    if len(ids) < 2:
        raise InputFileError("the calibration text gives fewer than 2 tokens; give a longer --calibration-text")
    return ids, lm.decode(ids)


def run_teacher_forced(graph: Graph, ids: list[int], mode: str, record: list[str]) -> dict[str, np.ndarray]:
    """Feed `ids` from a fresh state; the outputs of the nodes in `record` at every simulator step,
    (steps, n) arrays, plus the simulator (key "__sim__") for its counters. An encoder is fed `ids` as whole
    sequences of its length, one after another (spikecc.calibration)."""
    from spikecc.backends.cpu.encoder_runner import EncoderSimulator, is_encoder
    from spikecc.backends.cpu.lm_runner import LMSimulator

    if is_encoder(graph):
        enc = EncoderSimulator(graph, mode=mode)
        run = enc.run(np.reshape(ids, (-1, enc.seq_len)), record=record)
        return {**run.traces, "__sim__": enc.sim}
    lm = LMSimulator(graph, mode=mode)
    lm.sim.start()
    traces: dict[str, list[np.ndarray]] = {n: [] for n in record}
    for tok in ids:
        for _ in range(lm.substeps):
            outs = lm.sim.step({lm.input: np.array([float(tok)])})
            for n in record:
                traces[n].append(np.asarray(outs[n], dtype=np.float64).copy())
    out: dict = {n: np.stack(v) for n, v in traces.items()}
    out["__sim__"] = lm.sim
    return out


def calibrate(float_graph: Graph, ids: list[int]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(largest |value| per HostToCore node, and per neuro-core neuron or relay the largest |synaptic input| of
    one step (its incoming LoihiDense outputs summed, plus its bias); events per neuron per step of every
    spike-carrying neuro-core node and messages per element per step of every HostToCore boundary) on the
    calibration run."""
    from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF
    from spikecc.ir.neurocore_ops import LoihiElastic, LoihiRelay

    g = float_graph
    boundary = [n for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    targets = {n: [e.src for e in g.in_edges(n) if isinstance(g.nodes[e.src], LoihiDense)]
               for n, op in g.nodes.items() if isinstance(op, (LoihiLIF, LoihiElastic, LoihiRelay))}
    dense = sorted({d for ds in targets.values() for d in ds})
    run = run_teacher_forced(g, ids, "float", boundary + dense)
    sim = run.pop("__sim__")
    top = {n: float(np.abs(run[n]).max(initial=0.0)) for n in boundary}
    for n, ds in targets.items():
        if ds:
            op = g.nodes[n]
            bias = np.asarray(op.bias if isinstance(op, LoihiElastic) else getattr(op, "bias_mant", 0.0),
                              dtype=np.float64)
            x = sum(run[d] for d in ds)  # an encoder's rows (steps, L * n) share the n neurons' biases
            top[n] = float(np.abs(x.reshape(len(x), -1, bias.size) + bias).max(initial=0.0))
    # events per neuron per step of the chip: an encoder's L rows are served in turn by the same neurons, each
    # for T steps, so a neuron's events over all rows are divided by the steps of all tokens
    steps = len(ids) * int(float_graph.metadata.get("substeps", 1))
    activity = {n: ev.reshape(-1, _width(sim, n)).sum(axis=0) / steps for n, ev in sim.neuron_events.items()
                if float_graph.annotation(n, "partition") == "neurocore" or isinstance(g.nodes[n], HostToCore)}
    return top, activity


def _width(sim, name: str) -> int:
    """Values per row of a node's output (spikecc.ir.rows): the last axis of an encoder's (L, n), else all."""
    shape = sim.shapes[name]
    return int(shape[-1]) if len(shape) > 1 else int(np.prod(shape))


@dataclass
class Lowered:
    """A language model lowered and quantized: both forms, and the calibration run they came from."""

    float_graph: Graph
    fixed_graph: Graph
    ids: list[int]
    text: str
    activity: dict[str, np.ndarray]
    encoder: EncoderCalibration | None = None  # an encoder's calibration sequences (spikecc.calibration)


def lower_lm(graph: Graph, options: LMOptions | None = None, calibration_text: str | None = None,
             on_pass: Callable[[str, Graph, Graph], None] | None = None,
             on_stage: Callable[[str], None] | None = None, calibration_tokens: int = CALIBRATION_TOKENS,
             text_name: str | None = None) -> Lowered:
    """The exported graph of a language model through the LM pass spine, calibrated and quantized (an encoder on
    whole sequences, spikecc.calibration; `text_name` names the calibration text there)."""
    from spikecc.backends.cpu.encoder_runner import is_encoder
    from spikecc.calibration import encoder_calibration
    from spikecc.compiler.passes.quantize_lm import quantize_lm

    stage = on_stage or (lambda s: None)
    options = options or LMOptions()
    float_graph = run_passes(graph, lm_passes(options), on_pass)
    del graph  # not needed past the passes: a caller that does not keep it gets its memory back (216M: ~2 GB)
    encoder = None
    if is_encoder(float_graph):
        stage("calibrating on whole sequences")
        encoder = encoder_calibration(float_graph, calibration_text, calibration_tokens, text_name)
        ids, used_text = encoder.ids, ""
    else:
        stage("calibrating on a short text")
        ids, used_text = calibration_ids(float_graph, calibration_text, calibration_tokens)
    top, activity = calibrate(float_graph, ids)
    fixed_graph = run_passes(float_graph, [("quantize", lambda g, a: quantize_lm(
        g, a, calibration=top, weight_bits=options.weight_bits))], on_pass)
    return Lowered(float_graph, fixed_graph, ids, used_text, activity, encoder)


def compile_lm(checkpoint: str | Path, out_dir: str | Path, options: LMOptions | None = None,
               calibration_text: str | Path | None = None, max_error: float | None = None, target: str = "loihi2",
               tokenizer: str | Path | None = None, load_options: dict | None = None,
               on_pass: Callable[[str, Graph, Graph], None] | None = None,
               on_stage: Callable[[str], None] | None = None, calibration_tokens: int = CALIBRATION_TOKENS) -> LMBuild:
    """Compile a language-model checkpoint (or exported .nir) into a build directory (module docstring).
    `max_error`: the largest relative error (quantization noise RMS / signal RMS, on the calibration run) any
    neuro-core layer's output may have; past it the compile fails naming the layer, and nothing is written."""
    from spikecc.backends.cpu.encoder_runner import is_encoder
    from spikecc.compiler.frontends import load_lm
    from spikecc.driver import versions
    from spikecc.reports import partition_report, quantization_report, report_text

    stage = on_stage or (lambda s: None)
    options = options or LMOptions()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    check_build_dir(out_dir, inputs=[checkpoint])
    text = None
    if calibration_text is not None:
        calibration_text = Path(calibration_text)
        if not calibration_text.is_file():
            raise InputFileError(f"{calibration_text}: no such calibration text; give a text file")
        text = calibration_text.read_text(encoding="utf-8", errors="strict")
    stage("loading the checkpoint")
    lm = load_lm(checkpoint, tokenizer, reference=False, **(load_options or {}))
    encoder = is_encoder(lm.graph)
    if not encoder and "vocab" not in lm.graph.metadata and "tokenizer" not in lm.graph.metadata:
        raise InputFileError(f"{checkpoint}: a {lm.family} model without a vocabulary cannot be calibrated; give "
                             "its tokenizer (--tokenizer FILE)")
    exported, family = lm.graph, lm.family
    low = lower_lm(exported, options, text, on_pass, stage, calibration_tokens,
                   text_name=calibration_text.name if calibration_text else None)
    float_graph, fixed_graph, ids, activity = low.float_graph, low.fixed_graph, low.ids, low.activity
    stage("measuring quantization error")
    quant = quantization_report(float_graph, fixed_graph, ids)
    if max_error is not None:
        worst = max(quant["layers"], key=lambda r: r.get("relative_error", 0.0), default=None)
        if worst is not None and worst.get("relative_error", 0.0) > max_error:
            raise BudgetError(f"layer '{worst['layer']}': relative quantization error {worst['relative_error']:.4g} "
                              f"(SQNR {worst['sqnr_db']:.1f} dB) exceeds --max-error {max_error:g}; use more "
                              "--message-bits or --weight-bits, or allow a larger error")
    part = partition_report(fixed_graph, activity, len(ids), rows=low.encoder.sequences.shape[1] if encoder else 1)
    stage(f"mapping onto {target}")
    budget = _map(fixed_graph, activity, target)
    with atomic_directory(out_dir, inputs=[checkpoint]) as tmp:
        write(exported, tmp / "input.nir")
        model = {k: exported.metadata[k] for k in ("embedding", "inference", "substeps", "T", "context")
                 if k in exported.metadata}
        del lm, exported  # written: its memory goes back before the Lava module's parameters (216M: ~1.6 GB)
        write(float_graph, tmp / "float.nir")
        write(fixed_graph, tmp / "lowered.nir")
        write_json(tmp / "quantization.json", quant)
        (tmp / "quantization.txt").write_text(report_text(quant, "quantization"))
        write_json(tmp / "partition.json", part)
        (tmp / "partition.txt").write_text(report_text(part, "partition"))
        (tmp / "activity.npz").write_bytes(npz_bytes({k: np.asarray(v) for k, v in activity.items()}))
        if budget is not None:
            from spikecc.compiler.mapping.report import write_budget

            write_budget(budget, tmp)
        if not encoder:  # the Lava LM runner steps a causal model token by token; an encoder's rows have none
            stage("writing the Lava module (lava/)")
            write_lm_lava(tmp / "lava", float_graph, fixed_graph, budget)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        source = checkpoint / "config.json" if checkpoint.is_dir() else checkpoint
        manifest = {
            "input": {"path": checkpoint.name, "sha256": sha256_file(source) if source.is_file() else None},
            "kind": "language-model",
            "family": family,
            "target": target,
            "options": options.as_dict(),
            "load_options": {k: v for k, v in (load_options or {}).items() if v is not None},
            "model": model,
            "calibration": low.encoder.manifest() if encoder else
            {"tokens": len(ids), "sha256": hashlib.sha256(low.text.encode()).hexdigest(),
             "source": calibration_text.name if calibration_text else "shakespeare-validation"},
            "max_error": max_error,
            "passes": fixed_graph.metadata.get("passes", []),
            "versions": versions(),
            "lava": None if encoder else "lava/lava_lm.py",  # the deployable Lava module (docs/lava-deploy.md)
            "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
        }
        write_json(tmp / "manifest.json", manifest)
    return LMBuild(out_dir, family, float_graph, fixed_graph, quant, part, budget,
                   low.encoder.describe() if encoder else "")


def _map(graph: Graph, activity: dict[str, np.ndarray], target: str):
    """The mapping onto `target` with the measured activity (None for a graph with no neuro-core part)."""
    from spikecc.compiler.mapping import map_graph

    if not any(graph.annotation(n, "partition") == "neurocore" for n in graph.nodes):
        return None
    return map_graph(graph, target, activity=activity)


def summary_lines(build: LMBuild) -> list[str]:
    """What `spikecc compile` prints after the passes."""
    q, p = build.quantization, build.partition
    lines = [build.calibration] if build.calibration else []
    lines += [f"quantization: worst layer {q['worst']['layer']} SQNR {q['worst']['sqnr_db']:.1f} dB; "
             f"spike agreement {q['spike_agreement']:.4f}" if q.get("worst") else "quantization: no neuro-core layer"]
    lines.append(f"partition per token: neuro-core {p['neurocore']['synops_per_token']:,.0f} synaptic ops, "
                 f"host {p['host']['ops_per_token']:,.0f} ops; boundary {p['boundary']['to_core_messages']:,.0f} "
                 f"messages in, {p['boundary']['to_host_messages']:,.0f} out")
    if build.budget is not None:
        b = build.budget
        lines.append(f"budget: {b.n_cores} cores on {b.chips} chip(s) (lower bound {b.lower_bound_cores}); "
                     f"{len(b.violations)} violation(s)")
    from spikecc.backends.cpu.encoder_runner import is_encoder

    if is_encoder(build.float_graph):  # compile_lm writes lava/ for causal models only
        lines.append("lava: no Lava module for an encoder (its rows have no Lava runner; lava/ is written for "
                     "causal language models)")
    return lines



def describe_pass(name: str, before: Graph, after: Graph) -> str:
    """One line on what a pass changed: node count, and the op types it added and removed."""
    from collections import Counter

    a = Counter(type(op).__name__ for op in before.nodes.values())
    b = Counter(type(op).__name__ for op in after.nodes.values())
    diff = [f"+{b[k] - a[k]} {k}" for k in sorted(b) if b[k] > a[k]] + \
        [f"-{a[k] - b[k]} {k}" for k in sorted(a) if a[k] > b[k]]
    changed = sum(1 for n, op in after.nodes.items() if n in before.nodes and type(before.nodes[n]) is type(op)
                  and before.nodes[n] is not op and _params_differ(before.nodes[n], op))
    what = ", ".join(diff) if diff else "no node added or removed"
    return f"{name}: {len(before.nodes)} -> {len(after.nodes)} nodes ({what}; {changed} rewritten in place)"


def _params_differ(a, b) -> bool:
    for k, v in vars(a).items():
        if isinstance(v, np.ndarray):
            w = getattr(b, k, None)
            if not isinstance(w, np.ndarray) or w.shape != v.shape or not np.array_equal(v, w):
                return True
    return False
