"""fuse-synapses: every chain of linear ops between a source and a neuron (or Output) becomes ONE LoihiDense.

Invariant: for every neuron or Output, the sum over its incoming LoihiDense of W s (s the source's output) equals
what the chain of Affine, Linear, Conv1d/2d, SumPool2d/AvgPool2d, Scale and Flatten nodes (in any mix, fan-in
summed) delivered, minus the chains' summed bias, which is annotated on the neuron as `synaptic_bias` (a list,
one value per neuron; map-neurons folds it into the neuron's bias). The Dense weight is the composed matrix
(spikecc.ir.linear_maps.as_matrix), unscaled; map-neurons multiplies in the neuron's input gain. Each LoihiDense
delivers one step late (Lava's Dense), which initial-state accounts for.

Names: the linear node's own when one linear node next to the sink carries all of a source's input to it and
nothing else (Affine 'fc1' -> LIF 'lif1' keeps 'fc1'), else '<sink>.syn' / '<sink>.syn.<source>'.

Rejected, naming the node: a neuron or Output fed straight by another neuron or an Input (no synapse), readouts
feeding anything but Outputs, a linear chain with a bias into an Output, Delay and every op without a Loihi form.
"""

from __future__ import annotations

import nir
import numpy as np
import scipy.sparse as sp

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.compiler.passes.nir_forms import LINEAR, NEURONS, READOUTS, SPIKING, SUPPORTED, fail, per_neuron
from spikecc.ir.graph import Graph
from spikecc.ir.linear_maps import as_matrix
from spikecc.ir.loihi_ops import LOIHI_OPS, LoihiDense

Maps = dict[str, sp.csr_matrix]  # source node -> matrix from its flat output to this node's flat output


class _Composer:
    """Composes chains of linear ops into one sparse matrix per (source, sink), memoised per linear node."""

    def __init__(self, g: Graph, a: Analysis) -> None:
        self.g = g
        self.shapes = a.shapes
        self.signals = a.signals
        self.memo: dict[str, tuple[Maps, np.ndarray, list[str]]] = {}
        self.active: set[str] = set()

    def size(self, name: str) -> int:
        return int(np.prod(self.shapes[name]))

    def in_shape(self, name: str) -> tuple[int, ...]:
        srcs = self.g.predecessors(name)
        return self.shapes[srcs[0]] if srcs else ()

    # -- composing synapse chains ----------------------------------------------------------------------
    def incoming(self, name: str, sink: str, edges=None) -> tuple[Maps, np.ndarray, list[str]]:
        """The sum over `name`'s input edges (or the given ones) of the maps from each source, the summed
        bias, and the linear nodes passed. `sink` is the neuron or Output being fed (for messages)."""
        maps: Maps = {}
        n = int(np.prod(self.in_shape(name))) if isinstance(self.g.nodes[name], LINEAR) else self.size(name)
        bias = np.zeros(n)
        merged: list[str] = []
        for e in self.g.in_edges(name) if edges is None else edges:
            src_op = self.g.nodes[e.src]
            if isinstance(src_op, LINEAR):
                m, b, names = self.linear(e.src, sink)
                for k, v in m.items():
                    maps[k] = maps[k] + v if k in maps else v
                bias = bias + b
                merged += [n for n in names if n not in merged]
            elif isinstance(src_op, (nir.Input, *SPIKING)):
                eye = sp.identity(self.size(e.src), format="csr")
                maps[e.src] = maps[e.src] + eye if e.src in maps else eye
            elif isinstance(src_op, READOUTS):
                raise fail(sink, f"its input comes from '{e.src}', a {type(src_op).__name__} readout whose output "
                           "is a real-valued state, which Loihi 2 neurons cannot send",
                           "feed only Output nodes from LI/CubaLI/I, or use a spiking neuron")
            else:
                raise fail(e.src, f"{type(src_op).__name__} has no Loihi 2 form", SUPPORTED)
        return maps, bias, merged

    def linear(self, name: str, sink: str) -> tuple[Maps, np.ndarray, list[str]]:
        """Maps from each source to the flat output of linear node `name` (y = M x + b)."""
        if name in self.memo:
            return self.memo[name]
        if name in self.active:
            raise fail(name, "sits in a loop of linear ops with no neuron", "put a neuron in the loop")
        self.active.add(name)
        op = self.g.nodes[name]
        in_maps, in_bias, merged = self.incoming(name, sink)
        in_shape = self.in_shape(name)
        n_in = int(np.prod(in_shape))
        if isinstance(op, nir.Flatten):
            m, b = sp.identity(n_in, format="csr"), None
        elif isinstance(op, nir.Scale):
            m, b = sp.diags(per_neuron(op.scale, n_in), format="csr"), None
        else:
            m, b = as_matrix(op, in_shape)
        out = {k: (m @ v).tocsr() for k, v in in_maps.items()}
        bias = m @ in_bias + (b if b is not None else 0.0)
        self.active.discard(name)
        self.memo[name] = (out, np.asarray(bias, dtype=np.float64).reshape(-1), [*merged, name])
        return self.memo[name]


def fuse_synapses(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph with one LoihiDense per (source, neuron-or-Output) pair; see the module docstring."""
    a = analysis_of(g, a)
    for name, op in g.nodes.items():
        if isinstance(op, LOIHI_OPS):
            raise fail(name, "is already a Loihi op in a graph that still holds NIR ops",
                       "lower the NIR graph before adding Loihi ops, or lower all of it")
    low = _Composer(g, a)
    out = Graph(metadata=dict(g.metadata), annotations={})
    for name in g.inputs():
        out.add_node(name, g.nodes[name], **g.annotations.get(name, {}))
    taken = {n for n, op in g.nodes.items() if not isinstance(op, LINEAR)}  # names that survive
    pending: list[tuple[str, str]] = []  # edges (src, dst) added once all nodes exist
    for name, op in g.nodes.items():
        if isinstance(op, nir.Input) or isinstance(op, LINEAR):
            continue
        if isinstance(op, nir.Delay):
            raise fail(name, "Delay has no Loihi 2 form in Lava's Dense/LIF processes",
                       "remove the Delay (or fold it into the input data)")
        if not isinstance(op, (*NEURONS, nir.Output)):
            raise fail(name, f"{type(op).__name__} has no Loihi 2 form", SUPPORTED)
        ann = dict(g.annotations.get(name, {}))
        direct = [e.src for e in g.in_edges(name) if not isinstance(g.nodes[e.src], LINEAR)]
        if isinstance(op, nir.Output):
            for src in direct:  # neurons and Inputs reach an Output straight, without a synapse
                if isinstance(g.nodes[src], (nir.Input, *NEURONS)):
                    pending.append((src, name))
                else:
                    raise fail(src, f"{type(g.nodes[src]).__name__} has no Loihi 2 form", SUPPORTED)
            via = [e for e in g.in_edges(name) if isinstance(g.nodes[e.src], LINEAR)]
            maps, bias, merged = low.incoming(name, name, via)
            if np.any(np.asarray(bias) != 0):
                raise fail(name, "is fed by a linear layer with a non-zero bias; Loihi 2 synapses have no bias",
                           "give that layer no bias, or put a neuron (e.g. LIF) before the Output")
            new_op: nir.NIRNode = nir.Output(output_type={"output": np.asarray([a.size(name)])})
        else:
            for src in direct:
                raise fail(name, f"is fed straight by '{src}' ({type(g.nodes[src]).__name__}) without a synapse "
                           "layer; Loihi 2 neurons receive input only through synapses",
                           "put a Linear (e.g. identity weights) between them")
            maps, bias, merged = low.incoming(name, name)
            new_op = op
            if np.any(bias != 0):
                ann["synaptic_bias"] = np.asarray(bias, dtype=np.float64).tolist()
        for src, m in maps.items():
            dense_name = _dense_name(low, name, src, maps, taken)
            taken.add(dense_name)
            out.add_node(dense_name, LoihiDense(weight=m.toarray()), source=src,
                         merged=[k for k in merged if src in low.memo.get(k, ({},))[0]])
            pending.append((src, dense_name))
            pending.append((dense_name, name))
        out.add_node(name, new_op, **ann)
    for src, dst in pending:
        out.connect(src, dst)
    return out


def _dense_name(low: _Composer, sink: str, src: str, maps: Maps, taken: set[str]) -> str:
    """The linear node's own name when one linear node next to `sink` carries all of `src`'s input, takes
    input from `src` alone and feeds only `sink` (Affine 'fc1' -> LIF 'lif1' keeps 'fc1'; snntorch's RLeaky
    keeps 'w_rec'); otherwise '<sink>.syn' / '<sink>.syn.<src>'."""
    g = low.g
    preds = [e.src for e in g.in_edges(sink) if e.src in low.memo and src in low.memo[e.src][0]]
    if len(preds) == 1 and preds[0] not in taken and set(low.memo[preds[0]][0]) == {src}:
        if all(e.dst == sink for e in g.out_edges(preds[0])):
            return preds[0]
    base = f"{sink}.syn" if len(maps) == 1 else f"{sink}.syn.{src}"
    name, k = base, 1
    while name in taken or name in g.nodes:
        name, k = f"{base}{k}", k + 1
    return name
