"""The papers' arithmetic energy model: SpikeGPT's Table 1 from its own inputs, Horowitz's 45 nm figures, and
the per-node counting of a graph from measured synaptic operations."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from spikecc.compiler.energy import EnergyTable, count_graph, energies, energy_table, spikegpt_table1
from spikecc.errors import SpikeccError
from spikecc.ir import Graph
from spikecc.ir.lm_ops import WKV
from spikecc.ir.spikelm_ops import CausalSelfAttention

# SpikeGPT (Zhu et al., TMLR 2024) Table 1, as printed: row -> (Vanilla GPT pJ, SpikeGPT pJ); None: no entry
TABLE1 = {
    "attention Q/R,K,V": (1.09e10, 3.25e8),
    "attention f(Q/R,K,V)": (8.50e7, 4.95e7),
    "attention scale": (4.25e7, None),
    "attention softmax": (8.50e7, None),
    "FFN layer 1": (3.62e9, 1.09e8),
    "FFN layer 2": (1.45e10, 4.35e8),
    "FFN layer 3": (3.62e9, 1.09e8),
}


def test_spikegpt_table1_is_reproduced_from_its_inputs():
    # T = 3072 tokens, d = 512, firing rate 0.15, E_MAC = 4.5 pJ, E_AC = 0.9 pJ (the table's caption)
    t = EnergyTable(spikegpt_table1(T=3072, d=512, rate=0.15), e_mac=4.5, e_ac=0.9)
    assert [r.layer for r in t.rows] == list(TABLE1)
    for row in t.rows:
        ann, snn = TABLE1[row.layer]
        assert t.ann_pj(row) == pytest.approx(ann, rel=0.005), row.layer  # printed to 3 digits
        if snn is None:
            assert t.snn_pj(row) == 0
        else:
            assert t.snn_pj(row) == pytest.approx(snn, rel=0.005), row.layer
    # the exact totals; the table's "Overall" (3.29e10, 1.02e9, 32.2x) comes from rounded row values
    assert t.ann_total_pj == pytest.approx(3.2827e10, rel=1e-4)
    assert t.snn_total_pj == pytest.approx(1.0280e9, rel=1e-4)
    assert round(t.ratio, 1) == 31.9


def test_horowitz_45nm_figures():
    assert energies("fp32") == (4.6, 0.9)
    assert energies("fp16") == (1.5, 0.4)
    with pytest.raises(SpikeccError, match="'int8'.*fp32, fp16"):
        energies("int8")


def two_linears() -> Graph:
    """spikes (4) -> Linear 3x4; real values (2) -> Affine 5x2; causal attention over d = 6; WKV over 6."""
    g = Graph()
    g.add_node("spikes", nir.Input(input_type={"input": np.array([4])}))
    g.annotate("spikes", signal={"kind": "binary", "bits": 0, "scale": 1.0, "amplitude": 1.0})
    g.add_node("real", nir.Input(input_type={"input": np.array([2])}))
    g.add_node("lin", nir.Linear(weight=np.ones((3, 4))))
    g.add_node("aff", nir.Affine(weight=np.ones((5, 2)), bias=np.zeros(5)))
    g.connect("spikes", "lin")
    g.connect("real", "aff")
    g.add_node("q", nir.Input(input_type={"input": np.array([6])}))
    g.add_node("att", CausalSelfAttention(n_head=2, T=1))
    for port in ("q", "k", "v"):
        g.connect("q", "att", port)
    g.add_node("wkv", WKV(time_decay=np.zeros(6), time_first=np.zeros(6)))
    g.connect("q", "wkv", "k")
    g.connect("q", "wkv", "v")
    for n in ("lin", "aff", "att", "wkv"):
        g.add_node(f"out_{n}", nir.Output(output_type={"output": np.array([5 if n == "aff" else 3 if n == "lin"
                                                                            else 6])}))
        g.connect(n, f"out_{n}")
    return g


def test_graph_counts_spike_driven_ops_as_accumulates_and_real_ones_as_multiply_accumulates():
    tokens = 10
    rows = {r.layer: r for r in count_graph(two_linears(), {"lin": 37, "aff": 80, "att": 123}, tokens)}
    assert set(rows) == {"lin", "aff", "att", "wkv"}
    assert (rows["lin"].ann_macs, rows["lin"].snn_acs, rows["lin"].snn_macs) == (12 * tokens, 37, 0)
    assert (rows["aff"].ann_macs, rows["aff"].snn_acs, rows["aff"].snn_macs) == (10 * tokens, 0, 80)
    # causal attention: token p (0-based) attends to p + 1 tokens, Q K^T and P V each (p + 1) * d
    assert rows["att"].ann_macs == sum(2 * (p + 1) * 6 for p in range(tokens)) and rows["att"].snn_acs == 123
    assert rows["wkv"].ann_macs == rows["wkv"].snn_macs == 7 * 6 * tokens  # SpikeGPT Table 1: 7Td
    t = energy_table(list(rows.values()), "fp32", tokens)
    assert t.ann_total_pj == pytest.approx(4.6 * (120 + 100 + 660 + 420))
    assert t.snn_total_pj == pytest.approx(0.9 * (37 + 123) + 4.6 * (80 + 420))
    assert t.to_json()["ann_mj"] == pytest.approx(t.ann_total_pj * 1e-9)


def test_shipped_spikegpt_is_counted_from_a_simulated_prompt(examples_dir):
    from spikecc.compiler.frontends import load_lm
    from spikecc.estimate import measure_lm

    g = load_lm(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt").graph
    measured = measure_lm(g, 24)
    rows = {r.layer: r for r in count_graph(g, measured.synops, measured.tokens)}
    key = rows["blocks.0.att.key"]
    assert key.ann_macs == 128 * 128 * 24
    # SpikeGPT's linears read real LayerNorm outputs (every value non-zero): multiply-accumulates, not spikes
    assert key.snn_acs == 0 and key.snn_macs == 128 * 128 * 24
    # relu(k)^2 zeroes most of the FFN value layer's inputs, and the simulator skips the zeros
    value = rows["blocks.0.ffn.value"]
    assert 0 < value.snn_macs < value.ann_macs
    assert measured.tokens == 24 and len(measured.text) == 24
