"""Write a Loihi-form graph as a small stand-alone Lava program: `lava_network.py` + `lava_params.npz`.

The generated module rebuilds the same process graphs that `run_lava` runs (both come from
`plan_network`), with Lava's own processes and, for language-model ops, spikecc's (Elastic, SpikeRouter,
Relay, PhasedLIF), so it also serves `Loihi2HwCfg` where the proprietary lava-loihi extension is installed
(spikecc's processes have Python models only: under Loihi2HwCfg they would run on the host CPU, not on
neuro-cores). It holds two plans of the same network: the whole plan (one process per layer, what
`run_lava` runs by default) and the split plan (`plan_network(..., split=True)`: layers whose du, dv or
thresholds differ between neurons become one process per value group, which is what Loihi 2 takes;
spikecc.backends.lava.split). Hardware runs use the split plan; simulation runs the whole plan unless told
otherwise, since Lava's simulator starts one OS process per process:

    build(inputs=None, steps=1, split=False) -> dict process -> Lava process   (sources hold `inputs`)
    run(inputs, steps=None, hardware=None, split=None) -> dict Output name -> (steps, n) array
    hardware_available() -> bool                             lava-loihi importable (lava.utils.loihi)
    check_hardware(split=True)                               ValueError where Loihi 2 would refuse the plan

Outputs are recorded with lava.proc.io.sink.RingBuffer (one per Output node) and line up with the CPU
simulator's steps as `run_lava`'s do (see spikecc.backends.lava.run). Weakly connected parts of the graph
that share no process are run one after the other, each in its own runtime: Lava compiles only what is
connected to the process `run` is called on.

It imports lava and numpy, never spikecc: beside it go `spikecc_lava_compat.py`, a copy of spikecc.lava_compat
(Lava 0.10 does not import on Python 3.11 without it), and, when the network uses spikecc's processes,
`spikecc_processes.py`, a copy of spikecc.backends.lava.processes with its few spikecc constants written in as
numbers (`standalone_source`). Both copies are made from those modules' source at write time, so there is one
source of truth; the generated module loads them by path.

The bytes depend only on the graph: nodes in graph order, arrays in the .npz by sorted key, zip entries
with a fixed date, no timestamps or paths.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

import spikecc
from spikecc.backends.lava.lowering import PROCESS_CLASSES, SPIKECC_PROCESSES
from spikecc.backends.lava.plan import SELECT_TAGS, NetworkPlan, check_mode, output_reads, plan_network
from spikecc.backends.lava.split import Part
from spikecc.errors import BackendError
from spikecc.files import Npz, atomic_write_bytes
from spikecc.ir.graph import Graph

MODULE_NAME = "lava_network.py"
PARAMS_NAME = "lava_params.npz"
# Copies of spikecc modules written beside the generated module: file stem -> spikecc module
COMPAT_STEM = "spikecc_lava_compat"
PROCESSES_STEM = "spikecc_processes"
COPIES = {COMPAT_STEM: "spikecc.lava_compat", PROCESSES_STEM: SPIKECC_PROCESSES}

_SPIKECC_IMPORT = re.compile(r"^from (spikecc(?:\.\w+)*) import ([\w, ]+?)[ \t]*(#.*)?$", re.MULTILINE)


def standalone_source(module: str) -> str:
    """The source of one of spikecc's modules (by name) as a file that runs without spikecc: each line
    `from spikecc.x import A, B` becomes `A = <value>` / `B = <value>` (numbers and strings only; anything else,
    or any other import of spikecc, is a BackendError), under a header saying where it came from. The module is
    read, not imported (spikecc.backends.lava.processes imports Lava; writing a module does not need it)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BackendError(f"cannot find the source of {module} to copy it into a generated module")
    text = Path(spec.origin).read_text(encoding="utf8")

    def inline(m: re.Match) -> str:
        source = importlib.import_module(m.group(1))
        lines = []
        for name in (n.strip() for n in m.group(2).split(",")):
            value = getattr(source, name)
            if not isinstance(value, (int, float, str)) or isinstance(value, bool):
                raise BackendError(f"{module} imports {name} from {m.group(1)}, which is not a number or "
                                   "string; a standalone copy can only write such constants in")
            lines.append(f"{name} = {value!r}  # {m.group(1)}.{name}")
        return "\n".join(lines)

    text = _SPIKECC_IMPORT.sub(inline, text)
    left = re.search(r"^\s*(from|import)\s+spikecc\b.*$", text, re.MULTILINE)
    if left:
        raise BackendError(f"{module} cannot be copied into a generated module: it keeps "
                           f"`{left.group(0).strip()}`")
    header = (f"# Copy of {module}, written by spikecc {spikecc.__version__} beside a generated Lava module\n"
              "# so that the module runs without spikecc. Regenerate it with spikecc; do not edit.\n")
    return header + text


def _literal(value: Any) -> str:
    """Python source for a scalar or tuple kwarg (arrays go to the .npz instead)."""
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, (int, np.integer)):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else f"float({str(float(value))!r})"  # inf: readouts
    if isinstance(value, tuple):
        return "(" + "".join(f"{_literal(v)}, " for v in value).rstrip(" ") + ")"
    raise TypeError(f"cannot write {type(value).__name__} as a literal")


def _components(plan: NetworkPlan) -> list[list[str]]:
    """Process nodes grouped into weakly connected parts, each in graph order, parts by first node."""
    g = nx.Graph()
    g.add_nodes_from(plan.processes)
    g.add_edges_from(plan.connections)
    order = {n: i for i, n in enumerate(plan.processes)}
    comps = [sorted(c, key=order.__getitem__) for c in nx.connected_components(g)]
    return sorted(comps, key=lambda c: order[c[0]])


def _store(arrays: dict[str, np.ndarray], key: str, value: np.ndarray, prefix: str) -> str:
    """Put `value` into the parameter file's `arrays` under `key` (a process both plans share writes the same
    array there), or under `prefix + key` where the other plan already holds something else at `key` (a block
    of the same name that the two plans cut differently). Returns the key used."""
    if key in arrays and not (arrays[key].dtype == value.dtype and np.array_equal(arrays[key], value)):
        key = prefix + key
        if key in arrays:
            raise BackendError(f"two different arrays for {key} in one generated module; report this as a spikecc bug")
    arrays[key] = value
    return key


def _body(plan: NetworkPlan, arrays: dict[str, np.ndarray], prefix: str = "") -> list[str]:
    """The lines that create a plan's processes and connections; their arrays go into `arrays` by
    `process/kwarg` (`_store`)."""
    lines: list[str] = []
    for name in plan.processes:
        spec = plan.specs[name]
        if spec.cls == "Source":
            data = f"_source_data(inputs, {name!r}, {plan.sizes[name]}, steps)"
            lines.append(f"    procs[{name!r}] = Source(data={data})")
            continue
        args = []
        for k in sorted(spec.kwargs):
            v = spec.kwargs[k]
            if isinstance(v, np.ndarray):
                key = _store(arrays, f"{name}/{k}", v, prefix)
                args.append(f"{k}=P[{key!r}]")
            elif k == "sign_mode":  # a block of a split Dense keeps its layer's sign mode (split.py)
                args.append(f"sign_mode=SignMode({int(v)})")
            else:
                args.append(f"{k}={_literal(v)}")
        if spec.named:
            args.append(f"name={name!r}")
        lines.append(f"    procs[{name!r}] = {spec.cls}({', '.join(args)})")
    for src, dst in plan.connections:
        lines.append(f"    procs[{src!r}].{plan.specs[src].out_port}.connect(procs[{dst!r}].{plan.specs[dst].in_port})")
    return lines or ["    pass"]


def _recording(plan: NetworkPlan, arrays: dict[str, np.ndarray], prefix: str = "") -> dict[str, Any]:
    """What a plan's run records: per Output the processes to read (out-port messages, or a readout's v),
    each with the number of edges that carry it and the key of its elements in the parameter file (None: all
    of the Output, in order), the sink size per process, and the connected components to run."""
    reads = output_reads(plan)

    def elements(part: Part) -> str | None:
        if part.index is None:
            return None
        return _store(arrays, f"{part.process}/elements", part.index.astype(np.int64), prefix)

    # Each Output sums what it reads, each source times the number of edges that carry it: Lava cannot
    # connect the same two ports twice, so every distinct source gets its own sink (or Monitor) instead.
    outputs = {o: [(p.process, plan.specs[p.process].out_port, r.ports.count(n), elements(p))
                   for n in dict.fromkeys(r.ports) for p in plan.parts[n]] for o, r in reads.items() if r.ports}
    readouts = {o: [(p.process, r.states.count(n), elements(p)) for n in dict.fromkeys(r.states)
                    for p in plan.parts[n]] for o, r in reads.items() if r.states}
    sinks = {process: plan.out_sizes[process] for feeds in outputs.values() for process, *_ in feeds}
    return {"outputs": outputs, "readouts": readouts, "sinks": sinks, "components": _components(plan)}


def module_source(whole: NetworkPlan, split: NetworkPlan | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """The generated module's text and the arrays of its parameter file, from the whole plan and the split
    plan of the same graph (plan_network(..., split=True)); without a split plan, or when it splits nothing,
    the module holds one set of processes for both."""
    plan = whole
    arrays: dict[str, np.ndarray] = {}
    inputs = {n: plan.sizes[n] for n in plan.graph.inputs()}
    # How each Input's real values become what its source sends (fixed point: integer payloads, as
    # spikecc.compiler.passes.quantize.quantize_inputs makes them): (payload bits, value of one unit);
    # bits 0 = binary spikes.
    g = plan.graph
    payloads = {n: (int(g.annotation(n, "input_bits", 0)), float(g.annotation(n, "input_scale", 1.0)))
                if plan.mode == "fixed" else
                (0 if g.annotation(n, "signal", {}).get("kind") == "binary" else -1, 1.0) for n in inputs}
    kept = dict(split.kept if split is not None else whole.kept)
    if split is not None and set(split.splits) == set(whole.splits):
        split = None  # the same processes (either nothing differs, or only what the whole plan splits too)
    body = _body(whole, arrays)
    rec_whole = _recording(whole, arrays)
    splits = {n: f"{v.neurons} -> {len(v.groups)} groups by {', '.join(v.by)}"
              for n, v in (split or whole).splits.items()}
    if split is None:
        split_body = "_build_split = _build_whole  # the same processes"
        split_rec = "SPLIT = WHOLE"
    else:
        split_body = ('def _build_split(P, inputs, steps):\n    """The split plan: one process per value group."""\n'
                      "    procs = {}\n" + "\n".join(_body(split, arrays, "split:")) + "\n    return procs")
        split_rec = f"SPLIT = {_pretty(_recording(split, arrays, 'split:'))}"
    classes = sorted({p.specs[n].cls for p in (whole, split) if p is not None for n in p.processes} - {"Source"})
    by_module: dict[str, list[str]] = {}
    for cls in classes:
        by_module.setdefault(PROCESS_CLASSES[cls], []).append(cls)
    imports = [f"from {mod} import {', '.join(names)}" for mod, names in sorted(by_module.items())
               if mod != SPIKECC_PROCESSES]
    imports.append("from lava.proc.io.source import RingBuffer as Source")
    imports.append("from lava.proc.io.sink import RingBuffer as Sink")
    imports.append("from lava.proc.monitor.process import Monitor")
    if split is not None and split.mode == "fixed":
        imports.append("from lava.utils.weightutils import SignMode")
    own = by_module.get(SPIKECC_PROCESSES, [])
    if own:  # spikecc's processes, from the copy beside the module (see module docstring)
        imports.append(f"\n_PROCESSES = _beside({PROCESSES_STEM!r})")
        imports.extend(f"{cls} = _PROCESSES.{cls}" for cls in own)
    text = TEMPLATE.format(
        version=spikecc.__version__, summary=plan.graph.summary(), mode=plan.mode, compat=COMPAT_STEM,
        select_tag=SELECT_TAGS[plan.mode], params=PARAMS_NAME, imports="\n".join(imports),
        inputs=_pretty(inputs), payloads=_pretty(payloads), out_sizes=_pretty({o: plan.sizes[o] for o in
                                                                                g.outputs()}),
        whole=_pretty(rec_whole), split=split_rec, splits=_pretty(splits), non_uniform=_pretty(kept),
        whole_non_uniform=_pretty(list(whole.kept)),
        body="\n".join(body), split_body=split_body)
    return text, arrays


def _pretty(obj: Any) -> str:
    """repr with dicts written in insertion order (graph order), deterministic."""
    return repr(obj)


def write_lava_module(graph: Graph, out_dir: str | os.PathLike, mode: str | None = None) -> Path:
    """Write `lava_network.py`, `lava_params.npz` and the copies of spikecc modules it needs (module docstring)
    into `out_dir` (created if missing) for a Loihi-form graph; `mode` defaults to the graph's form (fixed after
    quantize_for_loihi). Returns the module path. The same graph gives the same bytes."""
    mode = check_mode(graph, mode)
    plan = plan_network(graph, mode)
    text, arrays = module_source(plan, plan_network(graph, mode, split=True))
    stems = [COMPAT_STEM]
    if any(PROCESS_CLASSES[plan.specs[n].cls] == SPIKECC_PROCESSES for n in plan.processes):
        stems.append(PROCESSES_STEM)
    copies = {f"{stem}.py": standalone_source(COPIES[stem]) for stem in stems}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for file, source in copies.items():
        atomic_write_bytes(out / file, source.encode("utf8"))
    atomic_write_bytes(out / PARAMS_NAME, Npz(arrays))  # streamed into the file
    atomic_write_bytes(out / MODULE_NAME, text.encode("utf8"))
    return out / MODULE_NAME


TEMPLATE = '''"""Lava process graph for a spikecc {summary} (generated by spikecc {version}; regenerate, do not edit).

    build(inputs=None, steps=1, split=False) -> dict process -> Lava process   (sources hold `inputs`)
    run(inputs, steps=None, hardware=None, split=None) -> dict Output name -> (steps, n) array
    hardware_available() -> bool                                  (lava-loihi installed: Loihi2HwCfg)
    check_hardware(split=True)                                    ValueError where Loihi 2 would refuse

Two plans of one network: WHOLE (one process per layer) and SPLIT (layers whose du, dv or thresholds differ
between neurons as one process per value group, SPLITS; Loihi 2 holds those values once per process). Both
give the same outputs; hardware runs take SPLIT, simulation WHOLE unless split=True (Lava's simulator starts
one OS process per process). NON_UNIFORM lists the layers SPLIT had to keep whole, and why.

Mode: {mode} (Loihi2SimCfg(select_tag="{select_tag}") in simulation). Parameters: {params} next to this file;
also next to it: {compat}.py (Lava's Python 3.11 import fix) and, where the network has spikecc's own processes,
spikecc_processes.py (their Lava processes and models). It imports lava and numpy, not spikecc.
Step k of the returned arrays is Lava's step k+1; each Dense delivers one step late, as on Loihi 2.
`inputs` is one (steps, *shape) array for a single Input node, else a dict by Input name: the same real
values `spikecc lava` takes. This module turns them into what each source sends (PAYLOADS): binary spikes
must be 0 or 1; in fixed point a real value x becomes the integer payload clip(round(x / scale), +-(2**(bits-1) - 1)).
"""

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np


def _beside(stem):
    """A module spikecc wrote next to this file, loaded by path once per Python process, under a name that
    holds its content's digest (two builds' copies never mix)."""
    path = Path(__file__).with_name(stem + ".py")
    name = stem + "_" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Lava looks process models up through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


_beside("{compat}").install_lava_py311_fix()  # before the first import of lava

from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg
{imports}

MODE = "{mode}"
SELECT_TAG = "{select_tag}"
INPUTS = {inputs}  # Input node -> values per step
PAYLOADS = {payloads}  # Input node -> (bits, scale): 0 = binary spikes, -1 = real values (float), else graded
OUTPUT_SIZES = {out_sizes}
# Per plan: "outputs": Output -> [(process, out port, edges, elements)], the sum of messages x edges, each
# placed at its elements of the Output (a key of the parameter file; None: all, in order); "readouts": Output ->
# [(readout neuron process, edges, elements)], v after each step, the same way; "sinks": process -> size, one
# sink each; "components": processes that share connections, run together.
WHOLE = {whole}
{split}
SPLITS = {splits}  # layers SPLIT divides: neurons -> value groups
NON_UNIFORM = {non_uniform}  # layers SPLIT keeps whole although their values differ: Loihi2HwCfg refuses them
WHOLE_NON_UNIFORM = {whole_non_uniform}  # layers WHOLE runs as one process although their values differ


def hardware_available() -> bool:
    """True where lava-loihi is installed (the test lava.utils.loihi.is_installed uses)."""
    return importlib.util.find_spec("lava.utils.loihi2_profiler") is not None


def _source_data(inputs, name, size, steps):
    if inputs is None:
        x = np.zeros((steps, size))
    else:
        x = inputs[name] if isinstance(inputs, dict) else inputs
        x = np.asarray(x, dtype=np.float64).reshape(np.shape(x)[0], -1)[:steps]
        if x.shape != (steps, size):
            raise ValueError(f"input for {{name!r}}: expected ({{steps}}, {{size}}) values, got {{x.shape}}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"input for {{name!r}} holds NaN or infinite values")
    bits, scale = PAYLOADS[name]
    if bits == 0:
        if not np.all((x == 0) | (x == 1)):
            raise ValueError(f"input for {{name!r}} carries binary spikes: give 0 or 1 only")
    elif bits > 0:
        lim = 2 ** (bits - 1) - 1
        x = np.clip(np.rint(x / scale), -lim, lim)
    return np.ascontiguousarray(x.T.astype(np.int64 if MODE == "fixed" else np.float64))


def _params():
    return np.load(Path(__file__).with_name("{params}"))


def _build_whole(P, inputs, steps):
    """The whole plan: one process per layer."""
    procs = {{}}
{body}
    return procs


{split_body}


def build(inputs=None, steps=1, split=False):
    """Create every process and connection of the network (the split plan with `split`); returns them by
    process name (a layer's name, or `layer[i]` for the parts of a split layer and its synapses)."""
    return (_build_split if split else _build_whole)(_params(), inputs, steps)


def check_hardware(split=True):
    """Raise a one-line ValueError where Loihi 2 would not take the plan: layers whose du, dv or thresholds
    differ between neurons in one process (Lava's LIF holds one value per process, lava/proc/lif/process.py)."""
    if not split and WHOLE_NON_UNIFORM:
        raise ValueError(f"layers {{', '.join(WHOLE_NON_UNIFORM)}} hold several du/dv/threshold values in one "
                         "process; Loihi 2 holds one per process: run the split plan (split=True) on hardware")
    if NON_UNIFORM:
        why = "; ".join(f"{{name}}: {{reason}}" for name, reason in NON_UNIFORM.items())
        raise ValueError(f"layers {{', '.join(NON_UNIFORM)}} keep several du/dv/threshold values in one process, "
                         f"which Loihi 2 holds once per process, and could not be split by value ({{why}})")


def run_config(hardware):
    """The run configuration: Loihi2HwCfg (lava-loihi's neuro-core models) or Lava's simulator."""
    return Loihi2HwCfg() if hardware else Loihi2SimCfg(select_tag=SELECT_TAG)


def run(inputs, steps=None, hardware=None, split=None):
    """Run `steps` steps (default: all input steps) and return each Output's values, (steps, n).

    hardware=None picks Loihi2HwCfg where lava-loihi is installed, else Loihi2SimCfg; split=None runs the
    split plan on hardware and the whole plan in simulation (the same outputs)."""
    if steps is None:
        first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
        steps = int(np.shape(first)[0]) if INPUTS else 1
    hardware = hardware_available() if hardware is None else hardware
    split = hardware if split is None else split
    if hardware:
        check_hardware(split)
    plan = SPLIT if split else WHOLE
    procs = build(inputs, steps, split)
    sinks, monitors = {{}}, {{}}
    for out, feeds in plan["outputs"].items():
        for proc, port, _, _ in feeds:
            if proc not in sinks:
                sinks[proc] = Sink(shape=(plan["sinks"][proc],), buffer=steps)
                getattr(procs[proc], port).connect(sinks[proc].a_in)
    for out, feeds in plan["readouts"].items():
        for proc, _, _ in feeds:
            if proc not in monitors:
                monitors[proc] = Monitor()  # one Var per Monitor (lava/proc/monitor/process.py)
                monitors[proc].probe(procs[proc].v, steps)
    recorded = {{}}
    for comp in plan["components"]:
        mine = [proc for proc in comp if proc in sinks or proc in monitors]
        if not mine:
            continue  # nothing recorded here: running it would not change any output
        root = procs[comp[0]]
        try:
            root.run(condition=RunSteps(num_steps=steps), run_cfg=run_config(hardware))
            for proc in mine:
                if proc in sinks:
                    recorded[proc] = np.asarray(sinks[proc].data.get()).T
                else:
                    recorded[proc] = np.asarray(monitors[proc].get_data()[procs[proc].name]["v"])
        finally:
            root.stop()
    P = _params()
    results = {{}}
    for out, size in OUTPUT_SIZES.items():
        value = np.zeros((steps, size))
        feeds = [(proc, count, at) for proc, _, count, at in plan["outputs"].get(out, [])]
        for proc, count, at in feeds + plan["readouts"].get(out, []):
            if at is None:
                value += recorded[proc] * count
            else:
                value[:, P[at]] += recorded[proc] * count
        results[out] = np.rint(value).astype(np.int64) if MODE == "fixed" else value
    return results
'''
