"""Shape and signal inference, and validation errors that name the node at fault.

Expected shapes come from running the equivalent torch layers on a zero tensor."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch
from torch import nn

from spikecc.errors import GraphError, ShapeError
from spikecc.ir import BINARY, REAL, Graph, TernaryLIF, infer_shapes, infer_signals, read, ternary, validate


def chain(in_shape, *ops: nir.NIRNode) -> Graph:
    """in -> n0 -> n1 -> ... -> out"""
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array(in_shape)}))
    prev = "in"
    for i, op in enumerate(ops):
        g.add_node(f"n{i}", op)
        g.connect(prev, f"n{i}")
        prev = f"n{i}"
    g.add_node("out", nir.Output(output_type={"output": np.array([1])}))
    g.connect(prev, "out")
    return g


def torch_shape(module: nn.Module, in_shape) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module(torch.zeros(1, *in_shape)).shape[1:])


def lif(n) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 2e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


# ------------------------------------------------------------------------------------------------
# conv / pool / flatten shapes
# ------------------------------------------------------------------------------------------------
CONV2D = [  # in shape, torch Conv2d kwargs
    ((1, 8, 8), dict(in_channels=1, out_channels=4, kernel_size=3, padding=1)),
    ((3, 9, 7), dict(in_channels=3, out_channels=5, kernel_size=(3, 2), stride=2)),
    ((4, 11, 10), dict(in_channels=4, out_channels=6, kernel_size=3, stride=(2, 1), padding=(1, 2), dilation=2,
                       groups=2)),
    ((2, 6, 6), dict(in_channels=2, out_channels=2, kernel_size=3, padding="same")),
]


@pytest.mark.parametrize("in_shape,kw", CONV2D, ids=[str(i) for i in range(len(CONV2D))])
def test_conv2d_shape(in_shape, kw):
    conv = nn.Conv2d(**kw)
    op = nir.Conv2d(input_shape=in_shape[1:], weight=conv.weight.detach().numpy(), stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias.detach().numpy())
    assert infer_shapes(chain(in_shape, op))["n0"] == torch_shape(conv, in_shape)


def test_conv1d_shape():
    conv = nn.Conv1d(2, 3, kernel_size=4, stride=2, padding=1, dilation=2)
    op = nir.Conv1d(input_shape=13, weight=conv.weight.detach().numpy(), stride=2, padding=1, dilation=2, groups=1,
                    bias=conv.bias.detach().numpy())
    assert infer_shapes(chain((2, 13), op))["n0"] == torch_shape(conv, (2, 13)) == (3, 5)


@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), ((2, 3), (2, 1), (1, 0))])
def test_pool_shapes(kernel, stride, padding):
    in_shape = (3, 9, 8)
    want = torch_shape(nn.AvgPool2d(kernel, stride, padding), in_shape)
    for cls in (nir.AvgPool2d, nir.SumPool2d):
        op = cls(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        assert infer_shapes(chain(in_shape, op))["n0"] == want


def test_conv_pool_flatten_linear_chain():
    """The conv example's layer shapes, against the torch layers of the same network."""
    conv, pool, flat = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.Flatten()
    g = chain((1, 8, 8),
              nir.Conv2d(input_shape=(8, 8), weight=conv.weight.detach().numpy(), stride=1, padding=1, dilation=1,
                         groups=1, bias=conv.bias.detach().numpy()),
              lif((4, 8, 8)),
              nir.AvgPool2d(kernel_size=np.array(2), stride=np.array(2), padding=np.array(0)),
              nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0),  # nn.Flatten(): no batch axis
              nir.Affine(weight=np.zeros((10, 64)), bias=np.zeros(10)))
    s1 = torch_shape(conv, (1, 8, 8))
    s2 = torch_shape(pool, s1)
    assert infer_shapes(g) == {"in": (1, 8, 8), "n0": s1, "n1": s1, "n2": s2, "n3": torch_shape(flat, s2),
                               "n4": (10,), "out": (10,)}


@pytest.mark.parametrize("start,end", [(0, -1), (1, -1), (1, 2), (-2, -1), (0, 1)])
@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_flatten_shape(start, end, declared):
    """NIR counts start_dim/end_dim without the batch axis: torch's nn.Flatten(start + 1, end + 1) on a batch.
    The answer must not depend on whether the file declared the Flatten's input type."""
    in_shape = (2, 3, 4, 5)
    op = nir.Flatten(input_type={"input": np.array(in_shape) if declared else None}, start_dim=start, end_dim=end)
    torch_end = end + 1 if end >= 0 else end
    torch_start = start + 1 if start >= 0 else start
    assert infer_shapes(chain(in_shape, op))["n0"] == torch_shape(nn.Flatten(torch_start, torch_end), in_shape)


def test_exported_conv_network_shapes(networks_dir):
    shapes = infer_shapes(read(networks_dir / "conv_lif.nir"))
    assert shapes == {"input": (1, 8, 8), "0": (4, 8, 8), "1": (4, 8, 8), "2": (4, 4, 4), "3": (64,), "4": (10,),
                      "5": (10,), "output": (10,)}


def test_flat_input_summed_into_a_conv_keeps_the_conv_layout():
    """A Linear's flat (25,) output added to the conv's (1, 5, 5) input, fed back from later in the graph: the
    conv still sees (1, 5, 5), whichever edge was connected first."""
    for feedback_first in (False, True):
        g = Graph()
        g.add_node("in", nir.Input(input_type={"input": np.array([1, 5, 5])}))
        g.add_node("conv", nir.Conv2d(input_shape=(5, 5), weight=np.ones((2, 1, 3, 3)), stride=1, padding=1,
                                      dilation=1, groups=1, bias=np.zeros(2)))
        g.add_node("lif", lif(50))
        g.add_node("back", nir.Linear(weight=np.zeros((25, 50))))
        g.add_node("out", nir.Output(output_type={"output": np.array([50])}))
        edges = [("in", "conv"), ("back", "conv")]
        for a, b in (edges[::-1] if feedback_first else edges) + [("conv", "lif"), ("lif", "back"), ("lif", "out")]:
            g.connect(a, b)
        assert infer_shapes(g)["conv"] == (2, 5, 5)


def test_shapes_arriving_over_feedback_edges():
    """snntorch's RLeaky: the LIF's size is known from its own parameters and from its feed-forward input."""
    g = chain((3,), nir.Linear(weight=np.ones((4, 3))), lif(4))
    g.add_node("rec", nir.Affine(weight=np.ones((4, 4)), bias=np.zeros(4)))
    g.connect("n1", "rec")
    g.connect("rec", "n1")
    assert infer_shapes(g) == {"in": (3,), "n0": (4,), "n1": (4,), "rec": (4,), "out": (4,)}


# ------------------------------------------------------------------------------------------------
# errors naming the node
# ------------------------------------------------------------------------------------------------
def test_linear_shape_mismatch_names_the_node():
    g = chain((4,), nir.Affine(weight=np.ones((3, 5)), bias=np.zeros(3)))
    with pytest.raises(ShapeError, match=r"node 'n0': weight has 5 inputs .* receives shape \(4,\)"):
        validate(g)


def test_neuron_size_mismatch_names_the_node():
    g = chain((4,), nir.Linear(weight=np.ones((6, 4))), lif(5))
    with pytest.raises(ShapeError, match=r"node 'n1': LIF parameters have shape \(5,\).*\(6,\)"):
        validate(g)


def test_summed_inputs_of_different_size_name_the_node():
    g = chain((4,), lif(4))
    g.add_node("in2", nir.Input(input_type={"input": np.array([3])}))
    g.connect("in2", "n0")
    with pytest.raises(ShapeError, match=r"node 'n0': inputs summed into port 'input'.*'in2'"):
        validate(g)


def test_input_without_shape():
    g = chain((4,), lif(4))
    g.nodes["in"] = nir.Input(input_type={"input": np.array([])})
    with pytest.raises(ShapeError, match=r"node 'in': Input has no shape"):
        validate(g)


@pytest.mark.parametrize("edge,what", [(("ghost", "n0"), "source node 'ghost'"),
                                       (("n0", "ghost"), "target node 'ghost'")])
def test_dangling_edges(edge, what):
    g = chain((4,), lif(4))
    g.connect(*edge)
    with pytest.raises(GraphError, match=what):
        validate(g)


def test_dangling_edge_in_a_file(work_dir):
    """An edge to a node the file does not define is reported when the graph is validated."""
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([2])), "l": lif(2),
                                "output": nir.Output(output_type=np.array([2]))},
                         edges=[("input", "l"), ("l", "output"), ("l", "nowhere")], type_check=False)
    nir.write(work_dir / "d.nir", graph)
    with pytest.raises(GraphError, match="target node 'nowhere' does not exist"):
        validate(read(work_dir / "d.nir"))


def test_structure_errors():
    g = chain((2,), lif(2))
    g.connect("n0", "in")
    with pytest.raises(GraphError, match="'in' is an Input and cannot receive edges"):
        validate(g)
    g = chain((2,), lif(2))
    g.add_node("lonely", lif(2))
    with pytest.raises(GraphError, match="node 'lonely' .* has nothing connected"):
        validate(g)
    g = chain((2,), lif(2))
    del g.nodes["out"]
    g.edges = [e for e in g.edges if e.dst != "out"]
    with pytest.raises(GraphError, match="no Output node"):
        validate(g)
    g = chain((2,), lif(2))
    g.connect("in", "n0", port="gate")
    with pytest.raises(GraphError, match="node 'n0' has no input port 'gate'"):
        validate(g)


def test_algebraic_loop_fails_validation():
    g = chain((2,), nir.Linear(weight=np.eye(2)), nir.Linear(weight=np.eye(2)))
    g.connect("n1", "n0")
    with pytest.raises(GraphError, match="algebraic loop"):
        validate(g)


# ------------------------------------------------------------------------------------------------
# signals
# ------------------------------------------------------------------------------------------------
def test_signal_kinds():
    tern = TernaryLIF(tau=np.full(3, 2e-4), r=np.ones(3), v_leak=np.zeros(3), v_threshold_hi=np.ones(3),
                      v_threshold_lo=-np.ones(3), v_reset=np.zeros(3), amplitude=0.25)
    g = chain((3,), lif(3), nir.Flatten(input_type={"input": np.array([3])}), nir.Linear(weight=np.eye(3)), tern,
              nir.Delay(delay=np.zeros(3)))
    sig = infer_signals(g)
    assert sig["in"] == REAL
    assert sig["n0"] == BINARY and sig["n1"] == BINARY  # Flatten passes spikes through
    assert sig["n2"] == REAL  # a synapse's output is a current
    assert sig["n3"] == ternary(0.25) and sig["n4"] == ternary(0.25) and sig["out"] == ternary(0.25)
    assert sig["n0"].is_spiking and not sig["n2"].is_spiking


def test_input_signal_comes_from_its_annotation():
    g = chain((3,), nir.Linear(weight=np.eye(3)))
    g.annotate("in", signal={"kind": "binary"})
    assert infer_signals(g)["in"] == BINARY
