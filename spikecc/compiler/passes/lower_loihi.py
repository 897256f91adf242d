"""Lower an NIR graph to Loihi form: every synapse path becomes a LoihiDense, every neuron a Loihi neuron.

`lower_for_loihi` is the NIR part of the pass spine (spikecc.compiler.pipeline.loihi_passes), five passes in order,
each its own module with its invariant:

    fuse_synapses -> map_neurons -> fold_amplitudes -> message_widths -> initial_state

What the five together guarantee:

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

import nir

from spikecc.compiler.passes.analysis import Analysis
from spikecc.compiler.passes.fold_amplitudes import fold_amplitudes
from spikecc.compiler.passes.fuse_synapses import fuse_synapses
from spikecc.compiler.passes.initial_state import initial_state
from spikecc.compiler.passes.map_neurons import map_neurons
from spikecc.compiler.passes.message_widths import message_widths
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LOIHI_OPS

NIR_LOWERING = (("fuse_synapses", fuse_synapses), ("map_neurons", map_neurons), ("fold_amplitudes", fold_amplitudes),
                ("message_widths", message_widths), ("initial_state", initial_state))


def is_lowered(g: Graph) -> bool:
    return all(isinstance(op, (nir.Input, nir.Output, *LOIHI_OPS)) for op in g.nodes.values())


def lower_for_loihi(g: Graph) -> Graph:
    """A new graph in Loihi form (LoihiDense + Loihi neurons, float parameters): the five passes in order."""
    if is_lowered(g):
        return g.copy()
    for _, fn in NIR_LOWERING:
        g = fn(g, Analysis(g))
    g.metadata["lowered_for"] = "loihi2"
    return g
