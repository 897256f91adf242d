"""Driver functions behind `spikecc budget` and `spikecc energy`: they read builds and checkpoints, run the CPU
simulator for measured activity, and call the mapper (spikecc.compiler.mapping) and the energy model
(spikecc.compiler.energy). Like the build driver, this module sits above the compiler and the backends; nothing
below imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nir
import numpy as np

from spikecc.compiler.energy import EnergyTable, count_graph, energy_table
from spikecc.compiler.mapping import Mapping, activity_from_events, activity_from_traces, map_graph
from spikecc.errors import InputFileError
from spikecc.ir import Graph, read

LOWERED = "lowered.nir"
FLOAT = "float.nir"  # a language-model build's graph before quantization (the same nodes, float weights)
ACTIVITY = "activity.npz"  # a language-model build's measured rates on its calibration text


def read_build(build: str | Path) -> Graph:
    """The lowered graph of a build directory (`spikecc compile -o BUILD`)."""
    build = Path(build)
    if not build.is_dir():
        raise InputFileError(f"{build}: not a build directory; give the directory `spikecc compile -o` wrote")
    path = build / LOWERED
    if not path.exists():
        raise InputFileError(f"{build}: no {LOWERED} inside; compile the model first (spikecc compile ... -o {build})")
    return read(path)


def load_activity(path: str | Path) -> dict[str, np.ndarray]:
    """Activity from a .npz: one array per node name, events per neuron per step (or one mean rate)."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such activity file; give a .npz with one array per node")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k], dtype=np.float64) for k in data.files}
    except Exception as exc:  # numpy raises several types for a file that is not an .npz
        raise InputFileError(f"{path}: not a numpy .npz of per-node rates ({str(exc).splitlines()[0][:100]})") from None


def budget_of_build(build: str | Path, target: str = "loihi2", chips: int | None = None, split: str = "min-cores",
                    placement: str = "auto", activity: str | Path | None = None) -> Mapping:
    """The mapping of a build onto `target`. Activity: the given .npz, else the build's own activity.npz
    (measured on its calibration text) where it has one, else assumed rates; a note in the mapping says which."""
    g = read_build(build)
    if activity is None and (Path(build) / ACTIVITY).is_file():
        activity = Path(build) / ACTIVITY
    m = map_graph(g, target, activity=load_activity(activity) if activity else None, chips=chips, split=split,
                  placement=placement)
    if activity is not None:
        m.notes.insert(0, f"activity measured: {activity}")
    return m


def write_report(mapping: Mapping, out_dir: str | Path) -> Path:
    """budget.json, budget.txt, budget.html and its plots in a new directory (written atomically)."""
    from spikecc.compiler.mapping.report import write_budget
    from spikecc.files import atomic_directory

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InputFileError(f"{out_dir}: already exists; give a new directory for the report")
    with atomic_directory(out_dir) as tmp:
        write_budget(mapping, tmp)
    return out_dir


# -- measured activity -----------------------------------------------------------------------------------------
@dataclass
class Measured:
    graph: Graph
    synops: dict[str, float]  # node -> synaptic operations over the run
    activity: dict[str, np.ndarray]  # spiking node -> events per neuron per step
    tokens: int
    text: str = ""


def sample_text(vocab: str, n: int) -> str:
    """The first n characters of the held-out split of the offline Shakespeare corpus that the vocabulary has."""
    from spikecc.models.data import shakespeare_text

    text = shakespeare_text()
    held_out = text[int(len(text) * 0.9):]  # the validation split the example models were not trained on
    keep = "".join(c for c in held_out[: 4 * n + 1024] if c in vocab)
    return keep[:n]


def measure_lm(graph: Graph, seq_len: int) -> Measured:
    """Feed `seq_len` characters of held-out text through an LM graph in the CPU simulator (a compiled graph in
    fixed point: its neuro-core part bit-accurately, as it would run on the chip)."""
    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.ir.formats import is_fixed

    if "vocab" not in graph.metadata:
        raise InputFileError(f"a {graph.metadata.get('family', 'model')} graph without a vocabulary (an encoder) "
                             "cannot be fed text; energy needs a generative model or a build with --input")
    context = int(graph.metadata.get("context", 0) or 0)
    if context and seq_len > context:
        raise InputFileError(f"the model reads at most {context} tokens at once; give --seq-len {context} or less")
    lm = LMSimulator(graph, mode="fixed" if is_fixed(graph) else "float")
    text = sample_text(lm.vocab, seq_len)
    if len(text) < seq_len:
        raise InputFileError(f"only {len(text)} characters of held-out text fit the model's vocabulary; give a "
                             "smaller --seq-len")
    run = lm.generate(text, 0)
    steps = len(run.token_ids) * lm.substeps
    return Measured(graph, {n: float(c.synops) for n, c in run.counts.items()},
                    activity_from_events(lm.sim.neuron_events, steps), len(run.token_ids), text)


def measure_inputs(graph: Graph, input_path: str | Path) -> Measured:
    """Run a (lowered) network on an input array; one step counts as one token."""
    from spikecc.backends.cpu import Simulator

    path = Path(input_path)
    if not path.exists():
        raise InputFileError(f"{path}: no such input file; give a .npy array shaped (steps, *input shape)")
    x = np.load(path, allow_pickle=False)
    fixed = bool(graph.metadata.get("fixed_point", False))
    if fixed:
        from spikecc.compiler.passes.quantize import quantize_inputs

        x = quantize_inputs(graph, x)
    sim = Simulator(graph, mode="fixed" if fixed else "float")
    record = [n for n, op in graph.nodes.items() if sim.signals[n].is_spiking
              and not isinstance(op, (nir.Input, nir.Output))]
    res = sim.run(x, record=record)
    return Measured(graph, {n: float(c.synops) for n, c in res.counts.items()}, activity_from_traces(res.traces),
                    res.steps)


# -- energy ------------------------------------------------------------------------------------------------------
def energy_of(source: str | Path, seq_len: int = 128, precision: str = "fp32", target: str = "loihi2",
              input_path: str | Path | None = None) -> tuple[EnergyTable, Mapping | None, Measured]:
    """The papers' energy model for a checkpoint, exported LM or build (measured firing rates), and for a build
    also the mapping whose target profile gives the Loihi estimate."""
    source = Path(source)
    structure = None
    if source.is_dir():
        g = read_build(source)
        measured = measure_inputs(g, input_path) if input_path else measure_lm(g, seq_len)
        mapping = map_graph(g, target, activity=measured.activity)
        if (source / FLOAT).is_file():  # connections of the layers before quantization zeroed small weights
            structure = read(source / FLOAT)
    else:
        from spikecc.compiler.frontends import load_lm

        measured = measure_lm(load_lm(source).graph, seq_len)
        mapping = None
    rows = count_graph(structure or measured.graph, measured.synops, measured.tokens)
    table = energy_table(rows, precision, measured.tokens)
    return table, mapping, measured


def energy_json(table: EnergyTable, mapping: Mapping | None, measured: Measured) -> dict:
    out = table.to_json()
    out["measured_over"] = {"tokens": measured.tokens, "text": measured.text}
    if mapping is not None:
        per_token_uj = mapping.energy["token_uj"]
        out["loihi_mj"] = per_token_uj * measured.tokens * 1e-3
        out["loihi"] = {"target": mapping.target.name, "cores": mapping.n_cores, "chips": mapping.chips,
                        "token_uj": per_token_uj, "step_ns": mapping.latency["step_ns"],
                        "per_step_pj": mapping.energy["per_step_pj"], "assumes": mapping.energy["assumes"]}
    return out
