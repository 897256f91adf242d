"""lower_for_loihi: NIR graph -> LoihiDense + Loihi neurons (float form).

The central property: the lowered graph's spikes are the NIR graph's spikes shifted by one step per synapse
layer on the path (Lava's Dense delivers one step late), exactly, biases, v_leak and v_reset included: each
neuron's initial membrane value v_init undoes the bias-only steps before its first input arrives. Spike
trains are compared with ==: the two graphs' voltages differ only by float rounding, and a spike would
flip only if a voltage landed within ~1e-15 of a threshold, which random real weights never do."""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np
import pytest

from spikecc.backends.cpu import simulate
from spikecc.compiler.passes import lower_for_loihi
from spikecc.errors import BackendError
from spikecc.ir import Graph, LoihiDense, LoihiLIF, LoihiTernaryLIF, TernaryLIF
from spikecc.ir.ops import ExtensionOp

DT = 1e-4
RNG = np.random.default_rng(5)


def lif(n: int | tuple, beta=None, vth=1.0, r=None, v_leak=0.0, v_reset=0.0) -> nir.LIF:
    """snntorch-style LIF of shape n: tau = dt/(1-beta), r = tau/dt (so v <- beta v + I)."""
    beta = RNG.uniform(0.75, 0.95, n) if beta is None else np.full(n, beta)
    tau = DT / (1 - beta)
    return nir.LIF(tau=tau, r=tau / DT if r is None else np.full(n, r), v_leak=np.full(n, v_leak),
                   v_threshold=np.broadcast_to(vth, np.shape(tau)).astype(float), v_reset=np.full(n, v_reset))


def graph(nodes: list[tuple[str, nir.NIRNode]], edges: list[tuple[str, str]], in_shape, signal=None) -> Graph:
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.array(in_shape)}))
    if signal:
        g.annotate("in", signal=signal)
    for name, op in nodes:
        g.add_node(name, op)
    for a, b in edges:
        g.connect(a, b)
    return g


def affine(n_out: int, n_in: int, scale=0.6, bias=False):
    w = RNG.normal(0, scale, (n_out, n_in))
    return nir.Affine(weight=w, bias=RNG.normal(0, 0.1, n_out) if bias else np.zeros(n_out))


def spikes(steps: int, shape, p=0.3) -> np.ndarray:
    return (RNG.random((steps, *np.atleast_1d(shape))) < p).astype(float)


def assert_shifted(g: Graph, x: np.ndarray, shift: int, out: str = "out", min_spikes: int = 20) -> None:
    a = simulate(g, x).outputs[out].reshape(len(x), -1)
    b = simulate(lower_for_loihi(g), x).outputs[out].reshape(len(x), -1)
    assert a.sum() >= min_spikes, "the test network should spike"
    assert np.array_equal(b[:shift], np.zeros_like(b[:shift]))
    assert np.array_equal(a[:-shift], b[shift:])


def assert_layers_shifted(g: Graph, x: np.ndarray, min_spikes: int = 20) -> Graph:
    """Every spiking layer of the lowered graph is the NIR layer shifted by its input_delay, exactly, and
    silent before; returns the lowered graph."""
    low = lower_for_loihi(g)
    layers = [n for n, op in low.nodes.items() if isinstance(op, (LoihiLIF, LoihiTernaryLIF))
              and low.annotation(n, "readout") is None]
    a, b = simulate(g, x, record=layers).traces, simulate(low, x, record=layers).traces
    steps = len(x)
    for n in layers:
        d = low.annotations[n]["input_delay"]
        # a TernaryLIF sends +-1 on Loihi; its amplitude moved into the next layer's weights
        want, got = a[n].reshape(steps, -1), b[n].reshape(steps, -1) * low.annotation(n, "amplitude", 1.0)
        assert np.abs(want).sum() >= min_spikes, f"layer {n} should spike"
        assert not got[:d].any(), f"layer {n} spikes before its input arrives"
        assert np.array_equal(want[:steps - d], got[d:]), f"layer {n}: {np.mean(want[:steps - d] == got[d:]):.4f}"
        assert "timing_exact" not in low.annotations[n]
    return low


# -- the shift property -----------------------------------------------------------------------------------------
def test_two_layer_lif_spikes_shift_by_two_steps():
    g = graph([("fc1", affine(20, 12)), ("lif1", lif(20)), ("fc2", affine(6, 20)), ("lif2", lif(6)),
               ("out", nir.Output(output_type={"output": np.array([6])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")], [12])
    x = spikes(200, 12)
    assert_shifted(g, x, 2)
    low = lower_for_loihi(g)
    assert list(low.nodes) == ["in", "fc1", "lif1", "fc2", "lif2", "out"]  # a linear op's name passes to its Dense
    assert isinstance(low.nodes["fc1"], LoihiDense) and isinstance(low.nodes["lif1"], LoihiLIF)
    # snntorch's export: dt/tau = 1 - beta, r = tau/dt -> gain 1, du = 1, dv = 1 - beta
    assert np.allclose(low.nodes["fc1"].weight, g.nodes["fc1"].weight)
    assert np.allclose(low.nodes["lif1"].dv, DT / g.nodes["lif1"].tau) and np.all(low.nodes["lif1"].du == 1)
    assert low.nodes["fc1"].num_message_bits > 0  # an Input's real values travel as graded messages


def test_recurrent_rleaky_lowers_and_keeps_the_shift():
    """snntorch RLeaky exports LIF + a Linear from the LIF back to itself; the loop keeps its one-step delay."""
    g = graph([("fc1", affine(10, 8)), ("lif1", lif(10)), ("w_rec", nir.Linear(weight=RNG.normal(0, 0.4, (10, 10)))),
               ("fc2", affine(4, 10)), ("lif2", lif(4)), ("out", nir.Output(output_type={"output": np.array([4])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "w_rec"), ("w_rec", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
               ("lif2", "out")], [8], signal={"kind": "binary"})
    assert_shifted(g, spikes(200, 8), 2)
    low = lower_for_loihi(g)
    assert {"fc1", "w_rec", "fc2"} <= set(low.nodes)
    assert low.nodes["fc1"].num_message_bits == 0  # binary Input: binary spikes
    assert ("lif1", "w_rec") in [(e.src, e.dst) for e in low.edges] and ("w_rec", "lif1") in [
        (e.src, e.dst) for e in low.edges]


def test_cuba_lif_and_if_mappings_keep_the_shift():
    n = 8
    tau_syn, tau_mem = DT / RNG.uniform(0.2, 0.5, n), DT / RNG.uniform(0.05, 0.2, n)
    cuba = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=RNG.uniform(0.5, 2, n) * tau_mem / DT,
                       v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=RNG.uniform(0.5, 2, n))
    if_ = nir.IF(r=np.full(5, 0.7 / DT), v_threshold=np.full(5, 1.5), v_reset=np.zeros(5))
    g = graph([("fc1", affine(n, 10, 1.0)), ("cuba", cuba), ("fc2", nir.Linear(weight=RNG.normal(0, 0.8, (5, n)))),
               ("if", if_), ("out", nir.Output(output_type={"output": np.array([5])}))],
              [("in", "fc1"), ("fc1", "cuba"), ("cuba", "fc2"), ("fc2", "if"), ("if", "out")], [10])
    assert_shifted(g, spikes(300, 10, 0.4), 2)
    low = lower_for_loihi(g)
    c = low.nodes["cuba"]
    assert np.allclose(c.du, DT / tau_syn) and np.allclose(c.dv, DT / tau_mem)
    gain = (DT / tau_syn) * cuba.w_in * (DT * cuba.r / tau_mem)
    assert np.allclose(low.nodes["fc1"].weight, gain[:, None] * g.nodes["fc1"].weight)
    assert np.all(low.nodes["if"].dv == 0) and np.allclose(low.nodes["fc2"].weight, 0.7 * g.nodes["fc2"].weight)


def test_cuba_lif_affine_bias_is_exact_through_u_init():
    """An Affine bias b into a CubaLIF rises through I_syn in NIR; Loihi's bias takes its steady state
    c = w_in g b and u starts at -c (prepared through the input delay), whose free decay is the rise."""
    n = 8
    tau_syn, tau_mem = DT / RNG.uniform(0.2, 0.5, n), DT / RNG.uniform(0.05, 0.2, n)
    w_in, r = RNG.uniform(0.5, 2, n), RNG.uniform(0.5, 2, n) * tau_mem / DT
    cuba = nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=r, v_leak=np.full(n, 0.2), v_threshold=np.ones(n),
                       v_reset=np.full(n, -0.1), w_in=w_in)
    tau = DT / np.full(3, 0.1)
    cuba_li = nir.CubaLI(tau_syn=DT / np.full(3, 0.3), tau_mem=tau, r=tau / DT, v_leak=np.zeros(3), w_in=np.ones(3))
    fc2 = nir.Affine(weight=RNG.normal(0, 1.0, (n, 10)), bias=RNG.normal(0.1, 0.1, n))
    g = graph([("fc1", affine(10, 10, 1.0)), ("lif1", lif(10)), ("fc2", fc2), ("cuba", cuba),
               ("fc3", affine(3, n, 1.0, bias=True)), ("li", cuba_li), out_node(3),
               ("spk", nir.Output(output_type={"output": np.array([n])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "cuba"), ("cuba", "fc3"), ("fc3", "li"),
               ("li", "out"), ("cuba", "spk")], [10])
    x = spikes(300, 10, 0.4)
    low = assert_layers_shifted(g, x)
    op = low.nodes["cuba"]
    du, dv = DT / tau_syn, DT / tau_mem
    c = w_in * dv * r * fc2.bias  # w_in g b with g = dt r / tau_mem
    assert low.annotations["cuba"]["input_delay"] == 2 and "bias_approximation" not in low.annotations["cuba"]
    assert np.allclose(op.bias_mant, c + dv * (0.2 + 0.1)) and np.allclose(op.u_init, -c / (1 - du) ** 2)
    v_nir = simulate(g, x).outputs["out"]
    v_low = simulate(low, x, record_states=["li"]).states["li"]["v"]
    assert np.abs(v_nir).max() > 0.1 and np.any(low.nodes["li"].u_init != 0)
    np.testing.assert_allclose(v_low[3:], v_nir[:-3], rtol=0, atol=1e-12)


def test_conv_pool_flatten_scale_fold_into_one_dense():
    conv = nir.Conv2d(input_shape=(8, 8), weight=RNG.normal(0, 0.5, (3, 1, 3, 3)), stride=1, padding=1, dilation=1,
                      groups=1, bias=np.zeros(3))
    scale = nir.Scale(scale=RNG.uniform(0.5, 2.0, 48))
    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    g = graph([("conv", conv), ("lif1", lif((3, 8, 8))), ("pool", pool),
               ("flat", nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1)),
               ("scale", scale), ("fc", affine(5, 48, 0.3)), ("lif2", lif(5)),
               ("out", nir.Output(output_type={"output": np.array([5])}))],
              [("in", "conv"), ("conv", "lif1"), ("lif1", "pool"), ("pool", "flat"), ("flat", "scale"),
               ("scale", "fc"), ("fc", "lif2"), ("lif2", "out")], [1, 8, 8])
    assert_shifted(g, spikes(150, (1, 8, 8), 0.5), 2)
    low = lower_for_loihi(g)
    assert [type(op).__name__ for op in low.nodes.values()] == ["Input", "LoihiDense", "LoihiLIF", "LoihiDense",
                                                                "LoihiLIF", "Output"]
    assert low.nodes["fc"].weight.shape == (5, 192)  # pool, flatten and scale folded into fc's weights
    assert low.annotations["fc"]["merged"] == ["pool", "flat", "scale", "fc"]
    assert low.annotations["lif1"]["shape"] == [3, 8, 8]


def test_ternary_lif_amplitude_folds_into_the_next_layer():
    n = 10
    tau = DT / RNG.uniform(0.1, 0.3, n)
    tern = TernaryLIF(tau=tau, r=tau / DT, v_leak=np.zeros(n), v_threshold_hi=np.full(n, 0.5),
                      v_threshold_lo=np.full(n, -0.5), v_reset=np.zeros(n), amplitude=0.25)
    g = graph([("fc1", nir.Linear(weight=RNG.normal(0, 0.8, (n, 6)))), ("t", tern),
               ("fc2", nir.Linear(weight=RNG.normal(0, 2.0, (4, n)))), ("lif2", lif(4, beta=0.9, vth=0.3)),
               ("out", nir.Output(output_type={"output": np.array([4])}))],
              [("in", "fc1"), ("fc1", "t"), ("t", "fc2"), ("fc2", "lif2"), ("lif2", "out")], [6])
    x = RNG.normal(0, 1, (200, 6))  # real-valued input
    assert_shifted(g, x, 2, min_spikes=10)
    low = lower_for_loihi(g)
    assert isinstance(low.nodes["t"], LoihiTernaryLIF) and low.annotations["t"]["amplitude"] == 0.25
    assert np.allclose(low.nodes["fc2"].weight, 0.25 * g.nodes["fc2"].weight)
    assert low.nodes["fc2"].num_message_bits == 2  # -1 spikes must not be bool-cast to +1


def test_biases_v_leak_and_v_reset_keep_the_exact_shift():
    """Affine biases, v_leak and v_reset on LIF, IF and TernaryLIF layers, 1-3 synapse layers from the input:
    every layer's spikes are the NIR spikes shifted exactly (the bias-only steps are prepared by v_init)."""
    n = 10
    tau = DT / RNG.uniform(0.1, 0.3, n)
    tern = TernaryLIF(tau=tau, r=tau / DT, v_leak=np.full(n, 0.1), v_threshold_hi=np.full(n, 0.6),
                      v_threshold_lo=np.full(n, -0.6), v_reset=np.full(n, 0.05), amplitude=0.5)
    if_ = nir.IF(r=np.full(6, 0.5 / DT), v_threshold=np.full(6, 0.8), v_reset=np.full(6, -0.2))
    g = graph([("fc1", affine(16, 12, bias=True)), ("lif1", lif(16, v_leak=0.3, v_reset=-0.25)),
               ("fc2", affine(n, 16, 0.8, bias=True)), ("t", tern), ("fc3", affine(6, n, 1.5, bias=True)), ("if", if_),
               ("out", nir.Output(output_type={"output": np.array([6])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "t"), ("t", "fc3"), ("fc3", "if"),
               ("if", "out")], [12])
    low = assert_layers_shifted(g, spikes(300, 12), min_spikes=10)
    assert [low.annotations[k]["input_delay"] for k in ("lif1", "t", "if")] == [1, 2, 3]
    # the bias is still the NIR bias folded with the gain; v_init is one step of it undone, from -v_reset
    op, nir_op = low.nodes["lif1"], g.nodes["lif1"]
    dv = DT / nir_op.tau
    bias = dv * nir_op.r * g.nodes["fc1"].bias + dv * (0.3 + 0.25)
    assert np.allclose(op.bias_mant, bias)
    assert np.allclose(op.v_init, (0.25 - bias) / (1 - dv))
    # IF: no leak (dv = 0), three bias-only steps: v_init = -v_reset - 3 bias
    assert np.allclose(low.nodes["if"].v_init, 0.2 - 3 * low.nodes["if"].bias_mant)


def test_without_biases_v_init_is_zero():
    g = graph([("fc1", affine(5, 4)), ("lif1", lif(5)), ("fc2", affine(3, 5)), ("lif2", lif(3)), out_node(3)],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "out")], [4])
    low = lower_for_loihi(g)
    assert not low.nodes["lif1"].v_init.any() and not low.nodes["lif2"].v_init.any()


def test_memoryless_neurons_need_no_preparation():
    """1 - dv = 0 (Threshold; LIF with tau = dt): v forgets the bias-only steps, so the shift is exact without
    a v_init (the backward recursion has no solution there) and the node is not marked inexact."""
    thr = nir.Threshold(threshold=np.full(8, 0.3))
    fc1 = nir.Affine(weight=RNG.normal(0, 0.6, (8, 12)), bias=np.full(8, 0.1))  # biases below the thresholds:
    fc2 = nir.Affine(weight=RNG.normal(0, 0.6, (6, 8)), bias=np.full(6, -0.05))  # no spike on the bias alone
    g = graph([("fc1", fc1), ("thr", thr), ("fc2", fc2), ("lif2", lif(6, beta=0.0, vth=0.2, v_leak=0.1)), out_node(6)],
              [("in", "fc1"), ("fc1", "thr"), ("thr", "fc2"), ("fc2", "lif2"), ("lif2", "out")], [12])
    low = assert_layers_shifted(g, spikes(200, 12))
    assert np.all(low.nodes["lif2"].dv == 1) and np.all(low.nodes["lif2"].bias_mant != 0)
    assert not low.nodes["lif2"].v_init.any()


def test_a_bias_that_would_fire_before_the_input_arrives_is_annotated():
    """Preparing v through three bias-only steps with bias -0.5 and dv = 0.5 needs v = 3, 1, 0 at steps 0-2:
    the 3 crosses the threshold 1, so the state cannot be prepared without a spike (timing_exact=False)."""
    layers = [("fc1", affine(4, 4)), ("lif1", lif(4)), ("fc2", affine(4, 4)), ("lif2", lif(4)),
              ("fc3", affine(4, 4)), ("lif3", lif(4, beta=0.5, v_leak=-1.0)), out_node(4)]
    g = graph(layers, [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "fc3"),
                       ("fc3", "lif3"), ("lif3", "out")], [4])
    low = lower_for_loihi(g)
    ann = low.annotations["lif3"]
    assert ann["input_delay"] == 3 and ann["timing_exact"] is False and "spike on the bias alone" in ann["timing_note"]
    assert np.allclose(low.nodes["lif3"].v_init, 7.0)  # (3 + 0.5) / 0.5: the backward solution is kept
    assert "timing_exact" not in low.annotations["lif1"]


def test_v_reset_is_shifted_into_threshold_and_bias():
    g = graph([("fc1", affine(6, 4)), ("lif1", lif(6, beta=0.8, vth=1.0, v_leak=0.0, v_reset=0.5)),
               ("out", nir.Output(output_type={"output": np.array([6])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "out")], [4])
    low = lower_for_loihi(g)
    op = low.nodes["lif1"]
    assert np.allclose(op.vth, 0.5)  # v' = v - v_reset
    assert np.allclose(op.bias_mant, 0.2 * (0.0 - 0.5))  # dt/tau (v_leak - v_reset)
    assert low.annotations["lif1"]["v_offset"] == 0.5
    # NIR's v = 0 is v' = -0.5; one bias-only step before the input: v_init = (-0.5 + 0.1) / 0.8
    assert np.allclose(op.v_init, -0.5)


def test_example_networks_shift_exactly(networks_dir):
    """The snntorch exports in examples/networks (Affine biases everywhere): every spiking layer is the NIR
    layer shifted by its input delay, spike for spike over all 300 steps."""
    from spikecc.ir import read

    for name in ("ff_lif", "cuba_lif", "recurrent_rleaky", "conv_lif"):
        g = read(networks_dir / f"{name}.nir")
        low = assert_layers_shifted(g, np.load(networks_dir / f"{name}.input.npy"))
        assert any(np.any(op.v_init != 0) for op in low.nodes.values() if isinstance(op, LoihiLIF)), name
        if name == "cuba_lif":  # snntorch's Synaptic: the Affine biases rise through the synaptic current
            assert all(np.any(op.u_init != 0) for op in low.nodes.values() if isinstance(op, LoihiLIF))


def test_v_init_round_trips_and_files_without_it_read_as_zeros(tmp_path):
    import h5py

    from spikecc.ir import read, write

    g = graph([("fc1", affine(5, 4, bias=True)), ("lif1", lif(5)), out_node(5)],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "out")], [4])
    low = lower_for_loihi(g)
    write(low, tmp_path / "low.nir")
    assert np.array_equal(read(tmp_path / "low.nir").nodes["lif1"].v_init, low.nodes["lif1"].v_init)
    with h5py.File(tmp_path / "low.nir", "r+") as f:  # a file written before v_init and u_init existed
        paths = []
        f.visit(lambda p: paths.append(p) if p.endswith(("lif1/v_init", "lif1/u_init")) else None)
        assert len(paths) == 2
        for p in paths:
            del f[p]
    old = read(tmp_path / "low.nir").nodes["lif1"]
    assert isinstance(old, LoihiLIF) and np.array_equal(old.v_init, np.zeros(5))
    assert np.array_equal(old.u_init, np.zeros(5))
    d = low.nodes["lif1"].to_dict()
    del d["v_init"], d["u_init"]
    assert np.array_equal(LoihiLIF.from_dict(d).v_init, np.zeros(5))


def test_li_readout_becomes_a_never_firing_lif_whose_v_is_the_readout():
    n = 3
    tau = DT / np.full(n, 0.2)
    g = graph([("fc1", affine(5, 4)), ("lif1", lif(5)), ("fc2", nir.Linear(weight=RNG.normal(0, 1, (n, 5)))),
               ("li", nir.LI(tau=tau, r=tau / DT, v_leak=np.zeros(n))),
               ("out", nir.Output(output_type={"output": np.array([n])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li"), ("li", "out")], [4])
    x = spikes(100, 4, 0.5)
    low = lower_for_loihi(g)
    assert low.annotations["li"]["readout"] == "v" and np.all(np.isinf(low.nodes["li"].vth))
    v_nir = simulate(g, x).outputs["out"]
    v_low = simulate(low, x, record_states=["li"]).states["li"]["v"]
    assert np.abs(v_nir).max() > 0.1
    assert np.allclose(v_nir[:-2], v_low[2:])


def test_li_readout_with_bias_and_leak_starts_from_the_nir_state():
    """A readout's v is compared as a value: with an Affine bias and v_leak, v_init makes the lowered v the NIR
    v shifted by two steps from the first step on (to float rounding), not only after a transient."""
    n = 3
    tau = DT / np.full(n, 0.2)
    g = graph([("fc1", affine(5, 4, bias=True)), ("lif1", lif(5)), ("fc2", affine(n, 5, 1.0, bias=True)),
               ("li", nir.LI(tau=tau, r=tau / DT, v_leak=np.full(n, 0.4))),
               ("out", nir.Output(output_type={"output": np.array([n])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "li"), ("li", "out")], [4])
    x = spikes(100, 4, 0.5)
    low = lower_for_loihi(g)
    v_nir = simulate(g, x).outputs["out"]
    v_low = simulate(low, x, record_states=["li"]).states["li"]["v"]
    assert np.abs(v_nir).max() > 0.1
    np.testing.assert_allclose(v_low[2:], v_nir[:-2], rtol=0, atol=1e-12)


def test_input_graph_is_not_mutated_and_lowering_is_deterministic():
    g = graph([("fc1", affine(5, 4)), ("lif1", lif(5)), ("out", nir.Output(output_type={"output": np.array([5])}))],
              [("in", "fc1"), ("fc1", "lif1"), ("lif1", "out")], [4])
    w = g.nodes["fc1"].weight.copy()
    a, b = lower_for_loihi(g), lower_for_loihi(g)
    assert list(g.nodes) == ["in", "fc1", "lif1", "out"] and isinstance(g.nodes["fc1"], nir.Affine)
    assert np.array_equal(g.nodes["fc1"].weight, w)
    assert list(a.nodes) == list(b.nodes) and a.edges == b.edges
    assert a.metadata["lowered_for"] == "loihi2"
    assert lower_for_loihi(a).nodes.keys() == a.nodes.keys()  # already lowered: unchanged


# -- what is rejected -------------------------------------------------------------------------------------------
def _err(nodes, edges, in_shape=(4,)) -> str:
    with pytest.raises(BackendError) as info:
        lower_for_loihi(graph(nodes, edges, list(in_shape)))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def out_node(n: int):
    return ("out", nir.Output(output_type={"output": np.array([n])}))


def test_neuron_feeding_neuron_without_synapse_is_rejected():
    msg = _err([("fc", affine(4, 4)), ("a", lif(4)), ("b", lif(4)), out_node(4)],
               [("in", "fc"), ("fc", "a"), ("a", "b"), ("b", "out")])
    assert "node 'b'" in msg and "'a'" in msg and "without a synapse" in msg and "Linear" in msg
    msg = _err([("a", lif(4)), out_node(4)], [("in", "a"), ("a", "out")])
    assert "node 'a'" in msg and "'in'" in msg


def test_readout_feeding_a_layer_is_rejected():
    tau = np.full(4, DT / 0.2)
    msg = _err([("fc", affine(4, 4)), ("li", nir.LI(tau=tau, r=tau / DT, v_leak=np.zeros(4))), ("fc2", affine(4, 4)),
                ("b", lif(4)), out_node(4)],
               [("in", "fc"), ("fc", "li"), ("li", "fc2"), ("fc2", "b"), ("b", "out")])
    assert "node 'b'" in msg and "'li'" in msg and "readout" in msg


def test_delay_unknown_ops_bias_into_output_and_fast_tau_are_rejected():
    msg = _err([("fc", affine(4, 4)), ("a", lif(4)), ("d", nir.Delay(delay=np.full(4, DT))), ("fc2", affine(4, 4)),
                ("b", lif(4)), out_node(4)],
               [("in", "fc"), ("fc", "a"), ("a", "d"), ("d", "fc2"), ("fc2", "b"), ("b", "out")])
    assert "node 'd'" in msg and "Delay" in msg

    @dataclass(eq=False)
    class Mystery(ExtensionOp):
        pass

    msg = _err([("fc", affine(4, 4)), ("m", Mystery()), out_node(4)], [("in", "fc"), ("fc", "m"), ("m", "out")])
    assert "node 'm'" in msg and "Mystery" in msg and "supported" in msg
    msg = _err([("fc", affine(4, 4)), ("a", lif(4)), ("fc2", affine(4, 4, bias=True)), out_node(4)],
               [("in", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "out")])
    assert "node 'out'" in msg and "bias" in msg
    fast = nir.LIF(tau=np.full(4, DT / 2), r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.ones(4),
                   v_reset=np.zeros(4))
    msg = _err([("fc", affine(4, 4)), ("a", fast), out_node(4)], [("in", "fc"), ("fc", "a"), ("a", "out")])
    assert "node 'a'" in msg and "dt/tau" in msg


def test_dense_without_bias_may_feed_an_output():
    g = graph([("fc", affine(4, 4)), ("a", lif(4)), ("fc2", nir.Linear(weight=np.eye(3, 4))), out_node(3)],
              [("in", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "out")], [4])
    low = lower_for_loihi(g)
    assert isinstance(low.nodes["fc2"], LoihiDense) and low.predecessors("out") == ["fc2"]
    x = spikes(100, 4, 0.6)
    a, b = simulate(g, x).outputs["out"], simulate(low, x).outputs["out"]
    assert np.allclose(a[:-2], b[2:])
