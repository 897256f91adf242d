"""A whole compiled language model as one Lava process graph, generating text inside Lava, token after token.

    lm_network_data(g, schedule, mode) -> (data, arrays)     the process graph as plain data (JSON + arrays)
    run_lm_lava(g, schedule, runner_factory, prompt_ids, n, mode) -> LMLavaResult

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
- TokenSource sends the token of the current graph step, Sampler takes the argmax of each token's logits and sends
  it back (spikecc.backends.lava.lm_processes says how the loop avoids a cycle within a Lava step).
- One Probe records every neuro-core node's output at every Lava step (spikecc.backends.lava.network), and the
  Sampler the logits of every token, into shared memory the parent reads after the run.

The graph becomes plain data here (`lm_network_data`: process kinds with their arguments, connections, slots, port
maps); spikecc.backends.lava.lm_processes.build_lm_network turns that data into live processes. The deployable
module of a build (BUILD/lava/, spikecc.backends.lava.lm_codegen) saves the same data and runs a copy of the same
builder, so both build the network with the same code.

A generation of N tokens after a P-token prompt feeds P + N tokens (as spikecc's LMSimulator does), each for
`substeps` graph steps (SpikeLM: T spike steps) of D Lava steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikecc.backends.lava import lm_processes, processes
from spikecc.backends.lava.lm_schedule import LMSchedule
from spikecc.backends.lava.lowering import LoweringContext, lower_node
from spikecc.backends.lava.network import make_probe_class, probe_model_for
from spikecc.backends.lava.plan import SELECT_TAGS
from spikecc.errors import BackendError
from spikecc.files import json_text
from spikecc.ir.graph import Graph
from spikecc.ir.infer import infer_shapes
from spikecc.ir.neurocore_ops import CoreToHost, HostToCore


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


def _narrow(a: np.ndarray) -> np.ndarray:
    """An integer array in the narrowest signed width that holds it (the builder widens it back to int64)."""
    if a.dtype.kind not in "iu" or a.size == 0:
        return a
    lo, hi = int(a.min()), int(a.max())
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return a.astype(t)
    return a.astype(np.int64)


def lm_network_data(g: Graph, schedule: LMSchedule, mode: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The process graph of a compiled LM graph as plain data (lm_processes' module docstring gives the layout):
    JSON-ready `data` (it is what json.loads gives back: lists, no tuples) and `arrays` by "<node>/<kwarg>"."""
    if mode not in SELECT_TAGS:
        raise BackendError(f"Lava mode must be one of {', '.join(SELECT_TAGS)}, not {mode!r}")
    shapes = infer_shapes(g)
    size = {n: int(np.prod(s)) for n, s in shapes.items()}
    D = schedule.period
    entries: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    cores = core_nodes(g)
    specs = {}
    for n in cores:
        ann = dict(g.annotations.get(n, {}))
        if n in schedule.node_slot:
            ann.update(period=D, phase=schedule.node_slot[n] % D)
        in_edges = g.in_edges(n)
        spec = lower_node(g.nodes[n], LoweringContext(name=n, mode=mode, size=size[n],
                                                      in_size=size[in_edges[0].src] if in_edges else None,
                                                      annotations=ann))
        specs[n] = spec
        scalars, held = {}, []
        for k, v in spec.kwargs.items():
            if isinstance(v, np.ndarray):
                arrays[f"{n}/{k}"] = _narrow(v)
                held.append(k)
            else:
                scalars[k] = v
        entries.append({"name": n, "cls": spec.cls, "kwargs": scalars, "arrays": held, "named": spec.named,
                        "in_port": spec.in_port, "out_port": spec.out_port})
    (token_input,) = g.inputs()
    (output,) = g.outputs()
    to_core = [n for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    from_core = sorted({e.src for n, op in g.nodes.items() if isinstance(op, CoreToHost) for e in g.in_edges(n)},
                       key=list(g.nodes).index)
    host = {
        "token_input": token_input, "output": output,
        "core_in": [{"port": f"c{i}", "node": n, "size": size[n], "slot": schedule.arrival_slot[n]}
                    for i, n in enumerate(from_core)],
        "payload_out": [{"port": f"h{i}", "node": n, "size": size[n], "slot": schedule.send_slot.get(n, -1),
                         "to": [e.dst for e in g.out_edges(n)]} for i, n in enumerate(to_core)],
        "stage_slots": list(schedule.stage_slot), "output_slot": schedule.output_slot,
    }
    data = {"format": lm_processes.FORMAT, "mode": mode, "select_tag": SELECT_TAGS[mode], "period": D,
            "substeps": int(g.metadata.get("substeps", 1)), "vocab": size[output], "processes": entries,
            "connections": [[e.src, n] for n in cores for e in g.in_edges(n) if e.src in specs],
            "host": host}
    return json.loads(json_text(data)), arrays


def run_lm_lava(g: Graph, schedule: LMSchedule, runner_factory: Callable[[], Any], prompt_ids: list[int],
                n_tokens: int, mode: str, cores: Mapping[str, list] | None = None,
                on_token: Callable[[int, int, float], None] | None = None) -> LMLavaResult:
    """Generate `n_tokens` greedily after `prompt_ids` in Lava's Loihi2SimCfg (fixed_pt or floating_pt).
    `cores`: node -> core assignment, passed on as Lava's compile_config (lm_processes.compile_config).
    `on_token(i, fed, seconds)` after each fed token's Lava steps (lm_processes.run_lm_network)."""
    from spikecc.backends.lava.run import contained_processes

    data, arrays = lm_network_data(g, schedule, mode)
    net = lm_processes.build_lm_network(data, arrays, processes, runner_factory, prompt_ids, n_tokens)
    D, fed = schedule.period, net.fed
    recorded = list(net.senders)  # every neuro-core node that sends, and every payload the host sends
    sizes = [int(net.senders[n].shape[0]) for n in recorded]
    key = net.logits_key + "-probe"
    probe = make_probe_class()(key=key, steps=net.steps, in_sizes=sizes, ref_vars=[])
    for i, n in enumerate(recorded):
        net.senders[n].connect(getattr(probe, f"in_{i}"))
    cfg = lm_processes.run_config(net, hardware=False, extra_models={probe: probe_model_for(probe)})
    t0 = time.perf_counter()
    try:
        lm_processes.shared_array(key, (net.steps, sum(sizes)))
        with contained_processes():
            try:
                logits = lm_processes.run_lm_network(net, cfg, lm_processes.compile_config(net, cores), on_token)
            except lm_processes.LavaRunError as e:
                raise BackendError(str(e)) from e
        buf = np.array(lm_processes._SHARED[key], copy=True)
    finally:
        lm_processes.release_shared(key)
        lm_processes.release_shared(net.logits_key)
    wall = time.perf_counter() - t0
    outputs, col = {}, 0
    n_graph = fed * net.data["substeps"]
    for n, width in zip(recorded, sizes):
        slot = (schedule.send_slot[n] if n in schedule.send_slot else schedule.node_slot.get(n, 0)) % D
        rows = np.arange(n_graph) * D + slot
        outputs[n] = buf[rows, col:col + width]
        col += width
    return LMLavaResult(tokens=lm_processes.greedy_tokens(logits, len(prompt_ids)), logits=logits, outputs=outputs,
                        lava_steps=net.steps, period=D, processes=net.os_processes, wall_s=wall,
                        startup_s=net.startup_s, token_s=net.token_s)
