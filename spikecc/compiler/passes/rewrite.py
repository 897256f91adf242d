"""Small graph-surgery helpers the passes share: fresh names, inserting a node on edges, removing a node."""

from __future__ import annotations

from collections.abc import Iterable

import nir

from spikecc.ir.graph import Edge, Graph


def fresh_name(g: Graph, base: str) -> str:
    """`base`, or `base.1`, `base.2`, ... whichever is free in `g`."""
    name, k = base, 1
    while name in g.nodes:
        name, k = f"{base}.{k}", k + 1
    return name


def insert_after(g: Graph, src: str, name: str, op: nir.NIRNode, edges: Iterable[Edge] | None = None,
                 **annotations) -> str:
    """Add node `name` fed by `src` and move `edges` (default: every edge leaving `src`) to leave it instead.
    Returns the new node's name (made unique)."""
    moved = list(g.out_edges(src) if edges is None else edges)
    name = fresh_name(g, name)
    g.add_node(name, op, **annotations)
    g.edges = [e for e in g.edges if e not in moved]
    g.connect(src, name)
    for e in moved:
        g.connect(name, e.dst, e.port)
    return name


def remove_node(g: Graph, name: str) -> None:
    """Drop a node and every edge touching it."""
    del g.nodes[name]
    g.annotations.pop(name, None)
    g.edges = [e for e in g.edges if name not in (e.src, e.dst)]


def is_linear(op: nir.NIRNode) -> bool:
    return isinstance(op, (nir.Linear, nir.Affine))
