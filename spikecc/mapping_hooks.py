"""The costs `spikecc sweep` plots perplexity against, from the mapping stage: the one place it reads them.

Each takes the evaluated build (a spikecc.evaluate.Subject, or the build directory itself). A build that
`spikecc compile` wrote holds its budget (budget.json: the mapping onto its target with the activity its
calibration run measured), which is read as it is. Anything else with a fixed-point graph (a checkpoint compiled
in memory) is mapped here onto Loihi 2 with assumed activity. None: no neuro-core part, nothing to map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUDGET = "budget.json"


def budget(build: Any) -> dict | None:
    """The budget of a build (budget.json's content: `cores`, `energy`, ...), or None without a neuro-core part."""
    where = Path(getattr(build, "source", build))
    if (where / BUDGET).is_file():
        return json.loads((where / BUDGET).read_text())
    graph = getattr(build, "fixed_graph", None)
    if graph is None or not any(graph.annotation(n, "partition") == "neurocore" for n in graph.nodes):
        return None
    from spikecc.compiler.mapping import budget_json, map_graph

    return budget_json(map_graph(graph, "loihi2"))


def cores(build: Any) -> int | None:
    """Neuro-cores the build's neuro-core part occupies on its target."""
    b = budget(build)
    return None if b is None else int(b["cores"])


def energy_per_token(build: Any) -> float | None:
    """Energy per token on the build's target (its profile's per-operation figures and static power), in joules."""
    b = budget(build)
    return None if b is None else float(b["energy"]["token_uj"]) * 1e-6
