"""Splitting layers into core-sized fragments and filling cores: cost model, exact bookkeeping, partial sums,
violations, and cores used against the lower bound."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from spikecc.compiler.mapping import MappingError, load_target, map_graph
from spikecc.compiler.mapping.network import Masked
from spikecc.compiler.mapping.pack import USAGE, limits
from spikecc.compiler.mapping.split import Splitter
from spikecc.ir.loihi_ops import LoihiDense


def nengo_loihi_bits_per_axon(n_weights: int, bits_per_weight: int) -> int:
    """nengo-loihi block.py SynapseConfig.bits_per_axon, for n_synapses = 63 (64 per chunk): each chunk holds
    n * bits + 4 + 6 header bits, rounded up to 64-bit words (written from that function, loop for loop)."""
    bits = 0
    for i in range(0, n_weights, 64):
        n = min(n_weights - i, 64)
        bits_i = n * bits_per_weight + 4 + 6
        bits += -64 * (-bits_i // 64)
    return bits


def assert_within_budget(m) -> None:
    lim = limits(m.target)
    for c in m.cores:
        for k in USAGE:
            assert c.usage[k] <= lim[k] + 1e-6, (c.index, k, c.usage[k], lim[k])
            assert c.usage[k] == pytest.approx(sum(f.usage()[k] for f in c.fragments))


def test_a_dense_layer_is_costed_by_the_intel_log_fit(loihi_chain):
    # SynMem ~ rows * (0.9 + 0.24 * neurons) units of 12,000 per core: a 768 x 768 layer fits 61 neurons per core
    # (768 * (0.9 + 0.24 * 61) = 11,934.7; 62 would need 12,119)
    m = map_graph(loihi_chain([768, 768]))
    assert not m.violations
    for f in m.split.fragments:
        assert f.synmem == pytest.approx(768 * (0.9 + 0.24 * f.neurons))
        assert f.axons_in == 768 and f.synapses == 768 * f.neurons
    assert max(f.neurons for f in m.split.fragments) == 61
    assert m.n_cores == math.ceil(768 / 61) == 13
    assert m.lower_bound_cores == math.ceil(768 * (0.9 + 0.24 * 768) / 12000) == 12
    assert_within_budget(m)


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 100, 128, 129, 300])
def test_loihi1_rows_cost_what_nengo_loihi_counts(n):
    sp = Splitter(load_target("loihi1"))
    assert sp.row_cost(n, 8) == nengo_loihi_bits_per_axon(n, 8)
    assert sp.row_cost(n, 8 + 7) == nengo_loihi_bits_per_axon(n, 15)  # a sparse row: weight + index bits
    assert float(sp.row_cost(np.array([n]), 8)[0]) == nengo_loihi_bits_per_axon(n, 8)


@pytest.mark.parametrize("density", [0.1, 0.97])
def test_masked_weights_count_non_zeros_per_row_and_slice(density):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((50, 40)) * (rng.random((50, 40)) < density)
    pat = Masked.from_weight(w)
    assert pat.holes == (density > 0.5) and pat.nnz == np.count_nonzero(w)
    bounds = np.array([3, 10, 11, 30, 49])
    got = pat.counts(5, 37, bounds)
    table = pat.prefix()
    for j in range(len(bounds) - 1):
        expect = np.count_nonzero(w[bounds[j]:bounds[j + 1], 5:37], axis=0)
        assert np.array_equal(got[:, j], expect)
        assert np.array_equal(table[5:37, bounds[j + 1]] - table[5:37, bounds[j]], expect)


@pytest.mark.parametrize("density", [0.3, 0.9])
def test_every_neuron_and_synapse_is_placed_exactly_once(loihi_chain, profile, density):
    g = loihi_chain([300, 500, 700, 200], density=density, seed=1)
    m = map_graph(g, profile("tight", **{"core.neurons": 128, "core.synmem_units": 3000, "core.axons_in": 400}))
    assert not m.violations
    nnz = sum(np.count_nonzero(op.weight) for op in g.nodes.values() if isinstance(op, LoihiDense))
    original = [p for p in m.split.populations if p.role == "partial" or p.row_groups == 1]
    assert sum(f.synapses for p in original for f in p.fragments) == nnz
    for p in m.split.populations:
        edges = [(f.lo, f.hi) for f in p.fragments]
        assert edges[0][0] == 0 and edges[-1][1] == p.n
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(edges, edges[1:]))
    assert_within_budget(m)


def test_a_fan_in_larger_than_a_core_maps_through_partial_sums(loihi_chain):
    g = loihi_chain([20000, 8])  # 20,000 input rows > 16,000 input axons per core
    m = map_graph(g)
    assert not m.violations
    (layer,) = m.layers
    assert layer["row_groups"] >= 2 and layer["extra_steps"] == 1 and m.latency["partial_sum_extra_steps"] == 1
    partials = [p for p in m.split.populations if p.role == "partial"]
    assert len(partials) == layer["row_groups"] and sum(p.rows for p in partials) == 20000
    assert m.link_classes["core_core"]["msgs"] + m.link_classes["in_core"]["msgs"] > 0  # partial sums travel
    assert_within_budget(m)


def test_a_fan_in_that_cannot_fit_even_one_neuron_per_core_is_a_named_violation(loihi_chain):
    g = loihi_chain([20000, 8])
    m = map_graph(g, split="output")  # no partial sums, as Intel's compiler
    # one neuron with its 20,000 rows: 20,000 axons in, and 20,000 * (0.9 + 0.24) units of synaptic memory
    assert [(v.layer, v.resource, v.value, v.limit) for v in m.violations] == \
        [("lif0", "axons_in", 20000, 16000), ("lif0", "synmem", pytest.approx(22800), 12000)]
    for v in m.violations:
        assert "partial sums" in v.fix and "lif0" in v.message() and "\n" not in v.message()
    # Loihi 1 has no graded messages to carry partial sums: the same layer cannot be mapped there
    m1 = map_graph(g, "loihi1")
    assert {(v.layer, v.resource) for v in m1.violations} >= {("lif0", "axons_in")}
    assert any("no graded messages" in v.fix for v in m1.violations)


def test_minimal_core_split_beats_splitting_outputs_only(loihi_chain):
    g = loihi_chain([3072, 768])  # SpikeGPT's FFN value shape: 3,072 rows leave 12 neurons per core
    out_only = map_graph(g, split="output", placement="greedy")
    best = map_graph(g, placement="greedy")
    assert out_only.n_cores == math.ceil(768 / 12) == 64
    assert best.n_cores < out_only.n_cores and best.n_cores <= 1.10 * best.lower_bound_cores
    assert best.layers[0]["row_groups"] > 1


def test_small_populations_share_a_core_up_to_the_group_limit(loihi_chain):
    m = map_graph(loihi_chain([10] * 5))  # four layers of 10 neurons
    assert m.n_cores == 1 and m.cores[0].usage["neuron_groups"] == 4
    m = map_graph(loihi_chain([10] * 11))  # ten layers: 8 neuron groups per core
    assert m.n_cores == 2 and [c.usage["neuron_groups"] for c in m.cores] == [8, 2]


@pytest.mark.parametrize("name", ["spikegpt", "spikelm"])
def test_smaller_limits_give_a_larger_mapping_not_a_crash(lm_lowered, profile, name):
    g, activity = lm_lowered(name)
    base = map_graph(g, activity=activity)
    small = map_graph(g, profile("half", **{"core.synmem_units": 4000, "core.neurons": 64, "chip.cores": 8}),
                      activity=activity)
    assert not base.violations and not small.violations
    assert small.n_cores > 2 * base.n_cores and small.chips > base.chips
    assert_within_budget(small)


def test_the_216m_width_maps_within_ten_percent_of_the_lower_bound(tmp_path):
    """One block of the published 216M SpikeGPT's width (d 768, FFN 3072), random weights, compiled."""
    import torch

    from spikecc.compiler.frontends import load_lm
    from spikecc.lm_build import lower_lm
    from spikecc.models.data import CharVocab
    from spikecc.models.spikegpt import random_state_dict, save_vocab

    chars = "abcdefghijklmnopqrstuvwxyz .,\n"
    path = tmp_path / "spikegpt-d768.pt"
    torch.save(random_state_dict(1, 768, len(chars), seed=0), path)
    save_vocab(CharVocab(chars), path.with_suffix(".vocab.json"))
    low = lower_lm(load_lm(path, reference=False).graph, calibration_text="the quick brown fox, jumps over.")
    m = map_graph(low.fixed_graph, activity=low.activity, placement="greedy")
    assert not m.violations and not m.network.assumed
    assert m.lower_bound_cores <= m.n_cores <= 1.10 * m.lower_bound_cores
    assert m.n_cores > 100  # 7 dense layers of 768 x 768 and more: far beyond one chip's share of one layer


def test_activity_is_checked_and_names_the_node(loihi_chain):
    g = loihi_chain([10, 20, 5])
    with pytest.raises(MappingError, match="'lif0' has 3 values for 20 neurons"):
        map_graph(g, activity={"lif0": np.ones(3)})
    with pytest.raises(MappingError, match="not in the graph: nope"):
        map_graph(g, activity={"nope": 0.1})
    with pytest.raises(MappingError, match="'lif1'.*negative"):
        map_graph(g, activity={"lif1": -1.0})


def test_measured_activity_sets_the_traffic(loihi_chain):
    g = loihi_chain([10, 20, 5])
    rates = np.linspace(0, 1, 20)
    m = map_graph(g, activity={"lif0": rates, "input": 0.5})
    # lif0's spikes reach lif1 (one message per spike per destination core); lif1 at the default 0.1 goes out
    assert m.link_classes["in_core"]["msgs"] == pytest.approx(rates.sum())
    assert m.link_classes["host_in"]["msgs"] == pytest.approx(0.5 * 10)
    assert m.link_classes["host_out"]["msgs"] == pytest.approx(0.1 * 5)
    assert m.per_core["synops"].sum() == pytest.approx(0.5 * 200 + rates.sum() * 5)
    assert m.network.assumed == ["lif1"]


def test_a_synapse_layer_read_by_the_host_gets_graded_relay_neurons(loihi_chain):
    g = loihi_chain([6, 4])
    g.edges = [e for e in g.edges if e.dst != "lif0"]
    del g.nodes["lif0"]
    g.edges = [e for e in g.edges if e.src != "lif0"]
    g.connect("dense0", "output")
    m = map_graph(g)
    (p,) = m.split.populations
    assert p.role == "relay" and p.n == 4 and p.host_bits == 24
    m1 = map_graph(g, "loihi1")
    assert any(v.layer == "dense0" and v.resource == "message bits" for v in m1.violations)


def test_a_recurrent_layer_counts_its_own_destinations(networks_dir):
    from spikecc.compiler.pipeline import lower_for_target
    from spikecc.ir import read

    g = lower_for_target(read(networks_dir / "recurrent_rleaky.nir"), fixed_point=True)
    m = map_graph(g)
    # 16 + 5 neurons, each with time constants and a threshold of its own: 21 neuron groups, 8 to a core
    assert not m.violations and m.n_cores == 3
    rec = [f for f in m.split.fragments if f.pop.layer == "1.lif"]
    # each neuron feeds its own layer (recurrence: the two cores that hold it) and layer 3 (a third core): one
    # output axon per destination core
    assert len(rec) == 16 and {f.axons_out for f in rec} == {3}
    assert isinstance(g.nodes["input"], nir.Input)
