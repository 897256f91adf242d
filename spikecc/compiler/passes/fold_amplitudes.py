"""fold-amplitudes: spikes of amplitude a become unit spikes, and a moves into the weights of the synapses they feed.

For NIR graphs: a TernaryLIF emits {-a, 0, +a}; Loihi's TernaryLIF emits {-1, 0, +1} (map-neurons annotates the
layer's `amplitude`), so every LoihiDense it feeds gets W <- W diag(a).

Invariant: every synapse delivers the same current as before (W s_a = (W a) s_1).
"""

from __future__ import annotations

import numpy as np

from spikecc.compiler.passes.analysis import Analysis
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiTernaryLIF


def fold_amplitudes(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph whose synapses carry their sources' spike amplitudes (module docstring)."""
    out = g.copy()
    for name, op in out.nodes.items():
        if not isinstance(op, LoihiDense):
            continue
        (src,) = g.predecessors(name)
        amp = g.annotation(src, "amplitude") if isinstance(g.nodes[src], LoihiTernaryLIF) else None
        if amp is not None and out.annotation(name, "amplitude_folded") is None:
            op.weight = np.asarray(op.weight, dtype=np.float64) * float(amp)
            out.annotate(name, amplitude_folded=float(amp))
    return out
