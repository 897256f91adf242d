"""partition: mark every op of a language model neuro-core or host, and make the boundaries explicit channels.

Neuro-core: the spiking neurons (SpikeGPT's LIF, SpikeLM's elastic bi-spiking neurons, the routers that carry
their spikes) and the linear layers of a token (synapses: event-driven where their input is spikes). Host:
what has no neuro-core form (LayerNorm, softmax attention, WKV's exp and division, sigmoid, GELU, products,
embedding lookup, the spike encoders of SpikeRWKV, the readout head that feeds the logits) and linear layers
applied to a sequence row by row (a BERT encoder's whole sequence at once: Loihi would time-multiplex them).

A neuro-core linear whose input is the sum of several real-valued host nodes (RWKV-6's token shift:
x + (x_prev - x) * mu feeds r, k, v, g) takes that sum as one message: the host adds them in an identity node
(`<linear>.sum`, a nir.Scale of ones, which sums its inputs as every NIR node does) and one boundary crosses.

Every edge that crosses gets a boundary node, one per source (shared by its consumers on the other side):

    host -> core   HostToCore: binary spikes (0 bits) where the host sends spikes (an encoder's, split into
                   polarity channels on the host: a router runs where its source does), signed 2-bit spikes
                   where it sends them unsplit (--polarity graded), the exact
                   (l + 1)-bit value of a graded encoder, else a graded message of `message_bits` bits whose
                   scale the quantize pass calibrates (annotation calibrate=True)
    core -> host   CoreToHost: spikes or currents back to reals (scales set by map-neurons)

SpikeGPT's linears take real LayerNorm outputs, not spikes, so their inputs are graded messages (the report says
so); SpikeLM's and SpikeRWKV's linears take spikes. Annotations: `partition` ("neurocore" | "host") on every
node, `boundary` on the inserted nodes.

Invariant: values are unchanged (the boundary nodes are identities in float form).
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.compiler.passes.rewrite import fresh_name, is_linear
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.lm_ops import DiscreteLIF
from spikecc.ir.loihi_spec import TERNARY_MESSAGE_BITS
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, SpikeRouter
from spikecc.ir.spikelm_ops import ElasticBiSpike

CORE, HOST = "neurocore", "host"
DEFAULT_MESSAGE_BITS = 12  # host -> core graded messages: 8-bit weights x 12-bit payloads x fan-in < 2**31


def _feeds_output(g: Graph, name: str) -> bool:
    return any(isinstance(g.nodes[e.dst], nir.Output) for e in g.out_edges(name))


def placement(g: Graph, a: Analysis) -> dict[str, str]:
    """Per node, where it runs (module docstring)."""
    out = {}
    for name, op in g.nodes.items():
        core = False
        if is_linear(op):
            core = a.size(name) == op.weight.shape[0] and not _feeds_output(g, name)
        elif isinstance(op, DiscreteLIF):
            core = True
        elif isinstance(op, ElasticBiSpike):
            core = len(a.shapes[name]) == 1
        out[name] = CORE if core else HOST
    for name, op in g.nodes.items():  # a router is its source's axons: it runs where its source does
        if isinstance(op, SpikeRouter):
            out[name] = out[g.predecessors(name)[0]]
    return out


def partition(g: Graph, a: Analysis | None = None, message_bits: int = DEFAULT_MESSAGE_BITS) -> Graph:
    """A new graph with `partition` on every node and boundary nodes on every crossing edge."""
    a = analysis_of(g, a)
    where = placement(g, a)
    summed = _sum_host_inputs(g, a, where)
    if summed is not g:
        g, a = summed, Analysis(summed)
        where = placement(g, a)
    out = g.copy()
    for name, side in where.items():
        out.annotate(name, partition=side)
    crossing: dict[str, list[Edge]] = {}
    for e in g.edges:
        if where[e.src] != where[e.dst]:
            crossing.setdefault(e.src, []).append(e)
    for src, edges in crossing.items():
        for side in (CORE, HOST):
            moved = [e for e in edges if where[e.dst] == side]
            if not moved:
                continue
            if side == CORE:
                op, suffix = _host_to_core(a, src, message_bits), "to_core"
            else:
                op, suffix = CoreToHost(), "to_host"
            name = fresh_name(out, f"{src}.{suffix}")
            out.add_node(name, op, partition=HOST, boundary=suffix)
            if isinstance(op, HostToCore) and op.bits > 0 and a.signals[src].kind != "graded":
                out.annotate(name, calibrate=True)
            out.edges = [e for e in out.edges if e not in moved]
            out.connect(src, name)
            for e in moved:
                out.connect(name, e.dst, e.port)
    return out


def _sum_host_inputs(g: Graph, a: Analysis, where: dict[str, str]) -> Graph:
    """`g`, or a copy in which every neuro-core linear fed by several real host nodes reads their sum from one
    host identity node (module docstring)."""
    out = g
    for name, op in g.nodes.items():
        edges = g.in_edges(name)
        if not (is_linear(op) and where[name] == CORE and len(edges) > 1):
            continue
        if any(where[e.src] != HOST or a.signals[e.src].kind != "real" for e in edges):
            continue
        if out is g:
            out = g.copy()
        node = fresh_name(out, f"{name}.sum")
        out.add_node(node, nir.Scale(scale=np.ones(op.weight.shape[1])))
        out.edges = [e for e in out.edges if e not in edges]
        for e in edges:
            out.connect(e.src, node)
        out.connect(node, name)
    return out


def _host_to_core(a: Analysis, src: str, message_bits: int) -> HostToCore:
    sig = a.signals[src]
    if sig.kind == "binary":
        return HostToCore(bits=0)
    if sig.kind == "ternary":
        return HostToCore(bits=TERNARY_MESSAGE_BITS, scale=float(sig.amplitude))
    if sig.kind == "graded" and sig.bits > 0:
        return HostToCore(bits=int(sig.bits), scale=float(sig.scale))
    return HostToCore(bits=int(message_bits))
