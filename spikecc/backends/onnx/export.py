"""`export_host_program(graph)`: the host partition of a lowered language model as ONNX stages (a `HostProgram`).

Input: a graph after the LM passes (partition ... message-widths), optionally quantized (quantize_lm). Each host
stage (spikecc.backends.onnx.stages) becomes one ONNX model; each host node one or a few ONNX nodes, by the export
function registered for its op type (`@exports`); the interface of every stage is recorded as `TensorSpec`s
(spikecc.backends.onnx.program). The form follows the graph: "fixed" for a quantized graph (HostToCore sends
integer payloads, the cores' messages arrive as integers), "float" otherwise; `mode="float"` exports a quantized
graph's host part in float form, as the simulator's float mode runs it.
"""

from __future__ import annotations

import nir
import numpy as np

# importing the op modules registers their export functions
from spikecc.backends.onnx import boundary_ops, lm_ops, nir_ops, rwkv6_ops, spikelm_ops, spikerwkv_ops  # noqa: F401
from spikecc.backends.onnx.builder import F64, I64, ONNX_DTYPES, StageBuilder
from spikecc.backends.onnx.program import NEXT, STEP, CorePhase, HostProgram, Stage, TensorSpec
from spikecc.backends.onnx.registry import ExportContext, export_node
from spikecc.backends.onnx.stages import CORE, HOST, StagePlan, plan_stages
from spikecc.errors import BackendError
from spikecc.ir.formats import is_fixed, is_fixed_node
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes
from spikecc.ir.neurocore_ops import HostToCore

METADATA_KEYS = ("family", "substeps", "vocab", "context", "T", "step", "vocab_size")


def export_host_program(graph: Graph, mode: str | None = None) -> HostProgram:
    """The host partition of `graph` as a HostProgram (module docstring)."""
    quantized = is_fixed(graph)
    form = mode or ("fixed" if quantized else "float")
    if form not in ("float", "fixed"):
        raise ValueError(f"mode must be 'float' or 'fixed', not {form!r}")
    if form == "fixed" and not quantized:
        raise BackendError("the graph is not quantized, so it has no fixed form; run quantize_lm (the LM compile "
                           "with its calibration) first, or export the float form")
    shapes = infer_shapes(graph)
    plan = plan_stages(graph)
    state: dict[str, np.ndarray] = {STEP: np.array(0, dtype=np.int64)}
    notes: list[str] = []
    limits: list[int] = []
    stages = [_export_stage(graph, plan, k, shapes, form, state, notes, limits) for k in range(len(plan.host))]
    phases = []
    for k in range(len(plan.core)):
        needs = [_core_spec(graph, n, shapes, form) for n in plan.core_needs(graph, k)]
        produces = [_core_spec(graph, n, shapes, form) for n in plan.core_produces(graph, k)]
        phases.append(CorePhase(index=k, needs=needs, produces=produces, nodes=list(plan.core[k])))
    inputs = [TensorSpec(n, "float64", (_size(shapes, n),), "input") for n in graph.inputs()]
    outputs = [TensorSpec(n, "float64", (_size(shapes, n),), "output") for n in graph.outputs()]
    meta = {k: graph.metadata[k] for k in METADATA_KEYS if k in graph.metadata}
    return HostProgram(stages=stages, core_phases=phases, state=state, inputs=inputs, outputs=outputs, form=form,
                       max_steps=min(limits) if limits else None, metadata=meta, notes=notes)


def _size(shapes: dict, name: str) -> int:
    return int(np.prod(shapes[name])) if shapes[name] else 1


def _core_spec(g: Graph, name: str, shapes: dict, form: str) -> TensorSpec:
    """A value crossing between host and cores: integers in fixed form (payloads, core messages), else float64."""
    integer = form == "fixed" and (is_fixed_node(g, name) or g.annotation(name, "format") is None)
    return TensorSpec(name, "int64" if integer else "float64", (_size(shapes, name),), "core")


def _export_stage(g: Graph, plan: StagePlan, k: int, shapes: dict, form: str, state: dict[str, np.ndarray],
                  notes: list[str], limits: list[int]) -> Stage:
    b = StageBuilder(f"host_stage_{k}")
    last = k == len(plan.host) - 1
    tensors: dict[str, str] = {}
    ins: list[TensorSpec] = []
    outs: list[TensorSpec] = []

    def value(src: str) -> str:
        """The tensor of `src` in this stage: computed here, or an input (a core message, an earlier stage's)."""
        if src not in tensors:
            if plan.where[src] == CORE:
                spec = _core_spec(g, src, shapes, form)
            elif plan.level[src] < k:
                spec = TensorSpec(src, "float64", (_size(shapes, src),), "carry")
            else:
                raise BackendError(f"node '{src}' is used before it is computed in host stage {k}")
            ins.append(spec)
            tensors[src] = b.input(src, ONNX_DTYPES[spec.dtype], list(spec.shape))
        return tensors[src]

    for name in plan.host[k]:
        op = g.nodes[name]
        ports: dict[str, str] = {}
        for e in g.in_edges(name):  # several edges into one port are summed, in edge order (NIR's rule)
            v = value(e.src)
            ports[e.port] = v if e.port not in ports else b.op("Add", ports[e.port], v)
        in_shapes: dict[str, tuple[int, ...]] = {}
        for e in g.in_edges(name):
            if e.port not in in_shapes or len(shapes[e.src]) > len(in_shapes[e.port]):
                in_shapes[e.port] = shapes[e.src]
        ctx = ExportContext(name=name, b=b, inputs=ports, in_shapes=in_shapes, out_shape=tuple(shapes[name]),
                            fixed=form == "fixed" and is_fixed_node(g, name), dt=g.dt)
        tensors[name] = export_node(op, ctx)
        if isinstance(op, nir.Input):
            ins.append(TensorSpec(name, "float64", (_size(shapes, name),), "input"))
        for key, (init, dtype, shape) in ctx.state_specs.items():
            state[key] = init
            ins.append(TensorSpec(key, dtype, tuple(shape), "state"))
            new = ctx.state_updates.get(key)
            if new is None:
                raise BackendError(f"node '{name}': its export declares state '{key}' but gives no new value")
            b.output(new, key + NEXT, ONNX_DTYPES[dtype], shape)
            outs.append(TensorSpec(key + NEXT, dtype, tuple(shape), "state"))
        notes.extend(n for n in ctx.notes if n not in notes)
        limits.extend(ctx.limits)
    for name in plan.host[k]:
        op = g.nodes[name]
        size = _size(shapes, name)
        if isinstance(op, HostToCore):
            spec = TensorSpec(name, "int64" if form == "fixed" else "float64", (size,), "core")
            b.output(tensors[name], name, ONNX_DTYPES[spec.dtype], [size])
            outs.append(spec)
            continue
        if isinstance(op, nir.Output):
            b.output(tensors[name], name, F64, [size])
            outs.append(TensorSpec(name, "float64", (size,), "output"))
        if any(plan.where[e.dst] == HOST and plan.level[e.dst] > k for e in g.out_edges(name)):
            b.output(tensors[name], name, F64, [size])
            outs.append(TensorSpec(name, "float64", (size,), "carry"))
    if last:  # the graph-step counter advances once per step, after the last stage
        b.output(b.op("Add", b.input(STEP, I64, []), b.scalar(1, "int64")), STEP + NEXT, I64, [])
        outs.append(TensorSpec(STEP + NEXT, "int64", (), "state"))
    if b.has_input(STEP):
        ins.append(TensorSpec(STEP, "int64", (), "state"))
    return Stage(index=k, model=b.model_bytes(), inputs=ins, outputs=outs, nodes=list(plan.host[k]))

