"""Every linear NIR op as one (sparse) matrix over flattened vectors.

Affine, Linear, Conv1d, Conv2d, SumPool2d and AvgPool2d all compute y = M x + b on the flattened input.
Writing them as a sparse M lets one event-driven gather serve them all in the simulator (each input spike
touches its column of M), gives the Lava backend a Dense/Sparse weight matrix, and gives the mapper exact
synapse counts per layer.
"""

from __future__ import annotations

import nir
import numpy as np
import scipy.sparse as sp

from spikecc.ir.infer import conv_input_view

Shape = tuple[int, ...]


def _pair(v, nd: int) -> tuple[int, ...]:
    return tuple(int(x) for x in np.broadcast_to(np.asarray(v).reshape(-1), (nd,)))


def conv_matrix(weight: np.ndarray, in_shape: Shape, stride, padding, dilation, groups: int) -> sp.csr_matrix:
    """M such that M @ x.ravel() equals a torch-style convolution (cross-correlation) of x, raveled.

    y[co, o] = sum_{ci in group(co), k} W[co, ci, k] * x[g*Ci_g + ci, o*stride - pad + k*dilation]
    (zero outside the input). Works for 1-d (weight (Co, Ci/g, K)) and 2-d (weight (Co, Ci/g, Kh, Kw)).
    """
    weight = np.asarray(weight)
    nd = weight.ndim - 2
    co_n, ci_g = weight.shape[:2]
    kernel = weight.shape[2:]
    ci_n, spatial = in_shape[0], tuple(in_shape[1:])
    stride, dilation = _pair(stride, nd), _pair(dilation, nd)
    if isinstance(padding, (str, bytes)):
        padding = padding.decode() if isinstance(padding, bytes) else padding
        if padding == "same":
            pad = tuple((dilation[i] * (kernel[i] - 1)) // 2 for i in range(nd))
        else:
            pad = (0,) * nd
    else:
        pad = _pair(padding, nd)
    out_sp = tuple((spatial[i] + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                   for i in range(nd))
    co_per_g = co_n // int(groups)
    # Index grids over (co, ci_local, k..., o...)
    grids = np.meshgrid(np.arange(co_n), np.arange(ci_g), *[np.arange(k) for k in kernel],
                        *[np.arange(o) for o in out_sp], indexing="ij")
    co, ci_l = grids[0], grids[1]
    ks, os_ = grids[2:2 + nd], grids[2 + nd:]
    ci = (co // co_per_g) * ci_g + ci_l
    pos = [os_[i] * stride[i] - pad[i] + ks[i] * dilation[i] for i in range(nd)]
    valid = np.ones(co.shape, dtype=bool)
    for i in range(nd):
        valid &= (pos[i] >= 0) & (pos[i] < spatial[i])
    w = weight[(co, ci_l, *ks)]
    valid &= w != 0
    rows = np.ravel_multi_index((co[valid], *[o[valid] for o in os_]), (co_n, *out_sp))
    cols = np.ravel_multi_index((ci[valid], *[p[valid] for p in pos]), (ci_n, *spatial))
    n_out, n_in = co_n * int(np.prod(out_sp)), ci_n * int(np.prod(spatial))
    return sp.csr_matrix((w[valid].astype(np.float64), (rows, cols)), shape=(n_out, n_in))


def pool_matrix(in_shape: Shape, kernel_size, stride, padding, average: bool) -> sp.csr_matrix:
    """Sum (or average) pooling per channel as a matrix; the average divides by the full kernel area."""
    c, h, w = in_shape[-3:]
    k = _pair(kernel_size, 2)
    weight = np.zeros((c, 1, *k))
    weight[:] = 1.0 / (k[0] * k[1]) if average else 1.0
    return conv_matrix(weight, (c, h, w), stride, padding, 1, groups=c)


def as_matrix(op: nir.NIRNode, in_shape: Shape) -> tuple[sp.csr_matrix, np.ndarray | None]:
    """(M, bias) for a linear op fed a flattened input of `in_shape`; bias is None where the op has none
    and is flattened to M's row count otherwise. Convolutions and pools read `in_shape` as shape inference
    does (spikecc.ir.infer.conv_input_view: batch axes of size 1 skipped)."""
    if isinstance(op, (nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)):
        in_shape = conv_input_view(op, in_shape) or in_shape
    if isinstance(op, (nir.Affine, nir.Linear)):
        m = sp.csr_matrix(np.asarray(op.weight, dtype=np.float64).reshape(op.weight.shape[0], -1))
        bias = np.asarray(op.bias, dtype=np.float64).reshape(-1) if isinstance(op, nir.Affine) else None
        return m, bias
    if isinstance(op, (nir.Conv1d, nir.Conv2d)):
        m = conv_matrix(op.weight, in_shape, op.stride, op.padding, op.dilation, int(op.groups))
        bias = np.asarray(op.bias, dtype=np.float64).reshape(-1)
        if bias.size == 1 and op.weight.shape[0] != 1 and not np.any(bias):
            return m, None
        per_out = m.shape[0] // op.weight.shape[0]
        return m, np.repeat(np.broadcast_to(bias, (op.weight.shape[0],)), per_out)
    if isinstance(op, (nir.SumPool2d, nir.AvgPool2d)):
        return pool_matrix(in_shape, op.kernel_size, op.stride, op.padding, isinstance(op, nir.AvgPool2d)), None
    raise TypeError(f"{type(op).__name__} is not a linear op")


LINEAR_NIR_OPS = (nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)
