"""CPU kernels of the Loihi ops: hand-worked fixed-point steps from Lava's rules, float equations, and a
direct bit-exact comparison with Lava's own fixed_pt process models."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from spikecc.backends.cpu import simulate
from spikecc.backends.cpu.loihi_ops import effective_weights, wrap32
from spikecc.errors import BackendError
from spikecc.ir import Graph, LoihiDense, LoihiLIF, LoihiTernaryLIF

V_MAX = 2**23 - 1


def chain(n_in: int, layers: list[tuple[LoihiDense, object]], input_signal: dict | None = None) -> Graph:
    """Input -> (Dense -> neuron)* -> Output, nodes named d0, n0, d1, n1, ..."""
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    if input_signal:
        g.annotate("in", signal=input_signal)
    prev = "in"
    for i, (dense, neuron) in enumerate(layers):
        g.add_node(f"d{i}", dense)
        g.add_node(f"n{i}", neuron)
        g.connect(prev, f"d{i}")
        g.connect(f"d{i}", f"n{i}")
        prev = f"n{i}"
    g.add_node("out", nir.Output(output_type={"output": np.array([layers[-1][1].du.size])}))
    g.connect(prev, "out")
    return g


def lif(n=1, du=4095, dv=0, vth=1000, bias_mant=0, bias_exp=0, v_init=0) -> LoihiLIF:
    full = lambda v: np.broadcast_to(np.asarray(v), (n,)).copy()  # noqa: E731
    return LoihiLIF(du=full(du), dv=full(dv), vth=full(vth), bias_mant=full(bias_mant), bias_exp=full(bias_exp),
                    v_init=full(v_init))


def run_fixed(g: Graph, x, record=("n0",)):
    return simulate(g, np.asarray(x), mode="fixed", record_states=list(record))


# -- a transcription of Lava's fixed-point rules in plain Python ints, one neuron, for cross-checks ---------
def lava_lif_reference(a_seq, du, dv, vth, bias, v0=0):
    """Scalar Python-int reading of PyLifModelBitAcc (lava/proc/lif/models.py:138-216): one neuron whose
    v starts at v0 (the process's v initial value), u at 0."""
    u, v = 0, v0
    out = []
    for a in a_seq:
        p = u * (4096 - (du + 1))
        u = (abs(p) >> 12) * (1 if p >= 0 else -1) + (a << 6)
        if u > 2**23:
            u -= 2**24
        elif u <= -(2**23):
            u += 2**24
        q = v * (4096 - dv)
        v = max(-V_MAX, min(V_MAX, (abs(q) >> 12) * (1 if q >= 0 else -1) + u + bias))
        s = v > (vth << 6)
        if s:
            v = 0
        out.append((u, v, int(s)))
    return out


# -- hand-worked fixed-point steps ------------------------------------------------------------------------
def test_fixed_lif_decay_truncates_toward_zero_and_dense_delays_one_step():
    # weight 10, spike at step 0 -> a = 10 arrives at step 1 (Dense delay): u = 10 << 6 = 640.
    # du = 1000: u decays by (4096 - 1001)/4096: 640*3095 = 1980800, >> 12 = 483 (483.59 truncated).
    # dv = 300: v = 640 at step 1; step 2: 640*3796 >> 12 = 593 (593.1), + u 483 = 1076.
    g = chain(1, [(LoihiDense(weight=np.array([[10]])), lif(du=1000, dv=300, vth=10**5))])
    r = run_fixed(g, [[1], [0], [0]])
    assert r.states["n0"]["u"][:, 0].tolist() == [0, 640, 483]
    assert r.states["n0"]["v"][:, 0].tolist() == [0, 640, 1076]
    # negative: -640 decays to -483 (toward zero), not floor(-483.59) = -484
    g = chain(1, [(LoihiDense(weight=np.array([[-10]])), lif(du=1000, dv=300, vth=10**5))])
    r = run_fixed(g, [[1], [0], [0]])
    assert r.states["n0"]["u"][:, 0].tolist() == [0, -640, -483]
    assert r.states["n0"]["v"][:, 0].tolist() == [0, -640, -1076]


def test_fixed_lif_du_4095_is_no_current_memory_and_threshold_is_shifted_by_6():
    # du = 4095: the u decay is (4096 - 4096)/4096 = 0, so u = a << 6 exactly. vth = 10 -> 640 effective.
    g = chain(1, [(LoihiDense(weight=np.array([[5]])), lif(du=4095, dv=0, vth=10))])
    r = run_fixed(g, [[1], [1], [1], [0]])
    assert r.states["n0"]["u"][:, 0].tolist() == [0, 320, 320, 320]
    # v: 320, 640 (not > 640, no spike), 960 > 640 -> spike and reset to 0
    assert r.states["n0"]["v"][:, 0].tolist() == [0, 320, 640, 0]
    assert r.outputs["out"][:, 0].tolist() == [0, 0, 0, 1]


def test_fixed_bias_mantissa_and_exponent():
    # bias_mant = -5: bias_exp 3 -> -40 per step; bias_exp -1 -> -5 >> 1 = -3 (arithmetic shift floors)
    g = chain(2, [(LoihiDense(weight=np.zeros((2, 2), dtype=int)),
                   LoihiLIF(du=np.full(2, 4095), dv=np.zeros(2), vth=np.full(2, 100), bias_mant=np.array([-5, -5]),
                            bias_exp=np.array([3, -1])))])
    r = run_fixed(g, np.zeros((3, 2)))
    assert r.states["n0"]["v"].tolist() == [[-40, -3], [-80, -6], [-120, -9]]


def test_fixed_v_saturates_at_24_bits():
    # a = 255 << 7 = 32640 per step, << 6 = 2088960 into u (du = 4095: no memory), dv = 0: v grows by
    # 2088960 a step and saturates at 2**23 - 1; with vth = 2**17 (above any v) it never fires.
    g = chain(1, [(LoihiDense(weight=np.array([[255]]), weight_exp=7), lif(du=4095, dv=0, vth=2**17))])
    r = run_fixed(g, np.ones((7, 1)))
    assert r.states["n0"]["v"][:, 0].tolist() == [0, 2088960, 4177920, 6266880, 8355840, V_MAX, V_MAX]
    g = chain(1, [(LoihiDense(weight=np.array([[-255]]), weight_exp=7), lif(du=4095, dv=0, vth=2**17))])
    r = run_fixed(g, np.ones((7, 1)))
    assert r.states["n0"]["v"][-1, 0] == -V_MAX


def test_fixed_u_wraps_at_24_bits():
    # du = 0: u keeps 4095/4096 and gains 2088960 a step; it passes 2**23 at step 5 and wraps by -2**24.
    g = chain(1, [(LoihiDense(weight=np.array([[255]]), weight_exp=7), lif(du=0, dv=4095, vth=2**17))])
    r = run_fixed(g, np.ones((6, 1)))
    u = r.states["n0"]["u"][:, 0].tolist()
    assert u[:5] == [0, 2088960, 4177410, 6265350, 8352780]
    assert u[5] == 8352780 * 4095 // 4096 + 2088960 - 2**24 == -6337516
    ref = lava_lif_reference([0] + [255 * 128] * 5, du=0, dv=4095, vth=2**17, bias=0)
    assert u == [x[0] for x in ref]


def test_fixed_lif_matches_scalar_reference_on_random_drive():
    rng = np.random.default_rng(3)
    w = rng.integers(-256, 256, (1, 8))
    x = (rng.random((60, 8)) < 0.6).astype(int)
    # v_init: the state starts below zero (how lower_for_loihi prepares a neuron for its input delay)
    g = chain(8, [(LoihiDense(weight=w, weight_exp=4),
                   lif(du=700, dv=150, vth=3000, bias_mant=-77, bias_exp=2, v_init=-123457))])
    r = run_fixed(g, x)
    a = (x @ effective_weights(w, 8)[0]) << 4
    ref = lava_lif_reference([0, *a[:-1].tolist()], du=700, dv=150, vth=3000, bias=-77 * 4, v0=-123457)
    assert ref[0][1] == -((123457 * (4096 - 150)) >> 12) - 77 * 4  # step 0 decays v_init, adds the bias
    assert r.states["n0"]["u"][:, 0].tolist() == [t[0] for t in ref]
    assert r.states["n0"]["v"][:, 0].tolist() == [t[1] for t in ref]
    assert r.outputs["out"][:, 0].tolist() == [t[2] for t in ref]


def test_effective_weights_follow_lava_sign_modes():
    # mixed: clip to [-256, 255], then drop the lowest bit (even values only)
    assert effective_weights(np.array([[-300, -256, -3, 3, 255, 300]]), 8).tolist() == [[-256, -256, -4, 2, 254, 254]]
    # excitatory with 6 weight bits: multiples of 4, clipped to 255 first
    assert effective_weights(np.array([[0, 3, 4, 7, 300]]), 6).tolist() == [[0, 0, 4, 4, 252]]
    # inhibitory: the same on -W, so truncation is toward zero
    assert effective_weights(np.array([[-3, -255, -300]]), 8).tolist() == [[-3, -255, -255]]
    assert effective_weights(np.array([[-3, -7]]), 6).tolist() == [[0, -4]]


def test_fixed_dense_weight_exp_and_binary_cast():
    # weight_exp < 0 floors the summed input: (-3) >> 1 = -2; a graded -1 input counts as -1, a binary one as +1
    w = np.array([[-3, -5]])  # one-signed (inhibitory), so odd values survive
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([2])}))
    g.add_node("bin", LoihiDense(weight=w, weight_exp=-1))
    g.add_node("gr", LoihiDense(weight=w, weight_exp=-1, num_message_bits=8))
    g.add_node("out_b", nir.Output(output_type={"output": np.array([1])}))
    g.add_node("out_g", nir.Output(output_type={"output": np.array([1])}))
    for a, b in [("in", "bin"), ("in", "gr"), ("bin", "out_b"), ("gr", "out_g")]:
        g.connect(a, b)
    x = np.array([[1, 0], [-1, 0], [0, 3], [0, 0]])
    r = simulate(g, x, mode="fixed")
    assert r.outputs["out_b"][:, 0].tolist() == [0, -2, -2, -3]  # one step late: -3>>1, -3>>1, -5>>1
    assert r.outputs["out_g"][:, 0].tolist() == [0, -2, 1, -8]  # -3>>1, 3>>1, -15>>1
    assert wrap32(np.array([2**31, -(2**31) - 1])).tolist() == [-(2**31), 2**31 - 1]


def test_fixed_ternary_lif_spikes_both_ways_and_resets():
    g = chain(1, [(LoihiDense(weight=np.array([[3]]), num_message_bits=8),
                   LoihiTernaryLIF(du=np.array([4095]), dv=np.array([0]), vth_hi=np.array([5]),
                                   vth_lo=np.array([-5]), bias_mant=np.array([0]), bias_exp=np.array([0])))])
    r = run_fixed(g, [[1], [1], [-1], [-1], [-1], [0]])
    # u = +-192 per step; thresholds +-320: v 192, 384 -> +1 and reset; -192, -384 -> -1
    assert r.states["n0"]["v"][:, 0].tolist() == [0, 192, 0, -192, 0, -192]
    assert r.outputs["out"][:, 0].tolist() == [0, 0, 1, 0, -1, 0]


def test_fixed_mode_rejects_float_parameters():
    g = chain(1, [(LoihiDense(weight=np.array([[0.5]])), lif())])
    with pytest.raises(BackendError, match="integer weights"):
        run_fixed(g, [[1]])


# -- float mode -------------------------------------------------------------------------------------------------
def test_float_lif_equations():
    # u = u(1-du) + a; v = v(1-dv) + u + bias_mant*2**bias_exp; s = v > vth; weight_exp scales W
    g = chain(1, [(LoihiDense(weight=np.array([[0.75]]), weight_exp=1),
                   LoihiLIF(du=np.array([0.5]), dv=np.array([0.25]), vth=np.array([3.0]), bias_mant=np.array([0.25]),
                            bias_exp=np.array([1])))])
    r = simulate(g, np.array([[1.0], [0.0], [0.0], [0.0]]), record_states=["n0"])
    # a(1) = 1.5. u: 0, 1.5, 0.75, 0.375. v: 0.5, 0.375+1.5+0.5 = 2.375, 1.78125+0.75+0.5 = 3.03125 > 3 -> 0
    assert np.allclose(r.states["n0"]["u"][:, 0], [0, 1.5, 0.75, 0.375])
    assert np.allclose(r.states["n0"]["v"][:, 0], [0.5, 2.375, 0.0, 0.875])
    assert r.outputs["out"][:, 0].tolist() == [0, 0, 1, 0]


def test_float_lif_starts_at_u_init_v_init_and_reset_returns_there():
    # u(0) = u_init (1 - du) + a(0); v(0) = v_init (1 - dv) + u(0) + bias
    g = chain(1, [(LoihiDense(weight=np.ones((2, 1))),
                   LoihiLIF(du=np.full(2, 0.5), dv=np.full(2, 0.25), vth=np.full(2, 3.0), bias_mant=np.full(2, 0.25),
                            bias_exp=np.zeros(2), v_init=np.array([-2.0, 3.5]), u_init=np.array([0.0, -1.0])))])
    from spikecc.backends.cpu import Simulator

    sim = Simulator(g)
    for _ in range(2):  # a second run starts from (u_init, v_init) again
        r = sim.run(np.zeros((3, 1)), record_states=["n0"])
        assert np.allclose(r.states["n0"]["u"], [[0, -0.5], [0, -0.25], [0, -0.125]])
        # neuron 0: -2 * 0.75 + 0.25 = -1.25, then -0.6875, -0.265625; neuron 1: 3.5 * 0.75 - 0.5 + 0.25 = 2.375, ...
        assert np.allclose(r.states["n0"]["v"][:, 0], [-1.25, -0.6875, -0.265625])
        assert np.allclose(r.states["n0"]["v"][:, 1], [2.375, 1.78125, 1.4609375])


def test_float_mode_of_a_quantized_node_tracks_fixed_mode():
    """Annotated fixed_point, float mode runs the integer parameters without rounding: close to fixed."""
    rng = np.random.default_rng(0)
    w = rng.integers(-256, 256, (20, 30)) // 2 * 2
    g = chain(30, [(LoihiDense(weight=w, weight_exp=-2), lif(20, du=2000, dv=500, vth=400, bias_mant=100, bias_exp=1))])
    g.annotate("d0", fixed_point=True)
    g.annotate("n0", fixed_point=True)
    x = (rng.random((200, 30)) < 0.3).astype(int)
    fixed = simulate(g, x, mode="fixed").outputs["out"].sum()
    ideal = simulate(g, x, mode="float").outputs["out"].sum()
    assert fixed > 100 and abs(fixed - ideal) <= 0.05 * fixed


# -- Lava's own fixed_pt models --------------------------------------------------------------------------------
def run_lava_fixed(g: Graph, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Build g in Lava 0.10 (RingBuffer source, Dense, LIF/TernaryLIF, Monitors on u and v), run it with
    Loihi2SimCfg(select_tag="fixed_pt"), return {neuron: {"u": (T, n), "v": (T, n)}}."""
    pytest.importorskip("spikecc.lava_compat")
    import spikecc.lava_compat  # noqa: F401  (the Python 3.11 import hook)

    lava_lif = pytest.importorskip("lava.proc.lif.process")
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    steps = len(x)
    procs, mons = {}, []
    for name, op in g.nodes.items():
        if isinstance(op, nir.Input):
            procs[name] = RingBuffer(data=np.asarray(x).reshape(steps, -1).T.astype(np.int32))
        elif isinstance(op, LoihiDense):
            procs[name] = Dense(weights=np.asarray(op.weight, dtype=np.int64), weight_exp=int(op.weight_exp),
                                num_weight_bits=int(op.num_weight_bits), num_message_bits=int(op.num_message_bits))
        elif isinstance(op, (LoihiLIF, LoihiTernaryLIF)):
            kw = dict(shape=(op.du.size,), du=op.du.astype(int), dv=op.dv.astype(int),
                      bias_mant=op.bias_mant.astype(int), bias_exp=op.bias_exp.astype(int), v=op.v_init.astype(int))
            if isinstance(op, LoihiLIF):
                procs[name] = lava_lif.LIF(vth=op.vth.astype(int), **kw)
            else:
                # TernaryLIF's vth_hi/vth_lo are (1,)-shaped ndarray Vars: one value per process
                procs[name] = lava_lif.TernaryLIF(vth_hi=int(op.vth_hi[0]), vth_lo=int(op.vth_lo[0]), **kw)
            for var in ("u", "v"):
                m = Monitor()
                m.probe(getattr(procs[name], var), steps)
                mons.append((name, var, m))
    for e in g.edges:
        if e.src in procs and e.dst in procs:
            src = procs[e.src].a_out if isinstance(g.nodes[e.src], LoihiDense) else procs[e.src].s_out
            src.connect(procs[e.dst].s_in if isinstance(g.nodes[e.dst], LoihiDense) else procs[e.dst].a_in)
    first = next(iter(procs.values()))
    first.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, var, m in mons:
            out.setdefault(name, {})[var] = np.asarray(m.get_data()[procs[name].name][var]).astype(np.int64)
    finally:
        first.stop()
    return out


def assert_bit_exact(g: Graph, x: np.ndarray) -> None:
    lava = run_lava_fixed(g, x)
    cpu = simulate(g, x, mode="fixed", record_states=list(lava)).states
    for name, states in lava.items():
        for var, ref in states.items():
            mismatch = np.argwhere(cpu[name][var] != ref)
            assert mismatch.size == 0, f"{name}.{var} differs first at (step, neuron) {mismatch[0].tolist()}"


def test_bit_exact_vs_lava_two_layer_lif_with_saturation_and_wrap():
    """2 layers, mixed/excitatory/inhibitory weights, weight_exp +-, num_weight_bits < 8, bias exponents,
    and drive strong enough to saturate v and wrap u."""
    rng = np.random.default_rng(7)
    n0, n1, n2 = 6, 5, 4
    w1 = rng.integers(-256, 256, (n1, n0))
    w1[0], w1[1] = 255, -256  # neuron 0/1: u wraps up / v saturates down under strong drive
    w2 = -rng.integers(0, 256, (n2, n1))
    w2[:, 0] = rng.integers(0, 256, n2)  # mixed
    g = chain(n0, [
        (LoihiDense(weight=w1, weight_exp=7, num_weight_bits=7),
         LoihiLIF(du=np.full(n1, 10), dv=np.full(n1, 5), vth=np.full(n1, 131071),
                  bias_mant=rng.integers(-4096, 4096, n1), bias_exp=np.array([0, 1, 2, 7, 3]))),
        (LoihiDense(weight=w2, weight_exp=-2),
         LoihiLIF(du=np.full(n2, 4095), dv=np.full(n2, 300), vth=np.full(n2, 40), bias_mant=np.full(n2, 900),
                  bias_exp=np.zeros(n2, dtype=int))),
    ])
    x = (rng.random((40, n0)) < 0.8).astype(int)
    assert_bit_exact(g, x)
    u = simulate(g, x, mode="fixed", record_states=["n0"]).states["n0"]
    assert u["u"].max() >= 2**23 - 2**21 and u["v"].min() == -V_MAX  # the traps were exercised


def test_bit_exact_vs_lava_ternary_graded_and_recurrent():
    """Graded input, a TernaryLIF read through a graded Dense (-1 stays -1), per-neuron du/dv, and a
    recurrent Dense from a LIF back to itself."""
    rng = np.random.default_rng(11)
    n = 6
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([n])}))
    g.add_node("d0", LoihiDense(weight=rng.integers(-256, 256, (n, n)), weight_exp=-3, num_message_bits=16))
    g.add_node("t0", LoihiTernaryLIF(du=rng.integers(0, 4096, n), dv=rng.integers(0, 4096, n),
                                     vth_hi=np.full(n, 900), vth_lo=np.full(n, -700),
                                     bias_mant=rng.integers(-50, 50, n), bias_exp=np.full(n, 2)))
    g.add_node("d1", LoihiDense(weight=rng.integers(-256, 256, (n, n)), weight_exp=3, num_message_bits=2))
    g.add_node("l1", LoihiLIF(du=np.full(n, 2000), dv=np.full(n, 400), vth=np.full(n, 300),
                              bias_mant=np.zeros(n, dtype=int), bias_exp=np.zeros(n, dtype=int)))
    g.add_node("rec", LoihiDense(weight=rng.integers(-256, 256, (n, n)), weight_exp=2))
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "d0"), ("d0", "t0"), ("t0", "d1"), ("d1", "l1"), ("l1", "rec"), ("rec", "l1"), ("l1", "out")]:
        g.connect(a, b)
    x = rng.integers(-3000, 3000, (40, n))
    assert_bit_exact(g, x)
    s = simulate(g, x, mode="fixed", record=["t0"]).traces["t0"]
    assert (s == -1).any() and (s == 1).any()


def test_bit_exact_vs_lava_on_a_lowered_and_quantized_nir_network():
    """The whole path: a 2-layer NIR network (Affine biases, per-neuron time constants, real-valued input)
    lowered and quantized by spikecc, then run by Lava's fixed_pt models and by the CPU simulator."""
    from spikecc.compiler.passes import lower_for_loihi, quantize_for_loihi, quantize_inputs

    rng = np.random.default_rng(13)
    dt = 1e-4
    g = Graph(metadata={"dt": dt})
    g.add_node("in", nir.Input(input_type={"input": np.array([10])}))
    prev = "in"
    for i, (a, b) in enumerate([(10, 12), (12, 5)]):
        tau = dt / rng.uniform(0.05, 0.25, b)
        g.add_node(f"fc{i}", nir.Affine(weight=rng.normal(0, 0.6, (b, a)), bias=rng.normal(0, 0.05, b)))
        g.add_node(f"lif{i}", nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(b), v_threshold=np.ones(b),
                                      v_reset=np.zeros(b)))
        g.connect(prev, f"fc{i}")
        g.connect(f"fc{i}", f"lif{i}")
        prev = f"lif{i}"
    g.add_node("out", nir.Output(output_type={"output": np.array([5])}))
    g.connect(prev, "out")
    q = quantize_for_loihi(lower_for_loihi(g))
    assert np.all(q.nodes["lif0"].v_init != 0)  # the biases act before the first input: v_init prepares for it
    x = quantize_inputs(q, rng.uniform(-1, 1, (30, 10)))["in"]
    assert_bit_exact(q, x)
    assert simulate(q, x, mode="fixed").outputs["out"].sum() > 0


def test_fixed_point_simulation_rejects_real_valued_inputs_instead_of_truncating():
    """Fixed point takes integer payloads; 0.5 must not silently become 0 (the same check as Lava's runner)."""
    import nir

    from spikecc.compiler.passes import lower_for_loihi, quantize_for_loihi
    from spikecc.errors import InputFileError
    from spikecc.ir import Graph

    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}))
    g.add_node("fc", nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)))
    g.add_node("lif", nir.LIF(tau=np.full(2, 1e-3), r=np.full(2, 10.0), v_leak=np.zeros(2), v_threshold=np.ones(2),
                              v_reset=np.zeros(2)))
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    for a, b in [("in", "fc"), ("fc", "lif"), ("lif", "out")]:
        g.connect(a, b)
    with pytest.raises(InputFileError, match="non-integer values.*quantize_inputs"):
        simulate(quantize_for_loihi(lower_for_loihi(g)), np.full((4, 3), 0.5), mode="fixed")


def test_bit_exact_vs_lava_graded_sums_that_overflow_int32_in_one_signed_layers():
    """24-bit graded payloads into excitatory-only and inhibitory-only layers of 64 inputs: W @ s passes
    2**31, so Lava's int32 product wraps before the weight exponent shifts it (right for one layer, left for
    the other); the simulator's 8-bit gather keeps its sums mod 2**32 and must land on the same bits."""
    rng = np.random.default_rng(5)
    n_in, n = 64, 8
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    for name, w, e in [("ex", rng.integers(0, 256, (n, n_in)), -4), ("inh", -rng.integers(0, 256, (n, n_in)), 3)]:
        g.add_node(name, LoihiDense(weight=w, weight_exp=e, num_message_bits=24))
        g.add_node(f"{name}_n", LoihiLIF(du=np.full(n, 4095), dv=np.full(n, 4095), vth=np.full(n, 2**16),
                                         bias_mant=np.zeros(n, dtype=int), bias_exp=np.zeros(n, dtype=int)))
        g.connect("in", name)
        g.connect(name, f"{name}_n")
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    g.connect("ex_n", "out")
    x = rng.integers(-(2**23), 2**23, (12, n_in))
    assert np.abs(x @ g.nodes["ex"].weight.T).max() > 2**31  # the sums do overflow int32
    assert_bit_exact(g, x)
