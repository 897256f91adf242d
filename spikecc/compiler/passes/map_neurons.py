"""map-neurons: every NIR neuron fed through LoihiDense synapses becomes a Loihi neuron (float form).

Mapping, with dt = g.dt (NIR's forward-Euler discretisation, spikecc.backends.cpu.nir_ops), for an incoming
composed synapse I = M s + b (M: the LoihiDense weights from fuse-synapses, b: the `synaptic_bias` annotation):

    LIF       v <- (1 - dt/tau) v + dt/tau v_leak + g I,  g = dt r / tau
              du = 1 (u = a_in, no current memory), dv = dt/tau, W = g M,
              bias = g b + dt/tau (v_leak - v_reset), vth = v_threshold - v_reset
    IF        du = 1, dv = 0, g = dt r, W = g M, bias = g b, vth = v_threshold - v_reset
    CubaLIF   I_syn <- (1 - dt/tau_syn) I_syn + dt/tau_syn w_in I;  v as LIF driven by I_syn
              du = dt/tau_syn, dv = dt/tau_mem, g = dt r/tau_mem, W = du w_in g M, u = g I_syn,
              bias = dv (v_leak - v_reset) + c,  c = w_in g b (the steady state of the bias's rise in I_syn;
              the rest, -c (1 - du)^(t+1), is u decaying freely from -c: u's NIR initial value is -c)
    TernaryLIF as LIF with vth_hi/vth_lo shifted by -v_reset -> LoihiTernaryLIF (emits +-1; its amplitude is
              annotated and folded into the next synapses by fold-amplitudes)
    Threshold s = [I > th]: du = 1, dv = 1 (no memory), vth = th
    LI, CubaLI, I (readouts): like LIF / CubaLIF / IF with vth = +inf (never spikes), annotated readout="v"

v_reset != 0: Loihi resets v to 0, so v is shifted: v' = v - v_reset (annotation v_offset = v_reset maps back).

Invariant: each Loihi neuron driven by W = g M and its bias follows the NIR neuron's update from the NIR initial
state, which is left in the op's u_init, v_init (annotation `initial_state: "nir"`) for initial-state to place
before the first input arrives. Time constants shorter than dt (dt/tau > 1) are refused, naming the node.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.compiler.passes.nir_forms import NEURONS, READOUTS, fail, per_neuron
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.ops import TernaryLIF


def _neuron(name: str, op: nir.NIRNode, n: int, dt: float, bias_in: np.ndarray):
    """(Loihi op, per-neuron synaptic gain folded into the weights, annotations, the NIR initial state
    (u'_0, v'_0) in the lowered neuron's units; see "Timing" in the module docstring)."""

    def frac(value, what: str) -> np.ndarray:
        tau = per_neuron(value, n)
        if np.any(tau <= 0):
            raise fail(name, f"{what} must be > 0", "fix the time constant")
        d = dt / tau
        if np.any(d > 1):
            raise fail(name, f"dt/{what} = {d.max():g} > 1 (a time constant shorter than the step dt={dt:g})",
                        "lower dt (Graph.metadata['dt']) or raise the time constant")
        return d

    ann: dict = {"lowered_from": type(op).__name__}
    inf = np.full(n, np.inf)
    if isinstance(op, nir.Threshold):
        du, dv, gain, leak, v_reset = np.ones(n), np.ones(n), np.ones(n), np.zeros(n), np.zeros(n)
        th = per_neuron(op.threshold, n)
    elif isinstance(op, (nir.IF, nir.I)):
        du, dv, gain, leak = np.ones(n), np.zeros(n), dt * per_neuron(op.r, n), np.zeros(n)
    elif isinstance(op, (nir.CubaLIF, nir.CubaLI)):
        du, dv = frac(op.tau_syn, "tau_syn"), frac(op.tau_mem, "tau_mem")
        gain = du * per_neuron(op.w_in, n) * dv * per_neuron(op.r, n)
        leak = dv * per_neuron(op.v_leak, n)
    else:  # LIF, LI, TernaryLIF
        dv = frac(op.tau, "tau")
        du, gain, leak = np.ones(n), dv * per_neuron(op.r, n), dv * per_neuron(op.v_leak, n)
    if not isinstance(op, nir.Threshold):
        v_reset = per_neuron(op.v_reset, n) if hasattr(op, "v_reset") else np.zeros(n)
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
        new = LoihiTernaryLIF(vth_hi=per_neuron(op.v_threshold_hi, n) - v_reset,
                              vth_lo=per_neuron(op.v_threshold_lo, n) - v_reset, **common)
        ann["amplitude"] = float(op.amplitude)
    elif isinstance(op, READOUTS):
        new = LoihiLIF(vth=inf, **common)
        ann["readout"] = "v"
    elif isinstance(op, nir.Threshold):
        new = LoihiLIF(vth=th, **common)
    else:
        new = LoihiLIF(vth=per_neuron(op.v_threshold, n) - v_reset, **common)
    return new, gain, ann, (u_rest, -v_reset)


def map_neurons(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph whose NIR neurons are Loihi neurons and whose synapses carry their input gains."""
    a = analysis_of(g, a)
    out = g.copy()
    for name, op in g.nodes.items():
        if not isinstance(op, NEURONS):
            continue
        n = a.size(name)
        ann = out.annotations.setdefault(name, {})
        bias_in = np.asarray(ann.pop("synaptic_bias", np.zeros(n)), dtype=np.float64)
        new_op, gain, extra, (u_rest, v_rest) = _neuron(name, op, n, g.dt, bias_in)
        new_op.u_init, new_op.v_init = np.asarray(u_rest, dtype=np.float64), np.asarray(v_rest, dtype=np.float64)
        ann.update(extra, initial_state="nir")
        if len(a.shapes[name]) > 1:
            ann["shape"] = list(a.shapes[name])
        out.nodes[name] = new_op
        for e in g.in_edges(name):
            dense = out.nodes[e.src]
            if isinstance(dense, LoihiDense):
                dense.weight = gain[:, None] * np.asarray(dense.weight, dtype=np.float64)
    return out


# -- language models ---------------------------------------------------------------------------------------------
def map_lm_neurons(g: Graph, a: Analysis | None = None) -> Graph:
    """Language models (after partition): every neuro-core op gets its Loihi form, float parameters.

        Linear/Affine    -> LoihiDense (delay 0: the graph is token-synchronous), its bias moved to what it
                            feeds: the neuron's bias, or the host side of the boundary (CoreToHost.bias)
        DiscreteLIF      -> LoihiLIF: spikingjelly's H = V + (X - V) / tau is v = (1 - 1/tau) v + X / tau, so
                            du = 1 (u = a_in), dv = 1/tau, and 1/tau goes into the incoming weights; its
                            `>=` threshold becomes Loihi's `>` against the next float below it (exact in float)
        ElasticBiSpike   -> LoihiElastic (unit spikes; mult_t = leak * alpha_{t-1}; thresholds per mode); a
                            CoreToHost reading it gets scales alpha_t, which restores the spikes' values
        Dense -> host    -> Dense -> LoihiRelay -> CoreToHost (a synapse result leaves a core as a graded spike)
        host -> neuron   -> HostToCore -> LoihiDense(identity x gain) -> neuron (neurons take input only
                            through synapses)

    Invariant: every host op receives the same values (up to float rounding: the LIF and elastic updates are
    regrouped, ~1e-16 relative).
    """
    from spikecc.compiler.passes.rewrite import fresh_name, is_linear
    from spikecc.ir.lm_ops import DiscreteLIF
    from spikecc.ir.loihi_spec import GRADED_MAX_BITS
    from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, LoihiElastic, LoihiRelay
    from spikecc.ir.spikelm_ops import ElasticBiSpike

    a = analysis_of(g, a)
    out = g.copy()
    core = {n for n in g.nodes if g.annotation(n, "partition") == "neurocore"}
    if not core and not any(g.annotation(n, "partition") for n in g.nodes):
        raise fail(next(iter(g.nodes)), "the graph has no partition annotations", "run the partition pass first")

    def dense_inputs(name: str) -> list[str]:
        return [e.src for e in out.in_edges(name) if isinstance(out.nodes[e.src], LoihiDense)]

    # synapses first: every core linear becomes a LoihiDense; its bias goes where its output goes
    biases: dict[str, np.ndarray] = {}
    for name in [n for n in g.nodes if n in core and is_linear(g.nodes[n])]:
        op = g.nodes[name]
        # graded until message-widths narrows it: a graded Dense passes every payload value on exactly
        out.nodes[name] = LoihiDense(weight=np.asarray(op.weight, dtype=np.float64), delay=0,
                                     num_message_bits=GRADED_MAX_BITS, metadata=dict(op.metadata or {}))
        if isinstance(op, nir.Affine) and np.any(np.asarray(op.bias) != 0):
            biases[name] = np.asarray(op.bias, dtype=np.float64)
        targets = out.out_edges(name)
        if any(isinstance(out.nodes[e.dst], CoreToHost) for e in targets):
            if len(targets) != 1:
                raise fail(name, "feeds the host and other nodes at once", "give the layer one consumer")
            relay = fresh_name(out, f"{name}.relay")
            out.add_node(relay, LoihiRelay(size=a.width(name)), partition="neurocore")
            (e,) = targets
            out.edges.remove(e)
            out.connect(name, relay)
            out.connect(relay, e.dst, e.port)
            if name in biases:
                out.nodes[e.dst].bias = biases.pop(name)
    # neurons: Loihi forms, identity synapses where the host feeds them straight, input gains, biases
    for name in [n for n in g.nodes if n in core]:
        op = g.nodes[name]
        if not isinstance(op, (DiscreteLIF, ElasticBiSpike)):
            continue
        n = a.width(name)  # per row: an encoder's (L, n) neurons are n neurons serving its L tokens in turn
        for e in [e for e in out.in_edges(name) if isinstance(out.nodes[e.src], HostToCore)]:
            syn = fresh_name(out, f"{name}.syn")
            out.add_node(syn, LoihiDense(weight=np.eye(n), delay=0, num_message_bits=GRADED_MAX_BITS),
                         partition="neurocore")
            out.edges.remove(e)
            out.connect(e.src, syn)
            out.connect(syn, name, e.port)
        bias = sum((biases.pop(d) for d in dense_inputs(name) if d in biases), np.zeros(n))
        if isinstance(op, DiscreteLIF):
            tau = per_neuron(op.tau, n)
            gain = 1.0 / tau
            v_reset = per_neuron(op.v_reset, n)
            vth = np.nextafter(per_neuron(op.v_threshold, n) - v_reset, -np.inf)  # v >= th  <=>  v > vth
            new: nir.NIRNode = LoihiLIF(du=np.ones(n), dv=gain, vth=vth, bias_mant=gain * bias,
                                        bias_exp=np.zeros(n, dtype=np.int64), metadata=dict(op.metadata or {}))
            if np.any(v_reset != 0):
                out.annotate(name, v_offset=v_reset.tolist())
        else:
            alpha = np.asarray(op.alpha, dtype=np.float64)
            th = alpha / 2 if op.threshold_mode == "code" else alpha
            mult = np.concatenate([[0.0], float(op.leak) * alpha[:-1]])
            new = LoihiElastic(T=int(op.T), mult=mult, hi=th, lo=-th, bias=bias, metadata=dict(op.metadata or {}))
            for e in out.out_edges(name):
                if isinstance(out.nodes[e.dst], CoreToHost):
                    out.nodes[e.dst].scales = alpha.copy()
            gain = np.ones(n)
        out.nodes[name] = new
        out.annotate(name, lowered_from=type(op).__name__)
        for d in dense_inputs(name) if np.any(gain != 1) else ():  # (a gain of 1 keeps the weights, unshared)
            out.nodes[d].weight = gain[:, None] * np.asarray(out.nodes[d].weight, dtype=np.float64)
    if biases:
        raise fail(next(iter(biases)), "has a bias but feeds no neuron or host boundary",
                   "give the layer no bias, or let it feed a neuron")
    return out
