"""The compile pipeline: NIR file -> validated IR -> passes -> build directory.

    read + validate -> lower_for_loihi -> quantize_for_loihi (fixed point) -> write build dir

The build directory holds:
    input.nir       the graph as read (flattened, annotated), for reference
    lowered.nir     the Loihi-form graph after all passes (quantized parameters in fixed point)
    manifest.json   input hashes, versions, target, dt, passes run, files written (with their hashes)
    report.json     per-layer neurons, synapses, fan-in and quantization error
    lava/           a generated Lava module + parameter file that rebuilds the process graph
Builds are atomic and byte-identical for the same inputs (no timestamps, sorted keys).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import spikecc
from spikecc.compiler.build_dir import atomic_directory, sha256_file, write_json
from spikecc.ir import Graph, infer_shapes, read, validate, write

Pass = Callable[[Graph], Graph]


def loihi_passes(fixed_point: bool = True) -> list[tuple[str, Pass]]:
    """The passes that take a validated NIR graph to what runs on Loihi 2, in order."""
    from spikecc.compiler.passes.lower_loihi import lower_for_loihi
    from spikecc.compiler.passes.quantize import quantize_for_loihi

    passes: list[tuple[str, Pass]] = [("lower_for_loihi", lower_for_loihi)]
    if fixed_point:
        passes.append(("quantize_for_loihi", quantize_for_loihi))
    return passes


def run_passes(g: Graph, passes: list[tuple[str, Pass]]) -> Graph:
    for name, fn in passes:
        g = fn(g)
        validate(g)
        g.metadata.setdefault("passes", [])
        g.metadata["passes"] = list(g.metadata["passes"]) + [name]
    return g


def lower_for_target(g: Graph, fixed_point: bool) -> Graph:
    """A validated NIR graph lowered (and, for fixed point, quantized) for Loihi 2."""
    validate(g)
    return run_passes(g, loihi_passes(fixed_point))


def annotate_spike_inputs(g: Graph, inputs: np.ndarray | dict[str, np.ndarray]) -> Graph:
    """A copy of `g` whose Input nodes fed only 0/1 data are marked as binary spike sources.

    NIR files do not say whether an Input carries spikes or real values. For spikes, Loihi 2 sends binary
    messages and quantization keeps them exact; real values become graded payloads of a few bits. An
    explicit `signal` annotation already on the Input wins.
    """
    g = g.copy()
    names = g.inputs()
    data = inputs if isinstance(inputs, dict) else {names[0]: inputs}
    for name in names:
        if name in data and "signal" not in g.annotations.get(name, {}):
            x = np.asarray(data[name])
            if x.size and np.isin(x, (0, 1)).all():
                g.annotate(name, signal={"kind": "binary", "amplitude": 1.0, "bits": 0, "scale": 1.0})
    return g


def prepare_run(g: Graph, inputs: np.ndarray | dict[str, np.ndarray], fixed_point: bool,
                lower: bool = True) -> tuple[Graph, dict[str, np.ndarray] | np.ndarray]:
    """(graph, inputs) ready for a backend: spike inputs marked, the graph lowered for Loihi 2 when
    `lower` (and quantized when `fixed_point`), and for fixed point the inputs turned into the integer
    payloads the quantized Inputs expect."""
    g = annotate_spike_inputs(g, inputs)
    if not lower and not fixed_point:
        return g, inputs
    g = lower_for_target(g, fixed_point)
    if fixed_point:
        from spikecc.compiler.passes.quantize import quantize_inputs

        return g, quantize_inputs(g, inputs)
    return g, inputs


def versions() -> dict[str, str]:
    out = {"spikecc": spikecc.__version__, "python": platform.python_version()}
    for dist in ("nir", "lava-nc", "numpy", "scipy", "h5py", "networkx"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass
class LayerReport:
    name: str
    op: str
    neurons: int
    synapses: int = 0
    fan_in: int = 0
    extra: dict = field(default_factory=dict)


def layer_report(g: Graph) -> list[LayerReport]:
    """Per node: size, synapse count (non-zero weights) and fan-in, plus its annotations."""
    shapes = infer_shapes(g)
    rows = []
    for name, op in g.nodes.items():
        w = getattr(op, "weight", None)
        syn = int(np.count_nonzero(w)) if w is not None else 0
        fan_in = int(np.max(np.count_nonzero(np.asarray(w).reshape(np.shape(w)[0], -1), axis=1))) \
            if w is not None and np.size(w) else 0
        rows.append(LayerReport(name, type(op).__name__, int(np.prod(shapes[name])), syn, fan_in,
                                dict(g.annotations.get(name, {}))))
    return rows


def compile_file(nir_path: str | Path, out_dir: str | Path, fixed_point: bool = True,
                 write_lava: bool = True, spike_inputs: bool = False, dt: float | None = None) -> Path:
    """Compile a NIR file into a build directory (see the module docstring). Returns the directory.
    `spike_inputs` marks every Input as a binary spike source (else Inputs carry real values, sent to
    Loihi 2 as graded payloads). `dt`: seconds per step (default: the file's own, else 1e-4), recorded in
    the manifest."""
    nir_path, out_dir = Path(nir_path), Path(out_dir)
    graph = read(nir_path, dt=dt)
    if spike_inputs:
        for name in graph.inputs():
            graph.annotate(name, signal={"kind": "binary", "amplitude": 1.0, "bits": 0, "scale": 1.0})
    lowered = lower_for_target(graph, fixed_point)
    with atomic_directory(out_dir) as tmp:
        write(graph, tmp / "input.nir")
        write(lowered, tmp / "lowered.nir")
        if write_lava:
            from spikecc.backends.lava import write_lava_module

            write_lava_module(lowered, tmp / "lava")
        write_json(tmp / "report.json", {"layers": [vars(r) for r in layer_report(lowered)]})
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "input": {"path": nir_path.name, "sha256": sha256_file(nir_path)},
            "target": "loihi2",
            "fixed_point": fixed_point,
            "spike_inputs": spike_inputs,
            "dt": graph.dt,
            "passes": lowered.metadata.get("passes", []),
            "versions": versions(),
            "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
        }
        write_json(tmp / "manifest.json", manifest)
    return out_dir
