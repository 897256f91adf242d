"""Shape and signal-type inference, and graph validation with errors that name the node.

Shapes exclude the batch and time axes (NIR's convention). Rules live in one table per question, keyed by
op type; extension ops answer for themselves (`ExtensionOp.output_shape` / `output_signal`).
"""

from __future__ import annotations

from collections.abc import Callable

import nir
import numpy as np

from spikecc.errors import GraphError, ShapeError, SpikeccError, UnknownOpError
from spikecc.ir.graph import Graph
from spikecc.ir.ops import ExtensionOp, TernaryLIF
from spikecc.ir.rows import rows_shape, vector_rows
from spikecc.ir.signals import BINARY, REAL, Signal

Shape = tuple[int, ...]


def _shape(x) -> Shape | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype == object or a.size == 0:
        return None
    return tuple(int(v) for v in a.reshape(-1))


def _param_shape(*arrays) -> Shape:
    return max((tuple(np.shape(a)) for a in arrays), key=len)


# Spatial axes read by each convolution-like op; its input is (C, *spatial).
SPATIAL_RANK: dict[type, int] = {nir.Conv1d: 1, nir.Conv2d: 2, nir.SumPool2d: 2, nir.AvgPool2d: 2}


def conv_input_view(op: nir.NIRNode, in_shape: Shape) -> Shape | None:
    """The (C, *spatial) layout in which a Conv1d/Conv2d/SumPool2d/AvgPool2d reads an input arriving as
    `in_shape`, or None when it cannot be read that way.

    NIR shapes carry no batch axis (neuroir.org/docs, "Input"), but some exporters keep torch's batch
    axis of size 1 in the Input type (norse 1.1.0 writes a conv network's input as [1, C, H, W]). Leading
    axes of size 1 beyond the op's rank are read as such batch axes and skipped. A flat input (a Linear's
    output summed into a conv) is read in the layout of the conv's own input_shape.
    """
    nd = SPATIAL_RANK[type(op)]
    s = tuple(int(v) for v in in_shape)
    while len(s) > nd + 1 and s[0] == 1:
        s = s[1:]
    if len(s) == nd + 1:
        return s
    declared = getattr(op, "input_shape", None)
    if len(s) == 1 and declared is not None and isinstance(op, (nir.Conv1d, nir.Conv2d)):
        spatial = tuple(int(v) for v in np.atleast_1d(declared))
        channels = int(op.weight.shape[1]) * int(op.groups)
        if len(spatial) == nd and channels * int(np.prod(spatial)) == int(np.prod(s)):
            return (channels, *spatial)
    return None


def _conv_view(name: str, op: nir.NIRNode, in_shape: Shape) -> Shape:
    nd = SPATIAL_RANK[type(op)]
    view = conv_input_view(op, in_shape)
    if view is None:
        raise ShapeError(f"node '{name}': {type(op).__name__} reads a (channels, {nd} spatial axes) input but "
                         f"receives shape {tuple(in_shape)}; give the layer that feeds it that layout")
    if isinstance(op, (nir.Conv1d, nir.Conv2d)) and view[0] != int(op.weight.shape[1]) * int(op.groups):
        channels = int(op.weight.shape[1]) * int(op.groups)
        raise ShapeError(f"node '{name}': {type(op).__name__} weight {tuple(op.weight.shape)} with groups="
                         f"{int(op.groups)} takes {channels} input channels but receives {view[0]} (input shape "
                         f"{tuple(in_shape)}); fix the weight or the layer that feeds it")
    return view


def _conv_out(name: str, op: nir.Conv1d | nir.Conv2d, in_shape: Shape) -> Shape:
    view = _conv_view(name, op, in_shape)
    nd = op.weight.ndim - 2
    spatial = view[1:]
    stride, dilation = np.broadcast_to(op.stride, (nd,)), np.broadcast_to(op.dilation, (nd,))
    kernel = op.weight.shape[2:]
    if isinstance(op.padding, str):
        if op.padding == "same":
            return (op.weight.shape[0], *spatial)
        pad = np.zeros(nd, dtype=int)
    else:
        pad = np.broadcast_to(op.padding, (nd,))
    out = [(spatial[i] + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    return (int(op.weight.shape[0]), *(int(o) for o in out))


def _pool_out(name: str, op: nir.SumPool2d | nir.AvgPool2d, in_shape: Shape) -> Shape:
    k = np.broadcast_to(op.kernel_size, (2,))
    s = np.broadcast_to(op.stride, (2,))
    p = np.broadcast_to(op.padding, (2,))
    c, h, w = _conv_view(name, op, in_shape)
    return (c, int((h + 2 * p[0] - k[0]) // s[0] + 1), int((w + 2 * p[1] - k[1]) // s[1] + 1))


def _flatten_out(op: nir.Flatten, in_shape: Shape) -> Shape:
    """NIR's Flatten: axes start_dim..end_dim (counted without the batch axis) become one."""
    if not in_shape:
        return in_shape
    start, end = int(op.start_dim) % len(in_shape), int(op.end_dim) % len(in_shape)
    return (*in_shape[:start], int(np.prod(in_shape[start:end + 1])), *in_shape[end + 1:])


def _check_elementwise(name: str, what: str, params: Shape, in_shape: Shape) -> Shape:
    if params and int(np.prod(params)) != int(np.prod(in_shape)) and int(np.prod(params)) != 1:
        raise ShapeError(f"node '{name}': {what} parameters have shape {params} but its input has shape "
                         f"{in_shape}; make the layer size match the layer that feeds it")
    return params if params and int(np.prod(params)) != 1 else in_shape


def linear_rows(op: nir.Affine | nir.Linear, in_shape: Shape) -> int:
    """How many rows an Affine/Linear is applied to (`vector_rows` of its input width)."""
    return vector_rows(int(op.weight.shape[-1]), in_shape)


def _linear_out(name: str, op: nir.Affine | nir.Linear, in_shape: Shape) -> Shape:
    n_out, n_in = op.weight.shape[0], op.weight.shape[-1]
    out = rows_shape(n_out, n_in, in_shape)
    if out is None:
        raise ShapeError(f"node '{name}': weight has {n_in} inputs (shape {tuple(op.weight.shape)}) but "
                         f"receives shape {in_shape}; fix the weight or the layer that feeds it")
    return out


# (name, op, input shape) -> output shape
SHAPE_RULES: dict[type, Callable[[str, nir.NIRNode, Shape], Shape]] = {
    nir.Output: lambda n, op, s: s,
    nir.Affine: _linear_out,
    nir.Linear: _linear_out,
    nir.Scale: lambda n, op, s: _check_elementwise(n, "Scale", tuple(np.shape(op.scale)), s),
    nir.Threshold: lambda n, op, s: _check_elementwise(n, "Threshold", tuple(np.shape(op.threshold)), s),
    nir.IF: lambda n, op, s: _check_elementwise(n, "IF", _param_shape(op.r, op.v_threshold), s),
    nir.I: lambda n, op, s: _check_elementwise(n, "I", tuple(np.shape(op.r)), s),
    nir.LI: lambda n, op, s: _check_elementwise(n, "LI", _param_shape(op.tau, op.r, op.v_leak), s),
    nir.LIF: lambda n, op, s: _check_elementwise(n, "LIF", _param_shape(op.tau, op.r, op.v_threshold), s),
    nir.CubaLI: lambda n, op, s: _check_elementwise(n, "CubaLI", _param_shape(op.tau_mem, op.tau_syn), s),
    nir.CubaLIF: lambda n, op, s: _check_elementwise(
        n, "CubaLIF", _param_shape(op.tau_mem, op.tau_syn, op.v_threshold), s),
    nir.Delay: lambda n, op, s: s,
    nir.Flatten: lambda n, op, s: _flatten_out(op, s),
    nir.Conv1d: _conv_out,
    nir.Conv2d: _conv_out,
    nir.SumPool2d: _pool_out,
    nir.AvgPool2d: _pool_out,
}

SPIKING_NIR_OPS = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)
# Ops through which the signal kind passes unchanged (they move or delay values, never mix them).
TRANSPARENT_NIR_OPS = (nir.Output, nir.Delay, nir.Flatten)


def infer_shapes(g: Graph) -> dict[str, Shape]:
    """Output shape of every node. Raises ShapeError / GraphError naming the offending node."""
    check_structure(g)
    order, feedback = g.schedule()
    fb = set(feedback)
    shapes: dict[str, Shape] = {}
    for _ in range(2):  # second sweep resolves shapes that arrive over feedback edges
        for name in order:
            op = g.nodes[name]
            if isinstance(op, nir.Input):
                s = _shape(op.input_type.get("input"))
                if s is None:
                    raise ShapeError(f"node '{name}': Input has no shape; set input_type={{'input': shape}}")
                shapes[name] = s
                continue
            in_shapes: dict[str, Shape] = {}
            for e in g.in_edges(name):
                if e.src not in shapes:
                    if e in fb:
                        continue
                    raise GraphError(f"node '{name}': input from '{e.src}' has no shape yet")
                prev = in_shapes.get(e.port)
                s = shapes[e.src]
                if prev is not None and int(np.prod(prev)) != int(np.prod(s)):
                    raise ShapeError(f"node '{name}': inputs summed into port '{e.port}' have shapes {prev} and "
                                     f"{s} (from '{e.src}'); summed inputs must have the same size")
                if prev is None or len(s) > len(prev):  # keep the most structured of equal-size shapes
                    in_shapes[e.port] = s
            out = _output_shape(name, op, in_shapes)
            if out is not None:
                shapes[name] = out
    return shapes


def _output_shape(name: str, op: nir.NIRNode, in_shapes: dict[str, Shape]) -> Shape | None:
    if isinstance(op, ExtensionOp):
        missing = [p for p in op.input_ports if p not in in_shapes]
        if missing:
            natural = op.natural_shape()
            return natural  # fed only over feedback edges so far
        return tuple(int(v) for v in op.output_shape(in_shapes))
    rule = SHAPE_RULES.get(type(op))
    if rule is None:
        raise UnknownOpError(f"node '{name}': op type {type(op).__name__} has no shape rule")
    if "input" not in in_shapes:
        return _natural_nir_shape(op)
    return tuple(int(v) for v in rule(name, op, in_shapes["input"]))


def _natural_nir_shape(op: nir.NIRNode) -> Shape | None:
    if isinstance(op, (nir.Affine, nir.Linear)):
        return (int(op.weight.shape[0]),)
    s = _shape(op.output_type.get("output")) if getattr(op, "output_type", None) else None
    return s


def infer_signals(g: Graph) -> dict[str, Signal]:
    """Signal kind of every node's output: spiking neurons emit spikes, synapses and hosts emit reals."""
    order, _ = g.schedule()
    signals: dict[str, Signal] = {}
    for name in order:
        op = g.nodes[name]
        ins = {e.port: signals.get(e.src, REAL) for e in g.in_edges(name)}
        if isinstance(op, ExtensionOp):
            signals[name] = op.output_signal(ins)
        elif isinstance(op, SPIKING_NIR_OPS):
            signals[name] = BINARY
        elif isinstance(op, nir.Input):
            signals[name] = Signal(**g.annotation(name, "signal", {"kind": "real"}))
        elif isinstance(op, TRANSPARENT_NIR_OPS):
            signals[name] = ins.get("input", REAL)
        else:
            signals[name] = REAL
    return signals


def check_structure(g: Graph) -> None:
    """Edges name existing nodes and ports; inputs have no producers; every non-Input node has one."""
    for e in g.edges:
        if e.src not in g.nodes:
            raise GraphError(f"edge {e}: source node '{e.src}' does not exist")
        if e.dst not in g.nodes:
            raise GraphError(f"edge {e}: target node '{e.dst}' does not exist")
        dst = g.nodes[e.dst]
        ports = dst.input_ports if isinstance(dst, ExtensionOp) else ("input",)
        if e.port not in ports:
            raise GraphError(f"edge {e}: node '{e.dst}' has no input port '{e.port}' (ports: {', '.join(ports)})")
        if isinstance(dst, nir.Input):
            raise GraphError(f"edge {e}: node '{e.dst}' is an Input and cannot receive edges")
    if not g.inputs():
        raise GraphError("graph has no Input node; add one so the simulator knows where data enters")
    if not g.outputs():
        raise GraphError("graph has no Output node; add one so results can be read")
    for name, op in g.nodes.items():
        if isinstance(op, nir.Input):
            continue
        ports = op.input_ports if isinstance(op, ExtensionOp) else ("input",)
        fed = {e.port for e in g.in_edges(name)}
        missing = [p for p in ports if p not in fed]
        if missing:
            raise GraphError(f"node '{name}' ({type(op).__name__}) has nothing connected to port(s) "
                             f"{', '.join(missing)}; connect it or remove the node")


def validate(g: Graph) -> dict[str, Shape]:
    """Structure and shapes; returns the shapes. Raises a SpikeccError naming the node on failure."""
    return infer_shapes(g)


# ------------------------------------------------------------------------------------------------
# what a file from another tool needed: notes for `inspect`, warnings at load
# ------------------------------------------------------------------------------------------------
INFERRED_INPUT_SHAPE = "inferred_input_shape"  # annotation: a conv's input_shape the file did not give


def complete_conv_input_shapes(g: Graph) -> list[str]:
    """Give every Conv1d/Conv2d without an input_shape the one its input implies; returns their names.

    Files from older NIR releases have no input_shape field on convolutions (nir 0.2 wrote none), and
    exporters that leave it None (sinabs 3.1.3, norse 1.1.0) cannot even be written by nir 1.0.8 until
    it is set. spikecc's shapes come from the inputs anyway; filling the field makes the graph writable
    and its input_type/output_type complete. The node is annotated with what was inferred. A graph whose
    shapes cannot be inferred is left as it is (validation reports why).
    """
    missing = [n for n, op in g.nodes.items()
               if isinstance(op, (nir.Conv1d, nir.Conv2d)) and getattr(op, "input_shape", None) is None]
    if not missing:
        return []
    try:
        shapes = infer_shapes(g)
    except SpikeccError:
        return []
    for name in missing:
        op = g.nodes[name]
        src = g.predecessors(name)
        view = conv_input_view(op, shapes[src[0]]) if src else None
        if view is None:
            continue
        spatial = view[1:]
        g.nodes[name] = type(op)(input_shape=spatial[0] if isinstance(op, nir.Conv1d) else spatial,
                                 weight=op.weight, stride=op.stride, padding=op.padding, dilation=op.dilation,
                                 groups=op.groups, bias=op.bias, metadata=op.metadata)
        g.annotate(name, **{INFERRED_INPUT_SHAPE: list(spatial)})
    return missing


def load_notes(g: Graph, shapes: dict[str, Shape]) -> list[str]:
    """One line per thing spikecc read in a way worth saying: conv input shapes it inferred, batch axes
    of size 1 it skipped (see conv_input_view)."""
    notes = []
    for name, op in g.nodes.items():
        inferred = g.annotation(name, INFERRED_INPUT_SHAPE)
        if inferred is not None:
            notes.append(f"node '{name}' ({type(op).__name__}): the file gives no input_shape (older NIR releases "
                         f"wrote none); inferred {tuple(inferred)} from its input")
        if type(op) in SPATIAL_RANK:
            for e in g.in_edges(name):
                arriving = shapes.get(e.src, ())
                view = conv_input_view(op, arriving)
                if view is not None and len(arriving) > len(view):
                    notes.append(f"node '{name}' ({type(op).__name__}): input from '{e.src}' has shape {arriving}; "
                                 f"its leading axis of size 1 is a batch axis (NIR shapes have none), skipped: "
                                 f"reads {view}")
    return notes


# Time constants of the continuous-time neurons, which forward Euler turns into the decay dt/tau per step.
TIME_CONSTANTS: dict[type, tuple[str, ...]] = {
    nir.LIF: ("tau",), nir.LI: ("tau",), TernaryLIF: ("tau",),
    nir.CubaLIF: ("tau_mem", "tau_syn"), nir.CubaLI: ("tau_mem", "tau_syn"),
}


def unstable_time_constants(g: Graph) -> list[str]:
    """One line per neuron node whose forward-Euler step dt/tau is >= 1 (or whose tau is not > 0).

    With v <- v + dt/tau (v_leak - v + r I) the old v is kept with the factor 1 - dt/tau: at dt/tau = 1
    nothing of it is kept, above 1 the update overshoots (v changes sign every step), at 2 and above it
    grows without bound until it is inf or NaN. A time constant at or below the step usually means the
    file was exported for another dt than the one simulated (NIR files do not store dt).
    """
    dt = g.dt
    lines = []
    for name, op in g.nodes.items():
        for field in TIME_CONSTANTS.get(type(op), ()):
            tau = np.asarray(getattr(op, field), dtype=np.float64).reshape(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(tau > 0, dt / np.where(tau > 0, tau, 1.0), np.inf)
            bad = ~(ratio < 1)
            if not bad.any():
                continue
            worst = int(np.argmax(ratio))
            which = f"for {int(bad.sum())} of {tau.size} neurons" if tau.size > 1 else "(one value for all neurons)"
            if not tau[worst] > 0:
                what = f"{field} = {tau[worst]:g} s {which} is not a time constant (it must be > 0)"
            else:
                effect = ("keeps no memory" if ratio[worst] <= 1 else "overshoots" if ratio[worst] < 2
                          else "diverges to inf/NaN")
                what = (f"dt/{field} = {ratio[worst]:.4g} >= 1 {which} (dt = {dt:g} s, {field} = {tau[worst]:g} s): "
                        f"forward Euler {effect}")
            lines.append(f"node '{name}' ({type(op).__name__}): {what}; pass the time step the network was exported "
                         f"for with --dt (smaller than {field}), or fix {field}")
    return lines
