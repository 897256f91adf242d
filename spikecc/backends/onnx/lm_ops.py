"""ONNX export of the language-model ops of spikecc.ir.lm_ops, written from their docstrings (float64):

    Embedding    y = weight[token]                        (Gather; the id arrives as a float64 and is cast)
    LayerNorm    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias,  var = mean((x - mean)^2), per row of d
    Sigmoid      y = 1 / (1 + exp(-x))                    Exp  y = exp(x)
    SquaredReLU  y = max(x, 0)^2                          Product  y = a * b
    GELU         y = x/2 * (1 + erf(x / sqrt(2)))         (erf from double ops: spikecc.backends.onnx.erf)
    DiscreteLIF  H = V + (X - (V - v_reset)) / tau;  S = [H - v_threshold >= 0];  V = v_reset where S else H
    WKV          RWKV-4's running-max form (state aa, bb, pp; pp starts at -1e30):
                 q = max(pp, u+k);  y = (e^{pp-q} aa + e^{u+k-q} v) / (e^{pp-q} bb + e^{u+k-q})
                 q' = max(pp+w, k); aa' = e^{pp+w-q'} aa + e^{k-q'} v; bb' = e^{pp+w-q'} bb + e^{k-q'}; pp' = q'
                 with w = -exp(time_decay), u = time_first (computed once, in numpy, at export)

Rounding against the CPU simulator: every formula is evaluated in the docstring's order, one IEEE operation per
ONNX node, which is also the CPU kernels' order. The differences that remain: the means of LayerNorm are sums in
onnxruntime's order (numpy sums pairwise), and exp/erf may differ in the last ulp; ~1e-16 relative. GELU's
docstring halves x (x/2) where the kernel multiplies by 0.5: the same value.
"""

from __future__ import annotations

import math

import numpy as np

from spikecc.backends.onnx.builder import F64, I64, StageBuilder
from spikecc.backends.onnx.erf import erf
from spikecc.backends.onnx.nir_ops import per_element
from spikecc.backends.onnx.registry import ExportContext, exports
from spikecc.ir.lm_ops import GELU, WKV, DiscreteLIF, Embedding, Exp, LayerNorm, Product, Sigmoid, SquaredReLU


@exports(Embedding)
def export_embedding(op: Embedding, ctx: ExportContext) -> str:
    b = ctx.b
    table = np.asarray(op.weight, dtype=np.float64)
    ids = b.cast(ctx.x(), I64)
    return b.flat(b.op("Gather", b.const(table, hint="table"), ids, axis=0))


def normalize_rows(b: StageBuilder, x: str, d: int, eps: float) -> str:
    """(x - mean) / sqrt(var + eps) over rows of d features (x flat; result (rows, d)); var biased, as torch's."""
    rows = b.reshape(x, [-1, d])
    mean = b.op("ReduceMean", rows, b.ints(-1), keepdims=1)
    centred = b.op("Sub", rows, mean)
    var = b.op("ReduceMean", b.op("Mul", centred, centred), b.ints(-1), keepdims=1)
    return b.op("Div", centred, b.op("Sqrt", b.op("Add", var, b.scalar(float(eps)))))


@exports(LayerNorm)
def export_layernorm(op: LayerNorm, ctx: ExportContext) -> str:
    b = ctx.b
    w = np.asarray(op.weight, dtype=np.float64).reshape(-1)
    z = normalize_rows(b, ctx.x(), w.size, float(op.eps))
    y = b.op("Add", b.op("Mul", z, b.const(w, hint="ln_w")),
             b.const(np.asarray(op.bias, dtype=np.float64).reshape(-1), hint="ln_b"))
    return b.flat(y)


@exports(Sigmoid)
def export_sigmoid(op: Sigmoid, ctx: ExportContext) -> str:
    b = ctx.b
    one = b.scalar(1.0)
    return b.op("Div", one, b.op("Add", one, b.op("Exp", b.op("Neg", ctx.x()))))


@exports(Exp)
def export_exp(op: Exp, ctx: ExportContext) -> str:
    return ctx.b.op("Exp", ctx.x())


@exports(SquaredReLU)
def export_squared_relu(op: SquaredReLU, ctx: ExportContext) -> str:
    r = ctx.b.op("Max", ctx.x(), ctx.b.scalar(0.0))
    return ctx.b.op("Mul", r, r)


@exports(GELU)
def export_gelu(op: GELU, ctx: ExportContext) -> str:
    b = ctx.b
    x = ctx.x()
    ctx.note("GELU: erf evaluated from double ops (A&S 7.1.6 series; onnxruntime has no double Erf), |error| < 2e-15")
    e = erf(b, b.op("Div", x, b.scalar(math.sqrt(2.0))))
    return b.op("Mul", b.op("Div", x, b.scalar(2.0)), b.op("Add", b.scalar(1.0), e))


@exports(Product)
def export_product(op: Product, ctx: ExportContext) -> str:
    return ctx.b.op("Mul", ctx.x("a"), ctx.x("b"))


@exports(DiscreteLIF)
def export_discrete_lif(op: DiscreteLIF, ctx: ExportContext) -> str:
    b, n = ctx.b, ctx.size
    v_reset = b.const(per_element(op.v_reset, n), hint="v_reset")
    v = ctx.state("v", per_element(op.v_reset, n))
    h = b.op("Add", v, b.op("Div", b.op("Sub", ctx.x(), b.op("Sub", v, v_reset)),
                            b.const(per_element(op.tau, n), hint="tau")))
    s = b.op("GreaterOrEqual", b.op("Sub", h, b.const(per_element(op.v_threshold, n), hint="vth")), b.scalar(0.0))
    ctx.set_state("v", b.op("Where", s, v_reset, h))
    return b.cast(s, F64)


@exports(WKV)
def export_wkv(op: WKV, ctx: ExportContext) -> str:
    b, n = ctx.b, ctx.size
    w = b.const(-np.exp(per_element(op.time_decay, n)), hint="w")
    u = b.const(per_element(op.time_first, n), hint="u")
    aa, bb = ctx.state("aa", np.zeros(n)), ctx.state("bb", np.zeros(n))
    pp = ctx.state("pp", np.full(n, -1e30))
    k, v = ctx.x("k"), ctx.x("v")
    ww = b.op("Add", u, k)
    q = b.op("Max", pp, ww)
    e1, e2 = b.op("Exp", b.op("Sub", pp, q)), b.op("Exp", b.op("Sub", ww, q))
    y = b.op("Div", b.op("Add", b.op("Mul", e1, aa), b.op("Mul", e2, v)), b.op("Add", b.op("Mul", e1, bb), e2))
    ww = b.op("Add", pp, w)
    q = b.op("Max", ww, k)
    e1, e2 = b.op("Exp", b.op("Sub", ww, q)), b.op("Exp", b.op("Sub", k, q))
    ctx.set_state("aa", b.op("Add", b.op("Mul", e1, aa), b.op("Mul", e2, v)))
    ctx.set_state("bb", b.op("Add", b.op("Mul", e1, bb), e2))
    ctx.set_state("pp", q)
    return y
