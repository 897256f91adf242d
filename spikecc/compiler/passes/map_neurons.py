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
