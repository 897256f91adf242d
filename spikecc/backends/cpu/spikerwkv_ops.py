"""CPU lowering of SpikeRWKV's multi-level spike encoder (float mode; one simulator step = one token).

Written from the equations of `spikecc.ir.spikerwkv_ops.MultiLevelEncoder`, not by calling the torch model (the
backend must not depend on torch). Each step of the greedy code is one IEEE-754 operation in the same order as the
reference (`r * (T / W_i)`, `floor`, `clip`, `r - c * (W_i / T)`), so in float64 the spikes are bit-identical
to `MultiLevelSpikeEncoder.encode`; tests/compiler/test_spikerwkv_export.py checks it on random and boundary inputs.
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, require_float
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder, MultiLevelValue


def multilevel_encode(x: np.ndarray, T: int, level_weights: np.ndarray, polarity: bool) -> np.ndarray:
    """Signed spikes (..., T, l, C) in {-1, 0, +1} (int8) of x (..., C); see MultiLevelEncoder for the equations."""
    x = np.asarray(x, dtype=np.float64)
    weights = [float(w) for w in np.asarray(level_weights).reshape(-1)]
    max_value = sum(weights)  # left to right, like the reference's Python sum
    if polarity:
        pol = np.where(x < 0, -1, 1).astype(np.int8)
        mag = np.abs(x)
    else:
        pol = np.ones(x.shape, dtype=np.int8)
        mag = np.maximum(x, 0.0)
    mag = np.minimum(mag, max_value)
    mag = np.where(np.isnan(mag), 0.0, mag)  # NaN: no code, encoded as silence (documented on the op)
    r = mag
    counts = []
    for w in weights:
        # the greedy digit of this level, with the reference's exact operations: multiply by the scalar T / w
        # (dividing by w / T is the same in exact arithmetic but may round differently), floor, clip
        c = np.clip(np.floor(r * (T / w)), 0, T)
        r = r - c * (w / T)
        counts.append(c.astype(np.int64))
    ci = np.stack(counts, axis=-2)  # (..., l, C)
    # integrate-and-fire spreading over the T steps: floor(j * c / T) spikes after step j (exact integers)
    j = np.arange(T + 1, dtype=np.int64).reshape((T + 1,) + (1,) * ci.ndim)
    cum = (j * ci) // T  # (T + 1, ..., l, C)
    spikes = np.diff(cum, axis=0).astype(np.int8)  # (T, ..., l, C)
    spikes = np.moveaxis(spikes, 0, -3)  # (..., T, l, C)
    return spikes * pol[..., None, None, :]


class MultiLevelEncoderKernel(Kernel):
    """Encodes each step's input vector; output is the flat (T*l*C,) signed spike vector of the op's order."""

    def __init__(self, T: int, level_weights: np.ndarray, polarity: bool, dtype) -> None:
        super().__init__()
        self.T, self.level_weights, self.polarity, self.dtype = T, level_weights, polarity, dtype

    def _encode(self, x: np.ndarray) -> np.ndarray:
        s = multilevel_encode(x, self.T, self.level_weights, self.polarity)
        return s.reshape(*x.shape[:-1], -1).astype(self.dtype)

    def step(self, x):
        return self._encode(x["input"])

    def run(self, xs, steps, record):
        return self._encode(xs["input"]), {}  # (steps, C) -> (steps, T*l*C): no state, all steps at once


@lowers(MultiLevelEncoder)
def lower_multilevel_encoder(op: MultiLevelEncoder, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return MultiLevelEncoderKernel(int(op.T), np.asarray(op.level_weights, dtype=np.float64), bool(op.polarity),
                                   ctx.dtype)


class MultiLevelValueKernel(MultiLevelEncoderKernel):
    """x_hat = sign * sum_i count_i * (W_i / T), from the same spikes MultiLevelEncoderKernel makes."""

    def _encode(self, x: np.ndarray) -> np.ndarray:
        s = multilevel_encode(x, self.T, self.level_weights, self.polarity).astype(np.float64)  # (..., T, l, C)
        unit = np.asarray([float(w) / self.T for w in self.level_weights])
        return np.einsum("...tlc,l->...c", s, unit).astype(self.dtype)


@lowers(MultiLevelValue)
def lower_multilevel_value(op: MultiLevelValue, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return MultiLevelValueKernel(int(op.T), np.asarray(op.level_weights, dtype=np.float64), bool(op.polarity),
                                 ctx.dtype)
