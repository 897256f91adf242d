"""Running a `HostProgram`: `HostRunner` steps its stages in onnxruntime and carries the state; `run_step` runs one
whole graph step, alternating host stages and the neuro-core phases (any callable: spikecc's CPU simulator through
`SimulatorCore`, or a Lava host process's channels).

`HostRunner` is `StageRunner` (spikecc.backends.onnx.stage_runner, which runs without spikecc and so also serves
generated Lava modules) over a HostProgram, raising spikecc's errors; the session options and why onnxruntime runs
without graph optimizations are given there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from spikecc.backends.onnx.program import HostProgram
from spikecc.backends.onnx.stage_runner import StageRunner, session_options
from spikecc.errors import BackendError
from spikecc.ir.spikelm_ops import ContextLengthError

CoreCallback = Callable[[int, dict[str, np.ndarray]], Mapping[str, np.ndarray]]

__all__ = ["CoreCallback", "HostRunner", "run_step", "session_options"]


class HostRunner(StageRunner):
    """One onnxruntime InferenceSession per stage of `program`, and the program's state between calls."""

    error = BackendError
    limit_error = ContextLengthError

    def __init__(self, program: HostProgram) -> None:
        self.program = program
        stages = [{"model": s.model, "inputs": s.inputs, "outputs": s.outputs, "nodes": s.nodes}
                  for s in program.stages]
        super().__init__(stages, program.state, program.max_steps)


def run_step(runner: HostRunner, core: CoreCallback, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One graph step: host stage 0, core phase 0, host stage 1, core phase 1, ... `inputs` holds one array per
    graph Input; `core(k, needs)` runs core phase k on the values it needs (by name) and returns those it produces.
    Returns every value of the step by name: graph outputs, HostToCore payloads, core messages, carries."""
    p = runner.program
    values: dict[str, np.ndarray] = {t.name: np.asarray(inputs[t.name]) for t in p.inputs}
    for k in range(max(len(p.stages), len(p.core_phases))):
        if k < len(p.stages):
            needed = {t.name: values[t.name] for t in p.stages[k].inputs if t.kind != "state"}
            values.update(runner.step_stage(k, needed))
        if k < len(p.core_phases):
            phase = p.core_phases[k]
            got = core(k, {t.name: values[t.name] for t in phase.needs})
            for t in phase.produces:
                if t.name not in got:
                    raise BackendError(f"core phase {k} did not return '{t.name}'; the callback must return every "
                                       "value the phase produces")
                values[t.name] = np.asarray(got[t.name])
    return values
