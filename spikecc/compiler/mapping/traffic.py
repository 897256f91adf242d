"""Per-step work and messages of every fragment, from the connections and the activity.

For a row r of a source with rate p_r (events per step) reaching fragment f with c synapses:

    synaptic operations of f   += p_r * c          (each event touches the row's synapses on that core)
    messages source -> f       += p_r              (one message per event per destination core)

A fragment's neurons generate sum(rate) spikes per step; those of a layer read by the host each cross the
host boundary once. Message size on a link = the target's spike message bits + the payload bits of the
receiving synapses (0 for binary spikes; graded payloads, partial sums).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikecc.compiler.mapping.split import SplitResult
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
    axons: np.ndarray  # (E,) source neurons on the edge (output axons it takes)


def fragment_traffic(split: SplitResult, target: Target) -> Traffic:
    frags = split.fragments
    F = len(frags)
    head = float(target["message.spike_bits"])
    index = {id(f): i for i, f in enumerate(frags)}
    pops = {p.name: p for p in split.populations}
    starts = {name: np.array([f.lo for f in p.fragments] + [p.n]) for name, p in pops.items()}
    first = {name: index[id(p.fragments[0])] if p.fragments else 0 for name, p in pops.items()}
    synops, host_in, host_in_bits = np.zeros(F), np.zeros(F), np.zeros(F)
    spikes = np.array([float(f.pop.rate[f.lo:f.hi].sum()) for f in frags])
    host_out = np.array([float(f.pop.rate[f.lo:f.hi].sum()) if f.pop.to_host else 0.0 for f in frags])
    host_out_bits = np.array([(head + (f.pop.host_bits or 0)) * host_out[i] for i, f in enumerate(frags)])
    keys, msgs, bits, axons = [], [], [], []
    for c in split.connections:
        rate = (c.rate if c.from_host else pops[c.source].rate)[c.rows] if c.rows.size else np.zeros(0)
        synops += np.bincount(c.frags, weights=rate * c.counts, minlength=F)
        size = head + c.bits
        if c.from_host:
            m = np.bincount(c.frags, weights=rate, minlength=F)
            host_in += m
            host_in_bits += m * size
            continue
        src = first[c.source] + np.searchsorted(starts[c.source], c.rows, side="right") - 1
        keys.append(src.astype(np.int64) * F + c.frags)
        msgs.append(rate)
        bits.append(rate * size)
        axons.append(np.ones(rate.size))
    if keys:
        k = np.concatenate(keys)
        uniq, inv = np.unique(k, return_inverse=True)
        red = [np.bincount(inv, weights=np.concatenate(v), minlength=uniq.size) for v in (msgs, bits, axons)]
    else:
        uniq = np.zeros(0, dtype=np.int64)
        red = [np.zeros(0)] * 3
    return Traffic(synops=synops, spikes=spikes, host_in=host_in, host_in_bits=host_in_bits, host_out=host_out,
                   host_out_bits=host_out_bits, src=uniq // max(F, 1), dst=uniq % max(F, 1), msgs=red[0],
                   bits=red[1], axons=red[2])
