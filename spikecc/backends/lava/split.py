"""Process-level expansion of a plan: each graph node becomes one Lava process, or several when its per-process
parameters differ between neurons (split by value, so that every process is one Loihi 2 neuron group).

Lava declares a LIF's du, dv and vth (TernaryLIF: vth_hi, vth_lo) with one value per process, `Var(shape=(1,))`,
and says so ("only a single threshold can be set for the entire population of neurons",
lava/proc/lif/process.py:50-51, 124, 269-270); bias, u and v are per neuron. Lava's Python models broadcast an
array there neuron by neuron, but Loihi 2 holds one value per process. A neuron node whose values differ is
split into value groups, each one process with scalar parameters:

    groups      neurons with equal (du, dv, thresholds), in order of their first neuron; a group's neurons
                need not be contiguous (a process's neurons are whatever its port's elements are)
    synapses    each LoihiDense feeding the node is cut by output rows, one row block per group (every row's
                sum stays whole: exact); each LoihiDense the node feeds is cut by input columns, one column
                block per group, whose partial sums meet again at the consumer's InPort, which adds the messages
                of all its channels (PyInPortVectorDense.recv, lava/magma/core/model/py/ports.py:333-351)
    between     a synapse layer between two split nodes becomes one block per (row group, column group); blocks
                whose weights are all zero are left out (they add nothing)
    recording   outputs and states are read per process and put back in the node's neuron order

A node's output is then the sum of its parts, each a process's out port placed at given element indices
(`Part`): the groups of a split neuron are disjoint, the column blocks of a synapse layer overlap and add.
A process reads every part of its producers whose indices equal its own input indices.

Exactness. Row blocks are exact in both modes. Column blocks add partial sums: exact in fixed point when the
layer's weight_exp >= 0 (a left shift distributes over the sum; a right shift floors each partial sum, so a
layer with weight_exp < 0 keeps its source whole), and in float up to the order of additions (rounding).
Lava's fixed-point Dense picks its sign mode from its own weights (lava/proc/dense/models.py:83-90,
lava/utils/weightutils.py:21-43), and the sign mode sets how many low bits are truncated; every block
therefore gets the whole layer's sign mode as the `sign_mode` parameter, so its weights are truncated as the
whole layer's are.

A node stays whole (and the generated module refuses Loihi2HwCfg for it) when its value groups cannot be wired
exactly: a producer that is not a synapse layer of its own, a consumer that is not a synapse layer, or a
consumer synapse layer that floors its sums (weight_exp < 0, fixed point). `why_whole` says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spikecc.backends.lava.lowering import ProcessSpec
from spikecc.errors import BackendError
from spikecc.ir.loihi_ops import groups_by_value

# lava.utils.weightutils.SignMode values (lava/utils/weightutils.py:13-18); Lava is not imported here
SIGN_MODES = {"MIXED": 1, "EXCITATORY": 2, "INHIBITORY": 3}


@dataclass(frozen=True, eq=False)
class Part:
    """One process's share of a node's output: the process (plan key) and the node's flat output elements its
    out port carries, in order (`index`; None: all of them, in order)."""

    process: str
    index: np.ndarray | None = None


@dataclass(frozen=True)
class ValueGroups:
    """How a neuron node was split: `groups` are the neuron indices of each process, `by` the parameters whose
    values differ between them."""

    node: str
    neurons: int
    groups: tuple[np.ndarray, ...]
    by: tuple[str, ...]


def value_groups(name: str, spec: ProcessSpec) -> ValueGroups:
    """The neurons of `spec` grouped by their per-process values (`spec.per_process_arrays`), groups in order
    of their first neuron, each group's indices ascending."""
    n = int(np.prod(spec.kwargs["shape"]))
    table = np.stack([np.asarray(spec.kwargs[k]).reshape(n) for k in spec.per_process_arrays], axis=1)
    return ValueGroups(name, n, tuple(groups_by_value(table)), tuple(spec.per_process_arrays))


def why_whole(name: str, specs: dict[str, ProcessSpec], connections: Sequence[tuple[str, str]], mode: str) \
        -> str | None:
    """Why the neuron node `name` cannot be split by value (None: it can). `connections` are the node-level
    (src, dst) pairs between process nodes."""
    for src, dst in connections:
        if dst == name:
            if specs[src].cls != "Dense":
                return (f"it takes '{src}' ({specs[src].cls}) straight in, not through a synapse layer whose rows "
                        "could follow its groups")
            other = next((d for s, d in connections if s == src and d != name), None)
            if other is not None:
                return f"its synapse layer '{src}' also feeds '{other}', so its rows cannot follow {name}'s groups"
        if src == name:
            if specs[dst].cls != "Dense":
                return (f"its spikes go straight to '{dst}' ({specs[dst].cls}), which cannot take them group by "
                        "group")
            exp = specs[dst].kwargs.get("weight_exp", 0)
            if mode == "fixed" and exp < 0:
                return (f"its synapse layer '{dst}' has weight_exp {exp} < 0, which floors each sum, so the sum "
                        "cannot be cut into per-group parts exactly")
    return None


def sign_mode(weights: np.ndarray) -> int:
    """Lava's sign mode of a fixed-point weight matrix (lava/utils/weightutils.py determine_sign_mode)."""
    if np.min(weights, initial=0) >= 0:
        return SIGN_MODES["EXCITATORY"]
    if np.max(weights, initial=0) <= 0:
        return SIGN_MODES["INHIBITORY"]
    return SIGN_MODES["MIXED"]


def _group_spec(spec: ProcessSpec, n: int, idx: np.ndarray) -> ProcessSpec:
    """The process of one value group: per-process values as scalars, per-neuron arrays at the group's neurons."""
    kwargs: dict[str, Any] = {}
    for k, v in spec.kwargs.items():
        if k == "shape":
            kwargs[k] = (int(idx.size),)
        elif k in spec.per_process_arrays:
            kwargs[k] = np.asarray(v).reshape(n)[idx[0]].item()
        elif isinstance(v, np.ndarray) and v.size == n:
            kwargs[k] = v.reshape(n)[idx]
        else:
            kwargs[k] = v
    return replace(spec, kwargs=kwargs, per_process_arrays=())


def _block_spec(spec: ProcessSpec, rows: np.ndarray | None, cols: np.ndarray | None, mode: str) -> ProcessSpec:
    w = spec.kwargs["weights"]
    block = w[rows] if rows is not None else w
    block = block[:, cols] if cols is not None else block
    kwargs = {**spec.kwargs, "weights": np.ascontiguousarray(block)}
    if mode == "fixed":
        kwargs["sign_mode"] = sign_mode(w)
    return replace(spec, kwargs=kwargs)


def expand(order: Sequence[str], specs: dict[str, ProcessSpec], connections: Sequence[tuple[str, str]],
           groups: dict[str, ValueGroups], mode: str) \
        -> tuple[dict[str, ProcessSpec], dict[str, list[Part]], list[tuple[str, str]]]:
    """The processes of the process nodes `order` (graph order), given node-level specs and connections and the
    value groups of the nodes to split: (process specs by key, parts by node, connections between processes).
    Without groups every node is one process keyed by its own name. Keys of split nodes and of the synapse
    blocks around them are `node[i]`."""
    producers: dict[str, list[str]] = {n: [] for n in order}
    consumers: dict[str, list[str]] = {n: [] for n in order}
    for src, dst in connections:
        producers[dst].append(src)
        consumers[src].append(dst)
    procs: dict[str, ProcessSpec] = {}
    parts: dict[str, list[Part]] = {}
    inputs: dict[str, list[tuple[str, np.ndarray | None]]] = {}  # node -> (process, the input elements it takes)

    def dense_blocks(name: str) -> None:
        """A synapse node's blocks: rows follow its split consumer's groups, columns its producers' parts (a
        synapse producer's parts are whole vectors: it feeds no split node, see why_whole)."""
        spec = specs[name]
        split_consumers = [c for c in consumers[name] if c in groups]
        row_sets = list(groups[split_consumers[0]].groups) if split_consumers else [None]
        found: dict[bytes | None, np.ndarray | None] = {}
        for src in producers[name]:
            for index in ([None] if specs[src].cls == "Dense" else [p.index for p in parts[src]]):
                found.setdefault(_key(index), index)
        col_sets = list(found.values()) or [None]
        if row_sets == [None] and col_sets == [None]:
            procs[name] = spec
            parts[name], inputs[name] = [Part(name, None)], [(name, None)]
            return
        parts[name], inputs[name] = [], []
        for rows in row_sets:
            for cols in col_sets:
                block = _block_spec(spec, rows, cols, mode)
                if not np.any(block.kwargs["weights"]):
                    continue
                key = f"{name}[{len(parts[name])}]"
                procs[key] = block
                parts[name].append(Part(key, rows))
                inputs[name].append((key, cols))

    for name in order:  # neurons, sources and relays first: a synapse block needs its producers' parts
        spec = specs[name]
        if spec.cls == "Dense":
            continue
        if name in groups:
            n = groups[name].neurons
            parts[name], inputs[name] = [], []
            for i, idx in enumerate(groups[name].groups):
                key = f"{name}[{i}]"
                procs[key] = _group_spec(spec, n, idx)
                parts[name].append(Part(key, idx))
                inputs[name].append((key, idx))
        else:
            procs[name] = spec
            parts[name] = [Part(name, None)]
            inputs[name] = [(name, None)]
    for name in order:
        if specs[name].cls == "Dense":
            dense_blocks(name)

    takers_of: dict[str, dict[bytes | None, list[str]]] = {}
    for name, entries in inputs.items():
        for process, want in entries:
            takers_of.setdefault(name, {}).setdefault(_key(want), []).append(process)
    links: list[tuple[str, str]] = []
    for src, dst in connections:
        for p in parts[src]:
            takers = takers_of[dst].get(_key(p.index), [])
            if not takers and specs[dst].cls != "Dense":  # why_whole keeps this from happening
                raise BackendError(f"node '{dst}': its input from '{src}' arrives in parts that none of its "
                                   "processes takes; report this as a spikecc bug")
            links.extend((p.process, t) for t in takers)
    ordered = {p.process: procs[p.process] for name in order for p in parts[name]}
    return ordered, parts, links


def _key(index: np.ndarray | None) -> bytes | None:
    """A dict key for a set of elements in order (None: all of them)."""
    return None if index is None else np.asarray(index, dtype=np.int64).tobytes()
