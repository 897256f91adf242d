"""Signal types carried by edges: what travels from one node to the next at each time step.

- binary:  s in {0, 1}                    (LIF spikes; Loihi 2 binary spike messages)
- ternary: s in {-a, 0, +a}               (SpikeLM's elastic bi-spikes; a is the amplitude)
- graded:  s = scale * q, q integer in [-(2^(bits-1)), 2^(bits-1) - 1]  (Loihi 2 graded spikes)
- real:    any float                      (host-side values: LayerNorm outputs, logits, currents)

Spiking kinds are what makes synaptic work event-driven: a synapse layer fed by a spiking signal only
touches the weight rows of inputs that are non-zero in that step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

SignalKind = Literal["binary", "ternary", "graded", "real"]


@dataclass(frozen=True)
class Signal:
    kind: SignalKind = "real"
    amplitude: float = 1.0  # ternary: the spike magnitude a
    bits: int = 0  # graded: payload bits
    scale: float = 1.0  # graded: value of one payload unit

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "ternary", "graded", "real"):
            raise ValueError(f"unknown signal kind {self.kind!r}")

    @property
    def is_spiking(self) -> bool:
        """True where most entries are zero in a step, so event-driven gathering pays."""
        return self.kind != "real"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Signal:
        return cls(**json.loads(text))

    def __str__(self) -> str:
        if self.kind == "ternary":
            return f"ternary(a={self.amplitude:g})"
        if self.kind == "graded":
            return f"graded({self.bits}b x {self.scale:g})"
        return self.kind


BINARY = Signal("binary")
REAL = Signal("real")


def ternary(amplitude: float) -> Signal:
    return Signal("ternary", amplitude=float(amplitude))


def graded(bits: int, scale: float = 1.0) -> Signal:
    return Signal("graded", bits=int(bits), scale=float(scale))
