"""split-polarity: ternary spikes become a positive and a negative binary channel, so neuro-cores see only
binary spikes.

Each SpikeRouter that emits unit ternary spikes (split=False) switches to split=True: every channel block u
becomes the pair ([u > 0], [u < 0]), and each synapse it feeds replaces its column block W_b by [W_b, -W_b]
over the doubled fan-in: W_b u = W_b [u > 0] - W_b [u < 0].

`--polarity graded` keeps the ternary spikes as signed 2-bit graded messages instead (the routers stay
unsplit): half the synapses and axons, but graded messages. The compile report gives both costs.

Invariant: every synapse delivers the same current (exactly: the same terms, negated where the spike was).
"""

from __future__ import annotations

import numpy as np

from spikecc.compiler.passes.analysis import Analysis
from spikecc.ir.graph import Graph
from spikecc.ir.neurocore_ops import SpikeRouter

MODES = ("split", "graded")


def split_polarity(g: Graph, a: Analysis | None = None, mode: str = "split") -> Graph:
    """A new graph whose routers emit binary polarity channels (mode "split"), or unchanged ("graded")."""
    if mode not in MODES:
        raise ValueError(f"polarity must be one of {MODES}, not {mode!r}")
    out = g.copy()
    if mode == "graded":
        return out
    for name, op in g.nodes.items():
        if not isinstance(op, SpikeRouter) or op.split or op.graded:
            continue  # graded amplitudes carry the sign in their payload
        n, banks = op.size, op.banks
        out.nodes[name] = SpikeRouter(size=n, banks=banks, split=True, metadata=dict(op.metadata or {}))
        for e in out.out_edges(name):
            lin = out.nodes[e.dst]
            w = np.asarray(lin.weight, dtype=np.float64).reshape(-1, banks, n)
            lin.weight = np.stack([w, -w], axis=2).reshape(w.shape[0], banks * 2 * n)
        out.annotate(name, polarity="split")
    return out
