"""message-widths: how many payload bits each LoihiDense's input messages carry.

    source                                  num_message_bits
    binary spikes (LIF, IF, Threshold ...)  0 (a binary spike message; Lava's Dense casts input to bool)
    LoihiTernaryLIF (+1 / -1)               TERNARY_MESSAGE_BITS = 2, so that -1 is not read as +1
    Input with signal binary                0
    Input with signal graded(bits)          bits
    Input with real values                  GRADED_MAX_BITS, a graded placeholder that quantize narrows to
                                            its input_bits
    HostToCore (language models)            its bits (0 for spikes from the host)
    SpikeRouter                             0 when split into polarity channels, else 2 (signed unit spikes);
                                            its payload bits with graded amplitudes
    LoihiElastic (unit +-1 spikes)          TERNARY_MESSAGE_BITS
    LoihiRelay                              its message_bits

Invariant: no value changes; Lava's Dense with these widths delivers what the float graph computes.
"""

from __future__ import annotations

import nir

from spikecc.compiler.passes.analysis import Analysis, analysis_of
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiTernaryLIF
from spikecc.ir.loihi_spec import GRADED_MAX_BITS, TERNARY_MESSAGE_BITS
from spikecc.ir.neurocore_ops import HostToCore, LoihiElastic, LoihiRelay, SpikeRouter


def message_bits(g: Graph, a: Analysis, src: str) -> int:
    op = g.nodes[src]
    if isinstance(op, (LoihiTernaryLIF, LoihiElastic)):
        return TERNARY_MESSAGE_BITS
    if isinstance(op, HostToCore):
        return int(op.bits)
    if isinstance(op, SpikeRouter):
        if op.graded:
            return int(op.payload_bits)
        return 0 if op.split else TERNARY_MESSAGE_BITS
    if isinstance(op, LoihiRelay):
        return int(op.message_bits)
    if isinstance(op, nir.Input):
        sig = a.signals[src]
        if sig.kind == "binary":
            return 0
        if sig.kind == "graded" and sig.bits > 0:
            return int(sig.bits)
        return GRADED_MAX_BITS
    return 0


def message_widths(g: Graph, a: Analysis | None = None) -> Graph:
    """A new graph whose LoihiDense nodes carry the message width of their source (module docstring)."""
    a = analysis_of(g, a)
    out = g.copy()
    for name, op in out.nodes.items():
        if isinstance(op, LoihiDense):
            (src,) = g.predecessors(name)
            op.num_message_bits = message_bits(g, a, src)
    return out
