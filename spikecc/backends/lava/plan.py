"""The process graph a Loihi-form spikecc graph becomes, as plain data (no Lava import).

    plan_network(graph, mode) -> NetworkPlan: one ProcessSpec per node (spikecc.backends.lava.lowering) and
                                 the connections between process ports, one per graph edge

Connections follow the graph's edges: the source node's out port (s_out of a neuron, relay, router or source,
a_out of a Dense) to the destination's in port (s_in of a Dense or router, a_in of a neuron or relay); each
spec names its ports (spikecc.backends.lava.lowering). Several edges into one port
are summed, as NIR says: Lava's PyInPortVectorDense.recv adds the messages of all connected channels
(lava/magma/core/model/py/ports.py:333-351). A recurrent edge is an ordinary connection, because the Dense
on the loop delivers a step late (a_buff) and so breaks the cycle, exactly as `LoihiDense.output_delay`
does in the CPU simulator's schedule. Alias nodes (Output, Flatten) have no process; edges through them
are resolved to the ports that feed them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikecc.backends.lava.lowering import LoweringContext, ProcessSpec, find_lowering, lower_node
from spikecc.errors import BackendError, GraphError
from spikecc.ir.formats import is_fixed
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes

MODES = ("fixed", "float")
SELECT_TAGS = {"fixed": "fixed_pt", "float": "floating_pt"}


@dataclass
class NetworkPlan:
    """What to build: `specs[node]`, `connections` as (src node, dst node) pairs between process nodes
    (one per edge, aliases resolved; never the same pair twice), `feeds[node]` the process
    nodes whose out ports make up a node's output (itself for a process node; for an alias, the sum of
    what feeds it), and the flat `sizes` of all nodes."""

    graph: Graph
    mode: str
    specs: dict[str, ProcessSpec]
    connections: list[tuple[str, str]]
    feeds: dict[str, list[str]]
    sizes: dict[str, int]
    shapes: dict[str, tuple[int, ...]]

    @property
    def processes(self) -> list[str]:
        return [n for n, s in self.specs.items() if not s.is_alias]


def check_mode(graph: Graph, mode: str | None) -> str:
    """The run mode: the given one, or the graph's own form (fixed after quantize_for_loihi, else float)."""
    fixed_graph = is_fixed(graph)
    if mode is None:
        return "fixed" if fixed_graph else "float"
    if mode not in MODES:
        raise BackendError(f"Lava mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "fixed" and not fixed_graph:
        raise BackendError("the graph is not quantized for Loihi (no node has a fixed-point format); run "
                           "quantize_for_loihi on it before a fixed-point Lava run, or run with mode='float'")
    if mode == "float" and fixed_graph:
        raise BackendError("the graph holds fixed-point (quantized) parameters, which Lava's floating_pt models "
                           "would misread; run it with mode='fixed', or lower it without quantize_for_loihi")
    return mode


def plan_network(graph: Graph, mode: str | None = None) -> NetworkPlan:
    """Lower every node of a Loihi-form graph to a ProcessSpec and resolve the edges into connections."""
    mode = check_mode(graph, mode)
    for name, op in graph.nodes.items():  # unsupported ops first: their shapes may not even infer
        find_lowering(name, op)
    try:
        shapes = infer_shapes(graph)
    except (GraphError, ValueError) as e:
        raise BackendError(f"cannot build a Lava network: {e}") from None
    sizes = {n: int(np.prod(s)) if len(s) else 1 for n, s in shapes.items()}
    in_edges = {n: graph.in_edges(n) for n in graph.nodes}
    specs: dict[str, ProcessSpec] = {}
    for name, op in graph.nodes.items():
        for e in in_edges[name]:
            if e.port != "input":
                raise BackendError(f"node '{name}': Lava processes here have one input port, but edge {e} "
                                   f"addresses port '{e.port}'")
        in_size = sizes[in_edges[name][0].src] if in_edges[name] else None
        specs[name] = lower_node(op, LoweringContext(name=name, mode=mode, size=sizes[name], in_size=in_size,
                                                     annotations=graph.annotations.get(name, {})))
        if not specs[name].is_alias and specs[name].in_port is None and in_edges[name]:
            raise BackendError(f"node '{name}': {type(op).__name__} takes no input, but edges lead into it")

    feeds: dict[str, list[str]] = {}

    def resolve(name: str, stack: tuple[str, ...] = ()) -> list[str]:
        if name in feeds:
            return feeds[name]
        if not specs[name].is_alias:
            feeds[name] = [name]
            return feeds[name]
        if name in stack:
            raise BackendError(f"node '{name}': a loop through pass-through nodes only ({' -> '.join(stack)}); "
                               "a loop needs a LoihiDense to delay it")
        out = [p for e in in_edges[name] for p in resolve(e.src, (*stack, name))]
        feeds[name] = out
        return out

    for name in graph.nodes:
        resolve(name)
    connections = [(src, e.dst) for e in graph.edges if not specs[e.dst].is_alias for src in feeds[e.src]]
    seen: set[tuple[str, str]] = set()
    for src, dst in connections:
        if (src, dst) in seen:
            raise BackendError(f"node '{dst}': receives '{src}' over more than one edge, and Lava cannot connect the "
                               "same two ports twice; merge those edges into one synapse layer (sum the weights)")
        seen.add((src, dst))
    return NetworkPlan(graph=graph, mode=mode, specs=specs, connections=connections, feeds=feeds,
                       sizes=sizes, shapes={n: tuple(int(d) for d in s) for n, s in shapes.items()})


@dataclass(frozen=True)
class OutputReads:
    """How an Output node is read: `ports` are process nodes whose out-port messages arrive summed (spikes
    of a neuron, currents of a Dense); `states` are readout neurons (annotation readout="v", what
    lower_for_loihi makes of LI/CubaLI/I) whose v is read after each step instead, summed as well."""

    ports: tuple[str, ...] = ()
    states: tuple[str, ...] = ()


def output_reads(plan: NetworkPlan) -> dict[str, OutputReads]:
    """Per Output node, what to record; an error if nothing feeds it."""
    out = {}
    for name in plan.graph.outputs():
        feeds = plan.feeds[name]
        if not feeds:
            raise BackendError(f"node '{name}': Output is not fed by any process; connect it or remove it")
        states = tuple(n for n in feeds if plan.graph.annotation(n, "readout") == "v")
        for n in states:
            if "v" not in plan.specs[n].states:
                raise BackendError(f"node '{n}': annotated readout='v' but its Lava process has no v to read")
        if states and len(states) != len(feeds):
            raise BackendError(f"node '{name}': Output sums readout voltages ({', '.join(states)}) and spikes "
                               "or currents; give each kind its own Output")
        out[name] = OutputReads(states=states) if states else OutputReads(ports=tuple(feeds))
    return out
