"""RWKV-6 (x060) and SpikeRWKV-6 torch models -> IR graph (one simulator step = one token; the T encoder steps of a
converted model live inside its encoders).

Standard NIR nodes wherever they fit: Linear for the projections, Affine for the low-rank up-projections (the bias
carries the static mix maa_j or the static decay), Scale for constants and residual sums, Delay for the token shift.
spikecc ops for the rest: Embedding, LayerNorm, Sigmoid, Exp, SquaredReLU, Product (spikecc.ir.lm_ops), Tanh,
GroupNorm, WKV6 (spikecc.ir.rwkv6_ops), and MultiLevelEncoder (spikecc.ir.spikerwkv_ops) for every installed encoder,
whose Linear gets the tiled weight W'[:, (t*l + i)*C + c] = W[:, c] * W_i / T (so W' s = W x_hat).

Per block i (a = ln1 output, node names in brackets; see spikecc/models/rwkv6.py for the equations):

    dx = Delay(a) + Scale(-1)(a)                                         [att.shift, att.neg, att.dx]
    s = a + Scale(maa_x)(dx)                                             [att.maa_x; summed by the consumer]
    mu_j = Affine(W2_j^T, maa_j)(Tanh(Linear(W1_j^T)(s)))   j = w,k,v,r,g  [att.maa_w1.j, att.maa_tanh.j, att.maa_w2.j]
    x_j = a + Product(dx, mu_j)                                          [att.mix.j]
    r, k, v = Linear(x_r), Linear(x_k), Linear(x_v);  g = G x_g * Sigmoid(G x_g)   [att.receptance, ..., att.silu]
    w = Exp(Scale(-1)(Exp(Affine(Wd2^T, time_decay)(Tanh(Linear(Wd1^T)(x_w))))))  [att.decay_w1 ... att.decay]
    x = x + Linear(O)(Product(GroupNorm(WKV6(r, k, v, w)), g))             [att.wkv, att.ln_x, att.gated, res1]
    f = ln2(x);  df = Delay(f) + Scale(-1)(f)
    x = x + Product(Sigmoid(R'(f + maa_r df)), V'(SquaredReLU(K'(f + maa_k df))))   [ffn.*, res2]

Encoder nodes carry the reference's slot names (`blocks.{i}.att.enc_r`, ...), so the simulator's spikes line up with
`RWKV6.step_detailed`.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.frontends.builder import LMGraphBuilder, to_numpy
from spikecc.compiler.frontends.spikerwkv import tiled_weight
from spikecc.ir import Graph
from spikecc.ir.lm_ops import Embedding, Exp, Sigmoid, SquaredReLU
from spikecc.ir.rwkv6_ops import WKV6, GroupNorm, Tanh
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder

MIX_TARGETS = ("w", "k", "v", "r", "g")


def _encoder_of(module, slot: str):
    """The module's encoder in `slot`, or None for an empty (identity) slot."""
    enc = getattr(module, slot)
    return enc if hasattr(enc, "level_weights") else None


class _Block:
    """Adds one block's nodes; `linear` puts the slot's encoder (once) in front of an encoded linear."""

    def __init__(self, b: LMGraphBuilder, prefix: str) -> None:
        self.b, self.p = b, prefix

    def linear(self, module, slot: str, name: str, weight: np.ndarray, *srcs: str) -> str:
        """Linear `name` (weight (out, in)) fed by the sum of srcs, through `slot`'s encoder if one is installed."""
        b, p = self.b, self.p
        enc = _encoder_of(module, slot)
        if enc is None:
            return b.node(f"{p}.{name}", nir.Linear(weight=weight), *srcs)
        enc_name = f"{p}.{name.split('.')[0]}.{slot}"  # e.g. blocks.0.att.enc_r, the reference's slot name
        if enc_name not in b.g.nodes:  # enc_maa feeds the five low-rank down-projections
            b.node(enc_name, MultiLevelEncoder(channels=weight.shape[1], T=enc.T,
                                               level_weights=np.array(enc.level_weights), polarity=enc.polarity),
                   *srcs)
        return b.node(f"{p}.{name}", nir.Linear(weight=tiled_weight(weight, enc.T, enc.level_weights)), enc_name)

    def diff(self, half: str, size: int, cur: str) -> str:
        """dx = prev - cur: the one-step Delay (zero at token 0) plus -cur."""
        b, p = self.b, self.p
        prev = b.shift(f"{p}.{half}.shift", size, cur)
        neg = b.node(f"{p}.{half}.neg", nir.Scale(scale=-np.ones(size)), cur)
        return b.residual(f"{p}.{half}.dx", size, prev, neg)


def export_rwkv6(model, vocab_chars: str, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a `spikecc.models.rwkv6.RWKV6`, float or converted (weights copied in float64)."""
    cfg = model.cfg
    C, A, H = cfg.d_model, cfg.dim_att, cfg.n_heads
    if len(vocab_chars) != cfg.vocab_size:
        raise ValueError(f"vocab has {len(vocab_chars)} characters, the model expects {cfg.vocab_size}")
    encoders = model.encoders()
    conversion = dict(getattr(model, "conversion", {}))
    meta = {"dt": dt, "family": "spikerwkv6" if encoders else "rwkv6", "vocab": str(vocab_chars), "substeps": 1,
            "step": "token", "n_layers": cfg.n_layers, "d_model": C, "dim_att": A, "heads": H,
            "head_size": cfg.head_size, "d_ffn": cfg.d_ffn, "vocab_size": cfg.vocab_size, "encoders": len(encoders)}
    meta.update({k: conversion[k] for k in ("levels", "T", "scope", "quantile") if k in conversion})
    g = Graph(metadata=meta)
    b = LMGraphBuilder(g, dt)
    b.token_input("token", cfg.vocab_size)
    x = b.node("emb", Embedding(weight=to_numpy(model.emb.weight)), "token")

    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        blkb = _Block(b, p)
        if i == 0:
            x = b.layer_norm(f"{p}.ln0", blk.ln0, x)
        att, ffn = blk.att, blk.ffn
        a = b.layer_norm(f"{p}.ln1", blk.ln1, x)
        dx = blkb.diff("att", C, a)
        s = b.node(f"{p}.att.maa_x", nir.Scale(scale=to_numpy(att.time_maa_x).reshape(-1)), dx)
        w1, w2 = to_numpy(att.time_maa_w1), to_numpy(att.time_maa_w2)
        D = w2.shape[1]
        mixed = {}
        for j, t in enumerate(MIX_TARGETS):
            down = blkb.linear(att, "enc_maa", f"att.maa_w1.{t}", w1[:, j * D : (j + 1) * D].T.copy(), a, s)
            th = b.node(f"{p}.att.maa_tanh.{t}", Tanh(), down)
            mu = b.node(f"{p}.att.maa_w2.{t}", nir.Affine(weight=w2[j].T.copy(),
                                                          bias=to_numpy(getattr(att, f"time_maa_{t}")).reshape(-1)),
                        th)
            mixed[t] = (a, b.product(f"{p}.att.mix.{t}", dx, mu))  # x_t = a + dx * mu_t, summed by the consumer
        r = blkb.linear(att, "enc_r", "att.receptance", to_numpy(att.receptance.weight), *mixed["r"])
        k = blkb.linear(att, "enc_k", "att.key", to_numpy(att.key.weight), *mixed["k"])
        v = blkb.linear(att, "enc_v", "att.value", to_numpy(att.value.weight), *mixed["v"])
        gl = blkb.linear(att, "enc_g", "att.gate", to_numpy(att.gate.weight), *mixed["g"])
        gate = b.product(f"{p}.att.silu", gl, b.node(f"{p}.att.gate_sigmoid", Sigmoid(), gl))
        dd = blkb.linear(att, "enc_decay", "att.decay_w1", to_numpy(att.time_decay_w1).T.copy(), *mixed["w"])
        dd = b.node(f"{p}.att.decay_tanh", Tanh(), dd)
        dd = b.node(f"{p}.att.decay_w2", nir.Affine(weight=to_numpy(att.time_decay_w2).T.copy(),
                                                    bias=to_numpy(att.time_decay).reshape(-1)), dd)
        dd = b.node(f"{p}.att.decay_exp", Exp(), dd)
        dd = b.node(f"{p}.att.decay_neg", nir.Scale(scale=-np.ones(A)), dd)
        w = b.node(f"{p}.att.decay", Exp(), dd)  # w = exp(-exp(d)) in (0, 1)
        y = b.ports(f"{p}.att.wkv", WKV6(time_faaaa=to_numpy(att.time_faaaa)), r=r, k=k, v=v, w=w)
        y = b.node(f"{p}.att.ln_x", GroupNorm(weight=to_numpy(att.ln_x.weight), bias=to_numpy(att.ln_x.bias),
                                              groups=H, eps=float(att.ln_x.eps)), y)
        o = blkb.linear(att, "enc_o", "att.output", to_numpy(att.output.weight), b.product(f"{p}.att.gated", y, gate))
        x = b.residual(f"{p}.res1", C, x, o)

        f = b.layer_norm(f"{p}.ln2", blk.ln2, x)
        df = blkb.diff("ffn", C, f)
        mk = b.node(f"{p}.ffn.maa_k", nir.Scale(scale=to_numpy(ffn.time_maa_k).reshape(-1)), df)
        mr = b.node(f"{p}.ffn.maa_r", nir.Scale(scale=to_numpy(ffn.time_maa_r).reshape(-1)), df)
        fk = blkb.linear(ffn, "enc_k", "ffn.key", to_numpy(ffn.key.weight), f, mk)
        fv = blkb.linear(ffn, "enc_v", "ffn.value", to_numpy(ffn.value.weight),
                         b.node(f"{p}.ffn.relu_sq", SquaredReLU(), fk))
        fr = blkb.linear(ffn, "enc_r", "ffn.receptance", to_numpy(ffn.receptance.weight), f, mr)
        fr = b.node(f"{p}.ffn.sigmoid", Sigmoid(), fr)
        x = b.residual(f"{p}.res2", C, x, b.product(f"{p}.ffn.gate", fr, fv))

    b.linear("head", model.head, b.layer_norm("ln_out", model.ln_out, x))
    b.output("logits", cfg.vocab_size, "head")
    return g
