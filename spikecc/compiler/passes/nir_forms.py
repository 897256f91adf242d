"""Which NIR (and spikecc) ops the Loihi passes treat as what: synapse chains, spiking neurons, readouts."""

from __future__ import annotations

import nir
import numpy as np

from spikecc.errors import BackendError
from spikecc.ir.linear_maps import LINEAR_NIR_OPS
from spikecc.ir.ops import TernaryLIF

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, TernaryLIF, nir.Threshold)
READOUTS = (nir.LI, nir.CubaLI, nir.I)
NEURONS = SPIKING + READOUTS
LINEAR = (*LINEAR_NIR_OPS, nir.Scale, nir.Flatten)  # fused into one synapse matrix per (source, sink)

SUPPORTED = ("supported: Affine, Linear, Conv1d/2d, SumPool2d, AvgPool2d, Scale, Flatten, LIF, IF, CubaLIF, LI, "
             "CubaLI, I, Threshold, TernaryLIF; run the rest on the host or replace it")


def fail(node: str, what: str, todo: str) -> BackendError:
    """A BackendError in spikecc's format: the node, what is wrong, what to do."""
    return BackendError(f"node '{node}': {what}; {todo}")


def per_neuron(value, n: int) -> np.ndarray:
    """A parameter as a float64 array of n values (a single value broadcast)."""
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    return np.full(n, a[0]) if a.size == 1 else a.copy()
