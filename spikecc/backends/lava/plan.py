"""The process graph a Loihi-form spikecc graph becomes, as plain data (no Lava import).

    plan_network(graph, mode, split=False) -> NetworkPlan: one ProcessSpec per node
        (spikecc.backends.lava.lowering) and the connections between process ports, one per graph edge;
        with `split`, neuron nodes whose per-process values (du, dv, thresholds) differ become one process
        per value group, as Loihi 2 needs (spikecc.backends.lava.split)
    split_report(graph, mode) -> dict: what the split plan divides and what it leaves whole (JSON)

Connections follow the graph's edges: the source node's out port (s_out of a neuron, relay, router or source,
a_out of a Dense) to the destination's in port (s_in of a Dense or router, a_in of a neuron or relay); each
spec names its ports (spikecc.backends.lava.lowering). Several edges into one port
are summed, as NIR says: Lava's PyInPortVectorDense.recv adds the messages of all connected channels
(lava/magma/core/model/py/ports.py:333-351). A recurrent edge is an ordinary connection, because the Dense
on the loop delivers a step late (a_buff) and so breaks the cycle, exactly as `LoihiDense.output_delay`
does in the CPU simulator's schedule. Alias nodes (Output, Flatten) have no process; edges through them
are resolved to the ports that feed them.

Two plans come from the same code: the whole plan (one process per node, Lava's Python models broadcasting
per-neuron du/dv/thresholds; what simulation runs, since Lava starts one OS process per process; it splits only
what Lava's Python models cannot broadcast, `ProcessSpec.one_value`) and the split plan (what Loihi 2 takes).
Node names, the graph and the outputs are the same in both; only the processes behind a split node differ,
and a run reads them back in the node's neuron order (`NetworkPlan.parts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from spikecc.backends.lava.lowering import LoweringContext, ProcessSpec, find_lowering, lower_node
from spikecc.backends.lava.split import Part, ValueGroups, expand, value_groups, why_whole
from spikecc.errors import BackendError, GraphError
from spikecc.ir.formats import is_fixed
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes

MODES = ("fixed", "float")
SELECT_TAGS = {"fixed": "fixed_pt", "float": "floating_pt"}


@dataclass
class NetworkPlan:
    """What to build: `specs[process]` (keyed by node name, or `node[i]` for the parts of a split node and
    of the synapse layers around it), `connections` as (src, dst) pairs of processes (never the same pair
    twice), `parts[node]` the processes whose out ports make up a process node's output and where their
    elements go (split.Part), `feeds[node]` the process nodes whose outputs make up a node's output (itself
    for a process node; for an alias, the sum of what feeds it), the flat `sizes` of all nodes,
    `node_specs[node]` every node's own lowering (aliases included), `splits` the split neuron nodes and
    `kept[node]` why a node whose per-process values differ stays one process (refused by Loihi 2)."""

    graph: Graph
    mode: str
    specs: dict[str, ProcessSpec]
    connections: list[tuple[str, str]]
    feeds: dict[str, list[str]]
    sizes: dict[str, int]
    shapes: dict[str, tuple[int, ...]]
    node_specs: dict[str, ProcessSpec]
    parts: dict[str, list[Part]]
    splits: dict[str, ValueGroups]
    kept: dict[str, str]

    @property
    def processes(self) -> list[str]:
        return list(self.specs)

    @cached_property
    def out_sizes(self) -> dict[str, int]:
        """How many values each process's out port sends."""
        return {p.process: self.sizes[node] if p.index is None else int(p.index.size)
                for node, parts in self.parts.items() for p in parts}


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


def plan_network(graph: Graph, mode: str | None = None, split: bool = False) -> NetworkPlan:
    """Lower every node of a Loihi-form graph to a ProcessSpec and resolve the edges into connections;
    with `split`, split neuron nodes by value wherever that can be wired exactly (module docstring)."""
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
    order = [n for n, s in specs.items() if not s.is_alias]
    groups: dict[str, ValueGroups] = {}
    kept: dict[str, str] = {}
    for name in order:
        spec = specs[name]
        if not spec.per_process_arrays:
            continue
        if split or spec.one_value:
            reason = why_whole(name, specs, connections, mode)
        else:
            reason = "the simulation plan keeps layers whole"
        if reason is None:
            groups[name] = value_groups(name, spec)
        elif spec.one_value:
            raise BackendError(f"node '{name}': Lava's {spec.cls} model takes one {' and one '.join(spec.one_value)} "
                               f"per process, and this layer's differ between neurons, but it cannot be split by "
                               f"value: {reason}; give its neurons equal values")
        else:
            kept[name] = reason
    processes, parts, links = expand(order, specs, connections, groups, mode)
    return NetworkPlan(graph=graph, mode=mode, specs=processes, connections=links, feeds=feeds,
                       sizes=sizes, shapes={n: tuple(int(d) for d in s) for n, s in shapes.items()},
                       node_specs=specs, parts=parts, splits=groups, kept=kept)


def split_report(graph: Graph, mode: str | None = None) -> dict:
    """What splitting by value does to a graph's Lava network, as JSON: `split` (node -> neurons, groups, the
    parameters that differ), `kept_whole` (node -> why; Loihi2HwCfg refuses these), and `processes`, how many
    Lava processes the whole plan (simulation) and the split plan (hardware) have."""
    whole, split = plan_network(graph, mode), plan_network(graph, mode, split=True)
    return {"split": {n: {"neurons": g.neurons, "groups": len(g.groups), "by": list(g.by)}
                      for n, g in split.splits.items()},
            "kept_whole": dict(split.kept),
            "processes": {"whole": len(whole.specs), "split": len(split.specs)}}


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
            if "v" not in plan.node_specs[n].states:
                raise BackendError(f"node '{n}': annotated readout='v' but its Lava process has no v to read")
        if states and len(states) != len(feeds):
            raise BackendError(f"node '{name}': Output sums readout voltages ({', '.join(states)}) and spikes "
                               "or currents; give each kind its own Output")
        out[name] = OutputReads(states=states) if states else OutputReads(ports=tuple(feeds))
    return out
