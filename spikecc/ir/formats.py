"""Number formats, one per node: a language model is fixed point on its neuro-cores and float on the host, in one
graph, so the format is a node's property, not the graph's.

A node's annotation `format` says how its parameters and its output values are to be read:

    absent or {"kind": "float"}     reals (float64 in the CPU simulator, Lava's floating_pt models)
    {"kind": "fixed", ...widths}    integers in Loihi 2's widths (spikecc.ir.loihi_spec), run bit-accurately
                                    (Lava's fixed_pt models); widths recorded: "weight_bits", "state_bits",
                                    "message_bits" where they apply

The quantize pass sets it; backends read it per node (`is_fixed_node`).
"""

from __future__ import annotations

from typing import Any

from spikecc.ir.graph import Graph

FLOAT = "float"
FIXED = "fixed"


def fixed_format(**widths: int) -> dict[str, Any]:
    return {"kind": FIXED, **{k: int(v) for k, v in widths.items()}}


def format_of(annotations: dict[str, Any]) -> str:
    """The format kind a node's annotations declare (a graph written by spikecc 0.1 says `fixed_point: true`)."""
    fmt = annotations.get("format")
    if isinstance(fmt, dict) and fmt.get("kind") in (FLOAT, FIXED):
        return fmt["kind"]
    return FIXED if annotations.get("fixed_point") else FLOAT


def is_fixed_node(g: Graph, name: str) -> bool:
    return format_of(g.annotations.get(name, {})) == FIXED


def is_fixed(g: Graph) -> bool:
    """True when any node of `g` is in fixed point (the graph was quantized)."""
    return any(format_of(a) == FIXED for a in g.annotations.values())
