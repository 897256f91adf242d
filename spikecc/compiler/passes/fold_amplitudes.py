"""fold-amplitudes: spikes of amplitude a become unit spikes, and a moves into the weights of the synapses they feed.

For NIR graphs: a TernaryLIF emits {-a, 0, +a}; Loihi's TernaryLIF emits {-1, 0, +1} (map-neurons annotates the
layer's `amplitude`), so every LoihiDense it feeds gets W <- W diag(a).

Invariant: every synapse delivers the same current as before (W s_a = (W a) s_1).
"""

from __future__ import annotations

import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiTernaryLIF

AMPLITUDE_BITS = 8  # graded amplitudes: signed 8-bit payloads (alpha_t to 1/127 of the largest; 8-bit weights x
#                     a fan-in of 4096 x 127 stays far below the 2**31 a Loihi synapse sums in)


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


def fold_spike_amplitudes(g: Graph, a: Analysis | None = None) -> Graph:
    """Language models: SpikeLM's elastic neurons emit {-alpha_t, 0, +alpha_t} with one alpha per spike step t.
    Where a neuron feeds linear layers only, its spikes become unit spikes routed to one channel block per spike
    step (a SpikeRouter with T banks) and each linear W becomes the per-step weight banks [alpha_0 W, ...,
    alpha_{T-1} W]: at step t only bank t is active, so the layer receives alpha_t W u = W s.

    The other choice, a graded payload (the spike carries alpha_t as a signed graded value of
    AMPLITUDE_BITS bits and W stays: a SpikeRouter with `payloads`), costs T times fewer synapses (2T fewer than
    banks split by polarity) but a graded message per spike. A causal decoder takes the banks, which keep the
    messages binary after split-polarity. An encoder (neurons fed a sequence of (L, n) rows, applied row by row:
    spikecc.ir.rows) takes the graded payload: its layers are BERT-sized, and the 2T weight copies of split
    banks (8 x 85M synapses for BERT-base at T = 4) would need about 8 times the cores, and the compile 8 times
    the memory, for the same arithmetic. The choice is recorded (annotation `amplitude_folding`) so the
    partition report can give both costs. A neuron that feeds a host op (attention's K and V spikes) keeps its
    amplitude: the boundary restores it (CoreToHost scales).

    Invariant: each linear layer's output is unchanged (up to float rounding: alpha_t W_ij u_j vs W_ij (alpha_t
    u_j), equal here because alpha_t u_j is exactly +-alpha_t).
    """
    from spikecc.compiler.passes.rewrite import insert_after, is_linear
    from spikecc.ir.neurocore_ops import SpikeRouter
    from spikecc.ir.spikelm_ops import ElasticBiSpike

    a = analysis_of(g, a)
    out = g.copy()
    for name, op in g.nodes.items():
        if not isinstance(op, ElasticBiSpike):
            continue
        consumers = out.out_edges(name)
        if not consumers or not all(is_linear(out.nodes[e.dst]) and e.port == "input" for e in consumers):
            continue
        n = a.width(name)  # the neurons of one row: an encoder's (L, n) neurons are n neurons per token
        if any(np.shape(out.nodes[e.dst].weight)[1] != n for e in consumers):
            continue
        alpha = np.asarray(op.alpha, dtype=np.float64)
        if a.rows(name) > 1:  # an encoder's: the graded payload (docstring); the linears keep W
            router = insert_after(out, name, f"{name}.route", SpikeRouter(
                size=n, banks=1, split=False, payloads=alpha, payload_bits=AMPLITUDE_BITS))
            for e in consumers:
                out.annotate(e.dst, amplitude_folding="graded")
            out.annotate(router, amplitude_folding="graded", amplitudes=alpha.tolist())
            continue
        router = insert_after(out, name, f"{name}.route", SpikeRouter(size=n, banks=int(op.T), split=False))
        for e in consumers:
            lin = out.nodes[e.dst]
            w = np.asarray(lin.weight, dtype=np.float64)
            lin.weight = np.concatenate([alpha[t] * w for t in range(int(op.T))], axis=1)
            out.annotate(e.dst, amplitude_folding="banks")
        out.annotate(router, amplitude_folding="banks", amplitudes=alpha.tolist())
    return out
