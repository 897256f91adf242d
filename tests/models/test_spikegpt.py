"""Tests of the SpikeGPT torch reference (spikecc.models.spikegpt) and of the shipped example checkpoint.

Expected numbers are worked out by hand or by an independent formula in this file, never copied from the
code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikecc.errors import CheckpointError
from spikecc.models.data import CharVocab, load_corpus
from spikecc.models.spikegpt import (
    SpikeGPT,
    SpikeGPTConfig,
    expected_shapes,
    generate,
    lif_sequence,
    lif_step,
    load_spikegpt,
    load_vocab,
    random_state_dict,
    save_spikegpt,
    save_vocab,
    spike_fn,
    wkv_sequence,
    wkv_sequence_autograd,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
CKPT = REPO / "examples" / "checkpoints" / "spikegpt-shakespeare.pt"
VOCAB = REPO / "examples" / "checkpoints" / "spikegpt-shakespeare.vocab.json"


def published_keys(n_layer: int) -> list[str]:
    """The published SpikeGPT state-dict keys, written out from the layout of ridgerchu/SpikeGPT's src/model.py."""
    keys = ["emb.weight", "blocks.0.ln0.weight", "blocks.0.ln0.bias"]
    for i in range(n_layer):
        p = f"blocks.{i}"
        keys += [f"{p}.ln1.weight", f"{p}.ln1.bias", f"{p}.ln2.weight", f"{p}.ln2.bias"]
        keys += [f"{p}.att.{n}" for n in ("time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r")]
        keys += [f"{p}.att.{n}.weight" for n in ("key", "value", "receptance", "output")]
        keys += [f"{p}.ffn.time_mix_k", f"{p}.ffn.time_mix_r"]
        keys += [f"{p}.ffn.{n}.weight" for n in ("key", "receptance", "value")]
    keys += ["ln_out.weight", "ln_out.bias", "head.weight"]
    return keys


def small_model(seed: int = 0, n_layer: int = 2, d: int = 16, vocab: int = 11, d_ffn: int = 40,
                embedding: str = "binary") -> SpikeGPT:
    """A float64 model with random weights, built through the public loader (binary embedding: the training code)."""
    sd = random_state_dict(n_layer, d, vocab, d_ffn, seed=seed, dtype=torch.float64)
    return load_spikegpt(sd, embedding=embedding)


# --------------------------------------------------------------------------------------------------
# Neuron
# --------------------------------------------------------------------------------------------------

# Hand-worked spikingjelly LIF (tau = 2, threshold 1, hard reset to 0), V starts at 0:
#   X      H = V + (X - V)/2      S (H - 1 >= 0)   V'
#   1.0    0 + 1/2 = 0.5          0                0.5
#   1.5    0.5 + 1/2 = 1.0        1 (at threshold) 0
#   2.0    0 + 1 = 1.0            1 (at threshold) 0
#   0.0    0                      0                0
#   4.0    2.0                    1                0
#  -2.0   -1.0                    0               -1.0
#   3.0   -1 + 4/2 = 1.0          1                0
#   0.5   0.25                    0                0.25
HAND_X = [1.0, 1.5, 2.0, 0.0, 4.0, -2.0, 3.0, 0.5]
HAND_S = [0, 1, 1, 0, 1, 0, 1, 0]
HAND_V = [0.5, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.25]


def test_lif_step_hand_worked():
    v = torch.zeros(1, dtype=torch.float64)
    for x, s_exp, v_exp in zip(HAND_X, HAND_S, HAND_V):
        s, v = lif_step(torch.tensor([x], dtype=torch.float64), v, tau=2.0, v_threshold=1.0)
        assert s.item() == s_exp, f"input {x}"
        assert v.item() == v_exp, f"input {x}"


@pytest.mark.parametrize("requires_grad", [False, True])
def test_lif_sequence_hand_worked(requires_grad):
    # Both the plain loop and the custom-backward path (taken when x requires grad) must fire identically.
    x = torch.tensor(HAND_X, dtype=torch.float64).view(1, -1, 1).requires_grad_(requires_grad)
    s, v = lif_sequence(x, tau=2.0, v_threshold=1.0)
    assert s.view(-1).tolist() == HAND_S
    assert v.item() == HAND_V[-1]


def test_lif_threshold_is_a_parameter():
    # tau = 4, threshold 0.5: X = 2 from rest gives H = 0.5, exactly at threshold -> spike.
    s, v = lif_step(torch.tensor([2.0]), torch.zeros(1), tau=4.0, v_threshold=0.5)
    assert s.item() == 1.0 and v.item() == 0.0
    s, v = lif_step(torch.tensor([1.9]), torch.zeros(1), tau=4.0, v_threshold=0.5)
    assert s.item() == 0.0 and v.item() == pytest.approx(0.475)


def test_arctan_surrogate_gradient():
    z = torch.tensor([0.0, 1.0, -0.5], dtype=torch.float64, requires_grad=True)
    s = spike_fn(z)
    assert s.tolist() == [1.0, 1.0, 0.0]
    (g,) = torch.autograd.grad(s.sum(), z)
    alpha = 2.0  # spikingjelly surrogate.ATan default, used by SpikeGPT
    expected = [alpha / 2 / (1 + (math.pi / 2 * alpha * zz) ** 2) for zz in (0.0, 1.0, -0.5)]
    assert g.tolist() == pytest.approx(expected, rel=1e-12)


def test_lif_sequence_backward_matches_autograd():
    # The hand-written BPTT (surrogate slope, gradient through the hard reset) equals autograd through
    # an explicit loop of lif_step.
    g = torch.Generator().manual_seed(1)
    x = (1.5 * torch.randn(3, 20, 4, dtype=torch.float64, generator=g)).requires_grad_()
    w = torch.randn(3, 20, 4, dtype=torch.float64, generator=g)
    s_fast, v_fast = lif_sequence(x)
    (g_fast,) = torch.autograd.grad((s_fast * w).sum() + v_fast.sum(), x)
    v = torch.zeros(3, 4, dtype=torch.float64)
    spikes = []
    for t in range(20):
        s, v = lif_step(x[:, t], v)
        spikes.append(s)
    (g_ref,) = torch.autograd.grad((torch.stack(spikes, 1) * w).sum() + v.sum(), x)
    assert torch.equal(s_fast.detach(), torch.stack(spikes, 1).detach())
    assert 0.05 < s_fast.mean().item() < 0.95  # the comparison exercised both branches
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-14)


def test_snntorch_leaky_matches_except_at_threshold():
    """snntorch.Leaky(beta=1-1/tau, reset 'zero', reset_delay=False) fed X/tau follows the same membrane
    H = (1 - 1/tau) V + X/tau, but fires on H - thr > 0 (strict), spikingjelly/SpikeGPT on >= 0.
    Away from the threshold the two agree; a neuron landing exactly on it does not fire in snntorch,
    which is why spikecc implements its own LIF."""
    snn = pytest.importorskip("snntorch")
    tau = 2.0

    def run_snntorch(xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lif = snn.Leaky(beta=1 - 1 / tau, threshold=1.0, reset_mechanism="zero", reset_delay=False)
        mem = torch.zeros_like(xs[:, 0])
        spikes, mems = [], []
        for t in range(xs.shape[1]):
            spk, mem = lif(xs[:, t] / tau, mem)
            spikes.append(spk.to(xs.dtype))
            mems.append(mem)
        return torch.stack(spikes, 1), torch.stack(mems, 1)

    # Generic inputs (no membrane lands on 1.0 exactly): identical spikes, membranes equal up to rounding.
    g = torch.Generator().manual_seed(0)
    xs = 2.0 * torch.rand(8, 50, dtype=torch.float64, generator=g) + 0.3
    ours_s, ours_v = [], []
    v = torch.zeros(8, dtype=torch.float64)
    for t in range(50):
        s, v = lif_step(xs[:, t], v)
        ours_s.append(s)
        ours_v.append(v)
    ref_s, ref_v = run_snntorch(xs)
    assert torch.equal(torch.stack(ours_s, 1), ref_s)
    assert 0.1 < ref_s.mean().item() < 0.9
    torch.testing.assert_close(torch.stack(ours_v, 1), ref_v, rtol=0, atol=1e-12)

    # Hand-worked sequence: at the step where H == 1 exactly they part ways.
    xs = torch.tensor([HAND_X], dtype=torch.float64)
    ref_s, _ = run_snntorch(xs)
    assert ref_s[0].tolist() != HAND_S
    assert ref_s[0, 1].item() == 0.0 and HAND_S[1] == 1  # H = 1.0: snntorch silent, SpikeGPT fires


# --------------------------------------------------------------------------------------------------
# WKV
# --------------------------------------------------------------------------------------------------


def wkv_direct(w, u, k, v):
    """wkv_t from its defining sums, with plain exponentials (fine for small k in float64)."""
    b, n_t, c = k.shape
    out = torch.empty_like(k)
    for t in range(n_t):
        num = torch.exp(u + k[:, t]) * v[:, t]
        den = torch.exp(u + k[:, t])
        for i in range(t):
            e = torch.exp((t - 1 - i) * w + k[:, i])
            num = num + e * v[:, i]
            den = den + e
        out[:, t] = num / den
    return out


def test_wkv_matches_definition():
    g = torch.Generator().manual_seed(2)
    w = -torch.exp(torch.randn(5, dtype=torch.float64, generator=g))
    u = torch.randn(5, dtype=torch.float64, generator=g)
    k = torch.randn(2, 12, 5, dtype=torch.float64, generator=g)
    v = torch.randn(2, 12, 5, dtype=torch.float64, generator=g)
    torch.testing.assert_close(wkv_sequence(w, u, k, v), wkv_direct(w, u, k, v), rtol=1e-12, atol=1e-12)


def test_wkv_stable_for_large_keys():
    # exp(800) overflows float64; the running-max form must stay finite and still weight the big key ~1.
    w = torch.full((1,), -0.5, dtype=torch.float64)
    u = torch.zeros(1, dtype=torch.float64)
    k = torch.tensor([[[800.0], [0.0], [-800.0]]], dtype=torch.float64)
    v = torch.tensor([[[3.0], [-1.0], [5.0]]], dtype=torch.float64)
    y = wkv_sequence(w, u, k, v)
    assert torch.isfinite(y).all()
    assert y.view(-1).tolist() == pytest.approx([3.0, 3.0, 3.0])


def test_wkv_backward_matches_autograd():
    g = torch.Generator().manual_seed(3)
    for scale in (1.0, 20.0):  # 20: exponentials far outside float range without the running max
        w = (-torch.exp(torch.randn(4, dtype=torch.float64, generator=g))).requires_grad_()
        u = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_()
        k = (scale * torch.randn(2, 15, 4, dtype=torch.float64, generator=g)).requires_grad_()
        v = torch.randn(2, 15, 4, dtype=torch.float64, generator=g).requires_grad_()
        gy = torch.randn(2, 15, 4, dtype=torch.float64, generator=g)
        fast = torch.autograd.grad((wkv_sequence(w, u, k, v) * gy).sum(), (w, u, k, v))
        ref = torch.autograd.grad((wkv_sequence_autograd(w, u, k, v) * gy).sum(), (w, u, k, v))
        for name, a, b in zip("wukv", fast, ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"grad {name}, scale {scale}")


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def test_parallel_and_recurrent_modes_agree_float64():
    model = small_model(seed=4)
    assert model.dtype == torch.float64
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 11, (2, 30), generator=g)
    with torch.no_grad():
        logits_par, spikes_par = model.forward_with_spikes(idx)
        state = model.init_state(batch=2, dtype=torch.float64)
        logits_rec, spikes_rec = [], {}
        for t in range(30):
            lg, state, sp = model.step(idx[:, t], state)
            logits_rec.append(lg)
            for name, s in sp.items():
                spikes_rec.setdefault(name, []).append(s)
    assert logits_par.shape == (2, 30, 11) and logits_par.dtype == torch.float64
    torch.testing.assert_close(torch.stack(logits_rec, 1), logits_par, rtol=1e-10, atol=1e-10)
    expected_names = ["emb", "blocks.0.att_lif", "blocks.0.ffn_lif", "blocks.1.att_lif", "blocks.1.ffn_lif"]
    assert sorted(spikes_rec) == sorted(expected_names) == sorted(model.spiking_layers())
    for name in expected_names:
        rec = torch.stack(spikes_rec[name], 1)
        assert torch.equal(rec, spikes_par[name]), name
        assert set(rec.unique().tolist()) <= {0.0, 1.0}, name
        assert 0.0 < rec.mean().item() < 1.0, f"{name} never/always fires: comparison would be vacuous"


def test_step_does_not_modify_state_and_is_resumable():
    model = small_model(seed=6)
    idx = torch.tensor([[1, 2, 3, 4, 5, 6]])
    s0 = model.init_state(1)
    snapshot = {k: v.clone() for k, v in s0.items()}
    with torch.no_grad():
        _, s1, _ = model.step(idx[:, 0], s0)
        for k in s0:
            assert torch.equal(s0[k], snapshot[k]), k
        # Re-running from the same state gives the same logits (no hidden state inside the module).
        a, _, _ = model.step(idx[:, 1], s1)
        b, _, _ = model.step(idx[:, 1], s1)
    assert torch.equal(a, b)


def test_forward_is_causal():
    model = small_model(seed=7)
    idx = torch.randint(0, 11, (1, 20), generator=torch.Generator().manual_seed(8))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 3) % 11
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :12], b[:, :12], rtol=0, atol=0)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_binary_embedding_is_heaviside_of_embedding():
    model = small_model(seed=9)
    with torch.no_grad():
        model.emb.weight[3, :4] = torch.tensor([0.0, -1e-9, 2.0, -3.0], dtype=torch.float64)
        _, _, spikes = model.step(torch.tensor([3]), model.init_state(1))
    assert spikes["emb"][0, :4].tolist() == [1.0, 0.0, 1.0, 0.0]  # 0 counts as >= 0
    assert torch.equal(spikes["emb"][0], (model.emb.weight[3] >= 0).double())


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(1, 16, 7, 32))
    model.reset_parameters(seed=0)
    x = torch.tensor([[0, 1, 2, 3, 4, 5, 6] * 3])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def test_random_state_dict_layout_and_216m_shape():
    sd = random_state_dict(2, 8, 5, d_ffn=24, seed=0)
    assert list(sd) == published_keys(2)
    assert sd["blocks.1.ffn.key.weight"].shape == (24, 8)
    assert sd["blocks.1.ffn.value.weight"].shape == (8, 24)
    assert sd["blocks.0.att.time_mix_k"].shape == (1, 1, 8)  # RWKV-4 convention
    assert all(t.dtype == torch.float32 for t in sd.values())
    again = random_state_dict(2, 8, 5, d_ffn=24, seed=0)
    other = random_state_dict(2, 8, 5, d_ffn=24, seed=1)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert not torch.equal(sd["head.weight"], other["head.weight"])
    # The released 216M model: L18 D768 vocab 50277, FFN 4*D. Count without allocating it.
    d, f, v, n_layer = 768, 3072, 50277, 18
    per_block = 4 * d * d + (f * d + d * d + d * f) + 5 * d + 2 * d + 4 * d
    total = 2 * v * d + n_layer * per_block + 2 * d + 2 * d
    assert 2.14e8 < total < 2.17e8  # "216M"
    shapes = expected_shapes(SpikeGPTConfig(n_layer, d, v, f))
    assert sum(math.prod(s) for s in shapes.values()) == total


def test_loader_reads_sizes_from_shapes():
    model = load_spikegpt(random_state_dict(3, 12, 9, d_ffn=20, seed=1))
    cfg = model.cfg
    assert (cfg.n_layer, cfg.d_model, cfg.vocab_size, cfg.d_ffn) == (3, 12, 9, 20)
    assert (cfg.tau, cfg.v_threshold) == (2.0, 1.0)
    assert len(model.blocks) == 3 and model.dtype == torch.float32
    assert model.spiking_layers()[-1] == "blocks.2.ffn_lif"


def test_loader_accepts_flat_time_mix():
    sd = random_state_dict(2, 8, 6, d_ffn=16, seed=2, dtype=torch.float64)
    flat = {k: (v.reshape(-1) if ".time_mix_" in k else v) for k, v in sd.items()}
    assert flat["blocks.0.att.time_mix_v"].shape == (8,)
    idx = torch.tensor([[0, 5, 2, 2, 4, 1]])
    with torch.no_grad():
        torch.testing.assert_close(load_spikegpt(flat)(idx), load_spikegpt(sd)(idx), rtol=0, atol=0)


def test_save_load_round_trip(tmp_path):
    model = small_model(seed=10)
    path = tmp_path / "m.pt"
    save_spikegpt(model, path)
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and list(raw) == published_keys(2)  # raw state dict, published layout
    # the raw state dict does not say how the embedding was used: without a sidecar the loader follows the authors'
    # inference rule (binary only at vocabulary 77), so a binary model of vocabulary 11 must say so
    assert load_spikegpt(path).cfg.embedding == "real"
    again = load_spikegpt(path, embedding="binary")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    idx = torch.tensor([[1, 3, 5, 7, 9, 0, 2]])
    with torch.no_grad():
        assert torch.equal(again(idx), model(idx))
    save_vocab(CharVocab("abcdefghijk"), tmp_path / "m.vocab.json")  # spikecc's sidecar: trained binary
    assert load_spikegpt(path).cfg.embedding == "binary"
    save_vocab(CharVocab("abcdefghijk"), tmp_path / "m.vocab.json", embedding="real")
    assert load_spikegpt(path).cfg.embedding == "real"


def _expect_error(source, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_spikegpt(source)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def test_missing_key_names_file_and_key(tmp_path):
    sd = random_state_dict(2, 8, 6, d_ffn=16)
    del sd["blocks.1.att.time_first"]
    path = tmp_path / "missing.pt"
    torch.save(sd, path)
    _expect_error(path, str(path), "blocks.1.att.time_first", "missing")


def test_wrong_shape_names_key_expected_and_found(tmp_path):
    sd = random_state_dict(2, 8, 6, d_ffn=16)
    sd["blocks.0.att.value.weight"] = torch.zeros(8, 9)
    path = tmp_path / "shape.pt"
    torch.save(sd, path)
    _expect_error(path, str(path), "blocks.0.att.value.weight", "(8, 9)", "(8, 8)")


def test_wrong_time_mix_shape(tmp_path):
    sd = random_state_dict(1, 8, 6, d_ffn=16)
    sd["blocks.0.ffn.time_mix_r"] = torch.zeros(1, 8, 1)
    _expect_error(sd, "<state dict>", "blocks.0.ffn.time_mix_r", "(1, 8, 1)")


def test_unexpected_key(tmp_path):
    sd = random_state_dict(1, 8, 6, d_ffn=16)
    sd["blocks.0.att.head_q.weight"] = torch.zeros(8, 8)
    _expect_error(sd, "blocks.0.att.head_q.weight", "unexpected")


def test_truncated_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(random_state_dict(1, 8, 6, d_ffn=16), good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    _expect_error(bad, str(bad), "not a readable torch checkpoint")


def test_not_a_torch_file(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, I am not a checkpoint\n")
    _expect_error(bad, str(bad), "not a readable torch checkpoint")
    _expect_error(tmp_path / "nope.pt", str(tmp_path / "nope.pt"), "no such")


def test_bert_checkpoint_is_recognised(tmp_path):
    sd = {
        "bert.embeddings.word_embeddings.weight": torch.zeros(30, 8),
        "bert.encoder.layer.0.attention.self.query.weight": torch.zeros(8, 8),
        "bert.encoder.layer.0.attention.self.clip_key.0": torch.zeros(1),
    }
    path = tmp_path / "spikelm.pt"
    torch.save(sd, path)
    _expect_error(path, str(path), "looks like a SpikeLM/BERT checkpoint, not SpikeGPT")


def test_other_bad_layouts(tmp_path):
    _expect_error({"state_dict": random_state_dict(1, 8, 6, d_ffn=16)}, "state_dict")
    sd = random_state_dict(1, 8, 6, d_ffn=16)
    sd["blocks.0.ffnPre.key.weight"] = sd.pop("blocks.0.att.key.weight")
    _expect_error(sd, "ffnPre")
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    _expect_error(path, str(path), "list")


# --------------------------------------------------------------------------------------------------
# Shipped checkpoint and generation
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    if not CKPT.exists():
        pytest.fail(f"{CKPT} is missing: run examples/train_spikegpt.py")
    return load_spikegpt(CKPT), load_vocab(VOCAB), load_corpus()


def test_shipped_checkpoint_beats_unigram(shipped):
    model, vocab, corpus = shipped
    assert vocab == corpus.vocab
    assert CKPT.stat().st_size <= 5 * 1024 * 1024
    # A fixed slice: 4 windows of 256 characters from the validation split.
    starts = [0, 100_000, 250_000, 400_000]
    windows = torch.from_numpy(np.stack([corpus.val[s : s + 256] for s in starts]))
    with torch.no_grad():
        logits = model(windows[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1).double(), windows[:, 1:].flatten()).item()
    counts = np.bincount(corpus.train, minlength=vocab.size) + 1.0
    unigram = float(-np.log(counts / counts.sum())[windows[:, 1:].numpy()].mean())
    assert unigram > 3.0  # sanity of the baseline itself
    assert loss < 0.7 * unigram, f"val {loss:.3f} vs unigram {unigram:.3f} nats/char"


def test_generate_is_deterministic_and_greedy(shipped):
    model, vocab, _ = shipped
    a = generate(model, vocab, "KING.\n", 40)
    b = generate(model, vocab, "KING.\n", 40)
    assert a == b and len(a) == 40 and set(a) <= set(vocab.chars)
    # Each generated character is the argmax of the parallel-mode logits at the previous position.
    ids = torch.from_numpy(vocab.encode("KING.\n" + a)).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids[:, :-1])
    predicted = logits[0, 5:].argmax(-1)
    assert predicted.tolist() == ids[0, 6:].tolist()


def test_generate_sampling_is_seeded(shipped):
    model, vocab, _ = shipped
    a = generate(model, vocab, "To be", 30, greedy=False, seed=1)
    assert a == generate(model, vocab, "To be", 30, greedy=False, seed=1)
    assert len(a) == 30
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        generate(model, vocab, "\u00e9t\u00e9", 3)


def test_shipped_checkpoint_modes_agree_in_float64(shipped):
    model, vocab, corpus = shipped
    model64 = load_spikegpt(CKPT).double()
    assert model64.dtype == torch.float64 and model.dtype == torch.float32
    ids = torch.from_numpy(corpus.val[1000:1048]).unsqueeze(0)
    with torch.no_grad():
        par = model64(ids)
        state = model64.init_state(1)
        rec = []
        for t in range(ids.shape[1]):
            lg, state, _ = model64.step(ids[:, t], state)
            rec.append(lg)
    torch.testing.assert_close(torch.stack(rec, 1), par, rtol=1e-10, atol=1e-10)
