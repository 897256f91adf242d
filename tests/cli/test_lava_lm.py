"""Whole language models in Lava: `spikecc lava BUILD --prompt` and `spikecc verify BUILD`.

Each shipped checkpoint, compiled with default options, generates in Lava's Loihi 2 simulator (fixed_pt and
floating_pt, token after token inside Lava) exactly what spikecc's simulator generates, with the same spikes and
messages in every neuro-core layer at every graph step; verify finds planted faults in the Lava network (one synapse
weight; one host op) and names the layer and the first step they reach."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest
from clitools import run

from spikecc.backends.cpu.lm_runner import LMSimulator
from spikecc.driver import lm_build_graph
from spikecc.ir.formats import is_fixed
from spikecc.ir.infer import infer_signals
from spikecc.ir.loihi_ops import LoihiDense
from spikecc.ir.neurocore_ops import HostToCore
from spikecc.lm_lava import lava_generate, verify_build
from spikecc.models.tokenizer import require_tokenizer

PROMPT = "ROMEO:"
TOKENS = 16


def simulator_generation(graph, mode: str, prompt: str, n: int, nodes: list[str]):
    """spikecc's simulator, greedy, recording `nodes` per graph step (written here apart from verify's own)."""
    tok = require_tokenizer(graph.metadata, "build")
    lm = LMSimulator(graph, mode=mode)
    lm.sim.start()
    ids = tok.encode(prompt)
    rec = {n: [] for n in nodes}
    fed, out = list(ids), []
    for i in range(len(ids) + n - 1):
        logits = lm.feed(fed[i], rec)
        if i >= len(ids) - 1:
            out.append(int(np.argmax(logits)))
            fed.append(out[-1])
    return out, {k: np.concatenate(v).reshape(-1, np.asarray(v[0]).shape[-1]) for k, v in rec.items()}


@pytest.mark.parametrize("name", ["spikegpt", "spikerwkv", "spikelm"])
@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_lava_generates_what_the_simulator_does(shipped_lm_build, name, mode):
    build = shipped_lm_build(name)
    graph = lm_build_graph(build, fixed_point=mode == "fixed")
    gen = lava_generate(graph, PROMPT, TOKENS, mode)
    res = gen.result
    core = [n for n, op in graph.nodes.items()
            if graph.annotation(n, "partition") == "neurocore" and not isinstance(op, LoihiDense)]
    assert core and set(core) <= set(res.outputs)
    tokens, values = simulator_generation(graph, mode, PROMPT, TOKENS, core)
    assert len(res.tokens) == TOKENS
    assert res.tokens == tokens
    substeps = int(graph.metadata.get("substeps", 1))
    signals = infer_signals(graph)
    for n in core:
        lava, sim = res.outputs[n], values[n]
        assert lava.shape[0] == (len(gen.prompt_ids) + TOKENS) * substeps
        # the last token fed to Lava is not fed to the simulator (nothing is sampled after it)
        steps = sim.shape[0]
        if mode == "fixed" or signals[n].kind in ("binary", "ternary"):  # spikes, integer messages: bit for bit
            assert np.array_equal(lava[:steps], sim), f"{n}: Lava {mode} differs from spikecc {mode}"
        else:  # float relays carry host values that onnxruntime and numpy may round differently
            np.testing.assert_allclose(lava[:steps], sim, rtol=1e-9, atol=1e-12, err_msg=n)
    assert sum(np.count_nonzero(values[n]) for n in core) > 0  # the comparison is not over silent layers
    assert res.processes >= len(core)  # one OS process per Lava process
    assert not multiprocessing.active_children()  # none outlives the run


def test_lava_cli_prints_what_generate_prints(shipped_lm_build):
    build = shipped_lm_build("spikegpt")
    lava = run("lava", build, "--prompt", PROMPT, "--tokens", 12, "--fixed-point")
    gen = run("generate", build, "--prompt", PROMPT, "--tokens", 12, "--fixed-point")
    assert lava.exit_code == 0 and gen.exit_code == 0, lava.output + gen.output
    assert lava.stdout == gen.stdout and lava.stdout.startswith(PROMPT) and len(lava.stdout.strip()) > len(PROMPT)
    assert "per generated token" in lava.stderr and "OS processes" in lava.stderr
    assert not multiprocessing.active_children()


def test_lava_cli_input_rules(shipped_lm_build, one_line_error, networks_dir):
    build = shipped_lm_build("spikegpt")
    assert "give --prompt" in one_line_error(["lava", str(build)])
    assert "--prompt needs a language-model build" in one_line_error(
        ["lava", str(networks_dir / "ff_lif.nir"), "--input", str(networks_dir / "ff_lif.input.npy"),
         "--prompt", "x"])
    assert "give --input" in one_line_error(["lava", str(networks_dir / "ff_lif.nir")])


def test_verify_cli_reports_every_pair(shipped_lm_build, examples_dir):
    build = shipped_lm_build("spikegpt")
    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    r = run("verify", build, "--prompt", PROMPT, "--tokens", 8, "--checkpoint", ckpt, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] and not report["not_run"]
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert set(pairs) == {("reference", "spikecc float"), ("spikecc fixed", "lava fixed_pt"),
                          ("spikecc float", "lava floating_pt"), ("spikecc float", "spikecc fixed")}
    for (a, b), p in pairs.items():
        assert p["required"] == ((a, b) != ("spikecc float", "spikecc fixed"))
        assert p["tokens"] == 8
        if p["required"]:
            assert p["exact"] and p["tokens_agree"] == 8 and p["first_divergence"] is None
            assert p["layer_agreement"] and set(p["layer_agreement"].values()) == {1.0}
    assert len(set(report["texts"].values())) <= 2  # float runs agree, fixed runs agree
    table = run("verify", build, "--prompt", PROMPT, "--tokens", 4, "--checkpoint", ckpt)
    assert table.exit_code == 0 and "every required pair agrees exactly" in table.stdout


def test_verify_needs_the_build_s_checkpoint(shipped_lm_build, examples_dir, one_line_error):
    build = shipped_lm_build("spikegpt")
    other = examples_dir / "checkpoints" / "spikelm-shakespeare.pt"
    msg = one_line_error(["verify", str(build), "--prompt", PROMPT, "--checkpoint", str(other)])
    assert "not the checkpoint" in msg and "SHA-256" in msg


def _fixed_only(edit):
    """A lava_edit that changes the fixed-point graph only (verify hands it both)."""
    return lambda graph: edit(graph.copy()) if is_fixed(graph) else graph


def test_verify_names_a_planted_weight_fault(shipped_lm_build, examples_dir):
    """One weight of one synapse layer in Lava's fixed_pt network changed: verify names the relay that synapse feeds
    and the first graph step whose input reaches that weight (where the payload's column is non-zero)."""
    build = shipped_lm_build("spikegpt")
    fixed = lm_build_graph(build, True)
    layer, payload = "blocks.1.ffn.key.prev", "blocks.1.ffn.shift.to_core"
    assert [e.src for e in fixed.in_edges(layer)] == [payload]
    relay = fixed.successors(layer)[0]
    _, values = simulator_generation(fixed, "fixed", PROMPT, 6, [payload])
    x = values[payload]
    col = int(np.argmax(np.abs(x[1])))  # the shifted input is zero at step 0: the fault shows from step 1 on
    first_step = int(np.flatnonzero(x[:, col])[0])
    row = 3

    def plant(graph):
        w = np.array(graph.nodes[layer].weight, copy=True)
        w[row, col] = -127 if w[row, col] > 0 else 127
        graph.nodes[layer].weight = w.astype(graph.nodes[layer].weight.dtype)
        return graph

    report = verify_build(build, PROMPT, 6, examples_dir / "checkpoints" / "spikegpt-shakespeare.pt",
                          lava_edit=_fixed_only(plant))
    assert not report["ok"]
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    bad = pairs[("spikecc fixed", "lava fixed_pt")]
    assert not bad["exact"]
    first = bad["first_divergence"]
    assert (first["layer"], first["step"], first["element"]) == (relay, first_step, row)
    assert first["fed_by"] == [layer]
    assert pairs[("spikecc float", "lava floating_pt")]["exact"]  # the float network was left alone


def test_verify_names_a_planted_host_op_fault(shipped_lm_build, examples_dir):
    """One row of the embedding (a host op, run by Lava's host process in onnxruntime) changed for a token that
    first appears at prompt position k: verify names the first payload it reaches at graph step k, and the host ops
    behind it include the embedding."""
    build = shipped_lm_build("spikegpt")
    fixed = lm_build_graph(build, True)
    tok = require_tokenizer(fixed.metadata, "build")
    ids = tok.encode(PROMPT)
    k = 3
    assert ids[k] not in ids[:k]
    emb = next(n for n, op in fixed.nodes.items() if type(op).__name__ == "Embedding")

    def plant(graph):
        w = np.array(graph.nodes[emb].weight, copy=True)
        w[ids[k]] = -w[ids[k]]
        graph.nodes[emb].weight = w
        return graph

    report = verify_build(build, PROMPT, 2, examples_dir / "checkpoints" / "spikegpt-shakespeare.pt",
                          lava_edit=_fixed_only(plant))
    assert not report["ok"]
    bad = {(p["a"], p["b"]): p for p in report["pairs"]}[("spikecc fixed", "lava fixed_pt")]
    first = bad["first_divergence"]
    assert first["step"] == k
    assert isinstance(fixed.nodes[first["layer"]], HostToCore)
    assert emb in first["fed_by"]
