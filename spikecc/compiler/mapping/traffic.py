"""Per-step work and messages of every fragment, from the connections and the activity.

For a row r of a source with rate p_r (events per step) reaching fragment f with c synapses (a routed row:
the router's rate for that row, sent from the fragment of the neuron it belongs to, network.py):

    synaptic operations of f   += p_r * c          (each event touches the row's synapses on that core)
    messages to f's core       += p_r              (one message per event per destination core: the row is one
                                                    input axon of that core, whichever of its fragments it feeds)

A row reaching several fragments on one core sends one message there, counted on the edge to the first of
them (the same (row, core) pairs that pack.py counts as output axons). A fragment's neurons generate
sum(rate) spikes per step; those of a layer read by the host each cross the host boundary once. Message size on
a link = the target's spike message bits + the payload bits of the receiving synapses (0 for binary spikes;
graded payloads, partial sums).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikecc.compiler.mapping.split import SplitResult, axon_offsets
from spikecc.compiler.mapping.target import Target


@dataclass
class Traffic:
    synops: np.ndarray  # (F,) per fragment, per step
    spikes: np.ndarray  # (F,) events its neurons generate per step
    host_in: np.ndarray  # (F,) messages from the host per step
    host_in_bits: np.ndarray  # (F,)
    host_out: np.ndarray  # (F,) messages to the host per step
    host_out_bits: np.ndarray  # (F,)
    src: np.ndarray  # (E,) fragment -> fragment edges
    dst: np.ndarray
    msgs: np.ndarray  # (E,) messages per step
    bits: np.ndarray  # (E,) bits per step (messages x message size)
    axons: np.ndarray  # (E,) source rows on the edge (output axons it takes)


def _first_per_core(axon: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Mask of the entries that are the first of their (axon, core) pair."""
    keep = np.zeros(axon.size, dtype=bool)
    if axon.size:
        key = axon.astype(np.int64) * (int(core.max()) + 1) + core
        keep[np.unique(key, return_index=True)[1]] = True
    return keep


def fragment_traffic(split: SplitResult, target: Target) -> Traffic:
    frags = split.fragments
    F = len(frags)
    head = float(target["message.spike_bits"])
    index = {id(f): i for i, f in enumerate(frags)}
    frag_core = np.array([f.core for f in frags], dtype=np.int64)
    pops = {p.name: p for p in split.populations}
    starts = {name: np.array([f.lo for f in p.fragments] + [p.n]) for name, p in pops.items()}
    first = {name: index[id(p.fragments[0])] if p.fragments else 0 for name, p in pops.items()}
    offsets = axon_offsets(split.connections)
    synops = np.zeros(F)
    spikes = np.array([float(f.pop.rate[f.lo:f.hi].sum()) for f in frags])
    host_out = np.array([float(f.pop.rate[f.lo:f.hi].sum()) if f.pop.to_host else 0.0 for f in frags])
    host_out_bits = np.array([(head + (f.pop.host_bits or 0)) * host_out[i] for i, f in enumerate(frags)])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("axon", "dst", "src", "rate", "size", "host")}
    for c in split.connections:
        rate = (c.rate if c.rate is not None else pops[c.source].rate)[c.rows] if c.rows.size else np.zeros(0)
        synops += np.bincount(c.frags, weights=rate * c.counts, minlength=F)
        src = np.full(c.rows.size, -1, dtype=np.int64) if c.from_host else \
            first[c.source] + np.searchsorted(starts[c.source], c.neurons, side="right") - 1
        for k, v in (("axon", offsets[c.axons] + c.rows), ("dst", c.frags), ("src", src), ("rate", rate),
                     ("size", np.full(c.rows.size, head + c.bits)), ("host", np.full(c.rows.size, c.from_host))):
            parts[k].append(np.asarray(v))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    dst = cat["dst"].astype(np.int64)
    keep = _first_per_core(cat["axon"].astype(np.int64), frag_core[dst]) if dst.size else np.zeros(0, dtype=bool)
    host = cat["host"].astype(bool) & keep
    host_in = np.bincount(dst[host], weights=cat["rate"][host], minlength=F)
    host_in_bits = np.bincount(dst[host], weights=(cat["rate"] * cat["size"])[host], minlength=F)
    chip = ~cat["host"].astype(bool) & keep
    k = cat["src"][chip].astype(np.int64) * max(F, 1) + dst[chip]
    uniq, inv = np.unique(k, return_inverse=True)
    red = [np.bincount(inv, weights=v[chip], minlength=uniq.size)
           for v in (cat["rate"], cat["rate"] * cat["size"], np.ones(dst.size))]
    return Traffic(synops=synops, spikes=spikes, host_in=host_in, host_in_bits=host_in_bits, host_out=host_out,
                   host_out_bits=host_out_bits, src=uniq // max(F, 1), dst=uniq % max(F, 1), msgs=red[0],
                   bits=red[1], axons=red[2])
