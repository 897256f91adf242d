"""Building one ONNX graph (one host stage) node by node, with onnx.helper.

Values are named tensors. `StageBuilder.op` adds a node and returns the name of its output; `const` adds an
initializer (small constants are shared); `input` and `output` declare the graph's interface. Names are made in
the order nodes are added, so the same export gives the same bytes.

Opset 21 (ONNX 1.16+, onnxruntime 1.18+): ReduceMean/ReduceMax take their axes as an input (opset 18), Slice takes
steps, Gather accepts negative indices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
IR_VERSION = 10  # onnxruntime 1.18 reads IR 10
F64, I64, BOOL = TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL
DTYPE_NAMES = {F64: "float64", I64: "int64", BOOL: "bool"}
ONNX_DTYPES = {v: k for k, v in DTYPE_NAMES.items()}

Dim = int | str  # a fixed size, or the name of a size that changes from call to call


class StageBuilder:
    """The nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}
        self._input_names: set[str] = set()
        self._output_names: set[str] = set()

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}~{self._count}"

    # -- values ----------------------------------------------------------------------------------------------
    def const(self, value: Any, dtype: str = "float64", hint: str = "c") -> str:
        """An initializer holding `value` as `dtype`; small constants are shared within the graph."""
        a = np.array(value, dtype=dtype, order="C")  # (np.ascontiguousarray would make scalars 1-D)
        key = (a.dtype.str, a.shape, a.tobytes()) if a.size <= 16 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(a, name))
        if key is not None:
            self._consts[key] = name
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        """Add one node of `op_type`; returns its (single) output's name."""
        out = self.fresh(hint or op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def input(self, name: str, dtype: int, shape: list[Dim]) -> str:
        if name not in self._input_names:
            self._input_names.add(name)
            self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def has_input(self, name: str) -> bool:
        return name in self._input_names

    def output(self, value: str, name: str, dtype: int, shape: list[Dim]) -> None:
        """Expose `value` as the graph output `name` (an Identity gives it the public name)."""
        if name in self._output_names:
            return
        self._output_names.add(name)
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}~out"))
        self.outputs.append(helper.make_tensor_value_info(name, dtype, shape))

    # -- shorthands ------------------------------------------------------------------------------------------
    def reshape(self, x: str, shape: list[int] | tuple[int, ...]) -> str:
        return self.op("Reshape", x, self.const(list(shape), "int64", "shape"))

    def flat(self, x: str) -> str:
        return self.reshape(x, [-1])

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant (axes, shapes, Slice bounds)."""
        return self.const(list(values), "int64", "ints")

    def unsqueeze(self, x: str, *axes: int) -> str:
        return self.op("Unsqueeze", x, self.ints(*axes))

    def cast(self, x: str, dtype: int) -> str:
        return self.op("Cast", x, to=dtype)

    def scalar(self, value: float | int, dtype: str = "float64") -> str:
        return self.const(np.asarray(value, dtype=dtype), dtype, "k")

    # -- the model -------------------------------------------------------------------------------------------
    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="spikecc")
        model.ir_version = IR_VERSION
        return model

    def model_bytes(self) -> bytes:
        model = self.model()
        onnx.checker.check_model(model)
        return model.SerializeToString(deterministic=True)
