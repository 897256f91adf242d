"""Run a sequence-encoder graph (SpikeLM's BERT layout, spikecc.compiler.frontends.spikelm.export_spikelm_bert) in
the CPU simulator: whole sequences in, their last hidden states out.

Protocol of an encoder graph: three Inputs, ``input_ids``, ``token_type_ids`` and ``attention_mask``, each (L,);
a sequence is fed at each of the T = ``substeps`` steps of its presentation (T spike steps), and the Output holds
(L, hidden) states valid at the last of them. Sequences follow one another in one run: every op of the graph
restarts each T steps (SpikeLM's neurons restart per token, attention and the read-out mean work per step).

The runner steps the simulator (`Simulator.step`), keeping only the outputs of the nodes it is asked to record:
a BERT-base graph holds about 1 GB of node outputs per step, which a whole-run `Simulator.run` would keep for every
step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from spikecc.backends.cpu.simulator import Simulator
from spikecc.errors import GraphError, InputFileError
from spikecc.ir import Graph

ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def is_encoder(graph: Graph) -> bool:
    """Whether `graph` follows the encoder protocol (module docstring)."""
    return sorted(graph.inputs()) == sorted(ENCODER_INPUTS)


@dataclass
class EncoderRun:
    hidden: np.ndarray  # (sequences, L, hidden): the Output at the last step of each sequence
    traces: dict[str, np.ndarray] = field(default_factory=dict)  # recorded node -> (steps, node size), all steps


class EncoderSimulator:
    """A Simulator plus the sequence protocol of encoder graphs."""

    def __init__(self, graph: Graph, mode: str = "float") -> None:
        """`mode`: "float", or "fixed" to run a compiled encoder's neuro-core part bit-accurately (its host ops
        stay float: each node runs in its own number format, spikecc.ir.formats)."""
        if not is_encoder(graph):
            raise GraphError(f"the graph's inputs are {', '.join(sorted(graph.inputs()))}, not an encoder's "
                             f"({', '.join(ENCODER_INPUTS)}); export a BERT-layout checkpoint")
        self.graph = graph
        self.sim = Simulator(graph, mode=mode)
        self.seq_len = int(np.prod(self.sim.shapes["input_ids"]))
        self.substeps = int(graph.metadata.get("substeps", 1))
        (self.output,) = graph.outputs()

    def run(self, input_ids, token_type_ids=None, attention_mask=None, record: Iterable[str] = ()) -> EncoderRun:
        """Feed each row of `input_ids` (sequences, L) for `substeps` steps from a fresh state. Token types
        default to 0 (one sentence) and the mask to 1 (no padding). `record`: nodes whose outputs to keep."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or ids.shape[1] != self.seq_len:
            raise InputFileError(f"an encoder graph for sequences of {self.seq_len} tokens is given ids shaped "
                                 f"{ids.shape}; give (sequences, {self.seq_len})")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        record = list(record)
        traces: dict[str, list[np.ndarray]] = {n: [] for n in record}
        hidden = []
        self.sim.start()
        for row in range(ids.shape[0]):
            feed = {"input_ids": ids[row], "token_type_ids": types[row], "attention_mask": mask[row]}
            for _ in range(self.substeps):
                outs = self.sim.step({k: v.astype(np.float64) for k, v in feed.items()})
                for n in record:
                    traces[n].append(np.asarray(outs[n]).copy())
            hidden.append(np.asarray(outs[self.output], dtype=np.float64).reshape(self.sim.shapes[self.output]))
        return EncoderRun(hidden=np.stack(hidden), traces={n: np.stack(v) for n, v in traces.items()})
