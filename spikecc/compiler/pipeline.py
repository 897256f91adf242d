"""The pass spine: the ordered list of small named `Graph -> Graph` passes that take a validated graph to Loihi form.

NIR networks (`loihi_passes`):

    fuse_synapses -> map_neurons -> fold_amplitudes -> message_widths -> initial_state [-> quantize]

Spiking language models (`lm_passes`; the graph a frontend exported from a checkpoint):

    fold_scales -> fold_amplitudes -> decompose_levels -> split_polarity -> partition -> map_neurons
    -> message_widths [-> quantize (calibrated on a short prompt)]

The first four are exact (the simulated graph gives the same spikes and logits before and after); map-neurons
regroups float operations; quantize approximates, with a report of every approximation.

Each pass is a function `(graph, analysis) -> graph` in its own module under spikecc.compiler.passes, returns a
new graph and states the invariant it keeps. `run_passes` computes one `Analysis` (shapes, signals, schedule) per
graph: the analysis of a pass's output validates it and is handed to the next pass, so shapes are inferred once
per pass. Each pass's name is recorded in `graph.metadata["passes"]`. What surrounds the spine (inputs, build
directories, backends) lives in the build driver, `spikecc.driver`, above the compiler and the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spikecc.compiler.passes.analysis import Analysis
from spikecc.ir import Graph
from spikecc.ir.formats import is_fixed

Pass = Callable[[Graph, Analysis], Graph]


def loihi_passes(g: Graph, fixed_point: bool = True, input_range: float = 1.0) -> list[tuple[str, Pass]]:
    """The passes that take `g` (a validated NIR graph, or one already lowered or quantized: those steps are
    skipped) to what runs on Loihi 2, in order."""
    from spikecc.compiler.passes.lower_loihi import NIR_LOWERING, is_lowered
    from spikecc.compiler.passes.quantize import quantize_for_loihi

    passes: list[tuple[str, Pass]] = [] if is_lowered(g) else list(NIR_LOWERING)
    if fixed_point and not is_fixed(g):
        passes.append(("quantize", lambda g, a: quantize_for_loihi(g, input_range=input_range, analysis=a)))
    return passes


@dataclass(frozen=True)
class LMOptions:
    """The compile options of a language model (recorded in the build manifest)."""

    polarity: str = "split"  # split | graded (split-polarity)
    levels: str = "auto"  # auto | binary | graded (decompose-levels)
    message_bits: int = 12  # host -> neuro-core graded messages
    weight_bits: int = 8

    def as_dict(self) -> dict:
        return dict(polarity=self.polarity, levels=self.levels, message_bits=self.message_bits,
                    weight_bits=self.weight_bits)


def lm_passes(options: LMOptions = LMOptions()) -> list[tuple[str, Pass]]:
    """The float part of a language model's spine, in order (quantize follows, with its calibration run)."""
    from spikecc.compiler.passes.decompose_levels import decompose_levels
    from spikecc.compiler.passes.fold_amplitudes import fold_spike_amplitudes
    from spikecc.compiler.passes.fold_scales import fold_scales
    from spikecc.compiler.passes.map_neurons import map_lm_neurons
    from spikecc.compiler.passes.message_widths import message_widths
    from spikecc.compiler.passes.partition import partition
    from spikecc.compiler.passes.split_polarity import split_polarity

    return [
        ("fold_scales", fold_scales),
        ("fold_amplitudes", fold_spike_amplitudes),
        ("decompose_levels", lambda g, a: decompose_levels(g, a, mode=options.levels)),
        ("split_polarity", lambda g, a: split_polarity(g, a, mode=options.polarity)),
        ("partition", lambda g, a: partition(g, a, message_bits=options.message_bits)),
        ("map_neurons", map_lm_neurons),
        ("message_widths", message_widths),
    ]


def run_passes(g: Graph, passes: list[tuple[str, Pass]], on_pass: Callable[[str, Graph, Graph], None] | None = None) \
        -> Graph:
    """Run `passes` in order; `on_pass(name, before, after)` is called after each (for progress and reports)."""
    a = Analysis(g)
    _ = a.shapes  # validates the input
    for name, fn in passes:
        before = g
        g = fn(g, a)
        a = Analysis(g)
        _ = a.shapes  # validates the pass's output: a malformed graph fails here, naming the pass's node
        g.metadata["passes"] = [*g.metadata.get("passes", []), name]
        if on_pass is not None:
            on_pass(name, before, g)
    return g


def lower_for_target(g: Graph, fixed_point: bool, input_range: float = 1.0) -> Graph:
    """A validated NIR graph lowered (and, for fixed point, quantized) for Loihi 2."""
    return run_passes(g, loihi_passes(g, fixed_point, input_range))
