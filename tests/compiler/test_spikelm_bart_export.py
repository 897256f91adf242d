"""SpikeLM BART -> IR -> spikecc simulator: a save_pretrained directory (config.json, model.safetensors or
pytorch_model.bin, tokenizer.json) loads, exports and generates through the simulator the text of its torch
reference, with the reference's spikes; the BART-base shape (random weights made here) too."""

from __future__ import annotations

import json
import resource
import time

import numpy as np
import pytest
import torch
from authors_ref.spikelm_bart import Ref
from click.testing import CliRunner
from safetensors.torch import save_file

from spikecc.backends.cpu.lm_runner import open_lm_simulator
from spikecc.backends.cpu.seq2seq_runner import Seq2SeqSimulator
from spikecc.cli import main
from spikecc.compiler.frontends import load_lm, reference_generate
from spikecc.errors import CheckpointError, InputFileError
from spikecc.ir import read, validate, write
from spikecc.ir.spikelm_ops import CrossAttention, ElasticBiSpike, SelfAttention
from spikecc.models.spikelm_bart import random_bart_state_dict

torch.set_num_threads(1)

PROMPT = "ROMEO. But soft, what light through yonder window"
TIED = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")


def save_pretrained(d, sd: dict, config: dict, tokenizer, safetensors: bool = True) -> None:
    """What Hugging Face's save_pretrained writes: config.json, the weights (tied copies left out, as it does) and
    the tokenizer's tokenizer.json."""
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    weights = {k: v.contiguous() for k, v in sd.items() if k not in TIED}
    if safetensors:
        save_file(weights, str(d / "model.safetensors"))
    else:
        torch.save(weights, d / "pytorch_model.bin")
    tokenizer.save(str(d / "tokenizer.json"))


def bart_config(d_model: int, layers: int, heads: int, ffn: int, vocab: int, max_pos: int) -> dict:
    return {"model_type": "bart", "d_model": d_model, "encoder_layers": layers, "decoder_layers": layers,
            "encoder_attention_heads": heads, "decoder_attention_heads": heads, "encoder_ffn_dim": ffn,
            "decoder_ffn_dim": ffn, "vocab_size": vocab, "max_position_embeddings": max_pos,
            "activation_function": "gelu", "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "decoder_start_token_id": 2, "scale_embedding": False, "normalize_before": False}


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, train_bpe):
    d = tmp_path_factory.mktemp("bart") / "spikelm-bart-small"
    sd = random_bart_state_dict(vocab=300, d_model=64, encoder_layers=2, decoder_layers=2, ffn=128, max_pos=40,
                                heads=4, seed=5, tied=False)
    save_pretrained(d, sd, bart_config(64, 2, 4, 128, 300, 40), train_bpe(vocab_size=300))
    return d, sd


def test_small_bart_directory_generates_the_reference_text_with_its_spikes(small_dir, tmp_path, capsys):
    d, sd = small_dir
    lm = load_lm(d)  # config.json (4 heads), model.safetensors, tokenizer.json found inside the directory
    assert lm.family == "spikelm-bart" and lm.model.config.encoder_heads == 4 and "tokenizer" in lm.graph.metadata
    g = lm.graph
    assert sum(isinstance(op, CrossAttention) for op in g.nodes.values()) == 2
    assert all(op.masked for op in g.nodes.values() if isinstance(op, SelfAttention))
    write(g, tmp_path / "bart.nir")
    sim = open_lm_simulator(read(tmp_path / "bart.nir"))
    assert isinstance(sim, Seq2SeqSimulator) and sim.source_len == 40
    run = sim.generate(PROMPT, 12, record=True)
    src = sim.encode(PROMPT)
    model = lm.model
    want_ids = Ref(sd, heads=4).greedy(src, 12)  # the authors'-code reference, whole sequences, no cache
    assert run.token_ids[1:] == want_ids and len(want_ids) > 3
    assert run.text == reference_generate(lm, PROMPT, 12) == sim.decode(want_ids)
    # spikes: the encoder's on the real source tokens, the decoder's token by token
    spikes: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        memory = model.encode(torch.tensor([src]), spikes=spikes)
        state = model.start(memory)
        ref_logits, dec_spikes = [], []
        for t in run.token_ids[:len(run.logits)]:  # the tokens fed: the start token and all generated but the last
            logits, state, s = model.step(t, state)
            ref_logits.append(logits.numpy())
            dec_spikes.append(s)
    n = len(src)
    mismatches = compared = 0
    for name, s in spikes.items():  # (T, 1, n, features)
        got = run.spikes[name][0].reshape(4, 40, -1)[:, :n]
        mismatches += int(np.count_nonzero(got != s[:, 0].numpy()))
        compared += int(np.count_nonzero(s))
    for name in dec_spikes[0]:
        want = np.stack([s[name].numpy() for s in dec_spikes])  # (tokens, T, features)
        mismatches += int(np.count_nonzero(run.spikes[name] != want))
        compared += int(np.count_nonzero(want))
    worst = float(np.abs(run.logits - np.stack(ref_logits)).max())
    with capsys.disabled():
        print(f"\n[spikelm-bart small] {len(g.nodes)} nodes; {len(run.token_ids) - 1} tokens; max |logit diff| "
              f"{worst:.3g}; spike mismatches {mismatches} of {compared}")
    assert mismatches == 0 and compared > 0 and worst < 1e-9
    rows = {a.layer: a for a in sim.activity(run)}
    assert rows["decoder.layers.1.encoder_attn.k_spike"].spikes_per_token > 0
    assert rows["encoder.layers.0.self_attn.q_in_spike"].rate > 0


def test_small_bart_from_the_cli(small_dir, tmp_path):
    d, _ = small_dir
    args = ["generate", str(d), "--prompt", PROMPT, "--tokens", "10"]
    sim, ref = CliRunner().invoke(main, args), CliRunner().invoke(main, [*args, "--reference"])
    assert sim.exit_code == 0 and ref.exit_code == 0, sim.output + ref.output
    assert sim.stdout == ref.stdout and sim.stdout.startswith(PROMPT) and len(sim.stdout) > len(PROMPT) + 5
    out = tmp_path / "bart.nir"
    assert CliRunner().invoke(main, ["export", str(d), "-o", str(out)]).exit_code == 0
    again = CliRunner().invoke(main, ["generate", str(out), "--prompt", PROMPT, "--tokens", "10"])
    assert again.stdout == sim.stdout
    shown = CliRunner().invoke(main, ["inspect", str(d), "--prompt", PROMPT, "--tokens", "3"])
    assert shown.exit_code == 0 and "decoder.layers.1.encoder_attn.k_spike" in shown.stdout
    assert "SpikeLM BART encoder-decoder: activity" in shown.stdout
    short = CliRunner().invoke(main, [*args, "--seq-len", "8"])  # the prompt does not fit a source of 8 tokens
    assert short.exit_code == 1 and "at most 8" in short.stderr and len(short.stderr.splitlines()) == 1
    wrong = CliRunner().invoke(main, [*args, "--inference", "rescaled"])
    assert wrong.exit_code == 1 and "--inference is an option of spikegpt checkpoints; this is spikelm-bart" \
        in wrong.stderr


def test_prompt_longer_than_the_source_and_bad_directories(small_dir, tmp_path):
    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.errors import GraphError

    d, _ = small_dir
    lm = load_lm(d / "model.safetensors", reference=False)  # the weights file alone: config.json beside it is read
    assert lm.family == "spikelm-bart" and lm.graph.metadata["decoder_heads"] == 4
    sim = open_lm_simulator(lm.graph)
    with pytest.raises(InputFileError, match="at most 40"):
        sim.generate(PROMPT * 8, 2)
    with pytest.raises(GraphError, match="encoder-decoder"):
        LMSimulator(lm.graph)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="without model.safetensors or pytorch_model.bin"):
        load_lm(empty)
    (empty / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint") as info:
        load_lm(empty)
    assert "\n" not in str(info.value)
    bad = tmp_path / "badcfg"
    bad.mkdir()
    (bad / "config.json").write_text("{")
    torch.save({"x": torch.zeros(1)}, bad / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="config.json: not a JSON file"):
        load_lm(bad)


def test_bart_base_shape_loads_exports_and_generates_the_reference_text(tmp_path, train_bpe, capsys):
    """BART-base: d 768, 6 + 6 layers, 12 heads, FFN 3072, vocabulary 50265, 1024 positions (139M parameters),
    random weights made here, saved like save_pretrained (pytorch_model.bin); greedy text of the simulator (float64,
    the graph written to .nir and read back is not needed here) equals the torch reference's."""
    t0 = time.perf_counter()
    sd = random_bart_state_dict(seed=0, tied=False)
    n_params = sum(v.numel() for k, v in sd.items() if k not in TIED and k != "lm_head.weight")
    save_pretrained(tmp_path / "bart-base", sd, bart_config(768, 6, 12, 3072, 50265, 1024),
                    train_bpe(vocab_size=1000, chars=200_000, pad_to=50265), safetensors=False)
    del sd
    lm = load_lm(tmp_path / "bart-base", seq_len=24)  # sources of up to 24 tokens (the prompt has 21)
    t_load = time.perf_counter() - t0
    shapes = validate(lm.graph)
    cfg = lm.model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_heads, cfg.vocab_size) == \
        (768, 6, 6, 12, 50265)
    assert shapes["logits"] == (50265,) and shapes["encoder_hidden"] == (24, 768)
    assert 135e6 < n_params < 145e6
    spiking = sum(isinstance(op, ElasticBiSpike) for op in lm.graph.nodes.values())
    assert spiking == 6 * 8 + 6 * 14  # encoder layers: 8 neurons; decoder layers: 14
    sim = open_lm_simulator(lm.graph)
    t1 = time.perf_counter()
    run = sim.generate(PROMPT, 6)
    t_sim = time.perf_counter() - t1
    want = reference_generate(lm, PROMPT, 6)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with capsys.disabled():
        print(f"\n[spikelm-bart base] {n_params / 1e6:.0f}M params, {len(lm.graph.nodes)} nodes; make + save + load + "
              f"export {t_load:.1f} s; simulator: {len(run.token_ids) - 1} tokens in {t_sim:.1f} s; "
              f"ids {run.token_ids}; peak RSS {peak:.2f} GiB")
    assert run.text == want and len(run.token_ids) > 3
