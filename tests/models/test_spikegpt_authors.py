"""SpikeGPT's two options against a reference written from the authors' inference script (tests/authors_ref):

* embedding: binary (training code) or real-valued (``model_run.py`` for every vocabulary but 77), default by the
  authors' rule;
* inference: "training" (the training code's equations) or "rescaled" (``RWKV_RESCALE_LAYER = 6`` of ``run.py``).

Random float64 models deep enough for the rescaling to matter (L = 7 and 13); logits within 1e-6 and identical spikes.
"""

from __future__ import annotations

import pytest
import torch
from authors_ref.spikegpt_run import RunPy

from spikecc.errors import CheckpointError
from spikecc.models.spikegpt import authors_embedding, load_spikegpt, random_state_dict

torch.set_num_threads(1)

TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7]


def spikecc_run(model, tokens):
    state = model.init_state(1, torch.float64)
    logits, spikes = [], []
    with torch.no_grad():
        for t in tokens:
            out, state, s = model.step(torch.tensor([t]), state)
            logits.append(out[0])
            spikes.append({n: v[0] for n, v in s.items()})
    return torch.stack(logits), {n: torch.stack([s[n] for s in spikes]) for n in spikes[0]}


def assert_same(model, ref: RunPy, tokens=TOKENS) -> int:
    """Logits within 1e-6 and every spike equal; returns the number of spikes compared (must be > 0)."""
    got_logits, got_spikes = spikecc_run(model, tokens)
    ref_logits, ref_spikes = ref.run(tokens)
    assert set(got_spikes) == set(ref_spikes) == set(model.spiking_layers())
    assert float((got_logits - ref_logits).abs().max()) < 1e-6
    fired = 0
    for name, want in ref_spikes.items():
        where = (got_spikes[name] != want).nonzero()[:3].tolist()
        assert torch.equal(got_spikes[name], want), f"{name}: spikes differ at {where}"
        fired += int(want.sum())
    return fired


@pytest.mark.parametrize("n_layer,vocab", [(7, 77), (7, 500), (13, 120)])
def test_defaults_follow_the_authors_rule_and_rescaled_mode_is_run_py(n_layer, vocab):
    sd = random_state_dict(n_layer, 32, vocab, seed=n_layer + vocab, dtype=torch.float64)
    for i in range(n_layer):  # undo the script's 2^-(i // 6) in the random weights, so that deep blocks fire too
        for key in (f"blocks.{i}.att.output.weight", f"blocks.{i}.ffn.value.weight"):
            sd[key] *= 2 ** (i // 6)
    model = load_spikegpt(sd, inference="rescaled")
    assert model.cfg.embedding == ("binary" if vocab == 77 else "real") == authors_embedding(vocab)
    assert ("emb" in model.spiking_layers()) == (vocab == 77)
    fired = assert_same(model, RunPy(sd, rescale_layer=6))
    assert fired > 0
    # the deepest rescaled block still fires: the comparison is not between silent layers
    _, spikes = RunPy(sd, rescale_layer=6).run(TOKENS)
    assert spikes[f"blocks.{n_layer - 1}.att_lif"].sum() > 0 and spikes[f"blocks.{n_layer - 1}.ffn_lif"].sum() > 0


@pytest.mark.parametrize("embedding", ["binary", "real"])
def test_training_mode_is_the_same_loop_without_rescaling(embedding):
    sd = random_state_dict(13, 32, 120, seed=4, dtype=torch.float64)
    model = load_spikegpt(sd, embedding=embedding)  # inference="training" is the default
    assert model.cfg.inference == "training"
    assert assert_same(model, RunPy(sd, rescale_layer=None, binary=embedding == "binary")) > 0


def test_the_modes_differ_past_six_layers_and_agree_up_to_six():
    deep = random_state_dict(7, 32, 120, seed=8, dtype=torch.float64)
    a, sa = spikecc_run(load_spikegpt(deep, inference="training"), TOKENS)
    b, sb = spikecc_run(load_spikegpt(deep, inference="rescaled"), TOKENS)
    for i in range(6):  # blocks 0..5 have scale 2^0 and nothing is halved before block 5 ends
        assert torch.equal(sa[f"blocks.{i}.att_lif"], sb[f"blocks.{i}.att_lif"])
    assert not torch.equal(sa["blocks.6.att_lif"], sb["blocks.6.att_lif"])  # LIF inputs halved, spikes are not
    shallow = random_state_dict(6, 32, 120, seed=8, dtype=torch.float64)
    c, _ = spikecc_run(load_spikegpt(shallow, inference="training"), TOKENS)
    d, _ = spikecc_run(load_spikegpt(shallow, inference="rescaled"), TOKENS)
    # L = 6: the only change is x / 2 after the last block, which ln_out undoes up to its epsilon
    assert float((c - d).abs().max()) < 1e-4
    assert float((a - b).abs().max()) > 1e-2


def test_binary_embedding_changes_a_bpe_sized_model_as_the_issue_says():
    """On a random vocabulary-500 model the two embeddings pick different next tokens most of the time: why the
    default matters for the BPE checkpoint."""
    sd = random_state_dict(2, 64, 500, seed=1, dtype=torch.float64)
    real, _ = spikecc_run(load_spikegpt(sd), TOKENS * 2)
    binary, _ = spikecc_run(load_spikegpt(sd, embedding="binary"), TOKENS * 2)
    agree = float((real.argmax(1) == binary.argmax(1)).double().mean())
    assert agree < 0.5


def test_bad_options_are_one_line_errors():
    sd = random_state_dict(1, 8, 10, seed=0)
    with pytest.raises(CheckpointError, match="inference must be one of"):
        load_spikegpt(sd, inference="fast")
    with pytest.raises(CheckpointError, match="embedding must be one of"):
        load_spikegpt(sd, embedding="ternary")
