"""Lava backend: Loihi-form spikecc graphs as Lava process graphs (lava-nc 0.10.0).

    run_lava(graph, inputs, steps, mode, record_states) -> LavaResult     run in Loihi2SimCfg
    write_lava_module(graph, out_dir)                                     generated module + parameters
    plan_network(graph, mode, split)                                      the process specs and connections
    split_report(graph, mode)                                             what splitting by value does (JSON)

Language models: lm_schedule (slots of a graph step), lm_network (the process graph as plain data; run_lm_lava),
lm_processes (the one builder, also copied into a build's generated module), lm_codegen (BUILD/lava/).

Lava itself is imported only when a network is built or run, so writing a module needs no Lava import.
spikecc's own processes for language-model ops (and the phase gate that runs a token-synchronous graph at
several Lava steps per graph step) are in spikecc.backends.lava.processes.
"""

from spikecc.backends.lava.codegen import write_lava_module
from spikecc.backends.lava.lowering import LAVA_LOWERINGS, LoweringContext, ProcessSpec, lava_lowers
from spikecc.backends.lava.plan import NetworkPlan, plan_network, split_report
from spikecc.backends.lava.run import LavaResult, run_lava

__all__ = ["LAVA_LOWERINGS", "LavaResult", "LoweringContext", "NetworkPlan", "ProcessSpec", "lava_lowers",
           "plan_network", "run_lava", "split_report", "write_lava_module"]
