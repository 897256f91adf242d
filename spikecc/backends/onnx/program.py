"""`HostProgram`: the host partition of a lowered language model as a sequence of ONNX models, plain data.

One graph step (one token, or one spike step of SpikeLM: metadata `substeps`) runs as

    host stage 0 -> core phase 0 -> host stage 1 -> core phase 1 -> ... -> host stage K-1 [-> core phase K-1]

Host stage k holds the host nodes whose inputs are available once the neuro-core results of phase k-1 are back;
core phase k the neuro-core nodes that can run once host stage k has sent its messages. Every tensor a stage reads
or writes is named and typed here (`TensorSpec`), by kind:

    input    a graph Input (the token id, float64, as the simulator is fed)
    core     stage input: a raw neuro-core message arriving at a CoreToHost boundary, named after the core node that
             sends it (float64 in float form, int64 payloads in fixed form);
             stage output: a HostToCore payload to send, named after the boundary node (float64 / int64)
    carry    a host value a later stage of the same graph step reads, named after the host node
    state    a tensor carried from one graph step to the next (WKV's aa/bb/pp, a Delay's register, a KV cache, the
             step counter "step"); the input is named by its key, the new value is output as "<key>/next"
    output   a graph Output (the logits), named after the Output node

Nothing here needs spikecc to run: the stages are serialized ONNX models, the state's initial values numpy arrays;
onnxruntime and numpy suffice (`spikecc.backends.onnx.runner.HostRunner` is one such runner). The object pickles.
`save` and `load` write it as a directory (one .onnx file per stage, the interface in program.json, the initial
state in state.npz) that other tools read without Python.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spikecc.backends.onnx.stage_runner import NEXT, PROGRAM_FILE, STATE_FILE, STEP, read_program
from spikecc.files import npz_bytes

__all__ = ["KINDS", "NEXT", "STEP", "CorePhase", "HostProgram", "Stage", "TensorSpec"]

KINDS = ("input", "core", "carry", "state", "output")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float64" | "int64"
    shape: tuple  # ints; a str names a size that grows (a KV cache's rows)
    kind: str  # one of KINDS

    @property
    def state_key(self) -> str:
        """For a state output: the key of the state it replaces."""
        return self.name[: -len(NEXT)] if self.name.endswith(NEXT) else self.name


@dataclass
class Stage:
    index: int
    model: bytes  # a serialized ONNX ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: list[str] = field(default_factory=list)  # the graph nodes this stage computes, in order

    def of_kind(self, kind: str, outputs: bool = False) -> list[TensorSpec]:
        return [t for t in (self.outputs if outputs else self.inputs) if t.kind == kind]

    @property
    def core_inputs(self) -> list[str]:
        """The neuro-core messages this stage needs (sent by the core phases before it)."""
        return [t.name for t in self.of_kind("core")]

    @property
    def core_outputs(self) -> list[str]:
        """The HostToCore payloads this stage produces (for the core phases after it)."""
        return [t.name for t in self.of_kind("core", outputs=True)]


@dataclass
class CorePhase:
    """What one neuro-core phase of a graph step takes (HostToCore payloads, values of earlier phases) and gives
    back (values host stages or later phases read)."""

    index: int
    needs: list[TensorSpec]
    produces: list[TensorSpec]
    nodes: list[str] = field(default_factory=list)


@dataclass
class HostProgram:
    stages: list[Stage]
    core_phases: list[CorePhase]
    state: dict[str, np.ndarray]  # initial values of every state tensor
    inputs: list[TensorSpec]  # the graph's Inputs
    outputs: list[TensorSpec]  # the graph's Outputs
    form: str  # "float" | "fixed": what crosses the boundary (reals, or integer payloads)
    max_steps: int | None = None  # graph steps the program can run from the start (learned positions), or None
    metadata: dict = field(default_factory=dict)  # family, substeps (plain JSON values of the graph's metadata)
    notes: list[str] = field(default_factory=list)  # where the export approximates the simulator's arithmetic

    # -- files -----------------------------------------------------------------------------------------------
    def files(self) -> dict[str, bytes]:
        """The program as files, name -> bytes: stage<k>.onnx, state.npz and program.json (the interface). The bytes
        depend only on the program (sorted JSON keys, an .npz with fixed dates)."""
        out = {f"stage{s.index}.onnx": s.model for s in self.stages}
        out[STATE_FILE] = npz_bytes({f"s{i}": np.asarray(v) for i, v in enumerate(self.state.values())})
        meta = {
            "form": self.form, "max_steps": self.max_steps, "metadata": self.metadata, "notes": self.notes,
            "state_keys": list(self.state), "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "stages": [{"index": s.index, "file": f"stage{s.index}.onnx", "nodes": s.nodes,
                        "inputs": [asdict(t) for t in s.inputs], "outputs": [asdict(t) for t in s.outputs]}
                       for s in self.stages],
            "core_phases": [{"index": p.index, "nodes": p.nodes, "needs": [asdict(t) for t in p.needs],
                             "produces": [asdict(t) for t in p.produces]} for p in self.core_phases],
        }
        out[PROGRAM_FILE] = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf8")
        return out

    def save(self, directory: str | Path) -> None:
        """Write `files()` into `directory` (created; must not exist yet)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=False)
        for name, data in self.files().items():
            (d / name).write_bytes(data)

    @classmethod
    def load(cls, directory: str | Path) -> HostProgram:
        meta = read_program(directory)

        def specs(items: list[dict]) -> list[TensorSpec]:
            return [TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t["kind"]) for t in items]

        stages = [Stage(s["index"], s["model"], specs(s["inputs"]), specs(s["outputs"]), list(s["nodes"]))
                  for s in meta["stages"]]
        phases = [CorePhase(p["index"], specs(p["needs"]), specs(p["produces"]), list(p["nodes"]))
                  for p in meta["core_phases"]]
        return cls(stages=stages, core_phases=phases, state=meta["state"], inputs=specs(meta["inputs"]),
                   outputs=specs(meta["outputs"]), form=meta["form"], max_steps=meta["max_steps"],
                   metadata=meta["metadata"], notes=list(meta["notes"]))
