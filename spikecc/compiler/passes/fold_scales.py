"""fold-scales: a constant scaling in front of a linear layer moves into the layer's weights.

RWKV's token-shift mixing feeds each projection mix * x_t + (1 - mix) * x_{t-1}: two Scale nodes (one on the
LayerNorm output, one on its one-step Delay) summed into the Linear. A Linear W fed by Scale nodes s_k (each
with one source x_k) becomes one Linear per source, W diag(s_k) fed by x_k, all summed into the old Linear's
consumers (NIR sums the edges into a port):

    W (s_1 * x_1 + s_2 * x_2) + b  =  (W diag(s_1)) x_1 + (W diag(s_2)) x_2 + b        (b on the first)

so the neuro-core sees two weight matrices, one behind the one-step Delay, and no Scale. A Scale that also feeds
something else than a linear layer stays (and still feeds that); residual sums (Scale of ones into LayerNorm)
are untouched. Inputs that are not foldable Scales (RWKV-6's data-dependent mix, ln(x) + Product(...)) stay
together on one Linear that keeps W and the old name, W (x_1 + x_2): one copy of the weights, whose inputs the
partition pass sums on the host so that one message crosses (a neuro-core synapse reads one axon group).

Invariant: every consumer receives the same sum (equal up to float rounding: the products are grouped
differently, ~1e-16 relative).
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.compiler.passes.rewrite import fresh_name, is_linear, remove_node
from spikecc.ir.graph import Graph


def _foldable(g: Graph, name: str) -> bool:
    """A Scale with exactly one input edge, feeding linear layers only (on their single port)."""
    op = g.nodes[name]
    return (isinstance(op, nir.Scale) and len(g.in_edges(name)) == 1
            and all(is_linear(g.nodes[e.dst]) for e in g.out_edges(name)))


def fold_scales(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph without Scale nodes in front of linear layers (module docstring)."""
    a = analysis_of(g, a)
    out = g.copy()
    for name, op in g.nodes.items():
        if not is_linear(op) or a.shapes[name] != (np.shape(op.weight)[0],):
            continue  # sequence (row-wise) linears keep their scales: their weights act per row
        ins = out.in_edges(name)
        foldable = [_foldable(out, e.src) for e in ins]
        if not any(foldable):
            continue  # plain inputs only (one or several): nothing to fold
        consumers = out.out_edges(name)
        w = np.asarray(op.weight, dtype=np.float64)
        bias = np.asarray(op.bias, dtype=np.float64) if isinstance(op, nir.Affine) else None
        ann = dict(out.annotations.get(name, {}))
        remove_node(out, name)
        rest = [e for e, fold in zip(ins, foldable) if not fold]
        parts: list[tuple[str, np.ndarray, list[str], str | None]] = []  # (name, weights, sources, folded scale)
        if rest:  # the inputs that are not foldable Scales keep W, summed, under the layer's own name
            parts.append((name, w, [e.src for e in rest], None))
        for e, fold in zip(ins, foldable):
            if fold:
                (src,) = g.predecessors(e.src)
                s = np.broadcast_to(np.asarray(g.nodes[e.src].scale, dtype=np.float64).reshape(-1), (w.shape[1],))
                parts.append((fresh_name(out, f"{name}.{e.src.rsplit('.', 1)[-1]}"), w * s[None, :], [src], e.src))
        for k, (part, weights, sources, scale) in enumerate(parts):
            new = nir.Affine(weight=weights, bias=bias) if (bias is not None and k == 0) else nir.Linear(weight=weights)
            extra = {} if scale is None else {"folded_from": name, "folded_scale": scale}
            out.add_node(part, new, **{**ann, **extra})
            for src in sources:
                out.connect(src, part)
            for c in consumers:
                out.connect(part, c.dst, c.port)
        for e, fold in zip(ins, foldable):
            if fold and e.src in out.nodes and not out.out_edges(e.src):
                remove_node(out, e.src)
    return out
