"""The compiled (numba) loops equal the numpy step-by-step kernels exactly, wrap and saturation included."""

from __future__ import annotations

import numpy as np
import pytest

from spikecc.backends.cpu.kernels import BuildContext, build_kernel
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.signals import BINARY


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
