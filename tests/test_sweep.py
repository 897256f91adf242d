"""`spikecc sweep` in this process: what each option does to a build, the grid, the cache keys, and one-line
errors. (The sweep on a Dask cluster: tests/test_distributed.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spikecc import sweep
from spikecc.errors import InputFileError

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"


@pytest.fixture(scope="module")
def spikelm_ckpt(examples_dir) -> Path:
    return examples_dir / "checkpoints" / "spikelm-shakespeare.pt"


def test_grid_is_parsed_in_option_order_and_combined():
    grid = sweep.parse_grid(["k=2,3", "weight_bits=4,8"])
    assert grid == {"weight_bits": [4, 8], "k": [2.0, 3.0]}  # weights are rounded before alphas re-calibrate
    assert sweep.combinations(grid) == [{"weight_bits": 4, "k": 2.0}, {"weight_bits": 4, "k": 3.0},
                                        {"weight_bits": 8, "k": 2.0}, {"weight_bits": 8, "k": 3.0}]


@pytest.mark.parametrize("item, fragment", [
    ("polarity=split", "unknown option 'polarity'"), ("weight_bits=9", "1..8"), ("k=0", "positive"),
    ("weight_bits", "NAME=V1,V2"), ("k=2,2", "listed twice")])
def test_bad_grid_items_are_one_line_errors(item, fragment):
    with pytest.raises(InputFileError, match=fragment):
        sweep.parse_grid([item])


def test_weight_bits_round_every_block_linear_onto_loihis_grid_and_nothing_else(examples_dir, tmp_path):
    """2 bits, mixed signs: Lava keeps multiples of 2**(8-2+1) = 128 in [-256, 128], so every block linear of
    the build holds at most 4 distinct values with its largest |weight| kept; embedding and head untouched."""
    from spikecc.compiler.frontends import load_lm

    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    base = load_lm(ckpt).model
    subject, key, cached = sweep.build(ckpt, {"weight_bits": 2}, tmp_path, "sha", sweep.BuildInput())
    assert not cached and (tmp_path / key / "checkpoint.vocab.json").exists()
    built = dict(subject.model.named_modules())
    n = 0
    for name, m in base.named_modules():
        if isinstance(m, torch.nn.Linear):
            w, wb = m.weight.detach().numpy(), built[name].weight.detach().numpy()
            if name.startswith("blocks."):
                n += 1
                assert len(np.unique(wb)) <= 4
                assert np.abs(wb).max() == pytest.approx(np.abs(w).max(), rel=1e-6)
                assert set(np.unique(np.round(wb / np.abs(w).max(), 5))) <= {-2.0, -1.0, 0.0, 1.0}  # x top value
            else:
                assert np.array_equal(w, wb)
    assert n == 7 * len(base.blocks)  # att key/value/receptance/output, ffn key/receptance/value
    again = sweep.build(ckpt, {"weight_bits": 2}, tmp_path, "sha", sweep.BuildInput())
    assert again[1:] == (key, True)


def test_k_recalibrates_spikelm_alphas_in_proportion(spikelm_ckpt, tmp_path):
    """The first neuron's first-step membrane is the LayerNorm output, which no alpha affects: its alpha is
    k * mean|m_0| on the calibration batch, so k = 3 gives 1.5 times the alpha of k = 2."""
    from spikecc.models.data import shakespeare_text

    base = sweep.evaluate.load_subject(spikelm_ckpt)
    calib = sweep.evaluate.encode(base, shakespeare_text()[:2100], "calibration")
    inputs = sweep.BuildInput(calib, "calibration")
    alphas = {}
    for k in (2.0, 3.0):
        subject, key, _ = sweep.build(spikelm_ckpt, {"k": k}, tmp_path, "sha", inputs)
        alphas[k] = subject.model.state_dict()["layers.0.attn.in_spike.alpha"].numpy()
    assert alphas[3.0][0] / alphas[2.0][0] == pytest.approx(1.5, rel=1e-6)
    shipped = base.model.state_dict()["layers.0.attn.in_spike.alpha"].numpy()
    assert not np.allclose(alphas[2.0], shipped)  # re-calibrated on this batch, not the shipped alphas
    assert sweep.build_key("sha", {"k": 2.0}, inputs) != sweep.build_key("sha", {"k": 2.0}, sweep.BuildInput([1]))


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
