"""Place cores onto chips, and chips onto the board's chip mesh, so that heavy spike traffic stays on a chip.

Two methods (nengo-loihi hardware/allocators.py has the same pair: Greedy and PartitionInterchip):

    greedy     cores in layer order fill chip 0, then chip 1, ... (Lava's mapper: chip = core_id // cores)
    metis      the core graph, edges weighted by messages per step (activity-weighted), cut into as many
               parts as chips by METIS (pymetis; fixed seed, so deterministic), parts over a chip's capacity
               repaired by moving their least-connected cores, parts laid on the chip mesh heaviest-first
    auto       both; keeps the one that sends fewer messages between chips (ties: greedy)

Messages between chips follow X-Y routing over the chip mesh (`board.chip_cols` chips per row, filled row by row;
where the last row is only partly filled and the x leg would cross an empty position, y first); on a chip,
cores sit on routers of `chip.cores_per_router` cores in rows of `chip.router_cols` routers.
Everything here is linear in cores and edges; only the arrangement of parts on the mesh looks at chip pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spikecc.compiler.mapping.target import Target

METHODS = ("auto", "greedy", "metis")
WEIGHT_RANGE = 100_000  # METIS takes integer edge weights: messages scaled to 1..WEIGHT_RANGE+1


@dataclass
class CoreEdges:
    """Core -> core traffic per step, one entry per ordered pair of distinct cores."""

    src: np.ndarray
    dst: np.ndarray
    msgs: np.ndarray
    bits: np.ndarray


@dataclass
class Placement:
    method: str
    chip_of: np.ndarray  # (cores,) chip of each core
    slot: np.ndarray  # (cores,) position of each core on its chip
    chip_xy: np.ndarray  # (chips, 2) mesh position of each chip
    interchip_msgs: float  # messages per step between cores on different chips
    interchip_hop_msgs: float  # the same, times chip hops travelled
    link_bits: dict[tuple[int, int], float]  # (chip a, chip b) directed neighbour link -> bits per step
    alternatives: dict[str, float]  # method -> its interchip_msgs (auto: both)


def core_edges(core_of_frag: np.ndarray, src: np.ndarray, dst: np.ndarray, msgs: np.ndarray,
               bits: np.ndarray, n_cores: int) -> tuple[CoreEdges, float, float]:
    """Fragment edges summed per ordered core pair; also (messages, bits) that stay inside a core."""
    cs, cd = core_of_frag[src], core_of_frag[dst]
    inside = cs == cd
    key = cs[~inside].astype(np.int64) * max(n_cores, 1) + cd[~inside]
    uniq, inv = np.unique(key, return_inverse=True)
    m = np.bincount(inv, weights=msgs[~inside], minlength=uniq.size)
    b = np.bincount(inv, weights=bits[~inside], minlength=uniq.size)
    edges = CoreEdges(uniq // max(n_cores, 1), uniq % max(n_cores, 1), m, b)
    return edges, float(msgs[inside].sum()), float(bits[inside].sum())


def greedy(n_cores: int, per_chip: int) -> np.ndarray:
    return np.arange(n_cores, dtype=np.int64) // per_chip


def metis(n_cores: int, edges: CoreEdges, n_chips: int, per_chip: int, seed: int = 0) -> np.ndarray:
    """Parts from METIS on the undirected core graph, then capacity repair."""
    import pymetis

    if n_chips <= 1 or n_cores == 0:
        return np.zeros(n_cores, dtype=np.int64)
    a, b = np.minimum(edges.src, edges.dst), np.maximum(edges.src, edges.dst)
    key = a * n_cores + b
    uniq, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weights=edges.msgs, minlength=uniq.size)
    ua, ub = uniq // n_cores, uniq % n_cores
    top = w.max(initial=0.0)
    wi = 1 + np.rint(w / top * WEIGHT_RANGE).astype(np.int64) if top > 0 else np.ones(w.size, dtype=np.int64)
    # both directions, sorted by vertex: the CSR adjacency METIS reads
    s = np.r_[ua, ub]
    t = np.r_[ub, ua]
    ww = np.r_[wi, wi]
    order = np.lexsort((t, s))
    s, t, ww = s[order], t[order], ww[order]
    xadj = np.r_[0, np.cumsum(np.bincount(s, minlength=n_cores))]
    adjacency = pymetis.CSRAdjacency(xadj.tolist(), t.tolist())
    _, parts = pymetis.part_graph(n_chips, adjacency=adjacency, eweights=ww.tolist(),
                                  options=pymetis.Options(seed=seed, ufactor=1))
    parts = np.asarray(parts, dtype=np.int64)
    return _repair(parts, xadj, t, ww, n_chips, per_chip)


def _repair(parts: np.ndarray, xadj: np.ndarray, adj: np.ndarray, w: np.ndarray, k: int, cap: int) -> np.ndarray:
    """Move cores out of parts above `cap`: the least-connected to their own part first, each to the part with
    room it talks to most (else the emptiest). Deterministic, O(cores log cores + edges)."""
    parts = parts.copy()
    size = np.bincount(parts, minlength=k)
    if size.max(initial=0) <= cap:
        return parts
    owner = np.repeat(np.arange(parts.size), np.diff(xadj))
    internal = np.bincount(owner, weights=w * (parts[owner] == parts[adj]), minlength=parts.size)
    for p in np.flatnonzero(size > cap):
        members = np.flatnonzero(parts == p)
        members = members[np.lexsort((members, internal[members]))]  # least internal weight first
        for v in members[: size[p] - cap]:
            nb = adj[xadj[v]:xadj[v + 1]]
            gain = np.bincount(parts[nb], weights=w[xadj[v]:xadj[v + 1]], minlength=k)
            gain[size >= cap] = -1
            gain[p] = -1
            q = int(np.argmax(gain)) if gain.max() > 0 else int(np.argmin(np.where(size >= cap, np.iinfo(np.int64).max,
                                                                                       size)))
            parts[v] = q
            size[p] -= 1
            size[q] += 1
    return parts


def arrange(chip_of: np.ndarray, edges: CoreEdges, n_chips: int, cols: int, ordered: bool) -> np.ndarray:
    """Mesh position (x, y) of each chip. `ordered` (greedy): chip i at position i, row-major. Otherwise parts
    are laid heaviest-first, each at the free position nearest (in traffic x hops) to the parts already laid;
    for more than 64 chips, in part order."""
    slots = np.array([(i % cols, i // cols) for i in range(n_chips)], dtype=np.int64).reshape(-1, 2)
    if ordered or n_chips > 64 or n_chips <= 1:
        return slots
    ca, cb = chip_of[edges.src], chip_of[edges.dst]
    m = np.zeros((n_chips, n_chips))
    np.add.at(m, (ca, cb), edges.msgs)
    m = m + m.T
    np.fill_diagonal(m, 0.0)
    pos = np.full((n_chips, 2), -1, dtype=np.int64)
    free = list(range(n_chips))
    placed: list[int] = []
    for _ in range(n_chips):
        rest = [c for c in range(n_chips) if pos[c, 0] < 0]
        pull = m[np.ix_(rest, placed)].sum(axis=1) if placed else m[rest].sum(axis=1)
        c = rest[int(np.argmax(pull))]
        if placed:
            cost = [float((m[c, placed] * np.abs(slots[s] - pos[placed]).sum(axis=1)).sum()) for s in free]
            s = free[int(np.argmin(cost))]
        else:
            s = free[0]
        pos[c] = slots[s]
        free.remove(s)
        placed.append(c)
    return pos


def chip_routes(chip_of: np.ndarray, chip_xy: np.ndarray, edges: CoreEdges) -> tuple[float, float, dict]:
    """(messages between chips, the same times chip hops, bits per step on each directed chip link) with X-Y
    routing: along x first, then y."""
    ca, cb = chip_of[edges.src], chip_of[edges.dst]
    cross = ca != cb
    if not np.any(cross):
        return 0.0, 0.0, {}
    n = len(chip_xy)
    key = ca[cross] * n + cb[cross]
    uniq, inv = np.unique(key, return_inverse=True)
    msgs = np.bincount(inv, weights=edges.msgs[cross])
    bits = np.bincount(inv, weights=edges.bits[cross])
    hops = np.abs(chip_xy[uniq // n] - chip_xy[uniq % n]).sum(axis=1)
    where = {tuple(xy): i for i, xy in enumerate(chip_xy.tolist())}
    links: dict[tuple[int, int], float] = {}
    for (a, b_), bb in zip(zip(uniq // n, uniq % n), bits):
        (x, y), (x2, y2) = chip_xy[a], chip_xy[b_]
        path = [(xx, y) for xx in _walk(x, x2)] + [(x2, yy) for yy in _walk(y, y2)[1:]]
        if any(p not in where for p in path):  # a partly filled last mesh row: y first, then x
            path = [(x, yy) for yy in _walk(y, y2)] + [(xx, y2) for xx in _walk(x, x2)[1:]]
        for p, q in zip(path[:-1], path[1:]):
            link = (where[p], where[q])
            links[link] = links.get(link, 0.0) + float(bb)
    return float(msgs.sum()), float((msgs * hops).sum()), links


def _walk(a: int, b: int) -> list[int]:
    step = 1 if b >= a else -1
    return list(range(a, b + step, step))


def slots_on_chip(chip_of: np.ndarray) -> np.ndarray:
    """Each core's position on its chip: cores of a chip in core order."""
    order = np.lexsort((np.arange(chip_of.size), chip_of))
    slot = np.empty(chip_of.size, dtype=np.int64)
    counts = np.bincount(chip_of)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot[order] = np.arange(chip_of.size) - np.repeat(starts, counts)
    return slot


def place(n_cores: int, edges: CoreEdges, target: Target, n_chips: int, method: str = "auto") -> Placement:
    if method not in METHODS:
        raise ValueError(f"placement must be one of {METHODS}, not {method!r}")
    per_chip = int(target["chip.cores"])
    cols = int(target["board.chip_cols"])
    n_chips = max(n_chips, math.ceil(n_cores / per_chip), 1)
    tried = {}
    for m in (("greedy", "metis") if method == "auto" else (method,)):
        chip_of = greedy(n_cores, per_chip) if m == "greedy" else metis(n_cores, edges, n_chips, per_chip)
        chip_xy = arrange(chip_of, edges, n_chips, cols, ordered=m == "greedy")
        msgs, hop_msgs, links = chip_routes(chip_of, chip_xy, edges)
        tried[m] = Placement(method=m, chip_of=chip_of, slot=slots_on_chip(chip_of) if n_cores else chip_of,
                             chip_xy=chip_xy, interchip_msgs=msgs, interchip_hop_msgs=hop_msgs, link_bits=links,
                             alternatives={})
    best = min(tried.values(), key=lambda p: (p.interchip_msgs, p.method != "greedy"))
    best.alternatives = {m: p.interchip_msgs for m, p in tried.items()}
    return best
