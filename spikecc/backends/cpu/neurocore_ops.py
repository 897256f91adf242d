"""CPU lowerings of the neuro-core and boundary ops of spiking language models (spikecc.ir.neurocore_ops), in
float and in fixed point. The fixed-point arithmetic is the ops' docstrings', the same the Lava process models
of spikecc.backends.lava.processes run (tests check the two bit for bit)."""

from __future__ import annotations

import numpy as np

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers
from spikecc.ir.loihi_spec import MULTIPLIER_SHIFT, UV_MAX
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, LoihiElastic, LoihiRelay, SpikeRouter


class _Stepped(Kernel):
    """A kernel whose output depends on the step count t (since the last reset)."""

    def reset(self) -> None:
        super().reset()
        self.t = 0

    def steps(self, n: int) -> np.ndarray:
        """The step indices of the next n steps, advancing the count."""
        ts = np.arange(self.t, self.t + n)
        self.t += n
        return ts


class SpikeRouterKernel(_Stepped):
    def __init__(self, size: int, banks: int, split: bool, dtype, rows: int = 1,
                 payloads: np.ndarray | None = None) -> None:
        super().__init__()
        self.n, self.banks, self.split, self.dtype, self.rows = size, banks, split, dtype, rows
        self.p = 2 if split else 1
        self.payloads = None if payloads is None or not np.size(payloads) else np.asarray(payloads, dtype=dtype)
        self.reset()

    def _route(self, s: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """(steps, rows * n) spikes -> (steps, rows * banks * p * n): each row's blocks (SpikeRouter's docstring)."""
        out = np.zeros((len(ts), self.rows, self.banks, self.p, self.n), dtype=self.dtype)
        s = s.reshape(len(ts), self.rows, self.n)
        steps = np.arange(len(ts))
        b = ts % self.banks
        if self.payloads is not None:  # graded amplitudes: one block, the step's payload with the spike's sign
            out[:, :, 0, 0] = np.sign(s) * self.payloads[ts % self.payloads.size].reshape(-1, 1, 1)
        elif self.split:
            out[steps, :, b, 0] = s > 0
            out[steps, :, b, 1] = s < 0
        else:
            out[steps, :, b, 0] = np.sign(s)
        return out.reshape(len(ts), -1)

    def step(self, x):
        return self._route(x["input"][None, :], self.steps(1))[0]

    def run(self, xs, steps, record):
        return self._route(xs["input"], self.steps(steps)), {}


@lowers(SpikeRouter)
def lower_spike_router(op: SpikeRouter, ctx: BuildContext) -> Kernel:
    return SpikeRouterKernel(op.size, op.banks, op.split, ctx.dtype, rows=ctx.in_size() // op.size,
                             payloads=op.payloads)


class ElasticKernel(_Stepped):
    """LoihiElastic (its docstring): float or fixed update of m, unit spikes u."""

    state_names = ("m",)

    def __init__(self, op: LoihiElastic, fixed: bool, rows: int = 1) -> None:
        super().__init__()
        self.fixed, self.T = fixed, int(op.T)
        self.dtype = np.int64 if fixed else np.float64
        self.mult = np.asarray(op.mult, dtype=self.dtype)
        # rows (spikecc.ir.rows): every row's neurons have the op's parameters; the state holds rows x n values
        hi, lo = (np.asarray(v, dtype=self.dtype) for v in (op.hi, op.lo))
        self.hi, self.lo = (np.tile(v, (1, rows)) if v.ndim == 2 else v for v in (hi, lo))
        self.bias = np.tile(np.asarray(op.bias, dtype=self.dtype), rows)
        self.n = int(self.bias.size)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.m = np.zeros(self.n, dtype=self.dtype)
        self.u = np.zeros(self.n, dtype=self.dtype)

    def step(self, x):
        t = self.steps(1)[0] % self.T
        if self.fixed:
            p = self.m * self.mult[t]
            kept = np.sign(p) * (np.abs(p) >> MULTIPLIER_SHIFT)
            self.m = np.clip(kept * (1 - self.u) + x["input"] + self.bias, -UV_MAX, UV_MAX)
        else:
            self.m = (self.m * self.mult[t]) * (1 - self.u) + x["input"] + self.bias
        self.u = ((self.m > self.hi[t]).astype(self.dtype) - (self.m < self.lo[t]).astype(self.dtype))
        return self.u.copy()


@lowers(LoihiElastic)
def lower_loihi_elastic(op: LoihiElastic, ctx: BuildContext) -> Kernel:
    return ElasticKernel(op, ctx.mode == "fixed", rows=ctx.in_size() // op.bias.size)


class IdentityKernel(Kernel):
    def step(self, x):
        return x["input"]

    def run(self, xs, steps, record):
        return xs["input"], {}


@lowers(LoihiRelay)
def lower_loihi_relay(op: LoihiRelay, ctx: BuildContext) -> Kernel:
    return IdentityKernel()


class HostToCoreKernel(Kernel):
    """Float: y = x. Fixed: integer payloads (HostToCore's docstring); counts the values it clipped."""

    def __init__(self, op: HostToCore, fixed: bool) -> None:
        super().__init__()
        self.fixed, self.bits, self.scale = fixed, int(op.bits), float(op.scale)
        self.clipped = 0

    def reset(self) -> None:
        super().reset()
        self.clipped = 0

    def _convert(self, x: np.ndarray) -> np.ndarray:
        if not self.fixed:
            return x
        if self.bits == 0:
            return (x != 0).astype(np.int64)
        lim = 2 ** (self.bits - 1) - 1
        q = np.rint(np.asarray(x, dtype=np.float64) / self.scale)
        self.clipped += int(np.count_nonzero(np.abs(q) > lim))
        return np.clip(q, -lim, lim).astype(np.int64)

    def step(self, x):
        return self._convert(x["input"])

    def run(self, xs, steps, record):
        return self._convert(xs["input"]), {}


@lowers(HostToCore)
def lower_host_to_core(op: HostToCore, ctx: BuildContext) -> Kernel:
    return HostToCoreKernel(op, ctx.mode == "fixed")


class CoreToHostKernel(_Stepped):
    """y = x * scales[t mod B] * units + bias, in float64 (units and bias per element of a row: rows of an encoder's
    sequence share them)."""

    def __init__(self, op: CoreToHost, width: int) -> None:
        super().__init__()
        self.scales, self.bias = np.asarray(op.scales, dtype=np.float64), np.asarray(op.bias, dtype=np.float64)
        self.units = np.asarray(op.units, dtype=np.float64)
        self.width = width
        self.reset()

    def _convert(self, x: np.ndarray, ts: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(ts), -1, self.width)
        y = x * self.scales[ts % self.scales.size].reshape(-1, 1, 1)
        if self.units.size:
            y = y * self.units
        y = y + self.bias if self.bias.size else y
        return y.reshape(len(ts), -1)

    def step(self, x):
        return self._convert(x["input"][None], self.steps(1))[0]

    def run(self, xs, steps, record):
        return self._convert(xs["input"], self.steps(steps)), {}


@lowers(CoreToHost)
def lower_core_to_host(op: CoreToHost, ctx: BuildContext) -> Kernel:
    shape = ctx.out_shape or (1,)
    return CoreToHostKernel(op, int(shape[-1]) if len(shape) > 1 else ctx.size)
