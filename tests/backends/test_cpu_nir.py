"""The CPU simulator's NIR semantics, checked against numbers worked out by hand.

Each expected value below comes from the discrete equations in spikecc/backends/cpu/nir_ops.py's
docstring, evaluated by hand (the arithmetic is in the comments), never by calling spikecc's code.
Parameters are chosen so that dt/tau and the gains are round numbers.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikecc.backends.cpu import simulate
from spikecc.errors import GraphError, InputFileError
from spikecc.ir import Graph, TernaryLIF

DT = 1e-4


def a(*values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def chain(op: nir.NIRNode, in_shape, dt: float | None = None) -> Graph:
    """in -> x -> out."""
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.asarray(in_shape)}))
    g.add_node("x", op)
    g.add_node("out", nir.Output(output_type={"output": np.asarray(in_shape)}))
    g.connect("in", "x")
    g.connect("x", "out")
    if dt is not None:
        g.metadata["dt"] = dt
    return g


def run(op, x, dt=None, in_shape=None, **kw):
    x = np.asarray(x, dtype=np.float64)
    g = chain(op, in_shape if in_shape is not None else x.shape[1:], dt)
    return simulate(g, x, record=["x"], record_states=["x"], **kw)


# ------------------------------------------------------------------------------------------------
# neurons
# ------------------------------------------------------------------------------------------------
# LIF with tau = 2e-4 (dt/tau = 0.5) and r = 2 (dt/tau * r = 1):  v <- v + 0.5 * (v_leak - v) + I
#   neuron 0: v_leak 0,   threshold 1.0, reset 0,    I = 0.6, 0.6, 0.6, 0, 2
#     v = 0.6; 0.6 - 0.3 + 0.6 = 0.9; 0.9 - 0.45 + 0.6 = 1.05 > 1 -> spike, v = 0; 0; 2 > 1 -> spike, v = 0
#   neuron 1: v_leak 0.4, threshold 0.5, reset -0.2, I = 0, 0.3, 0, 0, 0
#     v = 0.2; 0.2 + 0.1 + 0.3 = 0.6 > 0.5 -> spike, v = -0.2; -0.2 + 0.3 = 0.1; 0.1 + 0.15 = 0.25; 0.325
LIF_INPUT = np.array([[0.6, 0.0], [0.6, 0.3], [0.6, 0.0], [0.0, 0.0], [2.0, 0.0]])
LIF_SPIKES = np.array([[0, 0], [0, 1], [1, 0], [0, 0], [1, 0]], dtype=float)
LIF_V = np.array([[0.6, 0.2], [0.9, -0.2], [0.0, 0.1], [0.0, 0.25], [0.0, 0.325]])


def lif(tau=2e-4):
    return nir.LIF(tau=a(tau, tau), r=a(2, 2), v_leak=a(0, 0.4), v_threshold=a(1.0, 0.5), v_reset=a(0, -0.2))


def test_lif_by_hand():
    res = run(lif(), LIF_INPUT)
    np.testing.assert_array_equal(res.outputs["out"], LIF_SPIKES)
    np.testing.assert_allclose(res.states["x"]["v"], LIF_V, atol=1e-12)
    assert res.counts["x"].events == 3 and res.counts["x"].neurons == 2 and res.counts["x"].spiking


def test_lif_uses_graph_dt():
    """tau = 4e-4 with dt = 2e-4 is the same neuron as tau = 2e-4 with dt = 1e-4; with dt = 1e-4 it is not."""
    res = run(lif(tau=4e-4), LIF_INPUT, dt=2e-4)
    np.testing.assert_allclose(res.states["x"]["v"], LIF_V, atol=1e-12)
    slow = run(lif(tau=4e-4), LIF_INPUT)  # dt/tau = 0.25, gain 0.5: v = 0.3 at step 0
    assert slow.states["x"]["v"][0, 0] == pytest.approx(0.3)


def test_lif_threshold_is_strict():
    """s = [v > threshold]: reaching the threshold exactly is not a spike."""
    op = nir.LIF(tau=a(DT, DT), r=a(1, 1), v_leak=a(0, 0), v_threshold=a(1, 1), v_reset=a(0, 0))
    res = run(op, [[1.0, 1.0 + 1e-9]])  # dt/tau = 1: v = I
    np.testing.assert_array_equal(res.outputs["out"], [[0, 1]])


# IF with r = 5000: v <- v + 0.5 * I (no leak), threshold 1, reset 0
#   I = 1, 1, 1, 1, 0, 0, -1, 3 -> v = 0.5, 1.0 (not > 1), 1.5 -> spike 0, 0.5, 0.5, 0.5, 0.0, 1.5 -> spike 0
def test_if_by_hand():
    op = nir.IF(r=a(5000), v_threshold=a(1.0), v_reset=a(0.0))
    res = run(op, a(1, 1, 1, 1, 0, 0, -1, 3)[:, None])
    np.testing.assert_array_equal(res.outputs["out"][:, 0], a(0, 0, 1, 0, 0, 0, 0, 1))
    np.testing.assert_allclose(res.states["x"]["v"][:, 0], a(0.5, 1.0, 0, 0.5, 0.5, 0.5, 0, 0), atol=1e-12)


# CubaLIF: tau_syn = 2e-4 (0.5), w_in = 2: I_syn <- 0.5 * I_syn + x
#          tau_mem = 4e-4 (0.25), r = 4:   v <- v + 0.25 * (-v + 4 * I_syn) = 0.75 v + I_syn; threshold 1.5
#   x = 1, 0, 0, 1, 0 -> I_syn = 1, 0.5, 0.25, 1.125, 0.5625
#   v = 1, 1.25, 1.1875, 0.890625 + 1.125 = 2.015625 > 1.5 -> spike, v = 0; 0.5625
def test_cubalif_by_hand():
    op = nir.CubaLIF(tau_syn=a(2e-4), tau_mem=a(4e-4), r=a(4), v_leak=a(0), v_threshold=a(1.5), v_reset=a(0),
                     w_in=a(2))
    res = run(op, a(1, 0, 0, 1, 0)[:, None])
    np.testing.assert_array_equal(res.outputs["out"][:, 0], a(0, 0, 0, 1, 0))
    np.testing.assert_allclose(res.states["x"]["i_syn"][:, 0], a(1, 0.5, 0.25, 1.125, 0.5625), atol=1e-12)
    np.testing.assert_allclose(res.states["x"]["v"][:, 0], a(1, 1.25, 1.1875, 0, 0.5625), atol=1e-12)


# LI: tau = 2e-4 (0.5), r = 2, v_leak = 1: v <- v + 0.5 * (1 - v) + I, output v (no threshold, no reset)
#   I = 0, 0, 1, 0 -> v = 0.5, 0.75, 0.75 + 0.125 + 1 = 1.875, 1.875 - 0.4375 = 1.4375
def test_li_by_hand():
    res = run(nir.LI(tau=a(2e-4), r=a(2), v_leak=a(1.0)), a(0, 0, 1, 0)[:, None])
    np.testing.assert_allclose(res.outputs["out"][:, 0], a(0.5, 0.75, 1.875, 1.4375), atol=1e-12)
    assert not res.counts["x"].spiking


# CubaLI: I_syn <- 0.5 I_syn + x (tau_syn 2e-4, w_in 2); v <- 0.5 v + I_syn (tau_mem 2e-4, r 2)
#   x = 1, 0, 0 -> I_syn = 1, 0.5, 0.25 -> v = 1, 1.0, 0.75
def test_cubali_by_hand():
    op = nir.CubaLI(tau_syn=a(2e-4), tau_mem=a(2e-4), r=a(2), v_leak=a(0), w_in=a(2))
    res = run(op, a(1, 0, 0)[:, None])
    np.testing.assert_allclose(res.outputs["out"][:, 0], a(1, 1, 0.75), atol=1e-12)


# I: r = 2500: v <- v + 0.25 * I; I = 4, 4, -2, 0 -> v = 1, 2, 1.5, 1.5
def test_integrator_by_hand():
    res = run(nir.I(r=a(2500)), a(4, 4, -2, 0)[:, None])
    np.testing.assert_allclose(res.outputs["out"][:, 0], a(1, 2, 1.5, 1.5), atol=1e-12)


def test_threshold_and_scale_by_hand():
    x = np.array([[0.5, -1.0, 3.0], [0.6, -0.9, -3.0], [0.0, -2.0, 0.0]])
    res = run(nir.Threshold(threshold=a(0.5, -1.0, 0.0)), x)
    np.testing.assert_array_equal(res.outputs["out"], [[0, 0, 1], [1, 1, 0], [0, 0, 0]])
    res = run(nir.Scale(scale=a(2.0, -0.5, 0.0)), x)
    np.testing.assert_array_equal(res.outputs["out"], [[1.0, 0.5, 0.0], [1.2, 0.45, 0.0], [0.0, 1.0, 0.0]])


# Delay of 0, 2 and 3 steps (0, 2e-4, 3e-4 s at dt = 1e-4); zeros before the first value arrives.
DELAY_X = np.arange(1, 19, dtype=float).reshape(6, 3)  # rows (1,2,3), (4,5,6), ...
DELAY_Y = np.array([[1, 0, 0], [4, 0, 0], [7, 2, 0], [10, 5, 3], [13, 8, 6], [16, 11, 9]], dtype=float)


def test_delay_per_neuron_by_hand():
    res = run(nir.Delay(delay=a(0, 2e-4, 3e-4)), DELAY_X)
    np.testing.assert_array_equal(res.outputs["out"], DELAY_Y)


# TernaryLIF: tau = 2e-4, r = 2 -> v <- 0.5 v + I; +a above 1.0, -a below -0.8, reset to 0.1, a = 0.5
#   I = 0.7, 0.7, -1.2, -0.5, 0 -> v = 0.7; 0.35 + 0.7 = 1.05 -> +0.5, v = 0.1; 0.05 - 1.2 = -1.15 -> -0.5, v = 0.1;
#   0.05 - 0.5 = -0.45; -0.225
def test_ternary_lif_by_hand():
    op = TernaryLIF(tau=a(2e-4), r=a(2), v_leak=a(0), v_threshold_hi=a(1.0), v_threshold_lo=a(-0.8),
                    v_reset=a(0.1), amplitude=0.5)
    res = run(op, a(0.7, 0.7, -1.2, -0.5, 0)[:, None])
    np.testing.assert_array_equal(res.outputs["out"][:, 0], a(0, 0.5, -0.5, 0, 0))
    np.testing.assert_allclose(res.states["x"]["v"][:, 0], a(0.7, 0.1, 0.1, -0.45, -0.225), atol=1e-12)
    assert res.counts["x"].events == 2


def test_scalar_parameters_broadcast_to_the_layer():
    """NIR allows scalar parameters (issue 176): one value serves every neuron of the layer it is fed."""
    op = nir.LIF(tau=np.array(2e-4), r=np.array(2.0), v_leak=np.array(0.0), v_threshold=np.array(1.0),
                 v_reset=np.array(0.0))
    res = run(op, LIF_INPUT[:, :1].repeat(3, axis=1))
    np.testing.assert_array_equal(res.outputs["out"], LIF_SPIKES[:, :1].repeat(3, axis=1))


# ------------------------------------------------------------------------------------------------
# convolution and pooling vs torch
# ------------------------------------------------------------------------------------------------
def sparse_input(shape, seed, density=0.4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape) * (rng.random(shape) < density)


CONV2D_CASES = [  # (in shape, out channels, kernel, stride, padding, dilation, groups)
    ((2, 7, 6), 4, (3, 3), 1, 0, 1, 1),
    ((2, 7, 6), 4, (3, 2), 2, 1, 1, 1),
    ((4, 8, 8), 6, (3, 3), (1, 2), (2, 1), 2, 2),
    ((3, 5, 5), 2, (3, 3), 1, "same", 1, 1),
]


@pytest.mark.parametrize("case", CONV2D_CASES, ids=[str(i) for i in range(len(CONV2D_CASES))])
def test_conv2d_matches_torch(case):
    in_shape, co, kernel, stride, padding, dilation, groups = case
    rng = np.random.default_rng(1)
    w = rng.normal(size=(co, in_shape[0] // groups, *kernel))
    w[rng.random(w.shape) < 0.2] = 0.0
    b = rng.normal(size=co)
    op = nir.Conv2d(input_shape=in_shape[1:], weight=w, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, bias=b)
    x = sparse_input((5, *in_shape), seed=2)
    want = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride, padding=padding,
                    dilation=dilation, groups=groups).numpy()
    res = run(op, x)
    assert res.outputs["out"].shape == want.shape
    np.testing.assert_allclose(res.outputs["out"], want, atol=1e-10)


def test_conv1d_matches_torch():
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(3, 2, 4)), rng.normal(size=3)
    op = nir.Conv1d(input_shape=11, weight=w, stride=2, padding=1, dilation=2, groups=1, bias=b)
    x = sparse_input((6, 2, 11), seed=4)
    want = F.conv1d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=2, padding=1, dilation=2).numpy()
    res = run(op, x)
    assert res.outputs["out"].shape == want.shape == (6, 3, 4)
    np.testing.assert_allclose(res.outputs["out"], want, atol=1e-10)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 0))])
def test_pooling_matches_torch(kernel, stride, padding):
    x = sparse_input((4, 3, 6, 7), seed=5)
    want_avg = F.avg_pool2d(torch.tensor(x), kernel, stride, padding, count_include_pad=True).numpy()
    area = np.prod(np.broadcast_to(kernel, 2))
    avg = run(nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding)), x)
    total = run(nir.SumPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding)), x)
    assert avg.outputs["out"].shape == want_avg.shape
    np.testing.assert_allclose(avg.outputs["out"], want_avg, atol=1e-12)
    np.testing.assert_allclose(total.outputs["out"], want_avg * area, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# event-driven synaptic operations
# ------------------------------------------------------------------------------------------------
def test_affine_synops_are_nonzero_inputs_times_fanout():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(5, 8))
    w[rng.random(w.shape) < 0.4] = 0.0  # fan-outs differ per input
    x = (rng.random((30, 8)) < 0.3).astype(float)
    x[3, 2] = -2.0  # a negative (graded) event counts like any non-zero input
    expected = 0
    for t in range(30):
        for j in range(8):
            if x[t, j] != 0:
                expected += sum(1 for i in range(5) if w[i, j] != 0)
    res = run(nir.Affine(weight=w, bias=np.zeros(5)), x)
    assert res.counts["x"].synops == expected > 0
    np.testing.assert_allclose(res.outputs["out"], x @ w.T, atol=1e-12)
    assert res.counts["in"].events == np.count_nonzero(x)


def test_conv_synops_are_nonzero_inputs_times_fanout():
    rng = np.random.default_rng(7)
    w = rng.normal(size=(2, 1, 3, 3))
    w[0, 0, 1, 1] = 0.0
    x = (rng.random((10, 1, 5, 5)) < 0.3).astype(float)
    op = nir.Conv2d(input_shape=(5, 5), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=np.zeros(2))
    # fan-out of input pixel (r, c): output positions (co, oy, ox) whose receptive field holds it with a
    # non-zero weight: oy + ky - 1 = r, ox + kx - 1 = c, 0 <= oy, ox < 5
    fanout = np.zeros((5, 5), dtype=int)
    for r in range(5):
        for c in range(5):
            for co in range(2):
                for ky in range(3):
                    for kx in range(3):
                        oy, ox = r - ky + 1, c - kx + 1
                        if 0 <= oy < 5 and 0 <= ox < 5 and w[co, 0, ky, kx] != 0:
                            fanout[r, c] += 1
    assert fanout[2, 2] == 17 and fanout[0, 0] == 7  # interior: 2 x 9 taps - the zero one; corner: 2 x 4 - 1
    res = run(op, x)
    assert res.counts["x"].synops == int(((x[:, 0] != 0) * fanout).sum())


# ------------------------------------------------------------------------------------------------
# time-batched (outside loops) vs stepped (inside a loop)
# ------------------------------------------------------------------------------------------------
def conv_lif_graph(looped: bool) -> Graph:
    """in(1x5x5) -> conv -> lif -> out; looped adds lif -> zero Linear -> conv, so conv and lif are stepped."""
    rng = np.random.default_rng(8)
    w = rng.normal(size=(2, 1, 3, 3))
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([1, 5, 5])}))
    g.add_node("conv", nir.Conv2d(input_shape=(5, 5), weight=w, stride=1, padding=1, dilation=1, groups=1,
                                  bias=np.full(2, 0.1)))
    n = 2 * 25
    g.add_node("lif", nir.LIF(tau=np.full(n, 3e-4), r=np.full(n, 3.0), v_leak=np.zeros(n),
                              v_threshold=np.full(n, 1.0), v_reset=np.zeros(n)))
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    g.connect("in", "conv")
    g.connect("conv", "lif")
    g.connect("lif", "out")
    if looped:
        g.add_node("zero", nir.Linear(weight=np.zeros((25, n))))
        g.connect("lif", "zero")
        g.connect("zero", "conv")
    return g


def test_stepped_loop_equals_time_batched():
    x = (np.random.default_rng(9).random((60, 1, 5, 5)) < 0.3).astype(float)
    flat, looped = conv_lif_graph(False), conv_lif_graph(True)
    assert [len(c) for c in flat.components()] == [1, 1, 1, 1]
    assert ["conv", "lif", "zero"] in looped.components()  # the loop is stepped together
    r1 = simulate(flat, x, record=["conv"], record_states=["lif"])
    r2 = simulate(looped, x, record=["conv"], record_states=["lif"])
    assert r1.outputs["out"].sum() > 0
    np.testing.assert_array_equal(r1.outputs["out"], r2.outputs["out"])
    np.testing.assert_allclose(r1.traces["conv"], r2.traces["conv"], atol=1e-12)
    np.testing.assert_allclose(r1.states["lif"]["v"], r2.states["lif"]["v"], atol=1e-12)
    assert r1.counts["conv"].synops == r2.counts["conv"].synops > 0
    assert r1.counts["lif"].events == r2.counts["lif"].events


def test_delay_in_a_loop_equals_time_batched():
    g = chain(nir.Delay(delay=a(0, 2e-4, 3e-4)), (3,))
    g.add_node("zero", nir.Linear(weight=np.zeros((3, 3))))
    g.connect("x", "zero")
    g.connect("zero", "x")
    assert ["x", "zero"] in g.components()
    np.testing.assert_array_equal(simulate(g, DELAY_X).outputs["out"], DELAY_Y)


def test_recurrent_edge_delivers_previous_step():
    """A LIF feeding itself through Linear(w=2): the feedback arrives one step later.
    tau = dt (dt/tau = 1), r = 1: v = I + 2 * s[t-1]; threshold 1.5, reset 0.
    I = 1, 1, 0, 0: v = 1 (no); 1 (no, s[0] = 0); 0; 0. With I = 2, 0, 0: v = 2 -> s; 0 + 2*1 = 2 -> s; 2 -> s."""
    g = chain(nir.LIF(tau=a(DT), r=a(1), v_leak=a(0), v_threshold=a(1.5), v_reset=a(0)), (1,))
    g.add_node("w", nir.Linear(weight=np.array([[2.0]])))
    g.connect("x", "w")
    g.connect("w", "x")
    assert simulate(g, a(1, 1, 0, 0)[:, None]).outputs["out"][:, 0].tolist() == [0, 0, 0, 0]
    assert simulate(g, a(2, 0, 0)[:, None]).outputs["out"][:, 0].tolist() == [1, 1, 1]


def test_recurrent_bias_arrives_at_step_zero():
    """Affine(w=0, b=0.7) in a loop: its output at rest is its bias, delivered at step 0 as at every other step
    (snntorch's RLeaky computes W @ 0 + b at step 0). tau = dt, r = 1, threshold 1: v = I + 0.7.
    I = 0.5 -> v = 1.2 > 1 spikes at step 0 and every step."""
    g = chain(nir.LIF(tau=a(DT), r=a(1), v_leak=a(0), v_threshold=a(1.0), v_reset=a(0)), (1,))
    g.add_node("w", nir.Affine(weight=np.array([[0.0]]), bias=a(0.7)))
    g.connect("x", "w")
    g.connect("w", "x")
    assert simulate(g, np.full((3, 1), 0.5)).outputs["out"][:, 0].tolist() == [1, 1, 1]


# ------------------------------------------------------------------------------------------------
# inputs, recording
# ------------------------------------------------------------------------------------------------
def test_input_of_wrong_shape_is_an_input_file_error():
    g = chain(lif(), (2,))
    with pytest.raises(InputFileError, match=r"'in'.*\(5, 3\).*\(steps, 2\)"):
        simulate(g, np.zeros((5, 3)))
    with pytest.raises(InputFileError, match="only 5"):
        simulate(g, np.zeros((5, 2)), steps=6)
    with pytest.raises(InputFileError, match="no data for Input node"):
        simulate(g, {"other": np.zeros((5, 2))})


def test_several_inputs_need_names():
    g = chain(lif(), (2,))
    g.add_node("in2", nir.Input(input_type={"input": np.array([2])}))
    g.connect("in2", "x")
    with pytest.raises(InputFileError, match="2 Input nodes"):
        simulate(g, np.zeros((5, 2)))
    res = simulate(g, {"in": LIF_INPUT, "in2": np.zeros_like(LIF_INPUT)})  # summed into x's input
    np.testing.assert_array_equal(res.outputs["out"], LIF_SPIKES)


def test_recording_unknown_node_fails_and_steps_limit_the_run():
    g = chain(lif(), (2,))
    with pytest.raises(GraphError, match="nope"):
        simulate(g, LIF_INPUT, record=["nope"])
    res = simulate(g, LIF_INPUT, steps=3, record=["x"])
    assert res.steps == 3 and res.traces["x"].shape == (3, 2)
    np.testing.assert_array_equal(res.traces["x"], LIF_SPIKES[:3])


def test_linear_applies_to_each_row_of_a_sequence_input():
    """An (L, n_in) input (a sequence of token vectors) goes through Affine row by row, as torch's Linear;
    Embedding of L ids and LayerNorm over the last axis keep the (L, d) layout."""
    import torch

    from spikecc.ir.lm_ops import Embedding, LayerNorm

    rng = np.random.default_rng(0)
    g = Graph()
    g.add_node("ids", nir.Input(input_type={"input": np.array([5])}))
    table, w, b = rng.normal(size=(20, 8)), rng.normal(size=(6, 8)), rng.normal(size=6)
    g.add_node("emb", Embedding(weight=table))
    g.add_node("ln", LayerNorm(weight=np.full(8, 1.5), bias=np.full(8, 0.1)))
    g.add_node("fc", nir.Affine(weight=w, bias=b))
    g.add_node("out", nir.Output(output_type={"output": np.array([5, 6])}))
    for a, c in [("ids", "emb"), ("emb", "ln"), ("ln", "fc"), ("fc", "out")]:
        g.connect(a, c)
    ids = rng.integers(0, 20, (3, 5))
    res = simulate(g, ids.astype(float))
    t = torch.nn.functional
    ref = t.linear(t.layer_norm(torch.tensor(table[ids]), (8,), torch.full((8,), 1.5, dtype=torch.float64),
                                torch.full((8,), 0.1, dtype=torch.float64)), torch.tensor(w), torch.tensor(b))
    assert res.outputs["out"].shape == (3, 5, 6)
    np.testing.assert_allclose(res.outputs["out"], ref.numpy(), rtol=0, atol=1e-12)
    assert res.counts["fc"].synops == 3 * 5 * 8 * 6  # every (real, non-zero) input x its fan-out
