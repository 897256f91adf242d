"""CPU lowerings of the Loihi-form ops (spikecc.ir.loihi_ops), in float and in bit-accurate fixed point.

Fixed mode reproduces Lava 0.10.0's `fixed_pt` process models bit for bit, spikes and u/v states:

    LoihiDense       PyDenseModelBitAcc   lava/proc/dense/models.py:57-107, lava/utils/weightutils.py:204-295
    LoihiLIF         PyLifModelBitAcc     lava/proc/lif/models.py:72-216, 237-278
    LoihiTernaryLIF  PyTernLifModelFixed  lava/proc/lif/models.py:306-342

including the int32 arithmetic of Lava's numpy code where it can overflow (the int32 channel that carries
Dense's output, `a_in << 6` in int32, the int32 sums), which `wrap32` emulates in int64. The one-step delay
of Dense is not in the kernel: `LoihiDense.output_delay = 1` makes the graph schedule deliver its output a
step late, as Lava's a_buff does.

Float mode runs the equations of the op docstrings. On a node `quantize_for_loihi` marked fixed point
(annotation "format", spikecc.ir.formats), float mode runs the same integer parameters without rounding, wrapping or
saturation (u decay (du+1)/4096, v decay dv/4096, input and threshold scaled by 2**6): the "ideal"
version of the quantized network, which isolates the error that integer arithmetic adds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from spikecc.backends.cpu import jit
from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, per_neuron
from spikecc.errors import BackendError
from spikecc.ir.formats import FIXED, format_of
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.loihi_spec import ACT_SHIFT, DECAY_BITS, UV_BITS, VTH_SHIFT
from spikecc.ir.rows import vector_rows

UV_MAX = 2 ** (UV_BITS - 1)  # 2**23: u wraps around it, v saturates at +-(UV_MAX - 1)
DECAY_UNITY = 2**DECAY_BITS


def wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32, as numpy's int32 arithmetic and casts do."""
    return ((x + 2**31) & (2**32 - 1)) - 2**31


def _shift(x: np.ndarray, exp: np.ndarray | int) -> np.ndarray:
    """x * 2**exp with exp >= 0, floor(x / 2**-exp) with exp < 0 (numpy's arithmetic right shift)."""
    exp = np.asarray(exp, dtype=np.int64)
    return np.where(exp >= 0, np.left_shift(x, np.maximum(exp, 0)), np.right_shift(x, np.maximum(-exp, 0)))


def _decay(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """sign(x*keep) * (|x*keep| >> 12): Lava's decay, which truncates toward zero (not floor)."""
    p = x * keep
    return np.sign(p) * (np.abs(p) >> DECAY_BITS)


def _require_int(ctx: BuildContext, field: str, value: np.ndarray) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
        raise BackendError(f"node '{ctx.name}': fixed-point simulation needs integer {field}, got values such as "
                           f"{a.reshape(-1)[:3].tolist()}; quantize the graph first (quantize_for_loihi)")
    return a.astype(np.int64)


def _quantized(ctx: BuildContext) -> bool:
    return format_of(ctx.annotations) == FIXED


# -- Dense ---------------------------------------------------------------------------------------------------
def effective_weights(weight: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """The integer weights Lava's PyDenseModelBitAcc uses (run_spk, lava/proc/dense/models.py:82-91):
    sign mode from the weights (determine_sign_mode), clip_weights to 8 bits, truncate_weights to
    num_weight_bits (one bit more for MIXED, where the sign takes a bit)."""
    w = np.asarray(weight).astype(np.int64)
    if w.size == 0:
        return w
    if w.min() >= 0:
        mode = "excitatory"
    elif w.max() <= 0:
        mode = "inhibitory"
    else:
        mode = "mixed"
    mixed = mode == "mixed"
    if mode == "inhibitory":  # clip and truncate act on -W (weightutils.py:232-245, 280-293)
        w = -w
    w = np.clip(w, -256 if mixed else 0, 255)
    k = 8 - int(num_weight_bits) + int(mixed)
    w = (w >> k) << k
    return -w if mode == "inhibitory" else w


def weights8(w: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Effective integer weights (effective_weights) as (w8, factor) with w = factor * w8 exactly, so that
    the compiled gather reads one byte per synaptic event: factor 1 with uint8 (all in [0, 255]), -1 with
    uint8 (all in [-255, 0]), 2 with int8 (all even in [-256, 254], Lava's MIXED mode). (None, 0) if none fits."""
    lo, hi = (int(w.min()), int(w.max())) if w.size else (0, 0)
    if lo >= 0 and hi <= 255:
        return np.ascontiguousarray(w, dtype=np.uint8), 1
    if hi <= 0 and lo >= -255:
        return np.ascontiguousarray(-w, dtype=np.uint8), -1
    if lo >= -256 and hi <= 254 and not np.any(w & 1):
        return np.ascontiguousarray(w >> 1, dtype=np.int8), 2
    return None, 0


def loop_arg(a: np.ndarray, dtype) -> np.ndarray:
    """`a` as the compiled loops take their arrays: C-contiguous, writable, of `dtype` (copied only if needed;
    a read-only view would be another numba type, see spikecc.backends.cpu.jit)."""
    return np.require(a, dtype=dtype, requirements=("C", "W"))


class DenseKernel(Kernel):
    """a = W s (binary: the columns of the non-zero inputs; graded: W @ s), then the weight exponent.

    Event-driven: each step gathers only the rows of W^T of non-zero inputs; synops count them.
    Fixed: a = wrap32(acc << weight_exp or acc >> -weight_exp), Lava's arithmetic shift and int32 channel.
    Float: a = 2**weight_exp * acc.
    """

    def __init__(self, weight: np.ndarray, weight_exp: int, graded: bool, fixed: bool, rows: int = 1) -> None:
        super().__init__()
        self.fixed, self.graded, self.weight_exp = fixed, graded, int(weight_exp)
        self.rows = rows  # fed rows of n_in (spikecc.ir.rows): each row is gathered on its own, as one more step
        self.dtype = np.int64 if fixed else np.float64
        self.n_out = weight.shape[0]
        self.scale = 2.0**self.weight_exp
        self.fanout = np.count_nonzero(weight, axis=0).astype(np.int64)  # per input: non-zero weights it drives
        density = int(self.fanout.sum()) / max(1, weight.size)
        # Fixed point, dense: the compiled 8-bit gather (one byte per synaptic event); only the 8-bit copy is
        # kept (a 216M-parameter model's weights in int64 would take 1.7 GB). Exact where the sums fit int32.
        self.w8, self.factor = (None, 0)
        if fixed and density > 0.05 and (graded or weight.shape[1] * 256 < 2**31):
            self.w8, self.factor = weights8(weight.T)
        self._wt: sp.csr_matrix | None = None
        self.rhs: np.ndarray | sp.csr_matrix | None = None
        if self.w8 is None:
            # The gather for all steps is csr(spikes) @ W^T; a dense W^T makes it a row gather-and-add per
            # spike without building a sparse result (much faster for dense layers, same arithmetic). Only one
            # copy is kept: the dense W^T for dense layers (a CSR copy beside it would take 1.5x as much again),
            # the CSR for sparse ones.
            if density > 0.05:
                self.rhs = np.ascontiguousarray(weight.T, dtype=self.dtype)
            else:
                self._wt = sp.csr_matrix(weight.T.astype(self.dtype))  # (n_in, n_out): row i = fan-out of i
                self.rhs = self._wt

    @property
    def wt(self) -> sp.csr_matrix:
        """W^T (n_in, n_out) as CSR (built on first use where only a dense copy is kept)."""
        if self._wt is None:
            dense = self.w8.astype(np.int64) * self.factor if self.w8 is not None else self.rhs
            self._wt = sp.csr_matrix(dense)
        return self._wt

    def _finish(self, acc: np.ndarray) -> np.ndarray:
        if not self.fixed:
            return acc * self.scale
        if self.graded:
            acc = wrap32(acc)  # Lava's W.dot(s) with int32 W and int32 payloads stays int32
        acc = np.left_shift(acc, self.weight_exp) if self.weight_exp > 0 else np.right_shift(acc, -self.weight_exp)
        return wrap32(acc)  # a_out is an int32 port: the channel buffer wraps

    def step(self, x):
        """One step: the same compiled gather as `run`, on one row (so step and run agree bit for bit, and no
        second copy of the weights is needed), or the CSR rows of the non-zero inputs for a sparse layer."""
        s = x["input"]
        if self.w8 is not None or isinstance(self.rhs, np.ndarray) or self.rows > 1:
            out, _ = self.run({"input": np.asarray(s).reshape(1, -1)}, 1, False)
            return out[0]
        idx = np.flatnonzero(s)
        self.synops += int(self.fanout[idx].sum())
        vals = s[idx].astype(self.dtype) if self.graded else np.ones(idx.size, dtype=self.dtype)
        acc = self.wt[idx].T @ vals
        return self._finish(np.asarray(acc).reshape(-1))

    def run(self, xs, steps, record):
        if self.rows > 1:
            out, _ = self._gather(xs["input"].reshape(steps * self.rows, -1))
            return out.reshape(steps, -1), {}
        return self._gather(xs["input"])

    def _gather(self, s: np.ndarray) -> tuple[np.ndarray, dict]:
        if self.w8 is not None:  # fixed point: int32 currents, exponent and wrap applied in the loop
            s = s if s.dtype == np.int8 else loop_arg(s, np.int64)  # int8: spikes from a neuron loop
            out, events = jit.gather_fixed(loop_arg(s, s.dtype), self.w8, not self.graded, self.factor,
                                           self.weight_exp)
            self.synops += int(events @ self.fanout)
            return out, {}
        if isinstance(self.rhs, np.ndarray):  # dense layer: compiled gather of the rows of spiking inputs
            acc, events = jit.gather(loop_arg(s, self.dtype), self.rhs, not self.graded)
            self.synops += int(events @ self.fanout)
        else:  # scipy's CSR x CSR product walks the non-zeros of s: the event-driven gather, all steps
            self.synops += int((s != 0).sum(axis=0) @ self.fanout)
            vals = s.astype(self.dtype) if self.graded else (s != 0).astype(self.dtype)
            acc = sp.csr_matrix(vals) @ self.rhs
            acc = acc.toarray() if sp.issparse(acc) else np.asarray(acc)
        return self._finish(acc), {}


@lowers(LoihiDense)
def lower_loihi_dense(op: LoihiDense, ctx: BuildContext) -> Kernel:
    rows = vector_rows(int(op.weight.shape[1]), ctx.in_shapes.get("input", ()))
    if rows == 0:
        raise BackendError(f"node '{ctx.name}': LoihiDense has {op.weight.shape[1]} inputs but is fed "
                           f"{ctx.in_size('input')} values")
    fixed = ctx.mode == "fixed"
    if fixed or _quantized(ctx):
        weight = effective_weights(_require_int(ctx, "weights", op.weight), op.num_weight_bits)
    else:
        weight = np.asarray(op.weight, dtype=np.float64)
    return DenseKernel(weight, op.weight_exp, op.num_message_bits > 0, fixed, rows=rows)


# -- neurons -------------------------------------------------------------------------------------------------
class LoihiNeuronKernel(Kernel):
    """Shared u/v update of LoihiLIF and LoihiTernaryLIF; subclasses decide spikes (see the op docstrings).

    Fixed (PyLifModelBitAcc.subthr_dynamics, lava/proc/lif/models.py:138-186; order: u, then v, spikes,
    reset), in int64 with Lava's int32 overflows emulated by wrap32:
        a    = wrap32(sum of inputs)                  # InPort.recv sums the channels into int32
        u'   = wrap32(decay(u, 4096 - (du + 1)) + wrap32(a << 6))
        u    = u' - 2**24 if u' > 2**23; u' + 2**24 if u' <= -2**23; else u'     (one wrap, as Lava)
        v    = clip(wrap32(decay(v, 4096 - dv) + u + (bias_mant << bias_exp)), -(2**23 - 1), 2**23 - 1)
    with decay(x, k) = sign(x k) (|x k| >> 12). Float: the op docstring's real-valued equations.
    Both start (reset) at u = u_init, v = v_init, Lava's initial values; `run` continues from that state.
    """

    state_names = ("u", "v")

    def __init__(self, size: int, du, dv, bias_mant, bias_exp, v_init, u_init, fixed: bool,
                 quantized: bool) -> None:
        super().__init__()
        self.size, self.fixed = size, fixed
        self.dtype = np.int64 if fixed else np.float64
        self.v_init = np.asarray(v_init, dtype=self.dtype)
        self.u_init = np.asarray(u_init, dtype=self.dtype)
        if fixed:
            self.keep_u = DECAY_UNITY - (du + 1)  # ds_offset = 1 (models.py:94, 145)
            self.keep_v = DECAY_UNITY - dv  # dm_offset = 0 (models.py:95, 174)
            # scale_bias (models.py:110-122): int32 mantissa shifted by the exponent each step
            self.bias = wrap32(_shift(bias_mant, bias_exp))
        elif quantized:  # the integer parameters, run without rounding
            self.keep_u = 1.0 - (du + 1) / DECAY_UNITY
            self.keep_v = 1.0 - dv / DECAY_UNITY
            self.bias = bias_mant * 2.0**bias_exp
            self.in_scale = 2.0**ACT_SHIFT
        else:
            self.keep_u, self.keep_v = 1.0 - du, 1.0 - dv
            self.bias = bias_mant * 2.0**bias_exp
            self.in_scale = 1.0
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.u = self.u_init.copy()  # copies: step and the compiled loops update u and v in place
        self.v = self.v_init.copy()

    def _subthreshold(self, a: np.ndarray) -> None:
        if self.fixed:
            a = wrap32(a.astype(np.int64))
            cur = wrap32(_decay(self.u, self.keep_u) + wrap32(a << ACT_SHIFT))
            u = np.where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
            self.u = np.where(u <= -UV_MAX, wrap32(cur + 2 * UV_MAX), u)
            v = wrap32(_decay(self.v, self.keep_v) + self.u + self.bias)
            self.v = np.clip(v, -UV_MAX + 1, UV_MAX - 1)
        else:
            self.u = self.u * self.keep_u + a * self.in_scale
            self.v = self.v * self.keep_v + self.u + self.bias

    def spikes(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, x):
        self._subthreshold(x["input"])
        s = self.spikes()
        self.v = np.where(s != 0, 0, self.v).astype(self.dtype)
        return s.astype(self.dtype)

    def thresholds(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(hi, lo, ternary) for the compiled loop: spike where v > hi, or (ternary) v < lo."""
        raise NotImplementedError

    def run(self, xs, steps, record):
        """All steps of a neuron outside any loop, in a compiled loop (spikecc.backends.cpu.jit) with the
        same arithmetic as `step`."""
        n = self.size
        hi, lo, ternary = self.thresholds()
        if self.fixed:
            a = xs["input"]
            # Lava's InPort sums its channels into int32; the fixed-point Dense already delivers wrapped int32
            a = loop_arg(a, np.int32) if a.dtype == np.int32 else wrap32(np.asarray(a, dtype=np.int64)).astype(np.int32)
            ku, kv, bias, hi, lo = (loop_arg(np.broadcast_to(np.asarray(p, dtype=np.int64), (n,)), np.int64)
                                    for p in (self.keep_u, self.keep_v, self.bias, hi, lo))
            self.u = np.array(self.u, dtype=np.int64)
            self.v = np.array(self.v, dtype=np.int64)
            out, tu, tv, events, negative = jit.loihi_neuron_fixed(a, ku, kv, bias, hi, lo, ternary, self.u, self.v,
                                                                   record)
        else:
            a = loop_arg(xs["input"], np.float64)
            ku, kv, bias, hi, lo = (loop_arg(np.broadcast_to(np.asarray(p, dtype=np.float64), (n,)), np.float64)
                                    for p in (self.keep_u, self.keep_v, self.bias, hi, lo))
            self.u = np.array(self.u, dtype=np.float64)
            self.v = np.array(self.v, dtype=np.float64)
            out, tu, tv, events, negative = jit.loihi_neuron_float(a, ku, kv, bias, float(self.in_scale), hi, lo,
                                                                   ternary, self.u, self.v, record)
        self.counted = (int(events), int(negative))
        return out, ({"u": tu, "v": tv} if record else {})


class LIFKernel(LoihiNeuronKernel):
    """s = v > vth (fixed: vth << 6); v <- 0 where s."""

    def __init__(self, vth, **kw) -> None:
        super().__init__(**kw)
        self.vth = vth

    def spikes(self):
        return self.v > self.vth

    def thresholds(self):
        return self.vth, self.vth, False


class TernaryLIFKernel(LoihiNeuronKernel):
    """s = +1 where v > vth_hi, -1 where v < vth_lo (fixed: both << 6), else 0; v <- 0 where s != 0."""

    def __init__(self, vth_hi, vth_lo, **kw) -> None:
        super().__init__(**kw)
        self.hi, self.lo = vth_hi, vth_lo

    def spikes(self):
        return (self.v > self.hi).astype(np.int64) - (self.v < self.lo).astype(np.int64)

    def thresholds(self):
        return self.hi, self.lo, True


def _neuron_params(op, ctx: BuildContext, thresholds: tuple[str, ...]) -> tuple[dict, list[np.ndarray]]:
    n = ctx.size
    if n != int(np.size(op.du)):
        raise BackendError(f"node '{ctx.name}': {type(op).__name__} has {np.size(op.du)} neurons but is fed {n} "
                           "values; the synapse layer before it must output one value per neuron")
    fixed, quantized = ctx.mode == "fixed", _quantized(ctx)
    names = ("du", "dv", "bias_mant", "bias_exp", "v_init", "u_init")
    if fixed:
        vals = {k: _require_int(ctx, k, per_neuron(getattr(op, k), n)) for k in names}
        ths = [_require_int(ctx, t, per_neuron(getattr(op, t), n)) << VTH_SHIFT for t in thresholds]
        ths = [wrap32(t) for t in ths]  # np.left_shift on Lava's int32 vth
    else:
        vals = {k: per_neuron(getattr(op, k), n) for k in names}
        ths = [per_neuron(getattr(op, t), n) * (2.0**VTH_SHIFT if quantized else 1.0) for t in thresholds]
    return dict(size=n, fixed=fixed, quantized=quantized, **vals), ths


@lowers(LoihiLIF)
def lower_loihi_lif(op: LoihiLIF, ctx: BuildContext) -> Kernel:
    kw, (vth,) = _neuron_params(op, ctx, ("vth",))
    return LIFKernel(vth, **kw)


@lowers(LoihiTernaryLIF)
def lower_loihi_ternary_lif(op: LoihiTernaryLIF, ctx: BuildContext) -> Kernel:
    kw, (hi, lo) = _neuron_params(op, ctx, ("vth_hi", "vth_lo"))
    return TernaryLIFKernel(hi, lo, **kw)
