"""ONNX export of NIR's ops where they run on a language model's host (the readout head, residual scalings, RWKV's
token shift), from NIR's definitions (neuroir.org/docs; Pedersen et al., Nat. Commun. 15:8122, 2024):

    Input      the graph input (float64, flat, as the simulator is fed)
    Output     y = x (a graph output of the stage that computes it)       Flatten   y = x
    Affine     y = W x + b                                                 Linear    y = W x
               (an (L, n_in) input: the same W on each row, as torch applies a Linear to a sequence)
    Scale      y = s * x
    Threshold  y = [x > threshold]
    Delay      y[t] = x[t - d], d = round(delay / dt) steps per element; 0 before the first input arrives

Rounding: W x is one MatMul; onnxruntime's double GEMM sums the products in its own order (numpy's BLAS in
another), so the results agree to ~1e-16 relative, not bit for bit. Everything else here is exact or one IEEE
operation as in the definition.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.backends.onnx.builder import F64
from spikecc.backends.onnx.registry import ExportContext, exports, unsupported
from spikecc.ir.infer import linear_rows


@exports(nir.Input)
def export_input(op: nir.Input, ctx: ExportContext) -> str:
    return ctx.b.input(ctx.name, F64, [ctx.size])


@exports(nir.Output, nir.Flatten)
def export_identity(op: nir.NIRNode, ctx: ExportContext) -> str:
    return ctx.b.op("Identity", ctx.x())


@exports(nir.Affine, nir.Linear)
def export_linear(op: nir.Affine | nir.Linear, ctx: ExportContext) -> str:
    w = np.asarray(op.weight, dtype=np.float64)
    if w.ndim != 2:
        raise unsupported(ctx, f"a {type(op).__name__} weight of shape {w.shape} is not a matrix",
                          "give the host linear layer a 2-D weight")
    b = ctx.b
    rows = max(1, linear_rows(op, ctx.in_shapes["input"]))
    x = ctx.x() if rows == 1 else b.reshape(ctx.x(), [rows, w.shape[1]])
    y = b.op("MatMul", x, b.const(w.T.copy(), hint="weight_t"))
    if isinstance(op, nir.Affine):
        y = b.op("Add", y, b.const(np.asarray(op.bias, dtype=np.float64).reshape(-1), hint="bias"))
    return y if rows == 1 else b.flat(y)


def per_element(value, size: int) -> np.ndarray:
    """A parameter broadcast to one value per element (NIR allows scalars)."""
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (size,)).copy()


@exports(nir.Scale)
def export_scale(op: nir.Scale, ctx: ExportContext) -> str:
    return ctx.b.op("Mul", ctx.x(), ctx.b.const(per_element(op.scale, ctx.size), hint="scale"))


@exports(nir.Threshold)
def export_threshold(op: nir.Threshold, ctx: ExportContext) -> str:
    b = ctx.b
    return b.cast(b.op("Greater", ctx.x(), b.const(per_element(op.threshold, ctx.size), hint="th")), F64)


@exports(nir.Delay)
def export_delay(op: nir.Delay, ctx: ExportContext) -> str:
    """A shift register: state rows r_k = x[t-1-k], k = 0 .. D-1 (D the largest delay), zeros at the start.
    y_i = x_i[t] where d_i = 0, else r_{d_i - 1, i}; then the rows shift by one."""
    b, n = ctx.b, ctx.size
    d = np.rint(per_element(op.delay, n) / ctx.dt).astype(np.int64)
    if np.any(d < 0):
        raise unsupported(ctx, "negative delay", "delays must be >= 0 seconds")
    depth = int(d.max(initial=0))
    if depth == 0:
        return b.op("Identity", ctx.x())
    rows = ctx.state("rows", np.zeros((depth, n)))
    full = b.op("Concat", b.unsqueeze(ctx.x(), 0), rows, axis=0)  # (D + 1, n): x[t], x[t-1], ..., x[t-D]
    y = b.op("GatherElements", full, b.const(d.reshape(1, n), "int64", "delay"), axis=0)
    ctx.set_state("rows", b.op("Slice", full, b.ints(0), b.ints(depth), b.ints(0)))
    return b.flat(y)
