"""Value checks on a graph's parameters: what every command runs on a graph it reads, before any work.

- no complex parameters, no NaN anywhere;
- no infinite values, except in thresholds (an infinite threshold is a neuron that never fires: the
  lowered form of a readout);
- fields declared as arrays hold numbers, and Input/Output shapes are positive integers;
- time constants (tau, tau_mem, tau_syn) strictly positive: NIR's neurons integrate
  `tau dv/dt = ...`, and forward Euler with dt/tau <= 0 has no meaning.

Each problem is a GraphError that names the node, the field, how many values are bad and the first one.
"""

from __future__ import annotations

import dataclasses

import nir
import numpy as np

from spikecc.errors import GraphError
from spikecc.ir.graph import Graph

THRESHOLD_FIELDS = frozenset({"v_threshold", "v_threshold_hi", "v_threshold_lo", "vth", "vth_hi", "vth_lo",
                              "threshold"})
TIME_CONSTANTS = frozenset({"tau", "tau_mem", "tau_syn"})
SKIP = frozenset({"input_type", "output_type", "metadata"})


def _first(bad: np.ndarray) -> str:
    idx = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
    return f"at index {idx}" if idx else ""


def _declares_array(annotation) -> bool:
    return annotation is np.ndarray or "ndarray" in str(annotation) and "Dict" not in str(annotation)


def check_node_types(name: str, op: nir.NIRNode) -> None:
    """Fields the node type declares as arrays hold numbers (a file can hold a string anywhere), and an Input
    declares a shape of positive integers."""
    if dataclasses.is_dataclass(op):
        for f in dataclasses.fields(op):
            value = getattr(op, f.name, None)
            if value is None or not _declares_array(f.type):
                continue
            kind = np.asarray(value).dtype.kind if not isinstance(value, (str, bytes)) else "S"
            if kind not in "biuf":
                raise GraphError(f"node '{name}': {f.name} holds {type(value).__name__} data ({value!r:.40}), "
                                 f"expected numbers; the file is corrupt or was written wrongly")
    if isinstance(op, (nir.Input, nir.Output)):
        types = op.input_type if isinstance(op, nir.Input) else op.output_type
        shape = np.asarray(next(iter(types.values()), []) if isinstance(types, dict) else [])
        if shape.dtype.kind not in "iuf" or shape.size == 0 or np.any(shape < 1) or np.any(shape != np.rint(shape)):
            raise GraphError(f"node '{name}': {type(op).__name__} shape {shape.tolist()!r:.60} is not a list of "
                             "positive integers; give the shape of one step's data")


def check_node_values(name: str, op: nir.NIRNode) -> None:
    """Raise a GraphError naming `name` if one of its numeric parameters breaks the rules above."""
    check_node_types(name, op)
    for key, value in vars(op).items():
        if key in SKIP or isinstance(value, (str, bytes, dict)) or value is None:
            continue
        try:
            a = np.asarray(value)
        except (ValueError, TypeError):
            continue
        if a.dtype.kind == "c":
            raise GraphError(f"node '{name}': {key} is complex ({a.dtype}); spiking network parameters are real")
        if a.dtype.kind != "f":
            continue
        nan = np.isnan(a)
        if nan.any():
            raise GraphError(f"node '{name}': {key} holds {int(nan.sum())} NaN value(s) {_first(nan)}; the model "
                             "is corrupt or its training diverged: fix or re-export it")
        inf = np.isinf(a)
        if inf.any() and key not in THRESHOLD_FIELDS:
            raise GraphError(f"node '{name}': {key} holds {int(inf.sum())} infinite value(s) {_first(inf)}; give "
                             "finite values")
        if key in TIME_CONSTANTS:
            bad = a <= 0
            if bad.any():
                first = a[tuple(np.argwhere(bad)[0])] if a.ndim else a
                raise GraphError(f"node '{name}': {key} = {float(first):g} {_first(bad)} is not positive; time "
                                 "constants must be > 0")


def check_values(g: Graph) -> None:
    """`check_node_values` for every node of `g`."""
    for name, op in g.nodes.items():
        check_node_values(name, op)
