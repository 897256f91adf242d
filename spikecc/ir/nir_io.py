"""Read and write NIR HDF5 files, extension ops included.

`nir.read` knows only NIR's own node types and fails with a bare AssertionError on others. `read` here
walks the same HDF5 layout, builds spikecc's registered extension ops itself and hands standard node
dictionaries to `nir.dict2NIRNode`. `write` uses `nir.write`, so a graph of standard nodes written by
spikecc loads in plain `nir.read`.

Nested NIR sub-graphs are flattened (names joined with ".") and their inner Input/Output nodes are
bypassed; edges into `"sub.port"` of an extension op become `Edge(sub, port=...)`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import h5py
import nir
import numpy as np
from nir.serialization import hdf2dict

from spikecc.errors import GraphError, InputFileError, SpikeccWarning, UnknownOpError, first_line
from spikecc.files import atomic_file, check_fits_in_memory, mark_hdf5
from spikecc.ir.checks import check_values
from spikecc.ir.graph import Edge, Graph
from spikecc.ir.infer import complete_conv_input_shapes, unstable_time_constants
from spikecc.ir.ops import OP_REGISTRY, ExtensionOp

ANNOTATION_KEY = "spikecc"  # node.metadata[ANNOTATION_KEY] holds the node's annotations as JSON
# node classes only: nir.ir.__all__ also lists the helper functions str2NIRNode and dict2NIRNode
NIR_TYPES = frozenset(n for n in nir.ir.__all__
                      if isinstance(getattr(nir.ir, n), type) and issubclass(getattr(nir.ir, n), nir.NIRNode)) \
    - {"NIRNode"}


# Fields nir 1.0.8 requires that older NIR releases did not write (nir 0.2's Conv2d had no input_shape):
# read as None, which nir accepts, and filled in from the graph's shapes after loading.
OPTIONAL_IN_OLD_FILES = {"Conv1d": "input_shape", "Conv2d": "input_shape"}


# ------------------------------------------------------------------------------------------------
# nir.NIRGraph <-> Graph
# ------------------------------------------------------------------------------------------------
def from_nir(root: nir.NIRGraph, metadata: dict[str, Any] | None = None) -> Graph:
    """Flatten an `nir.NIRGraph` (possibly nested) into a Graph."""
    g = Graph(metadata=dict(metadata or {}))
    passthrough: set[str] = set()
    _flatten_into(g, root, prefix="", passthrough=passthrough)
    for name in passthrough:
        _bypass(g, name)
    for name, op in g.nodes.items():
        ann = (getattr(op, "metadata", None) or {}).get(ANNOTATION_KEY)
        if ann:
            g.annotations[name] = json.loads(ann)
    return g


def _flatten_into(g: Graph, sub: nir.NIRGraph, prefix: str, passthrough: set[str]) -> None:
    for name, op in sub.nodes.items():
        full = prefix + name
        if isinstance(op, nir.NIRGraph):
            _flatten_into(g, op, full + ".", passthrough)
        else:
            g.add_node(full, op)
            if prefix and isinstance(op, (nir.Input, nir.Output)):
                passthrough.add(full)
    for src, dst in sub.edges:
        src_name = _resolve(sub, prefix, src, want=nir.Output)
        dst_name, port = _resolve_dst(g, sub, prefix, dst)
        g.edges.append(Edge(src_name, dst_name, port))


def _resolve(sub: nir.NIRGraph, prefix: str, ref: str, want: type) -> str:
    """Name of the flattened node an edge endpoint refers to; a sub-graph stands for its only
    Input (as a destination) or Output (as a source)."""
    if ref in sub.nodes and isinstance(sub.nodes[ref], nir.NIRGraph):
        inner = sub.nodes[ref]
        ends = [n for n, op in inner.nodes.items() if isinstance(op, want)]
        if len(ends) != 1:
            raise GraphError(
                f"edge endpoint '{prefix}{ref}' is a sub-graph with {len(ends)} {want.__name__} nodes; "
                f"name the port as '{ref}.<{want.__name__.lower()} name>'")
        return _resolve(inner, f"{prefix}{ref}.", ends[0], want)
    head, _, rest = ref.partition(".")
    if rest and head in sub.nodes and isinstance(sub.nodes[head], nir.NIRGraph):
        return _resolve(sub.nodes[head], f"{prefix}{head}.", rest, want)
    return prefix + ref


def _resolve_dst(g: Graph, sub: nir.NIRGraph, prefix: str, ref: str) -> tuple[str, str]:
    # Node names may contain dots themselves ("blocks.0.att.wkv"), so the port is what follows the last one.
    head, _, port = ref.rpartition(".")
    if ref not in sub.nodes and head in sub.nodes and isinstance(sub.nodes[head], ExtensionOp) \
            and port in sub.nodes[head].input_ports:
        return prefix + head, port
    return _resolve(sub, prefix, ref, want=nir.Input), "input"


def _bypass(g: Graph, name: str) -> None:
    """Remove an identity node (a sub-graph's Input/Output), joining its sources to its targets."""
    ins = g.in_edges(name)
    outs = g.out_edges(name)
    g.edges = [e for e in g.edges if name not in (e.src, e.dst)]
    for i in ins:
        for o in outs:
            g.edges.append(Edge(i.src, o.dst, o.port))
    del g.nodes[name]


def to_nir(g: Graph) -> nir.NIRGraph:
    """The graph as a flat `nir.NIRGraph`; annotations go into each node's metadata as JSON."""
    nodes = {}
    for name, op in g.nodes.items():
        op = _shallow_copy(op)
        meta = dict(op.metadata or {})
        meta.pop(ANNOTATION_KEY, None)
        if g.annotations.get(name):
            meta[ANNOTATION_KEY] = json.dumps(g.annotations[name], sort_keys=True)
        op.metadata = meta
        nodes[name] = op
    edges = [(e.src, e.dst if e.port == "input" else f"{e.dst}.{e.port}") for e in g.edges]
    # HDF5 returns nodes sorted by name; the definition order (which breaks ties in the schedule)
    # travels in the graph metadata so a graph reads back exactly as it was written.
    graph_meta = dict(g.metadata, node_order=list(g.nodes))
    meta = {ANNOTATION_KEY: json.dumps(graph_meta, sort_keys=True)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _shallow_copy(op: nir.NIRNode) -> nir.NIRNode:
    clone = object.__new__(type(op))
    clone.__dict__.update(op.__dict__)
    return clone


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def read(path: str | os.PathLike, dt: float | None = None) -> Graph:
    """Read a NIR HDF5 file (standard nodes and registered spikecc extension ops) into a Graph.

    `dt`: the seconds one simulation step stands for. NIR files do not store it (a file spikecc wrote
    keeps its own in the graph metadata); None keeps the file's, else spikecc.ir.graph.DEFAULT_DT.
    Files from older NIR releases load too: a convolution without input_shape gets the one its input
    implies (spikecc.ir.infer.complete_conv_input_shapes). Warns (SpikeccWarning, one line per node) for
    neurons whose dt/tau makes forward Euler overshoot.
    """
    path = Path(path)
    if dt is not None and not (isinstance(dt, (int, float, np.floating)) and math.isfinite(dt) and dt > 0):
        raise InputFileError(f"dt = {dt!r}: the time step must be a positive number of seconds (e.g. 1e-4)")
    if not path.exists():
        raise InputFileError(f"{path}: no such file; give the path of a .nir file")
    if not path.is_file():
        raise InputFileError(f"{path}: not a file; give the path of a .nir file")
    tree = _read_tree(path)
    root = _node_from_dict(tree, name="", path=path)
    if not isinstance(root, nir.NIRGraph):
        raise InputFileError(f"{path}: the top-level node is a {type(root).__name__}, not a NIRGraph")
    try:
        meta = (root.metadata or {}).get(ANNOTATION_KEY)
        meta = json.loads(meta) if meta else {}
        if not isinstance(meta, dict):
            raise ValueError("graph metadata is not a JSON object")
        order = meta.pop("node_order", None)
        g = from_nir(root, metadata=meta)
    except (GraphError, InputFileError) as exc:
        raise InputFileError(f"{path}: {exc}") from None
    except Exception as exc:  # corrupt metadata or edges: JSON, types, names
        raise InputFileError(f"{path}: the graph's edges or metadata are unreadable ({first_line(exc)}); the file "
                             "may be corrupt") from None
    if isinstance(order, list) and set(order) == set(g.nodes):
        g.nodes = {n: g.nodes[n] for n in order}
    if dt is not None:
        g.metadata["dt"] = float(dt)
    try:
        check_values(g)
        complete_conv_input_shapes(g)
    except GraphError as exc:
        raise InputFileError(f"{path}: {exc}") from None
    for line in unstable_time_constants(g):
        warnings.warn(SpikeccWarning(f"{path}: {line}"), stacklevel=2)
    return g


def _read_tree(path: Path) -> dict[str, Any]:
    """The 'node' group of a NIR HDF5 file as nested dicts. Any failure inside h5py (a truncated or corrupt
    file raises OSError, RuntimeError, KeyError, ValueError... depending on where the damage is) becomes an
    InputFileError naming the file."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(
            f"{path}: not a readable HDF5 file ({first_line(exc)}); NIR files are HDF5, written by nir.write") from None
    try:
        with f:
            if "node" not in f:
                raise InputFileError(f"{path}: HDF5 file without a 'node' group, so not a NIR graph")
            _check_declared_size(path, f["node"])
            return hdf2dict(f["node"])
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: cannot read the NIR data ({first_line(exc)}); the file may be truncated or "
                             "corrupt") from None


def _check_declared_size(path: Path, group: h5py.Group) -> None:
    """The datasets' declared sizes, summed, must fit in memory (a corrupt header can declare terabytes)."""
    sizes: dict[str, int] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            sizes[name] = int(obj.size) * int(obj.dtype.itemsize)

    group.visititems(visit)
    if sizes:
        check_fits_in_memory(path, sum(sizes.values()), max(sizes, key=sizes.__getitem__))


def _node_from_dict(d: dict[str, Any], name: str, path: Path) -> nir.NIRNode:
    where = f"node '{name}'" if name else "the top-level node"
    kind = d.get("type")
    if kind is None:
        raise InputFileError(f"{path}: {where} has no 'type' field; the file is not a valid NIR graph")
    if not isinstance(kind, str):
        raise InputFileError(f"{path}: {where} has a 'type' field that is not a name (a {type(kind).__name__}); "
                             "the file is not a valid NIR graph")
    try:
        if kind == "NIRGraph":
            nodes = {k: _node_from_dict(v, f"{name}.{k}" if name else k, path) for k, v in d["nodes"].items()}
            edges = [(_str(a), _str(b)) for a, b in np.asarray(d.get("edges", np.empty((0, 2)))).reshape(-1, 2)]
            return nir.NIRGraph(nodes=nodes, edges=edges, metadata=d.get("metadata", {}), type_check=False)
        if kind in OP_REGISTRY:
            return OP_REGISTRY[kind].from_dict(d)
        if kind in NIR_TYPES:
            d = dict(d)
            if kind in OPTIONAL_IN_OLD_FILES:
                d.setdefault(OPTIONAL_IN_OLD_FILES[kind], None)
            return nir.dict2NIRNode(d)
    except (InputFileError, UnknownOpError):
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: {where} of type '{kind}' has bad or missing fields "
                             f"({first_line(exc)})") from None
    known = ", ".join(sorted(NIR_TYPES | set(OP_REGISTRY)))
    raise UnknownOpError(
        f"{path}: {where} has type '{kind}', which spikecc does not know; supported types: {known}")


def write(g: Graph, path: str | os.PathLike) -> None:
    """Write atomically (a temporary file beside `path`, renamed into place when complete), with spikecc's
    mark so that a later command may replace it (spikecc.files)."""
    with atomic_file(path) as tmp:
        nir.write(tmp, to_nir(g))
        mark_hdf5(tmp)


def _str(x: Any) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)
