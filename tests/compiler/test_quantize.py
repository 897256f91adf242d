"""quantize_for_loihi: integer fields in Loihi 2's ranges, scales and errors annotated, float ~ fixed."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from spikecc.backends.cpu import simulate
from spikecc.compiler.passes import lower_for_loihi, quantize_for_loihi, quantize_inputs
from spikecc.compiler.passes.quantize import quantize_weights, weight_grid
from spikecc.errors import BackendError
from spikecc.ir import Graph, LoihiDense, LoihiLIF, LoihiTernaryLIF, TernaryLIF, read, write
from spikecc.ir.formats import is_fixed

DT = 1e-4


def lif(n: int, rng, vth=1.0) -> nir.LIF:
    beta = rng.uniform(0.8, 0.95, n)
    tau = DT / (1 - beta)
    return nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(n), v_threshold=np.full(n, vth), v_reset=np.zeros(n))


def ff_net(seed=0, sizes=(16, 24, 8), signal=None, bias=True) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.array([sizes[0]])}))
    if signal:
        g.annotate("in", signal=signal)
    prev = "in"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0, 1.5 / np.sqrt(a), (b, a))
        g.add_node(f"fc{i}", nir.Affine(weight=w, bias=rng.normal(0, 0.02, b) if bias else np.zeros(b)))
        g.add_node(f"lif{i}", lif(b, rng))
        g.connect(prev, f"fc{i}")
        g.connect(f"fc{i}", f"lif{i}")
        prev = f"lif{i}"
    g.add_node("out", nir.Output(output_type={"output": np.array([sizes[-1]])}))
    g.connect(prev, "out")
    return g


def test_fields_are_integers_in_loihi_ranges_and_annotated():
    g = ff_net()
    q = quantize_for_loihi(lower_for_loihi(g))
    assert is_fixed(q)
    for name, op in q.nodes.items():
        ann = q.annotations.get(name, {})
        if isinstance(op, LoihiDense):
            w = op.weight
            assert w.dtype.kind == "i" and op.num_weight_bits == 8
            assert w.min() >= -256 and w.max() <= 255
            if w.min() < 0 < w.max():
                assert np.all(w % 2 == 0) and w.max() <= 254  # Lava's MIXED sign mode keeps even values
            assert -8 <= op.weight_exp <= 7
            assert ann["format"]["kind"] == "fixed" and ann["weight_scale"] > 0
            # rounding to the grid costs at most one grid step / 2 (mixed: step 2 units)
            assert ann["quant_error"] <= ann["weight_scale"] * (1 + 1e-9)
        if isinstance(op, LoihiLIF):
            assert op.du.dtype.kind == op.dv.dtype.kind == op.vth.dtype.kind == "i"
            assert np.all((0 <= op.du) & (op.du <= 4095) & (0 <= op.dv) & (op.dv <= 4095))
            assert np.all((0 <= op.vth) & (op.vth <= 2**17 - 1))
            assert np.all(np.abs(op.bias_mant) <= 4096) and np.all((0 <= op.bias_exp) & (op.bias_exp <= 7))
            assert ann["v_scale"] > 0 and set(ann["quant_error"]) >= {"du", "dv", "vth", "bias", "v_init"}
    # each neuron layer's largest weight sits at the top of the grid (the scale is aligned to it)
    assert max(abs(q.nodes["fc0"].weight.min()), q.nodes["fc0"].weight.max()) >= 254
    assert q.annotations["in"]["input_bits"] == 8
    # snntorch-style LIF: du = 1 -> 4095 exactly; v_float = v_int / v_scale
    assert np.all(q.nodes["lif0"].du == 4095)
    s = q.annotations["lif0"]["v_scale"]
    assert np.allclose(q.nodes["lif0"].vth * 64 / s, 1.0, rtol=1e-3)
    # v_init (non-zero: the Affine biases act before the first input) scales like v
    v_init = lower_for_loihi(g).nodes["lif1"].v_init
    assert np.any(v_init != 0) and q.nodes["lif1"].v_init.dtype.kind == "i"
    s1 = q.annotations["lif1"]["v_scale"]
    assert np.array_equal(q.nodes["lif1"].v_init, np.rint(s1 * v_init))
    assert q.annotations["lif1"]["quant_error"]["v_init"] <= 0.5 / s1


def test_quantized_graph_round_trips_through_nir_file(tmp_path):
    q = quantize_for_loihi(lower_for_loihi(ff_net()))
    write(q, tmp_path / "q.nir")
    back = read(tmp_path / "q.nir")
    assert is_fixed(back)
    assert np.array_equal(back.nodes["fc1"].weight, q.nodes["fc1"].weight)
    assert back.annotations["lif1"]["v_scale"] == q.annotations["lif1"]["v_scale"]


def test_fixed_point_spike_counts_close_to_float():
    g = ff_net(seed=1, sizes=(20, 40, 10))
    low = lower_for_loihi(g)
    q = quantize_for_loihi(low)
    x = (np.random.default_rng(2).random((300, 20)) < 0.3).astype(float)
    f = simulate(low, x).outputs["out"]
    fx = simulate(q, quantize_inputs(q, x), mode="fixed").outputs["out"]
    assert f.sum() > 100
    assert abs(int(fx.sum()) - f.sum()) <= 0.03 * f.sum()
    per_neuron = np.abs(fx.sum(0) - f.sum(0))
    assert per_neuron.max() <= max(3, 0.1 * f.sum(0).max())


def test_binary_input_and_worst_case_drive_do_not_overflow():
    """The scale is chosen so that even the worst step (every input with a weight of one sign spiking)
    keeps a_in within 16 bits and u from wrapping; check that bound on the integer weights, then drive."""
    g = ff_net(seed=3, signal={"kind": "binary"}, bias=False)
    with pytest.raises(BackendError, match="node 'fc0': Affine is not in Loihi form; lower the graph"):
        quantize_for_loihi(g)  # quantizing never lowers implicitly
    q = quantize_for_loihi(lower_for_loihi(g))
    assert q.nodes["fc0"].num_message_bits == 0 and q.annotations["in"]["input_bits"] == 0
    for name in ("fc0", "fc1"):
        op = q.nodes[name]
        w = op.weight * 2.0**op.weight_exp
        worst = np.maximum(np.clip(w, 0, None).sum(1), np.clip(-w, 0, None).sum(1)).max()
        assert 2**13 < worst < 2**15  # within 16 bits, and not wastefully small
    r = simulate(q, np.ones((50, 16)), mode="fixed", record_states=["lif0", "lif1"], record=["fc0"])
    assert np.abs(r.traces["fc0"]).max() < 2**15
    for name in ("lif0", "lif1"):
        assert np.abs(r.states[name]["u"]).max() < 2**23


def test_quantize_inputs_and_graded_scale():
    g = ff_net(seed=4, bias=False)
    q = quantize_for_loihi(lower_for_loihi(g), input_bits=6, input_range=2.0)
    assert q.nodes["fc0"].num_message_bits == 6
    scale = q.annotations["in"]["input_scale"]
    assert scale == pytest.approx(2.0 / 31)
    x = np.array([[0.0, 1.0, -2.0, 5.0] + [0.0] * 12])
    assert quantize_inputs(q, x)["in"][0, :4].tolist() == [0, 16, -31, 31]  # round(x/scale), clipped to 5 bits


def test_weight_grid_and_reduced_weight_bits():
    assert weight_grid(8, mixed=True) == (2, -256, 254)
    assert weight_grid(8, mixed=False) == (1, 0, 255)
    assert weight_grid(4, mixed=False) == (16, 0, 240)
    assert quantize_weights(np.array([-1.0, -0.5, 0.25]), 1 / 256, 8).tolist() == [-256, -128, 64]
    assert quantize_weights(np.array([-1.0, -0.3]), 1 / 255, 8).tolist() == [-255, -76]  # inhibitory: odd allowed
    q = quantize_for_loihi(lower_for_loihi(ff_net(seed=5)), weight_bits=4)
    w = q.nodes["fc1"].weight
    assert q.nodes["fc1"].num_weight_bits == 4 and np.all(w % 32 == 0)  # mixed, 4 bits: multiples of 2**5


def test_ternary_thresholds_and_input_graph_unchanged():
    rng = np.random.default_rng(6)
    n = 8
    tau = DT / rng.uniform(0.1, 0.3, n)
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.array([5])}))
    g.add_node("fc", nir.Linear(weight=rng.normal(0, 1, (n, 5))))
    g.add_node("t", TernaryLIF(tau=tau, r=tau / DT, v_leak=np.zeros(n), v_threshold_hi=np.full(n, 0.5),
                               v_threshold_lo=np.full(n, -0.25), v_reset=np.zeros(n), amplitude=0.5))
    g.add_node("fc2", nir.Linear(weight=rng.normal(0, 1, (3, n))))
    g.add_node("l", lif(3, rng, vth=0.4))
    g.add_node("out", nir.Output(output_type={"output": np.array([3])}))
    for a, b in [("in", "fc"), ("fc", "t"), ("t", "fc2"), ("fc2", "l"), ("l", "out")]:
        g.connect(a, b)
    low = lower_for_loihi(g)
    q = quantize_for_loihi(low)
    t = q.nodes["t"]
    assert isinstance(t, LoihiTernaryLIF) and t.vth_hi.dtype.kind == "i"
    s = q.annotations["t"]["v_scale"]
    assert np.allclose(t.vth_hi * 64 / s, 0.5, rtol=1e-3) and np.allclose(t.vth_lo * 64 / s, -0.25, rtol=1e-3)
    assert isinstance(low.nodes["fc"].weight[0, 0], float) and not is_fixed(low)
    x = np.random.default_rng(7).normal(0, 1, (200, 5))
    f = simulate(low, x).outputs["out"].sum()
    fx = simulate(q, quantize_inputs(q, x), mode="fixed").outputs["out"].sum()
    assert f > 20 and abs(fx - f) <= 0.1 * f


def test_negative_threshold_is_rejected():
    g = ff_net(seed=8)
    low = lower_for_loihi(g)
    low.nodes["lif0"].vth = -low.nodes["lif0"].vth
    with pytest.raises(BackendError, match="node 'lif0'.*threshold"):
        quantize_for_loihi(low)


def test_li_readout_and_dense_into_output_quantize():
    """A LI readout's integer v maps back through v_scale; a Dense straight into an Output through
    output_scale (fed by the input spikes, so only quantization separates float and fixed)."""
    rng = np.random.default_rng(9)
    tau = DT / np.full(3, 0.1)
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.array([8])}))
    g.annotate("in", signal={"kind": "binary"})
    g.add_node("fc_r", nir.Linear(weight=rng.normal(0, 1, (3, 8))))
    g.add_node("li", nir.LI(tau=tau, r=tau / DT, v_leak=np.zeros(3)))
    g.add_node("out_r", nir.Output(output_type={"output": np.array([3])}))
    g.add_node("fc_o", nir.Linear(weight=rng.normal(0, 1, (2, 8))))
    g.add_node("out_o", nir.Output(output_type={"output": np.array([2])}))
    for a, b in [("in", "fc_r"), ("fc_r", "li"), ("li", "out_r"), ("in", "fc_o"), ("fc_o", "out_o")]:
        g.connect(a, b)
    low = lower_for_loihi(g)
    q = quantize_for_loihi(low)
    assert q.nodes["li"].vth[0] == 2**17 - 1  # never fires unless v saturates
    x = (rng.random((100, 8)) < 0.4).astype(float)
    f = simulate(low, x, record_states=["li"])
    fx = simulate(q, quantize_inputs(q, x), mode="fixed", record_states=["li"])
    v_f, v_q = f.states["li"]["v"], fx.states["li"]["v"] / q.annotations["li"]["v_scale"]
    assert np.abs(v_f).max() > 0.5 and np.abs(v_q - v_f).max() < 0.01 * np.abs(v_f).max()
    o_f, o_q = f.outputs["out_o"], fx.outputs["out_o"] * q.annotations["out_o"]["output_scale"]
    assert np.abs(o_f).max() > 0.5 and np.abs(o_q - o_f).max() < 0.01 * np.abs(o_f).max()


def test_cuba_u_init_scales_like_u_and_fits_the_u_register():
    """A CubaLIF's Affine bias starts u at u_init != 0 (lower_for_loihi); quantized like u, and the scale
    leaves room for it: S (in_max / du + |u_init|) < 2**23. A CubaLI readout with the bias: the fixed-point v
    follows the float one from the first step (both start at their prepared state)."""
    rng = np.random.default_rng(4)
    n = 4
    tau_mem, tau_syn = DT / np.full(n, 0.5), DT / np.full(n, 0.3)
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.array([8])}), signal={"kind": "binary"})
    g.add_node("fc", nir.Affine(weight=rng.normal(0, 1, (n, 8)), bias=np.full(n, 0.5)))
    g.add_node("li", nir.CubaLI(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / DT, v_leak=np.zeros(n), w_in=np.ones(n)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "fc"), ("fc", "li"), ("li", "out")]:
        g.connect(a, b)
    low = lower_for_loihi(g)
    q = quantize_for_loihi(low)
    s, u_init = q.annotations["li"]["v_scale"], low.nodes["li"].u_init
    assert np.all(u_init < 0) and np.array_equal(q.nodes["li"].u_init, np.rint(s * u_init))
    w = q.nodes["fc"].weight * 2.0 ** q.nodes["fc"].weight_exp * 64
    worst = np.maximum(np.clip(w, 0, None).sum(1), np.clip(-w, 0, None).sum(1))
    assert np.all(worst / ((q.nodes["li"].du + 1) / 4096) + np.abs(q.nodes["li"].u_init) < 2**23)
    x = (rng.random((100, 8)) < 0.4).astype(float)
    v_f = simulate(low, x, record_states=["li"]).states["li"]["v"]
    v_q = simulate(q, quantize_inputs(q, x), mode="fixed", record_states=["li"]).states["li"]["v"] / s
    assert np.abs(v_f).max() > 0.5 and np.abs(v_q - v_f).max() < 0.01 * np.abs(v_f).max()


def test_leaky_readout_never_fires_in_fixed_point_and_tracks_float():
    """A CubaLI readout's v can grow far beyond the LIF thresholds of a network; the quantizer bounds its
    scale so that v stays below the largest Loihi threshold (a readout that fired would reset its v)."""
    import nir

    from spikecc.backends.cpu import simulate
    from spikecc.compiler.passes.lower_loihi import lower_for_loihi
    from spikecc.compiler.passes.quantize import quantize_for_loihi, quantize_inputs
    from spikecc.ir import Graph

    rng = np.random.default_rng(3)
    n_in, n = 20, 4
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([n_in])}))
    g.annotate("in", signal={"kind": "binary", "amplitude": 1.0, "bits": 0, "scale": 1.0})
    g.add_node("fc", nir.Linear(weight=np.abs(rng.normal(0, 3.0, (n, n_in)))))
    dt = 1e-4
    g.add_node("ro", nir.CubaLI(tau_syn=np.full(n, dt / 0.5), tau_mem=np.full(n, dt / 0.2), r=np.full(n, 50.0),
                                v_leak=np.zeros(n), w_in=np.ones(n)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "fc"), ("fc", "ro"), ("ro", "out")]:
        g.connect(a, b)
    x = (rng.random((150, n_in)) < 0.8).astype(float)  # strong, sustained drive: large v
    lowered = lower_for_loihi(g)
    q = quantize_for_loihi(lowered)
    ro = [name for name in q.nodes if q.annotation(name, "readout") == "v"][0]
    v_float = simulate(lowered, x, record_states=[ro]).states[ro]["v"]
    res = simulate(q, quantize_inputs(q, x), mode="fixed", record_states=[ro])
    v_fixed = res.states[ro]["v"] / q.annotation(ro, "v_scale")
    assert res.counts[ro].events == 0  # it never fired (a fire would reset v to 0)
    assert v_float.max() > 1e3  # the float readout does climb high
    np.testing.assert_allclose(v_fixed, v_float, rtol=0.02, atol=0.02 * np.abs(v_float).max())
