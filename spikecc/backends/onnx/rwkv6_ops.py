"""ONNX export of the RWKV-6 ops (spikecc.ir.rwkv6_ops), from their docstrings (float64; Peng et al. 2024,
arXiv:2404.05892, Sec. 4):

    Tanh       y = tanh(x)
    GroupNorm  per group of n channels z = (x_g - mean) / sqrt(var + eps); y = z * weight + bias (biased variance)
    WKV6       per head, N-vectors r, k, v, w, bonus u, state S (N x N, zero at the start):
               y[j] = sum_i r[i] * (u[i] * k[i] * v[j] + S[i, j]);   S'[i, j] = w[i] * S[i, j] + k[i] * v[j]

Rounding against the CPU simulator: WKV6's bonus term is (u k) v, left to right as the docstring writes it; the CPU
kernel forms u (k v). The sum over i is a MatMul (onnxruntime's order; numpy's einsum has its own). Both ~1e-16
relative. The CPU GroupNorm multiplies by a unit weight and adds a zero bias before the channel affine: exact.
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.onnx.lm_ops import normalize_rows
from spikecc.backends.onnx.registry import ExportContext, exports
from spikecc.ir.rwkv6_ops import WKV6, GroupNorm, Tanh


@exports(Tanh)
def export_tanh(op: Tanh, ctx: ExportContext) -> str:
    return ctx.b.op("Tanh", ctx.x())


@exports(GroupNorm)
def export_group_norm(op: GroupNorm, ctx: ExportContext) -> str:
    b = ctx.b
    w = np.asarray(op.weight, dtype=np.float64).reshape(-1)
    z = b.flat(normalize_rows(b, ctx.x(), w.size // int(op.groups), float(op.eps)))
    bias = np.asarray(op.bias, dtype=np.float64).reshape(-1)
    return b.op("Add", b.op("Mul", z, b.const(w, hint="gn_w")), b.const(bias, hint="gn_b"))


@exports(WKV6)
def export_wkv6(op: WKV6, ctx: ExportContext) -> str:
    b = ctx.b
    H, N = op.heads, op.head_size
    r, k, v, w = (b.reshape(ctx.x(p), [H, N]) for p in ("r", "k", "v", "w"))
    S = ctx.state("S", np.zeros((H, N, N)))
    u = b.const(np.asarray(op.time_faaaa, dtype=np.float64), hint="u")
    col = b.unsqueeze(v, 1)  # v as (H, 1, N): v[j] along the last axis
    bonus = b.op("Mul", b.unsqueeze(b.op("Mul", u, k), 2), col)  # (u[i] k[i]) v[j]
    y = b.op("MatMul", b.unsqueeze(r, 1), b.op("Add", bonus, S))  # (H, 1, N)
    kv = b.op("Mul", b.unsqueeze(k, 2), col)  # k[i] v[j]
    ctx.set_state("S", b.op("Add", b.op("Mul", b.unsqueeze(w, 2), S), kv))
    return b.flat(y)
