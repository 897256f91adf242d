"""The pass spine: the ordered list of `Graph -> Graph` passes that take a validated NIR graph to Loihi form.

    read + validate -> lower_for_loihi -> quantize_for_loihi (fixed point)

Each pass returns a new graph; `run_passes` validates after every pass and records its name in
`graph.metadata["passes"]`. What surrounds the spine (inputs, build directories, backends) lives in the
build driver, `spikecc.driver`, which sits above the compiler and the backends.
"""

from __future__ import annotations

from collections.abc import Callable

from spikecc.ir import Graph, validate

Pass = Callable[[Graph], Graph]


def loihi_passes(fixed_point: bool = True, input_range: float = 1.0) -> list[tuple[str, Pass]]:
    """The passes that take a validated NIR graph to what runs on Loihi 2, in order."""
    from spikecc.compiler.passes.lower_loihi import lower_for_loihi
    from spikecc.compiler.passes.quantize import quantize_for_loihi

    passes: list[tuple[str, Pass]] = [("lower_for_loihi", lower_for_loihi)]
    if fixed_point:
        passes.append(("quantize_for_loihi", lambda g: quantize_for_loihi(g, input_range=input_range)))
    return passes


def run_passes(g: Graph, passes: list[tuple[str, Pass]]) -> Graph:
    for name, fn in passes:
        g = fn(g)
        validate(g)
        g.metadata.setdefault("passes", [])
        g.metadata["passes"] = list(g.metadata["passes"]) + [name]
    return g


def lower_for_target(g: Graph, fixed_point: bool, input_range: float = 1.0) -> Graph:
    """A validated NIR graph lowered (and, for fixed point, quantized) for Loihi 2."""
    validate(g)
    return run_passes(g, loihi_passes(fixed_point, input_range))
