"""The spiking-LM papers' arithmetic energy model: operations counted, times the energy of one operation.

Energy per operation in 45 nm CMOS (Horowitz, "Computing's energy problem", ISSCC 2014), as the papers use it:

    precision   E_MAC (multiply-accumulate)   E_AC (accumulate)
    fp32        4.6 pJ  (3.7 mult + 0.9 add)   0.9 pJ
    fp16        1.5 pJ  (1.1 mult + 0.4 add)   0.4 pJ

An ANN layer costs its multiply-accumulates times E_MAC; a spiking layer costs its accumulates (one per input
spike per synapse it reaches) times E_AC, and whatever stays real-valued costs E_MAC:

    ANN linear (n_in -> n_out) over T tokens      n_in * n_out * T * E_MAC
    SNN linear with input firing rate r           n_in * n_out * T * r * E_AC      (SpikeGPT Sec. 3.6, SpikeLM Sec. 5)

SpikeGPT's Table 1 (Zhu et al., TMLR 2024) applies this per block with T = 3072 tokens, d = 512, r = 0.15,
E_MAC = 4.5 pJ, E_AC = 0.9 pJ; `spikegpt_table1` gives its rows as printed (the f(Q/R,K,V) row's ANN value is
E_MAC * 2T^2 although the formula column reads 2T^2 d; the attention output projection is in neither column).

For a model graph, `count_graph` counts per node from a simulation's measured synaptic operations (the CPU
simulator counts one per non-zero input per synapse it reaches): a synapse layer fed spikes (binary or
ternary) counts them as accumulates, one fed real or graded values as multiply-accumulates; its ANN baseline
is the dense layer once per token (for a linear fed by SpikeRWKV's multi-level encoder, the weight before it was
tiled over the encoder's steps and levels). A lowered layer (LoihiDense) counts the connections of the layer it
came from: where a SpikeRouter feeds it (directly, or from the host through a boundary node), its columns are
the router's (step bank, polarity) blocks of one weight, so an input connects where any block's weight does;
a build's float graph (float.nir) gives those, quantization's zeroed weights aside. A synapse layer fed unit
spikes sent as 2-bit messages (ternary) counts accumulates, as for binary spikes.

Attention products (SpikeLM's causal attention: Q K^T and P V over the context) and RWKV's WKV (7 d element-wise
multiply-adds per token, SpikeGPT's count) are counted as in the papers; element-wise ops, normalisations and
neuron updates are left out, as the papers leave them out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import nir
import numpy as np

from spikecc.errors import SpikeccError
from spikecc.ir import Graph, infer_shapes, infer_signals
from spikecc.ir.lm_ops import WKV
from spikecc.ir.loihi_ops import LoihiDense
from spikecc.ir.loihi_spec import TERNARY_MESSAGE_BITS
from spikecc.ir.neurocore_ops import BOUNDARY_OPS, SpikeRouter
from spikecc.ir.spikelm_ops import CausalSelfAttention
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder

HOROWITZ_45NM = {"fp32": {"e_mac": 4.6, "e_ac": 0.9}, "fp16": {"e_mac": 1.5, "e_ac": 0.4}}
PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class OpCount:
    """Operations of one layer over the whole run (all tokens)."""

    layer: str
    ann_macs: float  # multiply-accumulates of the ANN baseline
    snn_acs: float = 0.0  # accumulates of the spiking model (spike-driven synaptic operations)
    snn_macs: float = 0.0  # multiply-accumulates that stay real-valued in the spiking model
    note: str = ""


@dataclass
class EnergyTable:
    rows: list[OpCount]
    e_mac: float  # pJ
    e_ac: float  # pJ
    tokens: int = 0
    precision: str = ""

    def ann_pj(self, row: OpCount) -> float:
        return row.ann_macs * self.e_mac

    def snn_pj(self, row: OpCount) -> float:
        return row.snn_acs * self.e_ac + row.snn_macs * self.e_mac

    @property
    def ann_total_pj(self) -> float:
        return sum(self.ann_pj(r) for r in self.rows)

    @property
    def snn_total_pj(self) -> float:
        return sum(self.snn_pj(r) for r in self.rows)

    @property
    def ratio(self) -> float:
        return self.ann_total_pj / self.snn_total_pj if self.snn_total_pj else float("inf")

    def to_json(self) -> dict:
        return {"ann_mj": self.ann_total_pj / PJ_PER_MJ, "snn_mj": self.snn_total_pj / PJ_PER_MJ,
                "ratio": self.ratio, "e_mac_pj": self.e_mac, "e_ac_pj": self.e_ac, "precision": self.precision,
                "tokens": self.tokens,
                "layers": [{"layer": r.layer, "ann_macs": r.ann_macs, "snn_acs": r.snn_acs, "snn_macs": r.snn_macs,
                            "ann_mj": self.ann_pj(r) / PJ_PER_MJ, "snn_mj": self.snn_pj(r) / PJ_PER_MJ,
                            "note": r.note} for r in self.rows]}


def energies(precision: str) -> tuple[float, float]:
    """(E_MAC, E_AC) in pJ for `precision` (fp32 | fp16), Horowitz 2014 at 45 nm."""
    if precision not in HOROWITZ_45NM:
        raise SpikeccError(f"precision '{precision}' has no energy figures; use one of {', '.join(HOROWITZ_45NM)}")
    e = HOROWITZ_45NM[precision]
    return e["e_mac"], e["e_ac"]


def spikegpt_table1(T: int, d: int, rate: float) -> list[OpCount]:
    """The rows of SpikeGPT's Table 1 (one block: attention and FFN), its own formulas."""
    return [
        OpCount("attention Q/R,K,V", ann_macs=3 * T * d * d, snn_acs=rate * 3 * T * d * d),
        OpCount("attention f(Q/R,K,V)", ann_macs=2 * T * T, snn_macs=7 * T * d,
                note="ANN value as printed (E_MAC 2T^2); SpikeGPT: E_MAC 7Td"),
        OpCount("attention scale", ann_macs=T * T),
        OpCount("attention softmax", ann_macs=2 * T * T),
        OpCount("FFN layer 1", ann_macs=T * d * d, snn_acs=rate * T * d * d),
        OpCount("FFN layer 2", ann_macs=4 * T * d * d, snn_acs=rate * 4 * T * d * d),
        OpCount("FFN layer 3", ann_macs=T * d * d, snn_acs=rate * T * d * d),
    ]


# -- counting a graph ----------------------------------------------------------------------------------------
@dataclass
class CountContext:
    graph: Graph
    shapes: dict
    signals: dict
    synops: Mapping[str, float]  # measured synaptic operations per node over the run
    tokens: int

    def input_kinds(self, name: str, port: str = "input") -> set[str]:
        return {self.signals[e.src].kind for e in self.graph.in_edges(name) if e.port == port}

    def in_size(self, name: str, port: str = "input") -> int:
        srcs = [e.src for e in self.graph.in_edges(name) if e.port == port]
        return int(np.prod(self.shapes[srcs[0]])) if srcs else 0


Rule = Callable[[str, nir.NIRNode, CountContext], "OpCount | None"]
RULES: dict[type, Rule] = {}


def counts(*types: type) -> Callable[[Rule], Rule]:
    """Register how a node type is counted (one function per op type)."""

    def deco(fn: Rule) -> Rule:
        for t in types:
            RULES[t] = fn
        return fn

    return deco


def _spikes_in(ctx: CountContext, name: str) -> bool:
    """Every input of `name` is spikes: binary, ternary, or signed unit spikes in a 2-bit graded message."""
    sigs = [ctx.signals[e.src] for e in ctx.graph.in_edges(name) if e.port == "input"]
    return bool(sigs) and all(s.kind in ("binary", "ternary")
                              or (s.kind == "graded" and 0 < s.bits <= TERNARY_MESSAGE_BITS) for s in sigs)


def _synapse_row(name: str, ctx: CountContext, macs_per_step: float) -> OpCount:
    kinds = ctx.input_kinds(name)
    ops = float(ctx.synops.get(name, 0))
    if _spikes_in(ctx, name):
        return OpCount(name, ann_macs=macs_per_step * ctx.tokens, snn_acs=ops, note="spike input: accumulates")
    return OpCount(name, ann_macs=macs_per_step * ctx.tokens, snn_macs=ops,
                   note=f"{'/'.join(sorted(kinds)) or 'no'} input: multiply-accumulates")


def _spike_channels_per_value(name: str, ctx: CountContext) -> int:
    """Spike channels per real input value: an encoder that spreads each value over T steps x l levels feeds the
    linear a weight tiled over them (spikecc.compiler.frontends.spikerwkv), whose ANN counterpart is the untiled
    weight: T * l times fewer multiply-accumulates."""
    for e in ctx.graph.in_edges(name):
        src = ctx.graph.nodes[e.src]
        if isinstance(src, MultiLevelEncoder):
            return int(src.T) * len(np.atleast_1d(src.level_weights))
    return 1


@counts(nir.Linear, nir.Affine)
def _linear(name: str, op, ctx: CountContext) -> OpCount:
    w = np.asarray(op.weight)
    vectors = max(1, ctx.in_size(name) // max(1, w.shape[1]))  # a (L, n_in) input is L vectors
    return _synapse_row(name, ctx, float(w.size) * vectors / _spike_channels_per_value(name, ctx))


def _upstream(ctx: CountContext, name: str) -> str | None:
    """The one node feeding `name`, looking through boundary nodes (they change number formats only)."""
    srcs = ctx.graph.predecessors(name)
    while len(srcs) == 1 and isinstance(ctx.graph.nodes[srcs[0]], BOUNDARY_OPS):
        srcs = ctx.graph.predecessors(srcs[0])
    return srcs[0] if len(srcs) == 1 else None


@counts(LoihiDense)
def _loihi_dense(name: str, op: LoihiDense, ctx: CountContext) -> OpCount:
    # a lowered layer: its non-zeros are the connections of the layer it came from (a convolution unrolled); a
    # routed one has a column block per (step bank, polarity) of the same weight (module docstring)
    connected = np.asarray(op.weight) != 0
    src = _upstream(ctx, name)
    per_value = 1
    if src is not None and isinstance(ctx.graph.nodes[src], SpikeRouter):
        router: SpikeRouter = ctx.graph.nodes[src]
        connected = connected.reshape(connected.shape[0], router.banks * router.polarities, router.size).any(axis=1)
        per_value = _spike_channels_per_value(src, ctx)
    return _synapse_row(name, ctx, float(np.count_nonzero(connected)) / per_value)


@counts(nir.Conv1d, nir.Conv2d)
def _conv(name: str, op, ctx: CountContext) -> OpCount:
    w = np.asarray(op.weight)  # (out_channels, in_channels / groups, *kernel)
    out_positions = int(np.prod(ctx.shapes[name])) // w.shape[0]
    return _synapse_row(name, ctx, float(w.size) * out_positions)


@counts(WKV)
def _wkv(name: str, op: WKV, ctx: CountContext) -> OpCount:
    macs = 7.0 * np.size(op.time_decay) * ctx.tokens  # SpikeGPT Table 1: E_MAC 7Td, the same in both models
    return OpCount(name, ann_macs=macs, snn_macs=macs, note="RWKV recurrence, 7d per token in both")


@counts(CausalSelfAttention)
def _causal_attention(name: str, op: CausalSelfAttention, ctx: CountContext) -> OpCount:
    d = ctx.in_size(name, "q")
    n = ctx.tokens
    ann = float(n * (n + 1) * d)  # token p attends to p + 1 tokens: Q K^T and P V, 2 (p + 1) d each
    return OpCount(name, ann_macs=ann, snn_acs=float(ctx.synops.get(name, 0)),
                   note="Q K^T and P V over the context; K, V spikes: accumulates")


def count_graph(graph: Graph, synops: Mapping[str, float], tokens: int) -> list[OpCount]:
    """Per counted node (see the module docstring), operations over a run of `tokens` tokens in which the
    simulator measured `synops` (node -> synaptic operations)."""
    if tokens < 1:
        raise SpikeccError("energy needs at least one token")
    ctx = CountContext(graph, infer_shapes(graph), infer_signals(graph), synops, tokens)
    rows = []
    for name, op in graph.nodes.items():
        rule = next((RULES[c] for c in type(op).__mro__ if c in RULES), None)
        row = rule(name, op, ctx) if rule else None
        if row is not None:
            rows.append(row)
    return rows


def energy_table(rows: list[OpCount], precision: str = "fp32", tokens: int = 0) -> EnergyTable:
    e_mac, e_ac = energies(precision)
    return EnergyTable(rows=rows, e_mac=e_mac, e_ac=e_ac, tokens=tokens, precision=precision)
