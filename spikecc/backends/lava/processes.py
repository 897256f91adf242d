"""Lava processes (lava-nc 0.10.0) for spikecc's own neuro-core ops, with `fixed_pt` and `floating_pt` models.

    Elastic      LoihiElastic (spikecc.ir.neurocore_ops): SpikeLM's elastic bi-spiking neuron, unit +-1 spikes
    SpikeRouter  SpikeRouter: a neuron's spikes into (step bank, polarity) blocks of one output vector
    Relay        LoihiRelay in floating_pt (fixed_pt uses Lava's own lava.proc.graded.process.GradedVec, vth = 0,
                 whose model, lava/proc/graded/models.py, is fixed_pt only: v = a_in, s = v * (|v| > 0) = a_in)
    PhasedLIF    LoihiLIF: Lava's LIF (lava/proc/lif/process.py) with the phase gate below; its models run
                 Lava's own LIF arithmetic (the sub-threshold update of AbstractPyLifModelFixed/Float and the
                 threshold methods of PyLifModelBitAcc/PyLifModelFloat, lava/proc/lif/models.py), unchanged

Each model computes exactly the arithmetic of its op's docstring, the same as spikecc's CPU simulator
(spikecc.backends.cpu.neurocore_ops): bit for bit in fixed_pt (int32 Vars as Lava's LIF declares them, products
in int64 so that nothing wraps), value for value in floating_pt (float64, the same order of operations).

Phase gating (`period` D, `phase` p; D = 1, p = 0 by default, which is an ordinary process). A language-model
graph is token-synchronous: its synapses have no delay and one graph step is one token (or one spike step of a
token). In Lava every Dense sends at step t what it received at step t-1, so a graph whose longest chain of
synapse layers has D - 1 of them needs D Lava steps per graph step. The convention:

    Lava step t (1-based, PyLoihiProcessModel.time_step) belongs to graph step g = (t - 1) // D, slot (t - 1) % D.
    A process with phase p updates in slot p only: at Lava step t it runs its update iff (t - 1) % D == p.
    In every other slot it receives its input and discards it, leaves all its state untouched, and sends zeros.
    Step counters (Elastic's spike step t mod T, SpikeRouter's step bank) count updates, i.e. graph steps.

So a process fed through a Dense by a process of phase q takes phase q + 1; processes joined without a Dense
(an Elastic and its SpikeRouter) share a phase; a source sends graph step g's input at Lava step g D + p + 1
for the phase p of what it feeds directly (or p - 1 ahead of a Dense). Stateless processes (Dense, GradedVec,
Relay) need no gate: what they receive outside their slot is zero. `period` and `phase` are process
parameters (proc_params), not Vars: PyLoihiProcessModel already has an attribute `phase` (the protocol phase).

This module imports only numpy, Lava and the widths of spikecc.ir.loihi_spec: spikecc.backends.lava.codegen
copies it into generated Lava modules (as spikecc_processes.py), writing those widths in as numbers, so that a
generated module runs where spikecc is not installed. Keep it that way: no other spikecc import.
"""

from __future__ import annotations

import typing as ty

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed, AbstractPyLifModelFloat, PyLifModelBitAcc, PyLifModelFloat
from lava.proc.lif.process import LIF

from spikecc.ir.loihi_spec import MULTIPLIER_SHIFT, UV_BITS, UV_MAX  # codegen: written in as numbers

SELECT_TAGS = ("fixed_pt", "floating_pt")


def check_gate(period: int, phase: int) -> tuple[int, int]:
    """(period, phase) as ints, or a ValueError: period >= 1 and 0 <= phase < period."""
    period, phase = int(period), int(phase)
    if period < 1 or not 0 <= phase < period:
        raise ValueError(f"phase gating needs period >= 1 and 0 <= phase < period, got period={period}, "
                         f"phase={phase}")
    return period, phase


class PhaseGate:
    """Model mixin: the gate of the module docstring, from the process's `period` and `phase` parameters."""

    def on_phase(self) -> bool:
        params = self.proc_params
        return (self.time_step - 1) % params["period"] == params["phase"]

    def idle(self, in_port: PyInPort, out_port: PyOutPort) -> None:
        """Outside the slot: receive (so the channel never fills up) and discard; send zeros."""
        in_port.recv()
        out_port.send(np.zeros(out_port.shape))  # the channel casts to the port's type (0 stays 0)


# -- Elastic ------------------------------------------------------------------------------------------------------
class Elastic(AbstractProcess):
    """SpikeLM's elastic bi-spiking neuron (LoihiElastic), n neurons, T spike steps per token.

    Vars: m (membrane), u (the spikes of the last update, in {-1, 0, 1}), t (updates so far: the spike step is
    t mod T), and the constants mult (T,), hi, lo ((T,) or, one per neuron, (T, n)) and bias (n,). Ports: a_in
    (synaptic input x), s_out (u).
    fixed_pt: integers (module docstring of LoihiElastic); floating_pt: reals.
    """

    def __init__(self, *, shape: tuple[int, ...], mult: ty.Any, hi: ty.Any, lo: ty.Any, bias: ty.Any = 0,
                 period: int = 1, phase: int = 0, name: str | None = None,
                 log_config: LogConfig | None = None) -> None:
        mult = np.asarray(mult).reshape(-1)
        n = int(np.prod(shape))
        hi, lo = (np.asarray(a).reshape(mult.size, -1) if np.size(a) in (mult.size, mult.size * n) else
                  np.asarray(a).reshape(-1) for a in (hi, lo))
        if not (mult.size >= 1 and hi.shape == lo.shape and hi.ndim == 2 and hi.shape[1] in (1, n)):
            raise ValueError(f"Elastic: mult needs one value per spike step and hi, lo one per step (or per step "
                             f"and neuron), got {mult.size}, {np.shape(hi)}, {np.shape(lo)}")
        period, phase = check_gate(period, phase)
        super().__init__(shape=shape, T=int(mult.size), period=period, phase=phase, name=name,
                         log_config=log_config)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.m = Var(shape=shape, init=0)
        self.u = Var(shape=shape, init=0)
        self.t = Var(shape=(1,), init=0)
        self.mult = Var(shape=(mult.size,), init=mult)
        self.hi = Var(shape=hi.shape, init=hi)  # (T, 1) or (T, n): row k broadcasts over the neurons
        self.lo = Var(shape=lo.shape, init=lo)
        self.bias = Var(shape=shape, init=bias)


class AbstractPyElasticModel(PhaseGate, PyLoihiProcessModel):
    """The gated update; `membrane` holds the one line that differs between fixed and float."""

    def membrane(self, x: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def run_spk(self) -> None:
        if not self.on_phase():
            self.idle(self.a_in, self.s_out)
            return
        x = self.a_in.recv()
        k = int(self.t[0]) % int(self.proc_params["T"])
        self.m[:] = self.membrane(x, k)
        self.u[:] = (self.m > self.hi[k]).astype(self.u.dtype) - (self.m < self.lo[k]).astype(self.u.dtype)
        self.t[0] += 1
        self.s_out.send(self.u)


@implements(proc=Elastic, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyElasticModelFixed(AbstractPyElasticModel):
    """m_t = clip(d * (1 - u_{t-1}) + x_t + bias, -(2**23 - 1), 2**23 - 1) with p = m_{t-1} * mult_t and
    d = sign(p) * (|p| >> 12): integer add, shift, compare and multiply by constants only."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=UV_BITS)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=2)
    m: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=2)
    t: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)
    mult: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)
    hi: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)
    lo: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)

    def membrane(self, x: np.ndarray, k: int) -> np.ndarray:
        p = self.m.astype(np.int64) * np.int64(self.mult[k])  # up to 46 bits: int64, never int32
        kept = np.sign(p) * np.right_shift(np.abs(p), MULTIPLIER_SHIFT)
        m = kept * (1 - self.u.astype(np.int64)) + x.astype(np.int64) + self.bias.astype(np.int64)
        return np.clip(m, -UV_MAX, UV_MAX)


@implements(proc=Elastic, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyElasticModelFloat(AbstractPyElasticModel):
    """m_t = (m_{t-1} * mult_t) * (1 - u_{t-1}) + x_t + bias, in float64."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    m: np.ndarray = LavaPyType(np.ndarray, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    t: np.ndarray = LavaPyType(np.ndarray, int)
    mult: np.ndarray = LavaPyType(np.ndarray, float)
    hi: np.ndarray = LavaPyType(np.ndarray, float)
    lo: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)

    def membrane(self, x: np.ndarray, k: int) -> np.ndarray:
        return (self.m * self.mult[k]) * (1 - self.u) + x + self.bias


# -- SpikeRouter --------------------------------------------------------------------------------------------------
class SpikeRouter(AbstractProcess):
    """Routes n spikes into banks * P blocks of one output vector (P = 2 with `split`, else 1): at update t, bank
    b = t mod banks; block (b, 0) = [s > 0] and block (b, 1) = [s < 0] (split), or block (b, 0) = sign(s);
    every other block is 0. Block (b, q) holds elements (b P + q) n .. (b P + q + 1) n - 1.

    Vars: t (updates so far). Ports: s_in (n spikes), s_out (banks * P * n unit spikes).
    """

    def __init__(self, *, size: int, banks: int = 1, split: bool = True, period: int = 1, phase: int = 0,
                 name: str | None = None, log_config: LogConfig | None = None) -> None:
        size, banks = int(size), int(banks)
        if size < 1 or banks < 1:
            raise ValueError(f"SpikeRouter: size and banks must be >= 1, got {size}, {banks}")
        period, phase = check_gate(period, phase)
        blocks = banks * (2 if split else 1)
        super().__init__(size=size, banks=banks, split=bool(split), period=period, phase=phase, name=name,
                         log_config=log_config)
        self.s_in = InPort(shape=(size,))
        self.s_out = OutPort(shape=(blocks * size,))
        self.t = Var(shape=(1,), init=0)


class AbstractPySpikeRouterModel(PhaseGate, PyLoihiProcessModel):
    def run_spk(self) -> None:
        if not self.on_phase():
            self.idle(self.s_in, self.s_out)
            return
        s = self.s_in.recv()
        params = self.proc_params
        n, split = params["size"], params["split"]
        out = np.zeros(self.s_out.shape)  # the channel casts to the port's type: 0, 1, -1 exactly
        first = (int(self.t[0]) % params["banks"]) * (2 if split else 1) * n
        if split:
            out[first:first + n] = s > 0
            out[first + n:first + 2 * n] = s < 0
        else:
            out[first:first + n] = np.sign(s)
        self.t[0] += 1
        self.s_out.send(out)


@implements(proc=SpikeRouter, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySpikeRouterModelFixed(AbstractPySpikeRouterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=UV_BITS)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=2)
    t: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=UV_BITS)


@implements(proc=SpikeRouter, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySpikeRouterModelFloat(AbstractPySpikeRouterModel):
    s_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    t: np.ndarray = LavaPyType(np.ndarray, int)


# -- Relay (floating_pt; fixed_pt is Lava's GradedVec) -----------------------------------------------------------
class Relay(AbstractProcess):
    """Sends its synaptic input on in the same step: s_out = a_in (LoihiRelay's float form; GradedVec with
    vth = 0 in fixed_pt, lava/proc/graded/process.py, has no floating_pt model)."""

    def __init__(self, *, shape: tuple[int, ...], name: str | None = None,
                 log_config: LogConfig | None = None) -> None:
        super().__init__(shape=shape, name=name, log_config=log_config)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)


@implements(proc=Relay, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyRelayModelFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self) -> None:
        self.s_out.send(self.a_in.recv())


# -- PhasedLIF ----------------------------------------------------------------------------------------------------
class PhasedLIF(LIF):
    """Lava's LIF (same constructor, Vars and ports) with the phase gate: `period`, `phase` (module docstring)."""

    def __init__(self, *, period: int = 1, phase: int = 0, **kwargs: ty.Any) -> None:
        period, phase = check_gate(period, phase)
        super().__init__(period=period, phase=phase, **kwargs)


class _GatedLif:
    """run_spk of a LIF model, gated: Lava's LIF step in the process's slot, nothing else."""

    def run_spk(self) -> None:
        if self.on_phase():
            super().run_spk()
        else:
            self.idle(self.a_in, self.s_out)


@implements(proc=PhasedLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPhasedLifModelFixed(_GatedLif, PhaseGate, AbstractPyLifModelFixed):
    """PyLifModelBitAcc's arithmetic (its s_out and vth types and threshold methods, borrowed, not copied)."""

    s_out: PyOutPort = PyLifModelBitAcc.s_out
    vth: int = PyLifModelBitAcc.vth
    scale_threshold = PyLifModelBitAcc.scale_threshold
    spiking_activation = PyLifModelBitAcc.spiking_activation

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.effective_vth = 0  # as PyLifModelBitAcc.__init__


@implements(proc=PhasedLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPhasedLifModelFloat(_GatedLif, PhaseGate, AbstractPyLifModelFloat):
    """PyLifModelFloat's arithmetic (its s_out and vth types and spiking activation, borrowed, not copied)."""

    s_out: PyOutPort = PyLifModelFloat.s_out
    vth: float = PyLifModelFloat.vth
    spiking_activation = PyLifModelFloat.spiking_activation


PROCESSES: tuple[type[AbstractProcess], ...] = (Elastic, SpikeRouter, Relay, PhasedLIF)


def model_for(process: type[AbstractProcess], select_tag: str) -> type[PyLoihiProcessModel]:
    """The model of this module that implements `process` with `select_tag` (what Loihi2SimCfg would pick).
    spikecc's own runs name it per process instance (exception_proc_model_map), so Lava never searches
    spikecc's package directories for models."""
    found = [m for m in globals().values() if isinstance(m, type) and issubclass(m, PyLoihiProcessModel)
             and getattr(m, "implements_process", None) is process and select_tag in getattr(m, "tags", ())]
    if len(found) != 1:
        raise LookupError(f"{len(found)} models of {process.__name__} have the tag {select_tag!r}")
    return found[0]
