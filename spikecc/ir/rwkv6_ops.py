"""Extension ops for RWKV-6 ("Finch", x060) and the SpikeRWKV conversion of it: what neither NIR nor
spikecc.ir.lm_ops has (one simulator step = one token, flat vectors of one token).

Everything else of an RWKV-6 block is composed from existing nodes: Linear/Affine for the projections and the
low-rank mixes (the Affine's bias carries the static mix or decay), Scale and Delay for the token shift, Product
for the data-dependent mixes and the gates, Sigmoid x Product for SiLU, Exp -> Scale(-1) -> Exp for the decay
w = exp(-exp(d)), LayerNorm, SquaredReLU, and spikecc.ir.spikerwkv_ops.MultiLevelEncoder for the spike encoders.
Source of the equations: Peng et al. 2024 (arXiv:2404.05892, Sec. 4) and BlinkDL's rwkv/model.py (att_one_v6_0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spikecc.ir.ops import ExtensionOp, register_op


@register_op
@dataclass(eq=False)
class Tanh(ExtensionOp):
    """y = tanh(x), elementwise (RWKV-6's low-rank token-shift and decay terms)."""


@register_op
@dataclass(eq=False)
class GroupNorm(ExtensionOp):
    """Group normalisation of one vector of C = groups x n channels (torch.nn.GroupNorm on a single sample):

        for each group g (channels g*n .. g*n + n - 1):  z = (x_g - mean(x_g)) / sqrt(var(x_g) + eps)
        y = z * weight + bias                       (biased variance; weight and bias per channel, shape (C,))

    RWKV-6's ln_x: one group per head, eps 64e-5.
    """

    weight: np.ndarray
    bias: np.ndarray
    groups: int = 1
    eps: float = 1e-5

    def __post_init__(self) -> None:
        self.groups = int(self.groups)
        if self.groups < 1 or np.size(self.weight) % self.groups:
            raise ValueError(f"GroupNorm: {np.size(self.weight)} channels do not split into {self.groups} groups")
        super().__post_init__()

    def natural_shape(self) -> tuple[int, ...]:
        return (int(np.size(self.weight)),)

    def output_shape(self, in_shapes):
        return self.natural_shape()


@register_op
@dataclass(eq=False)
class WKV6(ExtensionOp):
    """RWKV-6's multi-head WKV with matrix-valued state (ports `r`, `k`, `v`, `w`; vectors of H x N, head-major).

    Per head h with N-vectors r_t, k_t, v_t, decay w_t in (0, 1) and bonus u = time_faaaa[h], state S (N x N), zero
    before the first token:

        y_t[j] = sum_i r_t[i] * (u[i] * k_t[i] * v_t[j] + S_{t-1}[i, j])
        S_t[i, j] = w_t[i] * S_{t-1}[i, j] + k_t[i] * v_t[j]

    i.e. y_t = r_t (diag(u) k_t^T v_t + S_{t-1}),  S_t = diag(w_t) S_{t-1} + k_t^T v_t. The decay arrives as
    w_t itself (the graph computes exp(-exp(d_t)) with Exp and Scale nodes).
    """

    time_faaaa: np.ndarray  # (H, N): the bonus u per head

    input_ports: ClassVar[tuple[str, ...]] = ("r", "k", "v", "w")
    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.time_faaaa = np.asarray(self.time_faaaa, dtype=np.float64)
        if self.time_faaaa.ndim != 2:
            raise ValueError(f"WKV6: time_faaaa must be (heads, head size), got shape {self.time_faaaa.shape}")
        super().__post_init__()

    @property
    def heads(self) -> int:
        return int(self.time_faaaa.shape[0])

    @property
    def head_size(self) -> int:
        return int(self.time_faaaa.shape[1])

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.time_faaaa.size),)

    def output_shape(self, in_shapes):
        n = int(self.time_faaaa.size)
        for port in self.input_ports:
            if int(np.prod(in_shapes[port])) != n:
                from spikecc.errors import ShapeError

                raise ShapeError(f"WKV6 port '{port}' receives shape {tuple(in_shapes[port])}, expected ({n},) "
                                 f"= {self.heads} heads x {self.head_size}")
        return self.natural_shape()


RWKV6_OPS = (Tanh, GroupNorm, WKV6)
