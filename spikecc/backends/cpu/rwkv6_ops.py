"""CPU lowerings of the RWKV-6 extension ops (float mode; one simulator step = one token).

Written from the equations of `spikecc.ir.rwkv6_ops`, not by calling the torch model (backends do not import torch).
The sums inside the head products may round differently from torch's, at the 1e-16 level in float64;
tests/compiler/test_rwkv6_export.py checks whole exported models against the torch reference.
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, require_float
from spikecc.backends.cpu.lm_ops import Elementwise, LayerNormKernel
from spikecc.ir.rwkv6_ops import WKV6, GroupNorm, Tanh


@lowers(Tanh)
def lower_tanh(op: Tanh, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return Elementwise(np.tanh)


class GroupNormKernel(LayerNormKernel):
    """LayerNorm over each group of n channels (LayerNormKernel with unit rows), then the per-channel affine."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, groups: int, eps: float, dtype) -> None:
        n = len(weight) // groups
        super().__init__(np.ones(n, dtype), np.zeros(n, dtype), eps)
        self.channel_weight, self.channel_bias = weight, bias

    def _ln(self, x):
        return super()._ln(x) * self.channel_weight + self.channel_bias


@lowers(GroupNorm)
def lower_group_norm(op: GroupNorm, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return GroupNormKernel(np.asarray(op.weight, ctx.dtype).reshape(-1), np.asarray(op.bias, ctx.dtype).reshape(-1),
                           int(op.groups), float(op.eps), ctx.dtype)


class WKV6Kernel(Kernel):
    """The WKV6 recurrence with state S (H, N, N)."""

    state_names = ("S",)

    def __init__(self, u: np.ndarray, dtype) -> None:
        super().__init__()
        self.u, self.dtype = u, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        H, N = self.u.shape
        self.S = np.zeros((H, N, N), self.dtype)

    def step(self, x):
        H, N = self.u.shape
        r, k, v, w = (x[p].reshape(H, N) for p in ("r", "k", "v", "w"))
        a = k[:, :, None] * v[:, None, :]  # k^T v per head
        y = np.einsum("hi,hij->hj", r, self.u[:, :, None] * a + self.S)
        self.S = a + w[:, :, None] * self.S
        return y.reshape(-1)


@lowers(WKV6)
def lower_wkv6(op: WKV6, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return WKV6Kernel(np.asarray(op.time_faaaa, ctx.dtype), ctx.dtype)
