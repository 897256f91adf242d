"""Ops applied row by row: an op defined on vectors of n values (a linear layer, a neuron population) that receives
an input of shape (..., n) acts on each of its R = prod(...) rows independently, as torch applies a Linear to the
last axis. A transformer encoder presents a whole sequence of L token vectors at every step, so its linears,
neurons and spike routers see (L, n) inputs; the same op given n values in one flat vector is applied once.
"""

from __future__ import annotations

import numpy as np

Shape = tuple[int, ...]


def vector_rows(n: int, in_shape: Shape) -> int:
    """How many rows an op that acts on vectors of n values is applied to: 1 when it takes the whole (flattened)
    input, as NIR defines it; R when the input is (..., n) with R = prod(...) rows, as torch applies a Linear to
    the last axis (a sequence of token vectors in a transformer encoder). 0 when neither fits."""
    if int(np.prod(in_shape)) == n:
        return 1
    if len(in_shape) >= 2 and int(in_shape[-1]) == n:
        return int(np.prod(in_shape[:-1]))
    return 0


def rows_shape(n_out: int, n_in: int, in_shape: Shape) -> Shape | None:
    """The output shape of an op that maps vectors of n_in values to n_out values, applied to `in_shape`
    (`vector_rows`): (n_out,) for one flattened input, (..., n_out) row by row; None when neither fits."""
    rows = vector_rows(n_in, in_shape)
    if rows == 0:
        return None
    return (int(n_out),) if int(np.prod(in_shape)) == n_in else (*in_shape[:-1], int(n_out))
