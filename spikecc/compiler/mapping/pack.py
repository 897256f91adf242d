"""Fill cores with fragments: each layer takes the room left on the current core before it opens a new one.

Layers come in order (a layer's partial-sum stages before it). For each, the current core takes the widest
slice of the layer's neurons that fits what is left of every budget (neurons, neuron groups, input axons,
output axons, synaptic memory); the rest goes on fresh cores, each as wide as fits. So slices differ in width
and several small layers share a core, while every core is filled before the next one opens. A slice narrower
than a quarter of what a fresh core would take is not worth its row overhead (every row of a fragment is
stored on its core again), so a new core starts instead. One core is open at a time: O(fragments x log width).

Output axons are only known once every fragment has its core (a neuron needs one axon per distinct
destination core): the fill uses the planner's estimate per neuron, then `split_and_pack` counts them exactly
and fills again with the exact counts where the estimate fell short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spikecc.compiler.mapping.network import Masked, Network, Population
from spikecc.compiler.mapping.split import (
    RESOURCES,
    Fragment,
    SplitResult,
    Splitter,
    Violation,
    axon_offsets,
    connections,
    fix_for,
    plan_network,
)
from spikecc.compiler.mapping.target import Target

USAGE = ("neurons", "neuron_groups", "axons_in", "axons_out", "synmem")
LIMIT_KEYS = {"neurons": "core.neurons", "neuron_groups": "core.neuron_groups", "axons_in": "core.axons_in",
              "axons_out": "core.axons_out", "synmem": "core.synmem_units"}
SLIVER = 8  # a slice narrower than 1/SLIVER of a fresh core's is not placed on a partly used core


@dataclass
class Core:
    index: int
    fragments: list[Fragment] = field(default_factory=list)
    usage: dict[str, float] = field(default_factory=lambda: dict.fromkeys(USAGE, 0.0))
    chip: int = -1
    slot: int = -1  # position on its chip (router = slot // cores_per_router)

    def add(self, f: Fragment) -> None:
        self.fragments.append(f)
        for k, v in f.usage().items():
            self.usage[k] += v
        f.core = self.index

    def room(self, lim: dict[str, float]) -> dict[str, float]:
        return {k: lim[k] - self.usage[k] for k in USAGE}


def limits(target: Target) -> dict[str, float]:
    return {k: float(target[v]) for k, v in LIMIT_KEYS.items()}


def fill(pops: list[Population], sp: Splitter, dests: dict[str, np.ndarray], infeasible: set[str],
         lim: dict[str, float], violations: list[Violation]) -> tuple[list[Fragment], list[Core]]:
    frags: list[Fragment] = []
    cores: list[Core] = []
    cur: Core | None = None

    def put(core: Core, pop: Population, lo: int, w: int, need: dict[str, float]) -> None:
        f = Fragment(pop=pop, index=len(pop.fragments), lo=lo, hi=lo + w, synapses=int(round(need["synapses"])),
                     synmem=need["synmem"], axons_in=int(round(need["axons_in"])),
                     axons_out=int(round(need["axons_out"])))
        pop.fragments.append(f)
        frags.append(f)
        core.add(f)

    def new_core() -> Core:
        cores.append(Core(len(cores)))
        return cores[-1]

    for pop in pops:
        pop.fragments = []
        dprefix = np.r_[0, np.cumsum(dests[pop.name])]
        # the many single-slice checks of a masked layer read prefix counts (built for this layer only)
        sp.prefix_tables = {id(s.group.pattern): s.group.pattern.prefix() for s in pop.inputs
                            if isinstance(s.group.pattern, Masked)}
        cap = int(min(lim["neurons"], pop.n))
        lo = 0
        while lo < pop.n:
            hi_max = min(pop.n, lo + cap)
            if pop.name in infeasible:  # over budget whatever the split (a violation): cores of its own
                w = hi_max - lo
                need = sp.resources(pop.inputs, np.array([lo, lo + w]), dprefix)
                put(new_core(), pop, lo, w, {k: float(v[0]) for k, v in need.items()})
                cur = None
                lo += w
                continue
            full_w, full_need = sp.max_fit(pop.inputs, lo, hi_max, dprefix, {r: lim[r] for r in RESOURCES})
            if cur is not None and cur.usage["neuron_groups"] + 1 <= lim["neuron_groups"]:
                w, need = sp.max_fit(pop.inputs, lo, hi_max, dprefix, cur.room(lim))
                if w > 0 and (lo + w == pop.n or w * SLIVER >= full_w):
                    put(cur, pop, lo, w, need)
                    lo += w
                    continue
            if full_w == 0:  # the planner's estimate fitted but this neuron's own rows do not: over budget
                full_w = 1
                full_need = sp.need_one(pop.inputs, lo, lo + 1, dprefix)
                worst = max(RESOURCES, key=lambda r: full_need[r] / lim[r])
                violations.append(Violation(pop.layer, worst, full_need[worst], lim[worst],
                                            f"neuron {lo} alone does not fit a core; {fix_for(sp, pop, worst)}"))
            cur = new_core()
            put(cur, pop, lo, full_w, full_need)
            lo += full_w
    sp.prefix_tables = {}
    return frags, cores


def exact_axons_out(split_pops: list[Population], frags: list[Fragment], conns) -> np.ndarray:
    """(per fragment) its neurons' output axons: one per (row, distinct destination core), a row being a
    neuron's own output or one of its routed outputs (network.py), plus one per neuron read by the host."""
    pos = {p.name: np.array([f.lo for f in p.fragments] + [p.n]) for p in split_pops}
    offset = axon_offsets(conns)
    frag_core = np.array([f.core for f in frags], dtype=np.int64)
    index = {id(f): i for i, f in enumerate(frags)}
    first = {p.name: index[id(p.fragments[0])] for p in split_pops if p.fragments}
    keys, srcs = [], []
    for c in conns:
        if c.from_host or c.source not in pos or c.rows.size == 0:
            continue
        axon = offset[c.axons] + c.rows
        keys.append(axon * max(len(frags), 1) + frag_core[c.frags])
        srcs.append(first[c.source] + np.searchsorted(pos[c.source], c.neurons, side="right") - 1)
    out = np.array([f.neurons if f.pop.to_host else 0 for f in frags], dtype=np.float64)
    if keys:
        k = np.concatenate(keys)
        s = np.concatenate(srcs)
        _, first_at = np.unique(k, return_index=True)
        out += np.bincount(s[first_at], minlength=len(frags))
    return out


def per_neuron_dests(pop: Population, frags_axons: dict[int, float]) -> np.ndarray:
    """Spread each fragment's exact output axons evenly over its neurons (an estimate for the next fill)."""
    d = np.zeros(pop.n)
    for f in pop.fragments:
        d[f.lo:f.hi] = frags_axons[id(f)] / max(f.neurons, 1)
    return d


def split_and_pack(net: Network, target: Target, policy: str = "min-cores") -> tuple[SplitResult, list[Core]]:
    """Plan every layer (split.py), fill cores (this module), count output axons exactly; where they exceed the
    estimate and a core its budget, fill again with the exact counts (at most three times)."""
    sp = Splitter(target, policy)
    lim = limits(target)
    plan = plan_network(net, Splitter(target, policy, estimate=True))
    pops = [p for spec in net.populations for p in plan.stages[spec.name]]
    dests = dict(plan.dests)
    for _ in range(3):
        filled: list[Violation] = []
        frags, cores = fill(pops, sp, dests, plan.infeasible, lim, filled)
        conns = connections(pops, frags)
        axons = exact_axons_out(pops, frags, conns)
        for f, a in zip(frags, axons):
            cores[f.core].usage["axons_out"] += a - f.axons_out
            f.axons_out = int(a)
        over = {cores[f.core].index for f in frags if cores[f.core].usage["axons_out"] > lim["axons_out"]}
        if not over:
            break
        by_id = {id(f): a for f, a in zip(frags, axons)}
        for p in pops:
            if any(f.core in over for f in p.fragments):
                dests[p.name] = np.maximum(dests[p.name], per_neuron_dests(p, by_id))
    violations = list(plan.violations) + filled
    for c in cores:  # a core still over an axon budget after refilling (neurons fanning out very widely)
        if c.usage["axons_out"] > lim["axons_out"] and not any(f.pop.name in plan.infeasible for f in c.fragments):
            layer = max(c.fragments, key=lambda f: f.axons_out).pop.layer
            violations.append(Violation(layer, "axons_out", c.usage["axons_out"], lim["axons_out"],
                                        "its neurons reach too many destination cores: fewer consumers per neuron, "
                                        "or a profile with more output axons"))
    return SplitResult(populations=pops, fragments=frags, connections=conns, violations=violations), cores


def cores_needed(n_cores: int, per_chip: int) -> int:
    return max(1, math.ceil(n_cores / per_chip)) if n_cores else 0
