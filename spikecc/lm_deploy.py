"""BUILD/lava/ of a language-model build: a generated Lava module that rebuilds the whole process graph and
generates text in Lava without spikecc (spikecc.backends.lava.lm_codegen lists its files; docs/lava-deploy.md).

Driver level: it composes the ONNX backend (the host program of each mode, saved as ONNX files), the Lava backend
(the schedule, the process graph as plain data, the module's files) and the compiler's mapping (which cores each
neuro-core node was assigned), which do not import each other.

    lava_deploy_files(float_graph, fixed_graph, mapping) -> {relative path: bytes or Npz (bytes() of it)}
    write_lm_lava(out_dir, float_graph, fixed_graph, mapping) -> the module's path
    core_assignment(graph, mapping) -> node -> [{"chip", "core", "neurons": [lo, hi]}]
"""

from __future__ import annotations

import os
from pathlib import Path

from spikecc.errors import BackendError
from spikecc.files import Npz, atomic_write_bytes, json_text
from spikecc.ir import Graph

GRAPHS = {"fixed": "lowered.nir", "float": "float.nir"}  # the build file each mode's network comes from


def core_assignment(graph: Graph, mapping) -> dict[str, list[dict]]:
    """The cores the mapping (spikecc.compiler.mapping.Mapping) put each neuro-core node on: a neuron or relay
    population's fragments (chip, core on that chip, its neuron range); a synapse layer (LoihiDense) lives with the
    neurons it feeds (Loihi keeps synapses at their destination core), a SpikeRouter with the neurons whose spikes it
    routes. Nodes the mapping does not place are left out."""
    from spikecc.ir.loihi_ops import LoihiDense
    from spikecc.ir.neurocore_ops import SpikeRouter

    out: dict[str, list[dict]] = {}
    for core in sorted(mapping.cores, key=lambda c: c.index):
        for f in core.fragments:
            out.setdefault(f.pop.layer, []).append({"chip": int(core.chip), "core": int(core.slot),
                                                    "neurons": [int(f.lo), int(f.hi)]})
    for n, op in graph.nodes.items():
        if n in out or graph.annotation(n, "partition") != "neurocore":
            continue
        near = graph.successors(n) if isinstance(op, LoihiDense) else \
            graph.predecessors(n) if isinstance(op, SpikeRouter) else []
        placed = [m for m in near if m in out]
        if len(placed) == 1:
            out[n] = out[placed[0]]
    order = {n: i for i, n in enumerate(graph.nodes)}
    return {n: out[n] for n in sorted(out, key=lambda n: order.get(n, len(order)))}


def lava_deploy_files(float_graph: Graph, fixed_graph: Graph, mapping=None) -> dict[str, bytes | Npz]:
    """Every file of BUILD/lava/ (both modes) by relative path; the same graphs and mapping give the same bytes
    (a parameter file is an `Npz`, streamed into its file; bytes() gives its bytes)."""
    from spikecc.backends.lava.lm_codegen import STAGE_RUNNER_STEM, lm_module_files
    from spikecc.backends.lava.lm_network import lm_network_data
    from spikecc.backends.lava.lm_schedule import lm_schedule
    from spikecc.backends.onnx import export_host_program
    from spikecc.models.tokenizer import CharTokenizer, require_tokenizer

    modes = {}
    for mode, graph in (("fixed", fixed_graph), ("float", float_graph)):
        program = export_host_program(graph, mode)
        schedule = lm_schedule(graph, program.stages, program.core_phases)
        data, arrays = lm_network_data(graph, schedule, mode)
        modes[mode] = (data, arrays, program.files())
    tok = require_tokenizer(fixed_graph.metadata, "the build")
    tokenizer = json_text({"chars": tok.chars}) if isinstance(tok, CharTokenizer) else tok.json_text
    if mapping is None:
        cores = {"nodes": {}, "note": "the build has no mapping onto cores (no budget.json): Lava places the processes"}
    else:
        cores = {"nodes": core_assignment(fixed_graph, mapping), "target": mapping.target.name,
                 "chips": int(mapping.chips), "cores": int(mapping.n_cores),
                 "note": "from budget.json (spikecc's mapping): chip, core on that chip, neuron range per node"}
    info = {"family": fixed_graph.metadata.get("family"), "context": fixed_graph.metadata.get("context", 0),
            "summary": f"lowered.nir and float.nir ({len(fixed_graph.nodes)} nodes)", "tokenizer_kind": tok.kind}
    return lm_module_files(modes, tokenizer, cores, {STAGE_RUNNER_STEM: "spikecc.backends.onnx.stage_runner"}, info)


def write_lm_lava(out_dir: str | os.PathLike, float_graph: Graph, fixed_graph: Graph, mapping=None) -> Path:
    """Write BUILD/lava/ into `out_dir` (created; each file written atomically). Returns the module's path."""
    from spikecc.backends.lava.lm_codegen import MODULE_NAME

    try:
        files = lava_deploy_files(float_graph, fixed_graph, mapping)
    except BackendError as e:
        raise BackendError(f"writing the Lava module: {e}") from None
    out = Path(out_dir)
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, content)
    return out / MODULE_NAME
