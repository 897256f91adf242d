"""Stepping the host stages of a saved host program in onnxruntime: numpy and onnxruntime only, no spikecc.

    StageRunner(stages, state, max_steps)        one InferenceSession per stage, the state carried between calls
    StageRunner.from_directory(path)             from the files `HostProgram.save` writes (read_program)
    runner.step_stage(k, values) -> dict         host stage k: reads its inputs from `values` by name

`stages[k]` is {"model": serialized ONNX bytes, "inputs": [spec], "outputs": [spec]} with spec = {"name", "dtype",
"shape", "kind"} (spikecc.backends.onnx.program: kinds input, core, carry, state, output; a state output is named
"<key>/next"). spikecc's HostRunner (spikecc.backends.onnx.runner) is this class over a HostProgram; a generated Lava
module (spikecc.backends.lava.lm_codegen) runs a copy of this file, written beside it, over the saved program: the
same code steps the host in both. Keep it free of spikecc imports.

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

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

NEXT = "/next"  # suffix of a state tensor's new value among a stage's outputs
STEP = "step"  # the state key of the graph-step counter (int64 scalar, counts from 0)
PROGRAM_FILE = "program.json"
STATE_FILE = "state.npz"


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


def _spec(t: Any) -> dict:
    """A tensor spec as a dict, from a dict or from an object with name, dtype, shape, kind (program.TensorSpec)."""
    if isinstance(t, Mapping):
        return {"name": t["name"], "dtype": t["dtype"], "shape": tuple(t["shape"]), "kind": t["kind"]}
    return {"name": t.name, "dtype": t.dtype, "shape": tuple(t.shape), "kind": t.kind}


def read_program(directory: str | Path) -> dict:
    """The files of a saved host program as one dict: program.json's entries, each stage's "model" bytes (from its
    "file"), and "state" (key -> initial array, from state.npz in the order of "state_keys")."""
    d = Path(directory)
    meta = json.loads((d / PROGRAM_FILE).read_text(encoding="utf8"))
    with np.load(d / STATE_FILE) as z:
        meta["state"] = {k: z[f"s{i}"] for i, k in enumerate(meta["state_keys"])}
    for s in meta["stages"]:
        s["model"] = (d / s["file"]).read_bytes()
    return meta


class StageRunner:
    """One onnxruntime InferenceSession per host stage, and the state between calls (module docstring)."""

    error: type[Exception] = RuntimeError  # raised for a missing input or an onnxruntime failure
    limit_error: type[Exception] = ValueError  # raised past `max_steps` graph steps

    def __init__(self, stages: list, state: Mapping[str, np.ndarray], max_steps: int | None = None) -> None:
        import onnxruntime as ort

        self.stage_inputs = [[_spec(t) for t in s["inputs"]] for s in stages]
        self.stage_outputs = [[_spec(t) for t in s["outputs"]] for s in stages]
        self.stage_names = [list(s.get("nodes", [])) for s in stages]
        self.initial_state = dict(state)
        self.max_steps = max_steps
        so = session_options()
        self.sessions = [ort.InferenceSession(s["model"], so, providers=["CPUExecutionProvider"]) for s in stages]
        self.start()

    @classmethod
    def from_directory(cls, directory: str | Path) -> StageRunner:
        meta = read_program(directory)
        return cls(meta["stages"], meta["state"], meta["max_steps"])

    def start(self) -> None:
        """Back to the initial state (the step counter at 0, caches empty)."""
        self.state = {k: np.array(v, copy=True) for k, v in self.initial_state.items()}

    @property
    def step(self) -> int:
        """Graph steps completed since `start` (the last stage advances it)."""
        return int(self.state[STEP])

    def step_stage(self, k: int, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run host stage k of the current graph step. `values`: at least every non-state input of the stage (graph
        inputs, core messages, carries), by name (others are ignored); returns its non-state outputs (payloads,
        carries, graph outputs)."""
        limit = self.max_steps
        if k == 0 and limit is not None and self.step >= limit:
            raise self.limit_error(f"graph step {self.step} is past the {limit} steps this host program runs from "
                                   "its start (the model's learned positions); start again from a shorter text")
        feed: dict[str, np.ndarray] = {}
        for spec in self.stage_inputs[k]:
            name = spec["name"]
            if spec["kind"] == "state":
                feed[name] = self.state[name]
                continue
            if name not in values:
                raise self.error(f"host stage {k}: input '{name}' ({spec['kind']}) is missing; pass every input the "
                                 "stage lists")
            a = np.asarray(values[name], dtype=spec["dtype"])
            feed[name] = a.reshape(spec["shape"]) if all(isinstance(d, int) for d in spec["shape"]) else a
        try:
            results = self.sessions[k].run(None, feed)
        except Exception as exc:  # onnxruntime's own exception types; one line, naming the stage
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise self.error(f"host stage {k} ({', '.join(self.stage_names[k][:3])}...): onnxruntime failed: "
                             f"{lines[0] if lines else type(exc).__name__}") from None
        out: dict[str, np.ndarray] = {}
        for spec, v in zip(self.stage_outputs[k], results):
            if spec["kind"] == "state":
                self.state[spec["name"][: -len(NEXT)]] = v
            else:
                out[spec["name"]] = v
        return out
