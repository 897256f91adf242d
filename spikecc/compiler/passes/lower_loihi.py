"""Lower an NIR graph to Loihi form: every synapse path becomes a LoihiDense, every neuron a Loihi neuron.

`lower_for_loihi(g)` returns a new graph (the input is not mutated) in which

- each chain of linear ops (Affine, Linear, Conv1d/2d, SumPool2d/AvgPool2d, Scale, Flatten, in any mix,
  with fan-in summed) from a source (Input or neuron) to a neuron or Output becomes ONE LoihiDense whose
  weight is the composed matrix (spikecc.ir.linear_maps.as_matrix); Scale and Flatten disappear into it;
- each neuron becomes a LoihiLIF / LoihiTernaryLIF in float form (see spikecc.ir.loihi_ops).

Neuron mapping, with dt = g.dt (NIR's forward-Euler discretisation, spikecc.backends.cpu.nir_ops), for an
incoming composed synapse I = M s + b:

    LIF       v <- (1 - dt/tau) v + dt/tau v_leak + g I,  g = dt r / tau
              du = 1 (u = a_in, no current memory), dv = dt/tau, W = g M,
              bias = g b + dt/tau (v_leak - v_reset), vth = v_threshold - v_reset
    IF        du = 1, dv = 0, g = dt r, W = g M, bias = g b, vth = v_threshold - v_reset
    CubaLIF   I_syn <- (1 - dt/tau_syn) I_syn + dt/tau_syn w_in I;  v as LIF driven by I_syn
              du = dt/tau_syn, dv = dt/tau_mem, g = dt r/tau_mem, W = du w_in g M, u = g I_syn,
              bias = dv (v_leak - v_reset) + c,  c = w_in g b.
              An Affine bias b enters I_syn in NIR; I_syn is linear, so from I_syn = 0 it adds
              c (1 - (1 - du)^(t+1)) to g I_syn at step t, rising to the steady state c. Loihi's bias enters v:
              it takes the steady state c, and the rest, -c (1 - du)^(t+1), is u decaying freely from -c at
              step -1, i.e. the NIR initial current in u's units is u'_0 = -c (u_init below prepares it)
    TernaryLIF (spikecc.ir.ops)  as LIF with vth_hi/vth_lo shifted by -v_reset -> LoihiTernaryLIF; it emits
              +-1, so its amplitude a is folded into the weights of the NEXT synapse layer (W = g M a), and
              those synapses carry graded messages (num_message_bits = 2) so that -1 is not read as +1
    Threshold s = [I > th]: du = 1, dv = 1 (no memory), vth = th
    LI, CubaLI, I (readouts): like LIF / CubaLIF / IF with vth = +inf (never spikes); the node is annotated
              readout="v": read its v state (Lava: a Monitor on v). Its Output then carries no spikes.
              A readout may only feed Output nodes.

v_reset != 0: Loihi resets v to 0, so v is shifted: v' = v - v_reset (threshold and leak bias adjusted as
above; annotation v_offset = v_reset maps back, v = v' + v_offset). NIR's initial v = 0 is v' = -v_reset,
which the initial membrane value below prepares.

Messages: synapses from binary neurons take binary spikes (num_message_bits = 0). From an Input they take
its signal annotation: binary -> 0, graded(bits) -> bits, real (the default) -> GRADED_INPUT_BITS, a
graded placeholder that `quantize_for_loihi` narrows to its input_bits.

Timing (what the lowered float graph computes): Lava's Dense delivers its output one step late while NIR
synapses act in the same step, so a neuron whose nearest Input is d synapse layers away (d = its fewest
LoihiDense hops from an Input, annotation input_delay) sees at step d + t what the NIR neuron sees at step t.
Its bias, however, acts from step 0: during steps 0..d-1 the neuron evolves on the bias alone (no input has
arrived, so u only decays):

    u[k] = (1 - du) u[k-1],   v[k] = (1 - dv) v[k-1] + u[k] + bias,   k = 0..d-1;   u[-1] = u_init, v[-1] = v_init

The initial state (u_init, v_init) is chosen so that (u, v)[d-1] is the NIR initial state (u'_0, v'_0):
v'_0 = -v_reset (NIR's v = 0 under the v_reset shift), u'_0 = -c for a CubaLIF with an Affine bias (above),
else 0. Solved backwards in float:

    u_init = u'_0 / (1 - du)^d
    v[k-1] = (v[k] - u[k] - bias) / (1 - dv),   k = d-1, ..., 0, from v[d-1] = v'_0;   v_init = v[-1]
    (no bias, v_reset = 0, u'_0 = 0: u_init = v_init = 0, Lava's default)

From step d on the lowered neuron then runs the NIR neuron's update from the NIR initial state. Hence the
lowered graph reproduces the NIR graph's spikes (and readout voltages) shifted by one step per synapse layer
on the path, up to float rounding (the two updates group the same sums differently), with Affine biases
(CubaLIF's too), v_leak and v_reset included, when every path from the inputs to a neuron crosses the same
number of synapse layers and every loop holds one synapse layer (snntorch's RLeaky: NIR delays the loop by
one step, Lava's Dense too). Special cases:
- 1 - dv = 0 (dt = tau, Threshold) or 1 - du = 0: that state keeps nothing from one step to the next, so
  it needs no preparing at step d-1 (the recursion has no solution; its initial value is u'_0 or v'_0) and
  the shift stays exact;
- the prepared bias-only trajectory v[0..d-1] would cross a threshold (a large bias over several layers of
  delay): the spike and reset cannot be avoided, so v_init keeps the backward solution and the node is
  annotated timing_exact=False (with timing_note saying why); likewise if u_init or v_init overflows (a tiny
  1 - du or 1 - dv);
- a neuron no Input reaches: nothing arrives late, so (u_init, v_init) = (u'_0, v'_0) (no input_delay).
Per-neuron thresholds and time constants stay arrays; Lava's LIF takes one value per process.

Rejected, with a BackendError naming the node: a neuron or Output fed straight by another neuron or an
Input (no synapse), readouts feeding anything but Outputs, Delay,
a linear chain with a non-zero bias into an Output, dt/tau > 1, ops with no Loihi form.
"""

from __future__ import annotations

from collections import deque

import nir
import numpy as np
import scipy.sparse as sp

from spikecc.errors import BackendError
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes, infer_signals
from spikecc.ir.linear_maps import LINEAR_NIR_OPS, as_matrix
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LOIHI_OPS, LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.ops import TernaryLIF

GRADED_INPUT_BITS = 24  # Lava's graded messages are 24-bit annotated; quantize_for_loihi narrows it
TERNARY_MESSAGE_BITS = 2  # +1 / -1 / 0 payloads (TernaryLIF's s_out is a 2-bit port in Lava)

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, TernaryLIF, nir.Threshold)
READOUTS = (nir.LI, nir.CubaLI, nir.I)
NEURONS = SPIKING + READOUTS
LINEAR = (*LINEAR_NIR_OPS, nir.Scale, nir.Flatten)

SUPPORTED = ("supported: Affine, Linear, Conv1d/2d, SumPool2d, AvgPool2d, Scale, Flatten, LIF, IF, CubaLIF, LI, "
             "CubaLI, I, Threshold, TernaryLIF; run the rest on the host or replace it")
Maps = dict[str, sp.csr_matrix]  # source node -> matrix from its flat output to this node's flat output


def _fail(node: str, what: str, todo: str) -> BackendError:
    return BackendError(f"node '{node}': {what}; {todo}")


def _arr(value, n: int) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    return np.full(n, a[0]) if a.size == 1 else a.copy()


class _Lowering:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.shapes = infer_shapes(g)
        self.signals = infer_signals(g)
        self.memo: dict[str, tuple[Maps, np.ndarray, list[str]]] = {}
        self.active: set[str] = set()

    def size(self, name: str) -> int:
        return int(np.prod(self.shapes[name]))

    def in_shape(self, name: str) -> tuple[int, ...]:
        srcs = self.g.predecessors(name)
        return self.shapes[srcs[0]] if srcs else ()

    # -- composing synapse chains ----------------------------------------------------------------------
    def incoming(self, name: str, sink: str, edges=None) -> tuple[Maps, np.ndarray, list[str]]:
        """The sum over `name`'s input edges (or the given ones) of the maps from each source, the summed
        bias, and the linear nodes passed. `sink` is the neuron or Output being fed (for messages)."""
        maps: Maps = {}
        n = int(np.prod(self.in_shape(name))) if isinstance(self.g.nodes[name], LINEAR) else self.size(name)
        bias = np.zeros(n)
        merged: list[str] = []
        for e in self.g.in_edges(name) if edges is None else edges:
            src_op = self.g.nodes[e.src]
            if isinstance(src_op, LINEAR):
                m, b, names = self.linear(e.src, sink)
                for k, v in m.items():
                    maps[k] = maps[k] + v if k in maps else v
                bias = bias + b
                merged += [n for n in names if n not in merged]
            elif isinstance(src_op, (nir.Input, *SPIKING)):
                eye = sp.identity(self.size(e.src), format="csr")
                maps[e.src] = maps[e.src] + eye if e.src in maps else eye
            elif isinstance(src_op, READOUTS):
                raise _fail(sink, f"its input comes from '{e.src}', a {type(src_op).__name__} readout whose output "
                            "is a real-valued state, which Loihi 2 neurons cannot send",
                            "feed only Output nodes from LI/CubaLI/I, or use a spiking neuron")
            else:
                raise _fail(e.src, f"{type(src_op).__name__} has no Loihi 2 form", SUPPORTED)
        return maps, bias, merged

    def linear(self, name: str, sink: str) -> tuple[Maps, np.ndarray, list[str]]:
        """Maps from each source to the flat output of linear node `name` (y = M x + b)."""
        if name in self.memo:
            return self.memo[name]
        if name in self.active:
            raise _fail(name, "sits in a loop of linear ops with no neuron", "put a neuron in the loop")
        self.active.add(name)
        op = self.g.nodes[name]
        in_maps, in_bias, merged = self.incoming(name, sink)
        in_shape = self.in_shape(name)
        n_in = int(np.prod(in_shape))
        if isinstance(op, nir.Flatten):
            m, b = sp.identity(n_in, format="csr"), None
        elif isinstance(op, nir.Scale):
            m, b = sp.diags(_arr(op.scale, n_in), format="csr"), None
        else:
            m, b = as_matrix(op, in_shape)
        out = {k: (m @ v).tocsr() for k, v in in_maps.items()}
        bias = m @ in_bias + (b if b is not None else 0.0)
        self.active.discard(name)
        self.memo[name] = (out, np.asarray(bias, dtype=np.float64).reshape(-1), [*merged, name])
        return self.memo[name]

    # -- messages --------------------------------------------------------------------------------------
    def message_bits(self, src: str) -> int:
        op = self.g.nodes[src]
        if isinstance(op, TernaryLIF):
            return TERNARY_MESSAGE_BITS
        if isinstance(op, nir.Input):
            sig = self.signals[src]
            if sig.kind == "binary":
                return 0
            if sig.kind == "graded" and sig.bits > 0:
                return int(sig.bits)
            return GRADED_INPUT_BITS
        return 0

    def source_gain(self, src: str) -> float:
        """Value one output unit of `src` stands for: TernaryLIF's amplitude (Loihi sends +-1)."""
        op = self.g.nodes[src]
        return float(op.amplitude) if isinstance(op, TernaryLIF) else 1.0


def _neuron(name: str, op: nir.NIRNode, n: int, dt: float, bias_in: np.ndarray):
    """(Loihi op, per-neuron synaptic gain folded into the weights, annotations, the NIR initial state
    (u'_0, v'_0) in the lowered neuron's units; see "Timing" in the module docstring)."""

    def frac(value, what: str) -> np.ndarray:
        tau = _arr(value, n)
        if np.any(tau <= 0):
            raise _fail(name, f"{what} must be > 0", "fix the time constant")
        d = dt / tau
        if np.any(d > 1):
            raise _fail(name, f"dt/{what} = {d.max():g} > 1 (a time constant shorter than the step dt={dt:g})",
                        "lower dt (Graph.metadata['dt']) or raise the time constant")
        return d

    ann: dict = {"lowered_from": type(op).__name__}
    inf = np.full(n, np.inf)
    if isinstance(op, nir.Threshold):
        du, dv, gain, leak, v_reset = np.ones(n), np.ones(n), np.ones(n), np.zeros(n), np.zeros(n)
        th = _arr(op.threshold, n)
    elif isinstance(op, (nir.IF, nir.I)):
        du, dv, gain, leak = np.ones(n), np.zeros(n), dt * _arr(op.r, n), np.zeros(n)
    elif isinstance(op, (nir.CubaLIF, nir.CubaLI)):
        du, dv = frac(op.tau_syn, "tau_syn"), frac(op.tau_mem, "tau_mem")
        gain = du * _arr(op.w_in, n) * dv * _arr(op.r, n)
        leak = dv * _arr(op.v_leak, n)
    else:  # LIF, LI, TernaryLIF
        dv = frac(op.tau, "tau")
        du, gain, leak = np.ones(n), dv * _arr(op.r, n), dv * _arr(op.v_leak, n)
    if not isinstance(op, nir.Threshold):
        v_reset = _arr(op.v_reset, n) if hasattr(op, "v_reset") else np.zeros(n)
    u_rest = np.zeros(n)
    if isinstance(op, (nir.CubaLIF, nir.CubaLI)):
        # a constant input b adds du*c to u each step (c = w_in*g_m*b), so u settles at c above its driven
        # value. Loihi 2's bias enters v, so c becomes the bias, and u starts at -c (as NIR's current is c
        # below its steady state at step -1) so that u's free decay supplies the rise: u + bias is NIR's.
        c = (gain / du) * bias_in
        bias = c + leak - dv * v_reset
        u_rest = -c
    else:
        bias = gain * bias_in + leak - dv * v_reset
    if np.any(v_reset != 0):
        ann["v_offset"] = v_reset.tolist() if np.unique(v_reset).size > 1 else float(v_reset[0])
    common = dict(du=du, dv=dv, bias_mant=bias, bias_exp=np.zeros(n, dtype=np.int64))
    if isinstance(op, TernaryLIF):
        new = LoihiTernaryLIF(vth_hi=_arr(op.v_threshold_hi, n) - v_reset, vth_lo=_arr(op.v_threshold_lo, n) - v_reset,
                              **common)
        ann["amplitude"] = float(op.amplitude)
    elif isinstance(op, READOUTS):
        new = LoihiLIF(vth=inf, **common)
        ann["readout"] = "v"
    elif isinstance(op, nir.Threshold):
        new = LoihiLIF(vth=th, **common)
    else:
        new = LoihiLIF(vth=_arr(op.v_threshold, n) - v_reset, **common)
    return new, gain, ann, (u_rest, -v_reset)


def lower_for_loihi(g: Graph) -> Graph:
    """A new graph in Loihi form (LoihiDense + Loihi neurons, float parameters); see the module docstring."""
    if all(isinstance(op, (nir.Input, nir.Output, *LOIHI_OPS)) for op in g.nodes.values()):
        return g.copy()  # already lowered
    low = _Lowering(g)
    out = Graph(metadata=dict(g.metadata), annotations={})
    out.metadata["lowered_for"] = "loihi2"
    dt = g.dt
    for name, op in g.nodes.items():
        if isinstance(op, LOIHI_OPS):
            raise _fail(name, "is already a Loihi op in a graph that still holds NIR ops",
                        "lower the NIR graph before adding Loihi ops, or lower all of it")
    for name in g.inputs():
        out.add_node(name, g.nodes[name], **g.annotations.get(name, {}))
    taken = {n for n, op in g.nodes.items() if not isinstance(op, LINEAR)}  # names that survive
    pending: list[tuple[str, str, str]] = []  # edges (src, dst) added once all nodes exist
    rest: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # neuron -> NIR initial (u, v) in its lowered units
    for name, op in g.nodes.items():
        if isinstance(op, nir.Input) or isinstance(op, LINEAR):
            continue
        if isinstance(op, nir.Delay):
            raise _fail(name, "Delay has no Loihi 2 form in Lava's Dense/LIF processes",
                        "remove the Delay (or fold it into the input data)")
        if not isinstance(op, (*NEURONS, nir.Output)):
            raise _fail(name, f"{type(op).__name__} has no Loihi 2 form", SUPPORTED)
        n = low.size(name)
        direct = [e.src for e in g.in_edges(name) if not isinstance(g.nodes[e.src], LINEAR)]
        if isinstance(op, nir.Output):
            for src in direct:  # neurons and Inputs reach an Output straight, without a synapse
                if isinstance(g.nodes[src], (nir.Input, *NEURONS)):
                    pending.append((src, name, "input"))
                else:
                    raise _fail(src, f"{type(g.nodes[src]).__name__} has no Loihi 2 form", SUPPORTED)
            via = [e for e in g.in_edges(name) if isinstance(g.nodes[e.src], LINEAR)]
            maps, bias, merged = low.incoming(name, name, via)
            if np.any(np.asarray(bias) != 0):
                raise _fail(name, "is fed by a linear layer with a non-zero bias; Loihi 2 synapses have no bias",
                            "give that layer no bias, or put a neuron (e.g. LIF) before the Output")
            gain = np.ones(n)
            new_op: nir.NIRNode = nir.Output(output_type={"output": np.asarray([n])})
            ann = dict(g.annotations.get(name, {}))
        else:
            for src in direct:
                raise _fail(name, f"is fed straight by '{src}' ({type(g.nodes[src]).__name__}) without a synapse "
                            "layer; Loihi 2 neurons receive input only through synapses",
                            "put a Linear (e.g. identity weights) between them")
            maps, bias, merged = low.incoming(name, name)
            new_op, gain, ann, rest[name] = _neuron(name, op, n, dt, bias)
            ann = {**g.annotations.get(name, {}), **ann}
            if len(self_shape := low.shapes[name]) > 1:
                ann["shape"] = list(self_shape)
        for src, m in maps.items():
            weight = (sp.diags(gain) @ m @ sp.diags(np.full(m.shape[1], low.source_gain(src)))).toarray()
            dense_name = _dense_name(low, name, src, maps, taken)
            taken.add(dense_name)
            out.add_node(dense_name, LoihiDense(weight=weight, num_message_bits=low.message_bits(src)),
                         source=src, merged=[k for k in merged if src in low.memo.get(k, ({},))[0]])
            pending.append((src, dense_name, "input"))
            pending.append((dense_name, name, "input"))
        out.add_node(name, new_op, **ann)
    for src, dst, port in pending:
        out.connect(src, dst, port)
    delays = input_delays(out)
    for name, (u_rest, v_rest) in rest.items():
        _prepare_initial_state(out, name, delays.get(name), u_rest, v_rest)
    return out


def input_delays(g: Graph) -> dict[str, int]:
    """Per node reached from an Input: the fewest steps any input takes to get there, i.e. the fewest ops
    with an output delay (LoihiDense) on a path from an Input. Loops never shorten a path, so recurrent
    edges need no special case. A 0-1 breadth-first search: zero-delay edges go to the queue's front."""
    from spikecc.ir.ops import output_delay

    succ: dict[str, list[str]] = {n: [] for n in g.nodes}
    for e in g.edges:
        succ[e.src].append(e.dst)
    dist: dict[str, int] = {n: 0 for n in g.inputs()}
    queue = deque(g.inputs())
    while queue:
        node = queue.popleft()
        step = output_delay(g.nodes[node])
        for nxt in succ[node]:
            d = dist[node] + step
            if d < dist.get(nxt, d + 1):
                dist[nxt] = d
                queue.appendleft(nxt) if step == 0 else queue.append(nxt)
    return dist


def _prepare_initial_state(g: Graph, name: str, d: int | None, u_rest: np.ndarray, v_rest: np.ndarray) -> None:
    """Set the Loihi neuron's u_init, v_init so that its bias-only steps 0..d-1 end at (u_rest, v_rest), the
    NIR initial state (module docstring, "Timing"); annotate input_delay = d, and timing_exact=False where
    that cannot be done."""
    op = g.nodes[name]
    assert isinstance(op, LOIHI_NEURON_OPS)
    keep_u = 1.0 - np.asarray(op.du, dtype=np.float64)
    keep_v = 1.0 - np.asarray(op.dv, dtype=np.float64)
    bias = np.asarray(op.bias_mant, dtype=np.float64) * 2.0 ** np.asarray(op.bias_exp, dtype=np.float64)
    u_rest, v_rest = np.asarray(u_rest, dtype=np.float64), np.asarray(v_rest, dtype=np.float64)
    steps = d or 0
    notes = []
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # where 1 - du (1 - dv) is 0 the state before step d is forgotten: nothing to prepare
        u_init = np.where(keep_u != 0, u_rest / np.where(keep_u != 0, keep_u, 1.0) ** steps, u_rest)
        if not np.all(np.isfinite(u_init)):
            notes.append("u_init overflows (1 - du too small over the input delay)")
            u_init = np.where(np.isfinite(u_init), u_init, 0.0)
        us = [u_init]  # u[-1..d-1], as the simulators compute it (u * (1 - du) + 0)
        for _ in range(steps):
            us.append(us[-1] * keep_u + 0.0)
        v = v_rest.copy()
        for k in range(steps - 1, -1, -1):  # backwards: v[k-1] = (v[k] - u[k] - bias) / (1 - dv)
            v = np.where(keep_v != 0, (v - us[k + 1] - bias) / np.where(keep_v != 0, keep_v, 1.0), v_rest)
    if not np.all(np.isfinite(v)):
        notes.append("v_init overflows (1 - dv too small for the bias over the input delay)")
        v = np.where(np.isfinite(v), v, v_rest)
    op.u_init, op.v_init = u_init, v
    if d is not None:
        g.annotate(name, input_delay=int(d))
        # Forwards, as the simulators run the bias-only steps: a threshold crossing would spike and reset.
        hi, lo = (op.vth_hi, op.vth_lo) if isinstance(op, LoihiTernaryLIF) else (op.vth, None)
        fired = np.zeros(v.shape, dtype=bool)
        for k in range(d):
            v = v * keep_v + us[k + 1] + bias
            fired |= (v > hi) | ((v < lo) if lo is not None else False)
        if fired.any():
            notes.append(f"{int(fired.sum())} neuron(s) would spike on the bias alone in the {d} step(s) before "
                         "the first input arrives")
    if notes:
        g.annotate(name, timing_exact=False, timing_note="; ".join(notes))


def _dense_name(low: _Lowering, sink: str, src: str, maps: Maps, taken: set[str]) -> str:
    """The linear node's own name when one linear node next to `sink` carries all of `src`'s input, takes
    input from `src` alone and feeds only `sink` (Affine 'fc1' -> LIF 'lif1' keeps 'fc1'; snntorch's RLeaky
    keeps 'w_rec'); otherwise '<sink>.syn' / '<sink>.syn.<src>'."""
    g = low.g
    preds = [e.src for e in g.in_edges(sink) if e.src in low.memo and src in low.memo[e.src][0]]
    if len(preds) == 1 and preds[0] not in taken and set(low.memo[preds[0]][0]) == {src}:
        if all(e.dst == sink for e in g.out_edges(preds[0])):
            return preds[0]
    base = f"{sink}.syn" if len(maps) == 1 else f"{sink}.syn.{src}"
    name, k = base, 1
    while name in taken or name in g.nodes:
        name, k = f"{base}{k}", k + 1
    return name
