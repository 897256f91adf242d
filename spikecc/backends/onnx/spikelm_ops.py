"""ONNX export of SpikeLM's ops (spikecc.ir.spikelm_ops), written from their docstrings (float64). One graph step
is one spike step; the spike step is t = step mod T and the token p = step // T, from the graph-step counter.

    ElasticBiSpike       m_t = x_t (t = 0, or leak = 0);  m_t = ((beta m_{t-1}) (alpha_{t-1} - s_{t-1})) + x_t
                         "code":  s_t = alpha_t * clip(round_half_even(m_t / alpha_t), -1, 1)
                         "paper": s_t = alpha_t * ([m_t > alpha_t] - [m_t < -alpha_t])           (state m, s)
    CausalSelfAttention  y_h = softmax(q_h K_{t,h}^T / sqrt(d_head)) V_{t,h} over the p + 1 cached tokens of spike
                         step t. State: every step's k and v rows, (steps, d), growing by one row per graph step;
                         the cache of spike step t is rows t, t + T, t + 2T, ... (a strided Slice), which holds the
                         current token's row last.
    SelfAttention        Y_h = softmax(Q_h K_h^T / sqrt(d_head) + M) V_h,  M_j = (1 - mask_j) * min_float64
    CrossAttention       y_h = softmax(q_h K_h^T / sqrt(d_head) + M) V_h   (one query over a presented sequence)
    PositionEmbedding    stream: y = weight[step // T] (the program refuses steps past the table: max_steps);
                         sequence: y = weight[:L]
    TokenMean            acc_t = x_0 (t = 0), acc_{t-1} + x_t;  y_t = acc_t / (t + 1)          (state acc)

softmax is exp(s - max s) / sum exp(s - max s), the CPU kernels' stable form. The score and value products are
MatMuls whose sums onnxruntime orders its own way (~1e-16 relative against numpy). The KV cache grows by one row
per step and is copied whole into the next step's state (Concat): O(steps) work per step, as the attention itself.
"""

from __future__ import annotations

import math

import numpy as np

from spikecc.backends.onnx.builder import F64, StageBuilder
from spikecc.backends.onnx.registry import ExportContext, exports
from spikecc.ir.spikelm_ops import (
    CausalSelfAttention,
    CrossAttention,
    ElasticBiSpike,
    PositionEmbedding,
    SelfAttention,
    TokenMean,
)

INT64_MAX = 2**63 - 1


@exports(ElasticBiSpike)
def export_elastic_bi_spike(op: ElasticBiSpike, ctx: ExportContext) -> str:
    b, n, T = ctx.b, ctx.size, int(op.T)
    x = ctx.x()
    alpha = b.const(np.asarray(op.alpha, dtype=np.float64), hint="alpha")
    t = ctx.step_mod(T)
    a_t = b.op("Gather", alpha, t, axis=0)
    m_prev, s_prev = ctx.state("m", np.zeros(n)), ctx.state("s", np.zeros(n))
    if float(op.leak) == 0.0 or T == 1:
        m = x  # the K and V neurons are memoryless; with T = 1 every step restarts the membrane
    else:
        a_prev = b.op("Gather", alpha, b.op("Sub", t, b.scalar(1, "int64")), axis=0)  # t = 0: alpha[-1], unused
        leaky = b.op("Add", b.op("Mul", b.op("Mul", b.scalar(float(op.leak)), m_prev), b.op("Sub", a_prev, s_prev)),
                     x)
        m = b.op("Where", b.op("Equal", t, b.scalar(0, "int64")), x, leaky)
    if op.threshold_mode == "code":
        q = b.op("Clip", b.op("Round", b.op("Div", m, a_t)), b.scalar(-1.0), b.scalar(1.0))
    else:
        q = b.op("Sub", b.cast(b.op("Greater", m, a_t), F64), b.cast(b.op("Less", m, b.op("Neg", a_t)), F64))
    s = b.op("Mul", a_t, q)
    ctx.set_state("m", m)
    ctx.set_state("s", s)
    return s


def attend(b: StageBuilder, q: str, k: str, v: str, d_head: int, mask: str | None = None) -> str:
    """softmax(q k^T / sqrt(d_head) + M) v for (h, Lq, dh) queries and (h, Lk, dh) keys and values; `mask` (Lk,),
    1 to attend and 0 for padding, gives M = (1 - mask) * min_float64."""
    scores = b.op("Div", b.op("MatMul", q, b.op("Transpose", k, perm=[0, 2, 1])), b.scalar(math.sqrt(d_head)))
    if mask is not None:
        m = b.op("Mul", b.op("Sub", b.scalar(1.0), mask), b.scalar(float(np.finfo(np.float64).min)))
        scores = b.op("Add", scores, b.reshape(m, [1, 1, -1]))
    e = b.op("Exp", b.op("Sub", scores, b.op("ReduceMax", scores, b.ints(-1), keepdims=1)))
    p = b.op("Div", e, b.op("ReduceSum", e, b.ints(-1), keepdims=1))
    return b.op("MatMul", p, v)


def heads(b: StageBuilder, x: str, n_head: int, d: int) -> str:
    """A flat (L*d) sequence as (h, L, dh) per-head blocks (head h: features h*dh .. (h+1)*dh - 1)."""
    return b.op("Transpose", b.reshape(x, [-1, n_head, d // n_head]), perm=[1, 0, 2])


def merge_heads(b: StageBuilder, y: str) -> str:
    """(h, L, dh) -> flat (L*d), heads concatenated per row."""
    return b.flat(b.op("Transpose", y, perm=[1, 0, 2]))


@exports(CausalSelfAttention)
def export_causal_self_attention(op: CausalSelfAttention, ctx: ExportContext) -> str:
    b, d, h, T = ctx.b, ctx.size, int(op.n_head), int(op.T)
    caches = []
    for var in ("k", "v"):
        rows = ctx.state(var, np.zeros((0, d)), shape=["steps", d])
        new = b.op("Concat", rows, b.reshape(ctx.x(var), [1, d]), axis=0)
        ctx.set_state(var, new)
        if T > 1:  # the rows of spike step t: t, t + T, ... (the last is this step's)
            start = b.unsqueeze(ctx.step_mod(T), 0)
            new = b.op("Slice", new, start, b.ints(INT64_MAX), b.ints(0), b.ints(T))
        caches.append(heads(b, new, h, d))
    q = heads(b, ctx.x("q"), h, d)
    return merge_heads(b, attend(b, q, caches[0], caches[1], d // h))


@exports(SelfAttention, CrossAttention)
def export_sequence_attention(op: SelfAttention | CrossAttention, ctx: ExportContext) -> str:
    b, h = ctx.b, int(op.n_head)
    d = int(ctx.in_shapes["k"][-1])
    mask = ctx.x("mask") if "mask" in ctx.inputs else None
    y = attend(b, heads(b, ctx.x("q"), h, d), heads(b, ctx.x("k"), h, d), heads(b, ctx.x("v"), h, d), d // h, mask)
    return merge_heads(b, y)


@exports(PositionEmbedding)
def export_position_embedding(op: PositionEmbedding, ctx: ExportContext) -> str:
    b = ctx.b
    table = np.asarray(op.weight, dtype=np.float64)
    if op.mode != "stream":
        return b.const(table[: ctx.size // table.shape[1]].reshape(-1), hint="positions")
    ctx.limits.append(int(table.shape[0]) * int(op.T))
    pos = b.op("Div", ctx.step(), b.scalar(int(op.T), "int64"))  # int64 division: floor for steps >= 0
    return b.op("Gather", b.const(table, hint="positions"), pos, axis=0)


@exports(TokenMean)
def export_token_mean(op: TokenMean, ctx: ExportContext) -> str:
    b = ctx.b
    t = ctx.step_mod(int(op.T))
    acc = ctx.state("acc", np.zeros(ctx.size))
    acc = b.op("Where", b.op("Equal", t, b.scalar(0, "int64")), ctx.x(), b.op("Add", acc, ctx.x()))
    ctx.set_state("acc", acc)
    return b.op("Div", acc, b.cast(b.op("Add", t, b.scalar(1, "int64")), F64))

