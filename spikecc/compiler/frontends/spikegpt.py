"""SpikeGPT checkpoint -> IR graph (one simulator step = one token).

Standard NIR nodes wherever they fit: Linear for every projection, Scale for the time-mix coefficients
and for the residual sums, Delay (one step) for RWKV's token shift. Extension ops for the rest:
Embedding (the binary embedding Theta(E) folded into a {0,1} table), LayerNorm, Sigmoid, SquaredReLU,
Product, WKV and DiscreteLIF (spikingjelly's LIF with its `>=` threshold).

Per block i, with x the residual stream (node `blocks.{i}.res0` before the block):

    a = ln1(x);            a_prev = Delay(a)
    k = K(mix_k*a + (1-mix_k)*a_prev), v likewise, r = sigmoid(R(...))      # the two Scales sum into K's port
    att_lif = LIF(O(r * WKV(k, v)));   x = x + att_lif                     # node blocks.{i}.res1
    f = ln2(x);            f_prev = Delay(f)
    ffn_lif = LIF(sigmoid(R(mix)) * V(relu(K(mix))^2));   x = x + ffn_lif  # node blocks.{i}.res2
    logits = head(ln_out(x))

Spiking nodes carry the reference model's layer names: `emb`, `blocks.{i}.att_lif`, `blocks.{i}.ffn_lif`.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.ir import Graph
from spikecc.ir.lm_ops import WKV, DiscreteLIF, Embedding, LayerNorm, Product, Sigmoid, SquaredReLU

FAMILY = "spikegpt"


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


def export_spikegpt(model, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a `spikecc.models.spikegpt.SpikeGPT` (weights copied in float64)."""
    cfg = model.cfg
    d = cfg.d_model
    g = Graph(metadata={"dt": dt, "family": FAMILY, "n_layer": cfg.n_layer, "d_model": d,
                        "vocab_size": cfg.vocab_size, "d_ffn": cfg.d_ffn, "step": "token"})
    g.add_node("token", nir.Input(input_type={"input": np.array([1])}))
    g.annotate("token", signal={"kind": "graded", "bits": int(np.ceil(np.log2(max(2, cfg.vocab_size)))),
                                "scale": 1.0, "amplitude": 1.0})
    table = (_np(model.emb.weight) >= 0).astype(np.float64)  # Theta(E): x_t = Theta(E[idx_t])
    g.add_node("emb", Embedding(weight=table))
    g.connect("token", "emb")
    x = "emb"

    def ln(name: str, mod, src: str) -> str:
        g.add_node(name, LayerNorm(weight=_np(mod.weight), bias=_np(mod.bias), eps=float(mod.eps)))
        g.connect(src, name)
        return name

    def linear(name: str, mod, *srcs: str) -> str:
        g.add_node(name, nir.Linear(weight=_np(mod.weight)))
        for s in srcs:
            g.connect(s, name)
        return name

    def mixed(prefix: str, mix, cur: str, prev: str) -> tuple[str, str]:
        """mix*cur and (1-mix)*prev as two Scale nodes; a consumer fed by both receives their sum."""
        m = _np(mix).reshape(-1)
        g.add_node(f"{prefix}.cur", nir.Scale(scale=m))
        g.add_node(f"{prefix}.prev", nir.Scale(scale=1.0 - m))
        g.connect(cur, f"{prefix}.cur")
        g.connect(prev, f"{prefix}.prev")
        return f"{prefix}.cur", f"{prefix}.prev"

    def lif(name: str, src: str) -> str:
        g.add_node(name, DiscreteLIF(tau=np.full(d, cfg.tau), v_threshold=np.full(d, cfg.v_threshold),
                                     v_reset=np.zeros(d)))
        g.connect(src, name)
        return name

    def residual(name: str, *srcs: str) -> str:
        g.add_node(name, nir.Scale(scale=np.ones(d)))
        for s in srcs:
            g.connect(s, name)
        return name

    def shift(name: str, src: str) -> str:
        g.add_node(name, nir.Delay(delay=np.full(d, dt)))
        g.connect(src, name)
        return name

    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        if i == 0:
            x = ln(f"{p}.ln0", blk.ln0, x)
        att, ffn = blk.att, blk.ffn
        a = ln(f"{p}.ln1", blk.ln1, x)
        a_prev = shift(f"{p}.att.shift", a)
        k = linear(f"{p}.att.key", att.key, *mixed(f"{p}.att.mix_k", att.time_mix_k, a, a_prev))
        v = linear(f"{p}.att.value", att.value, *mixed(f"{p}.att.mix_v", att.time_mix_v, a, a_prev))
        r_lin = linear(f"{p}.att.receptance", att.receptance, *mixed(f"{p}.att.mix_r", att.time_mix_r, a, a_prev))
        g.add_node(f"{p}.att.sigmoid", Sigmoid())
        g.connect(r_lin, f"{p}.att.sigmoid")
        g.add_node(f"{p}.att.wkv", WKV(time_decay=_np(att.time_decay).reshape(-1),
                                       time_first=_np(att.time_first).reshape(-1)))
        g.connect(k, f"{p}.att.wkv", "k")
        g.connect(v, f"{p}.att.wkv", "v")
        g.add_node(f"{p}.att.gate", Product())
        g.connect(f"{p}.att.sigmoid", f"{p}.att.gate", "a")
        g.connect(f"{p}.att.wkv", f"{p}.att.gate", "b")
        o = linear(f"{p}.att.output", att.output, f"{p}.att.gate")
        x = residual(f"{p}.res1", x, lif(f"{p}.att_lif", o))

        f = ln(f"{p}.ln2", blk.ln2, x)
        f_prev = shift(f"{p}.ffn.shift", f)
        fk = linear(f"{p}.ffn.key", ffn.key, *mixed(f"{p}.ffn.mix_k", ffn.time_mix_k, f, f_prev))
        g.add_node(f"{p}.ffn.relu_sq", SquaredReLU())
        g.connect(fk, f"{p}.ffn.relu_sq")
        fv = linear(f"{p}.ffn.value", ffn.value, f"{p}.ffn.relu_sq")
        fr = linear(f"{p}.ffn.receptance", ffn.receptance, *mixed(f"{p}.ffn.mix_r", ffn.time_mix_r, f, f_prev))
        g.add_node(f"{p}.ffn.sigmoid", Sigmoid())
        g.connect(fr, f"{p}.ffn.sigmoid")
        g.add_node(f"{p}.ffn.gate", Product())
        g.connect(f"{p}.ffn.sigmoid", f"{p}.ffn.gate", "a")
        g.connect(fv, f"{p}.ffn.gate", "b")
        x = residual(f"{p}.res2", x, lif(f"{p}.ffn_lif", f"{p}.ffn.gate"))

    out = ln("ln_out", model.ln_out, x)
    linear("head", model.head, out)
    g.add_node("logits", nir.Output(output_type={"output": np.array([cfg.vocab_size])}))
    g.connect("head", "logits")
    return g
