"""Target profiles: the resources of a neuromorphic chip, as data, each number with its source and confidence.

Built-in profiles ship as TOML files next to this module (`targets/loihi2.toml`, `targets/loihi1.toml`); a user's
profile is a TOML file given by path. Every figure is a table:

    [core.neurons]
    value = 4096
    confidence = "inferred"            # documented | measured | inferred
    source = "where the number comes from"

A user profile may start from a built-in one and change only some figures:

    [target]
    name = "my-loihi2"
    base = "loihi2"                    # or the path of another profile
    [core.synmem_units]
    value = 6000                       # source/confidence optional: they default to "this file" / "user"

`SCHEMA` lists every figure the mapper reads, its type and what it means. Loading checks all of them and raises
`TargetError` (one line naming the file and the figure) on anything missing or malformed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikecc.errors import InputFileError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TARGETS_DIR = Path(__file__).parent / "targets"
CONFIDENCES = ("documented", "measured", "inferred", "user")


class TargetError(InputFileError):
    """A target profile is missing, unreadable or malformed."""


# key -> (type, minimum, meaning). int figures must be integers; float figures any real >= minimum.
SCHEMA: dict[str, tuple[type, float, str]] = {
    "chip.cores": (int, 1, "neuro-cores per chip that the mapper may use"),
    "chip.physical_cores": (int, 1, "neuro-cores per chip in silicon"),
    "chip.cores_per_router": (int, 1, "cores that share one mesh router"),
    "chip.router_cols": (int, 1, "routers per row of the on-chip mesh"),
    "board.chips": (int, 1, "chips per board"),
    "board.chip_cols": (int, 1, "chips per row of the chip mesh"),
    "core.neurons": (int, 1, "neurons (compartments) per core"),
    "core.neuron_groups": (int, 1, "neuron groups (populations or slices of one) per core"),
    "core.axons_in": (int, 1, "input axons (rows of synaptic memory) per core"),
    "core.axons_out": (int, 1, "output axons (neuron -> destination core routes) per core"),
    "core.synmem_units": (float, 1, "synaptic memory per core, in the units of the synapse figures"),
    "synapse.row_overhead_units": (float, 0, "synaptic memory per stored row (input axon) per core"),
    "synapse.units_per_bit": (float, 0, "synaptic memory per stored weight bit"),
    "synapse.chunk_synapses": (int, 0, "synapses per row chunk with its own header (0: no chunks)"),
    "synapse.chunk_overhead_bits": (int, 0, "header bits per chunk"),
    "synapse.word_bits": (int, 0, "chunks are rounded up to words of this many bits (0: no rounding)"),
    "synapse.min_index_bits": (int, 0, "smallest neuron index stored with each sparse synapse"),
    "synapse.max_weight_bits": (int, 1, "largest weight mantissa in bits"),
    "message.graded_bits": (int, 0, "largest graded-spike payload in bits (0: binary spikes only)"),
    "message.partial_sum_bits": (int, 0, "payload of the graded messages that carry partial sums"),
    "message.spike_bits": (int, 1, "bits one spike message occupies on a link"),
    "message.max_delay": (int, 0, "longest synaptic delay in steps"),
    "time.synop_ns": (float, 0, "time per synaptic operation"),
    "time.neuron_ns": (float, 0, "time per neuron update"),
    "time.spike_ns": (float, 0, "extra time per neuron that spikes"),
    "time.message_ns": (float, 0, "time per message a core sends"),
    "time.barrier_ns": (float, 0, "time of the end-of-step barrier"),
    "link.core_gbytes_per_s": (float, 1e-12, "bandwidth of one core's network port"),
    "link.chip_gbytes_per_s": (float, 1e-12, "bandwidth between neighbouring chips"),
    "link.host_gbytes_per_s": (float, 1e-12, "bandwidth between host and board"),
    "energy.synop_pj": (float, 0, "energy per synaptic operation"),
    "energy.neuron_pj": (float, 0, "energy per neuron update"),
    "energy.spike_pj": (float, 0, "energy per spike generated"),
    "energy.message_pj": (float, 0, "energy per message sent"),
    "energy.hop_pj": (float, 0, "energy per on-chip mesh hop"),
    "energy.chip_hop_pj": (float, 0, "energy per chip-to-chip hop"),
    "energy.static_w_per_chip": (float, 0, "static power per chip"),
}


@dataclass(frozen=True)
class Figure:
    value: float
    confidence: str
    source: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    path: str  # the file it was read from ("<builtin>/loihi2.toml" for shipped profiles)
    figures: dict[str, Figure]

    def __getitem__(self, key: str) -> float:
        return self.figures[key].value

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "path": self.path,
                "figures": {k: {"value": f.value, "confidence": f.confidence, "source": f.source}
                            for k, f in sorted(self.figures.items())}}


def builtin_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name_or_path: str | os.PathLike) -> Target:
    """A target by built-in name (`loihi2`, `loihi1`) or by the path of a TOML profile."""
    return _load(str(name_or_path), seen=())


def _resolve(name_or_path: str) -> tuple[Path, str]:
    if name_or_path in builtin_targets():
        return TARGETS_DIR / f"{name_or_path}.toml", f"<builtin>/{name_or_path}.toml"
    path = Path(name_or_path)
    if not path.exists():
        raise TargetError(f"unknown target '{name_or_path}': not a built-in profile "
                          f"({', '.join(builtin_targets())}) and no such file; give a name or a .toml path")
    return path, str(path)


def _load(name_or_path: str, seen: tuple[str, ...]) -> Target:
    path, shown = _resolve(name_or_path)
    if str(path.resolve()) in seen:
        raise TargetError(f"{shown}: profiles name each other as base in a loop; remove one `base`")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TargetError(f"{shown}: not a valid TOML profile ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{shown}: cannot read the profile ({exc})") from None
    head = data.get("target", {})
    if not isinstance(head, dict) or not isinstance(head.get("name", ""), str):
        raise TargetError(f"{shown}: [target] must be a table with a string `name`")
    figures: dict[str, Figure] = {}
    base = head.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise TargetError(f"{shown}: [target] base must be a profile name or path, got {base!r}")
        base_ref = base if base in builtin_targets() else str(path.parent / base)
        figures.update(_load(base_ref, seen + (str(path.resolve()),)).figures)
    user = not shown.startswith("<builtin>")
    for section, table in data.items():
        if section == "target":
            continue
        if not isinstance(table, dict):
            raise TargetError(f"{shown}: [{section}] must be a table of figures")
        for key, entry in table.items():
            full = f"{section}.{key}"
            if full not in SCHEMA:
                raise TargetError(f"{shown}: unknown figure [{full}]; known figures: {', '.join(SCHEMA)}")
            figures[full] = _figure(shown, full, entry, user)
    missing = [k for k in SCHEMA if k not in figures]
    if missing:
        raise TargetError(f"{shown}: missing figure(s) {', '.join('[' + k + ']' for k in missing)}; "
                          "add them or set [target] base = \"loihi2\"")
    name = head.get("name") or path.stem
    return Target(name=name, description=str(head.get("description", "")), path=shown, figures=figures)


def _figure(shown: str, key: str, entry: Any, user: bool) -> Figure:
    """One figure of a profile; an override replaces an inherited figure whole, source included."""
    if not isinstance(entry, dict) or "value" not in entry:
        raise TargetError(f"{shown}: [{key}] must be a table with `value` (and `source`, `confidence`)")
    kind, minimum, meaning = SCHEMA[key]
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise TargetError(f"{shown}: [{key}] value must be {'an integer' if kind is int else 'a number'} "
                          f"({meaning}), got {value!r}")
    if value != value or value < minimum or value in (float("inf"), float("-inf")):
        raise TargetError(f"{shown}: [{key}] value {value!r} must be finite and at least {minimum:g} ({meaning})")
    default_conf = "user" if user else None
    confidence = entry.get("confidence", default_conf)
    if confidence not in CONFIDENCES:
        raise TargetError(f"{shown}: [{key}] confidence must be one of {', '.join(CONFIDENCES[:3])}, "
                          f"got {confidence!r}")
    source = entry.get("source", f"set in {shown}" if user else None)
    if not isinstance(source, str) or not source.strip():
        raise TargetError(f"{shown}: [{key}] needs a `source` saying where the number comes from")
    return Figure(value=kind(value), confidence=confidence, source=source)
