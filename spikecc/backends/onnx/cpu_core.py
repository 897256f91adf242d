"""The neuro-core part of a graph step run by spikecc's CPU simulator, as `run_step`'s core callback: one Simulator
per core phase (spikecc.backends.onnx.stages.phase_graph), each stepped once per graph step, in the program's form
(fixed: the bit-accurate integer models; float: the float forms).

The CPU backend is imported when a `SimulatorCore` is made, not when this package is: backends do not import each
other at module level (the ONNX host programs run without the simulator).
"""

from __future__ import annotations

import numpy as np

from spikecc.backends.onnx.stages import phase_graph, plan_stages
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes, infer_signals


class SimulatorCore:
    def __init__(self, graph: Graph, form: str) -> None:
        from spikecc.backends.cpu.simulator import Simulator

        plan = plan_stages(graph)
        signals, shapes = infer_signals(graph), infer_shapes(graph)
        self.graphs = [phase_graph(graph, plan, k, signals, shapes) for k in range(len(plan.core))]
        self.sims = [Simulator(g, mode=form) for g in self.graphs]
        self.produces = [plan.core_produces(graph, k) for k in range(len(plan.core))]
        self.start()

    def start(self) -> None:
        for sim in self.sims:
            sim.start()

    def __call__(self, k: int, needs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cur = self.sims[k].step(needs)
        return {n: cur[n] for n in self.produces[k]}
