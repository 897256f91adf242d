"""When each part of a compiled language model acts within one graph step, in Lava steps ("slots").

A compiled LM graph is token-synchronous: one graph step is one token (SpikeLM: one spike step), and its synapses
(LoihiDense with delay 0) deliver in the same step. In Lava every Dense delivers one Lava step late, so one graph
step takes D Lava steps, D = the depth of the step's dataflow. Each neuro-core process acts at one slot
p in 0..D-1 of every graph step (its phase; spikecc's phase-gated processes, spikecc.backends.lava.processes) and
the host process runs each host stage at one slot:

    host stage 0                         slot 0 (the token arrives)
    a Dense fed at slot s                delivers at slot s + 1
    a neuron, relay                      its Dense inputs' delivery slot (all must agree)
    a router                             its source neuron's slot (it is that neuron's axons)
    host stage k > 0                     the latest slot at which a core value it reads arrives (the host receives
                                         a core message in the step it is sent), and no earlier than stage k - 1
    a HostToCore payload                 sent at the slot its Dense consumer must deliver at, minus 1: the host
                                         holds a payload until then, so that every input of a neuron arrives in
                                         the same slot (SpikeGPT's K synapse sums the current and the previous
                                         token's LayerNorm output, both from the host)

D = 1 + the latest slot. The stage structure comes from the ONNX host program (its stages' core inputs and
outputs, its core phases' nodes), handed over as plain data: this module imports no other backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spikecc.errors import BackendError
from spikecc.ir.graph import Graph
from spikecc.ir.loihi_ops import LoihiDense
from spikecc.ir.neurocore_ops import SpikeRouter


@dataclass
class LMSchedule:
    period: int  # D: Lava steps per graph step
    node_slot: dict[str, int]  # neuro-core node -> the slot it acts at (Dense: the slot it delivers at)
    stage_slot: list[int]  # host stage k -> the slot it runs at
    send_slot: dict[str, int]  # HostToCore payload -> the slot the host sends it
    arrival_slot: dict[str, int]  # core node read by the host -> the slot its message reaches the host
    output_slot: int = 0  # the slot the graph's outputs (logits) are ready
    notes: list[str] = field(default_factory=list)


def lm_schedule(g: Graph, stages: Sequence, phases: Sequence) -> LMSchedule:
    """The schedule of a compiled LM graph `g`. `stages`: the host program's stages, each with `core_inputs`
    (core nodes it reads) and `core_outputs` (HostToCore payloads it produces); `phases`: its core phases, each
    with `nodes` (the neuro-core nodes, in schedule order) (spikecc.backends.onnx.program)."""
    payload_of: dict[str, int] = {}  # HostToCore payload -> the stage that makes it
    for k, st in enumerate(stages):
        for name in st.core_outputs:
            payload_of[name] = k
    node_slot: dict[str, int] = {}
    stage_slot: list[int] = []
    send: dict[str, int] = {}
    arrival: dict[str, int] = {}
    for k, st in enumerate(stages):
        slot = stage_slot[-1] if stage_slot else 0
        for name in st.core_inputs:
            if name not in node_slot:
                raise BackendError(f"host stage {k} reads '{name}', which no earlier core phase computes")
            arrival[name] = node_slot[name]
            slot = max(slot, node_slot[name])
        stage_slot.append(slot)
        if k < len(phases):
            _phase_slots(g, phases[k].nodes, payload_of, stage_slot, node_slot, send)
    for k in range(len(stages), len(phases)):
        _phase_slots(g, phases[k].nodes, payload_of, stage_slot, node_slot, send)
    last = max([*node_slot.values(), *stage_slot, 0])
    return LMSchedule(period=last + 1, node_slot=node_slot, stage_slot=stage_slot, send_slot=send,
                      arrival_slot=arrival, output_slot=stage_slot[-1] if stage_slot else 0)


def _phase_slots(g: Graph, nodes: Sequence[str], payload_of: dict[str, int], stage_slot: list[int],
                 node_slot: dict[str, int], send: dict[str, int]) -> None:
    """Slots of one core phase's nodes (module docstring); host payloads are held back to align a neuron's
    inputs, core inputs cannot be: a neuron whose core inputs arrive at different slots is refused."""
    for n in nodes:
        op = g.nodes[n]
        srcs = [e.src for e in g.in_edges(n)]
        if isinstance(op, LoihiDense):
            (src,) = srcs
            node_slot[n] = (stage_slot[payload_of[src]] if src in payload_of else node_slot[src]) + 1
            continue
        if isinstance(op, SpikeRouter):
            node_slot[n] = node_slot[srcs[0]]
            continue
        dense = [s for s in srcs if isinstance(g.nodes[s], LoihiDense)]
        if not dense:
            raise BackendError(f"node '{n}': a neuro-core node fed without a synapse ({', '.join(srcs)}); neurons "
                               "take their input through LoihiDense")
        slot = max(node_slot[d] for d in dense)
        for d in dense:
            (src,) = g.predecessors(d)
            if node_slot[d] == slot:
                continue
            if src not in payload_of:
                raise BackendError(f"node '{n}': its synaptic inputs from neuro-core node '{src}' arrive at Lava slot "
                                   f"{node_slot[d]}, others at {slot}; equalise the path lengths (spikecc aligns "
                                   "only inputs that come from the host)")
            _hold(send, src, slot - 1, n)
            node_slot[d] = slot
        for d in dense:
            (src,) = g.predecessors(d)
            if src in payload_of:
                _hold(send, src, node_slot[d] - 1, n)
        node_slot[n] = slot


def _hold(send: dict[str, int], payload: str, slot: int, consumer: str) -> None:
    if send.setdefault(payload, slot) != slot:
        raise BackendError(f"payload '{payload}' is needed at Lava slots {send[payload]} and {slot} (by '{consumer}'); "
                           "a host message is sent once per graph step")
