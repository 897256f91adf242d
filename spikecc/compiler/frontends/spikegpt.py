"""SpikeGPT checkpoint -> IR graph (one simulator step = one token).

Standard NIR nodes wherever they fit: Linear for every projection, Scale for the time-mix coefficients
and for the residual sums, Delay (one step) for RWKV's token shift. Extension ops for the rest:
Embedding (the binary embedding Theta(E) folded into a {0,1} table, or the real rows E with
``embedding="real"``), LayerNorm, Sigmoid, SquaredReLU, Product, WKV and DiscreteLIF (spikingjelly's LIF with its
`>=` threshold).

The model's options are graph metadata (``embedding``, ``inference``). With ``inference="rescaled"`` (the authors'
``run.py``, RWKV_RESCALE_LAYER = 6) the weights of ``att.output`` and ``ffn.value`` of block i are divided by
2^(i // 6), as ``model_run.py`` divides them, and ``res2`` of every sixth block is a Scale of 0.5 (x / 2).

Per block i, with x the residual stream (node `blocks.{i}.res0` before the block):

    a = ln1(x);            a_prev = Delay(a)
    k = K(mix_k*a + (1-mix_k)*a_prev), v likewise, r = sigmoid(R(...))      # the two Scales sum into K's port
    att_lif = LIF(O(r * WKV(k, v)));   x = x + att_lif                     # node blocks.{i}.res1
    f = ln2(x);            f_prev = Delay(f)
    ffn_lif = LIF(sigmoid(R(mix)) * V(relu(K(mix))^2));   x = x + ffn_lif  # node blocks.{i}.res2
    logits = head(ln_out(x))

Spiking nodes carry the reference model's layer names: `emb` (binary embedding), `blocks.{i}.att_lif`,
`blocks.{i}.ffn_lif`.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.frontends.builder import LMGraphBuilder, to_numpy
from spikecc.ir import Graph
from spikecc.ir.lm_ops import WKV, DiscreteLIF, Embedding, Sigmoid, SquaredReLU

FAMILY = "spikegpt"


def export_spikegpt(model, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a `spikecc.models.spikegpt.SpikeGPT` (weights copied in float64)."""
    cfg = model.cfg
    d = cfg.d_model
    g = Graph(metadata={"dt": dt, "family": FAMILY, "n_layer": cfg.n_layer, "d_model": d,
                        "vocab_size": cfg.vocab_size, "d_ffn": cfg.d_ffn, "step": "token",
                        "embedding": cfg.embedding, "inference": cfg.inference})
    b = LMGraphBuilder(g, dt)
    b.token_input("token", cfg.vocab_size)
    table = to_numpy(model.emb.weight)
    if cfg.embedding == "binary":
        table = (table >= 0).astype(np.float64)  # Theta(E): x_t = Theta(E[idx_t])
    x = b.node("emb", Embedding(weight=table), "token")

    def scaled_linear(name: str, module, scale: float, src: str) -> str:
        # scale is a power of two: W * scale gives exactly the floats of model_run.py's W / 2^(i // 6)
        return b.node(name, nir.Linear(weight=to_numpy(module.weight) * scale), src)

    def lif(name: str, src: str) -> str:
        return b.node(name, DiscreteLIF(tau=np.full(d, cfg.tau), v_threshold=np.full(d, cfg.v_threshold),
                                        v_reset=np.zeros(d)), src)

    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        if i == 0:
            x = b.layer_norm(f"{p}.ln0", blk.ln0, x)
        att, ffn = blk.att, blk.ffn
        a = b.layer_norm(f"{p}.ln1", blk.ln1, x)
        a_prev = b.shift(f"{p}.att.shift", d, a)
        k = b.linear(f"{p}.att.key", att.key, *b.mixed(f"{p}.att.mix_k", att.time_mix_k, a, a_prev))
        v = b.linear(f"{p}.att.value", att.value, *b.mixed(f"{p}.att.mix_v", att.time_mix_v, a, a_prev))
        r = b.linear(f"{p}.att.receptance", att.receptance, *b.mixed(f"{p}.att.mix_r", att.time_mix_r, a, a_prev))
        r = b.node(f"{p}.att.sigmoid", Sigmoid(), r)
        wkv = b.ports(f"{p}.att.wkv", WKV(time_decay=to_numpy(att.time_decay).reshape(-1),
                                          time_first=to_numpy(att.time_first).reshape(-1)), k=k, v=v)
        scale = cfg.branch_scale(i)
        o = scaled_linear(f"{p}.att.output", att.output, scale, b.product(f"{p}.att.gate", r, wkv))
        x = b.residual(f"{p}.res1", d, x, lif(f"{p}.att_lif", o))

        f = b.layer_norm(f"{p}.ln2", blk.ln2, x)
        f_prev = b.shift(f"{p}.ffn.shift", d, f)
        fk = b.linear(f"{p}.ffn.key", ffn.key, *b.mixed(f"{p}.ffn.mix_k", ffn.time_mix_k, f, f_prev))
        fv = scaled_linear(f"{p}.ffn.value", ffn.value, scale, b.node(f"{p}.ffn.relu_sq", SquaredReLU(), fk))
        fr = b.linear(f"{p}.ffn.receptance", ffn.receptance, *b.mixed(f"{p}.ffn.mix_r", ffn.time_mix_r, f, f_prev))
        fr = b.node(f"{p}.ffn.sigmoid", Sigmoid(), fr)
        s = lif(f"{p}.ffn_lif", b.product(f"{p}.ffn.gate", fr, fv))
        if cfg.halves_after(i):  # x = (x + s) / 2: a Scale of 0.5 on the residual sum (exact, a power of two)
            x = b.node(f"{p}.res2", nir.Scale(scale=np.full(d, 0.5)), x, s)
        else:
            x = b.residual(f"{p}.res2", d, x, s)

    b.linear("head", model.head, b.layer_norm("ln_out", model.ln_out, x))
    b.output("logits", cfg.vocab_size, "head")
    return g
