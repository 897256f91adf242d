"""`spikecc sweep` in this process: what each option does to a build (real compiled builds), the grid, the cache
keys, and one-line errors. (The sweep on a Dask cluster: tests/test_distributed.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spikecc import sweep
from spikecc.errors import InputFileError

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"


@pytest.fixture(scope="module")
def spikelm_ckpt(examples_dir) -> Path:
    return examples_dir / "checkpoints" / "spikelm-shakespeare.pt"


def test_grid_is_parsed_in_option_order_and_combined():
    grid = sweep.parse_grid(["k=2,3", "weight_bits=4,8"])
    assert grid == {"weight_bits": [4, 8], "k": [2.0, 3.0]}  # listed in OPTIONS order
    assert sweep.combinations(grid) == [{"weight_bits": 4, "k": 2.0}, {"weight_bits": 4, "k": 3.0},
                                        {"weight_bits": 8, "k": 2.0}, {"weight_bits": 8, "k": 3.0}]
    grid = sweep.parse_grid(["message_bits=8,12", "polarity=graded,split"])
    assert grid == {"polarity": ["graded", "split"], "message_bits": [8, 12]}
    opts = sweep.compile_options({"polarity": "graded", "message_bits": 8, "k": 2.0})
    assert (opts.polarity, opts.message_bits, opts.weight_bits) == ("graded", 8, 8)  # the rest: compile's defaults


@pytest.mark.parametrize("item, fragment", [
    ("levels=binary", "unknown option 'levels'"), ("weight_bits=9", "1..8"), ("message_bits=1", "2..24"),
    ("polarity=both", "split or graded"), ("k=0", "positive"), ("weight_bits", "NAME=V1,V2"),
    ("k=2,2", "listed twice")])
def test_bad_grid_items_are_one_line_errors(item, fragment):
    with pytest.raises(InputFileError, match=fragment):
        sweep.parse_grid([item])


def test_weight_bits_compile_real_builds_whose_weights_sit_on_that_grid(examples_dir, tmp_path):
    """2 bits: every neuro-core synapse layer of the build holds weights on Lava's 2-bit grid (4 values); narrower
    weights take less synaptic memory, so the build's budget (what the sweep reports) needs fewer cores than at
    8 bits."""
    from spikecc import mapping_hooks
    from spikecc.ir import read
    from spikecc.ir.loihi_ops import LoihiDense

    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    subject, key, cached = sweep.build(ckpt, {"weight_bits": 2}, tmp_path, "sha", sweep.BuildInput())
    build = tmp_path / key / "build"
    assert not cached and subject.source == str(build) and subject.modes()["fixed"] is None
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["options"]["weight_bits"] == 2 and manifest["options"]["polarity"] == "split"
    lowered = read(build / "lowered.nir")
    layers = [op for n, op in lowered.nodes.items() if isinstance(op, LoihiDense)
              and lowered.annotation(n, "partition") == "neurocore"]
    assert len(layers) > 20
    for op in layers:
        w = np.asarray(op.weight)
        # Lava's grids (weightutils.py): mixed signs step 128 in [-256, 128], one sign step 64 in [0, 192]
        grid = {-256, -128, 0, 128} if w.min() < 0 < w.max() else {0, 64, 128, 192} if w.max() > 0 else \
            {0, -64, -128, -192}
        assert set(np.unique(w).tolist()) <= grid
    wide, _, _ = sweep.build(ckpt, {"weight_bits": 8}, tmp_path, "sha", sweep.BuildInput())
    budget = json.loads((build / "budget.json").read_text())
    assert mapping_hooks.cores(subject) == budget["cores"] < mapping_hooks.cores(wide)
    assert mapping_hooks.energy_per_token(subject) == pytest.approx(budget["energy"]["token_uj"] * 1e-6)
    again = sweep.build(ckpt, {"weight_bits": 2}, tmp_path, "sha", sweep.BuildInput())
    assert again[1:] == (key, True)


def test_k_recalibrates_spikelm_alphas_in_proportion(spikelm_ckpt, tmp_path):
    """The first neuron's first-step membrane is the LayerNorm output, which no alpha affects: its alpha is
    k * mean|m_0| on the calibration batch, so k = 3 gives 1.5 times the alpha of k = 2. The checkpoint the
    sweep compiles holds them."""
    from spikecc.compiler.frontends import load_lm
    from spikecc.models.data import shakespeare_text

    base = sweep._base_subject(spikelm_ckpt)
    calib = sweep.evaluate.encode(base, shakespeare_text()[:2100], "calibration")
    inputs = sweep.BuildInput(calib, "calibration")
    alphas = {}
    for k in (2.0, 3.0):
        (tmp_path / str(k)).mkdir()
        path = sweep.model_variant(spikelm_ckpt, {"k": k, "weight_bits": 4}, tmp_path / str(k), inputs)
        assert path == tmp_path / str(k) / "checkpoint.pt"
        alphas[k] = load_lm(path).model.state_dict()["layers.0.attn.in_spike.alpha"].numpy()
    assert alphas[3.0][0] / alphas[2.0][0] == pytest.approx(1.5, rel=1e-6)
    shipped = base.model.state_dict()["layers.0.attn.in_spike.alpha"].numpy()
    assert not np.allclose(alphas[2.0], shipped)  # re-calibrated on this batch, not the shipped alphas
    assert sweep.model_variant(spikelm_ckpt, {"weight_bits": 4}, tmp_path, inputs) == spikelm_ckpt  # compiled as is
    assert sweep.build_key("sha", {"k": 2.0}, inputs) != sweep.build_key("sha", {"k": 2.0}, sweep.BuildInput([1]))
    assert sweep.build_key("sha", {"k": 2.0}, inputs) != sweep.build_key("sha", {"k": 2.0}, inputs, "loihi1")
    with pytest.raises(InputFileError, match="would not see the compile options"):
        sweep.sweep(spikelm_ckpt, {"weight_bits": [8]}, HELDOUT, tmp_path / "out", mode="reference")


def test_sweep_errors_are_one_line_and_leave_the_users_files_alone(examples_dir, spikelm_ckpt, tmp_path,
                                                                  one_line_error):
    text = ["--text", str(HELDOUT)]
    gpt = str(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt")
    assert "applies to spikelm" in one_line_error(["sweep", gpt, "--grid", "k=2,3", *text, "-o", str(tmp_path / "a")])
    assert "give --calibration" in one_line_error(
        ["sweep", str(spikelm_ckpt), "--grid", "k=2,3", *text, "-o", str(tmp_path / "b")])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "other files in it" in one_line_error(
        ["sweep", gpt, "--grid", "weight_bits=8", *text, "-o", str(mine)])
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    assert "needs a checkpoint file" in one_line_error(
        ["sweep", str(tmp_path / "missing.pt"), "--grid", "weight_bits=8", *text, "-o", str(tmp_path / "c")])
