"""Kernel protocol and the lowering registry of the CPU simulator.

A kernel is what one graph node becomes in the simulator (nengo's builder pattern: one function per op
type, found by `@lowers(OpType)`). Values between kernels are flattened float (or, in fixed point,
int64) vectors of the node's size; time is the leading axis of whole-run arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import nir
import numpy as np

from spikecc.errors import BackendError
from spikecc.ir.signals import Signal

Shape = tuple[int, ...]


@dataclass
class BuildContext:
    """What a lowering function may know about its node besides the op itself."""

    name: str
    in_shapes: dict[str, Shape]
    out_shape: Shape
    in_signals: dict[str, Signal]
    dt: float
    mode: str  # "float" or "fixed"
    dtype: np.dtype
    annotations: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(np.prod(self.out_shape)) if self.out_shape else 1

    def in_size(self, port: str = "input") -> int:
        return int(np.prod(self.in_shapes[port])) if self.in_shapes.get(port) else 1


class Kernel:
    """One node's computation. `step` maps this step's inputs (one flat vector per port) to the output;
    `run` does all steps at once for nodes outside loops (the default loops over `step`).

    `state_names` lists the state variables that can be recorded (e.g. "v"); `synops` counts synaptic
    operations (one per non-zero input times its fan-out), which budgets and energy estimates use.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.synops = 0
        # (events, negative events) of the last `run`, where the kernel counted them on the way (saves the
        # simulator a pass over the output); None: the simulator counts.
        self.counted: tuple[int, int] | None = None

    def reset(self) -> None:
        self.synops = 0
        self.counted = None

    def step(self, x: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {n: np.array(getattr(self, n), copy=True) for n in self.state_names}

    def rest_output(self) -> np.ndarray | None:
        """The output before step 0, which a delayed edge delivers at step 0 (None: zeros). A synapse's is
        its bias: its output for the all-zero input of a network at rest (snntorch's RLeaky adds the
        recurrent Linear's bias at step 0 too)."""
        return None

    def run(self, xs: dict[str, np.ndarray], steps: int, record: bool) -> tuple[np.ndarray, dict]:
        outs, states = [], {n: [] for n in self.state_names} if record else {}
        for t in range(steps):
            outs.append(self.step({p: v[t] for p, v in xs.items()}))
            if record:
                for n, v in self.state().items():
                    states[n].append(v)
        out = np.stack(outs) if outs else np.zeros((0,))
        return out, {n: np.stack(v) for n, v in states.items()}


Lowering = Callable[[nir.NIRNode, BuildContext], Kernel]
LOWERINGS: dict[type, Lowering] = {}


def lowers(*op_types: type) -> Callable[[Lowering], Lowering]:
    """Register `fn` as the CPU lowering of each op type (one function per (backend, op))."""

    def deco(fn: Lowering) -> Lowering:
        for t in op_types:
            LOWERINGS[t] = fn
        return fn

    return deco


def build_kernel(op: nir.NIRNode, ctx: BuildContext) -> Kernel:
    for cls in type(op).__mro__:
        if cls in LOWERINGS:
            return LOWERINGS[cls](op, ctx)
    raise BackendError(f"node '{ctx.name}': the CPU simulator has no lowering for {type(op).__name__}; "
                       "supported: " + ", ".join(sorted(t.__name__ for t in LOWERINGS)))


def per_neuron(value, size: int, dtype=np.float64) -> np.ndarray:
    """A parameter broadcast to one value per neuron (NIR allows scalars; issue 176)."""
    a = np.asarray(value, dtype=dtype).reshape(-1)
    if a.size == 1:
        return np.full(size, a[0], dtype=dtype)
    if a.size != size:
        raise BackendError(f"parameter with {a.size} values for a layer of {size} neurons")
    return a.copy()


def require_float(ctx: BuildContext, op: nir.NIRNode) -> None:
    if ctx.mode != "float":
        raise BackendError(
            f"node '{ctx.name}': {type(op).__name__} is a continuous-time NIR op with float parameters; "
            "fixed-point simulation needs the graph lowered and quantized for Loihi first "
            "(spikecc.compiler.pipeline.lower_for_loihi, or --fixed-point in the CLI, does it)")
