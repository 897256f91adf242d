"""Lowering registry of the Lava backend: one function per op type, found by `@lava_lowers(OpType)`.

A lowering function turns one graph node into a `ProcessSpec`: plain data (the Lava process class by name,
its constructor arguments as numpy arrays and Python scalars, the names of its input and output ports and
of the state variables that can be recorded). Nothing here imports Lava, so the same specs serve both
`network.build_network` (which instantiates live processes) and `codegen.write_lava_module` (which writes
them into a generated module and an `.npz`), and the two cannot drift apart.

A spec with `cls=None` is an alias: the node has no process of its own and its output is what arrives at
its input (Output nodes, Flatten: every Lava port here is a flat vector, so reshaping is free).

Parameter mapping, per mode (see spikecc.ir.loihi_ops for the equations):
- fixed: every field is handed to Lava's `fixed_pt` models as the integer the op holds.
- float: Lava's `floating_pt` models ignore `weight_exp` and `bias_exp`, so the lowering folds them:
  weights = W * 2**weight_exp, bias_mant = bias_mant * 2**bias_exp, and passes bias_exp = 0.
A neuron's v_init and u_init are Lava's `v` and `u` initial values in both modes (integers in fixed point).
Lava's LIF processes declare du, dv and thresholds as one value per process (Var shape (1,)). A uniform
per-neuron array is handed over as that one value; a non-uniform one is handed over as the array, which
Lava's Python models (fixed_pt and floating_pt) broadcast per neuron exactly (checked against their
equations in tests/backends/test_lava.py), except the fixed_pt TernaryLIF's thresholds (`ProcessSpec.one_value`).
Loihi 2 hardware takes one value per process: the split plan (spikecc.backends.lava.split) gives each group of
equal values a process of its own, and the generated module refuses under `Loihi2HwCfg` what it could not split
(see `ProcessSpec.per_process_arrays`).

Language-model ops: LoihiElastic and SpikeRouter become spikecc's own processes (Elastic, SpikeRouter in
spikecc.backends.lava.processes), LoihiRelay Lava's GradedVec (fixed) or spikecc's Relay (float). A node's
annotations `period` and `phase` give its process the phase gate of that module (LoihiLIF: PhasedLIF where
period > 1); without them a process runs every Lava step, as NIR networks do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from spikecc.errors import BackendError
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.loihi_spec import BIAS_MANT_RANGE, DECAY_MAX, GRADED_MAX_BITS, UV_MAX, VTH_MAX, WEIGHT_RANGE
from spikecc.ir.neurocore_ops import LoihiElastic, LoihiRelay, SpikeRouter

# Where each process class lives: lava-nc 0.10.0's own, and spikecc's (SPIKECC_PROCESSES, which a generated
# module imports from its own copy of that module instead; spikecc.backends.lava.codegen).
SPIKECC_PROCESSES = "spikecc.backends.lava.processes"
PROCESS_CLASSES: dict[str, str] = {
    "Dense": "lava.proc.dense.process",
    "LIF": "lava.proc.lif.process",
    "TernaryLIF": "lava.proc.lif.process",
    "GradedVec": "lava.proc.graded.process",
    "Source": "lava.proc.io.source",  # RingBuffer, imported under this name (the sink has the same class name)
    "Elastic": SPIKECC_PROCESSES,
    "SpikeRouter": SPIKECC_PROCESSES,
    "Relay": SPIKECC_PROCESSES,
    "PhasedLIF": SPIKECC_PROCESSES,
}

UV_RANGE = (-UV_MAX, UV_MAX)  # the 24-bit u and v registers (v saturates there, u wraps past 2**23)


@dataclass
class LoweringContext:
    """What a lowering function may know besides the op: the node's name, the run mode ("fixed" or
    "float"), the flat sizes of its output and of what arrives at its input, and the node's annotations
    (`period` and `phase` choose phase-gated processes: spikecc.backends.lava.processes)."""

    name: str
    mode: str
    size: int
    in_size: int | None = None
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessSpec:
    """One Lava process to create (or, with `cls=None`, an alias for the node's input).

    `kwargs` are the process constructor's keyword arguments; arrays stay numpy arrays so that they go
    into the parameter file unchanged. `per_process_arrays` lists the kwargs that Lava declares with one
    value per process but that this spec passes per neuron because the layer's values differ; `one_value`
    those among them that even Lava's Python model takes only as one value (its Var is an array of shape
    (1,)), so that every plan, the simulation's too, splits the layer by value. `named` is False for a process
    class whose constructor takes no `name` (Lava's GradedVec).
    """

    cls: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_port: str | None = None
    out_port: str | None = None
    states: tuple[str, ...] = ()
    per_process_arrays: tuple[str, ...] = ()
    one_value: tuple[str, ...] = ()
    named: bool = True

    @property
    def is_alias(self) -> bool:
        return self.cls is None


Lowering = Callable[[nir.NIRNode, LoweringContext], ProcessSpec]
LAVA_LOWERINGS: dict[type, Lowering] = {}


def lava_lowers(*op_types: type) -> Callable[[Lowering], Lowering]:
    """Register `fn` as the Lava lowering of each op type (one function per (backend, op))."""

    def deco(fn: Lowering) -> Lowering:
        for t in op_types:
            LAVA_LOWERINGS[t] = fn
        return fn

    return deco


def find_lowering(name: str, op: nir.NIRNode) -> Lowering:
    """The registered lowering for `op`'s type (or a base type), or a BackendError naming the node."""
    for cls in type(op).__mro__:
        if cls in LAVA_LOWERINGS:
            return LAVA_LOWERINGS[cls]
    takes = ", ".join(dict.fromkeys(t.__name__ for t in LAVA_LOWERINGS))
    raise BackendError(f"node '{name}': Lava has no process for {type(op).__name__} here; lower the graph "
                       f"with lower_for_loihi first (Lava takes only {takes})")


def lower_node(op: nir.NIRNode, ctx: LoweringContext) -> ProcessSpec:
    """The spec of one node, or a BackendError naming the node and saying what to do."""
    return find_lowering(ctx.name, op)(op, ctx)


# -- helpers --------------------------------------------------------------------------------------
def _as_int(name: str, field_name: str, value: Any) -> np.ndarray:
    """An integer array from a fixed-point field, or an error if it holds fractions (not quantized)."""
    a = np.asarray(value)
    if a.dtype.kind in "iub":
        return a.astype(np.int64)
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        raise BackendError(f"node '{name}': {field_name} holds non-integer values in a fixed-point run; "
                           "quantize the graph with quantize_for_loihi first (or run with mode='float')")
    return a.astype(np.int64)


def _check_range(name: str, field_name: str, a: np.ndarray, lo: int, hi: int) -> None:
    bad = (a < lo) | (a > hi)
    if np.any(bad):
        value = a[bad].reshape(-1)[0]
        raise BackendError(f"node '{name}': {field_name} = {value} is outside Loihi 2's range [{lo}, {hi}]; "
                           "re-quantize the layer (quantize_for_loihi) with a smaller scale")


def _per_neuron(name: str, field_name: str, value: Any, size: int) -> np.ndarray:
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        return np.full(size, a[0])
    if a.size != size:
        raise BackendError(f"node '{name}': {field_name} has {a.size} values for a layer of {size} neurons")
    return a


def _shared(a: np.ndarray) -> Any:
    """A per-process value: the Python scalar when all neurons share it, else the array (see module doc)."""
    return a[0].item() if a.size and np.all(a == a[0]) else a


def _gate(ctx: LoweringContext) -> dict[str, int]:
    """The node's phase gate (annotations `period`, default 1, and `phase`, default 0) as process kwargs, or a
    BackendError naming the node."""
    period, phase = ctx.annotations.get("period", 1), ctx.annotations.get("phase", 0)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (period, phase)) \
            or period < 1 or not 0 <= phase < period:
        raise BackendError(f"node '{ctx.name}': phase gating needs integers period >= 1 and 0 <= phase < period, "
                           f"got period={period!r}, phase={phase!r}; fix the node's annotations")
    return {"period": int(period), "phase": int(phase)}


def _neuron_kwargs(op: LoihiLIF | LoihiTernaryLIF, ctx: LoweringContext, thresholds: tuple[str, ...]) \
        -> tuple[dict[str, Any], tuple[str, ...]]:
    """Constructor arguments shared by LIF and TernaryLIF: shape, du, dv, thresholds, bias, and the initial
    state u, v (the op's u_init, v_init)."""
    n = ctx.size
    names = ("du", "dv", *thresholds, "bias_mant", "bias_exp", "v_init", "u_init")
    vals = {k: _per_neuron(ctx.name, k, getattr(op, k), n) for k in names}
    if ctx.mode == "fixed":
        vals = {k: _as_int(ctx.name, k, v) for k, v in vals.items()}
        _check_range(ctx.name, "du", vals["du"], 0, DECAY_MAX)
        _check_range(ctx.name, "dv", vals["dv"], 0, DECAY_MAX)
        for k in thresholds:
            # LIF's vth is unsigned; TernaryLIF's vth_lo is normally negative. Both are shifted by 6 bits
            # into the 24-bit v register, hence the 17-bit magnitude.
            _check_range(ctx.name, k, vals[k], 0 if k == "vth" else -VTH_MAX, VTH_MAX)
        _check_range(ctx.name, "bias_mant", vals["bias_mant"], *BIAS_MANT_RANGE)
        _check_range(ctx.name, "v_init", vals["v_init"], *UV_RANGE)
        _check_range(ctx.name, "u_init", vals["u_init"], *UV_RANGE)
    else:
        vals = {k: np.asarray(v, dtype=np.float64) for k, v in vals.items()}
        # Lava's float LIF adds bias_mant and ignores bias_exp: fold the exponent into the mantissa.
        vals["bias_mant"] = vals["bias_mant"] * np.exp2(vals["bias_exp"])
        vals["bias_exp"] = np.zeros(n)
    kwargs: dict[str, Any] = {"shape": (n,)}
    per_process: list[str] = []
    for k in names:
        if k in ("v_init", "u_init"):
            # Lava's u and v Vars are per neuron; one value when all share it (Lava's default, 0, for most
            # layers), which keeps the generated module's parameter file free of all-zero arrays
            kwargs[k[0]] = _shared(vals[k])
        elif k in ("bias_mant", "bias_exp"):
            kwargs[k] = vals[k]  # per neuron in Lava as well
        else:
            kwargs[k] = _shared(vals[k])
            if isinstance(kwargs[k], np.ndarray):
                per_process.append(k)
    return kwargs, tuple(per_process)


# -- lowerings ------------------------------------------------------------------------------------
@lava_lowers(nir.Input)
def lower_input(op: nir.Input, ctx: LoweringContext) -> ProcessSpec:
    """Input -> lava.proc.io.source.RingBuffer, whose s_out sends data[:, t-1] at Lava step t (t = 1, 2, ...).

    The data are the run's inputs, flattened to (n, steps); they are given when the network is built, so the
    spec holds only the size. The source has no delay: what it sends at step t arrives in the same step.
    """
    return ProcessSpec("Source", {"size": ctx.size}, in_port=None, out_port="s_out")


@lava_lowers(nir.Output, nir.Flatten)
def lower_passthrough(op: nir.NIRNode, ctx: LoweringContext) -> ProcessSpec:
    """Output, Flatten -> no process: y = x. All ports are flat vectors here, so a reshape is the identity;
    an Output's values are recorded from the ports that feed it (summed where several do)."""
    return ProcessSpec(None)


@lava_lowers(LoihiDense)
def lower_dense(op: LoihiDense, ctx: LoweringContext) -> ProcessSpec:
    """LoihiDense -> lava.proc.dense.process.Dense(weights, weight_exp, num_weight_bits, num_message_bits).

        a_out[t] = W @ s_in[t-1]   (one step of delay: Dense sends the previous step's accumulation)

    fixed: W, weight_exp, num_weight_bits go in as they are; Lava clips, truncates (sign mode) and shifts
    exactly as LoihiDense documents, and the CPU simulator's fixed mode repeats it.
    float: Lava's float Dense ignores weight_exp, so the weights carry it: W * 2**weight_exp.
    num_message_bits = 0 makes Lava cast the input to bool (a -1 spike arrives as +1), as the op specifies.
    """
    w = np.asarray(op.weight)
    if ctx.in_size is not None and ctx.in_size != w.shape[1]:
        raise BackendError(f"node '{ctx.name}': weight has {w.shape[1]} columns but {ctx.in_size} values arrive")
    if ctx.mode == "fixed":
        w = _as_int(ctx.name, "weight", w)
        _check_range(ctx.name, "weight", w, *WEIGHT_RANGE)
        kwargs = {"weights": w, "weight_exp": int(op.weight_exp), "num_weight_bits": int(op.num_weight_bits),
                  "num_message_bits": int(op.num_message_bits)}
    else:
        kwargs = {"weights": w.astype(np.float64) * 2.0 ** int(op.weight_exp),
                  "num_message_bits": int(op.num_message_bits)}
    return ProcessSpec("Dense", kwargs, in_port="s_in", out_port="a_out")


@lava_lowers(LoihiLIF)
def lower_lif(op: LoihiLIF, ctx: LoweringContext) -> ProcessSpec:
    """LoihiLIF -> lava.proc.lif.process.LIF(shape, du, dv, vth, bias_mant, bias_exp, u=u_init, v=v_init).

        u[t] = u[t-1] * (1 - du) + a_in[t];   v[t] = v[t-1] * (1 - dv) + u[t] + bias;   s = v > vth;  v = 0 at s
        u[-1] = u_init, v[-1] = v_init

    (the integer form in fixed point, thresholds compared as vth << 6). Recordable states: u, v.
    A node annotated with `period` > 1 (and `phase`) becomes spikecc's PhasedLIF instead: the same arithmetic,
    gated to one Lava step in `period` (spikecc.backends.lava.processes).
    """
    kwargs, per_process = _neuron_kwargs(op, ctx, ("vth",))
    gate = _gate(ctx)
    if gate["period"] > 1:  # a token-synchronous graph run D Lava steps per graph step (processes.py)
        return ProcessSpec("PhasedLIF", {**kwargs, **gate}, in_port="a_in", out_port="s_out", states=("u", "v"),
                           per_process_arrays=per_process)
    return ProcessSpec("LIF", kwargs, in_port="a_in", out_port="s_out", states=("u", "v"),
                       per_process_arrays=per_process)


@lava_lowers(LoihiTernaryLIF)
def lower_ternary_lif(op: LoihiTernaryLIF, ctx: LoweringContext) -> ProcessSpec:
    """LoihiTernaryLIF -> lava.proc.lif.process.TernaryLIF(shape, du, dv, vth_hi, vth_lo, bias_mant, bias_exp,
    u=u_init, v=v_init).

    LIF's u/v update; s = +1 where v > vth_hi, -1 where v < vth_lo, else 0; v = 0 where s != 0.
    A consumer Dense needs num_message_bits > 0 to see the sign. Recordable states: u, v.
    """
    kwargs, per_process = _neuron_kwargs(op, ctx, ("vth_hi", "vth_lo"))
    if _gate(ctx)["period"] > 1:
        raise BackendError(f"node '{ctx.name}': spikecc has no phase-gated TernaryLIF process; run the graph with "
                           "period 1, or map the neuron to LoihiLIF or LoihiElastic")
    # PyTernLifModelFixed declares vth_hi and vth_lo as arrays of its (1,)-shaped Vars (lava/proc/lif/models.py:
    # 320-321), and Lava's builder refuses per-neuron values there; the float model and du/dv broadcast.
    one_value = tuple(k for k in per_process if k in ("vth_hi", "vth_lo")) if ctx.mode == "fixed" else ()
    return ProcessSpec("TernaryLIF", kwargs, in_port="a_in", out_port="s_out", states=("u", "v"),
                       per_process_arrays=per_process, one_value=one_value)


@lava_lowers(LoihiElastic)
def lower_elastic(op: LoihiElastic, ctx: LoweringContext) -> ProcessSpec:
    """LoihiElastic -> spikecc.backends.lava.processes.Elastic(shape, mult, hi, lo, bias, period, phase).

        m_t = (m_{t-1} * mult_t) * (1 - u_{t-1}) + x_t + bias;   u_t = [m_t > hi_t] - [m_t < lo_t]

    (the integer form in fixed point: products shifted right by 12, m saturating at 24 bits; LoihiElastic's
    docstring). fixed: mult, hi, lo, bias are 24-bit signed integers. Recordable state: m.
    """
    n = ctx.size
    vals = {"mult": np.asarray(op.mult).reshape(-1), "hi": np.asarray(op.hi).reshape(-1),
            "lo": np.asarray(op.lo).reshape(-1), "bias": _per_neuron(ctx.name, "bias", op.bias, n)}
    if ctx.mode == "fixed":
        vals = {k: _as_int(ctx.name, k, v) for k, v in vals.items()}
        for k, v in vals.items():
            _check_range(ctx.name, k, v, *UV_RANGE)
    else:
        vals = {k: v.astype(np.float64) for k, v in vals.items()}
    return ProcessSpec("Elastic", {"shape": (n,), **vals, **_gate(ctx)}, in_port="a_in", out_port="s_out",
                       states=("m",))


@lava_lowers(SpikeRouter)
def lower_spike_router(op: SpikeRouter, ctx: LoweringContext) -> ProcessSpec:
    """SpikeRouter -> spikecc.backends.lava.processes.SpikeRouter(size, banks, split, period, phase): the same
    blocks in one out-port vector, block (b, q) at offset (b P + q) n (SpikeRouter's docstring)."""
    if ctx.in_size is not None and ctx.in_size != op.size:
        raise BackendError(f"node '{ctx.name}': routes {op.size} neurons but {ctx.in_size} values arrive")
    return ProcessSpec("SpikeRouter", {"size": int(op.size), "banks": int(op.banks), "split": bool(op.split),
                                       **_gate(ctx)}, in_port="s_in", out_port="s_out")


@lava_lowers(LoihiRelay)
def lower_relay(op: LoihiRelay, ctx: LoweringContext) -> ProcessSpec:
    """LoihiRelay -> fixed: lava.proc.graded.process.GradedVec(shape, vth=0), whose fixed_pt model sends
    v * (|v| > vth) with v = a_in, i.e. a_in itself, as a 24-bit graded spike (lava/proc/graded/models.py);
    float: spikecc.backends.lava.processes.Relay (GradedVec has no floating_pt model). y = x either way."""
    if ctx.mode == "fixed":
        if op.message_bits > GRADED_MAX_BITS:
            raise BackendError(f"node '{ctx.name}': relays {op.message_bits}-bit messages, but Lava's GradedVec "
                               f"carries {GRADED_MAX_BITS} bits; quantize the layer for {GRADED_MAX_BITS}-bit messages")
        return ProcessSpec("GradedVec", {"shape": (ctx.size,), "vth": 0}, in_port="a_in", out_port="s_out",
                           named=False)
    return ProcessSpec("Relay", {"shape": (ctx.size,)}, in_port="a_in", out_port="s_out")
