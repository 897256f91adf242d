"""Map a Loihi-form graph onto a target: split, pack, place, then cost it. `map_graph` is the entry point.

Costs per step (everything per simulator step; a token takes `substeps` steps, graph metadata):

- work per core: synaptic operations, neuron updates, spikes generated, messages sent (traffic.py)
- messages per link class: inside a core, between cores of a chip, between chips (with the hops they
  travel under X-Y routing), and across the host boundary (host -> chip, chip -> host)
- latency per step as a bottleneck, not a sum (Timcheck, Pierro, Shrestha 2026, arXiv 2601.10035: Loihi 2's
  step time is a max over per-core synaptic/dendritic work and per-link message bits, plus a barrier):

      t_core  = synops * t_synop + neurons * t_neuron + spikes * t_spike + messages_out * t_message
      t_link  = bits / bandwidth     (each core's port, each directed chip-to-chip link, the host link)
      t_step  = max(all t_core, all t_link) + t_barrier

- energy per step from the target's per-operation figures:

      E = synops E_synop + neurons E_neuron + spikes E_spike + messages E_message
          + on-chip hops E_hop + chip hops E_chip_hop + chips * P_static * t_step

The lower bound on cores is, per resource, its total over its per-core limit (the largest wins), with each
layer's synapse rows stored once: no mapping can use fewer cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from spikecc.compiler.mapping.network import MappingError, Network, Population, extract
from spikecc.compiler.mapping.pack import USAGE, Core, limits, split_and_pack
from spikecc.compiler.mapping.place import Placement, core_edges, place
from spikecc.compiler.mapping.split import SplitResult, Splitter, Violation
from spikecc.compiler.mapping.target import Target, load_target
from spikecc.compiler.mapping.traffic import Traffic, fragment_traffic
from spikecc.ir import Graph

WHOLE = "(whole network)"


@dataclass
class Mapping:
    target: Target
    graph_name: str
    split_policy: str
    network: Network
    split: SplitResult
    cores: list[Core]
    placement: Placement
    traffic: Traffic
    per_core: dict[str, np.ndarray]  # resource / activity name -> (cores,) array
    layers: list[dict]
    lower_bound: dict[str, float]
    chips: int
    chips_requested: int | None
    violations: list[Violation]
    link_classes: dict[str, dict[str, float]]
    latency: dict
    energy: dict
    steps_per_token: int
    layer_lower_bound: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def lower_bound_cores(self) -> int:
        return max(1, math.ceil(max(self.lower_bound.values(), default=0) - 1e-9)) if self.cores else 0

    @property
    def boards(self) -> int:
        return math.ceil(self.chips / int(self.target["board.chips"]))


def map_graph(graph: Graph, target: Target | str = "loihi2", activity: dict | None = None,
              chips: int | None = None, split: str = "min-cores", placement: str = "auto",
              default_rate: float = 0.1) -> Mapping:
    """Map `graph` (Loihi form) onto `target`.

    activity: {node: per-neuron events per step, or one mean rate} from a simulation (see network.py); nodes not
    given are assumed (spiking: `default_rate`; graded/real: every step). chips: the chips available (a board
    too small is a violation). split: "min-cores" | "fan-in" | "output" (split.py). placement: "auto" |
    "greedy" | "metis" (place.py).
    """
    t = target if isinstance(target, Target) else load_target(target)
    if not default_rate >= 0:
        raise MappingError(f"default_rate must be events per neuron per step (>= 0), not {default_rate!r}")
    graded_default = int(t["message.partial_sum_bits"]) or int(t["message.graded_bits"]) or 24
    net = extract(graph, activity, default_rate, graded_default)
    violations = _format_violations(net, t)
    result, cores = split_and_pack(net, t, split)
    violations += _worst(result.violations)
    traffic = fragment_traffic(result, t)
    frag_core = np.array([f.core for f in result.fragments], dtype=np.int64)
    edges, in_core_msgs, in_core_bits = core_edges(frag_core, traffic.src, traffic.dst, traffic.msgs, traffic.bits,
                                                   len(cores))
    per_chip = int(t["chip.cores"])
    needed = max(1, math.ceil(len(cores) / per_chip)) if cores else 0
    if chips is not None and needed > chips:
        violations.append(Violation(WHOLE, "chips", needed, chips, _board_fix(t, needed, len(cores)), where="board"))
    placed = place(len(cores), edges, t, needed, placement)
    for c in cores:
        c.chip, c.slot = int(placed.chip_of[c.index]), int(placed.slot[c.index])
    m = Mapping(target=t, graph_name=str(graph.metadata.get("name", "")), split_policy=Splitter(t, split).policy,
                network=net, split=result, cores=cores, placement=placed, traffic=traffic, per_core={}, layers=[],
                lower_bound={}, chips=needed, chips_requested=chips, violations=violations, link_classes={},
                latency={}, energy={}, steps_per_token=int(graph.metadata.get("substeps", 1) or 1))
    _costs(m, frag_core, edges, in_core_msgs, in_core_bits)
    _lower_bound(m)
    _layers(m)
    if not net.populations:
        m.notes.append("no neuro-core part: every node runs on the host; map a graph lowered for Loihi "
                       "(spikecc compile)")
    if net.rows > 1:
        m.notes.append(f"rows: the cores serve the {net.rows} tokens of a sequence one after another "
                       f"(time-multiplexed), each for {m.steps_per_token} step(s): a sequence takes "
                       f"{net.rows * m.steps_per_token} steps; per-token figures are per token of it")
    if net.assumed:
        m.notes.append(f"activity assumed (not measured) for {len(net.assumed)} node(s): spiking at "
                       f"{default_rate:g} events/neuron/step, graded and real values every step")
    return m


def _format_violations(net: Network, t: Target) -> list[Violation]:
    """Weights and messages the target cannot carry at all, whatever the split."""
    out = []
    wmax, gmax = int(t["synapse.max_weight_bits"]), int(t["message.graded_bits"])
    for p in net.populations:
        for s in p.inputs:
            g = s.group
            if g.weight_bits > wmax:
                out.append(Violation(p.layer, "weight bits", g.weight_bits, wmax,
                                     f"quantize '{g.name}' to at most {wmax} weight bits", where="format"))
            if g.message_bits > gmax:
                fix = ("this target carries binary spikes only: send spikes (split polarity into binary channels) "
                       "instead of graded values" if gmax == 0 else f"send at most {gmax}-bit graded payloads")
                out.append(Violation(p.layer, "message bits", g.message_bits, gmax, f"'{g.name}': {fix}",
                                     where="format"))
        if p.role == "relay" and gmax == 0:
            out.append(Violation(p.layer, "message bits", int(t["message.partial_sum_bits"]) or 1, 0,
                                 "its synaptic sums go to the host as graded values, which this target cannot send; "
                                 "end the layer in spiking neurons", where="format"))
    return _unique(out)


def _worst(vs: list[Violation]) -> list[Violation]:
    """One violation per layer and resource, its largest value (a layer split by value group is several
    populations, each of which may overflow)."""
    out: dict[tuple, Violation] = {}
    for v in vs:
        key = (v.layer, v.resource, v.limit, v.where)
        if key not in out or v.value > out[key].value:
            out[key] = v if key not in out else replace(out[key], value=v.value)
    return list(out.values())


def _unique(vs: list[Violation]) -> list[Violation]:
    seen, out = set(), []
    for v in vs:
        key = (v.layer, v.resource, v.value, v.limit)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _board_fix(t: Target, needed: int, cores: int) -> str:
    per_board = int(t["board.chips"])
    return (f"the network needs {cores:,} cores = {needed} chips of {int(t['chip.cores'])} cores "
            f"({math.ceil(needed / per_board)} boards of {per_board} chips); use at least {needed} chips, "
            "or shrink the model (fewer or sparser layers, fewer weight bits)")


# -- costs -------------------------------------------------------------------------------------------------
def _costs(m: Mapping, frag_core: np.ndarray, edges, in_core_msgs: float, in_core_bits: float) -> None:
    t, tr, C = m.target, m.traffic, len(m.cores)
    frags = m.split.fragments

    def per_core(values: np.ndarray) -> np.ndarray:
        return np.bincount(frag_core, weights=values, minlength=C) if C else np.zeros(0)

    neurons = np.array([f.neurons for f in frags], dtype=np.float64)
    msgs_out_f = np.bincount(tr.src, weights=tr.msgs, minlength=len(frags)) + tr.host_out
    msgs_in_f = np.bincount(tr.dst, weights=tr.msgs, minlength=len(frags)) + tr.host_in
    bits_out_f = np.bincount(tr.src, weights=tr.bits, minlength=len(frags)) + tr.host_out_bits
    bits_in_f = np.bincount(tr.dst, weights=tr.bits, minlength=len(frags)) + tr.host_in_bits
    pc = {k: np.array([c.usage[k] for c in m.cores]) for k in USAGE}
    pc.update(synapses=per_core(np.array([f.synapses for f in frags], dtype=np.float64)),
              synops=per_core(tr.synops), spikes_out=per_core(tr.spikes), msgs_out=per_core(msgs_out_f),
              msgs_in=per_core(msgs_in_f), bits_out=per_core(bits_out_f), bits_in=per_core(bits_in_f),
              host_in=per_core(tr.host_in), host_out=per_core(tr.host_out))
    lim = limits(t)
    for k in USAGE:
        pc[f"util_{k}"] = pc[k] / lim[k]
    pc["time_ns"] = (pc["synops"] * t["time.synop_ns"] + pc["neurons"] * t["time.neuron_ns"]
                     + pc["spikes_out"] * t["time.spike_ns"] + pc["msgs_out"] * t["time.message_ns"])
    pc["chip"] = m.placement.chip_of.astype(np.float64)
    m.per_core = pc

    # link classes
    chip_of = m.placement.chip_of
    same_chip = chip_of[edges.src] == chip_of[edges.dst] if edges.src.size else np.zeros(0, dtype=bool)
    m.link_classes = {
        "in_core": {"msgs": in_core_msgs, "bits": in_core_bits},
        "core_core": {"msgs": float(edges.msgs[same_chip].sum()), "bits": float(edges.bits[same_chip].sum())},
        "chip_chip": {"msgs": float(edges.msgs[~same_chip].sum()), "bits": float(edges.bits[~same_chip].sum()),
                      "hop_msgs": m.placement.interchip_hop_msgs},
        "host_in": {"msgs": float(tr.host_in.sum()), "bits": float(tr.host_in_bits.sum())},
        "host_out": {"msgs": float(tr.host_out.sum()), "bits": float(tr.host_out_bits.sum())},
    }

    # latency: the slowest core and the busiest link decide
    ns_per_byte = {k: 1.0 / t[f"link.{k}_gbytes_per_s"] for k in ("core", "chip", "host")}  # GB/s -> ns per byte
    cands = []
    if C:
        i = int(np.argmax(pc["time_ns"]))
        cands.append((float(pc["time_ns"][i]), f"core {i} (work: synaptic ops, neuron updates, messages)"))
        port = np.maximum(pc["bits_out"], pc["bits_in"]) / 8 * ns_per_byte["core"]
        j = int(np.argmax(port))
        cands.append((float(port[j]), f"core {j} network port"))
    if m.placement.link_bits:
        (a, b), bits = max(sorted(m.placement.link_bits.items()), key=lambda kv: kv[1])
        cands.append((bits / 8 * ns_per_byte["chip"], f"chip link {a}->{b}"))
    host_bits = m.link_classes["host_in"]["bits"] + m.link_classes["host_out"]["bits"]
    cands.append((host_bits / 8 * ns_per_byte["host"], "host link"))
    worst, what = max(cands, key=lambda c: c[0]) if cands else (0.0, "nothing")
    step_ns = worst + t["time.barrier_ns"]
    extra = max((p.extra_steps for p in m.split.populations), default=0)
    m.latency = {"step_ns": step_ns, "bottleneck": what, "bottleneck_ns": worst, "barrier_ns": t["time.barrier_ns"],
                 "slowest_core_ns": float(pc["time_ns"].max(initial=0.0)),
                 "busiest_chip_link_ns": max((b / 8 * ns_per_byte["chip"] for b in m.placement.link_bits.values()),
                                             default=0.0),
                 "host_link_ns": host_bits / 8 * ns_per_byte["host"], "steps_per_token": m.steps_per_token,
                 "token_us": step_ns * m.steps_per_token / 1000.0, "partial_sum_extra_steps": extra}

    # energy
    xy = _router_xy(m, t)
    fs, fd = tr.src, tr.dst
    cs, cd = frag_core[fs], frag_core[fd]
    on_chip = chip_of[cs] == chip_of[cd] if fs.size else np.zeros(0, dtype=bool)
    hops = np.where(on_chip, np.abs(xy[cs] - xy[cd]).sum(axis=1) if fs.size else 0, 0)
    chip_hops = np.where(on_chip, 0, np.abs(m.placement.chip_xy[chip_of[cs]] - m.placement.chip_xy[chip_of[cd]])
                         .sum(axis=1) if fs.size else 0)
    e_hop = np.bincount(fs, weights=tr.msgs * (hops * t["energy.hop_pj"] + chip_hops * t["energy.chip_hop_pj"]),
                        minlength=len(frags))
    # every message sent costs E_message: fragment to fragment, chip to host, and host to chip (counted at the
    # fragment that receives it)
    e = {"synops": tr.synops * t["energy.synop_pj"], "neurons": neurons * t["energy.neuron_pj"],
         "spikes": tr.spikes * t["energy.spike_pj"], "messages": (msgs_out_f + tr.host_in) * t["energy.message_pj"],
         "hops": e_hop}
    frag_pj = sum(e.values())
    static_pj = m.chips * t["energy.static_w_per_chip"] * step_ns * 1e3  # W * ns = 1e-9 J = 1e3 pJ
    per_layer: dict[str, float] = {}
    for f, v in zip(frags, frag_pj):
        per_layer[f.pop.layer] = per_layer.get(f.pop.layer, 0.0) + float(v)
    dyn = float(frag_pj.sum())
    m.energy = {"per_step_pj": {k: float(v.sum()) for k, v in e.items()} | {"static": static_pj},
                "step_pj": dyn + static_pj, "dynamic_step_pj": dyn, "static_step_pj": static_pj,
                "token_uj": (dyn + static_pj) * m.steps_per_token * 1e-6, "per_layer_step_pj": per_layer,
                "assumes": "per-operation figures of the target profile; host-side ops not included; one message "
                           "per event per destination core"}
    m.per_core["energy_pj"] = np.bincount(frag_core, weights=frag_pj, minlength=C) if C else np.zeros(0)


def _router_xy(m: Mapping, t: Target) -> np.ndarray:
    router = m.placement.slot // int(t["chip.cores_per_router"])
    cols = int(t["chip.router_cols"])
    return np.stack([router % cols, router // cols], axis=1) if router.size else np.zeros((0, 2), dtype=np.int64)


# -- lower bound and layers ------------------------------------------------------------------------------
def _lower_bound(m: Mapping) -> None:
    sp = Splitter(m.target, "output")
    totals: dict[str, float] = {}
    for p in m.network.populations:  # a layer split by value group adds up its groups' bounds
        layer = m.layer_lower_bound.setdefault(p.layer, {})
        for k, v in sp.lower_bound(p).items():
            layer[k] = layer.get(k, 0.0) + v
            totals[k] = totals.get(k, 0.0) + v
    m.lower_bound = totals


def _layers(m: Mapping) -> None:
    by_layer: dict[str, list[Population]] = {}
    for p in m.split.populations:
        by_layer.setdefault(p.layer, []).append(p)
    rows = []
    tr = m.traffic
    index = {id(f): i for i, f in enumerate(m.split.fragments)}
    for layer, pops in by_layer.items():
        frags = [f for p in pops for f in p.fragments]
        idx = [index[id(f)] for f in frags]
        own = [p for p in pops if p.role != "partial"]  # several: a layer split by value group
        lb = max(1, math.ceil(max(m.layer_lower_bound[layer].values()) - 1e-9))
        cores = sorted({f.core for f in frags})
        rows.append({
            "layer": layer, "role": own[0].role, "neurons": sum(p.n for p in own), "value_groups": len(own),
            "rows": sum(s.rows for p in pops if p.role == "partial" for s in p.inputs) or own[0].rows,
            "synapses": int(sum(f.synapses for f in frags)), "synmem": float(sum(f.synmem for f in frags)),
            "fragments": len(frags), "cores": len(cores), "lower_bound_cores": lb,
            "row_groups": max(p.row_groups for p in own), "extra_steps": max(p.extra_steps for p in own),
            "spikes_per_step": float(sum(p.rate.sum() for p in own)), "synops_per_step": float(tr.synops[idx].sum()),
            "energy_step_pj": m.energy["per_layer_step_pj"].get(layer, 0.0),
            "chips": sorted({int(m.placement.chip_of[c]) for c in cores}),
        })
    m.layers = rows
