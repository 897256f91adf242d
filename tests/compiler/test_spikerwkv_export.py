"""SpikeRWKV checkpoint -> IR -> spikecc simulator reproduces the torch reference model.

The encoder op's CPU kernel equals the torch encoder bit for bit; the exported graph, written to a .nir file and
read back, gives the reference's spikes in every encoder, its logits (float64 both sides) and its generated text.
"""

from __future__ import annotations

import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from spikecc.backends.cpu.simulator import Simulator
from spikecc.backends.cpu.spikerwkv_ops import multilevel_encode
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.frontends.spikerwkv import export_spikerwkv, tiled_weight
from spikecc.ir import BINARY, Graph, infer_signals, read, ternary, validate, write
from spikecc.ir.lm_ops import WKV, Embedding, LayerNorm, Product, Sigmoid, SquaredReLU
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder
from spikecc.models.spikerwkv import (
    MultiLevelSpikeEncoder,
    SpikeRWKV,
    SpikeRWKVConfig,
    binary_level_weights,
    radix_level_weights,
    save_spikerwkv,
)

torch.set_num_threads(1)

SHIPPED = Path(__file__).resolve().parents[2] / "examples" / "checkpoints" / "spikerwkv-shakespeare.pt"
VOCAB = "abcdefghijklmnopqrstuvwxyz .,"
N_TOKENS = 64

# (T, level weights, polarity): the default binary code, binary codes with T > 1 (T = 3: not a power of two), the
# decimal code of the paper's Fig. 3 (weights that are not dyadic, so T / W_i rounds), and an unsigned encoder
ENCODERS = [
    (1, binary_level_weights(6, 2), True),
    (2, binary_level_weights(4, 1), True),
    (3, binary_level_weights(5, 2), True),
    (4, binary_level_weights(3, 0), True),
    (9, radix_level_weights(6, 9, 1), True),
    (1, binary_level_weights(6, 2), False),
    (3, binary_level_weights(5, 2), False),
]


def _inputs(enc: MultiLevelSpikeEncoder) -> torch.Tensor:
    """Random values (with saturation) and every quantisation boundary, on it and 1e-9 either side, in float64."""
    g = torch.Generator().manual_seed(1)
    m, res = enc.max_value, enc.resolution
    n = round(m / res)
    k = torch.arange(-n - 3, n + 4, dtype=torch.float64)
    if k.numel() > 2000:  # Fig. 3's code has 10^6 steps: both ends plus a random sample of the boundaries
        k = torch.cat([k[:5], k[-5:], k[torch.randint(0, k.numel(), (2000,), generator=g)]])
    grid = k * res
    return torch.cat([
        (torch.rand(4000, generator=g, dtype=torch.float64) * 2 - 1) * 1.3 * m,
        grid, grid + 1e-9, grid - 1e-9, grid + res / 3,
        torch.tensor([0.0, -0.0, 1e-30, -1e-30, 5e-324, -5e-324, m, -m, 10 * m, -10 * m, np.inf, -np.inf],
                     dtype=torch.float64),
    ])


def _signed(spikes: torch.Tensor, pol: torch.Tensor) -> np.ndarray:
    """The op's output order: (T, l, C) spikes times the flag, flattened in C order."""
    return (spikes * pol).numpy().reshape(-1)


# ------------------------------------------------------------------------------------------------ encoder kernel


@pytest.mark.parametrize("T,weights,polarity", ENCODERS)
def test_encoder_kernel_equals_torch_encoder_bit_for_bit(T, weights, polarity):
    enc = MultiLevelSpikeEncoder(T, weights, polarity)
    x = _inputs(enc)
    spikes, pol = enc.encode(x)
    ref = (spikes * pol).numpy()  # (T, l, N)
    got = multilevel_encode(x.numpy(), T, np.array(weights), polarity)
    assert got.shape == ref.shape
    bad = np.argwhere(got != ref)
    assert bad.size == 0, f"{len(bad)} spikes differ, first at (t, level, n) {bad[:3].tolist()}: x = " \
                          f"{[float(x[i]) for i in bad[:3, 2]]}"
    assert set(np.unique(got).tolist()) == ({-1, 0, 1} if polarity else {0, 1})

    # the same through the simulator: one Input -> MultiLevelEncoder -> Output, all steps at once (run) and
    # step by step (what LMSimulator uses); rows of 100 values, one row per simulator step
    rows = x[: x.numel() // 100 * 100].reshape(-1, 100)
    g = Graph()
    g.add_node("x", nir.Input(input_type={"input": np.array([100])}))
    g.add_node("enc", MultiLevelEncoder(channels=100, T=T, level_weights=np.array(weights), polarity=polarity))
    g.add_node("out", nir.Output(output_type={"output": np.array([T * len(weights) * 100])}))
    g.connect("x", "enc")
    g.connect("enc", "out")
    assert infer_signals(g)["enc"] == (ternary(1.0) if polarity else BINARY)
    sim = Simulator(g)
    want = np.stack([_signed(*enc.encode(r)) for r in rows])
    assert np.array_equal(sim.run({"x": rows.numpy()}).outputs["out"], want)
    sim.start()
    assert np.array_equal(np.stack([sim.step(r.numpy())["enc"] for r in rows]), want)


def test_encoder_op_rejects_bad_options_and_wrong_input_size():
    from spikecc.errors import ShapeError

    with pytest.raises(ValueError, match="strictly decreasing"):
        MultiLevelEncoder(channels=4, T=1, level_weights=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="T must be"):
        MultiLevelEncoder(channels=4, T=0, level_weights=np.array([1.0]))
    op = MultiLevelEncoder(channels=4, T=2, level_weights=np.array([1.0, 0.5]))
    assert op.natural_shape() == (16,) and op.input_type["input"].tolist() == [4]
    with pytest.raises(ShapeError, match="4 channels"):
        op.output_shape({"input": (5,)})


# ------------------------------------------------------------------------------------------------ models


def _tiny(T: int = 1, weights=None, polarity: bool = True, seed: int = 0) -> SpikeRWKV:
    """A small random SpikeRWKV with trained-like spread of decays, bonuses and residual weights."""
    torch.manual_seed(seed)
    cfg = SpikeRWKVConfig(vocab_size=len(VOCAB), d_model=24, n_layers=2, d_ffn=56, T=T,
                          level_weights=weights or binary_level_weights(6, 2), polarity=polarity)
    model = SpikeRWKV(cfg).double().eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.att.time_decay.uniform_(-3, 2)
            blk.att.time_first.uniform_(-1, 1)
            blk.att.output.weight.normal_(0, 0.3)
            blk.ffn.value.weight.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def small_model() -> SpikeRWKV:
    return _tiny()


# ------------------------------------------------------------------------------------------------ graph


def test_graph_uses_nir_nodes_where_they_fit_and_extension_ops_elsewhere(small_model):
    g = export_spikerwkv(small_model, VOCAB)
    validate(g)
    n = small_model.cfg.n_layers
    counts: dict[str, int] = {}
    for op in g.nodes.values():
        counts[type(op).__name__] = counts.get(type(op).__name__, 0) + 1
    assert counts == {"Input": 1, "Output": 1, "Embedding": 1, "LayerNorm": 2 * n + 2, "Delay": 2 * n,
                      "Scale": 12 * n, "MultiLevelEncoder": 7 * n, "Linear": 7 * n + 1, "Sigmoid": 2 * n,
                      "WKV": n, "Product": 2 * n, "SquaredReLU": n}
    assert isinstance(g.nodes["emb"], Embedding) and isinstance(g.nodes["ln_out"], LayerNorm)
    assert all(isinstance(g.nodes[f"blocks.{i}.att.wkv"], WKV) for i in range(n))
    assert all(isinstance(g.nodes[f"blocks.{i}.ffn.relu_sq"], SquaredReLU) for i in range(n))
    assert all(isinstance(g.nodes[f"blocks.{i}.{h}.sigmoid"], Sigmoid) for i in range(n) for h in ("att", "ffn"))
    assert all(isinstance(g.nodes[f"blocks.{i}.{h}.gate"], Product) for i in range(n) for h in ("att", "ffn"))
    meta = g.metadata
    assert meta["family"] == "spikerwkv" and meta["vocab"] == VOCAB and meta["substeps"] == 1
    assert (meta["n_layers"], meta["d_model"], meta["d_ffn"], meta["T"], meta["levels"]) == (n, 24, 56, 1, 6)

    signals = infer_signals(g)
    encoders = {name for name, op in g.nodes.items() if isinstance(op, MultiLevelEncoder)}
    assert encoders == set(small_model.encoders()), "encoder nodes must carry the reference's encoder names"
    for name in encoders:
        unsigned = name.endswith("ffn.enc_v")
        assert g.nodes[name].polarity is not unsigned
        assert signals[name] == (BINARY if unsigned else ternary(1.0)), name
    spiking = {name for name, s in signals.items() if s.is_spiking and not isinstance(g.nodes[name], nir.Input)}
    assert spiking == encoders  # the encoders and nothing else (the token id is a graded input)

    # every encoded linear sees exactly the reference's decoded input: W' s == W x_hat
    blk = small_model.blocks[1]
    enc = blk.ffn.enc_k
    x = torch.randn(24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spikes, pol = enc.encode(x)
    lin = g.nodes["blocks.1.ffn.key"]
    assert lin.weight.shape == (56, 1 * 6 * 24)
    assert np.array_equal(lin.weight, tiled_weight(blk.ffn.key.weight.detach().numpy(), 1, enc.level_weights))
    with torch.no_grad():
        want = blk.ffn.key(enc.decode(spikes, pol)).numpy()
    np.testing.assert_allclose(lin.weight @ _signed(spikes, pol), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("T,weights,polarity", [
    (1, None, True),  # the shipped configuration (binary code, T = 1)
    (3, binary_level_weights(4, 1), True),  # several encoder steps, T not a power of two: the general greedy path
    (2, binary_level_weights(5, 2), False),  # unsigned everywhere
])
def test_exported_graph_reproduces_reference_over_64_generated_tokens(T, weights, polarity, tmp_path, capsys,
                                                                      compare_with_reference):
    model = small = _tiny(T, weights, polarity, seed=T)
    g = export_spikerwkv(small, VOCAB)
    path = tmp_path / "rwkv.nir"
    write(g, path)
    g2 = read(path)  # the file, not the in-memory graph, is what a user simulates
    for name, op in g.nodes.items():
        if isinstance(op, MultiLevelEncoder):
            back = g2.nodes[name]
            assert isinstance(back, MultiLevelEncoder) and (back.channels, back.T, back.polarity) == \
                (op.channels, op.T, op.polarity) and np.array_equal(back.level_weights, op.level_weights)
    diff, mismatches, fired, negative = compare_with_reference(model, g2, VOCAB, "the quick brown fox", N_TOKENS)
    with capsys.disabled():
        print(f"\n[spikerwkv small T={T} polarity={polarity}] max |logit diff| over {N_TOKENS} tokens: {diff:.3g}, "
              f"spike mismatches {mismatches} of {fired} spikes")
    assert mismatches == 0
    assert fired > 0 and (negative > 0) == polarity  # the comparison is not between silent encoders
    assert diff < 1e-4
    assert diff < 1e-9  # float64 on both sides: far tighter than required


def test_shipped_checkpoint_reproduces_reference_over_64_generated_tokens(tmp_path, capsys, compare_with_reference):
    if not SHIPPED.exists():
        pytest.fail(f"{SHIPPED} is missing: the trained example checkpoint must ship with the repository")
    t0 = time.perf_counter()
    lm = load_lm(SHIPPED)
    assert lm.family == "spikerwkv" and lm.model is not None
    write(lm.graph, tmp_path / "shipped.nir")
    g = read(tmp_path / "shipped.nir")
    vocab = g.metadata["vocab"]
    diff, mismatches, fired, negative = compare_with_reference(lm.model, g, vocab, "ROMEO:\n", N_TOKENS)
    with capsys.disabled():
        print(f"\n[spikerwkv-shakespeare] {len(g.nodes)} nodes, {len(g.edges)} edges; max |logit diff| over "
              f"{N_TOKENS} tokens: {diff:.3g}; spike mismatches {mismatches} of {fired} spikes ({negative} negative); "
              f"{time.perf_counter() - t0:.1f} s")
    assert mismatches == 0 and fired > 0 and negative > 0
    assert diff < 1e-4


# ------------------------------------------------------------------------------------------------ files and CLI


@pytest.fixture
def saved(tmp_path):
    model = _tiny()
    path = tmp_path / "ck.pt"
    save_spikerwkv(model, VOCAB, path)
    return path, torch.load(path, weights_only=True)


def test_bad_checkpoints_give_one_line_errors(saved, tmp_path, checkpoint_error):
    path, obj = saved
    sd = dict(obj["state_dict"])
    del sd["blocks.1.att.time_first"]
    checkpoint_error(path, {**obj, "state_dict": sd}, "missing key", "state_dict.blocks.1.att.time_first")
    sd = dict(obj["state_dict"], **{"blocks.0.ffn.key.weight": torch.zeros(57, 24)})
    checkpoint_error(path, {**obj, "state_dict": sd}, "blocks.0.ffn.key.weight", "(57, 24)", "expected (56, 24)")
    checkpoint_error(path, {k: v for k, v in obj.items() if k != "vocab"}, "missing key 'vocab'")
    conf = {k: v for k, v in obj["config"].items() if k != "level_weights"}
    checkpoint_error(path, {**obj, "config": conf}, "missing key 'config.level_weights'")
    checkpoint_error(path, {**obj, "config": {**obj["config"], "level_weights": [1.0, 2.0]}}, "'config'",
                    "strictly decreasing")
    data = tmp_path / "good.pt"
    save_spikerwkv(_tiny(), VOCAB, data)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data.read_bytes()[:1000])
    checkpoint_error(cut, None, "not a readable torch checkpoint")
