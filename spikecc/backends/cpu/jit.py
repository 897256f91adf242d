"""Compiled (numba) inner loops of the simulator's hot paths, for nodes run over all steps at once.

Each loop is the same arithmetic as the numpy `step` of its kernel, in the same order (no fast-math, so
no reassociation or fused multiply-adds): float results are bit-identical and the fixed-point ones are
Lava's integer rules exactly. Tests compare the two paths.

- `gather`: y[t] = sum over non-zero x[t, i], in ascending i, of x[t, i] * W^T[i, :]  (event-driven: work
  is spikes x fan-out; the order equals scipy's CSR x dense product, which it replaces for dense layers).
- `loihi_neuron_float` / `loihi_neuron_fixed`: Loihi 2 LIF / TernaryLIF over T steps (spikecc.ir.loihi_ops).
"""

from __future__ import annotations

import numpy as np
from numba import njit

UV_MAX = 2**23
DECAY_SHIFT = 12
ACT_SHIFT = 6


@njit(cache=True)
def gather(x: np.ndarray, wt: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """x (T, n_in), wt (n_in, n_out) -> (y (T, n_out), events per input (n_in,)); binary: every non-zero
    input counts as 1."""
    steps, n_in = x.shape
    n_out = wt.shape[1]
    out = np.zeros((steps, n_out), dtype=wt.dtype)
    events = np.zeros(n_in, dtype=np.int64)
    for t in range(steps):
        row = out[t]
        for i in range(n_in):
            xi = x[t, i]
            if xi != 0:
                events[i] += 1
                w = wt[i]
                if binary:
                    for j in range(n_out):
                        row[j] += w[j]
                else:
                    for j in range(n_out):
                        row[j] += xi * w[j]
    return out, events


@njit(cache=True)
def loihi_neuron_float(a, keep_u, keep_v, bias, in_scale, hi, lo, ternary, u, v, record):
    """u <- u*keep_u + a*in_scale; v <- v*keep_v + u + bias; s = [v > hi] - ternary*[v < lo]; v <- 0 where s.
    `u`, `v` are updated in place; returns (spikes, u trace, v trace, events, negative events) (traces empty
    unless `record`).
    Written without branches in the neuron loop so that it vectorises."""
    steps, n = a.shape
    out = np.zeros((steps, n))
    rec = steps if record else 0
    tu = np.empty((rec, n))
    tv = np.empty((rec, n))
    events = 0
    negative = 0
    for t in range(steps):
        at = a[t]
        ot = out[t]
        for i in range(n):
            ui = u[i] * keep_u[i] + (at[i] * in_scale if in_scale != 1.0 else at[i])
            vi = v[i] * keep_v[i] + ui + bias[i]
            s = (1.0 if vi > hi[i] else 0.0) - (1.0 if (ternary and vi < lo[i]) else 0.0)
            v[i] = vi if s == 0.0 else 0.0
            u[i] = ui
            ot[i] = s
            events += s != 0.0
            negative += s < 0.0
        if record:
            tu[t] = u
            tv[t] = v
    return out, tu, tv, events, negative


@njit(cache=True)
def _wrap32(x: np.int64) -> np.int64:
    return ((x + 2**31) & (2**32 - 1)) - 2**31


@njit(cache=True)
def _decay(x: np.int64, keep: np.int64) -> np.int64:
    """sign(x*keep) * (|x*keep| >> 12): Lava's decay truncates toward zero."""
    p = x * keep
    if p >= 0:
        return p >> DECAY_SHIFT
    return -((-p) >> DECAY_SHIFT)


@njit(cache=True)
def loihi_neuron_fixed(a, keep_u, keep_v, bias, hi, lo, ternary, u, v, record):
    """Lava's PyLifModelBitAcc / PyTernLifModelFixed step (see spikecc.backends.cpu.loihi_ops) over T steps:

        a  = wrap32(a);  cur = wrap32(decay(u, keep_u) + wrap32(a << 6))
        u  = cur - 2^24 if cur > 2^23;  wrap32(cur + 2^24) if (that) <= -2^23;  else cur
        v  = clip(wrap32(decay(v, keep_v) + u + bias), -(2^23 - 1), 2^23 - 1)
        s  = [v > hi] - ternary*[v < lo];  v <- 0 where s != 0          (hi, lo already << 6)
    """
    steps, n = a.shape
    out = np.zeros((steps, n), dtype=np.int64)
    rec = steps if record else 0
    tu = np.empty((rec, n), dtype=np.int64)
    tv = np.empty((rec, n), dtype=np.int64)
    events = 0
    negative = 0
    for t in range(steps):
        for i in range(n):
            ai = _wrap32(a[t, i])
            cur = _wrap32(_decay(u[i], keep_u[i]) + _wrap32(ai << ACT_SHIFT))
            ui = cur - 2 * UV_MAX if cur > UV_MAX else cur
            if ui <= -UV_MAX:
                ui = _wrap32(cur + 2 * UV_MAX)
            u[i] = ui
            vi = _wrap32(_decay(v[i], keep_v[i]) + ui + bias[i])
            if vi > UV_MAX - 1:
                vi = UV_MAX - 1
            elif vi < -UV_MAX + 1:
                vi = -UV_MAX + 1
            s = 0
            if vi > hi[i]:
                s = 1
            elif ternary and vi < lo[i]:
                s = -1
            if s != 0:
                vi = 0
            v[i] = vi
            out[t, i] = s
            events += s != 0
            negative += s < 0
            if record:
                tu[t, i] = ui
                tv[t, i] = vi
    return out, tu, tv, events, negative
