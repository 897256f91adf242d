"""Windowed evaluation (spikecc.evaluate, `spikecc eval`) in this process: the windows, the scores against
torch's own cross-entropy, the simulator against the reference, a fixed-point graph, and one-line errors.
(Dask runs: tests/test_distributed.py.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spikecc import evaluate
from spikecc.cli import main
from spikecc.errors import InputFileError
from spikecc.ir import Graph, LoihiDense, write

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"


@pytest.fixture(scope="module")
def spikegpt(examples_dir):
    return evaluate.load_subject(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt")


def test_windows_score_every_position_once_after_their_warmup():
    ids = list(range(200))
    ws = evaluate.make_windows(ids, window=32, warmup=20)
    assert [t for w in ws for t in w.targets] == ids[1:]  # every position but the first, once, in order
    for w in ws:
        first = w.targets[0]
        assert w.fed[-1] == w.targets[-1] - 1  # fed up to the token before the last target
        assert w.fed[w.warm] == first - 1  # the scored part starts with the token before the first target
        assert w.warm == min(20, first - 1)  # up to 20 tokens of warm-up, fewer at the start of the text
        assert len(w.fed) == w.warm + w.tokens
    assert [w.tokens for w in ws] == [32] * 6 + [7]


def test_one_window_is_torchs_cross_entropy_of_the_reference_forward(spikegpt, tmp_path):
    """A text shorter than the window is one window from a fresh state: its perplexity is exp of torch's
    cross-entropy over the reference model's logits, its accuracy the share of argmax hits."""
    text = HELDOUT.read_text()[:90]
    (tmp_path / "t.txt").write_text(text)
    plan = evaluate.plan(spikegpt, tmp_path / "t.txt", ["reference"], window=128, warmup=0)
    assert len(plan.windows) == 1
    got = evaluate.run(plan).scores["reference"]
    ids = torch.tensor(plan.ids)
    with torch.no_grad():
        logits = spikegpt.model(ids[None, :-1])[0].double()
    ce = torch.nn.functional.cross_entropy(logits, ids[1:]).item()
    assert got.tokens == len(text) - 1
    assert got.perplexity == pytest.approx(math.exp(ce), rel=1e-12)
    assert got.accuracy == (logits.argmax(dim=1) == ids[1:]).double().mean().item()


@pytest.mark.parametrize("family", ["spikegpt", "spikelm"])
def test_simulated_graph_scores_like_the_reference_model(family, examples_dir, tmp_path):
    """The float IR graph in the simulator reproduces the reference (to ~1e-14 in the logits): the same
    accuracy and the same perplexity to 1e-10; windows with warm-up keep SpikeLM within its 128 positions."""
    (tmp_path / "t.txt").write_text(HELDOUT.read_text()[:160])
    subject = evaluate.load_subject(examples_dir / "checkpoints" / f"{family}-shakespeare.pt")
    plan = evaluate.plan(subject, tmp_path / "t.txt", None, window=48, warmup=32)
    assert plan.modes == ["reference", "float", "fixed"]
    s = evaluate.run(plan).scores
    assert s["float"].accuracy == s["reference"].accuracy
    assert s["float"].perplexity == pytest.approx(s["reference"].perplexity, rel=1e-10)
    assert 1.0 < s["float"].perplexity < 84  # better than uniform over the 84 characters, worse than certain


def test_warmup_context_changes_the_scores(spikegpt, tmp_path):
    (tmp_path / "t.txt").write_text(HELDOUT.read_text()[:200])
    cold = evaluate.run(evaluate.plan(spikegpt, tmp_path / "t.txt", ["reference"], window=40, warmup=0))
    warm = evaluate.run(evaluate.plan(spikegpt, tmp_path / "t.txt", ["reference"], window=40, warmup=40))
    assert cold.scores["reference"].tokens == warm.scores["reference"].tokens == 199
    assert cold.scores["reference"].nll != warm.scores["reference"].nll


def toy_fixed_point_lm(path: Path) -> np.ndarray:
    """A two-character "LM" whose logits are a fixed-point LoihiDense of the token id, one step late
    (Lava's Dense delay): logits after token j = W @ [fed[j-1]]. Returns W."""
    w = np.array([[4], [-2]])  # even: mixed-sign weights keep only even values (Lava)
    g = Graph(metadata={"family": "toy", "vocab": "ab", "fixed_point": True})
    g.add_node("token", nir.Input(input_type={"input": np.array([1])}))
    g.add_node("dense", LoihiDense(weight=w, num_message_bits=8), fixed_point=True)
    g.add_node("logits", nir.Output(output_type={"output": np.array([2])}))
    g.connect("token", "dense")
    g.connect("dense", "logits")
    write(g, path)
    return w


def test_a_graph_with_fixed_point_nodes_is_evaluated_in_fixed_mode(tmp_path):
    w = toy_fixed_point_lm(tmp_path / "toy.nir")
    (tmp_path / "t.txt").write_text("abbabaab")
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "toy.nir"), "--text", str(tmp_path / "t.txt"),
                                       "--json", "--window", "3", "--warmup", "2"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert list(out["modes"]) == ["fixed"] and set(out["unavailable"]) == {"reference", "float"}
    ids = [0, 1, 1, 0, 1, 0, 0, 1]
    nll, hits = 0.0, 0
    for s in range(1, 8, 3):  # windows of 3, fresh state, 2 warm-up tokens
        fed = ids[max(0, s - 3): min(s + 3, 8) - 1]
        logits = [np.zeros(2)] + [w[:, 0] * t for t in fed[:-1]]  # one step late
        for j in range(s - 1 - max(0, s - 3), len(fed)):
            z = logits[j]
            nll += np.log(np.exp(z).sum()) - z[ids[max(0, s - 3) + j + 1]]
            hits += int(np.argmax(z) == ids[max(0, s - 3) + j + 1])
    assert out["modes"]["fixed"]["perplexity"] == pytest.approx(math.exp(nll / 7), rel=1e-12)
    assert out["modes"]["fixed"]["accuracy"] == hits / 7


def test_eval_cli_prints_the_modes_in_a_table_and_in_json(examples_dir, tmp_path):
    (tmp_path / "t.txt").write_text(HELDOUT.read_text()[:100])
    ckpt = str(examples_dir / "checkpoints" / "spikerwkv-shakespeare.pt")
    r = CliRunner().invoke(main, ["eval", ckpt, "--text", str(tmp_path / "t.txt"), "--mode", "float", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["modes"]) == {"float"} and set(out["modes"]["float"]) >= {"perplexity", "accuracy"}
    assert out["text_tokens"] == 100 and out["modes"]["float"]["tokens"] == 99
    r = CliRunner().invoke(main, ["eval", ckpt, "--text", str(tmp_path / "t.txt"), "--mode", "reference"])
    assert r.exit_code == 0 and "reference" in r.output and "perplexity" in r.output
    assert "not evaluated" not in r.output  # every mode is available for a checkpoint, only one was asked for


def test_a_character_outside_the_vocabulary_is_named_with_its_place(examples_dir, tmp_path, one_line_error):
    (tmp_path / "t.txt").write_text("To be,\nor n€t to b¤")
    msg = one_line_error(["eval", str(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"), "--text",
                          str(tmp_path / "t.txt")])
    assert "'€' (line 2, column 5)" in msg and "t.txt" in msg and "¤" not in msg


def test_one_line_errors_for_windows_past_the_context_and_unusable_inputs(examples_dir, tmp_path, one_line_error):
    (tmp_path / "t.txt").write_text(HELDOUT.read_text()[:50])
    ckpt = str(examples_dir / "checkpoints" / "spikelm-shakespeare.pt")
    assert "context of 128" in one_line_error(["eval", ckpt, "--text", str(tmp_path / "t.txt"), "--window", "100"])
    exported = tmp_path / "lm.nir"
    assert CliRunner().invoke(main, ["export", ckpt, "-o", str(exported)]).exit_code == 0
    assert "mode 'reference' is not available" in one_line_error(
        ["eval", str(exported), "--text", str(tmp_path / "t.txt"), "--mode", "reference"])
    (tmp_path / "one.txt").write_text("a")
    assert "at least 2" in one_line_error(["eval", ckpt, "--text", str(tmp_path / "one.txt")])
    (tmp_path / "bad.txt").write_bytes(b"ab\xff\xfe")
    assert "not UTF-8" in one_line_error(["eval", ckpt, "--text", str(tmp_path / "bad.txt")])
    assert "no such text file" in one_line_error(["eval", ckpt, "--text", str(tmp_path / "missing.txt")])
    with pytest.raises(InputFileError, match="not a language model"):
        (tmp_path / "build").mkdir()
        write(Graph(nodes={"i": nir.Input(input_type={"input": np.array([1])})}), tmp_path / "build" / "lowered.nir")
        evaluate.load_subject(tmp_path / "build")
