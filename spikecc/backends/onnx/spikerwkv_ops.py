"""ONNX export of SpikeRWKV's multi-level spike encoder (spikecc.ir.spikerwkv_ops), from its docstring (paper Eq.
3-4; Zhang, Shen, Wang 2025):

    d_f = -1 if x < 0 else +1,  a = min(|x|, sum_i W_i)          (polarity; unsigned: d_f = 1, a = min(max(x, 0), .))
    a = 0 where x is NaN (no code: silence)
    r_0 = a;  c_i = clip(floor(r_{i-1} * (T / W_i)), 0, T);  r_i = r_{i-1} - c_i * (W_i / T)
    d_i^j = floor(j c_i / T) - floor((j - 1) c_i / T),  j = 1 .. T          (int64 arithmetic: exact)
    MultiLevelEncoder   y[(j*l + i)*C + c] = d_i^j[c] * d_f[c]               (signed spikes, float64)
    MultiLevelValue     y = d_f * sum_i c_i * (W_i / T)                      (summed over i left to right)

T / W_i and W_i / T are Python float64 divisions done once at export, and sum_i W_i is summed left to right, as the
op (and the torch reference) define them, so every step of the greedy code is the same IEEE operation: the spikes
equal the CPU simulator's given equal inputs. MultiLevelValue's sum: the CPU kernel contracts the spikes with the
units in einsum's order; with level weights that are powers of two (spikecc's default) every partial sum is exact.
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.onnx.builder import F64, I64, StageBuilder
from spikecc.backends.onnx.registry import ExportContext, exports
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder, MultiLevelValue


def _counts(b: StageBuilder, op: MultiLevelEncoder, x: str) -> tuple[str, list[str]]:
    """(d_f, [c_1 .. c_l]) as float64 tensors of C values (module docstring)."""
    weights = [float(w) for w in np.asarray(op.level_weights).reshape(-1)]
    T = int(op.T)
    top = b.scalar(sum(weights))  # Python's left-to-right sum
    zero = b.scalar(0.0)
    if op.polarity:
        pol = b.op("Where", b.op("Less", x, zero), b.scalar(-1.0), b.scalar(1.0))
        mag = b.op("Abs", x)
    else:
        pol = None
        mag = b.op("Max", x, zero)
    r = b.op("Where", b.op("IsNaN", x), zero, b.op("Min", mag, top))
    counts = []
    for w in weights:
        c = b.op("Clip", b.op("Floor", b.op("Mul", r, b.scalar(T / w))), zero, b.scalar(float(T)))
        r = b.op("Sub", r, b.op("Mul", c, b.scalar(w / T)))
        counts.append(c)
    return pol, counts


@exports(MultiLevelEncoder)
def export_multilevel_encoder(op: MultiLevelEncoder, ctx: ExportContext) -> str:
    b, T, C = ctx.b, int(op.T), int(op.channels)
    pol, counts = _counts(b, op, ctx.x())
    c = b.cast(b.op("Concat", *[b.unsqueeze(ci, 0) for ci in counts], axis=0), I64)  # (l, C)
    j = b.const(np.arange(T + 1, dtype=np.int64).reshape(T + 1, 1, 1), "int64", "j")
    cum = b.op("Div", b.op("Mul", j, b.unsqueeze(c, 0)), b.scalar(T, "int64"))  # floor(j c / T): (T + 1, l, C)
    spikes = b.cast(b.op("Sub", b.op("Slice", cum, b.ints(1), b.ints(T + 1), b.ints(0)),
                         b.op("Slice", cum, b.ints(0), b.ints(T), b.ints(0))), F64)  # (T, l, C)
    if pol is not None:
        spikes = b.op("Mul", spikes, b.reshape(pol, [1, 1, C]))
    return b.flat(spikes)


@exports(MultiLevelValue)
def export_multilevel_value(op: MultiLevelValue, ctx: ExportContext) -> str:
    b, T = ctx.b, int(op.T)
    pol, counts = _counts(b, op, ctx.x())
    total = None
    for w, c in zip(np.asarray(op.level_weights).reshape(-1), counts):
        term = b.op("Mul", c, b.scalar(float(w) / T))
        total = term if total is None else b.op("Add", total, term)
    return total if pol is None else b.op("Mul", pol, total)
