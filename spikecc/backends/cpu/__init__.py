"""spikecc's event-driven CPU simulator (float and Lava-bit-exact fixed point)."""

from spikecc.backends.cpu.kernels import LOWERINGS, BuildContext, Kernel, lowers
from spikecc.backends.cpu.simulator import NodeCounts, SimResult, Simulator, simulate

__all__ = ["LOWERINGS", "BuildContext", "Kernel", "NodeCounts", "SimResult", "Simulator", "lowers", "simulate"]
