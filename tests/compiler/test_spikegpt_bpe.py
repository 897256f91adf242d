"""BPE SpikeGPT models prompted through a tokenizer.json: `spikecc generate --tokenizer`, a tokenizer found beside the
checkpoint, and the released 216M shape (L18, D768, vocabulary 50277, random weights made here), each checked against
the reference written from the authors' run.py (tests/authors_ref) with the real-valued embedding the authors' script
gives a BPE model."""

from __future__ import annotations

import gc
import resource
import shutil
import time

import pytest
import torch
from authors_ref.spikegpt_run import RunPy
from click.testing import CliRunner

from spikecc.cli import main
from spikecc.models.spikegpt import random_state_dict
from spikecc.models.tokenizer import load_tokenizer

torch.set_num_threads(1)

PROMPT = "ROMEO. But soft, what light"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def reference_text(sd, tokenizer_path, prompt: str, n: int, **options) -> tuple[str, list[int]]:
    tok = load_tokenizer(tokenizer_path)
    ids = RunPy(sd, **options).greedy(tok.encode(prompt), n)
    return tok.decode(ids), ids


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory, train_bpe):
    """A 2-block BPE SpikeGPT (vocabulary = the 400 tokens + 4 spare rows, like a padded embedding) and its
    tokenizer.json, in a directory of their own."""
    d = tmp_path_factory.mktemp("bpe")
    train_bpe().save(str(d / "tok.json"))
    sd = random_state_dict(2, 48, 404, seed=21, dtype=torch.float32)
    torch.save(sd, d / "model.pt")
    return d, sd


def test_generate_with_tokenizer_option_matches_the_authors_script(bpe_model, tmp_path):
    d, sd = bpe_model
    ckpt, tok = d / "model.pt", d / "tok.json"
    want, ids = reference_text(sd, tok, PROMPT, 12, rescale_layer=None)
    assert len(set(ids)) > 1 and want.strip()  # a text of several different tokens, not a repeated blank
    sim = run("generate", ckpt, "--tokenizer", tok, "--prompt", PROMPT, "--tokens", 12)
    ref = run("generate", ckpt, "--tokenizer", tok, "--prompt", PROMPT, "--tokens", 12, "--reference")
    assert sim.exit_code == 0 and ref.exit_code == 0, sim.output + ref.output
    assert sim.stdout == ref.stdout == PROMPT + want + "\n"
    # the authors' inference mode: the same here (L = 2 <= 6), and accepted by the CLI
    assert run("generate", ckpt, "--tokenizer", tok, "--prompt", PROMPT, "--tokens", 12,
               "--inference", "rescaled").stdout == sim.stdout
    # without a tokenizer the model cannot be prompted: one line that says what to pass
    no_tok = run("generate", ckpt, "--prompt", PROMPT)
    assert no_tok.exit_code == 1 and "--tokenizer" in no_tok.stderr and len(no_tok.stderr.splitlines()) == 1
    # export carries the tokenizer: the .nir file alone generates the same text
    out = tmp_path / "bpe.nir"
    assert run("export", ckpt, "--tokenizer", tok, "-o", out).exit_code == 0
    assert run("generate", out, "--prompt", PROMPT, "--tokens", 12).stdout == sim.stdout
    activity = run("inspect", out, "--prompt", PROMPT, "--tokens", 4)
    assert activity.exit_code == 0 and "activity over" in activity.stdout


def test_tokenizer_json_beside_the_checkpoint_is_used(bpe_model, tmp_path):
    d, sd = bpe_model
    shutil.copy(d / "model.pt", tmp_path / "model.pt")
    shutil.copy(d / "tok.json", tmp_path / "tokenizer.json")
    want, _ = reference_text(sd, d / "tok.json", PROMPT, 8, rescale_layer=None)
    sim = run("generate", tmp_path / "model.pt", "--prompt", PROMPT, "--tokens", 8)
    assert sim.exit_code == 0 and sim.stdout == PROMPT + want + "\n"


def test_tokenizer_larger_than_the_model_is_refused(bpe_model, tmp_path, train_bpe):
    d, _ = bpe_model
    big = tmp_path / "big.json"
    train_bpe(vocab_size=600).save(str(big))
    result = run("generate", d / "model.pt", "--tokenizer", big, "--prompt", PROMPT)
    assert result.exit_code == 1
    assert "600 tokens but the model's vocabulary has 404" in result.stderr and str(big) in result.stderr


def test_published_216m_shape_with_a_bpe_tokenizer_generates_from_the_cli(tmp_path, train_bpe, capsys):
    """L18 D768 vocabulary 50277, random float32 weights: `spikecc generate --tokenizer` (simulator, float64) prints
    the text of the authors'-script reference (real-valued embedding: vocabulary != 77). The tokenizer: 1000 BPE
    tokens trained here plus added tokens up to 50277, so that every id the model can pick decodes to text."""
    t0 = time.perf_counter()
    tok = train_bpe(vocab_size=1000, chars=200_000, pad_to=50277)
    assert tok.get_vocab_size() == 50277
    tok.save(str(tmp_path / "tokenizer.json"))
    ckpt = tmp_path / "spikegpt-216m.pt"
    sd = random_state_dict(n_layer=18, d_model=768, vocab=50277, seed=0, dtype=torch.float32)
    n_params = sum(t.numel() for t in sd.values())
    torch.save(sd, ckpt)
    del sd
    gc.collect()
    n = 6
    sim = run("generate", ckpt, "--tokenizer", tmp_path / "tokenizer.json", "--prompt", PROMPT, "--tokens", n)
    assert sim.exit_code == 0, sim.output
    t_cli = time.perf_counter() - t0
    gc.collect()
    want, ids = reference_text(torch.load(ckpt, weights_only=True), tmp_path / "tokenizer.json", PROMPT, n,
                               rescale_layer=None, consume=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with capsys.disabled():
        print(f"\n[216M SpikeGPT + BPE] {n_params / 1e6:.1f}M params; CLI generate {n} tokens: {t_cli:.1f} s "
              f"(with making the checkpoint); reference ids {ids}; peak RSS {peak:.2f} GiB")
    assert 200e6 < n_params < 240e6
    assert sim.stdout == PROMPT + want + "\n"
    assert len(set(ids)) > 1
