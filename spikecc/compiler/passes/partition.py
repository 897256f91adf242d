"""partition: mark every op of a language model neuro-core or host, and make the boundaries explicit channels.

Neuro-core: the spiking neurons (SpikeGPT's LIF, SpikeLM's elastic bi-spiking neurons, the routers that carry
their spikes) and the linear layers of a token (synapses: event-driven where their input is spikes). Host:
what has no neuro-core form (`HOST_RULES`: LayerNorm, softmax attention, WKV's exp and division, sigmoid, GELU,
products, embedding lookup, the spike encoders of SpikeRWKV, the readout head that feeds the logits).

Encoders (SpikeLM's BERT layout) present a whole sequence of L tokens at every step: their neurons and linears
see (L, n) rows. Their spiking neurons and the linears their spikes drive run on the neuro-cores row by row
(spikecc.ir.rows): the same n neurons and synapses serve the L tokens one after another, each for its T spike
steps (a sequence takes L x T chip steps). Their post-LN LayerNorms, the bidirectional attention (which reads the
padding mask, a host Input), GELU, the token-type, word and position lookups, the residual sums and the read-out
stay on the host; a linear applied row by row to real values would stay there too (none in SpikeLM).

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
node (with `placement_rule`, the rule that put it there), `boundary` on the inserted nodes.

Invariant: values are unchanged (the boundary nodes are identities in float form).
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.compiler.passes.rewrite import fresh_name, is_linear
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.lm_ops import GELU, WKV, DiscreteLIF, Embedding, Exp, LayerNorm, Product, Sigmoid, SquaredReLU
from spikecc.ir.loihi_spec import TERNARY_MESSAGE_BITS
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore, SpikeRouter
from spikecc.ir.rwkv6_ops import WKV6, GroupNorm, Tanh
from spikecc.ir.spikelm_ops import (
    CausalSelfAttention,
    CrossAttention,
    ElasticBiSpike,
    PositionEmbedding,
    SelfAttention,
    TokenMean,
)
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder

CORE, HOST = "neurocore", "host"
DEFAULT_MESSAGE_BITS = 12  # host -> core graded messages: 8-bit weights x 12-bit payloads x fan-in < 2**31


def _feeds_output(g: Graph, name: str) -> bool:
    return any(isinstance(g.nodes[e.dst], nir.Output) for e in g.out_edges(name))


#: Ops with no neuro-core form, and why they stay on the host (the placement rules of the partition report).
HOST_RULES: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nir.Input, nir.Output), "ids, masks and results come from and go to the host"),
    ((Embedding, PositionEmbedding), "table lookup (token, token-type and position ids)"),
    ((LayerNorm, GroupNorm), "mean and variance over features, division, square root (pre-LN and post-LN alike)"),
    ((SelfAttention, CausalSelfAttention, CrossAttention),
     "softmax attention: products of two signals, exp and division (bidirectional with the padding mask, or "
     "causal over a cache)"),
    ((GELU, Sigmoid, Exp, Tanh, SquaredReLU), "a nonlinear function of real values"),
    ((Product, WKV, WKV6), "products of two signals, exp and division"),
    ((nir.Scale,), "residual sums and scalings of real host values"),
    ((TokenMean,), "the read-out: mean over the T spike steps of real values"),
    ((MultiLevelEncoder,), "a spike encoder of real host values (its spikes are sent to the cores)"),
)


def placement_rule(g: Graph, a: Analysis, name: str) -> tuple[str, str]:
    """(side, why) of one node (module docstring). Linear layers: on the neuro-cores as synapses, except a readout
    that feeds an Output, and a linear applied row by row to real values (a row-wise linear runs on the cores,
    the same synapses serving each row of an encoder's sequence in turn, where its input is spikes)."""
    op = g.nodes[name]
    if is_linear(op):
        if _feeds_output(g, name):
            return HOST, "the readout feeding an Output"
        if a.size(name) == op.weight.shape[0]:
            return CORE, "synapses (graded messages where its input is real)"
        spikes = all(a.signals[e.src].is_spiking for e in g.in_edges(name))
        if spikes:
            return CORE, "spike-driven synapses applied row by row (time-multiplexed over the sequence)"
        return HOST, "a linear applied row by row to real values (a graded message per row and value)"
    if isinstance(op, DiscreteLIF):
        return CORE, "a LIF neuron"
    if isinstance(op, ElasticBiSpike):
        return CORE, "an elastic bi-spiking neuron (row by row for a sequence: time-multiplexed)"
    for types, why in HOST_RULES:
        if isinstance(op, types):
            return HOST, why
    return HOST, "no neuro-core form"


def placement(g: Graph, a: Analysis) -> dict[str, tuple[str, str]]:
    """Per node, where it runs and why (module docstring, `placement_rule`)."""
    out = {name: placement_rule(g, a, name) for name in g.nodes}
    for name, op in g.nodes.items():  # a router is its source's axons: it runs where its source does
        if isinstance(op, SpikeRouter):
            out[name] = (out[g.predecessors(name)[0]][0], "the axons of the neuron it routes")
    return out


def partition(g: Graph, a: Analysis | None = None, message_bits: int = DEFAULT_MESSAGE_BITS) -> Graph:
    """A new graph with `partition` on every node and boundary nodes on every crossing edge."""
    a = analysis_of(g, a)
    rules = placement(g, a)
    summed = _sum_host_inputs(g, a, {name: side for name, (side, _) in rules.items()})
    if summed is not g:
        g, a = summed, Analysis(summed)
        rules = placement(g, a)
    where = {name: side for name, (side, _) in rules.items()}
    out = g.copy()
    for name, (side, why) in rules.items():
        out.annotate(name, partition=side, placement_rule=why)
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
