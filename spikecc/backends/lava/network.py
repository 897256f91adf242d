"""Build live Lava processes from a NetworkPlan (spikecc.backends.lava.plan).

    build_network(plan, inputs, steps, record_states) -> LavaNetwork: one process per non-alias node,
        the plan's connections, sources filled with the input data, and one `Probe` process that records
        outputs and states

Recording: Lava's Monitor takes one variable per process (and one OS process each), and reading a Var
back through the runtime moves one element per message, which costs seconds for a few thousand values.
The `Probe` process here records everything in one OS process: an InPort per recorded output (read in the
spiking phase, like io.sink.RingBuffer) and a RefPort per recorded state variable (read in the
post-management phase, after the neuron's update and reset, like Monitor). It writes straight into an
anonymous shared memory map created before Lava forks its processes, so the parent reads the results
without any messages.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.process import Dense
from lava.proc.graded.process import GradedVec
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.process import LIF, TernaryLIF
from lava.utils.weightutils import SignMode

from spikecc.backends.lava import processes
from spikecc.backends.lava.lm_processes import _SHARED, release_shared, shared_array
from spikecc.backends.lava.lowering import ProcessSpec
from spikecc.backends.lava.plan import SELECT_TAGS, NetworkPlan, output_reads

_CLASSES: dict[str, type[AbstractProcess]] = {
    "Dense": Dense, "LIF": LIF, "TernaryLIF": TernaryLIF, "GradedVec": GradedVec, "Source": Source,
    **{cls.__name__: cls for cls in processes.PROCESSES}}


# -- the recording process ------------------------------------------------------------------------
# Shared buffers by key (lm_processes.shared_array): made in the parent before Lava forks its processes, so every
# child finds them.
_KEYS = itertools.count()


class Probe(AbstractProcess):
    """Records `in_{i}` (messages arriving at InPorts, per step) and `ref_{j}` (Var values read after each
    step) into one shared (steps, width) float64 buffer: the InPorts' columns first, in order, then the
    RefPorts' (proc_params in_cols / ref_cols hold each one's column range)."""

    def __init__(self, *, key: str, steps: int, in_sizes: list[int], ref_vars: list[Any]) -> None:
        in_cols, ref_cols, col = [], [], 0
        for n in in_sizes:
            in_cols.append((col, col + n))
            col += n
        for var in ref_vars:
            n = int(np.prod(var.shape))
            ref_cols.append((col, col + n))
            col += n
        super().__init__(key=key, steps=steps, in_cols=in_cols, ref_cols=ref_cols, width=col)
        # Ports are registered by AbstractProcess._post_init after __init__; build_network connects them.
        for i, n in enumerate(in_sizes):
            setattr(self, f"in_{i}", InPort(shape=(n,)))
        for j, var in enumerate(ref_vars):
            setattr(self, f"ref_{j}", RefPort(shape=var.shape))
        self.width = col


class PyProbeModelBase(PyLoihiProcessModel):
    """Writes row t-1 of the shared buffer at Lava step t: inputs in run_spk, Vars in run_post_mgmt."""

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self._buf = _SHARED[proc_params["key"]]
        self._steps = int(proc_params["steps"])
        self._has_refs = bool(proc_params["ref_cols"])
        self._in: list | None = None  # the builder sets the ports after __init__: bind them on first use
        self._ref: list | None = None

    def _bind(self) -> None:
        self._in = [(getattr(self, f"in_{i}"), a, b) for i, (a, b) in enumerate(self.proc_params["in_cols"])]
        self._ref = [(getattr(self, f"ref_{j}"), a, b) for j, (a, b) in enumerate(self.proc_params["ref_cols"])]

    def run_spk(self) -> None:
        if self._in is None:
            self._bind()
        t = self.time_step - 1
        for port, a, b in self._in:
            x = port.recv()  # always receive, so channels never fill up past the recorded steps
            if t < self._steps:
                self._buf[t, a:b] = np.asarray(x).reshape(-1)

    def post_guard(self) -> bool:
        return self._has_refs

    def run_post_mgmt(self) -> None:
        if self._ref is None:
            self._bind()
        t = self.time_step - 1
        for port, a, b in self._ref:
            x = port.read()
            if t < self._steps:
                self._buf[t, a:b] = np.asarray(x).reshape(-1)


def probe_model_for(probe: Probe) -> type[PyLoihiProcessModel]:
    """A process model class with one LavaPyType per port of this probe (Lava's builder looks each port
    up by name on the model class, and rejects model attributes without a port)."""
    attrs: dict[str, Any] = {}
    for port in probe.in_ports:
        attrs[port.name] = LavaPyType(PyInPort.VEC_DENSE, float)
    for port in probe.ref_ports:
        attrs[port.name] = LavaPyType(PyRefPort.VEC_DENSE, float)
    cls = type(f"PyProbeModel_{probe.proc_params['key']}", (PyProbeModelBase,), attrs)
    return requires(CPU)(implements(proc=type(probe), protocol=LoihiProtocol)(cls))


def make_probe_class() -> type[Probe]:
    """A fresh Probe subclass per network: Lava selects models per process class, so each probe's
    model (whose ports depend on what it records) needs a class of its own."""
    return type(f"Probe_{next(_KEYS)}", (Probe,), {})


# -- live network ---------------------------------------------------------------------------------
Columns = tuple[int, int, int, "np.ndarray | None"]  # (first column, end column, count, elements or None)


@dataclass
class LavaNetwork:
    """Live Lava processes for a plan. `outputs[name]` lists (first column, end column, count, elements): the
    Output is the sum of those column ranges times their counts, each placed at its elements of the Output
    (None: all, in order; a split node's processes each carry some); `states[(node, var)]` lists (first
    column, end column, 1, elements) the same way. Both index the probe's buffer; `buffer()` is that buffer,
    (steps, columns), valid after a run; `gather` puts columns together."""

    plan: NetworkPlan
    steps: int
    processes: dict[str, AbstractProcess]
    probe: Probe
    probe_model: type[PyLoihiProcessModel]
    outputs: dict[str, list[Columns]] = field(default_factory=dict)
    states: dict[tuple[str, str], list[Columns]] = field(default_factory=dict)
    key: str = ""

    def buffer(self) -> np.ndarray:
        return _SHARED[self.key]

    @staticmethod
    def gather(buf: np.ndarray, cols: list[Columns], size: int) -> np.ndarray:
        """(steps, size): the sum of the column ranges of `buf` times their counts, each at its elements."""
        out = np.zeros((buf.shape[0], size))
        for a, b, count, index in cols:
            if index is None:
                out += buf[:, a:b] * count
            else:
                out[:, index] += buf[:, a:b] * count
        return out

    def run_config(self):
        from lava.magma.core.run_configs import Loihi2SimCfg

        # Lava 0.10's compiler looks the exception map up by process instance (compiler_graphs.py:1031),
        # RunConfig.select by class (run_configs.py:208): give both. spikecc's own processes get their models
        # by instance too: Lava's search would import every module of spikecc's backend packages
        # (compiler_graphs.py:795-900) to look for models, once per process.
        tag = SELECT_TAGS[self.plan.mode]
        models = {p: processes.model_for(type(p), tag) for p in self.processes.values()
                  if type(p) in processes.PROCESSES}
        return Loihi2SimCfg(select_tag=tag,
                            exception_proc_model_map={**models, self.probe: self.probe_model,
                                                      type(self.probe): self.probe_model})

    def release(self) -> None:
        """Drop the shared buffer (after the results were copied out)."""
        release_shared(self.key)


def _new_process(spec: ProcessSpec, name: str, data: np.ndarray | None) -> AbstractProcess:
    if spec.cls == "Source":
        return Source(data=data)  # RingBuffer takes no name argument
    kwargs = dict(spec.kwargs)
    if "sign_mode" in kwargs:  # the blocks of a split Dense (spikecc.backends.lava.split)
        kwargs["sign_mode"] = SignMode(kwargs["sign_mode"])
    if not spec.named:
        return _CLASSES[spec.cls](**kwargs)
    return _CLASSES[spec.cls](name=name, **kwargs)


def build_network(plan: NetworkPlan, inputs: dict[str, np.ndarray], steps: int,
                  record_states: dict[str, tuple[str, ...]] | None = None) -> LavaNetwork:
    """Instantiate the plan. `inputs[name]` is (steps, n) for each Input node; `record_states[node]` lists
    the state variables to record (each must be one the node's spec declares)."""
    record_states = record_states or {}
    processes: dict[str, AbstractProcess] = {}
    for name in plan.processes:
        spec = plan.specs[name]
        data = None
        if spec.cls == "Source":
            # RingBuffer data is (n, time); fixed_pt sends int32, floating_pt float.
            x = np.asarray(inputs[name]).reshape(steps, -1).T
            data = np.ascontiguousarray(x.astype(np.int64 if plan.mode == "fixed" else np.float64))
        processes[name] = _new_process(spec, name, data)
    for src, dst in plan.connections:
        out_port = getattr(processes[src], plan.specs[src].out_port)
        out_port.connect(getattr(processes[dst], plan.specs[dst].in_port))

    # What the probe records: one InPort per process whose out-port messages an Output reads, one RefPort
    # per Var (readout voltages, requested states), and an anchor InPort per component nothing else
    # reaches. An Output is the sum of its sources' columns, each times the number of edges that carry it
    # (Lava refuses to connect the same two ports twice, so repeats are counted here instead).
    in_sources: list[str] = []
    ref_vars: list[Any] = []
    ref_keys: list[tuple[str, str]] = []

    def in_index(node: str) -> int:
        if node not in in_sources:
            in_sources.append(node)
        return in_sources.index(node)

    def ref_index(node: str, var: str) -> int:
        if (node, var) not in ref_keys:
            ref_keys.append((node, var))
            ref_vars.append(getattr(processes[node], var))
        return ref_keys.index((node, var))

    # Output -> [("in" | "ref", index, count, elements)]: one entry per process of each node it reads
    out_reads: dict[str, list[tuple[str, int, int, np.ndarray | None]]] = {}
    for name, reads in output_reads(plan).items():
        kind, nodes = ("in", reads.ports) if reads.ports else ("ref", reads.states)
        out_reads[name] = []
        for node in dict.fromkeys(nodes):
            for part in plan.parts[node]:
                i = in_index(part.process) if kind == "in" else ref_index(part.process, "v")
                out_reads[name].append((kind, i, nodes.count(node), part.index))
    state_refs = {(node, var): [(ref_index(part.process, var), part.index) for part in plan.parts[node]]
                  for node, names in record_states.items() for var in names}
    for anchor in _unreached_components(plan, [*in_sources, *(process for process, _ in ref_keys)]):
        in_index(anchor)

    key = f"spikecc-{next(_KEYS)}"
    probe_cls = make_probe_class()
    probe = probe_cls(key=key, steps=steps, in_sizes=[plan.out_sizes[n] for n in in_sources], ref_vars=ref_vars)
    for i, src in enumerate(in_sources):
        getattr(processes[src], plan.specs[src].out_port).connect(getattr(probe, f"in_{i}"))
    for j, var in enumerate(ref_vars):
        getattr(probe, f"ref_{j}").connect_var(var)
    model = probe_model_for(probe)

    shared_array(key, (steps, probe.width))  # the probe's OS process writes, this one reads
    in_cols = probe.proc_params["in_cols"]
    ref_cols = probe.proc_params["ref_cols"]
    cols = {"in": in_cols, "ref": ref_cols}
    outputs = {n: [(*cols[kind][i], count, index) for kind, i, count, index in out_reads[n]]
               for n in plan.graph.outputs()}
    states = {k: [(*ref_cols[j], 1, index) for j, index in refs] for k, refs in state_refs.items()}
    return LavaNetwork(plan=plan, steps=steps, processes=processes, probe=probe, probe_model=model,
                       outputs=outputs, states=states, key=key)


def _unreached_components(plan: NetworkPlan, touched: list[str]) -> list[str]:
    """One process per weakly connected component that nothing recorded touches. Lava compiles only the
    processes connected to the one `run` is called on (the probe), so these get an anchor connection."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(plan.processes)
    g.add_edges_from(plan.connections)
    seen = set(touched)
    order = {n: i for i, n in enumerate(plan.processes)}
    anchors = [min(comp, key=order.__getitem__) for comp in nx.connected_components(g) if not comp & seen]
    return sorted(anchors, key=order.__getitem__)
