"""SpikeRWKV-6 conversion (paper Sec. 3, Eq. 3-5): where the encoders go, their calibrated ranges, no retraining,
forms, energy, checkpoints, and `spikecc convert`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spikecc.cli import main
from spikecc.errors import CheckpointError
from spikecc.models.rwkv6 import RWKV6, save_rwkv6
from spikecc.models.spikegpt import random_state_dict as rwkv4_state_dict
from spikecc.models.spikegpt import save_vocab
from spikecc.models.spikerwkv import MultiLevelSpikeEncoder
from spikecc.models.spikerwkv6 import (
    convert,
    encoder_fan,
    energy_per_token,
    load_spikerwkv6,
    measure_firing_rates,
    save_spikerwkv6,
)

torch.set_num_threads(1)

VOCAB = "abcdefghijklmnopqrstuvwxyz .,;"
TEXT = "the quick brown fox jumps over the lazy dog, and then some more; the end."


def ids(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.index(c) for c in text])


def linear_inputs(model: RWKV6, text: str) -> dict[str, torch.Tensor]:
    """What each linear of the float model receives while reading `text`, captured with forward hooks on the
    linears themselves (not through the encoder slots the conversion uses)."""
    seen: dict[str, list] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.startswith("blocks."):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, name=name: seen.setdefault(name, []).append(a[0].detach().reshape(-1))))
    with torch.no_grad():
        model(ids(text)[None])
    for h in hooks:
        h.remove()
    return {k: torch.cat(v) for k, v in seen.items()}


# ------------------------------------------------------------------------------------------------ placement, ranges


def test_paper_scope_puts_signed_encoders_before_the_time_mix_r_k_v_g_linears_only(tiny_rwkv6):
    model = tiny_rwkv6()
    spiking = convert(model, ids(TEXT), levels=4)
    encs = spiking.encoders()
    assert list(encs) == [f"blocks.{i}.att.enc_{j}" for i in range(2) for j in "rkvg"]
    assert all(e.polarity and e.T == 1 and e.levels == 4 for e in encs.values())
    assert model.encoders() == {}  # the float model is left as it was
    for (k, a), (k2, b) in zip(model.state_dict().items(), spiking.state_dict().items()):
        assert k == k2 and torch.equal(a, b)  # no retraining: every weight is the float model's


def test_all_scope_encodes_every_linear_in_the_blocks_and_leaves_ffn_value_unsigned(tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=3, T=2, scope="all")
    encs = spiking.encoders()
    assert len(encs) == 2 * 10
    assert {n for n, e in encs.items() if not e.polarity} == {"blocks.0.ffn.enc_v", "blocks.1.ffn.enc_v"}
    fan = encoder_fan(spiking)
    assert fan["blocks.0.att.enc_maa"] == (32, 5 * 4) and fan["blocks.1.att.enc_decay"] == (32, 6)
    assert fan["blocks.0.ffn.enc_v"] == (spiking.cfg.d_ffn, 32) and fan["blocks.0.att.enc_o"] == (32, 32)


@pytest.mark.parametrize("levels", [3, 4, 5])
def test_each_range_is_the_largest_input_on_the_calibration_text(levels, tiny_rwkv6):
    model = tiny_rwkv6()
    spiking = convert(model, ids(TEXT), levels=levels, scope="all")
    inputs = linear_inputs(model, TEXT)
    feeds = {"att.enc_r": "att.receptance", "att.enc_k": "att.key", "att.enc_v": "att.value", "att.enc_g": "att.gate",
             "att.enc_o": "att.output", "ffn.enc_k": "ffn.key", "ffn.enc_r": "ffn.receptance", "ffn.enc_v": "ffn.value"}
    for name, enc in spiking.encoders().items():
        w = enc.level_weights
        assert len(w) == levels and all(a == 2 * b for a, b in zip(w, w[1:]))  # binary digits
        blk, slot = name.split(".")[1], ".".join(name.split(".")[2:])
        if slot in feeds:
            x = inputs[f"blocks.{blk}.{feeds[slot]}"]
            peak = float(x.clamp(min=0).max()) if not enc.polarity else float(x.abs().max())
            assert math.isclose(enc.max_value, peak, rel_tol=1e-12), name
            # the peak itself is representable to within one step: the range is not clipped on the text
            q = enc(x)
            assert float((q - (x if enc.polarity else x.clamp(min=0))).abs().max()) <= enc.resolution * (1 + 1e-9)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_a_range_quantile_below_one_saturates_that_share_of_the_calibration_inputs(q, tiny_rwkv6):
    model = tiny_rwkv6()
    spiking = convert(model, ids(TEXT), levels=4, scope="all", quantile=q)
    inputs = linear_inputs(model, TEXT)
    for name, lin in (("blocks.0.att.enc_k", "blocks.0.att.key"), ("blocks.1.ffn.enc_v", "blocks.1.ffn.value")):
        enc = spiking.encoders()[name]
        x = inputs[lin].numpy()
        a = np.sort(np.abs(x) if enc.polarity else np.maximum(x, 0))
        want = a[math.ceil(q * a.size) - 1] or a[-1]  # the ceil(q n)-th smallest magnitude; the largest if that is 0
        assert math.isclose(enc.max_value, want, rel_tol=1e-12), name
        assert np.mean(a > enc.max_value * (1 + 1e-12)) <= 1 - q + 1e-12


def test_more_levels_track_the_float_model_more_closely(tiny_rwkv6):
    model = tiny_rwkv6()
    x = ids(TEXT)[None]
    with torch.no_grad():
        ref = model(x)
        errs = [float((convert(model, x[0], levels=L)(x) - ref).abs().mean()) for L in (3, 5, 8, 12)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 20


def test_converted_parallel_form_equals_recurrent_form_and_records_spikes(tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=4, T=3, scope="all")
    x = ids("a longer sentence than one chunk of sixteen characters")
    with torch.no_grad():
        par = spiking(x[None])[0]
        st = spiking.init_state()
        for t, tok in enumerate(x):
            out = spiking.step_detailed(int(tok), st)
            st = out.state
            np.testing.assert_allclose(out.logits.numpy(), par[t].numpy(), rtol=0, atol=1e-12)
    assert set(out.spikes) == set(spiking.encoders())
    s = out.spikes["blocks.1.att.enc_k"]
    assert s.shape == (3, 4, 32) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert set(out.polarity["blocks.1.att.enc_k"].unique().tolist()) == {-1.0, 1.0}


def test_conversion_rejects_bad_options(tiny_rwkv6):
    model = tiny_rwkv6()
    with pytest.raises(ValueError, match="levels and steps"):
        convert(model, ids(TEXT), levels=0)
    with pytest.raises(ValueError, match="scope"):
        convert(model, ids(TEXT), levels=3, scope="some")
    with pytest.raises(ValueError, match="quantile"):
        convert(model, ids(TEXT), levels=3, quantile=0.0)
    with pytest.raises(ValueError, match="already carries"):
        convert(convert(model, ids(TEXT), levels=3), ids(TEXT), levels=3)


# ------------------------------------------------------------------------------------------------ energy


def test_energy_per_token_is_the_papers_eq5_over_the_encoders(tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=5, T=2)
    x = ids(TEXT)[None]
    rates = measure_firing_rates(spiking, x)
    # fr by hand for one encoder: its spikes over the text / (T * l * C_in * tokens)
    seen = []
    enc = spiking.blocks[1].att.enc_g
    hook = enc.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    with torch.no_grad():
        spiking(x)
    hook.remove()
    spikes, _ = enc.encode(seen[0])
    assert math.isclose(rates["blocks.1.att.enc_g"], float(spikes.sum()) / spikes.numel(), rel_tol=1e-12)
    e = energy_per_token(spiking, rates)
    want_snn = sum(32 * fr * 2 * 5 * 0.9 for fr in rates.values())  # C_in * fr * T * l * E_AC, 8 encoders
    assert math.isclose(e["paper_snn_pj"], want_snn, rel_tol=1e-12)
    assert math.isclose(e["paper_ann_pj"], 8 * 32 * 4.6, rel_tol=1e-12)  # C_in * E_MAC


# ------------------------------------------------------------------------------------------------ checkpoints


def test_save_and_load_round_trip(tmp_path, tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=4, T=2, scope="all")
    path = tmp_path / "s.pt"
    save_spikerwkv6(spiking, VOCAB, path, TEXT)
    back, vocab = load_spikerwkv6(path)
    assert vocab == VOCAB and back.conversion == {"levels": 4, "T": 2, "scope": "all", "quantile": 1.0}
    assert {n: (e.T, e.level_weights, e.polarity) for n, e in back.encoders().items()} == \
        {n: (e.T, e.level_weights, e.polarity) for n, e in spiking.encoders().items()}
    x = ids(TEXT)[None]
    spiking_f32 = spiking.float().double()  # the file holds float32 tensors
    with torch.no_grad():
        assert torch.equal(back(x), spiking_f32(x))


def test_bad_converted_checkpoints_give_one_line_errors(tmp_path, checkpoint_error, tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=3)
    path = tmp_path / "s.pt"
    save_spikerwkv6(spiking, VOCAB, path, TEXT)
    obj = torch.load(path, weights_only=True)
    checkpoint_error(path, {k: v for k, v in obj.items() if k != "encoders"}, "missing key 'encoders'")
    encs = dict(obj["encoders"], **{"blocks.0.att.enc_x": obj["encoders"]["blocks.0.att.enc_r"]})
    checkpoint_error(path, {**obj, "encoders": encs}, "encoders.blocks.0.att.enc_x", "not an encoder slot")
    bad = dict(obj["encoders"]["blocks.0.att.enc_r"], level_weights=[1.0, 2.0, 0.5])
    checkpoint_error(path, {**obj, "encoders": dict(obj["encoders"], **{"blocks.0.att.enc_r": bad})},
                     "encoders.blocks.0.att.enc_r", "strictly decreasing")
    sd = dict(obj["state_dict"])
    del sd["blocks.1.att.time_decay_w2"]
    checkpoint_error(path, {**obj, "state_dict": sd}, "missing key 'state_dict.blocks.1.att.time_decay_w2'")
    checkpoint_error(path, {**obj, "config": {**obj["config"], "head_size": 5}}, "'config'", "head_size")


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def x060_file(tmp_path, tiny_rwkv6):
    model = tiny_rwkv6()
    path = tmp_path / "float.pth"
    save_rwkv6(model, path)
    from spikecc.models.data import CharVocab

    save_vocab(CharVocab(VOCAB), path.with_suffix(".vocab.json"))
    return path


def _one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_cli_convert_writes_a_model_the_simulator_generates_from(x060_file, tmp_path, tiny_rwkv6):
    cal = tmp_path / "cal.txt"
    cal.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "spiking.pt"
    r = CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "4", "--steps", "1", "-o", str(out),
                                  "--calibration-text", str(cal)])
    assert r.exit_code == 0, r.output
    assert "8 encoders" in r.output
    model, vocab = load_spikerwkv6(out)
    float_model = tiny_rwkv6().float().double()
    want = convert(float_model, ids(TEXT), levels=4)
    assert {n: e.level_weights for n, e in model.encoders().items()} == \
        {n: e.level_weights for n, e in want.encoders().items()}
    sim = CliRunner().invoke(main, ["generate", str(out), "--prompt", "the ", "--tokens", "24"])
    ref = CliRunner().invoke(main, ["generate", str(out), "--prompt", "the ", "--tokens", "24", "--reference"])
    assert sim.exit_code == 0 and sim.output == ref.output and len(sim.output.strip()) == 28


def test_cli_convert_refuses_to_overwrite_and_reports_bad_input_in_one_line(x060_file, tmp_path):
    before = x060_file.read_bytes()
    _one_line_error(CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "3", "-o", str(x060_file)]),
                    "input checkpoint", "never overwrites")
    assert x060_file.read_bytes() == before
    taken = tmp_path / "taken.pt"
    taken.write_text("mine")
    _one_line_error(CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "3", "-o", str(taken)]),
                    "existing file")
    assert taken.read_text() == "mine"
    cal = tmp_path / "cal.txt"
    cal.write_text("ÄÖÜ digits 123", encoding="utf-8")
    out = tmp_path / "o.pt"
    _one_line_error(CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "3", "-o", str(out),
                                              "--calibration-text", str(cal)]), "not in the model's vocabulary")
    v4 = tmp_path / "rwkv4.pth"
    torch.save(rwkv4_state_dict(2, 32, 20), v4)
    _one_line_error(CliRunner().invoke(main, ["convert", str(v4), "--levels", "3", "-o", str(out)]), "RWKV-4")
    _one_line_error(CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "0", "-o", str(out)]),
                    "levels")
    _one_line_error(CliRunner().invoke(main, ["convert", str(x060_file), "--levels", "3", "--quantile", "1.5", "-o",
                                              str(out)]), "quantile")
    assert not out.exists() and not (tmp_path / "o.pt.tmp").exists()


def test_encoder_slots_hold_the_existing_multilevel_encoder(tiny_rwkv6):
    spiking = convert(tiny_rwkv6(), ids(TEXT), levels=3)
    assert all(type(e) is MultiLevelSpikeEncoder for e in spiking.encoders().values())
    with pytest.raises(CheckpointError):
        load_spikerwkv6(__file__)
