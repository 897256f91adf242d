"""A compiled language model's Lava process graph, built from plain data: the one builder that both spikecc's Lava
run (spikecc.backends.lava.lm_network.run_lm_lava) and the generated module of a build (BUILD/lava/lava_lm.py,
spikecc.backends.lava.lm_codegen) use. It imports numpy and Lava only: codegen copies it beside the generated module.

    build_lm_network(data, arrays, own, runner_factory, prompt_ids, n_tokens) -> LMNetwork   live processes, wired
    run_config(net, hardware, extra_models) -> Loihi2SimCfg | Loihi2HwCfg
    compile_config(net, cores) -> {"partitioning": ...}                                    the core assignment
    run_lm_network(net, run_cfg, compile_config) -> logits (P + N, vocab)                  run, then always stop
    greedy_tokens(logits, n_prompt) -> the generated ids
    load_lm_network(directory) -> (data, arrays)                                           network.json, params.npz

The network (one graph step takes `period` D Lava steps; spikecc.backends.lava.lm_schedule gives the slots):

    TokenSource --tok--> LMHost --payloads--> Dense -> neurons / routers / relays --> ... --> LMHost
        ^                   |                                                          (core messages)
        +---- Sampler <-----+ logits

- Neuro-core processes, one per entry of data["processes"]: {"name", "cls" (Dense, LIF, TernaryLIF, GradedVec, or
  one of `own.PROCESSES`: spikecc's phase-gated Elastic, SpikeRouter, Relay, PhasedLIF), "kwargs" (JSON scalars;
  lists become tuples), "arrays" (kwargs held in `arrays` under "<name>/<kwarg>"; integer arrays are stored in the
  narrowest width and handed to Lava as int64), "named" (the constructor takes a name), "in_port", "out_port"}.
  Every process is named after its node (also those whose constructor takes no name). data["connections"]: [src,
  dst] pairs, src's out port to dst's in port.
- LMHost, ONE process for the whole host partition: at the slot of each host stage it runs that stage through
  `runner_factory()` (an object with `step_stage(k, values) -> dict`, such as spikecc.backends.onnx.stage_runner's
  StageRunner over the build's ONNX host program), receives each core message at its arrival slot, sends each
  HostToCore payload at its send slot (zeros in the other slots) and the logits at the output slot. One port per
  boundary value (port maps): c<i> in from core node i, h<i> out to the Dense processes payload i feeds.
- TokenSource sends the token of the current graph step: the prompt's, then the sampled ones. Sampler reads the
  logits at the output slot of a token's last graph step (of `substeps`), takes the argmax (the lowest id on ties)
  and sends it back one Lava step later (its send comes before its receive, as Dense's does), so the loop has no
  cycle within a Lava step. It records every token's logits in a shared memory map the parent reads after the run.

Lava picks process models per class, and these processes' ports depend on the network, so each network gets its own
classes and models; run_config names every model of spikecc's processes itself (exception_proc_model_map), so
Lava's model search never walks spikecc's packages.
"""

from __future__ import annotations

import itertools
import json
import mmap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
from lava.proc.dense.process import Dense
from lava.proc.graded.process import GradedVec
from lava.proc.lif.process import LIF, TernaryLIF

FORMAT = 1  # version of the data layout (module docstring); a generated module refuses another
NETWORK_FILE = "network.json"
PARAMS_FILE = "params.npz"
LAVA_CLASSES: dict[str, type[AbstractProcess]] = {"Dense": Dense, "LIF": LIF, "TernaryLIF": TernaryLIF,
                                                  "GradedVec": GradedVec}

# -- shared memory: filled in by Lava's OS processes, read by the parent --------------------------------------------
# Buffers by key, created before Lava forks its processes so that every child finds them.
_SHARED: dict[str, np.ndarray] = {}
_MAPS: dict[str, mmap.mmap] = {}
_KEYS = itertools.count()


def shared_array(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed float64 array in an anonymous shared memory map (it survives fork), registered under `key`."""
    n = int(np.prod(shape))
    mm = mmap.mmap(-1, max(1, n) * 8)
    _MAPS[key] = mm
    _SHARED[key] = np.frombuffer(mm, dtype=np.float64, count=n).reshape(shape)
    _SHARED[key][...] = 0.0
    return _SHARED[key]


def release_shared(key: str) -> None:
    """Drop a shared buffer (after its contents were copied out)."""
    _SHARED.pop(key, None)
    mm = _MAPS.pop(key, None)
    if mm is not None:
        try:
            mm.close()
        except BufferError:  # a view of it is still alive somewhere: the GC frees the map later
            pass


# -- processes with ports of their own ------------------------------------------------------------------------------
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
    """The host partition (proc_params: runner factory, slots, port maps)."""


class TokenSource(_Ported):
    """The token of each graph step (proc_params: prompt ids, substeps, period)."""


class Sampler(_Ported):
    """Greedy sampling of each token's logits (proc_params: substeps, period, output slot, buffer key)."""


class PyLMHostBase(PyLoihiProcessModel):
    """Runs host stage k at slot stage_slots[k]; receives every core message each step (keeping those at their
    arrival slot) and sends every payload each step (the value at its send slot, zeros otherwise)."""

    def __init__(self, proc_params: dict) -> None:
        super().__init__(proc_params)
        p = proc_params
        self.runner = p["runner_factory"]()
        self.period, self.stage_slots, self.output_slot = int(p["period"]), list(p["stage_slots"]), p["output_slot"]
        self.core_in: dict[str, tuple[str, int]] = p["core_in"]  # port -> (core node, arrival slot)
        self.payload_out: dict[str, tuple[str, int]] = p["payload_out"]  # port -> (HostToCore node, send slot)
        self.token_input, self.output = p["token_input"], p["output"]
        self.dtype, self.sizes = p["dtype"], p["sizes"]
        self.values: dict[str, np.ndarray] = {}

    def run_spk(self) -> None:
        slot = (self.time_step - 1) % self.period
        token = self.tok.recv()
        if slot == 0:
            self.values = {self.token_input: np.asarray(token, dtype=np.float64)}
        for port, (node, at) in self.core_in.items():
            x = getattr(self, port).recv()
            if slot == at:
                self.values[node] = np.asarray(x)
        for k, at in enumerate(self.stage_slots):
            if at == slot:
                self.values.update(self.runner.step_stage(k, self.values))
        for port, (node, at) in self.payload_out.items():
            out = getattr(self, port)
            if slot == at:
                out.send(np.asarray(self.values[node]).astype(self.dtype).reshape(-1))
            else:
                out.send(np.zeros(self.sizes[port], dtype=self.dtype))
        if slot == self.output_slot:
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


# -- building -------------------------------------------------------------------------------------------------------
@dataclass
class LMNetwork:
    """Live processes of one generation: `processes` (neuro-core, by node), the host, token source and sampler,
    `senders` (node -> the out port that carries its value: every neuro-core process that sends, and every
    HostToCore payload at the host), the models Lava is told to use, and the run's length."""

    data: dict
    processes: dict[str, AbstractProcess]
    host: AbstractProcess
    source: AbstractProcess
    sampler: AbstractProcess
    senders: dict[str, Any]
    models: dict[Any, type[PyLoihiProcessModel]]
    steps: int  # Lava steps: (P + N) tokens x substeps graph steps x period
    fed: int  # tokens fed: P + N
    logits_key: str
    extra: dict[str, Any] = field(default_factory=dict)
    startup_s: float = 0.0  # run_lm_network: compiling the process graph and starting its OS processes
    token_s: list[float] = field(default_factory=list)  # run_lm_network: wall time of each fed token's steps
    os_processes: int = 0  # run_lm_network: OS processes Lava started


def _kwargs(entry: dict, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["kwargs"].items()}
    for k in entry["arrays"]:
        a = np.asarray(arrays[f"{entry['name']}/{k}"])
        kwargs[k] = a.astype(np.int64) if a.dtype.kind in "iu" else a  # stored narrow (module docstring)
    return kwargs


def build_lm_network(data: dict, arrays: Mapping[str, np.ndarray], own: Any, runner_factory: Callable[[], Any],
                     prompt_ids: list[int], n_tokens: int) -> LMNetwork:
    """The network of module docstring, set to feed `prompt_ids` and generate `n_tokens` greedily. `own`: the module
    of spikecc's processes (spikecc.backends.lava.processes, or its copy beside a generated module)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"network data of format {data.get('format')!r}; this builder reads format {FORMAT} "
                         "(regenerate the build with the spikecc that wrote this module)")
    prompt_ids = [int(i) for i in prompt_ids]
    if not prompt_ids or n_tokens < 0:
        raise ValueError("give at least one prompt token and a number of tokens >= 0")
    classes = {**LAVA_CLASSES, **{cls.__name__: cls for cls in own.PROCESSES}}
    procs: dict[str, AbstractProcess] = {}
    ports: dict[str, tuple[str, str]] = {}
    for entry in data["processes"]:
        name = entry["name"]
        kwargs = _kwargs(entry, arrays)
        proc = classes[entry["cls"]](**kwargs, **({"name": name} if entry["named"] else {}))
        proc.name = name  # also where the constructor takes no name: compile_config's partitioning is by name
        procs[name] = proc
        ports[name] = (entry["in_port"], entry["out_port"])
    for src, dst in data["connections"]:
        getattr(procs[src], ports[src][1]).connect(getattr(procs[dst], ports[dst][0]))

    h = data["host"]
    fixed = data["mode"] == "fixed"
    period, substeps, vocab = int(data["period"]), int(data["substeps"]), int(data["vocab"])
    fed = len(prompt_ids) + int(n_tokens)
    dtype = np.int32 if fixed else np.float64
    outs = {"logits": vocab, **{p["port"]: p["size"] for p in h["payload_out"]}}
    host = _ported(LMHost, {"tok": 1, **{c["port"]: c["size"] for c in h["core_in"]}}, outs,
                   runner_factory=runner_factory, period=period, stage_slots=h["stage_slots"],
                   output_slot=h["output_slot"], core_in={c["port"]: (c["node"], c["slot"]) for c in h["core_in"]},
                   payload_out={p["port"]: (p["node"], p["slot"]) for p in h["payload_out"]},
                   token_input=h["token_input"], output=h["output"], dtype=dtype, sizes=outs)
    host.name = "host"
    key = f"spikecc-lm-{next(_KEYS)}"
    shared_array(key, (fed, vocab))
    source = _ported(TokenSource, {"sampled": 1}, {"tok": 1}, prompt=prompt_ids, substeps=substeps, period=period)
    sampler = _ported(Sampler, {"logits": vocab}, {"s_out": 1}, substeps=substeps, period=period,
                      output_slot=h["output_slot"], key=key)
    source.name, sampler.name = "token_source", "sampler"
    for p in h["payload_out"]:
        for dst in p["to"]:
            getattr(host, p["port"]).connect(getattr(procs[dst], ports[dst][0]))
    for c in h["core_in"]:
        getattr(procs[c["node"]], ports[c["node"]][1]).connect(getattr(host, c["port"]))
    source.tok.connect(host.tok)
    host.logits.connect(sampler.logits)
    sampler.s_out.connect(source.sampled)

    senders = {n: getattr(procs[n], ports[n][1]) for n in procs if ports[n][1] is not None}
    senders.update({p["node"]: getattr(host, p["port"]) for p in h["payload_out"]})
    tag = data["select_tag"]
    models: dict[Any, type[PyLoihiProcessModel]] = {
        p: own.model_for(type(p), tag) for p in procs.values() if type(p) in own.PROCESSES}
    wire = np.int32 if fixed else float  # payloads and core messages: integers in fixed point
    models.update({host: _model_for(host, PyLMHostBase, {"*": wire, "tok": float, "logits": float}),
                   source: _model_for(source, PyTokenSourceBase, {"*": float}),
                   sampler: _model_for(sampler, PySamplerBase, {"*": float})})
    return LMNetwork(data=data, processes=procs, host=host, source=source, sampler=sampler, senders=senders,
                     models=models, steps=fed * substeps * period, fed=fed, logits_key=key)


def load_lm_network(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """network.json and params.npz of one mode of a generated build (the arrays read into memory)."""
    d = Path(directory)
    data = json.loads((d / NETWORK_FILE).read_text(encoding="utf8"))
    with np.load(d / PARAMS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    return data, arrays


# -- running --------------------------------------------------------------------------------------------------------
def run_config(net: LMNetwork, hardware: bool = False, extra_models: Mapping | None = None):
    """Loihi2SimCfg with the mode's select tag, or (hardware) Loihi2HwCfg, which prefers Loihi 2 neuro-core models
    (lava-loihi's, for Lava's Dense, LIF, GradedVec) and keeps the Python models named here for the rest. Lava 0.10's
    compiler looks the exception map up by process instance (compiler_graphs.py, ProcGroupDiGraphs), RunConfig.select
    by class (run_configs.py): both are given."""
    from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

    models = {**net.models, **(extra_models or {})}
    exceptions = {**models, **{type(p): m for p, m in models.items()}}
    if hardware:
        if net.data["mode"] != "fixed":
            raise ValueError("Loihi 2 computes in fixed point: run floating_pt in simulation (hardware=False)")
        return Loihi2HwCfg(exception_proc_model_map=exceptions)
    return Loihi2SimCfg(select_tag=net.data["select_tag"], exception_proc_model_map=exceptions)


def compile_config(net: LMNetwork, cores: Mapping[str, list] | None) -> dict:
    """Lava's compile_config with the core assignment: {"partitioning": {process name: {"cores": [{"chip", "core",
    "neurons": [lo, hi]}, ...]}}} for every process of `net` that `cores` (node -> that list) assigns.

    lava-nc 0.10 reads compile_config["partitioning"] in Compiler._compile_proc_groups (lava/magma/compiler/
    compiler.py) and hands it to every SubCompiler.compile; its open-source PyProcCompiler
    (subcompilers/py/pyproc_compiler.py) ignores it; the neuro-core subcompiler that would use it comes with Intel's
    lava-loihi, whose expected layout lava-nc does not define (only Dict[str, Dict]). Lava's own Mapper
    (lava/magma/compiler/mapper.py) then numbers logical cores in the order it meets them (virtual chip = id // 128)."""
    parts = {net.processes[n].name: {"cores": list(c)} for n, c in (cores or {}).items() if n in net.processes}
    return {"partitioning": parts} if parts else {}


class LavaRunError(RuntimeError):
    """A Lava run failed; the message holds the first error a Lava OS process reported."""


def runtime_actors(process: AbstractProcess) -> list:
    runtime = process.runtime
    infra = getattr(runtime, "_messaging_infrastructure", None)
    return list(getattr(infra, "actors", []) or [])


def child_error(process: AbstractProcess) -> str:
    """The last line of the first traceback a Lava OS process reported, or ''."""
    for actor in runtime_actors(process):
        try:
            exc = actor.exception
        except (OSError, ValueError, EOFError):
            continue
        if exc:
            lines = [ln for ln in str(exc[1]).strip().splitlines() if ln.strip()]
            return lines[-1].strip() if lines else repr(exc[0])
    return ""


def stop_runtime(process: AbstractProcess, failed: bool) -> None:
    """Stop the Lava runtime of `process` and end its OS processes, also after a failure.

    After an error (or an interrupt), Lava 0.10's Runtime.stop sends STOP to its runtime services and waits
    for answers from services that are gone, forever (runtime.py:485-497). So on failure: terminate what
    still runs, mark the runtime not started, and let stop() only tear down channels and shared memory.
    """
    runtime = process.runtime
    if runtime is None:
        return
    if not failed:
        process.stop()
        return
    for actor in runtime_actors(process):
        if getattr(actor, "_is_done", False):
            continue
        try:
            if actor.is_alive():
                actor.terminate()
        except ValueError:  # already closed
            pass
    runtime._is_started = False
    runtime.stop()


def run_lm_network(net: LMNetwork, run_cfg: Any, compile_cfg: dict | None = None,
                   on_token: Callable[[int, int, float], None] | None = None) -> np.ndarray:
    """Run the whole generation and return the logits after each fed token, (P + N, vocab). Lava runs one fed token
    at a time (substeps x period steps per run call; the runtime keeps every state between calls), so each token's
    wall time is known: `on_token(i, fed, seconds)` after each. Sets net.startup_s (compiling the process graph and
    starting its OS processes), net.token_s and net.os_processes (what Lava really started). The runtime is
    stopped in every case; the shared logits buffer is released."""
    import multiprocessing
    import time

    from lava.magma.core.run_conditions import RunSteps

    per_token = net.steps // net.fed
    try:
        failed = True
        try:
            t0 = time.perf_counter()
            net.host.create_runtime(run_cfg=run_cfg, compile_config=compile_cfg or None)
            net.startup_s = time.perf_counter() - t0
            net.os_processes = len(multiprocessing.active_children())
            for i in range(net.fed):
                t = time.perf_counter()
                net.host.run(condition=RunSteps(num_steps=per_token))
                net.token_s.append(time.perf_counter() - t)
                if on_token is not None:
                    on_token(i, net.fed, net.token_s[-1])
            failed = False
        except RuntimeError as e:  # Lava's report of an exception inside a process model
            raise LavaRunError(f"the Lava run failed: {child_error(net.host) or e}") from e
        finally:
            stop_runtime(net.host, failed)
        return np.array(_SHARED[net.logits_key], copy=True)
    finally:
        release_shared(net.logits_key)


def greedy_tokens(logits: np.ndarray, n_prompt: int) -> list[int]:
    """The generated ids: the argmax of the logits after the last prompt token and after each generated one."""
    return [int(np.argmax(logits[i])) for i in range(n_prompt - 1, len(logits) - 1)]
