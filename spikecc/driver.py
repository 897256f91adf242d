"""The build driver: what the CLI calls. It sits above the compiler and the backends (it runs the passes,
then a backend, and writes the build directory); nothing below imports it.

Input kinds, one rule for every command (`simulate`, `lava`, `compile`, and the generated Lava module):
an Input carries what its `signal` annotation says (a language model's token input, or the Inputs of a
build's `lowered.nir`); otherwise it carries binary spikes when `--spike-inputs` is given, else real
values. On Loihi 2, binary spikes travel as binary messages and real values as graded messages of
`input_bits` (8) bits, q = round(x / input_scale) with input_scale = input_range / 127, clipped to
+-127 (spikecc says how many values it clipped). Binary Inputs refuse data other than 0 and 1.
The rule is recorded in `manifest.json` (key "inputs").

A build directory (`compile_file`) holds:
    input.nir       the graph as read (flattened, annotated), for reference
    lowered.nir     the Loihi-form graph after all passes (quantized parameters in fixed point)
    manifest.json   input hashes, versions, target, dt, input kinds, passes run, files written (their hashes),
                    and under "lava" what the Lava module's split plan divides for Loihi 2 (split_report)
    report.json     per-layer neurons, synapses, fan-in and quantization error
    lava/           a generated Lava module + parameter file that rebuilds the process graph
Builds are atomic and byte-identical for the same inputs (no timestamps, sorted keys), and replace only an
earlier spikecc build (see spikecc.files).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import spikecc
from spikecc.compiler.pipeline import lower_for_target
from spikecc.errors import GraphError, InputFileError, SpikeccWarning
from spikecc.files import atomic_directory, sha256_file, write_json
from spikecc.ir import Graph, infer_shapes, read, validate, write
from spikecc.ir.formats import is_fixed
from spikecc.ir.inputs import bind_inputs

Inputs = np.ndarray | Mapping[str, np.ndarray]


def mark_inputs(g: Graph, spike_inputs: bool) -> Graph:
    """A copy of `g` whose Inputs without a `signal` annotation carry binary spikes (`spike_inputs`) or real
    values (module docstring: one rule for every command)."""
    g = g.copy()
    for name in g.inputs():
        if "signal" not in g.annotations.get(name, {}):
            g.annotate(name, signal={"kind": "binary" if spike_inputs else "real", "amplitude": 1.0, "bits": 0,
                                     "scale": 1.0})
    return g


def input_kinds(g: Graph) -> dict[str, dict]:
    """Per Input: its signal kind and, once quantized, the payload bits and scale (what the manifest records)."""
    out = {}
    for name in g.inputs():
        ann = g.annotations.get(name, {})
        entry = {"kind": ann.get("signal", {}).get("kind", "real")}
        if "input_bits" in ann:
            entry.update(bits=int(ann["input_bits"]), scale=float(ann["input_scale"]))
        out[name] = entry
    return out


def prepare_run(g: Graph, inputs: Inputs, fixed_point: bool, lower: bool = True, spike_inputs: bool = False,
                input_range: float = 1.0, source: str = "the graph") -> tuple[Graph, Inputs]:
    """(graph, inputs) ready for a backend: Inputs marked by the input rule, the graph lowered for Loihi 2
    when `lower` (and quantized when `fixed_point`), and for fixed point the inputs turned into the integer
    payloads the quantized Inputs expect. A graph that is already quantized runs in fixed point whatever
    `fixed_point` says (its integers mean nothing to a float run): spikecc says so in a warning. The run
    mode is then `"fixed" if is_fixed(graph) else "float"`."""
    try:
        shapes = validate(g)
    except GraphError as exc:
        raise GraphError(f"{source}: {exc}") from None
    if is_fixed(g) and not fixed_point:
        warnings.warn(f"{source} holds fixed-point (quantized) parameters, so it runs bit-accurately, as with "
                      "--fixed-point", SpikeccWarning, stacklevel=2)
        fixed_point = True
    g = mark_inputs(g, spike_inputs)
    bind_inputs(g, shapes, inputs, steps=None)  # shapes and values checked before any work
    if not lower and not fixed_point:
        return g, inputs
    g = lower_for_target(g, fixed_point, input_range)
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


def is_build(path: Path) -> bool:
    """A build directory that `spikecc compile` wrote (NIR network or language model)."""
    return path.is_dir() and (path / "lowered.nir").is_file() and (path / "manifest.json").is_file()


def lm_build_graph(build: str | Path, fixed_point: bool) -> Graph:
    """A language-model build's graph: lowered.nir (fixed point) or float.nir (the same passes, float form)."""
    build = Path(build)
    path = build / ("lowered.nir" if fixed_point else "float.nir")
    if not path.is_file():
        raise InputFileError(f"{build}: no {path.name}; give a build of a language model (spikecc compile "
                             f"CHECKPOINT -o {build})")
    graph = read(path)
    if "family" not in graph.metadata:
        raise InputFileError(f"{build}: a build of a network that is not a language model; run its .nir file with "
                             "--input (spikecc simulate / spikecc lava FILE --input ...)")
    require_generative(graph, build)
    return graph


def require_generative(graph: Graph, where: str | Path) -> None:
    """A one-line error for an encoder's graph (SpikeLM's BERT layout) where text is to be generated or scored."""
    from spikecc.compiler.frontends import ENCODER_ONLY, family_name

    family = str(graph.metadata.get("family", ""))
    if family in ENCODER_ONLY:
        raise InputFileError(f"{where}: a {family_name(family)} ({family}) has no LM head: an encoder cannot generate "
                             "text or score next tokens; `spikecc budget BUILD` maps a build of it")


def compile_file(nir_path: str | Path, out_dir: str | Path, fixed_point: bool = True, write_lava: bool = True,
                 spike_inputs: bool = False, input_range: float = 1.0, dt: float | None = None) -> Path:
    """Compile a NIR file into a build directory (see the module docstring). Returns the directory.
    Inputs follow the input rule (`spike_inputs`: binary spikes, else real values sent as graded payloads
    of `input_range` full scale). `dt`: seconds per step (None: the file's own, else 1e-4), recorded in the
    manifest. The output directory is checked before any work."""
    from spikecc.files import check_build_dir

    nir_path, out_dir = Path(nir_path), Path(out_dir)
    check_build_dir(out_dir, inputs=[nir_path])
    graph = mark_inputs(read(nir_path, dt=dt), spike_inputs)
    lowered = lower_for_target(graph, fixed_point, input_range)
    lava: dict = {}
    with atomic_directory(out_dir, inputs=[nir_path]) as tmp:
        write(graph, tmp / "input.nir")
        write(lowered, tmp / "lowered.nir")
        if write_lava:
            from spikecc.backends.lava import split_report, write_lava_module

            write_lava_module(lowered, tmp / "lava")
            lava = split_report(lowered)
        write_json(tmp / "report.json", {"layers": [vars(r) for r in layer_report(lowered)]})
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "input": {"path": nir_path.name, "sha256": sha256_file(nir_path)},
            "target": "loihi2",
            "fixed_point": fixed_point,
            "inputs": input_kinds(lowered),
            "input_range": float(input_range),
            "dt": graph.dt,
            "passes": lowered.metadata.get("passes", []),
            "versions": versions(),
            "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
        }
        if lava:
            manifest["lava"] = lava
        write_json(tmp / "manifest.json", manifest)
    return out_dir


def lava_split_lines(build_dir: str | Path) -> list[str]:
    """What a NIR build's Lava module splits for Loihi 2 (manifest key "lava"), as lines for the terminal."""
    lava = json.loads((Path(build_dir) / "manifest.json").read_text()).get("lava")
    if not lava:
        return []
    split, kept, procs = lava["split"], lava["kept_whole"], lava["processes"]
    lines = []
    if split:
        layers = ", ".join(f"{n} ({s['neurons']} -> {s['groups']} groups by {', '.join(s['by'])})"
                           for n, s in split.items())
        lines.append(f"lava: split {len(split)} population(s) by value for Loihi 2: {layers}; "
                     f"{procs['split']:,} Lava processes on hardware, {procs['whole']:,} in simulation")
    if kept:
        why = "; ".join(f"{n}: {reason}" for n, reason in kept.items())
        lines.append(f"lava: {len(kept)} population(s) keep per-neuron du/dv/thresholds, which Loihi2HwCfg "
                     f"refuses: {why}")
    if not split and not kept:
        lines.append("lava: every population has one du/dv/threshold value per layer; nothing to split for Loihi 2")
    return lines
