"""SpikeLM BART (spikecc.models.spikelm_bart) against a reference written from the authors' SpikeLM code and Hugging
Face's BART (tests/authors_ref/spikelm_bart.py), on random float64 checkpoints: logits within 1e-6, identical spikes,
the same greedy text; incremental decoding equals teacher forcing; the loader reads Hugging Face keys, config.json
and save_pretrained directories, and names the key of every problem."""

from __future__ import annotations

import json
import math

import pytest
import torch
from authors_ref.spikelm_bart import Ref, spikecc_name

from spikecc.errors import CheckpointError
from spikecc.models.spikelm_bart import load_spikelm_bart, random_bart_state_dict

torch.set_num_threads(1)

HEADS = {"encoder_attention_heads": 4, "decoder_attention_heads": 4}


def small_sd(seed: int = 1, **kw) -> dict[str, torch.Tensor]:
    args = dict(vocab=300, d_model=64, encoder_layers=2, decoder_layers=2, ffn=128, max_pos=40, heads=4, seed=seed,
                tied=False, dtype=torch.float64)
    args.update(kw)
    return random_bart_state_dict(**args)


def ids(n: int, seed: int, low: int = 3, high: int = 300) -> torch.Tensor:
    return torch.randint(low, high, (1, n), generator=torch.Generator().manual_seed(seed))


def compare(model, ref: Ref, src, tgt, mask=None) -> int:
    """Teacher-forced logits and every spike of both models; returns the number of non-zero spikes compared."""
    with torch.no_grad():
        logits, spikes = model(src, tgt, src_mask=mask, return_spikes=True)
    ref.spikes.clear()
    want = ref.decode(tgt, ref.encode(src, mask), mask)
    assert float((logits - want).abs().max()) < 1e-6
    got_names = set(spikes)
    assert {spikecc_name(n) for n in ref.spikes} == got_names == set(model.spike_names())
    fired = 0
    for name, (s,) in ref.spikes.items():
        assert torch.equal(spikes[spikecc_name(name)], s), name
        fired += int((s != 0).sum())
    return fired


@pytest.mark.parametrize("pre_ln", [False, True])
def test_matches_the_authors_code_teacher_forced_with_and_without_padding(pre_ln):
    sd = small_sd(pre_ln=pre_ln)
    config = dict(HEADS, scale_embedding=pre_ln, normalize_before=pre_ln)  # mBART scales its embeddings
    model = load_spikelm_bart(sd, config=config)
    assert model.config.pre_ln == pre_ln and model.config.encoder_heads == 4
    ref = Ref(sd, heads=4, embed_scale=math.sqrt(64) if pre_ln else 1.0)
    src, tgt = ids(11, 0), torch.cat([torch.tensor([[2]]), ids(6, 1)], dim=1)
    assert compare(model, ref, src, tgt) > 0
    mask = torch.ones(1, 11, dtype=torch.long)
    mask[0, 7:] = 0  # the last 4 source tokens are padding
    padded = src.clone()
    padded[0, 7:] = 1
    assert compare(model, ref, padded, tgt, mask) > 0
    with torch.no_grad():  # padding changes nothing for the real tokens: same logits as the unpadded source
        a = model(padded, tgt, src_mask=mask)
        b = model(src[:, :7], tgt)
    assert float((a - b).abs().max()) < 1e-9


def test_greedy_generation_and_incremental_decoding():
    from spikecc.models.spikelm_bart import greedy_ids

    sd = small_sd(seed=3)
    model = load_spikelm_bart(sd, config=HEADS)
    src = ids(9, 2)[0].tolist()
    out = greedy_ids(model, src, 12)
    assert out == Ref(sd, heads=4).greedy(src, 12)
    assert len(out) == 12 and len(set(out)) > 3
    with torch.no_grad():  # step by step (KV caches) = teacher forcing on the generated prefix
        memory = model.encode(torch.tensor([src]))
        state = model.start(memory)
        stepped = []
        for t in [2] + out[:-1]:
            logits, state, _ = model.step(t, state)
            stepped.append(logits)
        full = model(torch.tensor([src]), torch.tensor([[2] + out[:-1]]))[0]
    assert float((torch.stack(stepped) - full).abs().max()) < 1e-12


def test_loader_reads_config_and_hf_layouts(tmp_path):
    sd = small_sd(dtype=torch.float32)
    # BartModel keys: no "model." prefix, no LM head (tied to the shared table), no final_logits_bias
    bare = {k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")}
    model = load_spikelm_bart(bare, config=dict(HEADS, pad_token_id=5, eos_token_id=6, decoder_start_token_id=7))
    assert torch.equal(model.lm_head.weight, model.shared.weight) and not model.final_logits_bias.any()
    cfg = model.config
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (5, 6, 7)
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.d_model, cfg.max_pos, cfg.T) == (2, 2, 64, 40, 4)
    assert load_spikelm_bart(sd).config.encoder_heads == 1  # no config: d_model // 64
    assert model.shared.weight.dtype == torch.float64


@pytest.mark.parametrize("edit,fragments", [
    (lambda sd: sd.pop("model.decoder.layers.1.encoder_attn.clip_value.2"),
     ["missing key", "model.decoder.layers.1.encoder_attn.clip_value.2"]),
    (lambda sd: sd.update({"model.encoder.layers.1.fc1.weight": torch.zeros(127, 64)}),
     ["model.encoder.layers.1.fc1.weight", "(127, 64)", "expected (128, 64)"]),
    (lambda sd: sd.update({"model.encoder.layers.0.extra": torch.zeros(1)}),
     ["unexpected key", "model.encoder.layers.0.extra"]),
    (lambda sd: [sd.pop(k) for k in list(sd) if "clip_" in k or "act_clip_val" in k],
     ["clip_key.0", "plain BART without SpikeLM spike thresholds"]),
    (lambda sd: sd.update({"lm_head.weight": torch.zeros(3, 3)}), ["lm_head.weight", "(3, 3)"]),
])
def test_bad_checkpoints_name_the_key(edit, fragments, tmp_path):
    sd = small_sd(dtype=torch.float32)
    edit(sd)
    path = tmp_path / "bart.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_spikelm_bart(path, config=HEADS)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_config_errors_are_one_line():
    sd = small_sd(dtype=torch.float32)
    with pytest.raises(CheckpointError, match="activation_function is 'relu'"):
        load_spikelm_bart(sd, config={"activation_function": "relu"})
    with pytest.raises(CheckpointError, match="encoder_attention_heads' is '4', expected an integer >= 1"):
        load_spikelm_bart(sd, config={"encoder_attention_heads": "4"})
    with pytest.raises(CheckpointError, match="multiple of the encoder heads"):
        load_spikelm_bart(sd, config={"encoder_attention_heads": 5})


def test_config_json_round_trip_is_plain_data(tmp_path):
    """A config.json written like Hugging Face's (a few BART entries) is what the loader reads."""
    (tmp_path / "config.json").write_text(json.dumps(dict(HEADS, model_type="bart", d_model=64)))
    config = json.loads((tmp_path / "config.json").read_text())
    assert load_spikelm_bart(small_sd(dtype=torch.float32), config=config).config.decoder_heads == 4
