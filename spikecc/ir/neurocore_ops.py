"""Neuro-core ops a spiking language model is lowered to besides LoihiDense and LoihiLIF (spikecc.ir.loihi_ops),
and the boundary ops between the neuro-cores and the host.

Several outputs. A node that sends on several channels (a neuron split into a positive and a negative channel,
one channel per spike step) exposes them as consecutive BLOCKS of one output vector, block k holding
elements k*n .. (k+1)*n - 1, and names them in its `channels()` (a list of (name, offset, size)); the synapses
it feeds take the whole vector, their weight columns tiled to match. That keeps NIR's one-output-per-node rule,
so every pass, backend and file format handles split nodes without a port mechanism of their own.

Rows. Fed (L, n) instead of n values (a BERT-style encoder presents its whole sequence of L tokens at every
step), SpikeRouter, LoihiElastic and LoihiRelay act on each row alone (spikecc.ir.rows), with the parameters of
their n neurons: on Loihi the same n neurons serve the L tokens one after another (time-multiplexed), each token
for its T spike steps from a restarted membrane, which is what the row-wise float and fixed forms compute.

Number formats: each op below has a float form (reals) and a fixed form (integers in Loihi 2's widths,
spikecc.ir.loihi_spec); the node's `format` annotation says which (spikecc.ir.formats). Boundary ops convert
between the host's floats and the neuro-cores' integers.

    SpikeRouter   axon routing: unit spikes of a neuron into (step bank, polarity) channel blocks
    LoihiElastic  SpikeLM's elastic bi-spiking neuron as a Loihi 2 programmable neuron (unit +-1 spikes)
    LoihiRelay    a graded neuron that sends its synaptic input on as a graded spike (Lava's GradedVec)
    HostToCore    host value -> graded (or binary) message into the neuro-cores
    CoreToHost    neuro-core message -> host value (times its unit, plus a host-side bias)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from spikecc.errors import ShapeError
from spikecc.ir.loihi_spec import GRADED_MAX_BITS
from spikecc.ir.ops import ExtensionOp, register_op
from spikecc.ir.rows import rows_shape
from spikecc.ir.signals import BINARY, REAL, Signal, graded, ternary


@register_op
@dataclass(eq=False)
class SpikeRouter(ExtensionOp):
    """Routes a neuron's spikes to channel blocks: per step bank and, with `split`, per polarity.

    Input: n spikes s (any sign and amplitude; 0 = no spike). With b = step mod `banks` and P = 2 if split else 1,
    the output has banks * P * n values, block (b, p) at offset (b * P + p) * n:

        split:      block (b, 0) = [s > 0],  block (b, 1) = [s < 0]        binary spikes (Loihi binary messages)
        not split:  block (b, 0) = sign(s)                                  unit ternary spikes (2-bit messages)

    every other block is 0 at this step. The synapses fed by the router carry the amplitude of step bank b and
    the polarity in their weight columns (fold-amplitudes, split-polarity): W s = sum over blocks of W_block u.
    On Loihi 2 this is the neuron's output axon choice, not a computation: it costs no neuron.

    Graded amplitudes (`payloads` given, one per spike step; one block, no banks, no split): the spike of step t
    leaves as a signed graded spike of `payload_bits` bits (Loihi 2's graded spikes, the value a programmable
    neuron attaches to its spike):

        block 0 = sign(s) * payloads[t mod len(payloads)]

    Float form: the payloads are the reals alpha_t, so W sees s itself; fixed form: integers, one payload unit
    standing for a value the quantize pass records (annotation `payload_unit`) and folds into W.
    """

    size: int  # n, the neurons routed
    banks: int = 1
    split: bool = True
    payloads: np.ndarray = field(default_factory=lambda: np.zeros(0))  # graded amplitudes per spike step
    payload_bits: int = 0  # of the graded spikes (with payloads)

    def __post_init__(self) -> None:
        self.size, self.banks, self.split = int(self.size), int(self.banks), bool(self.split)
        self.payloads = np.asarray(self.payloads).reshape(-1)
        self.payload_bits = int(self.payload_bits)
        if self.size < 1 or self.banks < 1:
            raise ValueError(f"SpikeRouter: size and banks must be >= 1, got {self.size}, {self.banks}")
        if self.payloads.size and (self.split or self.banks != 1 or not 2 <= self.payload_bits <= GRADED_MAX_BITS):
            raise ValueError("SpikeRouter: graded amplitudes (payloads) take one unsplit block (banks 1, split "
                             f"False) and 2..{GRADED_MAX_BITS} payload bits")
        super().__post_init__()
        self.input_type = {"input": np.asarray((self.size,))}

    @property
    def graded(self) -> bool:
        """Whether its spikes carry graded amplitudes (`payloads`)."""
        return bool(self.payloads.size)

    @property
    def polarities(self) -> int:
        return 2 if self.split else 1

    def natural_shape(self) -> tuple[int, ...]:
        return (self.banks * self.polarities * self.size,)

    def output_shape(self, in_shapes):
        shape = rows_shape(self.banks * self.polarities * self.size, self.size, tuple(in_shapes["input"]))
        if shape is None:
            raise ShapeError(f"SpikeRouter routes {self.size} neurons but receives shape {in_shapes['input']}")
        return shape

    def output_signal(self, in_signals) -> Signal:
        if self.graded:
            return graded(self.payload_bits)
        return BINARY if self.split else ternary(1.0)

    def channels(self) -> list[tuple[str, int, int]]:
        names = ("pos", "neg") if self.split else ("signed",)
        return [(f"step{b}.{p}" if self.banks > 1 else p, (b * self.polarities + k) * self.size, self.size)
                for b in range(self.banks) for k, p in enumerate(names)]


@register_op
@dataclass(eq=False)
class LoihiElastic(ExtensionOp):
    """SpikeLM's elastic bi-spiking neuron on a Loihi 2 programmable neuron; emits unit spikes u in {-1, 0, +1}
    (the amplitude alpha_t of spike step t is folded into the synapses the spikes feed, or restored by the
    CoreToHost that reads them). With t = step mod T and x_t the synaptic input:

    hi and lo hold one value per spike step (T,), or per spike step and neuron (T, n) (a layer quantized with
    one state scale per neuron). Float form (mult, hi, lo, bias reals):
        m_t = (m_{t-1} * mult_t) * (1 - u_{t-1}) + x_t + bias      mult_t = leak * alpha_{t-1}, mult_0 = 0
        u_t = +1 if m_t > hi_t, -1 if m_t < lo_t, else 0            (the membrane restarts at t = 0)

    which is the reference's m_t = leak * m_{t-1} * (alpha_{t-1} - s_{t-1}) + x_t with s = alpha u, regrouped;
    hi_t = -lo_t = alpha_t / 2 (threshold mode "code": alpha * clip(round(m / alpha), -1, 1) fires iff
    |m| > alpha / 2) or alpha_t (mode "paper").

    Fixed form (integers; m 24-bit, saturating; only add, shift, compare and multiply by constants):
        p   = m_{t-1} * mult_t;   d = sign(p) * (|p| >> 12)        (mult_t: 12-bit fraction, as Loihi's decays)
        m_t = clip(d * (1 - u_{t-1}) + x_t + bias, -(2**23 - 1), 2**23 - 1)      ((1 - u) in {0, 1, 2}: a shift)
        u_t = +1 if m_t > hi_t, -1 if m_t < lo_t, else 0
    """

    T: int
    mult: np.ndarray  # (T,)
    hi: np.ndarray  # (T,)
    lo: np.ndarray  # (T,)
    bias: np.ndarray  # (n,)

    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.T = int(self.T)
        self.bias = np.asarray(self.bias).reshape(-1)
        for k in ("mult", "hi", "lo"):
            a = np.asarray(getattr(self, k))
            a = a.reshape(-1) if a.ndim < 2 or k == "mult" else a
            if a.shape not in ((self.T,), (self.T, self.bias.size)) or (k == "mult" and a.ndim != 1):
                raise ValueError(f"LoihiElastic.{k} needs one value per spike step ({self.T}) or, thresholds only, "
                                 f"one per step and neuron ({self.T}, {self.bias.size}), got shape {a.shape}")
            setattr(self, k, a)
        super().__post_init__()

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.bias.size),)

    def output_shape(self, in_shapes):
        shape = rows_shape(self.bias.size, self.bias.size, tuple(in_shapes.get("input", self.natural_shape())))
        if shape is None:
            raise ShapeError(f"LoihiElastic of {self.bias.size} neurons receives shape {in_shapes['input']}")
        return shape

    def output_signal(self, in_signals) -> Signal:
        return ternary(1.0)


@register_op
@dataclass(eq=False)
class LoihiRelay(ExtensionOp):
    """A graded neuron that passes its synaptic input on, in the same step, as a graded spike (Lava's
    GradedVec with vth = 0: v = a_in, s = v where |v| > 0): how a synapse layer's result leaves a neuro-core
    (to the host, through a CoreToHost). Float form: y = x. Fixed form: y = x, an integer of up to
    `message_bits` bits (Loihi 2 graded spikes; spikecc.ir.loihi_spec.GRADED_MAX_BITS)."""

    size: int
    message_bits: int = 24

    def __post_init__(self) -> None:
        self.size, self.message_bits = int(self.size), int(self.message_bits)
        super().__post_init__()

    def natural_shape(self) -> tuple[int, ...]:
        return (self.size,)

    def output_shape(self, in_shapes):
        shape = rows_shape(self.size, self.size, tuple(in_shapes["input"]))
        if shape is None:
            raise ShapeError(f"LoihiRelay of {self.size} neurons receives shape {in_shapes['input']}")
        return shape

    def output_signal(self, in_signals) -> Signal:
        return graded(self.message_bits)


@register_op
@dataclass(eq=False)
class HostToCore(ExtensionOp):
    """A host value enters the neuro-cores as a message of `bits` payload bits (0: binary spikes).

    Float form: y = x. Fixed form (the node runs on the host and sends integers):
        bits > 0:  y = clip(round(x / scale), -(2**(bits-1) - 1), 2**(bits-1) - 1)     (values clipped: counted)
        bits = 0:  y = [x != 0]                                                          (spikes from the host)
    `scale` is the value of one payload unit (the quantize pass calibrates it on a short prompt)."""

    bits: int = 16
    scale: float = 1.0

    converts_format: ClassVar[tuple[str, str]] = ("float", "fixed")

    def output_signal(self, in_signals) -> Signal:
        return BINARY if self.bits == 0 else graded(self.bits, self.scale)


@register_op
@dataclass(eq=False)
class CoreToHost(ExtensionOp):
    """A neuro-core message becomes a host value: y = x * scales[t mod B] * units + bias (B = len(scales)).

    `scales` is the value of one unit of the message at spike step t (one value for relays and binary spikes;
    one per spike step for a neuron whose spikes stand for a step's amplitude alpha_t); `units` (one value per
    element, or empty: 1) the value of one unit of each element (a relay quantized with one state scale per
    output channel); `bias` (one value per element, or empty) is the host-side bias of the linear layer whose
    result arrives (Loihi synapses have none). The same arithmetic in both forms: the float form reads unit
    spikes and float currents, the fixed form integers."""

    scales: np.ndarray = field(default_factory=lambda: np.ones(1))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0))
    units: np.ndarray = field(default_factory=lambda: np.zeros(0))

    converts_format: ClassVar[tuple[str, str]] = ("fixed", "float")

    def __post_init__(self) -> None:
        self.scales = np.asarray(self.scales, dtype=np.float64).reshape(-1)
        self.bias = np.asarray(self.bias, dtype=np.float64).reshape(-1)
        self.units = np.asarray(self.units, dtype=np.float64).reshape(-1)
        super().__post_init__()

    def output_signal(self, in_signals) -> Signal:
        return REAL


NEUROCORE_OPS = (SpikeRouter, LoihiElastic, LoihiRelay)
BOUNDARY_OPS = (HostToCore, CoreToHost)
