"""The budget files (JSON, text, offline HTML with PNG plots) and the `spikecc budget` / `spikecc energy`
commands: deterministic bytes, named violations, non-zero exits, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from spikecc.cli import main
from spikecc.compiler.mapping import map_graph
from spikecc.compiler.mapping.report import FILES, budget_text, write_budget

TOP = {"cores", "chips", "lower_bound_cores", "violations"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture(scope="module")
def build(tmp_path_factory, networks_dir) -> Path:
    out = tmp_path_factory.mktemp("b") / "ff_lif"
    assert run("compile", networks_dir / "ff_lif.nir", "-o", out, "--spike-inputs").exit_code == 0
    return out


def test_budget_files_are_byte_identical_and_open_offline(tmp_path, profile, lm_lowered):
    g, activity = lm_lowered("spikelm")
    m = map_graph(g, profile("two-chips", **{"chip.cores": 40}), activity=activity, chips=1)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_budget(m, a)
    write_budget(map_graph(g, profile("two-chips", **{"chip.cores": 40}), activity=activity, chips=1), b)
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for png in (n for n in FILES if n.endswith(".png")):
        data = (a / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"tIME" not in data and b"matplotlib" not in data
    page = (a / "budget.html").read_text()
    assert "http://" not in page and "https://" not in page
    for png in (n for n in FILES if n.endswith(".png")):
        assert f"src='{png}'" in page
    data = json.loads((a / "budget.json").read_text())
    assert TOP <= set(data) and data["cores"] == m.n_cores == len(data["per_core"])
    assert data["violations"][0]["resource"] == "chips" and "VIOLATIONS (1)" in (a / "budget.txt").read_text()
    assert {"in_core", "core_core", "chip_chip", "host_in", "host_out"} == set(data["traffic"])
    assert "inferred" in page and "documented" in page  # the target's figures with their confidence


def test_budget_command_reports_json_and_text(build, tmp_path):
    r = run("budget", build, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    # ff_lif's 40 neurons have 40 distinct (du, dv, threshold) sets: 40 neuron groups, 8 to a core
    assert TOP <= set(data) and data["cores"] == 5 and data["chips"] == 1 and data["violations"] == []
    assert data["lower_bound_cores"] == 5 and [x["layer"] for x in data["layers"]] == ["1", "3", "5"]
    r = run("budget", build, "--report", tmp_path / "rep")
    assert r.exit_code == 0 and "lower bound" in r.stdout
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(FILES)
    assert_one_line_error(run("budget", build, "--report", tmp_path / "rep"), "already exists")


def test_a_board_too_small_exits_nonzero_naming_the_violation(build, profile):
    target = profile("tiny", **{"core.neurons": 8, "chip.cores": 2})
    r = run("budget", build, "--target", target, "--chips", "1", "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    (v,) = data["violations"]
    assert (v["layer"], v["resource"], v["value"], v["limit"]) == ("(whole network)", "chips", data["chips"], 1)
    assert data["cores"] >= 5 and "chips" in r.stderr and r.stderr.startswith("error: ")


def test_a_layer_that_cannot_fit_at_the_finest_split_exits_nonzero(build, profile):
    # Loihi 1 cannot carry partial sums; with 8 input axons per core, a neuron with 12 inputs fits nowhere
    target = profile("narrow", base="loihi1", **{"core.axons_in": 8})
    r = run("budget", build, "--target", target)
    assert r.exit_code == 1
    assert "layer '1': axons_in 12 exceeds the limit of 8 per core" in r.stdout
    assert "layer '3': axons_in 20 exceeds the limit of 8 per core" in r.stdout
    assert "layer '5': axons_in 16 exceeds the limit of 8 per core" in r.stdout
    assert r.stderr.startswith("error: 3 budget violation(s); first: layer '1': axons_in 12")
    assert "no graded messages for partial sums" in r.stderr


def test_budget_errors_are_one_line(build, tmp_path):
    assert_one_line_error(run("budget", build, "--target", "loihi7"), "unknown target 'loihi7'")
    assert_one_line_error(run("budget", tmp_path / "nothing"), "not a build directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("budget", tmp_path / "empty"), "no lowered.nir")
    bad = tmp_path / "act.npz"
    bad.write_bytes(b"not a zip")
    assert_one_line_error(run("budget", build, "--activity", bad), "act.npz")


def test_energy_of_a_build_adds_the_loihi_estimate(build, networks_dir):
    r = run("energy", build, "--input", networks_dir / "ff_lif.input.npy", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {"ann_mj", "snn_mj", "loihi_mj", "layers"} <= set(data)
    assert data["ann_mj"] > data["snn_mj"] > 0 and data["loihi_mj"] > 0 and data["loihi"]["cores"] == 5
    assert_one_line_error(run("energy", build), "vocabulary")  # no text to feed a non-language model


def test_energy_of_a_checkpoint_in_both_precisions(examples_dir):
    ckpt = examples_dir / "checkpoints" / "spikerwkv-shakespeare.pt"
    r32 = run("energy", ckpt, "--seq-len", "16", "--json")
    r16 = run("energy", ckpt, "--seq-len", "16", "--precision", "fp16", "--json")
    assert r32.exit_code == 0 and r16.exit_code == 0, r32.output + r16.output
    d32, d16 = json.loads(r32.stdout), json.loads(r16.stdout)
    assert d32["tokens"] == 16 and "loihi_mj" not in d32
    assert d16["ann_mj"] / d32["ann_mj"] == pytest.approx(1.5 / 4.6)
    # SpikeRWKV's encoders feed spikes to every linear: accumulates dominate the spiking side; the ANN baseline
    # is the untiled d x d weight (the graph's linear holds it tiled over T = 1 step x 6 levels)
    layers = {x["layer"]: x for x in d32["layers"]}
    assert layers["blocks.0.att.key"]["ann_macs"] == 128 * 128 * 16
    acs = sum(x["snn_acs"] for x in d32["layers"])
    assert acs > 0 and layers["blocks.0.att.key"]["snn_acs"] > 0 and d32["snn_mj"] < d32["ann_mj"]
    text = run("energy", ckpt, "--seq-len", "16").stdout
    assert "ANN / SNN" in text and "total" in text


def test_budget_text_names_the_bottleneck_and_assumptions(loihi_chain):
    text = budget_text(map_graph(loihi_chain([12, 20, 4])))
    assert "bottleneck" in text and "activity assumed" in text and "lower bound 1" in text
