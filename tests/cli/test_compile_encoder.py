"""`spikecc compile` on a SpikeLM checkpoint in Hugging Face BERT layout (an encoder: no vocabulary, no LM head):
the LM pass spine, calibration on whole sequences (a tokenizer on text, else seeded pseudo-random ids, said to be a
fallback), the build's files; the float build equals the torch reference encoder, the fixed-point build tracks
it; budget works on the build, generation commands refuse it in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import assert_one_line_error, run

from spikecc.backends.cpu.encoder_runner import EncoderSimulator
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.pipeline import lm_passes
from spikecc.ir import read
from spikecc.ir.loihi_ops import LoihiDense
from spikecc.ir.neurocore_ops import LoihiElastic, SpikeRouter
from spikecc.models.spikelm import random_bert_state_dict

BUILD_FILES = {"input.nir", "float.nir", "lowered.nir", "manifest.json", "quantization.json", "quantization.txt",
               "partition.json", "partition.txt", "activity.npz", "budget.json", "budget.txt", "budget.html"}
L, HIDDEN, VOCAB = 40, 64, 300  # the small BERT: seq_len = min(128, max_pos) = 40


def _wordpiece(path: Path) -> Path:
    """A BERT-style WordPiece tokenizer ([CLS] $A [SEP]) trained here on the first part of the offline corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from spikecc.models.data import shakespeare_text

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                        show_progress=False)
    tok.train_from_iterator([shakespeare_text()[:100_000]], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")),
                                                 ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> dict:
    """A small random BERT checkpoint, two builds calibrated on random ids, one on text through a tokenizer."""
    from spikecc.models.data import heldout_text

    tmp = tmp_path_factory.mktemp("bert")
    ckpt = tmp / "sbert.pt"
    torch.save(random_bert_state_dict(n_layer=2, hidden=HIDDEN, intermediate=256, vocab=VOCAB, max_pos=L, seed=3),
               ckpt)
    out = {"ckpt": ckpt, "tmp": tmp}
    for name in ("a", "b"):
        out[name] = run("compile", ckpt, "-o", tmp / name)
        assert out[name].exit_code == 0, out[name].output
    out["tokenizer"] = _wordpiece(tmp / "wordpiece.json")
    out["text"] = tmp / "calibration.txt"
    out["text"].write_text(heldout_text()[:3000])
    out["tok"] = run("compile", ckpt, "-o", tmp / "tok", "--tokenizer", out["tokenizer"], "--calibration-text",
                     out["text"], "--calibration-tokens", 120)
    assert out["tok"].exit_code == 0, out["tok"].output
    return out


def test_compile_runs_the_lm_spine_and_writes_an_lm_build(bert):
    build, result = bert["tmp"] / "a", bert["a"]
    for name, _ in lm_passes():
        assert f"{name}: " in result.stdout
    assert "quantize: " in result.stdout and "budget: " in result.stdout
    assert BUILD_FILES <= {p.name for p in build.iterdir()}
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["kind"] == "language-model" and manifest["family"] == "spikelm-bert"
    assert manifest["passes"] == [name for name, _ in lm_passes()] + ["quantize"]
    # the Lava LM runner steps causal models token by token: an encoder build says it has no Lava module
    assert manifest["lava"] is None and not (build / "lava").exists()
    assert "no Lava module for an encoder" in result.output
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((build / rel).read_bytes()).hexdigest() == digest
    # no tokenizer: seeded pseudo-random ids, 256 // 40 = 6 whole sequences, and the output says it is a fallback
    cal = manifest["calibration"]
    assert cal["source"] == "random-ids" and cal["seed"] == 0 and "fallback" in cal["note"]
    assert (cal["sequences"], cal["seq_len"], cal["tokens"]) == (6, L, 6 * L)
    assert "calibration: 6 sequence(s) of 40 pseudo-random token ids" in result.stdout
    assert "FALLBACK" in result.stdout and "--tokenizer" in result.stdout


def test_two_compiles_are_byte_identical(bert):
    a, b = bert["tmp"] / "a", bert["tmp"] / "b"
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_every_op_is_placed_by_a_rule(bert):
    part = json.loads((bert["tmp"] / "a" / "partition.json").read_text())
    side = {op: r["side"] for r in part["placement"].values() for op in r["ops"]}
    for op in ("Input", "Output", "Embedding", "PositionEmbedding", "LayerNorm", "SelfAttention", "GELU", "Scale",
               "TokenMean"):
        assert side[op] == "host", op
    for op in ("ElasticBiSpike", "LoihiDense", "SpikeRouter"):
        assert side[op] == "neurocore", op
    rule = {op: why for why, r in part["placement"].items() for op in r["ops"]}
    assert "padding mask" in rule["SelfAttention"] and "row by row" in rule["LoihiDense"]
    assert part["tokens_per_step"] == L and part["neurocore"]["synops_per_token"] > 0
    # an encoder's spikes carry their amplitudes as graded payloads: W once, not 2T banks of it
    routing = part["spike_routing"]
    assert len(routing) == 12 and all(r["amplitude"] == "graded" for r in routing)
    assert all(r["synapses_if_banks"] == 8 * r["synapses"] for r in routing)


def _reference(ckpt: Path):
    lm = load_lm(ckpt)  # the torch SpikeBertEncoder, float64, code thresholds
    return lm.model


def test_float_build_equals_the_reference_encoder(bert):
    """float.nir in spikecc's simulator vs the torch model, on fresh random sequences: one plain, one padded
    sentence pair (token types 0 then 1, the last 15 ids masked out)."""
    enc = _reference(bert["ckpt"])
    g = read(bert["tmp"] / "a" / "float.nir")
    rng = np.random.default_rng(2024)
    ids = rng.integers(0, VOCAB, size=(2, L))
    types = np.zeros_like(ids)
    types[1, 12:25] = 1
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    got = EncoderSimulator(g).run(ids, types, mask).hidden
    with torch.no_grad():
        want = enc(torch.as_tensor(ids), token_type_ids=torch.as_tensor(types),
                   attention_mask=torch.as_tensor(mask)).numpy()
    assert got.shape == want.shape == (2, L, HIDDEN)
    assert np.abs(got - want).max() < 1e-9


def test_fixed_point_build_tracks_float(bert, capsys):
    """lowered.nir (neuro-core part in Loihi 2 integers) vs float.nir on random sequences it was not calibrated on:
    final hidden states. Measured here: relative error ~0.8%, cosine >= 0.9998 per token."""
    build = bert["tmp"] / "a"
    fixed, flt = read(build / "lowered.nir"), read(build / "float.nir")
    for name, op in fixed.nodes.items():  # the neuro-core part really is integer
        if isinstance(op, LoihiDense):
            assert np.issubdtype(np.asarray(op.weight).dtype, np.integer), name
        if isinstance(op, (LoihiElastic, SpikeRouter)):
            assert fixed.annotation(name, "format")["kind"] == "fixed", name
    ids = np.random.default_rng(99).integers(0, VOCAB, size=(3, L))
    want = EncoderSimulator(flt).run(ids).hidden
    got = EncoderSimulator(fixed, mode="fixed").run(ids).hidden
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    cos = np.sum(got * want, axis=-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    with capsys.disabled():
        print(f"\n[spikelm-bert small fixed vs float] relative error {rel:.4f}, cosine min {cos.min():.6f} "
              f"mean {cos.mean():.6f}")
    assert 0 < rel < 0.02 and cos.min() > 0.999


def test_calibration_on_text_through_the_tokenizer(bert):
    """--tokenizer and --calibration-text: 120 // 40 = 3 windows of 40 ids, each [CLS] + 38 consecutive tokens of
    the text + [SEP], as computed here with the tokenizers library."""
    from tokenizers import Tokenizer

    result = bert["tok"]
    manifest = json.loads((bert["tmp"] / "tok" / "manifest.json").read_text())
    cal = manifest["calibration"]
    assert cal["source"] == "tokenizer" and cal["text"] == "calibration.txt" and cal["sequences"] == 3
    assert "FALLBACK" not in result.stdout and "3 sequence(s) of 40 tokens of calibration.txt" in result.stdout
    tok = Tokenizer.from_file(str(bert["tokenizer"]))
    body = tok.encode(bert["text"].read_text(), add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    want = np.array([[cls, *body[i * 38:(i + 1) * 38], sep] for i in range(3)], dtype="<i8")
    assert cal["ids_sha256"] == hashlib.sha256(want.tobytes()).hexdigest()
    # the build carries its tokenizer; its float graph still equals the reference
    assert "tokenizer" in read(bert["tmp"] / "tok" / "float.nir").metadata


def test_default_calibration_text_is_the_held_out_tail(bert):
    from spikecc.calibration import encoder_calibration
    from spikecc.models.tokenizer import load_tokenizer

    g = load_lm(bert["ckpt"], bert["tokenizer"], reference=False).graph
    cal = encoder_calibration(g, None, 200)
    tok = load_tokenizer(bert["tokenizer"])
    assert cal.sequences.shape == (5, L) and cal.text_name == "shakespeare-validation"
    assert np.all(cal.sequences[:, 0] == tok.token_id("[CLS]"))
    assert np.all(cal.sequences[:, -1] == tok.token_id("[SEP]"))
    assert len(np.unique(cal.sequences)) > 50  # words, not padding


def test_budget_maps_the_encoder_build(bert):
    build = bert["tmp"] / "a"
    result = run("budget", build, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cores"] >= data["lower_bound_cores"] >= 1 and data["violations"] == []
    # the cores hold the neurons of one token; the 40 tokens of a sequence take turns
    assert {r["neurons"] for r in data["layers"]} <= {HIDDEN, 256}
    assert any("40 tokens of a sequence one after another" in n for n in data["notes"])
    assert "activity measured" in " ".join(data["notes"]) or "activity assumed" not in " ".join(data["notes"])


@pytest.mark.parametrize("args", [("generate", "--prompt", "To be"), ("lava", "--prompt", "To be"),
                                  ("verify", "--prompt", "To be")])
def test_generation_commands_refuse_an_encoder_build_in_one_line(bert, args):
    build = bert["tmp"] / "a"
    assert_one_line_error(run(args[0], build, *args[1:]), "encoder cannot generate text", "spikecc budget")


def test_calibration_text_without_a_tokenizer_is_refused(bert, tmp_path):
    out = tmp_path / "build"
    result = run("compile", bert["ckpt"], "-o", out, "--calibration-text", bert["text"])
    assert_one_line_error(result, "calibration.txt", "--tokenizer")
    assert not out.exists()
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be.")
    result = run("compile", bert["ckpt"], "-o", out, "--tokenizer", bert["tokenizer"], "--calibration-text", short)
    assert_one_line_error(result, "short.txt", "fewer than 40 tokens")
    assert not out.exists()
