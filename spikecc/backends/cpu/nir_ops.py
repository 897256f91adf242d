"""CPU lowerings of NIR's standard ops (float mode).

Discretisation (forward Euler with step dt = graph.dt, 1e-4 s unless set), one step per dt:

    LIF:      v <- v + dt/tau * (v_leak - v + r*I);            s = [v > v_threshold];  v <- v_reset where s
    IF:       v <- v + dt * r * I;                              s = [v > v_threshold];  v <- v_reset where s
    CubaLIF:  I_syn <- I_syn + dt/tau_syn * (-I_syn + w_in*x);  then LIF's update of v driven by I_syn
    LI:       v <- v + dt/tau * (v_leak - v + r*I);             output v
    CubaLI:   CubaLIF without spikes;                           output v
    I:        v <- v + dt * r * I;                              output v
    Threshold: s = [x > threshold]            Scale: y = s * x            Delay: y[t] = x[t - round(d/dt)]
    Affine/Linear/Conv/Pool: y = M x + b (see spikecc.ir.linear_maps), gathered event by event.

With snntorch's export (dt = 1e-4, tau = dt/(1-beta), r = tau/dt) the LIF line is v <- beta*v + I, which
is snntorch's Leaky(reset_mechanism="zero") spike for spike (checked in tests/backends/test_vs_snntorch.py);
CubaLIF likewise gives Synaptic: I_syn <- alpha*I_syn + x, v <- beta*v + I_syn.
"""

from __future__ import annotations

import nir
import numpy as np
import scipy.sparse as sp

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, per_neuron, require_float
from spikecc.errors import BackendError
from spikecc.ir.infer import linear_rows
from spikecc.ir.linear_maps import LINEAR_NIR_OPS, as_matrix
from spikecc.ir.ops import TernaryLIF


class Source(Kernel):
    """Input node: replays the user's array (validated and flattened by the simulator)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: np.ndarray | None = None
        self.t = 0

    def reset(self) -> None:
        super().reset()
        self.t = 0

    def step(self, x):
        out = self.data[self.t]
        self.t += 1
        return out

    def run(self, xs, steps, record):
        return self.data[:steps], {}


class Identity(Kernel):
    def step(self, x):
        return x["input"]

    def run(self, xs, steps, record):
        return xs["input"], {}


@lowers(nir.Input)
def lower_input(op, ctx: BuildContext) -> Kernel:
    return Source()


@lowers(nir.Output, nir.Flatten)
def lower_identity(op, ctx: BuildContext) -> Kernel:
    return Identity()


class MatrixSynapse(Kernel):
    """y = M x + b, event-driven: each step only the rows of M^T of non-zero inputs are gathered, so the
    work is (non-zero inputs) x (fan-out). Synaptic operations are counted the same way.

    With `rows` > 1 the input is R vectors of n_in (a sequence of token vectors) and M applies to each.
    """

    def __init__(self, m: sp.csr_matrix | None, bias: np.ndarray | None, dtype, rows: int = 1,
                 dense: np.ndarray | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.bias = None if bias is None or not np.any(bias) else bias.astype(dtype)
        self.dtype = dtype
        self.in_place = dense is not None
        if dense is not None:
            # a dense (n_out, n_in) weight is used in place through a transposed view: no CSR or dense copies, so
            # a 216M-parameter model's matrices are held once. Products go to BLAS on the whole view (gathering rows
            # of a transposed view reads it strided, slower than multiplying the zeros); synapses are still counted
            # per non-zero input.
            self.n_out, self.n_in = dense.shape
            self.fanout = np.count_nonzero(dense, axis=0).astype(np.int64)
            self.dense_t = np.asarray(dense, dtype=dtype).T
            self.sparse_t = None
            return
        self.n_out, self.n_in = m.shape
        density = m.nnz / max(1, m.shape[0] * m.shape[1])
        mt = m.T.tocsr()
        self.fanout = np.diff(mt.indptr).astype(np.int64)  # synapses leaving each input
        self.dense_t = mt.toarray().astype(dtype) if density > 0.05 else None
        self.sparse_t = mt.astype(dtype)

    def step(self, x):
        v = x["input"]
        if self.rows > 1:
            return self.run({"input": v[None]}, 1, False)[0][0]
        idx = np.flatnonzero(v)
        self.synops += int(self.fanout[idx].sum())
        if self.in_place or (self.dense_t is not None and len(idx) == self.n_in):
            out = v @ self.dense_t  # in place, or every input is non-zero (real-valued): nothing to gather
        elif self.dense_t is not None:
            out = v[idx] @ self.dense_t[idx]
        else:
            out = self.sparse_t[idx].T @ v[idx]
        if self.bias is not None:
            out = out + self.bias
        return out.astype(self.dtype, copy=False)

    def rest_output(self):
        return self.bias

    def run(self, xs, steps, record):
        x = xs["input"].reshape(steps * self.rows, self.n_in)
        nz = x != 0
        self.synops += int(nz.sum(axis=0) @ self.fanout)
        if self.in_place:
            # step by step, each step the same BLAS call as `step` makes, so both give the same floats
            per_step = x.reshape(steps, self.rows, self.n_in)
            out = np.stack([(xt[0] @ self.dense_t)[None] if self.rows == 1 else xt @ self.dense_t
                            for xt in per_step]).reshape(steps * self.rows, self.n_out)
        else:
            # scipy's CSR x dense product walks the non-zeros of x: the event-driven gather, for all steps.
            rhs = self.dense_t if self.dense_t is not None else self.sparse_t
            out = sp.csr_matrix(x) @ rhs
            out = out.toarray() if sp.issparse(out) else np.asarray(out)
        if self.bias is not None:
            out = out + self.bias
        return out.astype(self.dtype, copy=False).reshape(steps, self.rows * self.n_out), {}


@lowers(*LINEAR_NIR_OPS)
def lower_linear(op, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    in_shape = ctx.in_shapes["input"]
    rows = linear_rows(op, in_shape) if isinstance(op, (nir.Affine, nir.Linear)) else 1
    if isinstance(op, (nir.Affine, nir.Linear)) and np.ndim(op.weight) == 2 \
            and np.count_nonzero(op.weight) > 0.05 * np.size(op.weight):
        bias = np.asarray(op.bias, dtype=np.float64).reshape(-1) if isinstance(op, nir.Affine) else None
        return MatrixSynapse(None, bias, ctx.dtype, rows=max(1, rows), dense=np.asarray(op.weight))
    m, bias = as_matrix(op, in_shape)
    return MatrixSynapse(m, bias, ctx.dtype, rows=max(1, rows))


class ScaleKernel(Kernel):
    """y = s * x elementwise: a one-to-one synapse, one synaptic operation per non-zero input (a spike
    arriving at a residual sum is one accumulate)."""

    def __init__(self, scale: np.ndarray) -> None:
        super().__init__()
        self.scale = scale
        self.fanout = np.ones(scale.shape, dtype=np.int64)  # synapses leaving each input

    def step(self, x):
        self.synops += int(np.count_nonzero(x["input"]))
        return x["input"] * self.scale

    def run(self, xs, steps, record):
        self.synops += int(np.count_nonzero(xs["input"]))
        return xs["input"] * self.scale, {}


@lowers(nir.Scale)
def lower_scale(op: nir.Scale, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return ScaleKernel(per_neuron(op.scale, ctx.size, ctx.dtype))


class ThresholdKernel(Kernel):
    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.threshold = threshold

    def step(self, x):
        return (x["input"] > self.threshold).astype(self.threshold.dtype)

    def run(self, xs, steps, record):
        return (xs["input"] > self.threshold).astype(self.threshold.dtype), {}


@lowers(nir.Threshold)
def lower_threshold(op: nir.Threshold, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return ThresholdKernel(per_neuron(op.threshold, ctx.size, ctx.dtype))


class DelayKernel(Kernel):
    """y[t] = x[t - d] per element (zeros before the first input arrives)."""

    def __init__(self, steps: np.ndarray, size: int, dtype) -> None:
        super().__init__()
        self.d = steps
        self.size, self.dtype = size, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.buf = np.zeros((int(self.d.max()) + 1, self.size), dtype=self.dtype)
        self.t = 0

    def step(self, x):
        n = len(self.buf)
        self.buf[self.t % n] = x["input"]
        out = self.buf[(self.t - self.d) % n, np.arange(self.size)]
        out = np.where(self.t >= self.d, out, 0)
        self.t += 1
        return out.astype(self.dtype)

    def run(self, xs, steps, record):
        x = xs["input"]
        t = np.arange(steps)[:, None] - self.d[None, :]
        out = np.where(t >= 0, x[np.clip(t, 0, None), np.arange(self.size)[None, :]], 0)
        return out.astype(self.dtype), {}


@lowers(nir.Delay)
def lower_delay(op: nir.Delay, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    steps = np.rint(per_neuron(op.delay, ctx.size) / ctx.dt).astype(np.int64)
    if np.any(steps < 0):
        raise BackendError(f"node '{ctx.name}': negative delay; delays must be >= 0 seconds")
    return DelayKernel(steps, ctx.size, ctx.dtype)


class NonFiniteState(ArithmeticError):
    """A neuron's state left the finite floats (forward Euler with dt/tau >= 2 grows without bound until it
    overflows). Raised by the kernel with the step where known; the simulator adds the node's name and
    turns it into a BackendError."""

    def __init__(self, var: str, value: float, why: str, step: int | None = None) -> None:
        super().__init__(var, value, why, step)
        self.var, self.value, self.why, self.step = var, value, why, step


class LeakyNeuron(Kernel):
    """Shared body of the NIR neurons (see the module docstring for each equation).

    v <- v + alpha * (v_leak - v) + gain * I   (alpha = dt/tau, gain = dt/tau * r; IF/I: alpha = 0, gain = dt*r)
    with an optional synaptic current I <- I + alpha_syn * (-I + w_in * x) in front (Cuba*), and an
    optional threshold with reset (the spiking kinds).

    A state that becomes inf or NaN stops the run (NonFiniteState): a spiking neuron's output stays 0/1
    while its v or current is already garbage, so the state itself is checked every step.
    """

    state_names = ("v",)

    def __init__(self, size, dtype, alpha, gain, v_leak, threshold=None, v_reset=None,
                 alpha_syn=None, w_in=None) -> None:
        super().__init__()
        self.size, self.dtype = size, dtype
        self.alpha, self.gain, self.v_leak = alpha, gain, v_leak
        self.threshold, self.v_reset = threshold, v_reset
        self.alpha_syn, self.w_in = alpha_syn, w_in
        self.limit = float(np.finfo(dtype).max)  # largest finite value of the simulation's dtype
        if alpha_syn is not None:
            self.state_names = ("v", "i_syn")
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.v = np.zeros(self.size, dtype=self.dtype)
        self.i_syn = np.zeros(self.size, dtype=self.dtype)

    def step(self, x):
        return self.update(x["input"], checked=True)

    def update(self, drive, checked: bool):
        """One step; `checked`: stop (NonFiniteState) on a non-finite state before the reset hides it."""
        if self.alpha_syn is not None:
            self.i_syn = self.i_syn + self.alpha_syn * (self.w_in * drive - self.i_syn)
            drive = self.i_syn
        self.v = self.v + self.alpha * (self.v_leak - self.v) + self.gain * drive
        if checked:
            self.check_finite()
        if self.threshold is None:
            return self.v.copy()
        s = self.v > self.threshold
        self.v = np.where(s, self.v_reset, self.v)
        return s.astype(self.dtype)

    def check_finite(self) -> None:
        """Raise NonFiniteState if a state variable is inf or NaN in the simulation's dtype (a float32 run
        overflows at 3.4e38 while the state is still float64). One sum per variable and step: only a sum
        outside the dtype's range (inf, NaN, or huge values) leads to the element-wise check."""
        for var in self.state_names:
            value = getattr(self, var)
            total = value.sum()
            if -self.limit <= total <= self.limit:
                continue
            value = value.astype(self.dtype, copy=False)
            if not np.isfinite(value).all():
                raise NonFiniteState(var, float(value[~np.isfinite(value)][0]), self.instability())

    def instability(self) -> str:
        """Why the state may have overflowed: the largest per-step decay at or above 1, if any."""
        parts = []
        for what, frac in (("dt/tau", self.alpha), ("dt/tau_syn", self.alpha_syn)):
            worst = float(np.max(frac)) if frac is not None and np.size(frac) else 0.0
            if worst >= 1:
                parts.append(f"{what} = {worst:.4g} >= 1 makes forward Euler overshoot")
        return "; ".join(parts) or "its input or parameters are too large for float"

    def run(self, xs, steps, record):
        """All steps at once for a neuron outside any loop: `step`'s arithmetic, in a tight loop.

        The loop itself does not check the state (a check per step costs a third of the loop); the outputs
        and the final state are checked once, and only when they hold inf or NaN the run is repeated with
        checks to find the step. (A +inf that a spiking neuron resets in the same step leaves no trace; it
        needs dt/tau > 2, which the load warning names.)"""
        x_all = xs["input"]
        out = np.empty((steps, self.size), dtype=self.dtype)
        states = {n: np.empty((steps, self.size), dtype=self.dtype) for n in self.state_names} if record else {}
        for t in range(steps):
            out[t] = self.update(x_all[t], checked=False)
            if record:
                for n in self.state_names:
                    states[n][t] = getattr(self, n)
        if not (np.isfinite(out).all() and all(np.isfinite(np.asarray(getattr(self, n), dtype=self.dtype)).all()
                                               for n in self.state_names)):
            self.reset()
            for t in range(steps):
                try:
                    self.update(x_all[t], checked=True)
                except NonFiniteState as exc:
                    exc.step = t
                    raise
        return out, states


def _lif_parts(op, ctx: BuildContext):
    n, dt = ctx.size, ctx.dt
    tau = per_neuron(op.tau, n)
    return dict(alpha=dt / tau, gain=dt / tau * per_neuron(op.r, n), v_leak=per_neuron(op.v_leak, n))


def _cuba_parts(op, ctx: BuildContext):
    n, dt = ctx.size, ctx.dt
    tau_mem, tau_syn = per_neuron(op.tau_mem, n), per_neuron(op.tau_syn, n)
    return dict(alpha=dt / tau_mem, gain=dt / tau_mem * per_neuron(op.r, n), v_leak=per_neuron(op.v_leak, n),
                alpha_syn=dt / tau_syn, w_in=per_neuron(op.w_in, n))


def _spiking(op, ctx: BuildContext):
    return dict(threshold=per_neuron(op.v_threshold, ctx.size), v_reset=per_neuron(op.v_reset, ctx.size))


@lowers(nir.LIF)
def lower_lif(op: nir.LIF, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_lif_parts(op, ctx), **_spiking(op, ctx))


@lowers(nir.LI)
def lower_li(op: nir.LI, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_lif_parts(op, ctx))


@lowers(nir.CubaLIF)
def lower_cubalif(op: nir.CubaLIF, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_cuba_parts(op, ctx), **_spiking(op, ctx))


@lowers(nir.CubaLI)
def lower_cubali(op: nir.CubaLI, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_cuba_parts(op, ctx))


def _integrator_parts(op, ctx: BuildContext):
    return dict(alpha=0.0, gain=ctx.dt * per_neuron(op.r, ctx.size), v_leak=0.0)


@lowers(nir.IF)
def lower_if(op: nir.IF, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_integrator_parts(op, ctx), **_spiking(op, ctx))


@lowers(nir.I)
def lower_i(op: nir.I, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LeakyNeuron(ctx.size, ctx.dtype, **_integrator_parts(op, ctx))


class TernaryNeuron(LeakyNeuron):
    """TernaryLIF: LIF's v update, then s = +a (v > hi), -a (v < lo), 0; v <- v_reset where s != 0."""

    def __init__(self, size, dtype, hi, lo, amplitude, **parts) -> None:
        super().__init__(size, dtype, **parts)
        self.hi, self.lo, self.amplitude = hi, lo, amplitude

    def update(self, drive, checked: bool):
        self.v = self.v + self.alpha * (self.v_leak - self.v) + self.gain * drive
        if checked:
            self.check_finite()
        pos, neg = self.v > self.hi, self.v < self.lo
        self.v = np.where(pos | neg, self.v_reset, self.v)
        return (pos.astype(self.dtype) - neg.astype(self.dtype)) * self.amplitude


@lowers(TernaryLIF)
def lower_ternary_lif(op: TernaryLIF, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    n = ctx.size
    return TernaryNeuron(n, ctx.dtype, per_neuron(op.v_threshold_hi, n), per_neuron(op.v_threshold_lo, n),
                         float(op.amplitude), v_reset=per_neuron(op.v_reset, n), **_lif_parts(op, ctx))
