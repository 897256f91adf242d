"""Running a `HostProgram`: `HostRunner` steps its stages in onnxruntime and carries the state; `run_step` runs one
whole graph step, alternating host stages and the neuro-core phases (any callable: spikecc's CPU simulator through
`SimulatorCore`, or a Lava host process's channels).

onnxruntime is set up to compute the same bytes on every run, with the arithmetic as exported: one thread inside
and between ops, sequential execution, deterministic compute, and NO graph optimizations. Even the basic level
rewrites double graphs wrongly: its no-op elimination (x * 1, x + 0, x - 0, x / 1; onnxruntime's
core/optimizer/noop_elimination.cc) tests a constant with `optimizer_utils::IsInitializerWithExpectedValue`, which
takes the expected value as a float (core/optimizer/utils.h), so a double constant that rounds to 1.0f or 0.0f
counts as 1 or 0: in onnxruntime 1.32 Mul(x, 1 + 1e-8) runs as x, and the Horner terms of erf whose coefficients
lie below float32's range vanish. The extended levels fuse LayerNorm or GELU patterns into kernels of other
arithmetic. The exported graphs hold next to nothing to fold, so little is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from spikecc.backends.onnx.program import NEXT, STEP, HostProgram
from spikecc.errors import BackendError, first_line
from spikecc.ir.spikelm_ops import ContextLengthError

CoreCallback = Callable[[int, dict[str, np.ndarray]], Mapping[str, np.ndarray]]


def session_options():
    """onnxruntime session options for deterministic single-threaded runs (module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.use_deterministic_compute = True
    so.log_severity_level = 3  # errors only: they come back as exceptions
    return so


class HostRunner:
    """One onnxruntime InferenceSession per stage of `program`, and the program's state between calls."""

    def __init__(self, program: HostProgram) -> None:
        import onnxruntime as ort

        self.program = program
        so = session_options()
        self.sessions = [ort.InferenceSession(s.model, so, providers=["CPUExecutionProvider"]) for s in program.stages]
        self.start()

    def start(self) -> None:
        """Back to the initial state (the step counter at 0, caches empty)."""
        self.state = {k: np.array(v, copy=True) for k, v in self.program.state.items()}

    @property
    def step(self) -> int:
        """Graph steps completed since `start` (the last stage advances it)."""
        return int(self.state[STEP])

    def step_stage(self, k: int, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run host stage k of the current graph step. `inputs`: every non-state input of the stage (graph inputs,
        core messages, carries), by name; returns its non-state outputs (payloads, carries, graph outputs)."""
        stage = self.program.stages[k]
        limit = self.program.max_steps
        if k == 0 and limit is not None and self.step >= limit:
            raise ContextLengthError(f"graph step {self.step} is past the {limit} steps this host program runs from "
                                     "its start (the model's learned positions); start again from a shorter text")
        feed: dict[str, np.ndarray] = {}
        for spec in stage.inputs:
            if spec.kind == "state":
                feed[spec.name] = self.state[spec.name]
                continue
            if spec.name not in inputs:
                raise BackendError(f"host stage {k}: input '{spec.name}' ({spec.kind}) is missing; pass every "
                                   "input the stage lists")
            a = np.asarray(inputs[spec.name], dtype=spec.dtype)
            feed[spec.name] = a.reshape(spec.shape) if all(isinstance(d, int) for d in spec.shape) else a
        try:
            values = self.sessions[k].run(None, feed)
        except Exception as exc:  # onnxruntime's own exception types; one line, naming the stage
            raise BackendError(f"host stage {k} ({', '.join(stage.nodes[:3])}...): onnxruntime failed: "
                               f"{first_line(exc)}") from None
        out: dict[str, np.ndarray] = {}
        for spec, v in zip(stage.outputs, values):
            if spec.kind == "state":
                self.state[spec.name[: -len(NEXT)]] = v
            else:
                out[spec.name] = v
        return out


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
