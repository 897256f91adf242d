"""Extension ops: node types NIR lacks, defined the NIR way (one dataclass each, equation in the docstring).

An extension op subclasses `nir.NIRNode`, so a graph holding one is still written by `nir.write` into the
ordinary NIR HDF5 layout, under the type name `spikecc.<Name>`. `nir.read` does not know such names;
`spikecc.ir.read` does, through the registry filled by `@register_op`.

Ports: an op with several inputs lists them in `input_ports`; edges address them as `"<node>.<port>"`,
the way NIR addresses the named Input nodes of a sub-graph. Single-input ops use the port `"input"`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import nir
import numpy as np

from spikecc.ir.signals import REAL, Signal, ternary

OP_REGISTRY: dict[str, type[ExtensionOp]] = {}


def register_op(cls: type[ExtensionOp]) -> type[ExtensionOp]:
    """Class decorator: make `cls` readable from NIR files under the type name `spikecc.<ClassName>`."""
    cls.type_name = f"spikecc.{cls.__name__}"
    OP_REGISTRY[cls.type_name] = cls
    return cls


def _coerce(value: Any, annotation: str) -> Any:
    """Turn a value read back from HDF5 (numpy scalar, bytes, array) into the field's declared type."""
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if annotation == "int":
        return int(value)
    if annotation == "float":
        return float(value)
    if annotation == "bool":
        return bool(value)
    if annotation == "str":
        return str(value)
    if annotation.startswith("tuple"):
        return tuple(int(v) for v in np.atleast_1d(value))
    if annotation == "np.ndarray":
        return np.asarray(value)
    return value


@dataclass(eq=False)
class ExtensionOp(nir.NIRNode):
    """Base of spikecc's own node types.

    Subclasses declare their parameters as dataclass fields (numpy arrays, ints, floats, strings, tuples)
    and implement `output_shape` and, where the output is not a real value, `output_signal`.
    """

    type_name: ClassVar[str] = "spikecc.ExtensionOp"
    input_ports: ClassVar[tuple[str, ...]] = ("input",)
    # True for ops with state carried between steps (neurons, recurrences): in a cycle, the edges that
    # leave them carry the previous step's value, which is how a recurrent NIR graph is meant to run.
    stateful: ClassVar[bool] = False
    # 1 for ops whose output reaches consumers one step late on every edge (Loihi 2 synapses).
    output_delay: ClassVar[int] = 0

    def __post_init__(self) -> None:
        shape = self.natural_shape()
        self.input_type = {p: np.asarray(shape if shape is not None else []) for p in self.input_ports}
        self.output_type = {"output": np.asarray(shape if shape is not None else [])}

    # -- semantics hooks -------------------------------------------------------------------------
    def natural_shape(self) -> tuple[int, ...] | None:
        """The shape the parameters imply (for NIR's input_type/output_type), or None if unknown."""
        return None

    def output_shape(self, in_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """Output shape given the shape arriving at each input port (default: elementwise)."""
        return in_shapes[self.input_ports[0]]

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return REAL

    # -- serialization ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["type"] = self.type_name
        return out

    @classmethod
    def from_dict(cls, kwargs: dict[str, Any]) -> ExtensionOp:
        kwargs = dict(kwargs)
        kwargs.pop("type", None)
        metadata = kwargs.pop("metadata", {}) or {}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name != "metadata"}
        unknown = sorted(set(kwargs) - set(fields) - {"input_type", "output_type"})
        if unknown:
            raise ValueError(f"unexpected field(s) {unknown} for {cls.type_name}")
        values = {k: _coerce(kwargs[k], str(f.type)) for k, f in fields.items() if k in kwargs}
        return cls(**values, metadata=dict(metadata))


@register_op
@dataclass(eq=False)
class TernaryLIF(ExtensionOp):
    """Leaky integrate-and-fire neuron with ternary output spikes {-a, 0, +a}.

    Continuous time, like NIR's LIF (`tau dv/dt = (v_leak - v) + r I`); discretised with step dt:

        v[t] = v[t-1] + dt/tau * (v_leak - v[t-1] + r * I[t])
        s[t] = +a if v[t] > v_threshold_hi,  -a if v[t] < v_threshold_lo,  else 0
        v[t] = v_reset where s[t] != 0

    This is the neuron behind SpikeLM's elastic bi-spiking (amplitude a, thresholds at +-a or +-a/2) and,
    with a = 1, Lava's `TernaryLIF` process. Parameters are per neuron (arrays of the layer's shape).
    """

    tau: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    v_threshold_hi: np.ndarray
    v_threshold_lo: np.ndarray
    v_reset: np.ndarray
    amplitude: float = 1.0

    stateful: ClassVar[bool] = True

    def natural_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.tau))

    def output_shape(self, in_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return self.natural_shape()

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return ternary(self.amplitude)


# NIR ops whose output depends on earlier steps: they break cycles (see Graph.schedule).
STATEFUL_NIR_OPS = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.I, nir.CubaLI, nir.Delay)


def is_stateful(op: nir.NIRNode) -> bool:
    return isinstance(op, STATEFUL_NIR_OPS) or (isinstance(op, ExtensionOp) and op.stateful)


def output_delay(op: nir.NIRNode) -> int:
    return op.output_delay if isinstance(op, ExtensionOp) else 0
