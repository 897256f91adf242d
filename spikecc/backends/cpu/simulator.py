"""spikecc's event-driven CPU simulator: an interpreter over the IR graph (torch.fx's Interpreter, for
spiking time).

Execution follows `Graph.components()`: a node outside any loop is run over all steps at once (its inputs
are final by then), and the nodes of a loop are stepped together, one step at a time, in schedule order.
An edge marked delayed by `Graph.schedule()` delivers its source's value from the previous step (at
step 0 its value at rest: zero, or a synapse's bias). Synapse kernels gather only the weight rows of
non-zero inputs, so synaptic work grows with spikes x fan-out. Per node the simulator counts output
events (non-zeros) and synaptic operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import nir
import numpy as np

from spikecc.backends.cpu import (  # noqa: F401  (lowerings)
    lm_ops,
    loihi_ops,
    nir_ops,
    rwkv6_ops,
    spikelm_ops,
    spikerwkv_ops,
)
from spikecc.backends.cpu.kernels import BuildContext, Kernel, build_kernel
from spikecc.errors import GraphError
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.infer import infer_shapes, infer_signals
from spikecc.ir.inputs import bind_inputs

MODES = ("float", "fixed")


@dataclass
class NodeCounts:
    events: int = 0  # non-zero outputs of spike-carrying nodes, summed over steps and neurons (0 otherwise)
    negative: int = 0  # of those, the negative ones (ternary spikes -a, signed graded payloads)
    synops: int = 0  # synaptic operations: non-zero inputs x fan-out
    neurons: int = 0
    spiking: bool = False

    def rate(self, steps: int) -> float:
        """Mean events per neuron per step (the firing rate for spiking nodes)."""
        return self.events / max(1, self.neurons * steps)


@dataclass
class SimResult:
    outputs: dict[str, np.ndarray]  # per Output node: (steps, *shape)
    steps: int
    counts: dict[str, NodeCounts]
    states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # node -> var -> (steps, n)
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # recorded node outputs, (steps, *shape)

    def total(self, what: str) -> int:
        return sum(getattr(c, what) for c in self.counts.values())


class Simulator:
    """Build once, run many times. `mode="float"` runs NIR's float semantics (or Loihi ops in float);
    `mode="fixed"` runs graphs lowered and quantized for Loihi with Lava's bit-accurate integer maths."""

    def __init__(self, graph: Graph, mode: str = "float", dtype=np.float64) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.graph, self.mode = graph, mode
        self.dtype = np.dtype(np.int64 if mode == "fixed" else dtype)
        self.shapes = infer_shapes(graph)
        self.signals = infer_signals(graph)
        self.order, delayed = graph.schedule()
        self.delayed = set(delayed)
        self.components = graph.components()
        self.in_edges: dict[str, list[Edge]] = {n: graph.in_edges(n) for n in graph.nodes}
        self.kernels: dict[str, Kernel] = {}
        for name in self.order:
            op = graph.nodes[name]
            ctx = BuildContext(
                name=name,
                in_shapes=self._port_shapes(name),
                out_shape=self.shapes[name],
                in_signals={e.port: self.signals[e.src] for e in self.in_edges[name]},
                dt=graph.dt, mode=mode, dtype=self.dtype, annotations=graph.annotations.get(name, {}))
            self.kernels[name] = build_kernel(op, ctx)

    def _port_shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """Shape arriving at each input port. Of equal-size inputs summed into one port, the one with the
        most axes, as infer_shapes does (a Linear's flat output added to a conv's (C, H, W) input)."""
        out: dict[str, tuple[int, ...]] = {}
        for e in self.in_edges[name]:
            s = self.shapes[e.src]
            if e.port not in out or len(s) > len(out[e.port]):
                out[e.port] = s
        return out

    def size(self, name: str) -> int:
        return int(np.prod(self.shapes[name]))

    # ---------------------------------------------------------------------------------------------
    def check_inputs(self, inputs: np.ndarray | Mapping[str, np.ndarray], steps: int | None) \
            -> tuple[dict[str, np.ndarray], int]:
        data, steps = bind_inputs(self.graph, self.shapes, inputs, steps, integer=self.mode == "fixed")
        return {n: a.astype(self.dtype) for n, a in data.items()}, steps

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray], steps: int | None = None,
            record: Iterable[str] = (), record_states: Iterable[str] = (),
            progress: Callable[[int], None] | None = None) -> SimResult:
        """Run from a fresh state. `record` names nodes whose outputs to keep; `record_states` names nodes
        whose state variables (e.g. v) to keep. `progress(k)` is called as steps complete."""
        data, steps = self.check_inputs(inputs, steps)
        record, record_states = set(record), set(record_states)
        unknown = sorted((record | record_states) - set(self.graph.nodes))
        if unknown:
            raise GraphError(f"cannot record unknown node(s) {', '.join(unknown)}")
        for k in self.kernels.values():
            k.reset()
        for n, a in data.items():
            self.kernels[n].data = a
        full: dict[str, np.ndarray] = {}
        states: dict[str, dict[str, np.ndarray]] = {}
        done = 0
        for comp in self.components:
            if len(comp) == 1 and not self.graph.has_self_loop(comp[0]):
                name = comp[0]
                out, st = self.kernels[name].run(self._gather_all(name, full, steps), steps,
                                                 name in record_states)
                full[name] = np.asarray(out).reshape(steps, -1)
                if st:
                    states[name] = st
            else:
                self._step_loop(comp, full, states, steps, record_states)
            done += 1
            if progress:
                progress(done)
        counts: dict[str, NodeCounts] = {}
        for name in self.order:
            op = self.graph.nodes[name]
            sig = self.signals[name]
            spiking = sig.is_spiking and not isinstance(op, (nir.Input, nir.Output))
            # Events are counted where they mean something (spike-carrying outputs): a full pass over a
            # real-valued array per node would cost as much as the simulation itself.
            ins = self.in_edges[name]
            counted = self.kernels[name].counted
            if counted is None and isinstance(op, nir.Output) and len(ins) == 1 and ins[0] not in self.delayed:
                counted = (counts[ins[0].src].events, counts[ins[0].src].negative)  # same values as its source
            if counted is not None:
                events, negative = counted
            else:
                events = int(np.count_nonzero(full[name])) if sig.is_spiking or isinstance(op, nir.Input) else 0
                negative = int(np.count_nonzero(full[name] < 0)) if sig.kind in ("ternary", "graded") else 0
            counts[name] = NodeCounts(events=events, negative=negative, synops=self.kernels[name].synops,
                                      neurons=self.size(name), spiking=spiking)
        outputs = {n: full[n].reshape(steps, *self.shapes[n]) for n in self.graph.outputs()}
        traces = {n: full[n].reshape(steps, *self.shapes[n]) for n in record}
        return SimResult(outputs=outputs, steps=steps, counts=counts, states=states, traces=traces)

    # ---------------------------------------------------------------------------------------------
    # Incremental stepping (token-by-token generation): state persists between calls.
    def start(self) -> None:
        """Reset every kernel and begin an incremental run (see `step`)."""
        for k in self.kernels.values():
            k.reset()
        self._prev = {n: self._rest(n) for n in self.order}
        self._events = dict.fromkeys(self.order, 0)
        self._negative = dict.fromkeys(self.order, 0)
        # Per-neuron event counts of spiking nodes: what the synapses they feed turn into work.
        self.neuron_events = {n: np.zeros(self.size(n), dtype=np.int64) for n in self.order
                              if self.signals[n].is_spiking}
        self._t = 0

    def step(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Advance one step with one value per Input node; returns every node's output at this step
        (flat vectors). Delayed edges read the previous call's values, exactly as in `run`."""
        if not hasattr(self, "_prev"):
            self.start()
        names = self.graph.inputs()
        if not isinstance(inputs, Mapping):
            inputs = {names[0]: inputs}
        cur: dict[str, np.ndarray] = {}
        for name in self.order:
            if name in names:
                cur[name] = np.asarray(inputs[name], dtype=self.dtype).reshape(-1)
                continue
            x: dict[str, np.ndarray] = {}
            for e in self.in_edges[name]:
                v = self._prev[e.src] if e in self.delayed else cur[e.src]
                x[e.port] = v if e.port not in x else x[e.port] + v
            cur[name] = np.asarray(self.kernels[name].step(x)).reshape(-1)
            self._events[name] += int(np.count_nonzero(cur[name]))
            self._negative[name] += int(np.sum(cur[name] < 0))
            if name in self.neuron_events:
                self.neuron_events[name] += cur[name] != 0
        self._prev = cur
        self._t += 1
        return cur

    def step_counts(self) -> dict[str, NodeCounts]:
        """Counts accumulated since `start()` by `step` calls."""
        return {n: NodeCounts(events=self._events[n], negative=self._negative[n], synops=self.kernels[n].synops,
                              neurons=self.size(n), spiking=self.signals[n].is_spiking) for n in self.order}

    # ---------------------------------------------------------------------------------------------
    def _gather_all(self, name: str, full: dict[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
        """All steps of each input port: the sum of the incoming edges, shifted one step where delayed."""
        ports: dict[str, np.ndarray] = {}
        for e in self.in_edges[name]:
            v = full[e.src]
            if e in self.delayed:
                shifted = np.empty_like(v)
                shifted[0] = self._rest(e.src)
                shifted[1:] = v[:-1]
                v = shifted
            ports[e.port] = v if e.port not in ports else ports[e.port] + v
        return ports

    def _rest(self, name: str) -> np.ndarray:
        """What a delayed edge from `name` delivers at step 0: the kernel's output at rest (zeros unless
        it says otherwise, e.g. a synapse's bias)."""
        rest = self.kernels[name].rest_output()
        if rest is None:
            return np.zeros(self.size(name), dtype=self.dtype)
        return np.broadcast_to(np.asarray(rest, dtype=self.dtype), (self.size(name),))

    def _step_loop(self, comp: list[str], full, states, steps: int, record_states: set[str]) -> None:
        for name in comp:
            full[name] = np.zeros((steps, self.size(name)), dtype=self.dtype)
        recs = {n: {v: [] for v in self.kernels[n].state_names} for n in comp if n in record_states}
        plan = [(name, self.kernels[name],
                 [(e.port, full[e.src] if e.src in full else None, e.src, e in self.delayed)
                  for e in self.in_edges[name]]) for name in comp]
        for t in range(steps):
            for name, kernel, edges in plan:
                x: dict[str, np.ndarray] = {}
                for port, _, src, delayed in edges:
                    tt = t - 1 if delayed else t
                    v = full[src][tt] if tt >= 0 else self._rest(src)
                    x[port] = v if port not in x else x[port] + v
                full[name][t] = kernel.step(x)
                if name in recs:
                    for var, val in kernel.state().items():
                        recs[name][var].append(val)
        for n, r in recs.items():
            states[n] = {v: np.stack(vals) for v, vals in r.items()}


def simulate(graph: Graph, inputs, steps: int | None = None, mode: str = "float", dtype=np.float64,
             **kwargs) -> SimResult:
    """One-shot: build a Simulator for `graph` and run it (see Simulator.run for the options)."""
    return Simulator(graph, mode=mode, dtype=dtype).run(inputs, steps=steps, **kwargs)
