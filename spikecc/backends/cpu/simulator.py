"""spikecc's event-driven CPU simulator: an interpreter over the IR graph (torch.fx's Interpreter, for
spiking time).

Execution follows `Graph.components()`: a node outside any loop is run over all steps at once (its inputs
are final by then), and the nodes of a loop are stepped together, one step at a time, in schedule order.
An edge marked delayed by `Graph.schedule()` delivers its source's value from the previous step (at
step 0 its value at rest: zero, or a synapse's bias). Synapse kernels gather only the weight rows of
non-zero inputs, so synaptic work grows with spikes x fan-out. Per node the simulator counts output
events (non-zeros) and synaptic operations.

Two checks guard a run: a neuron state that becomes inf or NaN stops it with a BackendError naming the
node and the step (forward Euler with dt/tau >= 2 diverges), and every spiking layer that never fired is
reported with a SpikeccWarning (what a file simulated with the wrong dt looks like) and in
`SimResult.silent`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import nir
import numpy as np

from spikecc.backends.cpu import (  # noqa: F401  (importing registers the lowerings)
    lm_ops,
    loihi_ops,
    neurocore_ops,
    nir_ops,
    rwkv6_ops,
    spikelm_ops,
    spikerwkv_ops,
)
from spikecc.backends.cpu.kernels import BuildContext, Kernel, build_kernel
from spikecc.backends.cpu.nir_ops import NonFiniteState
from spikecc.errors import BackendError, GraphError, SpikeccWarning
from spikecc.ir.formats import FLOAT, format_of
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.infer import TRANSPARENT_NIR_OPS, infer_shapes, infer_signals
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
    silent: list[str] = field(default_factory=list)  # spiking layers that never fired, in schedule order

    def total(self, what: str) -> int:
        return sum(getattr(c, what) for c in self.counts.values())


class Simulator:
    """Build once, run many times. `mode="float"` runs every node in float: NIR's float semantics, Loihi ops'
    float form (or, on quantized nodes, their integer parameters without rounding). `mode="fixed"` runs every
    node in its own number format (spikecc.ir.formats): nodes quantized for Loihi with Lava's bit-accurate
    integer maths (int64 values), nodes annotated float (a language model's host ops) in float; boundary ops
    (spikecc.ir.boundary_ops) convert between the two. A node without a format annotation runs fixed in
    fixed mode (a hand-built integer graph); pass-through nodes (Output, Flatten) take their source's format."""

    def __init__(self, graph: Graph, mode: str = "float", dtype=np.float64) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.graph, self.mode = graph, mode
        self.shapes = infer_shapes(graph)
        self.signals = infer_signals(graph)
        self.order, delayed = graph.schedule()
        self.delayed = set(delayed)
        self.components = graph.components()
        self.in_edges: dict[str, list[Edge]] = {n: graph.in_edges(n) for n in graph.nodes}
        self.modes = self._node_modes()
        self.dtypes = {n: np.dtype(np.int64 if m == "fixed" else dtype) for n, m in self.modes.items()}
        self.dtype = np.dtype(np.int64 if mode == "fixed" else dtype)  # of nodes without a format of their own
        self.kernels: dict[str, Kernel] = {}
        for name in self.order:
            op = graph.nodes[name]
            ctx = BuildContext(
                name=name,
                in_shapes=self._port_shapes(name),
                out_shape=self.shapes[name],
                in_signals={e.port: self.signals[e.src] for e in self.in_edges[name]},
                dt=graph.dt, mode=self.modes[name], dtype=self.dtypes[name],
                annotations=graph.annotations.get(name, {}))
            # parameters that overflow (dt/tau of a corrupt tau) are named by the load warning and by the run's
            # NonFiniteState, not by numpy's bare warnings on the way
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self.kernels[name] = build_kernel(op, ctx)

    def _node_modes(self) -> dict[str, str]:
        """Per node, the arithmetic it runs in (class docstring); checks that fixed and float values meet only
        at boundary ops."""
        if self.mode == "float":
            return dict.fromkeys(self.graph.nodes, "float")
        modes: dict[str, str] = {}
        for name in self.order:
            op = self.graph.nodes[name]
            declared = self.graph.annotations.get(name, {}).get("format")
            if isinstance(op, (nir.Output, nir.Flatten)) and declared is None and self.in_edges[name]:
                modes[name] = modes.get(self.in_edges[name][0].src, "fixed")
            else:
                modes[name] = "float" if format_of(self.graph.annotations.get(name, {})) == FLOAT and declared \
                    else "fixed"
        for e in self.graph.edges:
            src, dst = modes[e.src], modes[e.dst]
            converts = getattr(self.graph.nodes[e.dst], "converts_format", None)
            if src != dst and converts != (src, dst):
                raise GraphError(f"edge {e}: carries {src} values into a {dst} node; put a boundary op "
                                 "(HostToCore / CoreToHost) between host and neuro-core nodes")
        return modes

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
        fixed = {n for n in self.graph.inputs() if self.modes[n] == "fixed"}
        data, steps = bind_inputs(self.graph, self.shapes, inputs, steps, integer=fixed)
        return {n: a.astype(self.dtypes[n]) for n, a in data.items()}, steps

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
        # Overflow is reported by the neurons' own check (NonFiniteState), naming node and step, not by
        # numpy's warnings on the way there.
        with np.errstate(over="ignore", invalid="ignore"):
            for comp in self.components:
                if len(comp) == 1 and not self.graph.has_self_loop(comp[0]):
                    name = comp[0]
                    try:
                        out, st = self.kernels[name].run(self._gather_all(name, full, steps), steps,
                                                         name in record_states)
                    except NonFiniteState as exc:
                        raise self._non_finite(name, exc, exc.step) from None
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
        # Kernels may pass narrower integers between them (fixed point: int8 spikes, int32 currents); what
        # the caller gets is in each node's dtype.
        outputs = {n: full[n].reshape(steps, *self.shapes[n]).astype(self.dtypes[n], copy=False)
                   for n in self.graph.outputs()}
        traces = {n: full[n].reshape(steps, *self.shapes[n]).astype(self.dtypes[n], copy=False) for n in record}
        silent = [n for n in self.order if self.fires(n) and counts[n].events == 0]
        for name in silent:
            warnings.warn(SpikeccWarning(
                f"node '{name}' ({type(self.graph.nodes[name]).__name__}) never fired in {steps} steps "
                f"(dt = {self.graph.dt:g} s); if the file was exported for another time step, pass it with --dt"),
                stacklevel=2)
        return SimResult(outputs=outputs, steps=steps, counts=counts, states=states, traces=traces, silent=silent)

    def fires(self, name: str) -> bool:
        """Whether `name` makes spikes (a spiking neuron), rather than passing on another node's."""
        op = self.graph.nodes[name]
        return self.signals[name].is_spiking and not isinstance(op, (nir.Input, *TRANSPARENT_NIR_OPS))

    def _non_finite(self, name: str, exc: NonFiniteState, step: int) -> BackendError:
        """A kernel's NonFiniteState as a one-line error naming the node and the step."""
        return BackendError(
            f"node '{name}' ({type(self.graph.nodes[name]).__name__}): {exc.var} became {exc.value:g} at step "
            f"{step}; {exc.why}; pass the time step the network was exported for with --dt "
            f"(now {self.graph.dt:g} s), or check its parameters")

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
        try:
            for name in self.order:
                if name in names:
                    cur[name] = np.asarray(inputs[name], dtype=self.dtypes[name]).reshape(-1)
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
        except NonFiniteState as exc:
            raise self._non_finite(name, exc, self._t) from None
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
            # (summed at least in the simulator's dtype: kernels may hand over int8 spikes)
            ports[e.port] = v if e.port not in ports else \
                np.add(ports[e.port], v, dtype=np.result_type(ports[e.port], v, self.dtypes[name]))
        return ports

    def _rest(self, name: str) -> np.ndarray:
        """What a delayed edge from `name` delivers at step 0: the kernel's output at rest (zeros unless
        it says otherwise, e.g. a synapse's bias)."""
        rest = self.kernels[name].rest_output()
        if rest is None:
            return np.zeros(self.size(name), dtype=self.dtypes[name])
        return np.broadcast_to(np.asarray(rest, dtype=self.dtypes[name]), (self.size(name),))

    def _step_loop(self, comp: list[str], full, states, steps: int, record_states: set[str]) -> None:
        for name in comp:
            full[name] = np.zeros((steps, self.size(name)), dtype=self.dtypes[name])
        recs = {n: {v: [] for v in self.kernels[n].state_names} for n in comp if n in record_states}
        plan = [(name, self.kernels[name],
                 [(e.port, full[e.src] if e.src in full else None, e.src, e in self.delayed)
                  for e in self.in_edges[name]]) for name in comp]
        try:
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
        except NonFiniteState as exc:
            raise self._non_finite(name, exc, t) from None
        for n, r in recs.items():
            states[n] = {v: np.stack(vals) for v, vals in r.items()}


def simulate(graph: Graph, inputs, steps: int | None = None, mode: str = "float", dtype=np.float64,
             **kwargs) -> SimResult:
    """One-shot: build a Simulator for `graph` and run it (see Simulator.run for the options)."""
    return Simulator(graph, mode=mode, dtype=dtype).run(inputs, steps=steps, **kwargs)
