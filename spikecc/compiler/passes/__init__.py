"""Passes: functions Graph -> Graph that return a new graph and never mutate their input."""

from spikecc.compiler.passes.lower_loihi import lower_for_loihi
from spikecc.compiler.passes.quantize import quantize_for_loihi, quantize_inputs

__all__ = ["lower_for_loihi", "quantize_for_loihi", "quantize_inputs"]
