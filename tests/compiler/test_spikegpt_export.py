"""SpikeGPT checkpoint -> IR -> spikecc simulator reproduces the torch reference model."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from spikecc.backends.cpu.lm_runner import LMSimulator
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.frontends.spikegpt import export_spikegpt
from spikecc.ir import infer_signals, read, write
from spikecc.ir.lm_ops import WKV, DiscreteLIF, Embedding
from spikecc.models.data import CharVocab
from spikecc.models.spikegpt import SpikeGPT, SpikeGPTConfig, load_spikegpt, random_state_dict

VOCAB = CharVocab("abcdefghijklmnopqrstuvwxyz .,")


def reference_run(model: SpikeGPT, ids: list[int]):
    """Logits and spikes of every spiking layer, token by token, from the torch model's recurrent mode."""
    state = model.init_state(1, torch.float64)
    logits, spikes = [], {n: [] for n in model.spiking_layers()}
    with torch.no_grad():
        for t in ids:
            out, state, s = model.step(torch.tensor([t]), state)
            logits.append(out[0].numpy())
            for n in spikes:
                spikes[n].append(s[n][0].numpy())
    return np.stack(logits), {n: np.stack(v) for n, v in spikes.items()}


def greedy_ids(model: SpikeGPT, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    state = model.init_state(1, torch.float64)
    with torch.no_grad():
        for t in ids[:-1]:
            _, state, _ = model.step(torch.tensor([t]), state)
        last = ids[-1]
        for _ in range(n):
            out, state, _ = model.step(torch.tensor([last]), state)
            last = int(torch.argmax(out[0]))
            ids.append(last)
    return ids


@pytest.fixture(scope="module")
def small_model() -> SpikeGPT:
    sd = random_state_dict(n_layer=2, d_model=48, vocab=VOCAB.size, seed=3, dtype=torch.float64)
    return load_spikegpt(sd, embedding="binary").double().eval()


def test_graph_uses_nir_nodes_where_they_fit_and_extension_ops_elsewhere(small_model):
    g = export_spikegpt(small_model)
    kinds = {type(op).__name__ for op in g.nodes.values()}
    assert {"Linear", "Scale", "Delay", "Input", "Output"} <= kinds
    assert {"Embedding", "LayerNorm", "WKV", "Sigmoid", "SquaredReLU", "Product", "DiscreteLIF"} <= kinds
    signals = infer_signals(g)
    for name in small_model.spiking_layers():
        assert signals[name].kind == "binary", name
    assert isinstance(g.nodes["emb"], Embedding)
    assert sum(isinstance(op, WKV) for op in g.nodes.values()) == 2
    assert sum(isinstance(op, DiscreteLIF) for op in g.nodes.values()) == 4


def test_exported_graph_reproduces_reference_over_64_generated_tokens(small_model, tmp_path):
    g = export_spikegpt(small_model)
    g.metadata["vocab"] = VOCAB.chars
    path = tmp_path / "sg.nir"
    write(g, path)
    g2 = read(path)  # the file, not the in-memory graph, is what a user simulates
    prompt = VOCAB.encode("the quick brown fox").tolist()
    run = LMSimulator(g2).generate(VOCAB.decode(prompt), 64, record=True)
    ids = greedy_ids(small_model, prompt, 64)
    assert run.token_ids == ids, "generated text differs from the torch reference"
    ref_logits, ref_spikes = reference_run(small_model, ids)
    np.testing.assert_allclose(run.logits, ref_logits, atol=1e-4, rtol=0)
    assert np.abs(run.logits - ref_logits).max() < 1e-9  # float64 on both sides: far tighter than required
    fired = 0
    for name, ref in ref_spikes.items():
        sim = run.spikes[name][:, 0, :]  # one sub-step per token
        assert np.array_equal(sim, ref), f"spikes of {name} differ at {np.argwhere(sim != ref)[:3].tolist()}"
        fired += int(ref.sum())
    assert fired > 0  # the comparison is not between silent layers


def test_shipped_checkpoint_generates_the_reference_text(examples_dir):
    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    if not ckpt.exists():
        pytest.fail(f"{ckpt} is missing: the trained example checkpoint must ship with the repository")
    lm = load_lm(ckpt)
    # trained by spikecc's script with the training code's binary embedding: its .vocab.json sidecar says so
    assert (lm.graph.metadata["embedding"], lm.model.cfg.embedding) == ("binary", "binary")
    prompt = "ROMEO:\n"
    run = LMSimulator(lm.graph).generate(prompt, 64, record=True)
    vocab = CharVocab(lm.graph.metadata["vocab"])
    ids = greedy_ids(lm.model, vocab.encode(prompt).tolist(), 64)
    assert run.token_ids == ids
    ref_logits, ref_spikes = reference_run(lm.model, ids)
    assert np.abs(run.logits - ref_logits).max() < 1e-4
    for name, ref in ref_spikes.items():
        assert np.array_equal(run.spikes[name][:, 0, :], ref), name


def test_no_tokenizer_beside_a_raw_checkpoint_is_a_one_line_error_when_generating(small_model, tmp_path):
    from click.testing import CliRunner

    from spikecc.cli import main
    from spikecc.models.spikegpt import save_spikegpt

    path = tmp_path / "model.pt"
    save_spikegpt(small_model, path)
    lm = load_lm(path)  # exporting needs no tokenizer (a BPE model can be exported and inspected without one)
    assert "vocab" not in lm.graph.metadata and "tokenizer" not in lm.graph.metadata
    result = CliRunner().invoke(main, ["generate", str(path), "--prompt", "ab", "--tokens", "2"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no tokenizer" in lines[0] and "--tokenizer" in lines[0] and ".vocab.json" in lines[0]


def test_lm_graph_reads_back_with_metadata(small_model, tmp_path):
    g = export_spikegpt(small_model)
    g.metadata["vocab"] = VOCAB.chars
    write(g, tmp_path / "a.nir")
    lm = load_lm(tmp_path / "a.nir")
    assert lm.family == "spikegpt" and lm.graph.metadata["vocab"] == VOCAB.chars
    assert lm.model is None
    assert SpikeGPTConfig(2, 48, VOCAB.size, 192).d_model == lm.graph.metadata["d_model"]


def test_activity_statistics_count_spikes_and_the_work_they_cause(small_model):
    g = export_spikegpt(small_model)
    g.metadata["vocab"] = VOCAB.chars
    lm = LMSimulator(g)
    run = lm.generate("a quick fox", 20, record=True)
    rows = {a.layer: a for a in lm.activity(run)}
    n_tok = len(run.token_ids)
    assert set(rows) == set(small_model.spiking_layers())
    for name, spikes in run.spikes.items():
        a = rows[name]
        assert a.spikes_per_token == pytest.approx(spikes.sum() / n_tok)
        assert a.rate == pytest.approx(spikes.mean())
        assert a.negative == 0 and a.positive == pytest.approx(a.rate)  # binary layers
    # LIF spikes feed a residual sum one to one (one accumulate each); the embedding feeds LayerNorm (host).
    assert rows["blocks.0.att_lif"].synops_per_token == pytest.approx(rows["blocks.0.att_lif"].spikes_per_token)
    assert rows["emb"].synops_per_token == 0


@pytest.mark.parametrize("embedding,inference", [("real", "rescaled"), ("binary", "rescaled"), ("real", "training")])
def test_options_export_and_simulate_like_the_authors_script(embedding, inference, tmp_path):
    """Seven blocks (the sixth is halved, the seventh rescaled): the .nir file simulated token by token equals the
    reference written from the authors' run.py (tests/authors_ref), spikes and logits."""
    from authors_ref.spikegpt_run import RunPy

    sd = random_state_dict(n_layer=7, d_model=32, vocab=120, seed=11, dtype=torch.float64)
    model = load_spikegpt(sd, embedding=embedding, inference=inference)
    g = export_spikegpt(model)
    assert (g.metadata["embedding"], g.metadata["inference"]) == (embedding, inference)
    assert isinstance(g.nodes["blocks.5.res2"], nir.Scale)
    assert np.all(g.nodes["blocks.5.res2"].scale == (0.5 if inference == "rescaled" else 1.0))
    assert infer_signals(g)["emb"].kind == ("binary" if embedding == "binary" else "real")
    g.metadata["vocab"] = "".join(chr(0x100 + i) for i in range(120))
    write(g, tmp_path / "m.nir")
    sim = LMSimulator(read(tmp_path / "m.nir"))
    meta = read(tmp_path / "m.nir").metadata
    assert (meta["embedding"], meta["inference"]) == (embedding, inference)  # recorded in the file
    tokens = [5, 17, 99, 3, 3, 64, 0, 119, 42, 8] * 3
    rec = {n: [] for n in sim.spiking}
    sim.sim.start()
    logits = np.stack([sim.feed(t, rec) for t in tokens])
    ref = RunPy(sd, rescale_layer=6 if inference == "rescaled" else None, binary=embedding == "binary")
    ref_logits, ref_spikes = ref.run(tokens)
    assert np.abs(logits - ref_logits.numpy()).max() < 1e-6
    assert set(ref_spikes) == set(sim.spiking)
    fired = 0
    for name, want in ref_spikes.items():
        got = np.stack(rec[name])[:, 0, :]
        assert np.array_equal(got, want.numpy()), name
        fired += int(want.sum())
    assert fired > 0
