"""What passes ask of a graph (shapes, signal kinds, the schedule), computed once per graph and handed along.

`run_passes` builds one `Analysis` per graph on the spine: the analysis of a pass's output validates it and is
the next pass's input, so a compile infers shapes once per pass, not once per question a pass asks.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from spikecc.ir.graph import Edge, Graph
from spikecc.ir.infer import infer_shapes, infer_signals
from spikecc.ir.signals import Signal


class Analysis:
    """Lazily computed facts about one graph; valid while the graph is not changed."""

    def __init__(self, g: Graph) -> None:
        self.g = g

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return infer_shapes(self.g)

    @cached_property
    def signals(self) -> dict[str, Signal]:
        return infer_signals(self.g)

    @cached_property
    def schedule(self) -> tuple[list[str], list[Edge]]:
        return self.g.schedule()

    def size(self, name: str) -> int:
        return int(np.prod(self.shapes[name]))

    def rows(self, name: str) -> int:
        """Rows of a value of shape (..., n) with several axes (spikecc.ir.rows: an encoder's sequence), else 1."""
        shape = self.shapes[name]
        return int(np.prod(shape[:-1])) if len(shape) > 1 else 1

    def width(self, name: str) -> int:
        """Values per row (`rows`): the last axis of a multi-axis value, else all of them."""
        return self.size(name) // self.rows(name)


def analysis_of(g: Graph, a: Analysis | None) -> Analysis:
    """`a` if it describes `g`, else a fresh Analysis (a pass called on its own, outside the spine)."""
    return a if a is not None and a.g is g else Analysis(g)
