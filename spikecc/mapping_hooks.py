"""The costs `spikecc sweep` plots perplexity against, from the mapping stage: the one place it reads them.

Both return None until the mapping onto Loihi 2 cores (per-core budgets, placement, energy model) is built;
the sweep then reports "n/a" and plots perplexity per build instead. The mapping stage replaces the bodies.
Each takes the evaluated build (a spikecc.evaluate.Subject: its graphs, and the fixed-point graph once LM
compilation lands).
"""

from __future__ import annotations

from typing import Any


def cores(build: Any) -> int | None:
    """Loihi 2 neuro-cores the build's neuro-core part occupies."""
    return None


def energy_per_token(build: Any) -> float | None:
    """Energy per token on Loihi 2, in joules."""
    return None
