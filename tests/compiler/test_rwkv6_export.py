"""RWKV-6 and SpikeRWKV-6 -> IR -> spikecc simulator reproduces the torch models.

The new op kernels against torch / the written-out equations; the exported graphs (float and converted, written to
.nir and read back) against the torch model over 64 greedily generated tokens: identical spikes in every encoder,
logits within 1e-9 (float64 both sides), identical text; the same for the shipped checkpoint and its conversions.
"""

from __future__ import annotations

import time
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from spikecc.backends.cpu.simulator import Simulator
from spikecc.compiler.frontends import load_lm
from spikecc.compiler.frontends.rwkv6 import export_rwkv6
from spikecc.compiler.frontends.spikerwkv import tiled_weight
from spikecc.ir import BINARY, REAL, Graph, infer_signals, read, ternary, validate, write
from spikecc.ir.rwkv6_ops import WKV6, GroupNorm, Tanh
from spikecc.ir.spikerwkv_ops import MultiLevelEncoder
from spikecc.models.spikerwkv6 import convert

torch.set_num_threads(1)

CHECKPOINTS = Path(__file__).resolve().parents[2] / "examples" / "checkpoints"
SHIPPED = CHECKPOINTS / "rwkv6-shakespeare.pt"
CALIBRATION = CHECKPOINTS / "rwkv6-shakespeare.calibration.txt"
VOCAB = "abcdefghijklmnopqrstuvwxyz .,;"
N_TOKENS = 64


def ids(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.index(c) for c in text])


def one_node_graph(op, ports: dict[str, int], out: int) -> Graph:
    """Inputs (one per port) -> op -> Output."""
    g = Graph()
    g.add_node("op", op)
    for port, n in ports.items():
        g.add_node(port, nir.Input(input_type={"input": np.array([n])}))
        g.connect(port, "op", port)
    g.add_node("out", nir.Output(output_type={"output": np.array([out])}))
    g.connect("op", "out")
    return g


# ------------------------------------------------------------------------------------------------ kernels


def test_group_norm_kernel_equals_torch_group_norm():
    g = torch.Generator().manual_seed(0)
    w, b = torch.rand(24, generator=g, dtype=torch.float64) + 0.5, torch.randn(24, generator=g, dtype=torch.float64)
    x = torch.randn(10, 24, generator=g, dtype=torch.float64) * 3 + torch.arange(24) / 5
    ref = torch.nn.functional.group_norm(x, 4, w, b, eps=64e-5).numpy()
    sim = Simulator(one_node_graph(GroupNorm(weight=w.numpy(), bias=b.numpy(), groups=4, eps=64e-5),
                                   {"input": 24}, 24))
    np.testing.assert_allclose(sim.run({"input": x.numpy()}).outputs["out"], ref, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="groups"):
        GroupNorm(weight=np.ones(10), bias=np.zeros(10), groups=3)


def test_wkv6_kernel_follows_the_recurrence_step_by_step():
    H, N, steps = 3, 5, 12
    rng = np.random.default_rng(0)
    u = rng.normal(size=(H, N))
    r, k, v = (rng.normal(size=(steps, H * N)) for _ in range(3))
    w = rng.uniform(0.01, 0.99, size=(steps, H * N))
    sim = Simulator(one_node_graph(WKV6(time_faaaa=u), {"r": H * N, "k": H * N, "v": H * N, "w": H * N}, H * N))
    got = sim.run({"r": r, "k": k, "v": v, "w": w}).outputs["out"]
    S = np.zeros((H, N, N))  # the op docstring's equations, element by element
    for t in range(steps):
        R, K, V, W = (a[t].reshape(H, N) for a in (r, k, v, w))
        want = np.zeros((H, N))
        for h in range(H):
            for j in range(N):
                want[h, j] = sum(R[h, i] * (u[h, i] * K[h, i] * V[h, j] + S[h, i, j]) for i in range(N))
        S = np.array([[[W[h, i] * S[h, i, j] + K[h, i] * V[h, j] for j in range(N)] for i in range(N)]
                      for h in range(H)])
        np.testing.assert_allclose(got[t], want.reshape(-1), rtol=1e-12, atol=1e-12)


def test_new_ops_survive_a_nir_file(tmp_path):
    u = np.arange(12.0).reshape(3, 4)
    g = Graph()
    g.add_node("x", nir.Input(input_type={"input": np.array([12])}))
    g.add_node("t", Tanh())
    g.add_node("gn", GroupNorm(weight=np.linspace(0.5, 1.5, 12), bias=np.linspace(-1, 1, 12), groups=3, eps=64e-5))
    g.add_node("wkv", WKV6(time_faaaa=u))
    g.add_node("y", nir.Output(output_type={"output": np.array([12])}))
    g.connect("x", "t")
    g.connect("t", "gn")
    for port in ("r", "k", "v", "w"):
        g.connect("gn", "wkv", port)
    g.connect("wkv", "y")
    write(g, tmp_path / "ops.nir")
    back = read(tmp_path / "ops.nir")
    assert isinstance(back.nodes["t"], Tanh)
    gn = back.nodes["gn"]
    assert isinstance(gn, GroupNorm) and (gn.groups, gn.eps) == (3, 64e-5)
    assert np.array_equal(gn.weight, np.linspace(0.5, 1.5, 12)) and np.array_equal(gn.bias, np.linspace(-1, 1, 12))
    wkv = back.nodes["wkv"]
    assert isinstance(wkv, WKV6) and np.array_equal(wkv.time_faaaa, u) and (wkv.heads, wkv.head_size) == (3, 4)
    x = np.random.default_rng(1).normal(size=(6, 12))
    np.testing.assert_array_equal(Simulator(back).run({"x": x}).outputs["y"], Simulator(g).run({"x": x}).outputs["y"])


# ------------------------------------------------------------------------------------------------ graphs


def _counts(g: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in g.nodes.values():
        out[type(op).__name__] = out.get(type(op).__name__, 0) + 1
    return out


def test_graphs_compose_nir_nodes_and_reuse_the_multilevel_encoder(tiny_rwkv6):
    model = tiny_rwkv6()
    n = model.cfg.n_layers
    g = export_rwkv6(model, VOCAB)
    validate(g)
    float_counts = {"Input": 1, "Output": 1, "Embedding": 1, "LayerNorm": 2 * n + 2, "Delay": 2 * n,
                    "Scale": 10 * n, "Linear": 14 * n + 1, "Affine": 6 * n, "Tanh": 6 * n, "Product": 8 * n,
                    "Sigmoid": 2 * n, "Exp": 2 * n, "WKV6": n, "GroupNorm": n, "SquaredReLU": n}
    assert _counts(g) == float_counts
    assert g.metadata["family"] == "rwkv6" and g.metadata["vocab"] == VOCAB and g.metadata["encoders"] == 0
    assert not any(s.is_spiking for name, s in infer_signals(g).items() if name != "token")

    spiking = convert(model, ids("the quick brown fox jumps over the lazy dog."), levels=4, scope="all")
    g = export_rwkv6(spiking, VOCAB)
    validate(g)
    assert _counts(g) == dict(float_counts, MultiLevelEncoder=10 * n)  # enc_maa feeds five linears: one node
    meta = g.metadata
    assert (meta["family"], meta["levels"], meta["T"], meta["scope"]) == ("spikerwkv6", 4, 1, "all")
    signals = infer_signals(g)
    encoders = {name for name, op in g.nodes.items() if isinstance(op, MultiLevelEncoder)}
    assert encoders == set(spiking.encoders())
    for name in encoders:
        assert signals[name] == (BINARY if name.endswith("ffn.enc_v") else ternary(1.0)), name
    assert {name for name, s in signals.items() if s.is_spiking and name != "token"} == encoders
    assert signals["blocks.0.att.wkv"] == REAL and signals["blocks.0.att.ln_x"] == REAL

    # an encoded linear sees exactly the reference's decoded input: W' s == W x_hat
    enc = spiking.blocks[1].att.enc_maa
    x = torch.randn(32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spikes, pol = enc.encode(x)
    w1 = spiking.blocks[1].att.time_maa_w1.detach().numpy()
    lin = g.nodes["blocks.1.att.maa_w1.v"]  # the third of the five mixes (w, k, v, r, g)
    assert np.array_equal(lin.weight, tiled_weight(w1[:, 8:12].T, 1, enc.level_weights))
    np.testing.assert_allclose(lin.weight @ (spikes * pol).numpy().reshape(-1),
                               (enc.decode(spikes, pol) @ spiking.blocks[1].att.time_maa_w1)[8:12].detach().numpy(),
                               rtol=0, atol=1e-12)


def _check(model, graph, vocab, prompt, tmp_path, capsys, label, compare_with_reference):
    write(graph, tmp_path / "model.nir")
    g = read(tmp_path / "model.nir")  # the file, not the in-memory graph, is what a user simulates
    t0 = time.perf_counter()
    diff, mismatches, fired, negative = compare_with_reference(model, g, vocab, prompt, N_TOKENS)
    with capsys.disabled():
        print(f"\n[{label}] {len(g.nodes)} nodes; max |logit diff| over {N_TOKENS} tokens: {diff:.3g}; spike "
              f"mismatches {mismatches} of {fired} spikes ({negative} negative); {time.perf_counter() - t0:.1f} s")
    assert mismatches == 0 and diff < 1e-9
    return fired, negative


@pytest.mark.parametrize("levels,T,scope", [(None, 1, None), (3, 1, "paper"), (5, 1, "paper"), (4, 2, "all")])
def test_exported_graph_reproduces_reference_over_64_generated_tokens(levels, T, scope, tmp_path, capsys,
                                                                      compare_with_reference, tiny_rwkv6):
    model = tiny_rwkv6(seed=levels or 0)
    if levels is not None:
        model = convert(model, ids("the quick brown fox jumps over the lazy dog."), levels, T, scope)
    fired, negative = _check(model, export_rwkv6(model, VOCAB), VOCAB, "the quick", tmp_path, capsys,
                             f"rwkv6 random {scope or 'float'} T={T} l={levels}", compare_with_reference)
    assert (fired > 0 and negative > 0) if levels else fired == 0  # encoders fire, both polarities


@pytest.mark.parametrize("levels", [None, 4])
def test_shipped_checkpoint_and_its_conversion_reproduce_reference(levels, tmp_path, capsys, compare_with_reference):
    if not SHIPPED.exists() or not CALIBRATION.exists():
        pytest.fail(f"{SHIPPED} and {CALIBRATION} must ship with the repository")
    lm = load_lm(SHIPPED)
    model, vocab = lm.model, lm.graph.metadata["vocab"]
    graph = lm.graph
    if levels is not None:
        text = CALIBRATION.read_text(encoding="utf-8")
        model = convert(model, torch.tensor([vocab.index(c) for c in text]), levels)
        graph = export_rwkv6(model, vocab)
    fired, negative = _check(model, graph, vocab, "ROMEO:\n", tmp_path, capsys,
                             f"rwkv6-shakespeare {'float' if levels is None else f'{levels}L'}",
                             compare_with_reference)
    assert (fired > 0 and negative > 0) if levels else fired == 0
