"""SpikeRWKV reference: multi-level spike encoder (paper Eq. 3-4), parallel vs recurrent form, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spikecc.errors import CheckpointError
from spikecc.models.spikerwkv import (
    MultiLevelSpikeEncoder,
    SpikeRWKV,
    SpikeRWKVConfig,
    binary_level_weights,
    energy_per_token,
    generate,
    load_spikerwkv,
    radix_level_weights,
    save_spikerwkv,
)

torch.set_num_threads(1)

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "checkpoints" / "spikerwkv-shakespeare.pt"

# (T, level weights, polarity): the default binary code (fast path), binary codes with T > 1 (T = 3 is not a power
# of two, so it takes the general greedy path), the decimal code of the paper's Fig. 3, and an unsigned encoder
ENCODERS = [
    (1, binary_level_weights(6, 2), True),
    (2, binary_level_weights(4, 1), True),
    (3, binary_level_weights(5, 2), True),
    (4, binary_level_weights(3, 0), True),
    (9, radix_level_weights(6, 9, 1), True),
    (1, binary_level_weights(6, 2), False),
]


def _inputs(enc: MultiLevelSpikeEncoder, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    m = enc.max_value
    res = enc.resolution
    n = round(m / res)
    k = torch.arange(-n - 3, n + 4, dtype=torch.float64)
    if k.numel() > 2000:  # fine codes (Fig. 3 has 10^6 steps): a random sample of the boundaries plus both ends
        k = torch.cat([k[:5], k[-5:], k[torch.randint(0, k.numel(), (2000,), generator=g)]])
    grid = k * res
    x = torch.cat([
        (torch.rand(4000, generator=g, dtype=torch.float64) * 2 - 1) * 1.3 * m,  # includes saturation
        grid, grid + 1e-9, grid - 1e-9,  # on and next to the quantisation boundaries
        torch.tensor([0.0, -0.0, 1e-30, -1e-30, 10 * m, -10 * m], dtype=torch.float64),
    ])
    return x.to(dtype)


# ------------------------------------------------------------------------------------------------ encoder


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T,weights,polarity", ENCODERS)
def test_decode_of_encode_equals_forward_bit_for_bit(T, weights, polarity, dtype):
    enc = MultiLevelSpikeEncoder(T, weights, polarity)
    x = _inputs(enc, dtype)
    x = x[: x.numel() // 2 * 2].reshape(2, -1)  # any shape: spikes get (T, l) in front
    spikes, pol = enc.encode(x)
    assert spikes.shape == (T, len(weights), *x.shape) and spikes.dtype == dtype
    assert torch.equal(enc.decode(spikes, pol), enc(x))


def test_default_code_takes_the_shortcut_and_others_do_not():
    # the bit-exact test above only covers the shortcut if the default encoder really takes it
    assert MultiLevelSpikeEncoder(1, binary_level_weights(6, 2))._fast
    assert MultiLevelSpikeEncoder(2, binary_level_weights(4, 1))._fast
    assert not MultiLevelSpikeEncoder(3, binary_level_weights(5, 2))._fast
    assert not MultiLevelSpikeEncoder(9, radix_level_weights(6, 9, 1))._fast


@pytest.mark.parametrize("T,weights,polarity", ENCODERS)
def test_spikes_are_binary_and_polarity_is_a_sign(T, weights, polarity):
    enc = MultiLevelSpikeEncoder(T, weights, polarity)
    x = _inputs(enc, torch.float64)
    spikes, pol = enc.encode(x)
    assert set(torch.unique(spikes).tolist()) == {0.0, 1.0}
    assert set(torch.unique(pol).tolist()) <= {-1.0, 1.0}
    # Eq. 3 spelled out: (1/T) sum_j sum_i d_i^j * W_i * flag
    w = torch.tensor(weights, dtype=torch.float64).reshape(1, -1, *([1] * x.dim()))
    eq3 = (spikes * w).sum(dim=(0, 1)) / T * pol
    torch.testing.assert_close(eq3, enc(x), rtol=0, atol=1e-12)


def test_hand_worked_fig3_decimal_example():
    # Fig. 3: -0.234567... with l = 6 -> spiking flag for the sign, digits 0.23456 (first digit: integer part).
    # With T = 9 and W_i = 9 * 10^-(i-1), a level's count over 9 steps is one decimal digit:
    # W = (9, 0.9, 0.09, 0.009, 0.0009, 0.00009); counts (0, 2, 3, 4, 5, 6);
    # x_hat = -(0.9*2 + 0.09*3 + 0.009*4 + 0.0009*5 + 0.00009*6) / 9 = -0.23456
    enc = MultiLevelSpikeEncoder(9, radix_level_weights(6, 9, 1))
    assert enc.level_weights == pytest.approx((9, 0.9, 0.09, 0.009, 0.0009, 0.00009))
    x = torch.tensor([-0.234567], dtype=torch.float64)
    spikes, pol = enc.encode(x)
    assert spikes.sum(0)[:, 0].tolist() == [0, 2, 3, 4, 5, 6]
    assert pol.item() == -1
    assert enc(x).item() == pytest.approx(-0.23456, abs=1e-15)


def test_hand_worked_binary_examples():
    # l = 6, 2 integer + 4 fractional bits (Sec. 3.4): W = 2, 1, 1/2, 1/4, 1/8, 1/16, T = 1
    enc = MultiLevelSpikeEncoder(1, binary_level_weights(6, 2))
    assert enc.level_weights == (2, 1, 0.5, 0.25, 0.125, 0.0625)
    x = torch.tensor([-0.234567, 2.7, 10.0], dtype=torch.float64)
    spikes, pol = enc.encode(x)
    # 0.234567 = 0.125 + 0.0625 + 0.047 -> bits 000011 -> 0.1875 (truncated), flag -1
    assert spikes[0, :, 0].tolist() == [0, 0, 0, 0, 1, 1]
    # 2.7 = 2 + 0.5 + 0.125 + 0.0625 + 0.0125 -> bits 101011 -> 2.6875
    assert spikes[0, :, 1].tolist() == [1, 0, 1, 0, 1, 1]
    # 10 saturates at 2 + 1 + ... + 1/16 = 3.9375: every spike fires
    assert spikes[0, :, 2].tolist() == [1, 1, 1, 1, 1, 1]
    assert pol.tolist() == [-1, 1, 1]
    assert enc(x).tolist() == [-0.1875, 2.6875, 3.9375]


def test_hand_worked_two_time_steps():
    # T = 2, W = 1, 1/2, 1/4. x = 1.3: level 1: floor(1.3 * 2 / 1) = 2 spikes, residual 0.3;
    # level 2: floor(0.3 * 2 / 0.5) = 1 spike, residual 0.05; level 3: floor(0.05 * 2 / 0.25) = 0.
    # IF spreading: 2 spikes -> steps (1, 1); 1 spike over 2 steps -> floor(1/2) - 0 = 0, floor(2/2) - floor(1/2) = 1.
    # Eq. 3: ((1*1 + 0*0.5 + 0*0.25) + (1*1 + 1*0.5 + 0*0.25)) / 2 = 1.25
    enc = MultiLevelSpikeEncoder(2, [1.0, 0.5, 0.25])
    x = torch.tensor([1.3], dtype=torch.float64)
    spikes, pol = enc.encode(x)
    assert spikes[:, :, 0].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert enc(x).item() == 1.25 and enc.decode(spikes, pol).item() == 1.25


@pytest.mark.parametrize("T,weights", [(t, w) for t, w, p in ENCODERS if p])
def test_polarity_flag_mirrors_negative_inputs(T, weights):
    enc = MultiLevelSpikeEncoder(T, weights, polarity=True)
    x = _inputs(enc, torch.float64).abs() + 1e-6  # strictly positive
    sp, pp = enc.encode(x)
    sn, pn = enc.encode(-x)
    assert torch.equal(sp, sn)  # same spikes, the sign travels on the flag only
    assert bool((pp == 1).all()) and bool((pn == -1).all())
    assert torch.equal(enc(-x), -enc(x))
    assert bool((enc(-x) < 0).any())


def test_unsigned_encoder_clips_negatives_to_silence():
    enc = MultiLevelSpikeEncoder(1, binary_level_weights(6, 2), polarity=False)
    x = -torch.rand(50, dtype=torch.float64) - 0.1
    spikes, pol = enc.encode(x)
    assert spikes.sum() == 0 and bool((pol == 1).all())
    assert bool((enc(x) == 0).all())


@pytest.mark.parametrize("T,weights,polarity", ENCODERS)
def test_quantisation_error_bounded_by_finest_level(T, weights, polarity):
    enc = MultiLevelSpikeEncoder(T, weights, polarity)
    x = _inputs(enc, torch.float64)
    lo = -enc.max_value if polarity else 0.0
    inside = (x >= lo) & (x <= enc.max_value)
    err = (enc(x) - x)[inside]
    assert err.abs().max() < enc.resolution + 1e-12  # |x - x_hat| < W_l / T
    # truncation: x_hat never moves away from zero
    assert bool((enc(x)[inside].abs() <= x[inside].abs() + 1e-12).all())
    # and the bound is tight: some input uses (almost) all of it
    assert err.abs().max() > 0.9 * enc.resolution
    # outside the range the encoder saturates at +-sum(W)
    assert enc(x).abs().max() == pytest.approx(enc.max_value)


def test_straight_through_gradient_is_one_inside_the_range_zero_outside():
    enc = MultiLevelSpikeEncoder(1, binary_level_weights(6, 2))
    x = torch.tensor([-5.0, -1.3, 0.01, 3.0, 4.5], dtype=torch.float64, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_level_weights_must_be_positive_and_decreasing():
    with pytest.raises(ValueError, match="decreasing"):
        MultiLevelSpikeEncoder(1, [0.5, 1.0])
    with pytest.raises(ValueError, match="positive"):
        MultiLevelSpikeEncoder(1, [1.0, 0.0])
    with pytest.raises(ValueError, match="T must be"):
        MultiLevelSpikeEncoder(0, [1.0])


# ------------------------------------------------------------------------------------------------ model


def _tiny(T: int = 1, weights=None, seed: int = 0) -> SpikeRWKV:
    torch.manual_seed(seed)
    cfg = SpikeRWKVConfig(vocab_size=23, d_model=16, n_layers=2, d_ffn=40, T=T,
                          level_weights=weights or binary_level_weights(6, 2))
    model = SpikeRWKV(cfg).double().eval()
    with torch.no_grad():  # spread the trained-like parameters so every path (decay, bonus, gates) matters
        for blk in model.blocks:
            blk.att.time_decay.uniform_(-3, 2)
            blk.att.time_first.uniform_(-1, 1)
            blk.att.output.weight.normal_(0, 0.3)
            blk.ffn.value.weight.normal_(0, 0.3)
    return model


def _recurrent(model: SpikeRWKV, seq: torch.Tensor):
    st = model.init_state()
    logits, spikes = [], []
    for tok in seq.tolist():
        lg, st, sp = model.step(tok, st)
        logits.append(lg)
        spikes.append(sp)
    return torch.stack(logits), spikes


EXPECTED_NAMES = [f"blocks.{i}.{part}" for i in range(2) for part in (
    "att.enc_k", "att.enc_v", "att.enc_r", "att.enc_o", "ffn.enc_k", "ffn.enc_r", "ffn.enc_v")]


@pytest.mark.parametrize("T,weights", [(1, None), (3, binary_level_weights(4, 1))])
def test_parallel_forward_equals_recurrent_steps_float64(T, weights):
    model = _tiny(T, weights)
    idx = torch.randint(0, 23, (3, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        par = model(idx)
        for b in range(idx.shape[0]):
            rec, _ = _recurrent(model, idx[b])
            torch.testing.assert_close(rec, par[b], rtol=0, atol=1e-9)
    # the logits depend on tokens further back than the token shift reaches (the WKV state is used)
    idx2 = idx.clone()
    idx2[0, -4] = (idx[0, -4] + 1) % 23
    with torch.no_grad():
        assert (model(idx2)[0, -1] - par[0, -1]).abs().max() > 1e-6


def test_step_reports_every_encoder_with_its_spikes():
    model = _tiny(T=2, weights=binary_level_weights(4, 1))
    assert list(model.encoders()) == EXPECTED_NAMES
    seq = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    with torch.no_grad():
        _, spikes = _recurrent(model, seq)
    for sp in spikes:
        assert list(sp) == EXPECTED_NAMES
        for name, s in sp.items():
            c_in = 40 if name.endswith("ffn.enc_v") else 16
            assert s.shape == (2, 4, c_in), name
            assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    # the step spikes are the ones the parallel form counts: firing rates agree
    rates = model.firing_rates(seq[None])
    for name in EXPECTED_NAMES:
        from_steps = torch.stack([sp[name] for sp in spikes]).mean().item()
        assert from_steps == pytest.approx(rates[name], abs=1e-12), name
    assert 0.0 < min(rates.values()) and max(rates.values()) < 1.0


def test_step_detailed_polarity_decodes_the_linear_inputs():
    model = _tiny()
    st = model.init_state()
    with torch.no_grad():
        out = model.step_detailed(7, st)
        # recompute blocks.0.att.enc_k's input by hand (first token: the token shift sees zeros)
        blk = model.blocks[0]
        h = blk.ln1(blk.ln0(model.emb(torch.tensor(7))))
        xk = h * blk.att.time_mix_k
    enc = blk.att.enc_k
    s, p = out.spikes["blocks.0.att.enc_k"], out.polarity["blocks.0.att.enc_k"]
    assert torch.equal(enc.decode(s, p), enc(xk))
    assert bool((p == -1).any()) and bool((p == 1).any())
    assert bool((out.polarity["blocks.0.ffn.enc_v"] == 1).all())  # unsigned encoder


def test_energy_per_token_follows_the_paper_formula():
    model = _tiny()  # T = 1, l = 6, d = 16, d_ffn = 40, 2 layers
    rates = {n: 0.25 for n in model.encoders()}
    e = energy_per_token(model, rates)
    c_in = 2 * (16 * 6 + 40)  # per block: 6 encoders of width 16, ffn.enc_v of width 40
    assert e["paper_snn_pj"] == pytest.approx(c_in * 0.25 * 1 * 6 * 0.9)
    assert e["paper_ann_pj"] == pytest.approx(c_in * 4.6)
    synops = 2 * (3 * 16 * 16 + 16 * 16 + 16 * 40 + 16 * 16 + 40 * 16)
    assert e["synop_snn_pj"] == pytest.approx(synops * 0.25 * 6 * 0.9)


# ------------------------------------------------------------------------------------------------ checkpoints


def test_save_load_round_trip(tmp_path):
    model = _tiny(T=2, weights=binary_level_weights(4, 1)).float()
    vocab = "".join(chr(ord("a") + i) for i in range(23))
    path = tmp_path / "m.pt"
    save_spikerwkv(model, vocab, path, meta={"steps": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["family"] == "spikerwkv" and raw["meta"] == {"steps": 3}
    assert raw["config"] == {"vocab_size": 23, "d_model": 16, "n_layers": 2, "d_ffn": 40, "T": 2,
                             "level_weights": [1.0, 0.5, 0.25, 0.125], "polarity": True}
    loaded, chars = load_spikerwkv(path)
    assert chars == vocab
    assert next(loaded.parameters()).dtype == torch.float64
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.double()), k
    idx = torch.randint(0, 23, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model.double()(idx))


@pytest.fixture
def saved(tmp_path):
    model = _tiny()
    path = tmp_path / "ck.pt"
    save_spikerwkv(model, "x" * 23, path)
    return path, torch.load(path, weights_only=True)


def _expect_error(path: Path, obj, *fragments: str) -> None:
    if obj is not None:
        torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_spikerwkv(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    for f in fragments:
        assert f in msg, (f, msg)


def test_missing_state_dict_key_is_named(saved):
    path, obj = saved
    del obj["state_dict"]["blocks.1.att.time_first"]
    _expect_error(path, obj, "missing key", "blocks.1.att.time_first")


def test_wrong_shape_names_expected_and_found(saved):
    path, obj = saved
    obj["state_dict"]["blocks.0.ffn.key.weight"] = torch.zeros(41, 16)
    _expect_error(path, obj, "blocks.0.ffn.key.weight", "(41, 16)", "expected (40, 16)")


def test_unexpected_state_dict_key_is_named(saved):
    path, obj = saved
    obj["state_dict"]["blocks.0.att.extra"] = torch.zeros(1)
    _expect_error(path, obj, "unexpected key", "blocks.0.att.extra")


def test_wrong_family_and_missing_top_level_keys(saved):
    path, obj = saved
    _expect_error(path, {**obj, "family": "spikegpt"}, "family", "'spikegpt'", "'spikerwkv'")
    _expect_error(path, {k: v for k, v in obj.items() if k != "vocab"}, "missing key 'vocab'")
    conf = {k: v for k, v in obj["config"].items() if k != "level_weights"}
    _expect_error(path, {**obj, "config": conf}, "missing key 'config.level_weights'")
    _expect_error(path, {**obj, "vocab": "abc"}, "'vocab'", "23")
    _expect_error(path, dict(obj["state_dict"]), "missing key 'family'")  # a raw state_dict
    _expect_error(path, [1, 2, 3], "found list")


def test_truncated_and_non_torch_files(tmp_path, saved):
    path, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    _expect_error(cut, None, "not a readable torch checkpoint")
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    _expect_error(text, None, "not a readable torch checkpoint")
    _expect_error(tmp_path / "absent.pt", None, "no such file")


# ------------------------------------------------------------------------------------------------ generation


def test_generate_is_greedy_and_deterministic():
    model = _tiny()
    vocab = "abcdefghijklmnopqrstuvw"
    a = generate(model, vocab, "abcab", 30)
    b = generate(model, vocab, "abcab", 30)
    assert a == b and len(a) == 30 and set(a) <= set(vocab)
    # greedy: the first new character is the argmax of the parallel form at the last prompt position
    with torch.no_grad():
        logits = model(torch.tensor([[0, 1, 2, 0, 1]]))
    assert a[0] == vocab[int(logits[0, -1].argmax())]
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        generate(model, vocab, "xyz!", 3)


# ------------------------------------------------------------------------------------------------ shipped model


@pytest.mark.skipif(not SHIPPED.exists(), reason="shipped checkpoint not built yet")
def test_shipped_checkpoint_beats_unigram_on_a_fixed_val_slice():
    from spikecc.models.data import load_corpus

    assert SHIPPED.stat().st_size <= 5 * 1024 * 1024
    model, chars = load_spikerwkv(SHIPPED)
    corpus = load_corpus()
    assert chars == corpus.vocab.chars
    ctx, n = 128, 4
    val = corpus.val
    x = torch.from_numpy(np.stack([val[i * ctx : (i + 1) * ctx] for i in range(n)]))
    y = torch.from_numpy(np.stack([val[i * ctx + 1 : (i + 1) * ctx + 1] for i in range(n)]))
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
    counts = np.bincount(corpus.train, minlength=corpus.vocab.size) + 1.0
    unigram = float(-np.log(counts / counts.sum())[y.numpy()].mean())
    assert loss < unigram - 1.0, (loss, unigram)
    assert math.isfinite(loss)
    text = generate(model, chars, "**ROMEO**  \n", 40)
    assert text == generate(model, chars, "**ROMEO**  \n", 40)
