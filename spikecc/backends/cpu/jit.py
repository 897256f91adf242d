"""Compiled (numba) inner loops of the simulator's hot paths, for nodes run over all steps at once.

Each loop is the same arithmetic as the numpy `step` of its kernel (no fast-math, so no reassociation or
fused multiply-adds): float results are bit-identical and the fixed-point ones are Lava's integer rules
exactly. Tests compare the two paths.

- `gather`: y[t] = sum over non-zero x[t, i], in ascending i, of x[t, i] * W^T[i, :]  (event-driven: work
  is spikes x fan-out; the order equals scipy's CSR x dense product, which it replaces for dense layers).
- `gather_fixed`: Lava's fixed-point Dense over 8-bit weights with 32-bit accumulators (see its docstring).
- `loihi_neuron_float` / `loihi_neuron_fixed`: Loihi 2 LIF / TernaryLIF over T steps (spikecc.ir.loihi_ops).

Compilation and its cache. numba compiles a loop on its first call in a process, which takes seconds; with
`cache=True` it writes the machine code beside this file (`__pycache__/jit.*.nbi|nbc`, or under
NUMBA_CACHE_DIR / the user's cache directory when that is not writable) and later processes load it in
milliseconds. Three things defeated that cache, and `Loop` guards against each:

1. One compiled version per argument *type*: a read-only view (np.broadcast_to) and a writable array of the
   same dtype are different numba types, so varying callers compiled the same loop again. Each loop here
   has a fixed list of signatures; the kernels pass exactly those types, and further compilation is
   switched off, so a caller passing something else fails in tests instead of compiling silently.
2. Processes that compile at once (pytest -n 2, Dask workers on a fresh install) race on numba's cache
   index: two processes can give different signatures the same data file name, and the index can then point
   one signature at the other's machine code. A loop's first use takes an exclusive file lock in the cache
   directory, so one process compiles and writes while the others wait and then load.
3. No writable cache directory (a read-only install and home): numba refuses `cache=True` when the module
   is imported. Then the loops compile without a cache (every process pays), with one warning that says
   how to fix it (set NUMBA_CACHE_DIR).

What no cache removes: importing numba and initialising its compiler on the first call, ~0.3-0.5 s per
process (measured on the 2-core development machine); `cache_events()` tells callers whether a timed
call loaded or compiled loops.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
from numba import njit, types

UV_MAX = 2**23
DECAY_SHIFT = 12
ACT_SHIFT = 6

_I64_2D, _F64_2D = types.int64[:, ::1], types.float64[:, ::1]
_I64_1D, _F64_1D = types.int64[::1], types.float64[::1]
_I32_2D = types.int32[:, ::1]


class JitCacheWarning(UserWarning):
    """numba's on-disk cache is unavailable: compiled loops are rebuilt in every process."""


@contextlib.contextmanager
def _exclusive(directory: str | None):
    """An inter-process lock (flock on a file in `directory`); a no-op where that is impossible."""
    try:
        import fcntl
    except ImportError:  # Windows: numba's own guard against concurrent writers is all there is
        yield
        return
    try:
        os.makedirs(directory or tempfile.gettempdir(), exist_ok=True)
        fd = os.open(os.path.join(directory or tempfile.gettempdir(), "spikecc-jit.lock"), os.O_RDWR | os.O_CREAT,
                     0o666)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Loop:
    """A numba-compiled loop with a fixed list of signatures, compiled (or loaded from numba's disk cache)
    on first use under an inter-process lock, and closed to further compilation (see the module docstring)."""

    def __init__(self, fn: Callable, signatures: list[tuple]) -> None:
        self.signatures = signatures
        self.__doc__, self.__name__ = fn.__doc__, fn.__name__
        try:
            self.dispatcher = njit(cache=True)(fn)
            self.cached = True
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            self.dispatcher = njit(fn)
            self.cached = False
            self.why = str(exc)
        self.ready = False

    def prepare(self) -> None:
        if self.ready:
            return
        if not self.cached:
            warnings.warn(f"spikecc: numba cannot cache the simulator's compiled loops ({self.why}); they are "
                          "compiled in every process: set NUMBA_CACHE_DIR to a writable directory",
                          JitCacheWarning, stacklevel=3)
        with _exclusive(self.dispatcher.stats.cache_path if self.cached else None):
            for sig in self.signatures:
                self.dispatcher.compile(sig)
        self.dispatcher.disable_compile()
        self.ready = True

    def __call__(self, *args):
        if not self.ready:
            self.prepare()
        return self.dispatcher(*args)


def loop(*signatures: tuple) -> Callable[[Callable], Loop]:
    return lambda fn: Loop(fn, list(signatures))


LOOPS: list[Loop] = []


def cache_events() -> tuple[int, int]:
    """(loaded from numba's disk cache, compiled) signatures in this process so far, over all loops."""
    loaded = sum(sum(lp.dispatcher.stats.cache_hits.values()) for lp in LOOPS)
    compiled = sum(sum(lp.dispatcher.stats.cache_misses.values()) for lp in LOOPS)
    return loaded, compiled


# -- float and int64 gather --------------------------------------------------------------------------------
@loop((_F64_2D, _F64_2D, types.boolean), (_I64_2D, _I64_2D, types.boolean))
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


# -- fixed-point Dense over 8-bit weights ------------------------------------------------------------------
@loop(*[(x, w, types.boolean, types.int64, types.int64)
        for x in (_I64_2D, types.int8[:, ::1]) for w in (types.int8[:, ::1], types.uint8[:, ::1])])
def gather_fixed(x, w8, binary, factor, weight_exp):
    """Lava's PyDenseModelBitAcc (lava/proc/dense/models.py:77-107) for all steps, on 8-bit weights.

    The effective integer weights W (spikecc.backends.cpu.loihi_ops.effective_weights) lie in [-256, 255]
    and always fit 8 bits with a per-layer factor: W = factor * w8 with factor 2 (MIXED sign mode: even
    values; w8 int8), 1 (EXCITATORY, w8 uint8) or -1 (INHIBITORY, w8 = -W uint8). So one byte is read per
    synaptic event, as Loihi stores it.

        acc[t]  = sum over non-zero x[t, i], ascending i, of (binary ? 1 : x[t, i]) * w8[i, :]   (mod 2**32)
        a[t]    = wrap32(factor * acc[t]) << weight_exp    (wrapping)   if weight_exp >= 0
                  wrap32(factor * acc[t]) >> -weight_exp   (arithmetic) otherwise

    Sums and products are kept mod 2**32 in an int32 accumulator, which is exact for Lava's int32 graded
    product W.dot(s) and its wrapping int32 output port; Lava's binary sum is int64 and is shifted before the
    wrap, so the caller uses this loop for binary inputs only where |sum| < 2**31 (n_in * 256 < 2**31).
    Integer sums do not depend on the order, so each step first lists its non-zero inputs and then adds
    their rows four at a time: one pass over the accumulator per four events. The accumulator is a local
    vector and the arithmetic explicitly int32, so LLVM vectorises the row adds (measured: 3-5x faster than
    adding one row at a time into the output row).
    `x` is int64 (payloads) or int8 (the spikes of a fixed-point neuron loop).
    Returns (a (T, n_out) int32, events per input (n_in,)).
    """
    steps, n_in = x.shape
    n_out = w8.shape[1]
    out = np.empty((steps, n_out), dtype=np.int32)
    events = np.zeros(n_in, dtype=np.int64)
    acc = np.zeros(n_out, dtype=np.int32)
    idx = np.empty(n_in, dtype=np.int64)
    val = np.empty(n_in, dtype=np.int32)
    for t in range(steps):
        k = 0
        for i in range(n_in):
            xi = x[t, i]
            if xi != 0:
                idx[k] = i
                val[k] = 1 if binary else np.int32(xi)  # mod 2**32, like the product
                k += 1
                events[i] += 1
        acc[:] = 0
        m = 0
        while m + 4 <= k:
            w0, w1, w2, w3 = w8[idx[m]], w8[idx[m + 1]], w8[idx[m + 2]], w8[idx[m + 3]]
            if binary:
                for j in range(n_out):
                    acc[j] += np.int32(w0[j]) + np.int32(w1[j]) + np.int32(w2[j]) + np.int32(w3[j])
            else:
                v0, v1, v2, v3 = val[m], val[m + 1], val[m + 2], val[m + 3]
                for j in range(n_out):
                    acc[j] += (v0 * np.int32(w0[j]) + v1 * np.int32(w1[j]) + v2 * np.int32(w2[j])
                               + v3 * np.int32(w3[j]))
            m += 4
        for r in range(m, k):
            w, v = w8[idx[r]], val[r]
            for j in range(n_out):
                acc[j] += v * np.int32(w[j])
        for j in range(n_out):
            a = np.int64(np.int32(factor * np.int64(acc[j])))
            out[t, j] = np.int32(a << weight_exp) if weight_exp >= 0 else np.int32(a >> -weight_exp)
    return out, events


# -- neurons -----------------------------------------------------------------------------------------------
@loop((_F64_2D, _F64_1D, _F64_1D, _F64_1D, types.float64, _F64_1D, _F64_1D, types.boolean, _F64_1D, _F64_1D,
       types.boolean))
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


@njit(cache=True, inline="always")
def _wrap32(x: np.int64) -> np.int64:
    return np.int64(np.int32(x))  # two's-complement truncation to 32 bits


@njit(cache=True, inline="always")
def _decay(x: np.int64, keep: np.int64) -> np.int64:
    """sign(x*keep) * (|x*keep| >> 12): Lava's decay truncates toward zero (a select, no branch)."""
    p = x * keep
    q = np.abs(p) >> DECAY_SHIFT
    return q if p >= 0 else -q


@loop((_I32_2D, _I64_1D, _I64_1D, _I64_1D, _I64_1D, _I64_1D, types.boolean, _I64_1D, _I64_1D, types.boolean))
def loihi_neuron_fixed(a, keep_u, keep_v, bias, hi, lo, ternary, u, v, record):
    """Lava's PyLifModelBitAcc / PyTernLifModelFixed step (see spikecc.backends.cpu.loihi_ops) over T steps,
    `a` the int32 synaptic input (already wrapped, as Lava's int32 port delivers it):

        cur = wrap32(decay(u, keep_u) + wrap32(a << 6))
        u   = cur - 2^24 if cur > 2^23;  wrap32(cur + 2^24) if (that) <= -2^23;  else cur
        v   = clip(wrap32(decay(v, keep_v) + u + bias), -(2^23 - 1), 2^23 - 1)
        s   = [v > hi] - ternary*[v < lo];  v <- 0 where s != 0          (hi, lo already << 6)

    One time step's neurons are independent, and every line is a select rather than a branch, so the
    neuron loop vectorises. Returns (spikes int8: 1/8 of the memory of int64, u trace, v trace, events,
    negative events).
    """
    steps, n = a.shape
    out = np.empty((steps, n), dtype=np.int8)
    rec = steps if record else 0
    tu = np.empty((rec, n), dtype=np.int64)
    tv = np.empty((rec, n), dtype=np.int64)
    events = 0
    negative = 0
    for t in range(steps):
        at = a[t]
        ot = out[t]
        for i in range(n):
            cur = _wrap32(_decay(u[i], keep_u[i]) + _wrap32(np.int64(at[i]) << ACT_SHIFT))
            ui = cur - 2 * UV_MAX if cur > UV_MAX else cur
            ui = _wrap32(cur + 2 * UV_MAX) if ui <= -UV_MAX else ui
            vi = _wrap32(_decay(v[i], keep_v[i]) + ui + bias[i])
            vi = min(max(vi, -UV_MAX + 1), UV_MAX - 1)
            up = np.int64(vi > hi[i])
            down = np.int64(ternary and vi < lo[i])
            s = up - down
            u[i] = ui
            v[i] = vi if s == 0 else 0
            ot[i] = np.int8(s)
            events += up + down
            negative += down
        if record:
            tu[t] = u
            tv[t] = v
    return out, tu, tv, events, negative


LOOPS.extend([gather, gather_fixed, loihi_neuron_float, loihi_neuron_fixed])
