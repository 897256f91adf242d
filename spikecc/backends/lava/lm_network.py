"""A whole compiled language model as one Lava process graph, generating text inside Lava, token after token.

    TokenSource --token--> LMHost --payloads--> Dense -> neurons / routers / relays --> ... --> LMHost
        ^                     |                                                             (core messages)
        +----- Sampler <------+ logits

- The neuro-core part: one Lava process per neuro-core node, from the Lava lowering registry
  (spikecc.backends.lava.lowering): Lava's Dense for every synapse, spikecc's phase-gated processes for the
  neurons and routers (PhasedLIF, Elastic, SpikeRouter; spikecc.backends.lava.processes), Lava's GradedVec (fixed
  point) or spikecc's Relay (float) for the relays. Each gated process acts at its slot of the schedule
  (spikecc.backends.lava.lm_schedule) once every D Lava steps, so one graph step of the compiled graph takes D
  Lava steps and every neuron updates once per graph step, exactly as in spikecc's simulator.
- The host part: ONE Lava process (LMHost) runs every host stage of the model's ONNX host program in onnxruntime
  (its runner is handed in as a factory: this backend imports no other backend), at the stage's slot, and sends
  each HostToCore payload at its slot. It has one port per boundary value (port maps, not one in- and one
  out-port).
- TokenSource sends the token of the current graph step: the prompt's, then the sampled ones. Sampler reads the
  logits at the last slot of a token's last graph step, takes the argmax (lowest id on ties) and sends it back;
  it sends what it sampled one Lava step later (its send comes before its receive, as Dense's does), so the loop
  TokenSource -> LMHost -> Sampler -> TokenSource has no cycle within a Lava step.
- One Probe records every neuro-core node's output at every Lava step (spikecc.backends.lava.network), and the
  Sampler the logits of every token, into shared memory the parent reads after the run.

A generation of N tokens after a P-token prompt feeds P + N tokens (as spikecc's LMSimulator does), each for
`substeps` graph steps (SpikeLM: T spike steps) of D Lava steps.
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from lava.magma.core.decorator import implements, requires
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from spikecc.backends.lava import processes
from spikecc.backends.lava.lm_schedule import LMSchedule
from spikecc.backends.lava.lowering import LoweringContext, lower_node
from spikecc.backends.lava.network import _SHARED, _new_process, make_probe_class, probe_model_for
from spikecc.backends.lava.plan import SELECT_TAGS
from spikecc.errors import BackendError
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore

_KEYS = itertools.count()


# -- processes with ports of their own (one class per network: Lava picks models per class) ------------------
class _Ported(AbstractProcess):
    """A process whose ports are given by name and size (port maps). Lava registers a process's ports after its
    __init__ (AbstractProcess._post_init), so they are made here, inside it."""

    def __init__(self, *, ins: dict[str, int], outs: dict[str, int], **params: Any) -> None:
        super().__init__(**params)
        for name, n in ins.items():
            setattr(self, name, InPort(shape=(n,)))
        for name, n in outs.items():
            setattr(self, name, OutPort(shape=(n,)))


def _ported(base: type[AbstractProcess], ins: dict[str, int], outs: dict[str, int], **params) -> AbstractProcess:
    cls = type(f"{base.__name__}_{next(_KEYS)}", (base,), {})  # a class per network: Lava picks models by class
    return cls(ins=ins, outs=outs, **params)


def _model_for(proc: AbstractProcess, base: type, dtypes: dict[str, Any]) -> type[PyLoihiProcessModel]:
    """A model class for `proc` with one LavaPyType per port (dtype by port name; "*" for the others)."""
    attrs: dict[str, Any] = {}
    for port in proc.in_ports:
        attrs[port.name] = LavaPyType(PyInPort.VEC_DENSE, dtypes.get(port.name, dtypes["*"]))
    for port in proc.out_ports:
        attrs[port.name] = LavaPyType(PyOutPort.VEC_DENSE, dtypes.get(port.name, dtypes["*"]))
    cls = type(f"Py{type(proc).__name__}Model", (base,), attrs)
    return requires(CPU)(implements(proc=type(proc), protocol=LoihiProtocol)(cls))


class LMHost(_Ported):
    """The host partition (proc_params: runner factory, schedule, port maps)."""


class TokenSource(_Ported):
    """The token of each graph step (proc_params: prompt ids, substeps, period)."""


class Sampler(_Ported):
    """Greedy sampling of each token's logits (proc_params: substeps, period, output slot, buffer key)."""


class PyLMHostBase(PyLoihiProcessModel):
    """Runs host stage k at slot stage_slot[k]; receives every core message each step (keeping those at their
    arrival slot) and sends every payload each step (the value at its send slot, zeros otherwise)."""

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.runner = p["runner_factory"]()
        self.sched: LMSchedule = p["schedule"]
        self.core_in: dict[str, str] = p["core_in"]  # port -> core node
        self.payload_out: dict[str, str] = p["payload_out"]  # port -> HostToCore node
        self.token_input, self.output = p["token_input"], p["output"]
        self.dtype, self.sizes = p["dtype"], p["sizes"]
        self.values: dict[str, np.ndarray] = {}

    def run_spk(self) -> None:
        t = self.time_step - 1
        slot = t % self.sched.period
        token = self.tok.recv()
        if slot == 0:
            self.values = {self.token_input: np.asarray(token, dtype=np.float64)}
        for port, node in self.core_in.items():
            x = getattr(self, port).recv()
            if slot == self.sched.arrival_slot[node]:
                self.values[node] = np.asarray(x)
        for k, at in enumerate(self.sched.stage_slot):
            if at == slot:
                stage = self.runner.program.stages[k]
                self.values.update(self.runner.step_stage(
                    k, {s.name: self.values[s.name] for s in stage.inputs if s.kind != "state"}))
        for port, node in self.payload_out.items():
            out = getattr(self, port)
            if slot == self.sched.send_slot.get(node, -1):
                out.send(np.asarray(self.values[node]).astype(self.dtype).reshape(-1))
            else:
                out.send(np.zeros(self.sizes[port], dtype=self.dtype))
        if slot == self.sched.output_slot:
            self.logits.send(np.asarray(self.values[self.output], dtype=np.float64).reshape(-1))
        else:
            self.logits.send(np.zeros(self.sizes["logits"]))


class PyTokenSourceBase(PyLoihiProcessModel):
    """The token of graph step g: prompt[g // substeps] while the prompt lasts, then the last sampled token."""

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        self.prompt = list(proc_params["prompt"])
        self.substeps, self.period = int(proc_params["substeps"]), int(proc_params["period"])
        self.current = self.prompt[0]

    def run_spk(self) -> None:
        t = self.time_step - 1
        sampled = self.sampled.recv()
        if t % self.period == 0:
            g = t // self.period
            if g % self.substeps == 0:
                i = g // self.substeps
                self.current = self.prompt[i] if i < len(self.prompt) else int(np.asarray(sampled).reshape(-1)[0])
        self.tok.send(np.array([float(self.current)]))


class PySamplerBase(PyLoihiProcessModel):
    """Greedy sampling at the logits slot of each token's last graph step; logits recorded per token."""

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.substeps, self.period, self.at = int(p["substeps"]), int(p["period"]), int(p["output_slot"])
        self.buf = _SHARED[p["key"]]
        self.prev = 0

    def run_spk(self) -> None:
        t = self.time_step - 1
        self.s_out.send(np.array([float(self.prev)]))  # first: what was sampled one step ago
        x = np.asarray(self.logits.recv(), dtype=np.float64)
        g, slot = divmod(t, self.period)
        if slot == self.at and g % self.substeps == self.substeps - 1:
            token = g // self.substeps
            if token < self.buf.shape[0]:
                self.buf[token] = x
            self.prev = int(np.argmax(x))


# -- building and running -------------------------------------------------------------------------------------
@dataclass
class LMLavaResult:
    tokens: list[int]  # the N generated token ids
    logits: np.ndarray  # (P + N, vocab): the logits after each fed token
    outputs: dict[str, np.ndarray]  # neuro-core node -> (graph steps, n): its output at its slot, per graph step
    lava_steps: int
    period: int
    processes: int  # OS processes Lava started (one per Lava process, plus its runtime service)
    wall_s: float  # from compiling the process graph to the end of the run
    startup_s: float  # compiling the process graph and starting its OS processes
    token_s: list[float]  # wall time of each fed token's steps (prompt tokens first)


def core_nodes(g: Graph) -> list[str]:
    return [n for n in g.nodes if g.annotation(n, "partition") == "neurocore"]


def run_lm_lava(g: Graph, schedule: LMSchedule, runner_factory: Callable[[], Any], prompt_ids: list[int],
                n_tokens: int, mode: str, on_token: Callable[[int, int, float], None] | None = None) -> LMLavaResult:
    """Generate `n_tokens` greedily after `prompt_ids` in Lava's Loihi2SimCfg (fixed_pt or floating_pt).
    Lava runs one fed token at a time (substeps x D steps per run call); `on_token(i, fed, seconds)` is called
    after each with the wall time of that token's run."""
    import time

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from spikecc.backends.lava.run import _child_error, _shutdown, contained_processes

    if mode not in SELECT_TAGS:
        raise BackendError(f"Lava mode must be one of {', '.join(SELECT_TAGS)}, not {mode!r}")
    shapes = infer_shapes(g)
    size = {n: int(np.prod(s)) for n, s in shapes.items()}
    substeps = int(g.metadata.get("substeps", 1))
    D = schedule.period
    fed = len(prompt_ids) + n_tokens
    steps = fed * substeps * D
    dtype = np.int32 if mode == "fixed" else np.float64
    procs: dict[str, AbstractProcess] = {}
    specs = {}
    cores = core_nodes(g)
    for n in cores:
        ann = dict(g.annotations.get(n, {}))
        if n in schedule.node_slot:
            ann.update(period=D, phase=schedule.node_slot[n] % D)
        in_edges = g.in_edges(n)
        spec = lower_node(g.nodes[n], LoweringContext(name=n, mode=mode, size=size[n],
                                                      in_size=size[in_edges[0].src] if in_edges else None,
                                                      annotations=ann))
        specs[n] = spec
        procs[n] = _new_process(spec, n, None)
    (token_input,) = g.inputs()
    (output,) = g.outputs()
    to_core = [n for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    from_core = sorted({e.src for n, op in g.nodes.items() if isinstance(op, CoreToHost) for e in g.in_edges(n)},
                       key=list(g.nodes).index)
    core_in = {f"c{i}": n for i, n in enumerate(from_core)}
    payload_out = {f"h{i}": n for i, n in enumerate(to_core)}
    vocab = size[output]
    outs = {"logits": vocab, **{p: size[n] for p, n in payload_out.items()}}
    host = _ported(LMHost, {"tok": 1, **{p: size[n] for p, n in core_in.items()}}, outs,
                   runner_factory=runner_factory, schedule=schedule, core_in=core_in, payload_out=payload_out,
                   token_input=token_input, output=output, dtype=dtype, sizes=outs)
    key = f"spikecc-lm-{next(_KEYS)}"
    logits_buf = np.zeros((fed, vocab))
    source = _ported(TokenSource, {"sampled": 1}, {"tok": 1}, prompt=list(prompt_ids), substeps=substeps, period=D)
    sampler = _ported(Sampler, {"logits": vocab}, {"s_out": 1}, substeps=substeps, period=D,
                      output_slot=schedule.output_slot, key=key)
    # wiring: core <-> core, host -> Dense, core -> host, and the token loop
    for n in cores:
        for e in g.in_edges(n):
            if e.src in procs:
                getattr(procs[e.src], specs[e.src].out_port).connect(getattr(procs[n], specs[n].in_port))
    for p, n in payload_out.items():
        for e in g.out_edges(n):
            getattr(host, p).connect(getattr(procs[e.dst], specs[e.dst].in_port))
    for p, n in core_in.items():
        getattr(procs[n], specs[n].out_port).connect(getattr(host, p))
    source.tok.connect(host.tok)
    host.logits.connect(sampler.logits)
    sampler.s_out.connect(source.sampled)
    # recorded: every neuro-core node that sends, and every payload the host sends into the cores
    senders = {n: getattr(procs[n], specs[n].out_port) for n in cores if specs[n].out_port is not None}
    senders.update({n: getattr(host, p) for p, n in payload_out.items()})
    recorded = list(senders)
    probe = make_probe_class()(key=key + "-probe", steps=steps, in_sizes=[size[n] for n in recorded], ref_vars=[])
    for i, n in enumerate(recorded):
        senders[n].connect(getattr(probe, f"in_{i}"))
    width = sum(size[n] for n in recorded)
    mm_probe = mmap.mmap(-1, max(1, steps * width) * 8)
    mm_logits = mmap.mmap(-1, max(1, logits_buf.size) * 8)
    _SHARED[key + "-probe"] = np.frombuffer(mm_probe, dtype=np.float64, count=steps * width).reshape(steps, width)
    _SHARED[key] = np.frombuffer(mm_logits, dtype=np.float64, count=logits_buf.size).reshape(logits_buf.shape)
    _SHARED[key + "-probe"][:] = 0.0
    _SHARED[key][:] = 0.0
    tag = SELECT_TAGS[mode]
    models = {p: processes.model_for(type(p), tag) for p in procs.values() if type(p) in processes.PROCESSES}
    wire = np.int32 if mode == "fixed" else float  # payloads and core messages: integers in fixed point
    models.update({host: _model_for(host, PyLMHostBase, {"*": wire, "tok": float, "logits": float}),
                   source: _model_for(source, PyTokenSourceBase, {"*": float}),
                   sampler: _model_for(sampler, PySamplerBase, {"*": float}),
                   probe: probe_model_for(probe)})
    cfg = Loihi2SimCfg(select_tag=tag, exception_proc_model_map={**models, **{type(p): m for p, m in models.items()}})
    t0 = time.perf_counter()
    per_token = substeps * D
    token_s: list[float] = []
    try:
        with contained_processes():
            failed = True
            try:
                host.create_runtime(run_cfg=cfg)  # compiles and starts one OS process per Lava process
                startup = time.perf_counter() - t0
                os_processes = len(multiprocessing.active_children())  # what Lava really started
                for i in range(fed):  # one run call per fed token: the runtime keeps every state between calls
                    t = time.perf_counter()
                    host.run(condition=RunSteps(num_steps=per_token))
                    token_s.append(time.perf_counter() - t)
                    if on_token is not None:
                        on_token(i, fed, token_s[-1])
                failed = False
            except RuntimeError as e:
                raise BackendError(f"the Lava run failed: {_child_error(host) or e}") from e
            finally:
                _shutdown(host, failed)
        buf = np.array(_SHARED[key + "-probe"], copy=True)
        logits = np.array(_SHARED[key], copy=True)
    finally:
        for k in (key, key + "-probe"):
            _SHARED.pop(k, None)
    wall = time.perf_counter() - t0
    outputs, col = {}, 0
    n_graph = fed * substeps
    for n in recorded:
        slot = (schedule.send_slot[n] if n in schedule.send_slot else schedule.node_slot.get(n, 0)) % D
        rows = np.arange(n_graph) * D + slot
        outputs[n] = buf[rows, col:col + size[n]]
        col += size[n]
    tokens = [int(np.argmax(logits[i])) for i in range(len(prompt_ids) - 1, fed - 1)]
    return LMLavaResult(tokens=tokens, logits=logits, outputs=outputs, lava_steps=steps, period=D,
                        processes=os_processes, wall_s=wall,
                        startup_s=startup, token_s=token_s)
