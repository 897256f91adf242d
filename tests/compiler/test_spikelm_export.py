"""SpikeLM (causal LM and BERT-layout encoder) -> IR -> spikecc simulator reproduces the torch reference.

One simulator step is one spike step; a token occupies T steps. The kernels of SpikeLM's ops are checked against
the torch modules; the exported graphs, written to .nir and read back, give the reference's ternary spikes in every
spiking layer (compared value for value), its logits / hidden states and its generated text.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spikecc.backends.cpu.lm_runner import LMSimulator
from spikecc.backends.cpu.simulator import Simulator
from spikecc.backends.cpu.spikelm_ops import elastic_bi_spike
from spikecc.cli import main
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.frontends.spikelm import BERT_SEQ_LEN, export_spikelm, export_spikelm_bert
from spikecc.errors import SpikeccError
from spikecc.ir import Graph, infer_signals, read, ternary, validate, write
from spikecc.ir.lm_ops import GELU, Embedding, LayerNorm
from spikecc.ir.spikelm_ops import (
    CausalSelfAttention,
    ContextLengthError,
    ElasticBiSpike,
    PositionEmbedding,
    SelfAttention,
    TokenMean,
)
from spikecc.models.data import CharVocab
from spikecc.models.spikelm import ElasticBiSpike as TorchSpike
from spikecc.models.spikelm import (
    SpikeLM,
    SpikeLMConfig,
    _attend,
    generate,
    load_spikelm_bert,
    random_bert_state_dict,
    save_spikelm,
)

torch.set_num_threads(1)

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "checkpoints" / "spikelm-shakespeare.pt"
VOCAB = "abcdefghijklmnopqrstuvwxyz .,"
N_TOKENS = 64
F64 = torch.float64


def _run_graph(g: Graph, name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs of node `name` for inputs x (steps, ...) all steps at once (`run`) and step by step (`step`)."""
    sim = Simulator(g)
    batch = sim.run({"x": x}, record=[name]).traces[name]
    sim.start()
    stepped = np.stack([sim.step({"x": row})[name] for row in x]).reshape(batch.shape)
    return batch, stepped


def _one_op_graph(op, shape: tuple[int, ...], ports: tuple[str, ...] = ("input",)) -> Graph:
    """x -> op -> out; a multi-port op reads the port p from the p-th block of x's last axis."""
    g = Graph()
    n = len(ports)
    g.add_node("x", nir.Input(input_type={"input": np.array([*shape[:-1], shape[-1] * n])}))
    if ports == ("input",):
        g.add_node("op", op)
        g.connect("x", "op")
    else:
        g.add_node("op", op)
        for i, p in enumerate(ports):  # a Linear that selects block i feeds port p
            sel = np.zeros((shape[-1], shape[-1] * n))
            sel[:, i * shape[-1]:(i + 1) * shape[-1]] = np.eye(shape[-1])
            g.add_node(f"sel_{p}", nir.Linear(weight=sel))
            g.connect("x", f"sel_{p}")
            g.connect(f"sel_{p}", "op", p)
    g.add_node("out", nir.Output(output_type={"output": np.array(shape)}))
    g.connect("op", "out")
    return g


# ------------------------------------------------------------------------------------------------ kernels


def _frozen(mode: str, alphas, leak: float = 0.25) -> TorchSpike:
    n = TorchSpike(T=len(alphas), k=2.0, threshold_mode=mode, leak=leak).double()
    n.alpha.copy_(torch.tensor(alphas, dtype=F64))
    n.calibrated.fill_(True)
    return n


def _neuron_inputs(alphas, tokens: int, n: int, seed: int) -> np.ndarray:
    """Random currents (tokens, T, n) plus, in the first columns, values exactly on the thresholds of step 0
    (+-alpha_0, +-alpha_0/2) and a hand-worked column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.5 * max(alphas), (tokens, len(alphas), n))
    a0 = alphas[0]
    x[:, 0, :6] = [a0, -a0, a0 / 2, -a0 / 2, 0.0, -0.0]
    return x


@pytest.mark.parametrize("mode", ["code", "paper"])
@pytest.mark.parametrize("alphas,leak", [((2.0, 1.0, 4.0), 0.25), ((0.7, 0.3, 0.5, 0.9), 0.25), ((0.6,), 0.25),
                                         ((0.4, 0.8, 0.2, 0.3), 0.0)])
def test_elastic_bi_spike_kernel_equals_torch_neuron(mode, alphas, leak):
    ref_neuron = _frozen(mode, alphas, leak)
    T = len(alphas)
    x = _neuron_inputs(alphas, tokens=7, n=50, seed=T)
    with torch.no_grad():
        want = np.stack([ref_neuron(torch.from_numpy(tok)).numpy() for tok in x])  # one token at a time
    got = np.stack([elastic_bi_spike(tok, np.array(alphas), leak, mode == "code") for tok in x])
    assert np.array_equal(got, want)
    assert set(np.unique(np.abs(want)).tolist()) <= {0.0, *alphas}
    # through the simulator, tokens back to back (T steps each): the membrane must restart at every token
    op = ElasticBiSpike(T=T, alpha=np.array(alphas), leak=leak, threshold_mode=mode)
    batch, stepped = _run_graph(_one_op_graph(op, (50,)), "op", x.reshape(-1, 50))
    assert np.array_equal(batch.reshape(x.shape), want) and np.array_equal(stepped.reshape(x.shape), want)


def test_elastic_bi_spike_hand_worked_and_signal():
    # alpha = (2, 1, 4), beta = 0.25 (tests/models/test_spikelm.py works these out by hand)
    x = np.array([[-1.2, 0.3, 2.5], [1.0, 0.0, 1.9], [5.0, -3.0, 0.0], [-1.0, 1.2, 0.1]]).T
    assert np.array_equal(elastic_bi_spike(x, np.array([2.0, 1.0, 4.0]), 0.25, True),
                          [[-2, 0, 2, 0], [-1, 0, -1, 1], [4, 4, 0, 0]])
    x = np.array([[1.5, 0.25, 1.0], [-2.5, 0.3, 3.0], [2.5, 0.0, 4.5], [1.2, 0.8, 3.8], [-2.0, 0.5, 4.125]]).T
    assert np.array_equal(elastic_bi_spike(x, np.array([2.0, 1.0, 4.0]), 0.25, False),
                          [[0, -2, 2, 0, 0], [0, -1, 0, 1, 0], [0, 0, 4, 0, 0]])
    op = ElasticBiSpike(T=3, alpha=np.array([2.0, 1.0, 4.0]), leak=0.25, threshold_mode="paper")
    assert op.output_signal({}) == ternary(4.0)  # amplitude convention: the largest per-step alpha
    for bad in (dict(alpha=np.array([1.0, 2.0])), dict(alpha=np.array([1.0, 0.0, 1.0])),
                dict(threshold_mode="sometimes")):
        with pytest.raises(ValueError):
            ElasticBiSpike(**{"T": 3, "alpha": np.ones(3), **bad})


def test_causal_attention_kernel_equals_reference_attention():
    T, P, h, dh = 3, 9, 4, 5
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(T, 1, h, P, dh, generator=g, dtype=F64) for _ in range(3))
    want = _attend(q, k, v, 0).transpose(2, 3).reshape(T, P, h * dh)  # (T, token, d), heads concatenated
    flat = [t.transpose(2, 3).reshape(T, P, h * dh) for t in (q, k, v)]
    x = np.concatenate([f.numpy() for f in flat], axis=-1)  # (T, P, 3d): ports q | k | v
    x = x.transpose(1, 0, 2).reshape(P * T, 3 * h * dh)  # token-major: token p occupies steps p*T .. p*T+T-1
    op = CausalSelfAttention(n_head=h, T=T)
    batch, stepped = _run_graph(_one_op_graph(op, (h * dh,), ("q", "k", "v")), "op", x)
    ref = want.numpy().transpose(1, 0, 2).reshape(P * T, h * dh)
    assert np.abs(batch - ref).max() < 1e-13 and np.abs(stepped - ref).max() < 1e-13


def test_self_attention_kernel_equals_reference_attention():
    L, h, dh, steps = 6, 2, 4, 3
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(steps, 1, h, L, dh, generator=g, dtype=F64) for _ in range(3))
    want = _attend(q, k, v, None).transpose(2, 3).reshape(steps, L, h * dh).numpy()
    x = np.concatenate([t.transpose(2, 3).reshape(steps, L, h * dh).numpy() for t in (q, k, v)], axis=-1)
    batch, stepped = _run_graph(_one_op_graph(SelfAttention(n_head=h), (L, h * dh), ("q", "k", "v")), "op", x)
    assert np.abs(batch - want).max() < 1e-13 and np.abs(stepped - want).max() < 1e-13


def test_position_embedding_and_token_mean():
    table = np.arange(12.0).reshape(4, 3)
    batch, stepped = _run_graph(_one_op_graph(PositionEmbedding(weight=table, T=2), (1,)), "op", np.zeros((8, 1)))
    assert np.array_equal(batch, table[np.arange(8) // 2]) and np.array_equal(stepped, batch)
    with pytest.raises(ContextLengthError, match="context of 4 tokens") as info:  # a 5th token has no position
        _run_graph(_one_op_graph(PositionEmbedding(weight=table, T=2), (1,)), "op", np.zeros((10, 1)))
    assert isinstance(info.value, ValueError) and isinstance(info.value, SpikeccError)
    seq = PositionEmbedding(weight=table, T=2, mode="sequence")
    batch, stepped = _run_graph(_one_op_graph(seq, (3,)), "op", np.zeros((3, 3)))
    assert np.array_equal(batch.reshape(3, 3, 3), np.broadcast_to(table[:3], (3, 3, 3))) and \
        np.array_equal(stepped, batch)
    assert seq.output_shape({"input": (3,)}) == (3, 3)

    # TokenMean: at a token's last step, bit-identical to torch's mean over T (float64): a sequential sum, then one
    # division. For T > 4 torch sums the columns left over after its SIMD blocks in another order (an ulp apart), so
    # there the feature count is a multiple of the vector block, as SpikeLM's widths are (and 40 is checked to 1e-15).
    rng = np.random.default_rng(2)
    for T, n in ((1, 40), (2, 40), (3, 40), (4, 40), (4, 128), (5, 128), (7, 128), (7, 40)):
        x = rng.normal(0, 10, (5, T, n))  # 5 tokens
        batch, stepped = _run_graph(_one_op_graph(TokenMean(T=T), (n,)), "op", x.reshape(-1, n))
        want = torch.from_numpy(x).transpose(0, 1).contiguous().mean(0).numpy()  # (T, ...) as the model holds it
        got = batch.reshape(5, T, n)
        if T <= 4 or n == 128:
            assert np.array_equal(got[:, -1], want), (T, n)
        np.testing.assert_allclose(got[:, -1], want, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(stepped, batch)
        np.testing.assert_array_equal(got[:, 0], x[:, 0])  # y_0 = x_0


# ------------------------------------------------------------------------------------------------ causal LM


def small_lm(mode: str = "code", T: int = 4, seed: int = 0, context: int = 96) -> SpikeLM:
    """A small random SpikeLM with larger-than-init weights (real attention patterns), calibrated on one batch."""
    torch.manual_seed(seed)
    cfg = SpikeLMConfig(vocab_size=len(VOCAB), n_layer=2, d_model=32, n_head=4, d_ff=48, context=context, T=T,
                        threshold_mode=mode, k=2.0 if mode == "code" else 1.0)
    model = SpikeLM(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model(torch.randint(0, len(VOCAB), (3, min(24, context))))  # calibrates every neuron on this first batch
    return model.eval()


def reference_run(model: SpikeLM, vocab: str, prompt: str, n: int):
    """Greedy generation through `SpikeLM.step`, feeding every token the simulator feeds (the prompt and all n
    generated ones): (ids, logits after each, spikes per layer shaped (tokens, T, features))."""
    ids = [vocab.index(c) for c in prompt]
    state = model.init_state()
    logits, spikes = [], {name: [] for name in model.spike_names()}
    with torch.no_grad():
        i = 0
        while i < len(ids):
            out, state, sp = model.step(ids[i], state)
            logits.append(out.numpy())
            for name in spikes:
                spikes[name].append(sp[name].numpy())
            i += 1
            if i == len(ids) and len(ids) < len(prompt) + n:
                ids.append(int(torch.argmax(out)))
    return ids, np.stack(logits), {k: np.stack(v) for k, v in spikes.items()}


def compare_with_reference(model: SpikeLM, graph: Graph, vocab: str, prompt: str, n: int = N_TOKENS):
    """Simulate `graph` and the torch model on the same greedy run: (max |logit diff|, spike mismatches, spikes
    fired, negative spikes)."""
    run = LMSimulator(graph).generate(prompt, n, record=True)
    ids, ref_logits, ref_spikes = reference_run(model, vocab, prompt, n)
    assert run.token_ids == ids, "generated tokens differ from the torch reference"
    assert run.text == generate(model, CharVocab(vocab), prompt, n)
    assert set(run.spikes) == set(ref_spikes), "the simulator's spiking nodes are not the reference's spike names"
    mismatches = fired = negative = 0
    for name, ref in ref_spikes.items():
        sim = run.spikes[name]  # (tokens, T sub-steps, features)
        assert sim.shape == ref.shape, (name, sim.shape, ref.shape)
        mismatches += int(np.count_nonzero(sim != ref))  # values, not just signs: +-alpha_t exactly
        fired += int(np.count_nonzero(ref))
        negative += int(np.count_nonzero(ref < 0))
    return float(np.abs(run.logits - ref_logits).max()), mismatches, fired, negative


def test_graph_layout_names_and_signals():
    model = small_lm()
    g = export_spikelm(model, VOCAB)
    shapes = validate(g)
    n = model.config.n_layer
    counts: dict[str, int] = {}
    for op in g.nodes.values():
        counts[type(op).__name__] = counts.get(type(op).__name__, 0) + 1
    assert counts == {"Input": 1, "Embedding": 1, "PositionEmbedding": 1, "Scale": 2 * n + 1, "LayerNorm": 2 * n + 1,
                      "ElasticBiSpike": 6 * n, "Affine": 6 * n + 1, "CausalSelfAttention": n, "GELU": n,
                      "TokenMean": 1, "Output": 1}
    assert len(g.nodes) == 4 + 18 * n + 4 and shapes["logits"] == (len(VOCAB),)
    meta = g.metadata
    assert meta["family"] == "spikelm" and meta["vocab"] == VOCAB and meta["substeps"] == 4
    assert (meta["n_layer"], meta["d_model"], meta["n_head"], meta["d_ff"], meta["context"]) == (2, 32, 4, 48, 96)
    assert meta["threshold_mode"] == "code"

    signals = infer_signals(g)
    spiking = {name for name, s in signals.items() if s.is_spiking and not isinstance(g.nodes[name], nir.Input)}
    assert spiking == set(model.spike_names())
    modules = dict(model.named_modules())
    for name in spiking:
        op, ref = g.nodes[name], modules[name]
        assert isinstance(op, ElasticBiSpike) and op.T == 4 and op.threshold_mode == "code"
        kv = name.endswith(("k_spike", "v_spike"))  # K and V neurons have no membrane
        assert np.array_equal(op.alpha, ref.alpha.numpy()) and op.leak == (0.0 if kv else 0.25)
        assert signals[name] == ternary(float(ref.alpha.max()))
    assert isinstance(g.nodes["layers.1.mlp.gelu"], GELU) and isinstance(g.nodes["ln_f"], LayerNorm)
    assert isinstance(g.nodes["tok_emb"], Embedding) and g.nodes["pos_emb"].mode == "stream"
    assert {(e.src, e.port) for e in g.in_edges("layers.0.attn.attend")} == \
        {("layers.0.attn.query", "q"), ("layers.0.attn.k_spike", "k"), ("layers.0.attn.v_spike", "v")}
    assert [e.src for e in g.in_edges("layers.1.res2")] == ["layers.1.res1", "layers.1.mlp.fc2"]
    assert np.array_equal(g.nodes["layers.0.mlp.fc1"].bias, model.layers[0].mlp.fc1.bias.detach().numpy())

    raw = SpikeLM(SpikeLMConfig(vocab_size=len(VOCAB), n_layer=1, d_model=8, n_head=2, d_ff=8, context=8))
    with pytest.raises(ValueError, match="not calibrated"):
        export_spikelm(raw, VOCAB)


@pytest.mark.parametrize("mode,T", [("code", 4), ("paper", 3)])
def test_small_model_reproduces_reference_over_64_generated_tokens(mode, T, tmp_path, capsys):
    model = small_lm(mode, T, seed=T)
    path = tmp_path / "lm.nir"
    write(export_spikelm(model, VOCAB), path)
    g = read(path)  # the file, not the in-memory graph, is what a user simulates
    diff, mismatches, fired, negative = compare_with_reference(model, g, VOCAB, "the quick brown fox")
    with capsys.disabled():
        print(f"\n[spikelm small {mode} T={T}] max |logit diff| over {N_TOKENS} tokens: {diff:.3g}, "
              f"spike mismatches {mismatches} of {fired} spikes ({negative} negative)")
    assert mismatches == 0 and fired > 0 and negative > 0
    assert diff < 1e-4
    assert diff < 1e-9  # float64 on both sides: far tighter than required


def test_shipped_checkpoint_reproduces_reference_over_64_generated_tokens(tmp_path, capsys):
    if not SHIPPED.exists():
        pytest.fail(f"{SHIPPED} is missing: the trained example checkpoint must ship with the repository")
    t0 = time.perf_counter()
    lm = load_lm(SHIPPED)
    assert lm.family == "spikelm" and lm.model is not None
    write(lm.graph, tmp_path / "shipped.nir")
    g = read(tmp_path / "shipped.nir")
    diff, mismatches, fired, negative = compare_with_reference(lm.model, g, g.metadata["vocab"], "ROMEO:\n")
    with capsys.disabled():
        print(f"\n[spikelm-shakespeare] {len(g.nodes)} nodes, {len(g.edges)} edges; max |logit diff| over "
              f"{N_TOKENS} tokens: {diff:.3g}; spike mismatches {mismatches} of {fired} spikes ({negative} negative); "
              f"{time.perf_counter() - t0:.1f} s")
    assert mismatches == 0 and fired > 0 and negative > 0
    assert diff < 1e-4


def test_past_the_context_raises_like_the_reference():
    model = small_lm(context=8)
    sim = LMSimulator(export_spikelm(model, VOCAB))
    run = sim.generate("abc", 5)  # 8 tokens fed: the whole context
    assert run.text == generate(model, CharVocab(VOCAB), "abc", 5)
    # Past the window, generation re-reads the last 8 characters, as the reference generate does ...
    assert sim.generate("abc", 9).text == generate(model, CharVocab(VOCAB), "abc", 9)
    # ... while the graph itself refuses a 9th token in one run: it has no learned position.
    sim.sim.start()
    for c in "abc" + run.text:
        sim.feed(VOCAB.index(c))
    with pytest.raises(ContextLengthError, match="context of 8 tokens"):
        sim.feed(0)
    _, state, _ = reference_run_state(model, "abc" + run.text)
    with pytest.raises(ValueError, match="exceed the model's context of 8"):
        model.step(0, state)  # the reference's step refuses the same token


def reference_run_state(model: SpikeLM, text: str):
    state = model.init_state()
    out = spikes = None
    with torch.no_grad():
        for c in text:
            out, state, spikes = model.step(VOCAB.index(c), state)
    return out, state, spikes


# ------------------------------------------------------------------------------------------------ BERT encoder


@pytest.fixture(scope="module")
def small_bert_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bert") / "small_bert.pt"
    torch.save(random_bert_state_dict(n_layer=2, hidden=64, intermediate=256, vocab=300, max_pos=40, seed=3), path)
    return path


@pytest.mark.parametrize("mode,L", [("code", 40), ("paper", 17)])
def test_small_bert_encoder_reproduces_reference(mode, L, small_bert_file, tmp_path, capsys):
    if mode == "code":
        lm = load_lm(small_bert_file)  # the loader's path: code thresholds, seq_len = min(128, max_pos)
        enc, g = lm.model, lm.graph
        assert lm.family == "spikelm-bert" and g.metadata["seq_len"] == 40  # min(BERT_SEQ_LEN, max_pos)
    else:
        enc = load_spikelm_bert(small_bert_file, threshold_mode="paper")
        for neuron in enc.modules():  # paper thresholds sit at alpha, not alpha/2: halve alpha to keep spikes
            if isinstance(neuron, TorchSpike):
                neuron.alpha.mul_(0.5)
        g = export_spikelm_bert(enc, L)  # shorter than the 40 learned positions
    meta = g.metadata
    assert meta["family"] == "spikelm-bert" and meta["substeps"] == 4 and "vocab" not in meta
    assert validate(g)["hidden"] == (L, 64) and g.metadata["seq_len"] == L
    write(g, tmp_path / "bert.nir")
    g = read(tmp_path / "bert.nir")
    spiking = [n for n, op in g.nodes.items() if isinstance(op, ElasticBiSpike)]
    assert len(spiking) == 8 * 2

    # two sequences, T steps each: the graph reads ids at every step and restarts its neurons per sequence
    gen = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 300, (1, L), generator=gen) for _ in range(2)]
    x = np.concatenate([np.tile(s.numpy().astype(np.float64), (4, 1)) for s in seqs])
    feeds = {"input_ids": x, "token_type_ids": np.zeros_like(x), "attention_mask": np.ones_like(x)}
    sim = Simulator(g)
    res = sim.run(feeds, record=spiking)
    sim.start()  # step by step too: the hidden states of the first sequence after its T steps
    stepped = [sim.step({k: v[t] for k, v in feeds.items()}) for t in range(4)][-1]["hidden"].reshape(L, 64)
    np.testing.assert_array_equal(stepped, res.outputs["hidden"][3])
    worst = mismatches = fired = negative = 0
    for j, ids in enumerate(seqs):
        with torch.no_grad():
            ref, ref_spikes = enc(ids, return_spikes=True)
        worst = max(worst, float(np.abs(res.outputs["hidden"][4 * j + 3] - ref[0].numpy()).max()))
        assert set(ref_spikes) == set(spiking)
        for name, s in ref_spikes.items():
            want = s[:, 0].numpy()  # (T, L, features)
            got = res.traces[name][4 * j: 4 * j + 4]
            mismatches += int(np.count_nonzero(got != want))
            fired += int(np.count_nonzero(want))
            negative += int(np.count_nonzero(want < 0))
    with capsys.disabled():
        print(f"\n[spikelm-bert small {mode} L={L}] max |hidden diff| {worst:.3g}, spike mismatches {mismatches} of "
              f"{fired} spikes ({negative} negative)")
    assert mismatches == 0 and fired > 0 and negative > 0
    assert worst < 1e-9


def test_padded_batch_of_sentence_pairs_equals_the_reference_on_the_unpadded_tokens(small_bert_file, tmp_path):
    """Three sequences of 40, 23 and 9 real tokens, padded to 40 with id 0 and masked, two of them sentence pairs
    (token types 0 then 1): on the real tokens the graph's hidden states and spikes equal the reference's on the
    unpadded sequence, and on every row the reference's on the padded, masked batch."""
    lm = load_lm(small_bert_file)
    enc, L = lm.model, lm.graph.metadata["seq_len"]
    write(lm.graph, tmp_path / "bert.nir")
    g = read(tmp_path / "bert.nir")
    gen = torch.Generator().manual_seed(9)
    lengths, splits = (40, 23, 9), (40, 11, 5)  # second segment starts at `split` (40: a single sentence)
    ids = torch.zeros(3, L, dtype=torch.long)
    types = torch.zeros(3, L, dtype=torch.long)
    mask = torch.zeros(3, L, dtype=torch.long)
    for j, (n, split) in enumerate(zip(lengths, splits)):
        ids[j, :n] = torch.randint(1, 300, (n,), generator=gen)
        types[j, split:n] = 1
        mask[j, :n] = 1
    spiking = [n for n, op in g.nodes.items() if isinstance(op, ElasticBiSpike)]
    feeds = {name: np.repeat(t.numpy().astype(np.float64), 4, axis=0)  # each sequence for T = 4 steps
             for name, t in (("input_ids", ids), ("token_type_ids", types), ("attention_mask", mask))}
    res = Simulator(g).run(feeds, record=spiking)
    with torch.no_grad():
        batch = enc(ids, token_type_ids=types, attention_mask=mask)
    worst_batch = worst_alone = 0.0
    compared = 0
    for j, n in enumerate(lengths):
        got = res.outputs["hidden"][4 * j + 3].reshape(L, 64)
        worst_batch = max(worst_batch, float(np.abs(got - batch[j].numpy()).max()))
        with torch.no_grad():
            alone, alone_spikes = enc(ids[j:j + 1, :n], token_type_ids=types[j:j + 1, :n], return_spikes=True)
        worst_alone = max(worst_alone, float(np.abs(got[:n] - alone[0].numpy()).max()))
        for name, s in alone_spikes.items():
            want = s[:, 0].numpy()  # (T, n, features): the unpadded sequence's spikes
            sim_spikes = res.traces[name][4 * j: 4 * j + 4].reshape(4, L, -1)[:, :n]
            assert np.array_equal(sim_spikes, want), (name, j)
            compared += int(np.count_nonzero(want))
    assert worst_batch < 1e-9 and worst_alone < 1e-9 and compared > 0
    # the mask matters: without it the real tokens of a padded sequence attend to the padding
    unmasked = dict(feeds, attention_mask=np.ones_like(feeds["attention_mask"]))
    off = Simulator(g).run(unmasked).outputs["hidden"][7].reshape(L, 64)[:23]
    assert np.abs(off - res.outputs["hidden"][7].reshape(L, 64)[:23]).max() > 1e-3
    # and so do the token types
    same_type = dict(feeds, token_type_ids=np.zeros_like(feeds["token_type_ids"]))
    off = Simulator(g).run(same_type).outputs["hidden"][7].reshape(L, 64)[:23]
    assert np.abs(off - res.outputs["hidden"][7].reshape(L, 64)[:23]).max() > 1e-3


def test_save_pretrained_directory_reads_the_head_count_from_config_json(tmp_path):
    """A BERT checkpoint saved like Hugging Face's save_pretrained (config.json + model.safetensors) with 2 heads of
    32 features: the head count comes from config.json (hidden // 64 would say 1), and the exported graph equals the
    2-head reference."""
    import json

    from safetensors.torch import save_file

    d = tmp_path / "spikelm-bert"
    d.mkdir()
    sd = random_bert_state_dict(n_layer=2, hidden=64, intermediate=256, vocab=300, max_pos=40, seed=4, num_heads=2)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "num_attention_heads": 2,
                                               "layer_norm_eps": 1e-12, "hidden_size": 64}))
    lm = load_lm(d, seq_len=12)
    assert lm.family == "spikelm-bert" and lm.model.config.num_heads == 2
    assert {op.n_head for op in lm.graph.nodes.values() if isinstance(op, SelfAttention)} == {2}
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(2))
    x = np.tile(ids.numpy().astype(np.float64), (4, 1))
    feeds = {"input_ids": x, "token_type_ids": np.zeros_like(x), "attention_mask": np.ones_like(x)}
    hidden = Simulator(lm.graph).run(feeds).outputs["hidden"][3].reshape(12, 64)
    with torch.no_grad():
        want = lm.model(ids)[0].numpy()
        one_head = load_spikelm_bert(sd)(ids)[0].numpy()  # no config: hidden // 64 = 1 head
    assert np.abs(hidden - want).max() < 1e-9
    assert np.abs(one_head - want).max() > 1e-3
    (d / "config.json").write_text(json.dumps({"num_attention_heads": 3}))
    with pytest.raises(SpikeccError, match="multiple of num_heads"):
        load_lm(d)


def test_bert_base_layout_loads_exports_and_validates(tmp_path, capsys):
    path = tmp_path / "bert_base.pt"
    torch.save(random_bert_state_dict(), path)  # 12 layers, hidden 768, vocab 30522, 512 positions
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    lm = load_lm(path)
    t_load = time.perf_counter() - t0
    shapes = validate(lm.graph)
    t_total = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with capsys.disabled():
        print(f"\n[spikelm-bert base] {len(lm.graph.nodes)} nodes, {len(lm.graph.edges)} edges; load + export "
              f"{t_load:.1f} s, + validate {t_total:.1f} s; peak RSS {rss:.0f} MiB (before loading {rss_before:.0f})")
    cfg = lm.model.config
    assert (cfg.n_layer, cfg.hidden, cfg.num_heads, cfg.vocab_size, cfg.T) == (12, 768, 12, 30522, 4)
    assert shapes["hidden"] == (BERT_SEQ_LEN, 768) and shapes["layers.11.mlp.fc1"] == (BERT_SEQ_LEN, 3072)
    assert len(lm.graph.nodes) == 7 + 20 * 12 + 2  # 3 inputs, 3 tables, LN; 20 per layer; mean, output


# ------------------------------------------------------------------------------------------------ files and CLI


def test_bad_causal_checkpoints_give_one_line_errors(tmp_path, checkpoint_error):
    path = tmp_path / "lm.pt"
    save_spikelm(path, small_lm(context=8), CharVocab(VOCAB))
    obj = torch.load(path, weights_only=True)
    sd = dict(obj["state_dict"])
    del sd["layers.1.attn.k_spike.alpha"]
    checkpoint_error(path, {**obj, "state_dict": sd}, "missing key", "state_dict.layers.1.attn.k_spike.alpha")
    sd = dict(obj["state_dict"], **{"layers.0.mlp.fc1.weight": torch.zeros(49, 32)})
    checkpoint_error(path, {**obj, "state_dict": sd}, "layers.0.mlp.fc1.weight", "(49, 32)", "expected (48, 32)")
    checkpoint_error(path, {k: v for k, v in obj.items() if k != "vocab"}, "missing key 'vocab'")
    checkpoint_error(path, {**obj, "config": {**obj["config"], "threshold_mode": "never"}}, "'config'")
    good = tmp_path / "good.pt"
    save_spikelm(good, small_lm(context=8), CharVocab(VOCAB))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    checkpoint_error(cut, None, "not a readable torch checkpoint")


def test_bad_bert_checkpoints_give_one_line_errors(small_bert_file, tmp_path, checkpoint_error):
    sd = torch.load(small_bert_file, weights_only=True)
    path = tmp_path / "bert.pt"
    key = "bert.encoder.layer.1.attention.self.clip_value.2"
    checkpoint_error(path, {k: v for k, v in sd.items() if k != key}, "missing key", key)
    key = "bert.encoder.layer.0.output.dense.weight"
    checkpoint_error(path, {**sd, key: torch.zeros(64, 255)}, key, "(64, 255)", "expected (64, 256)")
    checkpoint_error(path, {**sd, "bert.encoder.layer.0.extra": torch.zeros(1)}, "unexpected key",
                    "bert.encoder.layer.0.extra")


def test_bert_graph_cannot_generate(small_bert_file):
    result = CliRunner().invoke(main, ["generate", str(small_bert_file), "--prompt", "ab", "--tokens", "4"])
    assert result.exit_code == 1 and "cannot generate" in result.output and len(result.output.splitlines()) == 1
    assert "SpikeLM BERT encoder" in result.output


def test_the_causal_model_is_called_a_spikelm_style_causal_decoder(examples_dir):
    result = CliRunner().invoke(main, ["inspect", str(SHIPPED), "--prompt", "ROMEO", "--tokens", "2"])
    assert result.exit_code == 0 and "SpikeLM-style causal decoder: activity over" in result.stdout


def test_attention_shape_errors():
    from spikecc.errors import ShapeError

    with pytest.raises(ShapeError, match="heads"):
        CausalSelfAttention(n_head=3, T=2).output_shape({"q": (8,), "k": (8,), "v": (8,)})
    with pytest.raises(ShapeError, match="must match"):
        SelfAttention(n_head=2).output_shape({"q": (4, 8), "k": (4, 8), "v": (5, 8)})
    with pytest.raises(ShapeError, match="learned positions"):
        PositionEmbedding(weight=np.zeros((3, 2)), mode="sequence").output_shape({"input": (4,)})
    assert math.isclose(ElasticBiSpike(T=2, alpha=np.array([0.5, 1.5])).output_signal({}).amplitude, 1.5)


def test_generation_past_the_context_window_matches_the_reference(examples_dir):
    """Past `context` tokens the reference re-reads the last `context` characters; so does the simulator."""
    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.compiler.frontends import load_lm, reference_generate

    lm = load_lm(examples_dir / "checkpoints" / "spikelm-shakespeare.pt")
    context = lm.graph.metadata["context"]
    prompt = "ROMEO:\n"
    n = context - len(prompt) + 3  # three tokens beyond the window
    assert LMSimulator(lm.graph).generate(prompt, n).text == reference_generate(lm, prompt, n)


def test_attention_counts_the_synaptic_work_of_k_and_v_spikes():
    """Each query multiplies every non-zero cached key element once (Q K^T) and weighs every non-zero cached value
    element once (P V): the K layer's work per token grows with all keys spiked so far at that spike step."""
    model = small_lm(context=32)
    sim = LMSimulator(export_spikelm(model, VOCAB))
    run = sim.generate("abcab", 10, record=True)
    rows = {a.layer: a for a in sim.activity(run)}
    n_tok = len(run.token_ids)
    for kind in ("k", "v"):
        spikes = run.spikes[f"layers.0.attn.{kind}_spike"]  # (tokens, T, d)
        nnz = (spikes != 0).sum(axis=2)  # (tokens, T)
        expected = int(np.cumsum(nnz, axis=0).sum())  # at token j, step t: every cached key of tokens <= j
        assert expected > 0
        assert rows[f"layers.0.attn.{kind}_spike"].synops_per_token == pytest.approx(expected / n_tok)
