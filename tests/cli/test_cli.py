"""The `spikecc` command line: outputs, file formats, one-line errors, atomic and deterministic builds."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import nir
import numpy as np
import pytest
import torch
from clitools import assert_one_line_error, run, small_graph, write_net

from spikecc.ir import write


@pytest.fixture
def net(tmp_path: Path) -> tuple[Path, Path]:
    return write_net(tmp_path)


def test_inspect_lists_nodes_shapes_and_params(net):
    result = run("inspect", net[0])
    assert result.exit_code == 0, result.output
    for name in ("input", "fc0", "lif0", "fc1", "lif1", "output", "(10,)", "binary"):
        assert name in result.output
    assert f"{6 * 10 + 10 + 10 * 3 + 3 + 5 * 10 + 5 * 3:,} parameters" in result.output


def test_simulate_writes_one_array_per_output_shaped_steps_by_shape(net, tmp_path):
    out = tmp_path / "out.npz"
    result = run("simulate", net[0], "--input", net[1], "--steps", 100, "-o", out)
    assert result.exit_code == 0, result.output
    data = np.load(out)
    assert data.files == ["output"]
    assert data["output"].shape == (100, 3)
    assert set(np.unique(data["output"])) <= {0.0, 1.0}
    from spikecc.backends.cpu import simulate
    from spikecc.ir import read

    expected = simulate(read(net[0]), np.load(net[1])[:100]).outputs["output"]
    assert np.array_equal(data["output"], expected)


def test_simulate_fixed_point_runs_the_quantized_graph(net, tmp_path):
    out = tmp_path / "fixed.npz"
    result = run("simulate", net[0], "--input", net[1], "--fixed-point", "-o", out)
    assert result.exit_code == 0, result.output
    spikes = np.load(out)["output"]
    assert spikes.shape == (120, 3) and set(np.unique(spikes)) <= {0, 1}
    float_out = tmp_path / "float.npz"
    assert run("simulate", net[0], "--input", net[1], "-o", float_out).exit_code == 0
    ref = np.load(float_out)["output"]
    # 8-bit weights: the quantized network fires like the float one (counts within 15%, same silent neurons)
    assert ref.sum() > 10
    assert abs(int(spikes.sum()) - int(ref.sum())) <= 0.15 * ref.sum()
    assert np.array_equal(spikes.sum(0) > 0, ref.sum(0) > 0)


@pytest.mark.parametrize("make_bad, fragments", [
    (lambda p: p.with_name("missing.nir"), ["missing.nir", "no such file"]),
    (lambda p: (p.write_text("not hdf5"), p)[1], ["not a readable HDF5 file"]),
    (lambda p: (h5py.File(p, "w").close(), p)[1], ["without a 'node' group"]),
])
def test_bad_nir_files_give_one_line_errors(tmp_path, make_bad, fragments):
    bad = make_bad(tmp_path / "bad.nir")
    assert_one_line_error(run("inspect", bad), str(bad.name), *fragments)


def test_unknown_node_type_names_the_node(tmp_path):
    path = tmp_path / "u.nir"
    write(small_graph(), path)
    with h5py.File(path, "r+") as f:
        del f["node/nodes/lif0/type"]
        f["node/nodes/lif0/type"] = "MysteryNeuron"
    assert_one_line_error(run("inspect", path), "lif0", "MysteryNeuron")


def test_truncated_nir_file_is_reported(net, tmp_path):
    data = net[0].read_bytes()
    cut = tmp_path / "cut.nir"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run("inspect", cut), "cut.nir")


def test_shape_mismatch_names_the_node(tmp_path):
    g = small_graph()
    g.nodes["fc1"] = nir.Affine(weight=np.ones((3, 7)), bias=np.zeros(3))
    path = tmp_path / "mismatch.nir"
    write(g, path)
    assert_one_line_error(run("inspect", path), "fc1", "7")


def test_wrong_input_shape_and_bad_input_file(net, tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((50, 5)))
    out = tmp_path / "never.npz"
    assert_one_line_error(run("simulate", net[0], "--input", wrong, "-o", out), "input", "(50, 5)", "(steps, 6)")
    assert not out.exists()
    junk = tmp_path / "junk.npy"
    junk.write_text("nope")
    assert_one_line_error(run("simulate", net[0], "--input", junk), "junk.npy")
    assert_one_line_error(run("simulate", net[0], "--input", net[1], "--steps", 500), "500", "120")


def test_compile_is_deterministic_and_records_inputs(net, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("compile", net[0], "-o", a).exit_code == 0
    assert run("compile", net[0], "-o", b).exit_code == 0
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert {"manifest.json", "lowered.nir", "input.nir", "report.json"} <= {str(p) for p in files_a}
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), f"{rel} differs between identical builds"
    import json

    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["input"]["sha256"] == hashlib.sha256(net[0].read_bytes()).hexdigest()
    assert manifest["versions"]["lava-nc"] == "0.10.0" and "nir" in manifest["versions"]
    assert manifest["passes"] == ["fuse_synapses", "map_neurons", "fold_amplitudes", "message_widths", "initial_state",
                                  "quantize"]
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((a / rel).read_bytes()).hexdigest() == digest


def test_failed_compile_leaves_nothing_behind(net, tmp_path):
    good = tmp_path / "build"
    assert run("compile", net[0], "-o", good).exit_code == 0
    before = {p: p.read_bytes() for p in good.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.nir"
    bad.write_text("garbage")
    assert_one_line_error(run("compile", bad, "-o", good), "bad.nir")
    assert {p: p.read_bytes() for p in good.rglob("*") if p.is_file()} == before  # old build untouched
    fresh = tmp_path / "fresh"
    assert_one_line_error(run("compile", bad, "-o", fresh))
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers


def test_entry_point_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "spikecc.cli", "inspect", str(tmp_path / "nope.nir")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr


def test_generate_matches_reference_and_reports_bad_prompts(tmp_path):
    from spikecc.models.data import CharVocab
    from spikecc.models.spikegpt import load_spikegpt, random_state_dict, save_spikegpt, save_vocab

    vocab = CharVocab("abcdefgh ijklmnop")
    model = load_spikegpt(random_state_dict(2, 24, vocab.size, seed=5, dtype=torch.float64))
    ckpt = tmp_path / "tiny.pt"
    save_spikegpt(model, ckpt)
    save_vocab(vocab, tmp_path / "tiny.vocab.json")
    sim = run("generate", ckpt, "--prompt", "abc hij", "--tokens", 24)
    ref = run("generate", ckpt, "--prompt", "abc hij", "--tokens", 24, "--reference")
    assert sim.exit_code == 0 and ref.exit_code == 0, sim.output + ref.output
    assert sim.stdout.strip() == ref.stdout.strip()
    assert len(sim.stdout.strip()) == len("abc hij") + 24
    assert_one_line_error(run("generate", ckpt, "--prompt", "XYZ"), "XYZ"[0], "vocabulary")
    nir_path = tmp_path / "tiny.nir"
    assert run("export", ckpt, "-o", nir_path).exit_code == 0
    assert run("generate", nir_path, "--prompt", "abc hij", "--tokens", 24).stdout.strip() == sim.stdout.strip()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[:500])
    assert_one_line_error(run("generate", bad, "--prompt", "a"), "bad.pt")


@pytest.mark.parametrize("family", ["spikegpt", "spikelm", "spikerwkv", "rwkv6"])
def test_shipped_lm_generates_the_reference_text_from_checkpoint_and_exported_file(family, examples_dir, tmp_path):
    ckpt = examples_dir / "checkpoints" / f"{family}-shakespeare.pt"
    prompt = "JULIET:\n"
    args = ["generate", ckpt, "--prompt", prompt, "--tokens", 32]
    sim, ref = run(*args), run(*args, "--reference")
    assert sim.exit_code == 0 and ref.exit_code == 0, (sim.output, ref.output)
    assert sim.stdout == ref.stdout and sim.stdout.startswith(prompt)
    assert len(sim.stdout) == len(prompt) + 32 + 1  # prompt, 32 characters, newline
    out = tmp_path / f"{family}.nir"
    assert run("export", ckpt, "-o", out).exit_code == 0
    assert run("generate", out, "--prompt", prompt, "--tokens", 32).stdout == ref.stdout
