"""ONNX export of the boundary ops (spikecc.ir.neurocore_ops) and of a spike router that runs on the host (the axons
of a host-side spike encoder), from their docstrings:

    HostToCore   float form: y = x
                 fixed form: bits > 0: y = clip(round_half_even(x / scale), -(2**(bits-1) - 1), 2**(bits-1) - 1)
                             bits = 0: y = [x != 0]                                       (int64 payloads)
    CoreToHost   y = x * scales[t mod B] * units + bias  (x: the core's message, cast to float64; t = step;
                                                          units: one per element, when the op has them)
    SpikeRouter  b = step mod banks; block (b, 0) = [s > 0], block (b, 1) = [s < 0] (split), or block (b, 0) =
                 sign(s) (not split); every other block 0

All exact, or one IEEE operation each as written (x / scale, x * scale + bias), the CPU kernels' operations.
The CPU simulator also counts the values a HostToCore clips; the exported stage does not report them.
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.onnx.builder import F64, I64
from spikecc.backends.onnx.registry import ExportContext, exports
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, SpikeRouter


@exports(HostToCore)
def export_host_to_core(op: HostToCore, ctx: ExportContext) -> str:
    b, x = ctx.b, ctx.x()
    if not ctx.fixed:
        return b.op("Identity", x)
    if int(op.bits) == 0:
        return b.cast(b.op("Not", b.op("Equal", x, b.scalar(0.0))), I64)
    lim = float(2 ** (int(op.bits) - 1) - 1)
    q = b.op("Round", b.op("Div", x, b.scalar(float(op.scale))))
    return b.cast(b.op("Clip", q, b.scalar(-lim), b.scalar(lim)), I64)


@exports(CoreToHost)
def export_core_to_host(op: CoreToHost, ctx: ExportContext) -> str:
    b = ctx.b
    x = b.cast(ctx.x(), F64)  # int64 payloads in fixed form; a no-op in float form
    scales = np.asarray(op.scales, dtype=np.float64).reshape(-1)
    if scales.size == 1:
        scale = b.scalar(float(scales[0]))
    else:
        scale = b.op("Gather", b.const(scales, hint="scales"), ctx.step_mod(scales.size), axis=0)
    y = b.op("Mul", x, scale)
    units = np.asarray(op.units, dtype=np.float64).reshape(-1)
    if units.size:
        y = b.op("Mul", y, b.const(units, hint="units"))
    bias = np.asarray(op.bias, dtype=np.float64).reshape(-1)
    return b.op("Add", y, b.const(bias, hint="bias")) if bias.size else y


@exports(SpikeRouter)
def export_spike_router(op: SpikeRouter, ctx: ExportContext) -> str:
    b, s = ctx.b, ctx.x()
    zero = b.scalar(0.0)
    if op.split:
        block = b.op("Concat", b.cast(b.op("Greater", s, zero), F64), b.cast(b.op("Less", s, zero), F64), axis=0)
    else:
        block = b.op("Sign", s)
    if op.banks == 1:
        return block
    active = b.op("Equal", b.const(np.arange(op.banks).reshape(-1, 1), "int64", "banks"), ctx.step_mod(op.banks))
    return b.flat(b.op("Where", active, b.unsqueeze(block, 0), zero))  # (banks, P*n): only bank b non-zero
