"""RWKV-6 (x060) float reference: agreement with BlinkDL's `rwkv` package (an independent implementation, run on CPU
in float32), parallel vs recurrent form, the x060 loader's one-line errors, and the shipped checkpoint."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spikecc.errors import CheckpointError
from spikecc.models.rwkv6 import RWKV6, RWKV6Config, generate, load_rwkv6, rwkv6_from_state_dict, wkv6_chunked
from spikecc.models.spikegpt import random_state_dict as rwkv4_state_dict

# the rwkv package reads these when imported: plain torch (no TorchScript), no CUDA kernels
os.environ["RWKV_JIT_ON"] = "0"
os.environ["RWKV_CUDA_ON"] = "0"

torch.set_num_threads(1)

CHECKPOINTS = Path(__file__).resolve().parents[2] / "examples" / "checkpoints"
SHIPPED = CHECKPOINTS / "rwkv6-shakespeare.pt"
HELDOUT = CHECKPOINTS / "rwkv6-shakespeare.heldout.txt"


def x060_shapes(vocab: int, C: int, layers: int, heads: int, N: int, F: int, D: int, Dd: int) -> dict:
    """The x060 key layout as BlinkDL's trainer saves it (RWKV_Tmix_x060 / RWKV_CMix_x060), written out here from
    that code rather than taken from spikecc's model."""
    A = heads * N
    shapes = {"emb.weight": (vocab, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)}
    for i in range(layers):
        p = f"blocks.{i}."
        shapes.update({p + "ln1.weight": (C,), p + "ln1.bias": (C,), p + "ln2.weight": (C,), p + "ln2.bias": (C,)})
        for j in "xwkvrg":
            shapes[p + f"att.time_maa_{j}"] = (1, 1, C)
        shapes.update({
            p + "att.time_maa_w1": (C, 5 * D), p + "att.time_maa_w2": (5, D, C), p + "att.time_decay": (1, 1, A),
            p + "att.time_decay_w1": (C, Dd), p + "att.time_decay_w2": (Dd, A), p + "att.time_faaaa": (heads, N),
            p + "att.receptance.weight": (A, C), p + "att.key.weight": (A, C), p + "att.value.weight": (A, C),
            p + "att.output.weight": (C, A), p + "att.gate.weight": (A, C), p + "att.ln_x.weight": (A,),
            p + "att.ln_x.bias": (A,), p + "ffn.time_maa_k": (1, 1, C), p + "ffn.time_maa_r": (1, 1, C),
            p + "ffn.key.weight": (F, C), p + "ffn.receptance.weight": (C, C), p + "ffn.value.weight": (C, F)})
    shapes.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (vocab, C)})
    return shapes


def random_x060(seed: int = 0, vocab: int = 50, C: int = 64, layers: int = 3, heads: int = 4, N: int = 16,
                F: int = 224, D: int = 8, Dd: int = 12) -> dict[str, torch.Tensor]:
    """A random x060 state dict with trained-like ranges: mixes in (0, 1), decays from fast to slow (some w_t near
    0, some near 1), LoRA terms large enough to matter, LayerNorm gains around 1."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in x060_shapes(vocab, C, layers, heads, N, F, D, Dd).items():
        t = torch.empty(shape)
        if k.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
            t.uniform_(0.7, 1.3, generator=g)
        elif k.endswith(".bias"):
            t.uniform_(-0.2, 0.2, generator=g)
        elif k.endswith(("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2")):
            t.normal_(0, 0.3, generator=g)
        elif ".time_maa_" in k:
            t.uniform_(0, 1, generator=g)
        elif k.endswith("time_decay"):
            t.uniform_(-5, 1, generator=g)
        elif k.endswith("time_faaaa"):
            t.normal_(0, 0.5, generator=g)
        elif k == "emb.weight":
            t.normal_(0, 1, generator=g)
        else:
            t.normal_(0, 1 / math.sqrt(shape[1]), generator=g)
        sd[k] = t
    return sd


# ------------------------------------------------------------------------------------------------ vs rwkv package


@pytest.mark.parametrize("sizes", [
    dict(vocab=50, C=64, layers=3, heads=4, N=16, F=224, D=8, Dd=12),
    dict(vocab=37, C=48, layers=2, heads=2, N=24, F=96, D=4, Dd=16),
])
def test_agrees_with_blinkdl_rwkv_package_in_float32(sizes, tmp_path):
    import rwkv.model as rwkv_model  # BlinkDL's package (dev dependency), imported after the env settings above
    path = tmp_path / "random-x060.pth"  # the package insists on .pth
    torch.save(random_x060(seed=0, **sizes), path)
    theirs = rwkv_model.RWKV(str(path), "cpu fp32", verbose=False)  # the package's CPU path is float32 only
    ours = load_rwkv6(path, dtype=torch.float32)
    assert (ours.cfg.n_heads, ours.cfg.head_size, ours.cfg.d_mix_lora) == (sizes["heads"], sizes["N"], sizes["D"])
    tokens = torch.randint(0, sizes["vocab"], (40,), generator=torch.Generator().manual_seed(3)).tolist()

    # their sequence mode (att_seq_v6_0, a loop over tokens) against our parallel (chunked) form; ours in float64,
    # so the difference is the package's own float32 rounding (our float32 chunked form rounds differently again)
    seq, _ = theirs.forward(tokens, None, full_output=True)
    with torch.no_grad():
        par = load_rwkv6(path)(torch.tensor([tokens]))[0]
    assert float(seq.abs().max()) > 1.0  # not comparing near-zero logits
    assert float((seq.double() - par).abs().max()) < 1e-5

    state, st = None, ours.init_state()
    for t in tokens[:20]:  # their one-token mode (att_one_v6_0) against our recurrent form
        one, state = theirs.forward([t], state)
        with torch.no_grad():
            mine, st, _ = ours.step(t, st)
        assert float((one - mine).abs().max()) < 1e-5


# ------------------------------------------------------------------------------------------------ forms


@pytest.mark.parametrize("dim_att", [0, 48])
def test_parallel_form_equals_recurrent_form_in_float64(dim_att):
    torch.manual_seed(0)
    cfg = RWKV6Config(vocab_size=30, d_model=32, n_layers=2, head_size=8, dim_att=dim_att, d_mix_lora=4,
                      d_decay_lora=6)
    model = RWKV6(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    idx = torch.randint(0, 30, (2, 37))  # 37: two full chunks of 16 and a partial one
    with torch.no_grad():
        par = model(idx)
        for b in range(2):
            st = model.init_state()
            rec = []
            for t in idx[b]:
                logits, st, spikes = model.step(int(t), st)
                rec.append(logits)
            assert spikes == {}  # a float model has no encoders
            np.testing.assert_allclose(torch.stack(rec).numpy(), par[b].numpy(), rtol=0, atol=1e-12)


def test_chunked_wkv_survives_strong_decays():
    """Decays of exp(-exp(6)) per step: a factorised form would overflow; the chunked one masks before exp."""
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(1, 2, 40, 4, generator=g, dtype=torch.float64) for _ in range(3))
    logw = -torch.exp(torch.empty(1, 2, 40, 4, dtype=torch.float64).uniform_(-6, 6, generator=g))
    u = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = wkv6_chunked(r, k, v, logw, u)
    # the recurrence written out directly from the equations
    S = torch.zeros(2, 4, 4, dtype=torch.float64)
    for t in range(40):
        a = torch.einsum("hi,hj->hij", k[0, :, t], v[0, :, t])
        want = torch.einsum("hi,hij->hj", r[0, :, t], u[:, :, None] * a + S)
        S = a + torch.exp(logw[0, :, t])[:, :, None] * S
        assert torch.isfinite(y[0, :, t]).all()
        np.testing.assert_allclose(y[0, :, t].numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ loader errors


def _expect(sd, *fragments):
    with pytest.raises(CheckpointError) as info:
        rwkv6_from_state_dict(sd, "ck.pth")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("ck.pth: ")
    for f in fragments:
        assert f in msg, (f, msg)


def test_wrong_layouts_give_one_line_errors():
    _expect(rwkv4_state_dict(2, 32, 20), "RWKV-4", "x060")
    rwkv5 = {k.replace("time_maa_", "time_mix_"): v for k, v in random_x060().items()}
    _expect(rwkv5, "RWKV-5")
    rwkv7 = dict(random_x060(), **{"blocks.0.att.w0": torch.zeros(1, 1, 64)})
    _expect(rwkv7, "RWKV-7")
    for key in ("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2"):
        sd = random_x060()
        del sd[f"blocks.2.att.{key}"]
        _expect(sd, f"missing key 'blocks.2.att.{key}'", "low-rank")
    _expect(dict(random_x060(), **{"blocks.0.att.time_faaaa": torch.zeros(3, 16)}), "time_faaaa", "(3, 16)",
            "wrong head size")
    _expect(dict(random_x060(), **{"blocks.0.att.time_faaaa": torch.zeros(64)}), "wrong head size")
    # a later block whose heads disagree with block 0
    _expect(dict(random_x060(), **{"blocks.1.att.time_faaaa": torch.zeros(8, 8)}), "blocks.1.att.time_faaaa",
            "(8, 8)", "expected (4, 16)")
    _expect(dict(random_x060(), **{"blocks.1.ffn.key.weight": torch.zeros(100, 64)}), "blocks.1.ffn.key.weight")
    _expect(dict(random_x060(), **{"blocks.0.att.time_state": torch.zeros(4, 16, 16)}), "unexpected key",
            "time_state")
    _expect([1, 2], "found list")


def test_bad_files_through_load_lm_and_the_cli(tmp_path, checkpoint_error):
    path = tmp_path / "r6.pth"
    sd = random_x060()
    del sd["blocks.1.att.time_decay_w1"]
    checkpoint_error(path, sd, "missing key 'blocks.1.att.time_decay_w1'")
    checkpoint_error(path, dict(random_x060(), **{"blocks.0.att.time_faaaa": torch.zeros(2, 16)}),
                     "wrong head size")
    checkpoint_error(path, random_x060(), "no vocabulary file r6.vocab.json")


# ------------------------------------------------------------------------------------------------ shipped model


def test_shipped_checkpoint_loads_and_predicts_held_out_text():
    from spikecc.compiler.frontends import load_lm
    from spikecc.models.data import load_corpus

    if not SHIPPED.exists() or not HELDOUT.exists():
        pytest.fail(f"{SHIPPED} and {HELDOUT} must ship with the repository")
    lm = load_lm(SHIPPED)
    assert lm.family == "rwkv6" and lm.model.encoders() == {}
    vocab = lm.graph.metadata["vocab"]
    text = HELDOUT.read_text(encoding="utf-8")[:1025]
    ids = torch.tensor([vocab.index(c) for c in text])
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(lm.model(ids[None, :-1])[0], ids[1:]))
    corpus = load_corpus()
    counts = np.bincount(corpus.train, minlength=corpus.vocab.size) + 1.0
    unigram = float(-np.log(counts / counts.sum())[[corpus.vocab.chars.index(c) for c in text[1:]]].mean())
    assert loss < unigram - 1.0  # a trained model, far better than character frequencies
    assert generate(lm.model, vocab, "ROMEO:\n", 40) == generate(lm.model, vocab, "ROMEO:\n", 40)


def test_shipped_checkpoint_runs_in_the_rwkv_package(tmp_path):
    import rwkv.model as rwkv_model  # BlinkDL's package (dev dependency), imported after the env settings above
    if not SHIPPED.exists():
        pytest.fail(f"{SHIPPED} is missing")
    shutil.copy(SHIPPED, tmp_path / "shipped.pth")
    theirs = rwkv_model.RWKV(str(tmp_path / "shipped.pth"), "cpu fp32", verbose=False)
    ours = load_rwkv6(SHIPPED, dtype=torch.float32)
    tokens = list(range(0, 80, 3))
    seq, _ = theirs.forward(tokens, None, full_output=True)
    with torch.no_grad():
        assert float((seq - ours(torch.tensor([tokens]))[0]).abs().max()) < 1e-5
