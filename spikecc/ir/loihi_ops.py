"""Loihi-form ops: the node types a graph is lowered to before it goes onto Loihi 2 through Lava.

Each op is one Lava process (lava-nc 0.10.0) with the same parameters, so the Lava backend maps it 1:1:

    LoihiDense       -> lava.proc.dense.process.Dense
    LoihiLIF         -> lava.proc.lif.process.LIF
    LoihiTernaryLIF  -> lava.proc.lif.process.TernaryLIF

An op's numbers mean one of two things, and the node says which (its number format, the annotation `format` that
`quantize_for_loihi` sets on every Loihi node; spikecc.ir.formats):

- float form (what `lower_for_loihi` produces): du, dv are fractions in [0, 1], vth/bias/weights are reals.
  This is the arithmetic of Lava's `floating_pt` models (PyDenseModelFloat, PyLifModelFloat).
- fixed form (what `quantize_for_loihi` produces): every field is an integer in the width Loihi 2 stores it,
  and the update is the integer arithmetic of Lava's `fixed_pt` models (PyDenseModelBitAcc,
  PyLifModelBitAcc, PyTernLifModelFixed), reproduced bit for bit by the CPU simulator's fixed mode.

Two traps of Lava's float models (lava/proc/dense/models.py:37-47, lava/proc/lif/models.py:45-51):
they ignore `weight_exp` and `bias_exp`. The float semantics below use the values those exponents stand
for (2**weight_exp * W, bias_mant * 2**bias_exp); a backend handing float-form ops to Lava's float models
must fold the exponents into `weights` and `bias_mant` itself (`lower_for_loihi` leaves them at 0).

Initial state: the neurons start at u = u_init and v = v_init (Lava's `u` and `v` constructor values), in
the units of u and v (float form: reals; fixed form: the 24-bit integer states). `lower_for_loihi` uses them
to undo the bias-only steps that precede a neuron's first synaptic input, and (u_init) to carry the rise of
a CubaLIF's synaptic-current bias (see its docstring).

Lava's LIF/TernaryLIF processes hold du, dv, vth (vth_hi, vth_lo) as one value per process (Var shape (1,));
these ops keep one value per neuron, as NIR does. The passes produce uniform values when the NIR layer has
uniform time constants and threshold; a backend must split or reject a layer whose values differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from spikecc.errors import ShapeError
from spikecc.ir.ops import ExtensionOp, register_op
from spikecc.ir.rows import rows_shape
from spikecc.ir.signals import BINARY, REAL, Signal, ternary


@register_op
@dataclass(eq=False)
class LoihiDense(ExtensionOp):
    """Dense synapses of Loihi 2 (Lava's `Dense` process), one step of delay.

    Float form (s = the input vector; bool-cast, i.e. s != 0 -> 1, when num_message_bits == 0, as Lava does):

        a[t] = 2**weight_exp * W @ s[t]        delivered to the consumer at step t+1

    Fixed form (lava/proc/dense/models.py:77-107 with lava/utils/weightutils.py), W integer:

        sign mode   = MIXED if W has both signs, INHIBITORY if all <= 0 (and some < 0), else EXCITATORY
        W          <- clip(W, [-256, 255] MIXED | [0, 255] EXCITATORY | [-255, 0] INHIBITORY)
        W          <- (W >> k) << k with k = 8 - num_weight_bits + (1 if MIXED)   (INHIBITORY: on |W|)
        acc         = W @ s            (binary: sum of the columns of the non-zero inputs; graded: W @ s)
        a[t]        = acc << weight_exp  if weight_exp > 0 else  acc >> -weight_exp  (arithmetic, floors)

    so with mixed signs and 8 weight bits only even weights in [-256, 254] survive. The sum is not
    saturated. Input spikes are binary (num_message_bits = 0) or graded integer payloads.

    `delay` (the op's `output_delay`): 1 as in Lava, whose Dense sends at step t what it accumulated at step t-1
    (a_buff), so its consumer sees W s[t-1]; the graph schedule delays every edge leaving this op by one step.
    0 in token-synchronous language-model graphs, where one graph step is one token (or one spike step) and
    the per-synapse latency of the hardware is a property of the pipeline schedule (the Lava backend runs as
    many Lava steps per token as the pipeline is deep), not of the computation.
    """

    weight: np.ndarray  # (n_out, n_in)
    weight_exp: int = 0
    num_weight_bits: int = 8
    num_message_bits: int = 0
    delay: int = 1

    @property
    def output_delay(self) -> int:  # type: ignore[override]
        return int(self.delay)

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        if self.weight.ndim != 2:
            raise ValueError(f"LoihiDense weight must be 2-D (n_out, n_in), got shape {self.weight.shape}")
        super().__post_init__()
        self.input_type = {"input": np.asarray([self.weight.shape[1]])}

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.weight.shape[0]),)

    def output_shape(self, in_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        """(n_out,) for n_in inputs; (..., n_out) for rows of n_in (spikecc.ir.rows: the same synapses serve each
        row of an encoder's sequence in turn)."""
        shape = rows_shape(self.weight.shape[0], self.weight.shape[1],
                           tuple(in_shapes.get("input", (self.weight.shape[1],))))
        if shape is None:
            raise ShapeError(f"LoihiDense with {self.weight.shape[1]} inputs is fed a signal of shape "
                             f"{tuple(in_shapes['input'])}; its weight must have one column per input value")
        return shape

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return REAL  # synaptic current (a 16-bit-annotated integer in fixed point)

    @property
    def graded(self) -> bool:
        return self.num_message_bits > 0


def groups_by_value(table: np.ndarray) -> list[np.ndarray]:
    """The row indices of each distinct row of `table` (neurons x parameters), groups in order of their first row,
    each group's indices ascending."""
    _, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    return [np.flatnonzero(inverse == g) for g in np.argsort(first, kind="stable")]


@dataclass(eq=False)
class _LoihiNeuron(ExtensionOp):
    """Shared fields and shape rules of the Loihi LIF neurons (not registered itself).

    `GROUP_PARAMS` are the parameters a Loihi 2 neuron group holds once for all its neurons (Lava declares them
    with one value per process, `Var(shape=(1,))`, lava/proc/lif/process.py; bias, u and v are per neuron): a
    layer whose values differ between neurons takes one neuron group per distinct set (`value_groups`)."""

    stateful: ClassVar[bool] = True
    GROUP_PARAMS: ClassVar[tuple[str, ...]] = ()

    def value_groups(self) -> list[np.ndarray]:
        """The neuron indices of each distinct set of `GROUP_PARAMS` values, in order of their first neuron (one
        group, all neurons, when every neuron shares them)."""
        n = int(np.prod(self.natural_shape()))
        return groups_by_value(np.stack([np.broadcast_to(np.asarray(getattr(self, k), dtype=np.float64).reshape(-1),
                                                         (n,)) for k in self.GROUP_PARAMS], axis=1))

    def natural_shape(self) -> tuple[int, ...]:
        return (int(np.size(self.du)),)

    def output_shape(self, in_shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        return self.natural_shape()

    def _as_arrays(self, names: tuple[str, ...]) -> None:
        """Each field in `names` as a flat per-neuron array; a single value is broadcast to all neurons."""
        n = max(np.size(getattr(self, k)) for k in names)
        for k in names:
            a = np.asarray(getattr(self, k)).reshape(-1)
            if a.size not in (1, n):
                raise ValueError(f"{type(self).__name__}.{k} has {a.size} values for {n} neurons")
            setattr(self, k, np.full(n, a[0]) if a.size == 1 else a)


@register_op
@dataclass(eq=False)
class LoihiLIF(_LoihiNeuron):
    """Loihi 2 leaky integrate-and-fire neuron (Lava's `LIF` process); per neuron arrays of shape (n,).

    Float form (lava/proc/lif/models.py:45-68, PyLifModelFloat), a_in = this step's synaptic input:

        u[t] = u[t-1] * (1 - du) + a_in[t]
        v[t] = v[t-1] * (1 - dv) + u[t] + bias_mant * 2**bias_exp
        s[t] = v[t] > vth;   v[t] = 0 where s[t]
        u[-1] = u_init,  v[-1] = v_init       (the state before step 0: Lava's u and v initial values)

    Fixed form (PyLifModelBitAcc, lava/proc/lif/models.py:110-216, 268-278), all int, >> arithmetic:

        p        = u[t-1] * (4096 - (du + 1))             du: 12 bit; the u decay has an offset of 1, so
        u'       = sign(p) * (|p| >> 12) + (a_in << 6)     du = 4095 means u = a_in << 6 (no memory)
        u[t]     = u' - 2**24 if u' > 2**23;  u' + 2**24 if u' <= -2**23;  else u'     (24-bit wrap)
        q        = v[t-1] * (4096 - dv)                    dv: 12 bit, no offset (dv = 0: no leak)
        v[t]     = clip(sign(q) * (|q| >> 12) + u[t] + b, -(2**23 - 1), 2**23 - 1)    (saturation)
        b        = bias_mant << bias_exp  (bias_exp >= 0)  or  bias_mant >> -bias_exp
        s[t]     = v[t] > (vth << 6);   v[t] = 0 where s[t]

    vth here is what Lava's LIF process is given: the unshifted 17-bit mantissa. bias_mant is 13-bit signed.
    u_init, v_init (fixed form) are 24-bit signed integers in the units of u and v, like the states.

    u_init and v_init default to zeros, so files written before the fields existed read back with Lava's
    default state.
    """

    GROUP_PARAMS: ClassVar[tuple[str, ...]] = ("du", "dv", "vth")

    du: np.ndarray
    dv: np.ndarray
    vth: np.ndarray
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    v_init: np.ndarray = field(default_factory=lambda: np.zeros(1))  # membrane value at step 0 (Lava's v)
    u_init: np.ndarray = field(default_factory=lambda: np.zeros(1))  # current at step 0 (Lava's u)

    def __post_init__(self) -> None:
        self._as_arrays(("du", "dv", "vth", "bias_mant", "bias_exp", "v_init", "u_init"))
        super().__post_init__()

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return BINARY


@register_op
@dataclass(eq=False)
class LoihiTernaryLIF(_LoihiNeuron):
    """Loihi 2 ternary LIF (Lava's `TernaryLIF`): LoihiLIF's u/v update, spikes of +1 / -1 / 0.

        s[t] = +1 if v[t] > vth_hi, -1 if v[t] < vth_lo, else 0;   v[t] = 0 where s[t] != 0

    Fixed form (PyTernLifModelFixed, lava/proc/lif/models.py:306-342): the thresholds compare against
    vth_hi << 6 and vth_lo << 6. Output amplitude is 1; a consumer needs num_message_bits > 0 to see the
    sign (Lava's Dense casts binary-mode input to bool, so -1 would arrive as +1). The state starts, as
    LoihiLIF's, at u = u_init and v = v_init (default zeros).
    """

    GROUP_PARAMS: ClassVar[tuple[str, ...]] = ("du", "dv", "vth_hi", "vth_lo")

    du: np.ndarray
    dv: np.ndarray
    vth_hi: np.ndarray
    vth_lo: np.ndarray
    bias_mant: np.ndarray
    bias_exp: np.ndarray
    v_init: np.ndarray = field(default_factory=lambda: np.zeros(1))  # membrane value at step 0 (Lava's v)
    u_init: np.ndarray = field(default_factory=lambda: np.zeros(1))  # current at step 0 (Lava's u)

    def __post_init__(self) -> None:
        self._as_arrays(("du", "dv", "vth_hi", "vth_lo", "bias_mant", "bias_exp", "v_init", "u_init"))
        super().__post_init__()

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return ternary(1.0)


LOIHI_NEURON_OPS = (LoihiLIF, LoihiTernaryLIF)
LOIHI_OPS = (LoihiDense, LoihiLIF, LoihiTernaryLIF)
