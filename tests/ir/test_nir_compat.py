"""NIR files as other tools write them: batch axes of size 1, older releases' files, an explicit dt, time
constants at or below the step, layers that never fire.

References are independent of spikecc: torch's conv2d / avg_pool2d for the convolution layouts, nir 1.0.8's
own file for the old-file case, the forward-Euler factor 1 - dt/tau worked out by hand for the warnings."""

from __future__ import annotations

import warnings

import h5py
import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikecc.backends.cpu import simulate
from spikecc.compiler.passes import lower_for_loihi
from spikecc.errors import BackendError, InputFileError, ShapeError, SpikeccWarning
from spikecc.ir import Graph, LoihiDense, infer_shapes, read, write
from spikecc.ir.infer import load_notes, unstable_time_constants

RNG = np.random.default_rng(12)


def conv_graph(in_shape, pool: bool = False, lif: bool = False, input_shape=(6, 6)) -> Graph:
    """in -> Conv2d(2 -> 3, k3, pad 1) [-> LIF] [-> AvgPool2d(2)] -> out"""
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array(in_shape)}))
    g.add_node("conv", nir.Conv2d(input_shape=input_shape, weight=RNG.normal(0, 0.8, (3, 2, 3, 3)), stride=1,
                                  padding=1, dilation=1, groups=1, bias=RNG.normal(0, 0.1, 3)))
    prev = "conv"
    g.connect("in", "conv")
    if lif:
        n = (3, 6, 6)
        g.add_node("lif", nir.LIF(tau=np.full(n, 5e-4), r=np.full(n, 5.0), v_leak=np.zeros(n),
                                  v_threshold=np.full(n, 0.5), v_reset=np.zeros(n)))
        g.connect(prev, "lif")
        prev = "lif"
    if pool:
        g.add_node("pool", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                         padding=np.array([0, 0])))
        g.connect(prev, "pool")
        prev = "pool"
    g.add_node("out", nir.Output(output_type={"output": np.array([3, 3, 3] if pool else [3, 6, 6])}))
    g.connect(prev, "out")
    return g


def torch_conv_pool(g: Graph, x: np.ndarray, pool: bool) -> np.ndarray:
    op = g.nodes["conv"]
    y = F.conv2d(torch.as_tensor(x.reshape(len(x), 2, 6, 6)), torch.as_tensor(op.weight), torch.as_tensor(op.bias),
                 padding=1)
    return (F.avg_pool2d(y, 2) if pool else y).numpy()


# ------------------------------------------------------------------------------------------------
# batch axes of size 1
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", [False, True], ids=["conv", "conv+pool"])
@pytest.mark.parametrize("in_shape", [(2, 6, 6), (1, 2, 6, 6), (1, 1, 2, 6, 6)], ids=["plain", "batch", "2 batch"])
def test_batch_axes_are_skipped_by_conv_and_pool(in_shape, pool):
    g = conv_graph(in_shape, pool=pool)
    shapes = infer_shapes(g)
    assert shapes["in"] == in_shape
    assert shapes["out"] == ((3, 3, 3) if pool else (3, 6, 6))
    x = RNG.normal(size=(7, *in_shape))
    got = simulate(g, x).outputs["out"]
    np.testing.assert_allclose(got, torch_conv_pool(g, x, pool), rtol=1e-12, atol=1e-12)
    notes = load_notes(g, shapes)
    if len(in_shape) > 3:
        assert notes == [f"node 'conv' (Conv2d): input from 'in' has shape {in_shape}; its leading axis of size 1 "
                         "is a batch axis (NIR shapes have none), skipped: reads (2, 6, 6)"]
    else:
        assert notes == []


def test_batch_axis_lowers_for_loihi():
    """The Loihi lowering reads the conv the same way: its LoihiDense weight is the conv as a matrix (worked out
    by torch on unit inputs), times the LIF's gain dt r / tau, and the lowered graph spikes like the NIR graph,
    one step later."""
    g = conv_graph((1, 2, 6, 6), lif=True)
    g.metadata["dt"] = 1e-4
    low = lower_for_loihi(g)
    dense = [op for op in low.nodes.values() if isinstance(op, LoihiDense)]
    assert len(dense) == 1
    eye = torch.eye(72, dtype=torch.float64).reshape(72, 2, 6, 6)
    matrix = F.conv2d(eye, torch.as_tensor(g.nodes["conv"].weight), padding=1).reshape(72, -1).T.numpy()
    np.testing.assert_allclose(dense[0].weight, (1e-4 * 5.0 / 5e-4) * matrix, rtol=1e-12, atol=1e-12)
    x = (RNG.random((40, 1, 2, 6, 6)) < 0.4).astype(float)
    a = simulate(g, x).outputs["out"].reshape(40, -1)
    b = simulate(low, x).outputs["out"].reshape(40, -1)
    assert a.sum() > 50
    np.testing.assert_array_equal(b[1:], a[:-1])


@pytest.mark.parametrize("in_shape,match", [
    ((3, 6, 6), r"node 'conv': Conv2d weight \(3, 2, 3, 3\) with groups=1 takes 2 input channels but receives 3"),
    ((2, 1, 6, 6), r"node 'conv': Conv2d reads a \(channels, 2 spatial axes\) input but receives shape \(2, 1, 6, 6\)"),
    ((50,), r"node 'conv': Conv2d reads a \(channels, 2 spatial axes\) input but receives shape \(50,\)"),
])
def test_conv_input_that_does_not_fit_names_the_node(in_shape, match):
    with pytest.raises(ShapeError, match=match):
        infer_shapes(conv_graph(in_shape))


def test_flat_input_is_read_in_the_declared_layout():
    """A flat (72,) input (e.g. a Linear's output) reaches a Conv2d that declares input_shape (6, 6)."""
    g = conv_graph((72,))
    x = RNG.normal(size=(5, 72))
    np.testing.assert_allclose(simulate(g, x).outputs["out"], torch_conv_pool(g, x, False), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# files from older NIR releases
# ------------------------------------------------------------------------------------------------
def old_style_file(path, graph: nir.NIRGraph, writer) -> None:
    """The file nir 0.2 would write for `graph`: no Conv2d input_shape, no neuron v_reset, version 0.2.0."""
    conv = graph.nodes["conv"]
    graph.nodes["conv"] = nir.Conv2d(input_shape=None, weight=conv.weight, stride=conv.stride, padding=conv.padding,
                                     dilation=conv.dilation, groups=conv.groups, bias=conv.bias)
    writer(path, graph, version="0.2.0")
    with h5py.File(path, "r+") as f:
        for name in f["node/nodes"]:
            if "v_reset" in f[f"node/nodes/{name}"]:
                del f[f"node/nodes/{name}/v_reset"]


def test_old_file_without_conv_input_shape_loads_and_runs(work_dir, write_nir_omitting_none):
    g = conv_graph((2, 6, 6), lif=True, pool=True)
    write(g, work_dir / "new.nir")
    old_style_file(work_dir / "old.nir", nir.read(work_dir / "new.nir"), write_nir_omitting_none)
    with h5py.File(work_dir / "old.nir") as f:
        assert "input_shape" not in f["node/nodes/conv"] and "v_reset" not in f["node/nodes/lif"]
    with pytest.raises(TypeError):  # plain nir 1.0.8 rejects it
        nir.read(work_dir / "old.nir")
    old, new = read(work_dir / "old.nir"), read(work_dir / "new.nir")
    assert tuple(old.nodes["conv"].input_shape) == (6, 6)
    assert load_notes(old, infer_shapes(old)) == [
        "node 'conv' (Conv2d): the file gives no input_shape (older NIR releases wrote none); inferred (6, 6) from "
        "its input"]
    x = (RNG.random((30, 2, 6, 6)) < 0.4).astype(float)
    want = simulate(new, x).outputs["out"]
    assert want.sum() > 10
    np.testing.assert_array_equal(simulate(old, x).outputs["out"], want)
    write(old, work_dir / "again.nir")  # the completed graph is writable by nir 1.0.8
    assert tuple(nir.read(work_dir / "again.nir").nodes["conv"].input_shape) == (6, 6)


# ------------------------------------------------------------------------------------------------
# dt, unstable time constants, silent layers
# ------------------------------------------------------------------------------------------------
def lif_chain(tau: float, n: int = 4, cls=nir.LIF) -> Graph:
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}))
    g.add_node("w", nir.Affine(weight=np.full((n, 3), 0.8), bias=np.zeros(n)))
    if cls is nir.LIF:
        op = nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                     v_reset=np.zeros(n))
    else:
        op = nir.LI(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n))
    g.add_node("neuron", op)
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "w"), ("w", "neuron"), ("neuron", "out")]:
        g.connect(a, b)
    return g


def test_dt_given_to_read_overrides_the_files(work_dir):
    g = lif_chain(5.0)
    write(g, work_dir / "plain.nir")
    assert read(work_dir / "plain.nir").dt == 1e-4 and "dt" not in read(work_dir / "plain.nir").metadata
    assert read(work_dir / "plain.nir", dt=1.0).dt == 1.0
    g.metadata["dt"] = 0.5
    write(g, work_dir / "own.nir")
    assert read(work_dir / "own.nir").dt == 0.5 and read(work_dir / "own.nir", dt=2.0).dt == 2.0


@pytest.mark.parametrize("dt", [0.0, -1e-4, float("nan"), float("inf"), "fast"])
def test_bad_dt_is_one_line(work_dir, dt):
    write(lif_chain(5.0), work_dir / "g.nir")
    with pytest.raises(InputFileError, match=r"^dt = .*: the time step must be a positive number of seconds"):
        read(work_dir / "g.nir", dt=dt)


@pytest.mark.parametrize("ratio,effect", [(1.0, "keeps no memory"), (1.5, "overshoots"), (3.0, "diverges")])
def test_time_constant_at_or_below_the_step_warns_at_load(work_dir, ratio, effect):
    write(lif_chain(1e-4 / ratio), work_dir / "g.nir")
    with pytest.warns(SpikeccWarning) as rec:
        read(work_dir / "g.nir")
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert f"node 'neuron' (LIF): dt/tau = {ratio:.4g} >= 1 for 4 of 4 neurons" in msgs[0]
    assert effect in msgs[0] and "--dt" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpikeccWarning)
        read(work_dir / "g.nir", dt=1e-4 / ratio / 2)  # half the time constant: quiet


def test_stable_graph_has_no_time_constant_warning():
    assert unstable_time_constants(lif_chain(1e-4 / 0.999)) == []
    g = lif_chain(-1.0)
    assert unstable_time_constants(g) == ["node 'neuron' (LIF): tau = -1 s for 4 of 4 neurons is not a time constant "
                                          "(it must be > 0); pass the time step the network was exported for with "
                                          "--dt (smaller than tau), or fix tau"]


def test_diverging_readout_stops_with_node_and_step():
    """LI with dt/tau = 3: v <- -2 v + 3 I, so |v| doubles every step from a constant input and reaches
    float64's 1.8e308 after about 1020 steps; the step named is the first whose v is inf."""
    g = lif_chain(1e-4 / 3, cls=nir.LI)
    x = np.ones((1100, 3))
    with pytest.raises(BackendError) as info:
        simulate(g, x)
    msg = str(info.value)
    step = int(msg.split(" at step ")[1].split(";")[0])
    # reference: the same recurrence in plain Python floats, which overflow to inf at the same step
    v, first = 0.0, None
    for t in range(1100):
        v = v + 3 * (0 - v) + 3 * 2.4
        if abs(v) == float("inf") and first is None:
            first = t
    assert step == first
    assert msg.startswith("node 'neuron' (LI): v became ") and "dt/tau = 3 >= 1" in msg and "\n" not in msg


def test_recurrent_loop_stops_with_node_and_step():
    """The same check inside a loop stepped one step at a time."""
    g = lif_chain(1e-4 / 3, cls=nir.LI)
    g.add_node("rec", nir.Linear(weight=np.zeros((4, 4))))
    g.connect("neuron", "rec")
    g.connect("rec", "neuron")
    with pytest.raises(BackendError, match=r"^node 'neuron' \(LI\): v became -?inf at step \d+;"):
        simulate(g, np.ones((1100, 3)))


def test_silent_layer_is_reported():
    """A LIF with tau = 5 s (exported for dt = 1) at dt = 1e-4: v grows by 2.4 * 2e-5 per step, never near 1."""
    g = lif_chain(5.0)
    x = np.ones((100, 3))
    with pytest.warns(SpikeccWarning, match=r"^node 'neuron' \(LIF\) never fired in 100 steps \(dt = 0.0001 s\)"):
        res = simulate(g, x)
    assert res.silent == ["neuron"]
    g.metadata["dt"] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpikeccWarning)
        res = simulate(g, x)
    assert res.silent == [] and res.outputs["out"].sum() > 0
