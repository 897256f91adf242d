"""ONNX backend: the host partition of a lowered spiking language model as ONNX models that onnxruntime runs, so that
the same host code serves a Lava run (its host processes) and a production host.

    export_host_program(graph, mode=None) -> HostProgram    ordered host stages, each an ONNX model (plain data)
    HostRunner(program)                                     onnxruntime sessions; start(), step_stage(k, inputs)
    run_step(runner, core, inputs)                          one graph step: host stages and core phases in turn
    SimulatorCore(graph, form)                              the core phases in spikecc's CPU simulator (a callback)

onnx and onnxruntime are imported by the modules that need them; spikecc's CPU backend only by SimulatorCore.
docs/onnx-host.md gives the stage model, the dtypes and the accuracy.
"""

from spikecc.backends.onnx.cpu_core import SimulatorCore
from spikecc.backends.onnx.export import export_host_program
from spikecc.backends.onnx.program import CorePhase, HostProgram, Stage, TensorSpec
from spikecc.backends.onnx.registry import EXPORTS, ExportContext, exports
from spikecc.backends.onnx.runner import HostRunner, run_step

__all__ = ["EXPORTS", "CorePhase", "ExportContext", "HostProgram", "HostRunner", "SimulatorCore", "Stage",
           "TensorSpec", "export_host_program", "exports", "run_step"]
