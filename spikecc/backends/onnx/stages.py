"""How one graph step of a partitioned language model splits into host stages and neuro-core phases.

Host and neuro-core work interleave within a step (LayerNorm on the host -> K/V/R synapses on the cores -> WKV on
the host -> the output synapse on the cores -> ...). With the partition pass's annotation `partition` on every node
and a boundary node on every crossing edge, each node gets a level, over the edges of the step (none of an LM graph
is delayed; see `plan_stages`):

    level(n) = max over the edges s -> n of  level(s) + 1   where s is on the neuro-cores and n on the host
                                             level(s)       otherwise                           (0 without inputs)

Host stage k holds the host nodes of level k, core phase k the neuro-core nodes of level k, and a step runs host
stage 0, core phase 0, host stage 1, ... in that order: a core node of level k needs only host values of stages
<= k and core values of phases <= k, and a host node of level k only core values of phases < k. Within a stage
and a phase, nodes keep the graph's schedule order.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from spikecc.errors import BackendError
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore

HOST, CORE = "host", "neurocore"


@dataclass
class StagePlan:
    host: list[list[str]]  # host stage k: its nodes in schedule order
    core: list[list[str]]  # core phase k: its nodes in schedule order
    level: dict[str, int]
    where: dict[str, str]  # node -> HOST | CORE

    def core_needs(self, g: Graph, k: int) -> list[str]:
        """Values phase k reads from outside it (HostToCore payloads, nodes of earlier phases), first-use order."""
        inside = set(self.core[k])
        out: list[str] = []
        for n in self.core[k]:
            for e in g.in_edges(n):
                if e.src not in inside and e.src not in out:
                    out.append(e.src)
        return out

    def core_produces(self, g: Graph, k: int) -> list[str]:
        """Nodes of phase k whose values are read outside it (by CoreToHost boundaries or later phases)."""
        inside = set(self.core[k])
        return [n for n in self.core[k] if any(e.dst not in inside for e in g.out_edges(n))]


def plan_stages(g: Graph) -> StagePlan:
    """The stages and phases of `g` (module docstring); one-line errors for a graph that is not partitioned."""
    where: dict[str, str] = {}
    for name in g.nodes:
        side = g.annotation(name, "partition")
        if side not in (HOST, CORE):
            raise BackendError(f"node '{name}' has no partition annotation (host or neurocore); compile the "
                               "language model through the LM passes (spikecc.compiler.pipeline.lm_passes) first")
        where[name] = side
    order, delayed = g.schedule()
    for e in delayed:
        if HOST in (where[e.src], where[e.dst]):
            raise BackendError(f"edge {e}: a recurrent edge into or out of the host partition (it carries the "
                               "previous step's value); the ONNX host export takes feed-forward host graphs whose "
                               "state lives in stateful ops (Delay, WKV, ...)")
    for e in g.edges:
        _check_crossing(g, e, where)
    skip = set(delayed)
    level: dict[str, int] = {}
    for name in order:
        lv = 0
        for e in g.in_edges(name):
            if e not in skip:
                lv = max(lv, level[e.src] + (where[e.src] == CORE and where[name] == HOST))
        level[name] = lv
    n_host = 1 + max((lv for n, lv in level.items() if where[n] == HOST), default=0)
    n_core = 1 + max((lv for n, lv in level.items() if where[n] == CORE), default=-1)
    host: list[list[str]] = [[] for _ in range(n_host)]
    core: list[list[str]] = [[] for _ in range(n_core)]
    for name in order:
        (host if where[name] == HOST else core)[level[name]].append(name)
    return StagePlan(host=host, core=core, level=level, where=where)


def _check_crossing(g: Graph, e: Edge, where: dict[str, str]) -> None:
    if where[e.src] == where[e.dst]:
        if where[e.src] == HOST and isinstance(g.nodes[e.src], HostToCore):
            raise BackendError(f"edge {e}: HostToCore '{e.src}' feeds a host node; a boundary sends to the "
                               "neuro-cores only")
        return
    if where[e.src] == HOST and not isinstance(g.nodes[e.src], HostToCore):
        raise BackendError(f"edge {e}: host node '{e.src}' feeds neuro-core node '{e.dst}' without a HostToCore "
                           "boundary; run the partition pass, which inserts the boundaries")
    if where[e.dst] == HOST and not isinstance(g.nodes[e.dst], CoreToHost):
        raise BackendError(f"edge {e}: neuro-core node '{e.src}' feeds host node '{e.dst}' without a CoreToHost "
                           "boundary; run the partition pass, which inserts the boundaries")


def phase_graph(g: Graph, plan: StagePlan, k: int, signals: dict, shapes: dict) -> Graph:
    """Core phase k as a graph of its own: its nodes (parameters and annotations as in `g`), one Input per value it
    reads from outside (named after that value's node, carrying its signal) and one Output per value read outside
    (named "<node>:out"). What the CPU simulator runs for the phase."""
    from dataclasses import asdict

    sub = Graph(metadata={k_: v for k_, v in g.metadata.items() if k_ in ("dt", "quantization")})
    for src in plan.core_needs(g, k):
        sig = signals[src]
        sub.add_node(src, nir.Input(input_type={"input": np.asarray(shapes[src])}), partition=CORE,
                     signal=asdict(sig))
    for n in plan.core[k]:
        sub.add_node(n, g.nodes[n], **g.annotations.get(n, {}))
    inside = set(sub.nodes)
    for e in g.edges:
        if e.dst in plan.core[k] and e.src in inside:
            sub.edges.append(e)
    for n in plan.core_produces(g, k):
        sub.add_node(f"{n}:out", nir.Output(output_type={"output": np.asarray(shapes[n])}), partition=CORE)
        sub.connect(n, f"{n}:out")
    return sub
