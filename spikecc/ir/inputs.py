"""Binding user input arrays to a graph's Input nodes: one place for the checks every backend needs."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from spikecc.errors import InputFileError
from spikecc.ir.graph import Graph


def check_input_values(graph: Graph, name: str, a: np.ndarray) -> np.ndarray:
    """`a` (data for Input `name`) as a real array, or an InputFileError: complex, NaN and infinite values are
    refused, and so is anything but 0 and 1 for an Input that carries binary spikes."""
    a = np.asarray(a)
    if a.dtype.kind == "c":
        raise InputFileError(f"input for Input node '{name}' is complex ({a.dtype}); give real values")
    if a.dtype.kind not in "biuf":
        raise InputFileError(f"input for Input node '{name}' has dtype {a.dtype}; give a numeric array")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputFileError(f"input for Input node '{name}' holds {int(bad.sum())} NaN or infinite value(s), "
                                 f"the first at index {where} ({a[where]}); give finite values")
    if graph.annotation(name, "signal", {}).get("kind") == "binary":
        bad = (a != 0) & (a != 1)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputFileError(f"input for Input node '{name}' holds {a[where]} at index {where}, but the Input "
                                 "carries binary spikes (0 or 1); give spikes, or real values without "
                                 "--spike-inputs")
    return a


def bind_inputs(graph: Graph, shapes: Mapping[str, tuple[int, ...]], inputs: np.ndarray | Mapping[str, np.ndarray],
                steps: int | None, integer: bool | Collection[str] = False) -> tuple[dict[str, np.ndarray], int]:
    """({input name: (steps, size) array}, steps) for `inputs`: one array for a single-Input graph or a
    mapping by Input name, each shaped (steps, *input shape) (any shape with that many values per step).

    `integer`: the run takes integer payloads (fixed point) at every Input (True) or at the Inputs named:
    real values that are not whole numbers are an error rather than silently truncated. Raises InputFileError
    naming the Input and the expected shape.
    """
    names = graph.inputs()
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise InputFileError(f"the graph has {len(names)} Input nodes ({', '.join(names)}); "
                                 "pass one array per Input, by name")
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InputFileError(f"no data for Input node(s) {', '.join(missing)}")
    out = {}
    for n in names:
        a = check_input_values(graph, n, inputs[n])
        shape = tuple(shapes[n])
        size = int(np.prod(shape))
        if a.ndim < 1 or a.shape[0] == 0 or a[0].size != size:
            raise InputFileError(f"input for Input node '{n}' has shape {a.shape}, expected "
                                 f"(steps, {', '.join(map(str, shape))})")
        wants_int = integer if isinstance(integer, bool) else n in integer
        if wants_int and a.dtype.kind == "f" and not np.all(a == np.rint(a)):
            raise InputFileError(f"input for Input node '{n}' holds non-integer values, but a fixed-point run takes "
                                 "integer payloads (spikes 0/1 or graded integers); convert it with quantize_inputs")
        out[n] = a.reshape(a.shape[0], -1)
    t_avail = min(a.shape[0] for a in out.values())
    steps = t_avail if steps is None else int(steps)
    if steps < 1:
        raise InputFileError(f"a run needs at least one step, got {steps}")
    if steps > t_avail:
        raise InputFileError(f"asked for {steps} steps but the input array holds only {t_avail}; "
                             "pass a longer input or fewer steps")
    return {n: a[:steps] for n, a in out.items()}, steps
