"""SpikeRWKV checkpoint -> IR graph (one simulator step = one token; the T encoder steps live inside the encoders).

Standard NIR nodes wherever they fit: Linear for every projection, Scale for the time-mix coefficients and for
the residual sums, Delay (one step) for RWKV's token shift. Extension ops for the rest: Embedding (real table),
LayerNorm, Sigmoid, SquaredReLU, Product, WKV (spikecc.ir.lm_ops) and MultiLevelEncoder (spikecc.ir.spikerwkv_ops),
the paper's multi-level spike encoder with spiking flag (Eq. 3-4).

Every linear inside a block reads spikes: `enc = MultiLevelEncoder(x)` emits the signed spikes s (T*l*C, order
(t, level, channel)) and the Linear's weight is the reference weight W tiled over (t, level) and scaled by W_i / T,

    W'[:, (t*l + i)*C + c] = W[:, c] * W_i / T,        so  W' s = W x_hat   (x_hat: the reference's decoded input)

Per block i, with x the residual stream (node `blocks.{i}.res1` / `blocks.{i}.res2` after each half):

    a = ln1(x);  a_prev = Delay(a)                                              # token shift, zero at token 0
    k = K'(enc_k(mix_k*a + (1-mix_k)*a_prev)), v = V'(enc_v(...)), r = sigmoid(R'(enc_r(...)))
    x = x + O'(enc_o(r * WKV(k, v)))                                               # node blocks.{i}.res1
    f = ln2(x);  f_prev = Delay(f)
    x = x + sigmoid(R'(enc_r(mix))) * V'(enc_v(relu(K'(enc_k(mix)))^2))          # node blocks.{i}.res2
    logits = head(ln_out(x))                                                     # block 0 starts with ln0(emb)

Encoder nodes carry the reference model's encoder names (`blocks.{i}.att.enc_k`, ... `blocks.{i}.ffn.enc_v`),
linears the module names (`blocks.{i}.att.key`, ...), so the simulator's spikes line up with `step_detailed`.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.frontends.builder import LMGraphBuilder, to_numpy
from spikecc.ir import Graph
from spikecc.ir.lm_ops import WKV, Embedding, Sigmoid, SquaredReLU
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder

FAMILY = "spikerwkv"


def tiled_weight(weight: np.ndarray, T: int, level_weights) -> np.ndarray:
    """W' (C_out, T*l*C): column block (t, i) is W * (W_i / T), blocks in the encoder's (t, level) order."""
    blocks = [weight * (float(w) / T) for _ in range(T) for w in level_weights]
    return np.concatenate(blocks, axis=1)


def export_spikerwkv(model, vocab_chars: str, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a `spikecc.models.spikerwkv.SpikeRWKV` (weights copied in float64)."""
    cfg = model.cfg
    d = cfg.d_model
    if len(vocab_chars) != cfg.vocab_size:
        raise ValueError(f"vocab has {len(vocab_chars)} characters, the model expects {cfg.vocab_size}")
    weights = [float(w) for w in cfg.level_weights]
    g = Graph(metadata={"dt": dt, "family": FAMILY, "vocab": str(vocab_chars), "substeps": 1, "step": "token",
                        "n_layers": cfg.n_layers, "d_model": d, "d_ffn": cfg.d_ffn, "vocab_size": cfg.vocab_size,
                        "T": cfg.T, "levels": len(weights), "level_weights": weights,
                        "polarity": bool(cfg.polarity)})
    b = LMGraphBuilder(g, dt)
    b.token_input("token", cfg.vocab_size)
    x = b.node("emb", Embedding(weight=to_numpy(model.emb.weight)), "token")

    def encoded_linear(prefix: str, enc_name: str, lin_name: str, module, *srcs: str) -> str:
        """enc (the sum of srcs, encoded to spikes) -> Linear with the tiled weight; returns the Linear."""
        enc = getattr(module, enc_name)
        w = to_numpy(getattr(module, lin_name).weight)
        # the encoder's own options, not cfg's: ffn.enc_v is unsigned whatever cfg.polarity says
        e = b.node(f"{prefix}.{enc_name}", MultiLevelEncoder(channels=w.shape[1], T=enc.T,
                                                             level_weights=np.array(enc.level_weights),
                                                             polarity=enc.polarity), *srcs)
        return b.node(f"{prefix}.{lin_name}", nir.Linear(weight=tiled_weight(w, enc.T, enc.level_weights)), e)

    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}"
        if i == 0:
            x = b.layer_norm(f"{p}.ln0", blk.ln0, x)
        att, ffn = blk.att, blk.ffn
        a = b.layer_norm(f"{p}.ln1", blk.ln1, x)
        a_prev = b.shift(f"{p}.att.shift", d, a)  # the previous token's value; zeros at token 0, as the reference
        k = encoded_linear(f"{p}.att", "enc_k", "key", att, *b.mixed(f"{p}.att.mix_k", att.time_mix_k, a, a_prev))
        v = encoded_linear(f"{p}.att", "enc_v", "value", att, *b.mixed(f"{p}.att.mix_v", att.time_mix_v, a, a_prev))
        r = encoded_linear(f"{p}.att", "enc_r", "receptance", att,
                           *b.mixed(f"{p}.att.mix_r", att.time_mix_r, a, a_prev))
        r = b.node(f"{p}.att.sigmoid", Sigmoid(), r)
        # spikecc's WKV is the model's arithmetic op for op (running max, pp starting at -1e30, same order)
        wkv = b.ports(f"{p}.att.wkv", WKV(time_decay=to_numpy(att.time_decay).reshape(-1),
                                          time_first=to_numpy(att.time_first).reshape(-1)), k=k, v=v)
        o = encoded_linear(f"{p}.att", "enc_o", "output", att, b.product(f"{p}.att.gate", r, wkv))
        x = b.residual(f"{p}.res1", d, x, o)

        f = b.layer_norm(f"{p}.ln2", blk.ln2, x)
        f_prev = b.shift(f"{p}.ffn.shift", d, f)
        fk = encoded_linear(f"{p}.ffn", "enc_k", "key", ffn, *b.mixed(f"{p}.ffn.mix_k", ffn.time_mix_k, f, f_prev))
        fv = encoded_linear(f"{p}.ffn", "enc_v", "value", ffn, b.node(f"{p}.ffn.relu_sq", SquaredReLU(), fk))
        fr = encoded_linear(f"{p}.ffn", "enc_r", "receptance", ffn,
                            *b.mixed(f"{p}.ffn.mix_r", ffn.time_mix_r, f, f_prev))
        fr = b.node(f"{p}.ffn.sigmoid", Sigmoid(), fr)
        x = b.residual(f"{p}.res2", d, x, b.product(f"{p}.ffn.gate", fr, fv))

    b.linear("head", model.head, b.layer_norm("ln_out", model.ln_out, x))
    b.output("logits", cfg.vocab_size, "head")
    return g
