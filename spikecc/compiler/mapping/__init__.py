"""Mapping onto a neuromorphic target: does the network fit, on how many cores and chips, where does it break.

    target.py    target profiles (targets/*.toml): every figure with its source and confidence
    network.py   the graph as neuron populations and the synapse groups feeding them; activity
    split.py     per layer: output split, input-row split with partial sums (planned); costs; violations
    pack.py      fragments filling cores (small populations share); exact output axons
    traffic.py   per-step synaptic operations and messages per fragment
    place.py     cores onto chips: greedy, METIS; chip mesh, X-Y routes
    budget.py    map_graph: costs, latency (bottleneck), energy, lower bound, per-layer rows
    report.py    budget.json, budget.txt, budget.html + PNG plots (write_budget)
"""

from spikecc.compiler.mapping.budget import Mapping, map_graph
from spikecc.compiler.mapping.network import MappingError, activity_from_events, activity_from_traces
from spikecc.compiler.mapping.report import budget_json, budget_text, write_budget
from spikecc.compiler.mapping.target import Target, TargetError, builtin_targets, load_target

__all__ = ["Mapping", "MappingError", "Target", "TargetError", "activity_from_events", "activity_from_traces",
           "budget_json", "budget_text", "builtin_targets", "load_target", "map_graph", "write_budget"]
