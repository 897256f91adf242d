"""The IR: a graph of named nodes, each holding an NIR node or a spikecc extension op.

Like torch.fx's Graph, it is one small structure that passes rewrite and backends interpret.
- nodes: an ordered mapping name -> op (a `nir.NIRNode`); sub-graphs are flattened on the way in, with
  their node names joined by "." (the NIR file keeps its nesting only as names).
- edges: `Edge(src, dst, port)`; several edges into one port are summed (NIR's rule).
- annotations: a dict per node (quantization, placement, core assignment) that survives serialization.
- metadata: graph-level facts, among them `dt`, the seconds one discrete step stands for.

The graph may hold cycles (recurrence). `schedule()` orders nodes so every edge runs forward except the
feedback edges it names; a feedback edge carries the value its source produced one step earlier.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import nir

from spikecc.errors import GraphError

# seconds per step: snntorch 1.0's export_to_nir hard-codes dt = 1e-4, as the NIR paper's examples do (Pedersen et al.,
# Nat. Commun. 15:8122, 2024)
DEFAULT_DT = 1e-4


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    port: str = "input"

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}" + ("" if self.port == "input" else f".{self.port}")


@dataclass
class Graph:
    nodes: dict[str, nir.NIRNode] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    annotations: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # -- construction ----------------------------------------------------------------------------
    def add_node(self, name: str, op: nir.NIRNode, **annotations: Any) -> str:
        if name in self.nodes:
            raise GraphError(f"node '{name}' is defined twice; give each node a unique name")
        self.nodes[name] = op
        if annotations:
            self.annotations[name] = dict(annotations)
        return name

    def connect(self, src: str, dst: str, port: str = "input") -> None:
        self.edges.append(Edge(src, dst, port))

    def copy(self) -> Graph:
        """A copy for a pass to rewrite: new node, edge, annotation and metadata containers and a new object per
        op, but the ops' arrays shared with this graph. Passes never change an array in place (they assign new
        ones), so a pass's input is never mutated, and a 216M-parameter model is not duplicated per pass."""
        return Graph(nodes={n: _copy_op(op) for n, op in self.nodes.items()}, edges=list(self.edges),
                     annotations=copy.deepcopy(self.annotations), metadata=copy.deepcopy(self.metadata))

    @property
    def dt(self) -> float:
        return float(self.metadata.get("dt", DEFAULT_DT))

    # -- queries ---------------------------------------------------------------------------------
    def inputs(self) -> list[str]:
        return [n for n, op in self.nodes.items() if isinstance(op, nir.Input)]

    def outputs(self) -> list[str]:
        return [n for n, op in self.nodes.items() if isinstance(op, nir.Output)]

    def in_edges(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == name]

    def out_edges(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.src == name]

    def predecessors(self, name: str, port: str | None = None) -> list[str]:
        return [e.src for e in self.edges if e.dst == name and (port is None or e.port == port)]

    def successors(self, name: str) -> list[str]:
        return [e.dst for e in self.edges if e.src == name]

    def ops_of_type(self, *types: type) -> Iterator[tuple[str, nir.NIRNode]]:
        return ((n, op) for n, op in self.nodes.items() if isinstance(op, types))

    def annotation(self, name: str, key: str, default: Any = None) -> Any:
        return self.annotations.get(name, {}).get(key, default)

    def annotate(self, name: str, **values: Any) -> None:
        self.annotations.setdefault(name, {}).update(values)

    def to_networkx(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        for name, op in self.nodes.items():
            g.add_node(name, op=op)
        for e in self.edges:
            g.add_edge(e.src, e.dst, port=e.port)
        return g

    # -- ordering --------------------------------------------------------------------------------
    def schedule(self) -> tuple[list[str], list[Edge]]:
        """(order, delayed): an execution order, and the edges that deliver their source's value from the
        previous step instead of the current one.

        Delayed edges are (1) every edge leaving an op with `output_delay` (Loihi 2 synapses deliver one
        step late) and (2) the back edges of a depth-first walk from the Input nodes (successors in edge
        order): the edge that closes a recurrent loop carries the previous step's value, as snntorch's
        RLeaky does. Each loop must hold a stateful op (neuron, Delay); one without is an algebraic loop.
        Ties are broken by definition order, so the schedule is deterministic.
        """
        from spikecc.ir.ops import is_stateful, output_delay  # ops imports nir only; keep graph light

        position = {n: i for i, n in enumerate(self.nodes)}
        always = [e for e in self.edges if output_delay(self.nodes[e.src])]
        rest = [e for e in self.edges if e not in always]
        succ: dict[str, list[Edge]] = {n: [] for n in self.nodes}
        for e in rest:
            succ[e.src].append(e)
        back: list[Edge] = []
        state: dict[str, int] = {}  # 1 = on the walk's stack, 2 = done
        roots = self.inputs() + list(self.nodes)
        for root in roots:
            if root in state:
                continue
            stack = [(root, iter(succ[root]))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                e = next(it, None)
                if e is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(e.dst) == 1:
                    back.append(e)
                elif e.dst not in state:
                    state[e.dst] = 1
                    stack.append((e.dst, iter(succ[e.dst])))
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((e.src, e.dst) for e in rest)
        for comp in nx.strongly_connected_components(g):
            looped = len(comp) > 1 or any(e.src == e.dst for e in rest if e.src in comp)
            if looped and not any(is_stateful(self.nodes[n]) for n in comp):
                raise GraphError(f"loop through {', '.join(sorted(comp))} has no neuron or delay to break it "
                                 "(an algebraic loop); put a stateful node (e.g. LIF) or a Delay in the loop")
        dag = nx.DiGraph()
        dag.add_nodes_from(self.nodes)
        dag.add_edges_from((e.src, e.dst) for e in rest if e not in back)
        order = list(nx.lexicographical_topological_sort(dag, key=position.__getitem__))
        return order, always + back

    def components(self) -> list[list[str]]:
        """Strongly connected groups of nodes in dependency order, members in schedule order.

        A group of one node without a self-loop depends only on groups before it, so a backend may run
        it over all time steps at once; larger groups must be stepped together, one step at a time.
        """
        order, _ = self.schedule()
        rank = {n: i for i, n in enumerate(order)}
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from((e.src, e.dst) for e in self.edges)
        cond = nx.condensation(g)
        groups = nx.lexicographical_topological_sort(
            cond, key=lambda c: min(rank[n] for n in cond.nodes[c]["members"]))
        return [sorted(cond.nodes[c]["members"], key=rank.__getitem__) for c in groups]

    def has_self_loop(self, name: str) -> bool:
        return any(e.src == e.dst == name for e in self.edges)

    def summary(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.edges)} edges)"


def _copy_op(op: nir.NIRNode) -> nir.NIRNode:
    """A new op object with the same field values; its dict fields (metadata, input/output types) copied."""
    clone = copy.copy(op)
    for key, value in vars(op).items():
        if isinstance(value, dict):
            setattr(clone, key, dict(value))
    return clone
