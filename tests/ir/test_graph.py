"""Graph structure: the deterministic schedule, delayed (feedback) edges, loop components, algebraic loops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import nir
import numpy as np
import pytest

from spikecc.errors import GraphError
from spikecc.ir import Edge, ExtensionOp, Graph, read


def lif(n: int = 2) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 2e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def lin(n: int = 2) -> nir.Linear:
    return nir.Linear(weight=np.eye(n))


def build(nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]]) -> Graph:
    g = Graph()
    for name, op in nodes.items():
        g.add_node(name, op)
    for a, b in edges:
        g.connect(a, b)
    return g


def inp(n: int = 2) -> nir.Input:
    return nir.Input(input_type={"input": np.array([n])})


def out(n: int = 2) -> nir.Output:
    return nir.Output(output_type={"output": np.array([n])})


def rleaky_graph() -> Graph:
    """in -> w -> lif -> out, lif -> w_rec -> lif (snntorch's RLeaky export)."""
    return build({"in": inp(), "w": lin(), "lif": lif(), "w_rec": lin(), "out": out()},
                 [("in", "w"), ("w", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "out")])


def test_recurrent_schedule_delays_the_edge_closing_the_loop():
    order, delayed = rleaky_graph().schedule()
    assert order == ["in", "w", "lif", "w_rec", "out"]
    assert delayed == [Edge("w_rec", "lif")]


def test_exported_rleaky_schedule(networks_dir):
    g = read(networks_dir / "recurrent_rleaky.nir")
    order, delayed = g.schedule()
    assert delayed == [Edge("1.w_rec", "1.lif")]
    assert order.index("0") < order.index("1.lif") < order.index("1.w_rec")
    assert order.index("1.lif") < order.index("2") < order.index("3") < order.index("output")
    assert ["1.lif", "1.w_rec"] in g.components()


def test_feed_forward_graph_has_no_delayed_edges_and_singleton_components():
    g = build({"in": inp(), "a": lin(), "l": lif(), "out": out()}, [("in", "a"), ("a", "l"), ("l", "out")])
    order, delayed = g.schedule()
    assert delayed == [] and order == ["in", "a", "l", "out"]
    assert g.components() == [["in"], ["a"], ["l"], ["out"]]


def test_loop_through_two_neurons_gets_exactly_one_delay():
    """in -> l1 -> l2 -> back -> l1: layer 2 sees layer 1's spikes of the same step; only the back edge waits."""
    g = build({"in": inp(), "l1": lif(), "l2": lif(), "back": lin(), "out": out()},
              [("in", "l1"), ("l1", "l2"), ("l2", "back"), ("back", "l1"), ("l2", "out")])
    order, delayed = g.schedule()
    assert delayed == [Edge("back", "l1")]
    assert order == ["in", "l1", "l2", "back", "out"]
    assert g.components() == [["in"], ["l1", "l2", "back"], ["out"]]


def test_self_loop_on_a_neuron_is_delayed():
    g = build({"in": inp(), "l": lif(), "out": out()}, [("in", "l"), ("l", "l"), ("l", "out")])
    assert g.schedule()[1] == [Edge("l", "l")]
    assert g.has_self_loop("l") and not g.has_self_loop("in")


def test_schedule_breaks_ties_by_definition_order():
    def two_branches(first: str, second: str) -> Graph:
        nodes = {"in": inp(), first: lin(), second: lin(), "out": out()}
        return build(nodes, [("in", "a"), ("in", "b"), ("a", "out"), ("b", "out")])

    assert two_branches("a", "b").schedule()[0] == ["in", "a", "b", "out"]
    assert two_branches("b", "a").schedule()[0] == ["in", "b", "a", "out"]
    g = two_branches("a", "b")
    assert all(g.copy().schedule() == g.schedule() for _ in range(3))


@pytest.mark.parametrize("edges", [[("a", "b"), ("b", "a")], [("a", "a")]], ids=["two nodes", "self loop"])
def test_algebraic_loop_is_a_graph_error(edges):
    g = build({"in": inp(), "a": lin(), "b": lin(), "out": out()}, [("in", "a"), ("b", "out"), *edges])
    if ("a", "b") not in edges:
        g.connect("a", "b")
    with pytest.raises(GraphError, match=r"loop through a.*algebraic loop"):
        g.schedule()


@dataclass(eq=False)
class _LateSynapse(ExtensionOp):
    """Test-only op (not registered) whose output reaches consumers one step late, like a Loihi synapse."""

    n: int = 2
    output_delay: ClassVar[int] = 1

    def natural_shape(self):
        return (self.n,)


def test_output_delay_ops_delay_every_outgoing_edge():
    g = build({"in": inp(), "syn": _LateSynapse(), "l": lif(), "out": out()},
              [("in", "syn"), ("syn", "l"), ("syn", "out"), ("l", "out")])
    assert set(g.schedule()[1]) == {Edge("syn", "l"), Edge("syn", "out")}


def test_output_delay_breaks_a_loop_of_stateless_ops():
    """a -> syn -> a has no neuron, but the synapse's one-step delay makes it well defined."""
    g = build({"in": inp(), "a": lin(), "syn": _LateSynapse(), "out": out()},
              [("in", "a"), ("a", "syn"), ("syn", "a"), ("a", "out")])
    order, delayed = g.schedule()
    assert delayed == [Edge("syn", "a")]
    assert order == ["in", "a", "syn", "out"]


def test_node_names_are_unique():
    g = Graph()
    g.add_node("x", inp())
    with pytest.raises(GraphError, match="'x' is defined twice"):
        g.add_node("x", lin())


def test_copy_has_its_own_ops_and_containers_and_shares_arrays():
    """What a pass may do to a copy (replace an op, assign a new array to a field, annotate, rewire) never shows
    in the original; arrays themselves are shared (a 216M model is not duplicated per pass), which is why passes
    assign new arrays instead of writing into old ones."""
    g = rleaky_graph()
    g.annotate("lif", core=1)
    c = g.copy()
    assert c.nodes["w"] is not g.nodes["w"] and c.nodes["w"].weight is g.nodes["w"].weight
    c.nodes["w"].weight = c.nodes["w"].weight * 42.0
    c.nodes["w"].metadata["note"] = "changed"
    c.nodes["lif"] = nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2))
    c.annotate("lif", core=2)
    c.connect("in", "out")
    c.metadata["dt"] = 1.0
    assert g.nodes["w"].weight[0, 0] == 1.0 and "note" not in g.nodes["w"].metadata
    assert isinstance(g.nodes["lif"], nir.LIF) and g.annotation("lif", "core") == 1 and len(g.edges) == 5
    assert g.metadata.get("dt") != 1.0


def test_queries():
    g = rleaky_graph()
    assert g.inputs() == ["in"] and g.outputs() == ["out"]
    assert g.predecessors("lif") == ["w", "w_rec"] and g.successors("lif") == ["w_rec", "out"]
    assert [n for n, _ in g.ops_of_type(nir.Linear)] == ["w", "w_rec"]
    assert g.dt == 1e-4
    g.metadata["dt"] = 1e-3
    assert g.dt == 1e-3
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 5 and nxg.number_of_edges() == 5
