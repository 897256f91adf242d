"""Plan how each layer is split to fit cores: by output neurons, and by input rows with partial sums.

A fragment is a slice of a population's neurons plus every synapse row that reaches them; it must fit one
core's budget (target profile): neurons, neuron groups, input axons (rows), output axons (one per neuron per
destination core, nengo-loihi's axon slots), and synaptic memory. Synaptic memory of a row of n stored
synapses of b bits (target `synapse.*`):

    linear model (Loihi 2 fit)   row_overhead + n * b * units_per_bit
    chunked model (Loihi 1)      per chunk of up to C synapses: ceil((n_c * b + header) / word) * word bits
                                 (nengo-loihi block.py SynapseConfig.bits_per_axon)

A dense row stores a weight for every neuron of the fragment; a sparse row stores only its non-zeros and adds
a neuron index of max(min_index_bits, ceil(log2 neurons)) bits to each. The cheaper of the two is used per
synapse group and fragment.

Output split (nengo-loihi builder/split_blocks.py splits equally, n_split = max over resources of
ceil(need / limit)): the planner estimates the fewest equal slices whose every slice fits, found by search,
since the row overhead makes the need depend on the slice width. The slices actually placed come from
pack.py, which fills each core with the widest slice that fits what is left of it.

Input-row split (what Intel's compiler lacks: "Partitioning could not converge" on large fan-in): the rows
are cut into `a` groups; group i feeds a *partial* population of graded accumulators (n neurons, the
partial sums of its rows), and the layer's own neurons take the `a` partial sums through identity synapses
(one row per partial neuron). Each level adds one step of latency and the partial-sum messages. Policies:

    "min-cores"  try row-group counts from the smallest that fits upwards; keep the fewest cores (ties: fewer
                 row groups, i.e. less latency)
    "fan-in"     split rows only as much as one neuron's fan-in requires
    "output"     never split rows (Intel's behaviour); a fan-in that does not fit is a violation
A target without graded messages (Loihi 1) cannot carry partial sums, so it behaves as "output". A layer that
does not fit even one neuron per core is a violation naming the layer, each resource over its limit, the
value, and what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spikecc.compiler.mapping.network import (
    Dense,
    Diagonal,
    InputSlice,
    Masked,
    Network,
    Population,
    SynapseGroup,
    pairs,
)
from spikecc.compiler.mapping.target import Target

POLICIES = ("min-cores", "fan-in", "output")
RESOURCES = ("neurons", "axons_in", "axons_out", "synmem")  # per-core resources a fragment uses (plus 1 group)


@dataclass
class Violation:
    layer: str
    resource: str
    value: float
    limit: float
    fix: str
    where: str = "core"  # "core" (per-core budget), "board" (chips), "format" (weight/message bits)

    def message(self) -> str:
        unit = {"core": " per core", "board": "", "format": ""}[self.where]
        return (f"layer '{self.layer}': {self.resource} {_fmt(self.value)} exceeds the limit of {_fmt(self.limit)}"
                f"{unit}; {self.fix}")

    def to_json(self) -> dict:
        return {"layer": self.layer, "resource": self.resource, "value": self.value, "limit": self.limit,
                "fix": self.fix, "message": self.message()}


def _fmt(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


@dataclass(eq=False)
class Fragment:
    pop: Population
    index: int  # slice number within the population
    lo: int
    hi: int
    synapses: int
    synmem: float
    axons_in: int
    axons_out: int
    core: int = -1

    @property
    def neurons(self) -> int:
        return self.hi - self.lo

    def usage(self) -> dict[str, float]:
        return {"neurons": self.neurons, "neuron_groups": 1, "axons_in": self.axons_in,
                "axons_out": self.axons_out, "synmem": self.synmem}


@dataclass
class Connections:
    """Rows of a source reaching fragments: for messages and synaptic operations once sources are split."""

    source: str
    from_host: bool
    rate: np.ndarray | None  # host and routed sources: events per row per step (else the source's neuron rates)
    rows: np.ndarray  # row index (an axon of `axons`)
    neurons: np.ndarray  # the source neuron that sends each row (= rows unless routed)
    frags: np.ndarray  # destination fragment (global index into SplitResult.fragments)
    counts: np.ndarray  # synapses that row has in that fragment
    bits: int  # message payload bits
    axons: str = ""  # the node whose outputs the rows are (network.SynapseGroup.axons)
    n_rows: int = 0  # rows of that node


def axon_offsets(conns: list[Connections]) -> dict[str, int]:
    """A global number for every row of every connection's axon space (`axons`, n_rows rows each): the row's
    number is offsets[axons] + row, so rows that are the same axon (one source feeding several groups) share it."""
    offsets, total = {}, 0
    for c in conns:
        if c.axons not in offsets:
            offsets[c.axons], total = total, total + c.n_rows
    return offsets


@dataclass
class SplitResult:
    populations: list[Population]  # in order, partial-sum populations before the layer they feed
    fragments: list[Fragment]
    connections: list[Connections]
    violations: list[Violation] = field(default_factory=list)


class Splitter:
    def __init__(self, target: Target, policy: str = "min-cores", estimate: bool = False) -> None:
        if policy not in POLICIES:
            raise ValueError(f"split policy must be one of {POLICIES}, not {policy!r}")
        self.t = target
        self.partial_sums = target["message.graded_bits"] > 0 and target["message.partial_sum_bits"] > 0
        self.policy = policy if self.partial_sums else "output"
        self.limits = {"neurons": target["core.neurons"], "axons_in": target["core.axons_in"],
                       "axons_out": target["core.axons_out"], "synmem": target["core.synmem_units"]}
        self._cache: dict = {}
        # estimate: mostly dense matrices costed from their density (the planner's many trial splits); the fill
        # that places fragments counts exactly
        self.estimate = estimate
        self.prefix_tables: dict[int, np.ndarray] = {}  # id(Masked) -> its prefix counts, while a layer is filled

    # -- costs ----------------------------------------------------------------------------------------
    def row_cost(self, n, bits):
        """Synaptic memory of rows storing n synapses of `bits` bits each (module docstring). Plain arithmetic,
        so it takes Python numbers (the fill's many single-slice checks) as well as arrays."""
        t = self.t
        chunk = t["synapse.chunk_synapses"]
        if chunk > 0:
            word, head = t["synapse.word_bits"], t["synapse.chunk_overhead_bits"]
            full, rem = n // chunk, n % chunk

            def stored(k):
                raw = k * bits + head
                return -(-raw // word) * word if word else raw

            total_bits = full * stored(chunk) + (rem > 0) * stored(rem)
        else:
            total_bits = n * bits
        return (n > 0) * (t["synapse.row_overhead_units"] + total_bits * t["synapse.units_per_bit"])

    def index_bits(self, width: np.ndarray) -> np.ndarray:
        w = np.maximum(np.asarray(width, dtype=np.float64), 2)
        return np.maximum(self.t["synapse.min_index_bits"], np.ceil(np.log2(w)))

    def resources(self, inputs: list[InputSlice], bounds: np.ndarray, dprefix: np.ndarray) -> dict[str, np.ndarray]:
        """Per slice (neurons bounds[j]..bounds[j+1]) the resources its fragment needs."""
        w = np.diff(bounds).astype(np.float64)
        b = w.size
        idx = self.index_bits(w)
        synmem, axin, syn = np.zeros(b), np.zeros(b), np.zeros(b)
        for s in inputs:
            bits, pat = s.group.weight_bits, s.group.pattern
            if isinstance(pat, Dense) or (self.estimate and isinstance(pat, Masked) and pat.holes):
                # a mostly dense matrix, when estimating: every row reaches every slice, non-zeros by density
                # (to two digits, so layers of about the same density share the planner's cached answers)
                density = 1.0 if isinstance(pat, Dense) else round(pat.density, 2)
                rows = np.full(b, float(s.rows))
                nnz = rows * w * density
                sparse = rows * self.row_cost(w * density, bits + idx)
            elif isinstance(pat, Diagonal):  # row i reaches neuron i: the overlap of the ranges
                rows = np.maximum(0, np.minimum(bounds[1:], s.hi) - np.maximum(bounds[:-1], s.lo)).astype(np.float64)
                nnz = rows
                sparse = rows * self.row_cost(1, bits + idx)
            else:
                table = self.prefix_tables.get(id(pat))
                cnt = pat.counts(s.lo, s.hi, bounds) if table is None else \
                    np.diff(table[s.lo:s.hi][:, np.asarray(bounds)], axis=1)
                rows = (cnt > 0).sum(axis=0).astype(np.float64)
                nnz = cnt.sum(axis=0).astype(np.float64)
                sparse = self.row_cost(cnt, bits + idx[None, :]).sum(axis=0)
            dense = rows * self.row_cost(w, bits)
            synmem += np.minimum(dense, sparse)
            axin += rows
            syn += nnz
        axout = dprefix[bounds[1:]] - dprefix[bounds[:-1]]
        return {"neurons": w, "axons_in": axin, "axons_out": axout.astype(np.float64), "synmem": synmem,
                "synapses": syn}

    def _fits(self, res: dict[str, np.ndarray]) -> bool:
        return all(bool(np.all(res[r] <= self.limits[r])) for r in RESOURCES)

    # -- output split -----------------------------------------------------------------------------------
    def min_slices(self, inputs: list[InputSlice], n: int, dests: np.ndarray) -> int | None:
        """The fewest equal output slices of n neurons whose every slice fits a core; None if even one neuron
        per core does not fit."""
        key = None
        if all(isinstance(s.group.pattern, (Dense, Diagonal)) or (self.estimate and s.group.pattern.holes)
               for s in inputs):
            key = (tuple((type(s.group.pattern).__name__, s.lo, s.hi, s.group.pattern.n_in, s.group.weight_bits,
                          round(getattr(s.group.pattern, "density", 1.0), 2))
                         for s in inputs), n, dests.tobytes() if dests.size < 65536 else id(dests))
            if key in self._cache:
                return self._cache[key]
        out = self._min_slices(inputs, n, dests)
        if key is not None:
            self._cache[key] = out
        return out

    def _min_slices(self, inputs, n, dests):
        if n == 0:
            return 0
        dprefix = np.r_[0, np.cumsum(dests)]
        if dests.max(initial=0) > self.limits["axons_out"]:
            return None
        cap = min(self.limits["neurons"], n)
        one = self.resources(inputs, np.array([0, n]), dprefix)
        b0 = max(math.ceil(n / cap), math.ceil(one["synmem"][0] / self.limits["synmem"]),
                 math.ceil(dprefix[-1] / self.limits["axons_out"]), 1)
        b0 = min(b0, n)

        def ok(b: int) -> bool:
            return self._fits(self.resources(inputs, _bounds(n, b), dprefix)) and (n + b - 1) // b <= cap

        if ok(b0):
            return b0
        lo, hi = b0, b0
        while not ok(hi):
            if hi == n:
                return None
            lo, hi = hi, min(n, hi + max(1, hi // 2))
        while hi - lo > 1:  # smallest feasible in (lo, hi]
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        return hi

    def over_at_finest(self, inputs: list[InputSlice], n: int, dests: np.ndarray) -> list[tuple[str, float]]:
        """The resources that overflow a core even when it holds one neuron, with their largest values."""
        res = self.resources(inputs, _bounds(n, n), np.r_[0, np.cumsum(dests)])
        return [(r, float(res[r].max(initial=0))) for r in RESOURCES if res[r].max(initial=0) > self.limits[r]]

    def max_fit(self, inputs: list[InputSlice], lo: int, hi_max: int, dprefix: np.ndarray,
                room: dict[str, float]) -> tuple[int, dict[str, float]]:
        """The most neurons [lo, lo + w) with w <= hi_max - lo whose fragment fits in `room`, and its needs."""
        def need(w: int) -> dict[str, float]:
            return self.need_one(inputs, lo, lo + w, dprefix)

        def fits(w: int) -> bool:
            n = need(w)
            return all(n[r] <= room[r] + 1e-9 for r in RESOURCES)

        lo_w, hi_w = 0, hi_max - lo
        if hi_w > 0 and fits(hi_w):
            return hi_w, need(hi_w)
        while hi_w - lo_w > 1:  # needs grow with w: bisect for the largest that fits
            mid = (lo_w + hi_w) // 2
            if fits(mid):
                lo_w = mid
            else:
                hi_w = mid
        return lo_w, (need(lo_w) if lo_w else {})

    def need_one(self, inputs: list[InputSlice], lo: int, hi: int, dprefix: np.ndarray) -> dict[str, float]:
        """`resources` of the one slice [lo, hi), in scalar arithmetic where no row is masked (faster)."""
        if any(isinstance(s.group.pattern, Masked) for s in inputs):
            return {k: float(v[0]) for k, v in self.resources(inputs, np.array([lo, hi]), dprefix).items()}
        w = hi - lo
        idx = max(self.t["synapse.min_index_bits"], math.ceil(math.log2(max(w, 2))))
        synmem = axin = syn = 0.0
        for s in inputs:
            bits = s.group.weight_bits
            if isinstance(s.group.pattern, Dense):
                rows, nnz, sparse = s.rows, s.rows * w, s.rows * self.row_cost(w, bits + idx)
            else:  # Diagonal
                rows = max(0, min(hi, s.hi) - max(lo, s.lo))
                nnz, sparse = rows, rows * self.row_cost(1, bits + idx)
            synmem += min(rows * self.row_cost(w, bits), sparse)
            axin += rows
            syn += nnz
        return {"neurons": float(w), "axons_in": float(axin), "axons_out": float(dprefix[hi] - dprefix[lo]),
                "synmem": float(synmem), "synapses": float(syn)}

    def lower_bound(self, pop: Population) -> dict[str, float]:
        """Cores this layer needs at least, per resource: its total over the per-core limit, with every input
        row stored once (as if one core held the whole layer, the least synaptic memory any split can use)."""
        one = self.resources(pop.inputs, np.array([0, pop.n]), np.zeros(pop.n + 1))
        return {"neurons": pop.n / self.limits["neurons"], "synmem": float(one["synmem"][0]) / self.limits["synmem"],
                "axons_in": pop.rows / self.limits["axons_in"], "neuron_groups": 1 / self.t["core.neuron_groups"]}

    # -- row split --------------------------------------------------------------------------------------
    def cores_for(self, pop: Population, a: int, dests: np.ndarray) -> int | None:
        if a == 1:
            return self.min_slices(pop.inputs, pop.n, dests)
        total = 0
        for chunk in chunk_rows(pop.inputs, a):
            b = self.min_slices(chunk, pop.n, np.ones(pop.n))
            if b is None:
                return None
            total += b
        names = [f"{pop.name}#partial{i}" for i in range(a)]
        b = self.min_slices(self.sum_inputs(pop, names), pop.n, dests)
        return None if b is None else total + b

    def sum_inputs(self, pop: Population, names: list[str]) -> list[InputSlice]:
        """The identity synapses through which a layer's neurons take the partial sums of `names`."""
        bits = int(self.t["message.partial_sum_bits"])
        return [InputSlice(SynapseGroup(name=f"{nm}->{pop.name}", source=nm, from_host=False,
                                        pattern=Diagonal(pop.n), weight_bits=1, message_bits=bits), 0, pop.n)
                for nm in names]

    def row_groups(self, pop: Population, dests: np.ndarray) -> int | None:
        """How many input-row groups to cut `pop` into (policy), or None if no split fits."""
        rows = pop.rows
        whole = self.cores_for(pop, 1, dests)
        if whole is not None and (self.policy in ("fan-in", "output")
                                  or whole <= math.ceil(max(self.lower_bound(pop).values()))):
            return 1
        if self.policy == "output" or rows < 2:
            return 1 if self.cores_for(pop, 1, dests) is not None else None
        a = 1
        while self.cores_for(pop, a, dests) is None:  # smallest feasible: doubling, then bisection
            if a >= rows:
                return None
            a = min(rows, a * 2)
        lo = a // 2
        while a - lo > 1:
            mid = (lo + a) // 2
            if self.cores_for(pop, mid, dests) is not None:
                a = mid
            else:
                lo = mid
        if self.policy == "fan-in":
            return a
        candidates = sorted({*range(a, min(rows, a + 24) + 1), *(a * 2**k for k in range(1, 9) if a * 2**k <= rows)})
        best = None
        for c in candidates:
            cores = self.cores_for(pop, c, dests)
            if cores is not None and (best is None or cores < best[0]):
                best = (cores, c)
        return best[1]


def _bounds(n: int, b: int) -> np.ndarray:
    """b equal slices of n (sizes differ by at most one)."""
    return (np.arange(b + 1, dtype=np.int64) * n) // b


def chunk_rows(inputs: list[InputSlice], a: int) -> list[list[InputSlice]]:
    """The rows of `inputs` (in order, concatenated) cut into a contiguous groups of equal size."""
    total = sum(s.rows for s in inputs)
    cuts = _bounds(total, a)
    out: list[list[InputSlice]] = [[] for _ in range(a)]
    start = 0
    for s in inputs:
        for i in range(a):
            lo, hi = max(cuts[i], start), min(cuts[i + 1], start + s.rows)
            if hi > lo:
                out[i].append(InputSlice(s.group, s.lo + lo - start, s.lo + hi - start))
        start += s.rows
    return out


def source_rate(s: InputSlice, rates: dict[str, np.ndarray]) -> np.ndarray:
    """Events per step of rows [s.lo, s.hi) of a synapse group (its own per-row rates for host and routed
    sources, else its source population's)."""
    r = s.group.source_rate if s.group.source_rate is not None else rates[s.group.source]
    return r[s.lo:s.hi]


@dataclass
class Plan:
    """Every layer as the populations that implement it (partial-sum stages first), and for each population
    the destination cores each of its neurons will reach (estimated from equal splits of its consumers)."""

    stages: dict[str, list[Population]]
    dests: dict[str, np.ndarray]
    infeasible: set[str]
    violations: list[Violation]


def plan_network(net: Network, sp: Splitter, extra: dict[str, np.ndarray] | None = None) -> Plan:
    """Row groups of every layer (policy) and the output axons its neurons need.

    Layers are planned consumers first (reverse order), so when a layer is planned it knows how many
    destination cores each of its neurons reaches; in a loop (recurrence) a consumer comes before its source,
    and what it adds after the source was planned is carried into another pass. `extra` adds known
    destinations (a later, exact count) to the estimates."""
    extra = dict(extra or {})
    rates = {p.name: p.rate for p in net.populations}
    for _ in range(4):
        dests = {p.name: _host(p) for p in net.populations}
        late = {p.name: np.zeros(p.n) for p in net.populations}
        done: set[str] = set()
        stages: dict[str, list[Population]] = {}
        infeasible: set[str] = set()
        violations: list[Violation] = []
        used: dict[str, np.ndarray] = {}
        for spec in reversed(net.populations):
            d = dests[spec.name] + extra.get(spec.name, 0.0)
            stages[spec.name] = staged = _plan_one(sp, spec, d, rates, violations, infeasible)
            done.add(spec.name)
            for pop in staged:
                used[pop.name] = d if pop.role != "partial" else np.ones(pop.n)
                bounds = _bounds(pop.n, pop.planned_slices)
                for s in pop.inputs:
                    if s.group.from_host or s.group.source not in dests:
                        continue
                    r, _, _ = pairs(s.group.pattern, s.lo, s.hi, bounds)  # each (row, fragment) is one axon
                    sender = s.group.neuron_of(r)  # of the neuron that sends the row
                    np.add.at(dests[s.group.source], sender, 1.0)
                    if s.group.source in done:
                        np.add.at(late[s.group.source], sender, 1.0)
        if all(np.all(late[n] <= extra.get(n, 0.0)) for n in late):
            break
        extra = {n: np.maximum(late[n], extra.get(n, 0.0)) for n in late}
    order = {p.layer: i for i, p in enumerate(net.populations)}
    violations.sort(key=lambda v: order.get(v.layer, -1))  # planned last layer first; reported in layer order
    return Plan(stages=stages, dests=used, infeasible=infeasible, violations=violations)


def _host(p: Population) -> np.ndarray:
    return np.full(p.n, 1.0 if p.to_host else 0.0)


def _plan_one(sp: Splitter, spec: Population, dests: np.ndarray, rates: dict[str, np.ndarray],
              violations: list[Violation], infeasible: set[str]) -> list[Population]:
    """The populations of one layer: its partial-sum stages first, then its own neurons."""
    pop = Population(name=spec.name, layer=spec.layer, n=spec.n, role=spec.role, inputs=list(spec.inputs),
                     rate=spec.rate, host_bits=spec.host_bits)
    a = sp.row_groups(pop, dests)
    if a is None:
        for resource, value in sp.over_at_finest(pop.inputs, pop.n, dests):
            violations.append(Violation(pop.layer, resource, value, sp.limits[resource], fix_for(sp, pop, resource)))
        infeasible.add(pop.name)
        pop.planned_slices = max(1, math.ceil(pop.n / sp.limits["neurons"]))
        return [pop]
    staged = []
    if a > 1:
        names = [f"{pop.name}#partial{i}" for i in range(a)]
        for name, chunk in zip(names, chunk_rows(pop.inputs, a)):
            lam = sum(float(source_rate(s, rates).sum()) for s in chunk)
            rate = np.full(pop.n, 1.0 - math.exp(-lam))  # P(some input row of the chunk is active in a step)
            rates[name] = rate
            partial = Population(name=name, layer=pop.layer, n=pop.n, role="partial", inputs=chunk, rate=rate)
            partial.planned_slices = sp.min_slices(chunk, pop.n, np.ones(pop.n))
            staged.append(partial)
        pop.inputs = sp.sum_inputs(pop, names)
        pop.row_groups, pop.extra_steps = a, 1
    pop.planned_slices = sp.min_slices(pop.inputs, pop.n, dests)
    staged.append(pop)
    return staged


def fix_for(sp: Splitter, pop: Population, resource: str) -> str:
    """What to change when `resource` overflows a core whatever the split."""
    bits = max((s.group.weight_bits for s in pop.inputs), default=0)
    if resource == "axons_out":
        return ("its neurons reach too many destination cores even one per core: fewer consumers per neuron, "
                "or a profile with more output axons")
    rows_fix = ("split input rows into partial sums (split policy 'min-cores' or 'fan-in')"
                if sp.partial_sums else "this target has no graded messages for partial sums: reduce the fan-in "
                "(fewer or sparser inputs per neuron)")
    polarity = "; if its inputs are split by polarity (+/- channels), graded polarity halves its rows"
    if resource == "synmem":
        return f"{rows_fix}, fewer weight bits (now {bits}) or sparser weights{polarity}"
    if resource == "axons_in":
        return f"{rows_fix}, or fewer input axons (sparser connectivity){polarity}"
    return rows_fix


def connections(pops: list[Population], fragments: list[Fragment]) -> list[Connections]:
    """For every input of every population: which source rows reach which fragments, with how many synapses."""
    index = {id(f): i for i, f in enumerate(fragments)}
    out = []
    for pop in pops:
        if not pop.fragments:
            continue
        bounds = np.array([f.lo for f in pop.fragments] + [pop.n])
        first = index[id(pop.fragments[0])]
        for s in pop.inputs:
            r, j, c = pairs(s.group.pattern, s.lo, s.hi, bounds)
            out.append(Connections(source=s.group.source, from_host=s.group.from_host, rate=s.group.source_rate,
                                   rows=r, neurons=s.group.neuron_of(r), frags=j + first, counts=c,
                                   bits=s.group.message_bits, axons=s.group.axons, n_rows=s.group.pattern.n_in))
    return out
