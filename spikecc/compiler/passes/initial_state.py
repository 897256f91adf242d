"""initial-state: start each lowered neuron where its bias alone brings it to the NIR initial state just as the
first input arrives.

Lava's Dense delivers its output one step late while NIR synapses act in the same step, so a neuron whose nearest
Input is d synapse layers away (d = its fewest LoihiDense hops from an Input, annotation input_delay) sees at step
d + t what the NIR neuron sees at step t. Its bias, however, acts from step 0: during steps 0..d-1 the neuron
evolves on the bias alone (no input has arrived, so u only decays):

    u[k] = (1 - du) u[k-1],   v[k] = (1 - dv) v[k-1] + u[k] + bias,   k = 0..d-1;   u[-1] = u_init, v[-1] = v_init

map-neurons leaves the NIR initial state (u'_0, v'_0) in u_init, v_init (annotation initial_state="nir"); this
pass replaces them by the state that the bias-only steps carry to (u'_0, v'_0) at step d-1, solved backwards:

    u_init = u'_0 / (1 - du)^d
    v[k-1] = (v[k] - u[k] - bias) / (1 - dv),   k = d-1, ..., 0, from v[d-1] = v'_0;   v_init = v[-1]

Invariant: from step d on, the lowered neuron runs the NIR neuron's update from the NIR initial state, so the
lowered graph reproduces the NIR graph's spikes shifted by one step per synapse layer (when every path from the
inputs to a neuron crosses the same number of synapse layers and every loop holds one). Special cases:
- 1 - dv = 0 or 1 - du = 0: that state keeps nothing from one step to the next: nothing to prepare;
- the bias-only trajectory would cross a threshold (a large bias over several layers of delay): the spike and
  reset cannot be avoided; v_init keeps the backward solution and the node is annotated timing_exact=False with
  a timing_note (likewise if u_init or v_init overflows: a tiny 1 - du or 1 - dv);
- a neuron no Input reaches: nothing arrives late, so (u_init, v_init) = (u'_0, v'_0).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from spikecc.compiler.passes.analysis import Analysis
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LoihiTernaryLIF


def initial_state(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph whose neurons mapped from NIR start at their prepared initial state (module docstring)."""
    out = g.copy()
    delays = input_delays(out)
    for name, op in out.nodes.items():
        if isinstance(op, LOIHI_NEURON_OPS) and out.annotation(name, "initial_state") == "nir":
            _prepare_initial_state(out, name, delays.get(name), np.asarray(op.u_init, dtype=np.float64),
                                   np.asarray(op.v_init, dtype=np.float64))
            del out.annotations[name]["initial_state"]
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
