"""What a Loihi-form graph asks of the neuro-cores: neuron populations and the synapses into them.

On a neuro-core, neurons live with the synapses that feed them: a core holds a slice of a population's
neurons and, for every input axon (row) that reaches them, the weights of that row to those neurons
(nengo-loihi's LoihiBlock: compartments + the synapses into them; Lava's Dense + LIF pair). So the mapper
sees the graph as:

    Population   neurons of one graph node (a LoihiLIF, LoihiTernaryLIF, any op in LOIHI_NEURON_OPS or
                 annotated partition="neurocore"), with its input synapse groups
    SynapseGroup one LoihiDense feeding it from one source (weights (n_out, n_in), weight and message bits),
                 or an identity connection where a source feeds the neurons without a LoihiDense
    source       another population on the chip, or a host node (host -> chip boundary traffic)

A SpikeRouter is no population: it is the axon routing of the neurons it follows (spikecc.ir.neurocore_ops).
Its n neurons' spikes leave on banks * polarities * n axons, one block of n per (step bank, polarity); a
LoihiDense it feeds has those axons as its rows. Row k belongs to neuron k mod n of the router's source
population: the neuron's core sends it (once per destination core it reaches) and its output axons are
counted there, while the row's rate is the router's own measured per-row rate (a neuron's spike in step t
leaves on one row only, that of t's bank and the spike's sign). A router whose activity is not given splits
its neurons' rates evenly over their rows.

A LoihiDense whose output goes to the host (or to another synapse) gets a *relay* population: its n_out
accumulators, which forward the synaptic sum as graded messages. Every other node runs on the host; a node
annotated partition="host" does so whatever its op.

Rows. An encoder presents a sequence of L tokens at once: its neuro-core nodes are fed (L, n) rows
(spikecc.ir.rows), which the same n neurons and synapses serve one token after another. A population is then the
n neurons of the op (its natural shape), and per-element rates of the L rows are averaged over the rows: a step
of the chip is a spike step of one token.

Activity (events per neuron per step) comes from the caller: `{node: per-neuron array or mean rate}`,
measured by a simulation (spikecc's CPU simulator: SimResult traces, Simulator.neuron_events). Missing
entries are assumed: spiking populations fire at `default_rate`; graded and real-valued sources (relays,
LayerNorm outputs, graded Inputs) send a message every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import nir
import numpy as np

from spikecc.errors import GraphError, SpikeccError
from spikecc.ir import Graph, infer_shapes
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.neurocore_ops import SpikeRouter
from spikecc.ir.ops import ExtensionOp
from spikecc.ir.signals import BINARY, REAL, Signal, ternary


class MappingError(SpikeccError):
    """The graph or the activity handed to the mapper cannot be mapped as given."""


Activity = Mapping[str, "np.ndarray | float"]


# -- connectivity patterns of a weight matrix W (n_out, n_in); rows are inputs, columns of W ------------
@dataclass(frozen=True)
class Dense:
    """Every input reaches every output (all weights non-zero)."""

    n_out: int
    n_in: int


@dataclass(frozen=True)
class Diagonal:
    """Input i reaches output i only (identity connections: partial sums, sources without synapses)."""

    n: int

    @property
    def n_out(self) -> int:
        return self.n

    @property
    def n_in(self) -> int:
        return self.n


@dataclass(frozen=True, eq=False)
class Masked:
    """Some weights are zero. Stored: the positions (row * n_out + output, sorted) of whichever is rarer, the
    zeros (`holes`, a mostly dense matrix, e.g. quantized weights rounded to zero) or the non-zeros."""

    n_out: int
    n_in: int
    keys: np.ndarray
    holes: bool
    nnz: int

    @classmethod
    def from_weight(cls, weight: np.ndarray) -> Masked:
        w = np.asarray(weight)
        nz = w != 0
        nnz = int(np.count_nonzero(nz))
        holes = 2 * nnz > w.size
        out, row = np.nonzero(~nz if holes else nz)  # W is (n_out, n_in): rows of the mapping are W's columns
        keys = np.sort(row.astype(np.int64) * w.shape[0] + out)
        return cls(w.shape[0], w.shape[1], keys, holes, nnz)

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.n_out * self.n_in)

    def prefix(self) -> np.ndarray:
        """(n_in, n_out + 1) int32: non-zeros of each row among outputs [0, k), for every k. n_in x n_out
        entries: built for one layer at a time, it makes counting a slice O(rows) instead of a search."""
        stored = np.zeros((self.n_in, self.n_out), dtype=np.int32)
        stored.reshape(-1)[self.keys] = 1
        table = np.zeros((self.n_in, self.n_out + 1), dtype=np.int32)
        np.cumsum(1 - stored if self.holes else stored, axis=1, out=table[:, 1:])
        return table

    def counts(self, r_lo: int, r_hi: int, bounds: np.ndarray) -> np.ndarray:
        """(rows, slices): non-zeros of each row in [r_lo, r_hi) among outputs bounds[j]..bounds[j+1]."""
        base = np.arange(r_lo, r_hi, dtype=np.int64)[:, None] * self.n_out
        stored = np.diff(np.searchsorted(self.keys, base + np.asarray(bounds, dtype=np.int64)[None, :]), axis=1)
        return np.diff(bounds)[None, :] - stored if self.holes else stored


Pattern = Dense | Diagonal | Masked


def pattern_of(weight: np.ndarray) -> Pattern:
    w = np.asarray(weight)
    if np.count_nonzero(w) == w.size:
        return Dense(w.shape[0], w.shape[1])
    return Masked.from_weight(w)


def pairs(pattern: Pattern, r_lo: int, r_hi: int, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, slice, count): for each input row in [r_lo, r_hi) and output slice j (outputs bounds[j] to
    bounds[j+1]) that it reaches, the number of synapses. Rows are absolute."""
    b = len(bounds) - 1
    if isinstance(pattern, Dense):
        rows = np.repeat(np.arange(r_lo, r_hi, dtype=np.int64), b)
        slices = np.tile(np.arange(b, dtype=np.int64), r_hi - r_lo)
        return rows, slices, np.diff(bounds).astype(np.int64)[slices]
    if isinstance(pattern, Diagonal):
        rows = np.arange(r_lo, r_hi, dtype=np.int64)
        rows = rows[(rows >= bounds[0]) & (rows < bounds[-1])]
        return rows, np.searchsorted(bounds, rows, side="right") - 1, np.ones(rows.size, dtype=np.int64)
    cnt = pattern.counts(r_lo, r_hi, bounds)
    r, j = np.nonzero(cnt)
    return r + r_lo, j, cnt[r, j]


# -- the network ---------------------------------------------------------------------------------------
@dataclass(eq=False)
class SynapseGroup:
    name: str  # the LoihiDense node (or "src->dst" for an identity connection)
    source: str  # source population name, or the host node it comes from
    from_host: bool
    pattern: Pattern
    weight_bits: int
    message_bits: int  # payload bits of the messages it receives (0: binary spikes)
    source_rate: np.ndarray | None = None  # host and routed sources: events per row per step
    router: str | None = None  # the SpikeRouter whose outputs are the rows (None: the source's own outputs)
    fold: int = 0  # routed rows: row k is sent by source neuron k mod fold (0: row k is neuron k)

    @property
    def axons(self) -> str:
        """The node whose outputs the rows are (rows of groups with the same `axons` are the same axons)."""
        return self.router or self.source

    def neuron_of(self, rows: np.ndarray) -> np.ndarray:
        """The source neuron that sends each row."""
        return rows % self.fold if self.fold else rows


@dataclass(eq=False)
class InputSlice:
    """Rows [lo, hi) of a synapse group (a row-split population holds a range of its parent's rows)."""

    group: SynapseGroup
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo


@dataclass(eq=False)
class Population:
    name: str
    layer: str  # the graph node it implements (partial-sum populations keep their layer's name)
    n: int
    role: str  # "neurons" | "relay" | "partial"
    inputs: list[InputSlice]
    rate: np.ndarray  # events per neuron per step
    host_bits: int | None = None  # payload bits of its messages to the host; None: it sends nothing there
    row_groups: int = 1  # input-row groups (1: no partial sums)
    extra_steps: int = 0  # steps the partial sums add to this layer's latency
    planned_slices: int = 1  # equal output slices the planner estimated (its consumers' destinations)
    fragments: list = field(default_factory=list)  # filled by the splitter

    @property
    def to_host(self) -> bool:
        return self.host_bits is not None

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.inputs)


@dataclass
class Network:
    populations: list[Population]
    host_nodes: list[str]  # every node that runs on the host, Inputs and Outputs included
    io_nodes: list[str]  # the Inputs and Outputs among them
    assumed: list[str]  # nodes whose activity was assumed, not given
    rows: int = 1  # tokens the neuro-cores serve in turn per step of the graph (an encoder's sequence length)


def is_host(g: Graph, name: str) -> bool:
    """Runs on the host: not a Loihi neuron or synapse, or annotated partition="host"."""
    part = g.annotation(name, "partition")
    if part == "host":
        return True
    op = g.nodes[name]
    if isinstance(op, (nir.Input, nir.Output)):
        return True
    return not (isinstance(op, (LoihiDense, *LOIHI_NEURON_OPS)) or part == "neurocore")


def is_neurons(g: Graph, name: str) -> bool:
    """A neuron population on a neuro-core. A SpikeRouter is not one: it is the axon routing of the neurons it
    follows (their spikes leave on one axon per (step bank, polarity) block), so it is an on-chip source only."""
    return not is_host(g, name) and not isinstance(g.nodes[name], (LoihiDense, SpikeRouter))


def is_router(g: Graph, name: str) -> bool:
    return isinstance(g.nodes[name], SpikeRouter) and not is_host(g, name)


def _rates(activity: Activity, name: str, n: int, default: float, rows: int = 1) -> tuple[np.ndarray, bool]:
    """(per-neuron events per step, whether it was given). A node fed `rows` rows of n (an encoder's sequence,
    whose tokens the same n neurons serve in turn: spikecc.ir.rows) may be given per-element rates of all its
    rows: they are averaged over the rows."""
    if name not in activity:
        return np.full(n, float(default)), False
    a = np.asarray(activity[name], dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if rows > 1 and a.size == rows * n:
        a = a.reshape(rows, n).mean(axis=0)
    if a.size != n:
        raise MappingError(f"activity for node '{name}' has {a.size} values for {n} neurons; give one rate per "
                           "neuron or a single mean rate")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise MappingError(f"activity for node '{name}' holds negative, NaN or infinite rates; rates are events "
                           "per neuron per step (>= 0)")
    return a, True


def _signal(g: Graph, name: str) -> Signal:
    """What a node sends, as far as the mapper needs it: an explicit `signal` annotation (Inputs), the spikes of
    Loihi's LIF neurons, else graded/real values (sent every step unless the activity says otherwise)."""
    ann = g.annotation(name, "signal")
    if isinstance(ann, dict) and ann.get("kind") in ("binary", "ternary", "graded", "real"):
        return Signal(ann["kind"], bits=int(ann.get("bits", 0) or 0))
    op = g.nodes[name]
    if isinstance(op, LoihiLIF):
        return BINARY
    if isinstance(op, LoihiTernaryLIF):
        return ternary(1.0)
    if isinstance(op, ExtensionOp):  # spikecc's neuro-core ops say what they send (spikecc.ir.neurocore_ops)
        return op.output_signal({})
    return REAL


def _payload_bits(signal: Signal, graded_default: int) -> int:
    if signal.kind == "binary":
        return 0
    if signal.kind == "ternary":
        return 1
    return int(signal.bits) or graded_default


def extract(g: Graph, activity: Activity | None, default_rate: float, graded_bits: int) -> Network:
    """The populations and synapse groups of `g` (module docstring), in schedule order."""
    activity = activity or {}
    unknown = sorted(set(activity) - set(g.nodes))
    if unknown:
        raise MappingError(f"activity names node(s) not in the graph: {', '.join(unknown[:5])}")
    shapes = infer_shapes(g)
    signals = {n: _signal(g, n) for n in g.nodes}
    try:
        order, _ = g.schedule()
    except GraphError:
        order = list(g.nodes)
    size = {n: int(np.prod(shapes[n])) if shapes.get(n) else 1 for n in g.nodes}
    rows = 1
    for n in g.nodes:  # on the cores, a node fed rows (spikecc.ir.rows) has the neurons of one row: its op's own
        natural = g.nodes[n].natural_shape() if isinstance(g.nodes[n], ExtensionOp) and not is_host(g, n) else None
        if natural and len(shapes.get(n, ())) > 1:
            size[n] = int(np.prod(natural))
            rows = max(rows, int(np.prod(shapes[n])) // size[n])
    assumed: list[str] = []

    def rate_of(name: str, n: int | None = None) -> np.ndarray:
        spiking = signals[name].kind in ("binary", "ternary")
        n = size[name] if n is None else n
        full = int(np.prod(shapes[name])) if shapes.get(name) else 1
        r, given = _rates(activity, name, n, default_rate if spiking else 1.0, rows=max(1, full // n))
        if not given and name not in assumed:
            assumed.append(name)
        return r

    relays = {n for n in order if isinstance(g.nodes[n], LoihiDense) and not is_host(g, n)
              and any(not is_neurons(g, e.dst) for e in g.out_edges(n))}

    def on_chip_source(name: str) -> bool:
        return is_neurons(g, name) or name in relays

    def routed_source(router: str) -> str:
        srcs = g.predecessors(router)
        if len(srcs) != 1 or not on_chip_source(srcs[0]):
            raise MappingError(f"router '{router}' routes the spikes of {', '.join(srcs) or 'nothing'}; a "
                               "neuro-core router follows exactly one neuron population")
        return srcs[0]

    def router_rate(router: str) -> np.ndarray:
        """Per-row rate of a router: measured, else its neurons' rates spread evenly over their rows."""
        if router in activity:
            return rate_of(router)
        op: SpikeRouter = g.nodes[router]
        if router not in assumed:
            assumed.append(router)
        blocks = op.banks * op.polarities
        return np.tile(rate_of(routed_source(router)) / blocks, blocks)

    def groups_of(dense: str) -> list[SynapseGroup]:
        op: LoihiDense = g.nodes[dense]
        pat = pattern_of(op.weight)
        out = []
        for e in g.in_edges(dense):
            common = dict(name=dense, pattern=pat, weight_bits=int(op.num_weight_bits),
                          message_bits=int(op.num_message_bits))
            if is_router(g, e.src):
                out.append(SynapseGroup(source=routed_source(e.src), from_host=False, source_rate=router_rate(e.src),
                                        router=e.src, fold=int(g.nodes[e.src].size), **common))
                continue
            host = not on_chip_source(e.src)
            rate = rate_of(e.src, pat.n_in) if host else None
            out.append(SynapseGroup(source=e.src, from_host=host, source_rate=rate, **common))
        return out

    def host_bits(name: str) -> int | None:
        """Payload bits of what a population sends to the host, itself or through its routers."""
        senders = [name] + [e.dst for e in g.out_edges(name) if is_router(g, e.dst)]
        for s in senders:
            if any(is_host(g, e.dst) for e in g.out_edges(s)):
                return _payload_bits(signals[s], graded_bits) if s not in relays else graded_bits
        return None

    pops: list[Population] = []
    for name in order:
        op = g.nodes[name]
        if name in relays:
            pops.append(Population(name=name, layer=name, n=int(op.weight.shape[0]), role="relay",
                                   inputs=[InputSlice(gr, 0, gr.pattern.n_in) for gr in groups_of(name)],
                                   rate=rate_of(name), host_bits=host_bits(name)))
        elif is_neurons(g, name):
            inputs: list[InputSlice] = []
            for e in g.in_edges(name):
                src_op = g.nodes[e.src]
                if isinstance(src_op, LoihiDense) and not is_host(g, e.src) and e.src not in relays:
                    inputs.extend(InputSlice(gr, 0, gr.pattern.n_in) for gr in groups_of(e.src))
                elif isinstance(src_op, LoihiDense) and e.src in relays:
                    inputs.append(_identity(e.src, name, size[name], False, graded_bits, None))
                elif is_router(g, e.src):
                    raise MappingError(f"router '{e.src}' feeds neurons '{name}' without synapses; routed spikes "
                                       "reach neurons through a LoihiDense (the graph is not in Loihi form)")
                else:  # a source wired straight into the neurons: one identity synapse per neuron
                    host = not on_chip_source(e.src)
                    bits = _payload_bits(signals[e.src], graded_bits)
                    inputs.append(_identity(e.src, name, size[name], host, bits,
                                            rate_of(e.src, size[name]) if host else None))
            pops.append(Population(name=name, layer=name, n=size[name], role="neurons", inputs=inputs,
                                   rate=rate_of(name), host_bits=host_bits(name)))
    pops = by_value_group(g, pops)
    for p in pops:
        for s in p.inputs:
            if s.group.pattern.n_out != p.n:
                raise MappingError(f"layer '{p.name}': synapses '{s.group.name}' have {s.group.pattern.n_out} outputs "
                                   f"for {p.n} neurons; the graph is not in Loihi form")
    host_nodes = [n for n in order if is_host(g, n)]
    io = [n for n in host_nodes if isinstance(g.nodes[n], (nir.Input, nir.Output))]
    return Network(populations=pops, host_nodes=host_nodes, io_nodes=io, assumed=assumed, rows=rows)


def by_value_group(g: Graph, pops: list[Population]) -> list[Population]:
    """Populations whose neurons differ in what a neuron group holds once (`_LoihiNeuron.GROUP_PARAMS`: du, dv,
    thresholds) become one population per value group, `<layer>#v<i>` (its `layer` stays the node): on Loihi 2
    each group is its own neuron group, a process of its own in Lava. The synapses into the layer are cut by
    output rows, the synapses out of it by input rows, one block per group; every synapse stays where it was."""
    groups = {}
    for p in pops:
        op = g.nodes[p.name]
        if p.role == "neurons" and isinstance(op, LOIHI_NEURON_OPS):
            found = op.value_groups()
            if len(found) > 1:
                groups[p.name] = found
    if not groups:
        return pops
    out = []
    for p in pops:
        inputs = [part for s in p.inputs for part in _by_source_group(s, groups)]
        if p.name not in groups:
            p.inputs = inputs
            out.append(p)
            continue
        for i, idx in enumerate(groups[p.name]):
            cut = [InputSlice(replace(s.group, pattern=select(s.group.pattern, outs=idx)), s.lo, s.hi) for s in inputs]
            out.append(Population(name=f"{p.name}#v{i}", layer=p.layer, n=int(idx.size), role=p.role, inputs=cut,
                                  rate=p.rate[idx], host_bits=p.host_bits))
    return out


def _by_source_group(s: InputSlice, groups: dict[str, list[np.ndarray]]) -> list[InputSlice]:
    """An input slice whose source is split by value group: one slice per group, its rows those of the group."""
    gr = s.group
    if gr.from_host or gr.source not in groups:
        return [s]
    if gr.router is not None or (s.lo, s.hi) != (0, gr.pattern.n_in):
        raise MappingError(f"layer '{gr.source}' splits into value groups but its synapses '{gr.name}' take "
                           "routed or partial rows; give the layer one du, dv and threshold for all its neurons")
    return [InputSlice(replace(gr, source=f"{gr.source}#v{i}", pattern=select(gr.pattern, rows=idx)), 0, idx.size)
            for i, idx in enumerate(groups[gr.source])]


def select(pattern: Pattern, outs: np.ndarray | None = None, rows: np.ndarray | None = None) -> Pattern:
    """The pattern of the synapses from input rows `rows` to outputs `outs` (None: all) of `pattern`."""
    n_out = pattern.n_out if outs is None else len(outs)
    n_in = pattern.n_in if rows is None else len(rows)
    if isinstance(pattern, Dense):
        return Dense(n_out, n_in)
    mask = np.zeros((pattern.n_in, pattern.n_out), dtype=bool)  # (row, output), as the keys count them
    if isinstance(pattern, Diagonal):
        np.fill_diagonal(mask, True)
    else:
        mask.reshape(-1)[pattern.keys] = True
        mask ^= pattern.holes
    if rows is not None:
        mask = mask[rows]
    if outs is not None:
        mask = mask[:, outs]
    return pattern_of(mask.T)


def _identity(src: str, dst: str, n: int, host: bool, bits: int, rate: np.ndarray | None) -> InputSlice:
    group = SynapseGroup(name=f"{src}->{dst}", source=src, from_host=host, pattern=Diagonal(n), weight_bits=1,
                         message_bits=bits, source_rate=rate)
    return InputSlice(group, 0, n)


def activity_from_traces(traces: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-neuron events per step from recorded outputs (node -> (steps, *shape)), e.g. SimResult.traces:
    the share of steps in which each neuron's output is non-zero."""
    out = {}
    for name, tr in traces.items():
        a = np.asarray(tr)
        if a.ndim == 0 or a.shape[0] == 0:
            raise MappingError(f"trace of node '{name}' holds no steps; activity needs at least one simulated step")
        out[name] = (a.reshape(a.shape[0], -1) != 0).mean(axis=0)
    return out


def activity_from_events(events: Mapping[str, np.ndarray], steps: int) -> dict[str, np.ndarray]:
    """Per-neuron events per step from event counts over `steps` steps (Simulator.neuron_events)."""
    if steps <= 0:
        raise MappingError("activity needs at least one simulated step")
    return {name: np.asarray(c, dtype=np.float64).reshape(-1) / steps for name, c in events.items()}
