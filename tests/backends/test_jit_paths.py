"""The compiled (numba) loops equal the numpy step-by-step kernels exactly, wrap and saturation included;
the fixed-point gather equals Lava's Dense arithmetic written out here from its source; the loops are
compiled once per machine, not once per process, even when processes start together."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spikecc.backends.cpu import jit
from spikecc.backends.cpu.kernels import BuildContext, build_kernel
from spikecc.backends.cpu.loihi_ops import effective_weights
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.signals import BINARY

ROOT = Path(__file__).resolve().parents[2]


def ctx(name: str, n: int, n_in: int, mode: str) -> BuildContext:
    return BuildContext(name=name, in_shapes={"input": (n_in,)}, out_shape=(n,), in_signals={"input": BINARY},
                        dt=1e-4, mode=mode, dtype=np.dtype(np.int64 if mode == "fixed" else np.float64),
                        annotations={"fixed_point": mode == "fixed"})


def stepped(kernel, a: np.ndarray):
    kernel.reset()
    outs, us, vs = [], [], []
    for t in range(len(a)):
        outs.append(kernel.step({"input": a[t]}))
        us.append(kernel.u.copy())
        vs.append(kernel.v.copy())
    return np.stack(outs), np.stack(us), np.stack(vs)


@pytest.mark.parametrize("ternary", [False, True])
def test_fixed_neuron_loop_equals_numpy_steps_through_wrap_and_saturation(ternary):
    rng = np.random.default_rng(7)
    n, steps = 64, 200
    common = dict(du=rng.integers(0, 4096, n), dv=rng.integers(0, 4096, n), bias_mant=rng.integers(-4095, 4096, n),
                  bias_exp=rng.integers(0, 8, n), v_init=rng.integers(-(2**23) + 1, 2**23, n),
                  u_init=rng.integers(-(2**23) + 1, 2**23, n))
    if ternary:
        op = LoihiTernaryLIF(vth_hi=rng.integers(1, 2**17, n), vth_lo=-rng.integers(1, 2**17, n), **common)
    else:
        op = LoihiLIF(vth=rng.integers(1, 2**17, n), **common)
    # Inputs up to +-2^26 make a << 6 overflow int32 and u wrap; large biases drive v into saturation.
    a = rng.integers(-(2**26), 2**26, (steps, n))
    k = build_kernel(op, ctx("n", n, n, "fixed"))
    assert np.array_equal(k.v, op.v_init) and np.array_equal(k.u, op.u_init)  # both paths start there
    s_ref, u_ref, v_ref = stepped(k, a)
    k.reset()
    s, st = k.run({"input": a}, steps, True)
    assert np.array_equal(s, s_ref) and np.array_equal(st["u"], u_ref) and np.array_equal(st["v"], v_ref)
    if ternary:
        assert (s_ref > 0).any() and (s_ref < 0).any()
    else:
        assert np.abs(v_ref).max() == 2**23 - 1  # the run did reach saturation
        assert s_ref.any()


def test_float_neuron_loop_equals_numpy_steps_bitwise():
    rng = np.random.default_rng(8)
    n, steps = 40, 300
    op = LoihiTernaryLIF(du=rng.random(n), dv=rng.random(n) * 0.3, vth_hi=rng.random(n) + 0.5,
                         vth_lo=-rng.random(n) - 0.5, bias_mant=rng.normal(0, 0.05, n), bias_exp=np.zeros(n),
                         v_init=rng.normal(0, 0.5, n), u_init=rng.normal(0, 0.5, n))
    k = build_kernel(op, ctx("n", n, n, "float"))
    assert np.array_equal(k.v, op.v_init) and np.array_equal(k.u, op.u_init)
    a = rng.normal(0, 0.5, (steps, n))
    s_ref, u_ref, v_ref = stepped(k, a)
    k.reset()
    s, st = k.run({"input": a}, steps, True)
    assert np.array_equal(s, s_ref) and np.array_equal(st["u"], u_ref) and np.array_equal(st["v"], v_ref)
    assert (s_ref > 0).any() and (s_ref < 0).any()


@pytest.mark.parametrize("mode", ["float", "fixed"])
def test_compiled_gather_equals_stepwise_gather_and_counts_synops(mode):
    rng = np.random.default_rng(9)
    n_in, n_out, steps = 50, 30, 120
    w = rng.integers(-128, 128, (n_out, n_in)) * 2 if mode == "fixed" else rng.normal(0, 1, (n_out, n_in))
    op = LoihiDense(weight=w, weight_exp=-2 if mode == "fixed" else 0)
    x = (rng.random((steps, n_in)) < 0.2).astype(np.int64 if mode == "fixed" else np.float64)
    k = build_kernel(op, ctx("d", n_out, n_in, mode))
    ref = np.stack([k.step({"input": x[t]}) for t in range(steps)])
    synops_stepped = k.synops
    k.reset()
    out, _ = k.run({"input": x}, steps, False)
    assert np.array_equal(out, ref)
    assert k.synops == synops_stepped == int((x != 0).sum(axis=0) @ np.count_nonzero(w, axis=0))


def lava_dense(w: np.ndarray, weight_exp: int, graded: bool, x: np.ndarray) -> np.ndarray:
    """Lava's PyDenseModelBitAcc.run_spk (lava/proc/dense/models.py:77-107) on effective weights, all steps,
    in Python ints: graded W.dot(s) in int32 (wraps), binary column sums in int64; the exponent shift; the
    int32 output port (wraps)."""
    def wrap(v: int) -> int:
        return (v + 2**31) % 2**32 - 2**31

    out = []
    for row in x.tolist():
        acc = [sum(int(wj) * (xi if graded else int(xi != 0)) for wj, xi in zip(wr, row)) for wr in w.tolist()]
        acc = [wrap(a) for a in acc] if graded else acc
        out.append([wrap(a << weight_exp if weight_exp > 0 else a >> -weight_exp) for a in acc])
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("sign", ["excitatory", "inhibitory", "mixed"])
@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("weight_exp", [-3, 0, 5])
def test_fixed_gather_on_8bit_weights_equals_lavas_dense(sign, graded, weight_exp):
    """The 8-bit gather (w = factor * w8) in every sign mode and weight-bit count; graded payloads of up to
    2**24 make the int32 product and the shifted output wrap."""
    rng = np.random.default_rng(hash((sign, graded, weight_exp)) % 2**32)
    n_in, n_out, steps = 37, 23, 30
    w = rng.integers(0 if sign == "excitatory" else -300, 1 if sign == "inhibitory" else 300, (n_out, n_in))
    bits = int(rng.integers(3, 9))
    w_eff = effective_weights(w, bits)
    op = LoihiDense(weight=w, weight_exp=weight_exp, num_weight_bits=bits, num_message_bits=24 if graded else 0)
    k = build_kernel(op, ctx("d", n_out, n_in, "fixed"))
    assert k.w8 is not None and np.array_equal(k.w8.astype(np.int64) * k.factor, w_eff.T)  # the 8-bit path ran
    x = rng.integers(-(2**24), 2**24, (steps, n_in)) if graded else (rng.random((steps, n_in)) < 0.3).astype(int)
    x[rng.random(x.shape) < 0.5] = 0
    out, _ = k.run({"input": x}, steps, False)
    assert np.array_equal(out, lava_dense(w_eff, weight_exp, graded, x))
    k.reset()
    assert np.array_equal(np.stack([k.step({"input": x[t]}) for t in range(steps)]), out)  # numpy step path
    if graded:
        assert np.abs(x.astype(object) @ w_eff.T.astype(object)).max() > 2**31  # the wrap was exercised


def test_loops_take_one_type_per_argument_and_kernels_pass_it():
    """numba compiles a new version for a read-only array; the loops refuse one, the kernels copy it."""
    rng = np.random.default_rng(10)
    w = rng.integers(-128, 128, (8, 6)) * 2
    x = (rng.random((5, 6)) < 0.5).astype(np.int64)
    x.setflags(write=False)
    with pytest.raises(TypeError):
        jit.gather(x, np.ascontiguousarray(w.T), True)
    k = build_kernel(LoihiDense(weight=w), ctx("d", 8, 6, "fixed"))
    out, _ = k.run({"input": x}, 5, False)
    assert np.array_equal(out, lava_dense(w, 0, False, x))


CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    while not os.path.exists(sys.argv[1]):  # start the compile in both processes at once
        time.sleep(0.01)
    from spikecc.backends.cpu import jit
    a = np.full((2, 3), 100, dtype=np.int32)
    k = np.full(3, 4000, dtype=np.int64)
    s, _, _, events, _ = jit.loihi_neuron_fixed(a, k, k, k * 0, k * 0 + 6000, k * 0, False, k * 0, k * 0, False)
    print(*jit.cache_events(), int(s.sum()), events)
""")


def test_compiled_loops_are_cached_across_processes_and_compiled_once_when_processes_race(tmp_path):
    """Two processes start compiling the same loop at the same moment into an empty cache: the lock lets one
    compile and the other load (without it both compile); a third process then loads it and compiles
    nothing. Results are the same in all three."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    go = tmp_path / "go"
    cmd = [sys.executable, "-c", CHILD, str(go)]
    racers = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=300)[0].split() for p in racers]
    assert all(p.returncode == 0 for p in racers)
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True).stdout.split()
    assert sorted(int(o[1]) for o in outs) == [0, 1]  # compiled: by one process, loaded by the other
    assert third[:2] == ["1", "0"]  # loaded 1, compiled 0
    assert outs[0][2:] == outs[1][2:] == third[2:]
    assert list((tmp_path / "cache").rglob("*.nbi"))  # numba wrote its index under NUMBA_CACHE_DIR
