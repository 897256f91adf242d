"""The export registry: one function per op type (`@exports(OpType)`), as the CPU simulator's `@lowers`.

An export function receives the op and an `ExportContext` and returns the name of the tensor holding the node's
output at this graph step: a flat float64 vector of the node's size (as the simulator passes values between
kernels), or, for a HostToCore in fixed form, an int64 payload vector. Stateful ops declare their state with
`ctx.state(...)` (an input of the stage, its initial value kept in the program) and give its new value with
`ctx.set_state(...)`; ops that depend on the step read the graph-step counter through `ctx.step_mod(n)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from spikecc.backends.onnx.builder import I64, ONNX_DTYPES, Dim, StageBuilder
from spikecc.backends.onnx.program import STEP
from spikecc.errors import BackendError


@dataclass
class ExportContext:
    name: str  # the graph node
    b: StageBuilder  # the stage's graph under construction
    inputs: dict[str, str]  # port -> tensor (the sum of the edges into the port, in edge order)
    in_shapes: dict[str, tuple[int, ...]]
    out_shape: tuple[int, ...]
    fixed: bool  # the node's own number format is fixed point (HostToCore: integer payloads)
    dt: float
    state_specs: dict[str, tuple[np.ndarray, str, list[Dim]]] = field(default_factory=dict)  # key: init, dtype, shape
    state_updates: dict[str, str] = field(default_factory=dict)  # key -> tensor holding the new value
    notes: list[str] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)  # graph steps the op can run from the start
    _step_mods: dict[int, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(np.prod(self.out_shape)) if self.out_shape else 1

    def in_size(self, port: str = "input") -> int:
        return int(np.prod(self.in_shapes[port])) if self.in_shapes.get(port) else 1

    def x(self, port: str = "input") -> str:
        return self.inputs[port]

    # -- state -----------------------------------------------------------------------------------------------
    def state(self, var: str, initial: np.ndarray, shape: list[Dim] | None = None) -> str:
        """A state tensor of this node (input of the stage; `initial` is its value before the first step).
        `shape` names growing axes with strings (default: the initial value's shape)."""
        key = f"{self.name}/{var}"
        init = np.asarray(initial)
        dtype = "int64" if init.dtype.kind in "iu" else "float64"
        self.state_specs[key] = (init.astype(dtype), dtype, list(init.shape) if shape is None else shape)
        return self.b.input(key, ONNX_DTYPES[dtype], self.state_specs[key][2])

    def set_state(self, var: str, value: str) -> None:
        self.state_updates[f"{self.name}/{var}"] = value

    def step(self) -> str:
        """The graph-step counter (int64 scalar): 0 at the first step after `start`."""
        return self.b.input(STEP, I64, [])

    def step_mod(self, n: int) -> str:
        """step mod n (int64 scalar), e.g. SpikeLM's spike step t = step mod T."""
        if n not in self._step_mods:
            self._step_mods[n] = self.b.op("Mod", self.step(), self.b.scalar(int(n), "int64"), hint="t")
        return self._step_mods[n]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


Export = Callable[[Any, ExportContext], str]
EXPORTS: dict[type, Export] = {}


def exports(*op_types: type) -> Callable[[Export], Export]:
    """Register `fn` as the ONNX export of each op type."""

    def deco(fn: Export) -> Export:
        for t in op_types:
            EXPORTS[t] = fn
        return fn

    return deco


def export_node(op: nir.NIRNode, ctx: ExportContext) -> str:
    for cls in type(op).__mro__:
        if cls in EXPORTS:
            return EXPORTS[cls](op, ctx)
    raise BackendError(f"node '{ctx.name}': the ONNX host export has no rule for {type(op).__name__} "
                       f"(supported on the host: {', '.join(sorted(t.__name__ for t in EXPORTS))}); keep the op off "
                       "the host partition or add an export rule to spikecc.backends.onnx")


def unsupported(ctx: ExportContext, what: str, fix: str) -> BackendError:
    """A one-line error for a supported op type whose parameters the export cannot express."""
    return BackendError(f"node '{ctx.name}': {what}; {fix}")
