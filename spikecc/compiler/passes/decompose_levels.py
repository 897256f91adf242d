"""decompose-levels: SpikeRWKV's multi-level encoder into what neuro-cores receive.

The encoder (MultiLevelEncoder, paper Eq. 3-4) turns a host value into T*l signed spikes (l levels, T encoder
steps, the sign being the polarity flag) that feed a Linear whose weight is tiled over (t, level) and scaled by
W_i / T. Two ways to carry them onto the neuro-cores, chosen per encoder (annotation `level_encoding`):

    "binary"  l*T binary channels plus polarity: a SpikeRouter after the encoder (split into positive and
              negative channels by split-polarity); the level weights stay folded into the synapses
              (W_i / T per column block). T*l*C*2 axons, binary messages.
    "graded"  one signed graded spike per channel carrying x_hat = d_f * sum_i c_i W_i / T (MultiLevelValue),
              and the Linear with the untiled weight W: l*T times fewer synapses, one (l + 1)-bit message.

The default takes "graded" when T = 1 (l binary spikes and a flag per channel cost more synapses and messages
than one (l + 1)-bit value) and "binary" otherwise (T > 1 spikes per level are what the encoder's spreading
over time is for). `mode` forces one.

Invariant: the Linear's output is unchanged (graded: up to float rounding, W x_hat vs the tiled sum).
"""

from __future__ import annotations

import numpy as np

from spikecc.compiler.passes.analysis import Analysis
from spikecc.compiler.passes.rewrite import insert_after, is_linear
from spikecc.ir.graph import Graph
from spikecc.ir.neurocore_ops import SpikeRouter
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder, MultiLevelValue

MODES = ("auto", "binary", "graded")


def decompose_levels(g: Graph, a: Analysis | None = None, mode: str = "auto") -> Graph:
    """A new graph whose signed multi-level encoders feed linears through binary channels or graded values."""
    if mode not in MODES:
        raise ValueError(f"level encoding must be one of {MODES}, not {mode!r}")
    out = g.copy()
    for name, op in g.nodes.items():
        if type(op) is not MultiLevelEncoder or not op.polarity:
            continue
        consumers = out.out_edges(name)
        if not consumers or not all(is_linear(out.nodes[e.dst]) and e.port == "input" for e in consumers):
            continue
        choice = mode if mode != "auto" else ("graded" if int(op.T) == 1 else "binary")
        if choice == "binary":
            router = insert_after(out, name, f"{name}.route", SpikeRouter(size=int(np.prod(op.natural_shape())),
                                                                          banks=1, split=False))
            out.annotate(router, level_encoding="binary")
        else:
            out.nodes[name] = MultiLevelValue(channels=op.channels, T=op.T, level_weights=op.level_weights,
                                              polarity=True, metadata=dict(op.metadata or {}))
            first = float(op.level_weights[0]) / int(op.T)
            for e in consumers:
                lin = out.nodes[e.dst]
                tiled = np.asarray(lin.weight, dtype=np.float64)
                lin.weight = tiled[:, :op.channels] / first  # column block (t=0, level 0) is W * W_1 / T
        out.annotate(name, level_encoding=choice)
    return out
