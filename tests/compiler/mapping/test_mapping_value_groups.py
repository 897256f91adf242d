"""Layers whose neurons differ in du, dv or threshold take one Loihi 2 neuron group per distinct set (Lava holds
them once per process): the budget counts those groups, moves no synapse, and agrees with the Lava split plan."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from test_mapping_split import assert_within_budget

from spikecc.cli import main
from spikecc.compiler.mapping import load_target, map_graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _vary(g, name: str, groups: int) -> None:
    """Give layer `name` `groups` distinct du values, neuron i in group i mod groups (interleaved)."""
    op: LoihiLIF = g.nodes[name]
    n = op.du.size
    op.du = 100.0 + np.arange(n) % groups


@pytest.mark.parametrize("groups", [2, 9, 20])
def test_value_groups_are_counted_and_move_no_synapse(loihi_chain, groups):
    uniform = loihi_chain([12, 40, 30, 6], density=0.6, seed=4)
    split = loihi_chain([12, 40, 30, 6], density=0.6, seed=4)
    _vary(split, "lif0", groups)
    activity = {"input": 0.5, "lif0": np.linspace(0, 1, 40), "lif1": 0.2, "lif2": 0.1}
    a, b = map_graph(uniform, activity=activity), map_graph(split, activity=activity)
    assert not a.violations and not b.violations
    per_core = int(load_target("loihi2")["core.neuron_groups"])
    layer = next(r for r in b.layers if r["layer"] == "lif0")
    assert layer["value_groups"] == groups and layer["neurons"] == 40
    assert layer["cores"] >= layer["lower_bound_cores"] >= math.ceil(groups / per_core)
    assert sum(c.usage["neuron_groups"] for c in b.cores) == groups + 2  # and one each for lif1, lif2
    assert b.n_cores >= math.ceil((groups + 2) / per_core)
    assert_within_budget(b)
    # every synapse and every synaptic event is where it was: the split only cuts the matrices into blocks
    nnz = sum(np.count_nonzero(op.weight) for op in split.nodes.values() if isinstance(op, LoihiDense))
    assert sum(f.synapses for f in b.split.fragments) == nnz == sum(f.synapses for f in a.split.fragments)
    assert b.per_core["synops"].sum() == pytest.approx(a.per_core["synops"].sum())
    assert b.link_classes["host_out"]["msgs"] == pytest.approx(a.link_classes["host_out"]["msgs"])
    # each group's neurons are those of its du value, in the order of their first neuron
    subs = [p for p in b.split.populations if p.layer == "lif0"]
    assert [p.name for p in subs] == [f"lif0#v{i}" for i in range(groups)]
    assert [p.n for p in subs] == [len(range(i, 40, groups)) for i in range(groups)]
    assert np.allclose(np.concatenate([p.rate for p in subs]),
                       np.concatenate([np.linspace(0, 1, 40)[i::groups] for i in range(groups)]))


def test_shared_values_keep_one_group_whatever_the_biases(loihi_chain):
    g = loihi_chain([8, 16, 4])
    g.nodes["lif0"].bias_mant = np.arange(16.0)  # per neuron on Loihi 2: no new group
    m = map_graph(g)
    assert [r["value_groups"] for r in m.layers] == [1, 1]


def test_the_shipped_example_budget_counts_the_groups_its_lava_module_splits(tmp_path, networks_dir):
    """ff_lif.nir: per-neuron time constants and thresholds. The budget's groups per layer equal the groups of the
    build's Lava split plan (manifest), no core holds more groups than the profile allows, and the board needs
    at least groups / 8 cores."""
    build = tmp_path / "build"
    assert run("compile", networks_dir / "ff_lif.nir", "-o", build, "--spike-inputs").exit_code == 0
    split = json.loads((build / "manifest.json").read_text())["lava"]["split"]
    result = run("budget", build, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    groups = {r["layer"]: r["value_groups"] for r in data["layers"]}
    assert groups == {layer: s["groups"] for layer, s in split.items()}
    limit = data["target"]["figures"]["core.neuron_groups"]["value"]
    assert all(c["neuron_groups"] <= limit for c in data["per_core"])
    assert data["cores"] >= math.ceil(sum(groups.values()) / limit)
    text = run("budget", build)
    assert "value grp" in text.stdout and "one per distinct (du, dv, threshold) set" in text.stdout
