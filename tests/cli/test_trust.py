"""What a user must be able to trust: no lost files, what is compiled is what was verified, no silent garbage
from bad values, one line for every failure. One test (or more) per item of the trust review; each failed
before these guarantees existed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from clitools import assert_one_line_error, run, small_graph, write_net

from spikecc.ir import Graph, read, write


@pytest.fixture
def net(tmp_path: Path) -> tuple[Path, Path]:
    return write_net(tmp_path)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- 1. lost files ----------------------------------------------------------------------------------------------
def test_compile_into_a_folder_of_user_files_refuses_and_keeps_them(net, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    inside = folder / "net.nir"
    inside.write_bytes(net[0].read_bytes())
    before = snapshot(folder)
    assert_one_line_error(run("compile", inside, "-o", folder), "mine", "holds the input")
    assert snapshot(folder) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2")
    assert_one_line_error(run("compile", net[0], "-o", other), "other", "not a spikecc build", "left alone")
    assert (other / "data.csv").read_text() == "1,2"


def test_an_earlier_build_is_replaced_but_not_one_holding_a_user_file(net, tmp_path):
    build = tmp_path / "build"
    assert run("compile", net[0], "-o", build).exit_code == 0
    assert run("compile", net[0], "-o", build, "--float").exit_code == 0  # spikecc's own build: replaced
    assert json.loads((build / "manifest.json").read_text())["fixed_point"] is False
    (build / "lava" / "my_script.py").write_text("print('mine')")
    before = snapshot(build)
    assert_one_line_error(run("compile", net[0], "-o", build), "my_script.py", "was not written by spikecc")
    assert snapshot(build) == before


def test_compile_into_the_current_directory_refuses_and_leaves_nothing(net, tmp_path, monkeypatch):
    monkeypatch.chdir(net[0].parent)
    before = sorted(p.name for p in net[0].parent.iterdir())
    assert_one_line_error(run("compile", net[0].name, "-o", "."), "current directory")
    assert_one_line_error(run("compile", net[0].name, "-o", ".."), "current directory")
    assert sorted(p.name for p in net[0].parent.iterdir()) == before  # no `..old-XXXX` folder left


def test_outputs_never_overwrite_an_input(net, tmp_path, examples_dir):
    x_before = net[1].read_bytes()
    assert_one_line_error(run("simulate", net[0], "--input", net[1], "-o", net[1]), "also an input")
    assert net[1].read_bytes() == x_before
    assert_one_line_error(run("lava", net[0], "--input", net[1], "-o", net[0]), "also an input")
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes((examples_dir / "checkpoints" / "spikerwkv-shakespeare.pt").read_bytes())
    before = ckpt.read_bytes()
    assert_one_line_error(run("export", ckpt, "-o", ckpt), "also an input")
    assert ckpt.read_bytes() == before


def test_an_existing_file_is_replaced_only_when_spikecc_wrote_it(net, tmp_path):
    out = tmp_path / "out.npz"
    assert run("simulate", net[0], "--input", net[1], "-o", out).exit_code == 0
    assert run("simulate", net[0], "--input", net[1], "--steps", 50, "-o", out).exit_code == 0  # its own: replaced
    assert np.load(out)["output"].shape == (50, 3)
    theirs = tmp_path / "theirs.npz"
    np.savez(theirs, result=np.arange(3))  # written by numpy, not by spikecc
    assert_one_line_error(run("simulate", net[0], "--input", net[1], "-o", theirs), "not written by spikecc")
    assert np.load(theirs)["result"].tolist() == [0, 1, 2]
    exported = tmp_path / "g.nir"
    write(small_graph(1), exported)
    nir.write(tmp_path / "plain.nir", nir.NIRGraph(nodes={}, edges=[]))
    assert_one_line_error(run("simulate", net[0], "--input", net[1], "-o", tmp_path / "plain.nir"),
                          "not written by spikecc")


# -- 2. what you compile is what you verified ----------------------------------------------------------------
def _run_generated_module(build: Path, x: np.ndarray, tmp_path: Path) -> np.ndarray:
    """Run BUILD/lava/lava_network.py in a fresh Python process on the real-valued input `x`."""
    np.save(tmp_path / "x_in.npy", x)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import lava_network as m; "
            "r = m.run(np.load(sys.argv[2])); np.save(sys.argv[3], r['output'])")
    out = tmp_path / "module_out.npy"
    proc = subprocess.run([sys.executable, "-c", code, str(build / "lava"), str(tmp_path / "x_in.npy"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


@pytest.mark.parametrize("spikes", [False, True])
def test_generated_module_takes_what_spikecc_lava_takes_and_agrees(net, tmp_path, spikes):
    flag = ["--spike-inputs"] if spikes else []
    build = tmp_path / "build"
    assert run("compile", net[0], "-o", build, *flag).exit_code == 0
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["inputs"]["input"]["kind"] == ("binary" if spikes else "real")
    assert manifest["inputs"]["input"]["bits"] == (0 if spikes else 8)
    x = np.load(net[1]).astype(np.float64)
    lava_out = tmp_path / "lava.npz"
    assert run("lava", net[0], "--input", net[1], "--fixed-point", "-o", lava_out, *flag).exit_code == 0
    expected = np.load(lava_out)["output"]
    assert expected.sum() > 5  # the example input makes the network fire
    assert np.array_equal(_run_generated_module(build, x, tmp_path), expected)
    sim_out = tmp_path / "sim.npz"
    assert run("simulate", build / "lowered.nir", "--input", net[1], "-o", sim_out).exit_code == 0
    assert np.array_equal(np.load(sim_out)["output"], expected)


def test_a_quantized_graph_runs_bit_accurately_even_without_the_flag(net, tmp_path):
    build = tmp_path / "build"
    assert run("compile", net[0], "-o", build).exit_code == 0
    plain, flagged = tmp_path / "a.npz", tmp_path / "b.npz"
    result = run("simulate", build / "lowered.nir", "--input", net[1], "-o", plain)
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "runs bit-accurately" in result.stderr
    assert run("simulate", build / "lowered.nir", "--input", net[1], "--fixed-point", "-o", flagged).exit_code == 0
    a = np.load(plain)["output"]
    assert a.sum() > 5 and np.array_equal(a, np.load(flagged)["output"])


def test_spike_inputs_refuse_non_binary_data(net, tmp_path):
    x = np.load(net[1]).astype(np.float64)
    x[7, 2] = 0.5
    bad = tmp_path / "half.npy"
    np.save(bad, x)
    for cmd in ("simulate", "lava"):
        assert_one_line_error(run(cmd, net[0], "--input", bad, "--spike-inputs"), "'input'", "0.5", "(7, 2)",
                              "binary spikes")


# -- 3. non-finite and out-of-range values ---------------------------------------------------------------------
@pytest.mark.parametrize("value, fragment", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                             (-np.inf, "NaN or infinite")])
@pytest.mark.parametrize("cmd", ["simulate", "lava"])
def test_non_finite_inputs_are_refused(net, tmp_path, value, fragment, cmd):
    x = np.load(net[1]).astype(np.float64)
    x[3, 1] = value
    bad = tmp_path / "bad.npy"
    np.save(bad, x)
    out = tmp_path / "o.npz"
    assert_one_line_error(run(cmd, net[0], "--input", bad, "-o", out), "'input'", fragment, "(3, 1)")
    assert not out.exists()


def test_complex_inputs_are_refused(net, tmp_path):
    bad = tmp_path / "c.npy"
    np.save(bad, np.load(net[1]).astype(np.complex128))
    assert_one_line_error(run("simulate", net[0], "--input", bad), "complex")


@pytest.mark.parametrize("field, value, fragment", [
    ("weight", np.nan, "weight holds 1 NaN"), ("weight", np.inf, "weight holds 1 infinite"),
    ("tau", 0.0, "tau = 0 at index (2,) is not positive"), ("tau", -1e-3, "is not positive"),
])
def test_bad_parameter_values_in_a_nir_file_name_the_node(net, tmp_path, field, value, fragment):
    g = small_graph()
    node = "fc1" if field == "weight" else "lif0"
    arr = getattr(g.nodes[node], field).copy()
    arr[(0, 2) if arr.ndim == 2 else 2] = value
    setattr(g.nodes[node], field, arr)
    path = tmp_path / "bad.nir"
    write(g, path)
    for cmd in ("simulate", "lava", "compile", "inspect"):
        args = {"simulate": ["--input", net[1]], "lava": ["--input", net[1]], "compile": ["-o", tmp_path / "b"],
                "inspect": []}[cmd]
        assert_one_line_error(run(cmd, path, *args), "bad.nir", f"node '{node}'", fragment)
    assert not (tmp_path / "b").exists()


def test_nan_weight_in_a_checkpoint_names_the_key(tmp_path, examples_dir, checkpoint_error):
    obj = torch.load(examples_dir / "checkpoints" / "spikerwkv-shakespeare.pt", weights_only=True)
    key = next(k for k, v in obj["state_dict"].items() if v.is_floating_point() and v.ndim == 2)
    obj["state_dict"][key][0, 0] = float("nan")
    checkpoint_error(tmp_path / "nan.pt", obj, f"state_dict.{key}", "NaN or infinite")


def test_fixed_point_says_what_it_clipped(net, tmp_path):
    x = np.random.default_rng(3).uniform(-2.0, 2.0, (60, 6))
    path = tmp_path / "wide.npy"
    np.save(path, x)
    expected = int(np.count_nonzero(np.abs(np.rint(x * 127)) > 127))
    result = run("simulate", net[0], "--input", path, "--fixed-point")
    assert result.exit_code == 0
    assert f"warning: Input 'input': {expected} of 360 values lie outside the fixed-point input range +-1" \
        in result.stderr
    wide = run("simulate", net[0], "--input", path, "--fixed-point", "--input-range", 2.0)
    assert wide.exit_code == 0 and "warning" not in wide.stderr


def test_an_outlier_weight_that_zeroes_its_layer_is_reported(net, tmp_path):
    g = small_graph()
    w = g.nodes["fc0"].weight.copy()
    w[0, 0] = 1e30
    g.nodes["fc0"].weight = w
    path = tmp_path / "outlier.nir"
    write(g, path)
    zeroed = int(np.count_nonzero(w)) - 1  # every weight but the outlier rounds to 0 at 8 bits
    for cmd, args in (("compile", ["-o", tmp_path / "b"]), ("simulate", ["--input", net[1], "--fixed-point"])):
        result = run(cmd, path, *args)
        assert result.exit_code == 0, result.output
        assert f"layer 'fc0': {zeroed} of {zeroed + 1} non-zero weights round to 0 in 8-bit fixed point" \
            in result.stderr


# -- 4. tracebacks ----------------------------------------------------------------------------------------------
def test_a_graph_without_input_gives_one_line(net, tmp_path):
    g = Graph(metadata={"dt": 1e-4})
    g.add_node("fc", nir.Affine(weight=np.ones((3, 6)), bias=np.zeros(3)))
    g.add_node("out", nir.Output(output_type={"output": np.array([3])}))
    g.connect("fc", "out")
    path = tmp_path / "noinput.nir"
    write(g, path)
    for cmd in ("simulate", "lava"):
        assert_one_line_error(run(cmd, path, "--input", net[1]), "noinput.nir", "no Input node")


# -- 5. messages ------------------------------------------------------------------------------------------------
def test_output_folder_is_checked_before_the_run(net, tmp_path):
    out = tmp_path / "missing" / "out.npz"
    result = run("simulate", net[0], "--input", net[1], "-o", out)
    assert_one_line_error(result, "missing", "does not exist")
    assert "activity over" not in result.stdout  # refused before simulating


def test_write_errors_name_the_users_path_not_a_temporary_file(net, tmp_path):
    blocker = tmp_path / "out.npz"
    blocker.mkdir()  # a directory where the output file should go
    result = run("simulate", net[0], "--input", net[1], "-o", blocker)
    assert_one_line_error(result, "out.npz", "is a directory")
    from spikecc.files import atomic_write_bytes

    target = tmp_path / "ro" / "x.bin"
    target.parent.mkdir()
    (target.parent / f".{target.name}.tmp-{os.getpid()}").mkdir()  # the temporary name is taken: write fails
    with pytest.raises(Exception) as info:
        atomic_write_bytes(target, b"data")
    assert str(target) in str(info.value) and ".tmp-" not in str(info.value)


def test_truncated_checkpoint_message_keeps_torchs_whole_first_line(tmp_path, examples_dir):
    bad = tmp_path / "cut.pt"
    bad.write_bytes((examples_dir / "checkpoints" / "spikelm-shakespeare.pt").read_bytes()[:3000])
    with pytest.raises(Exception) as torch_error:
        torch.load(bad, weights_only=True)
    first = [ln.strip() for ln in str(torch_error.value).splitlines() if ln.strip()][0]
    result = run("generate", bad, "--prompt", "a")
    assert_one_line_error(result, "cut.pt", first)


# -- 7. smaller things ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens", ["0", "-3"])
def test_generate_refuses_no_or_negative_tokens(examples_dir, tokens):
    result = run("generate", examples_dir / "checkpoints" / "spikegpt-shakespeare.pt", "--prompt", "a",
                 "--tokens", tokens)
    assert_one_line_error(result, "--tokens", tokens)


def test_fractional_token_ids_are_refused(tmp_path, examples_dir):
    nir_path = tmp_path / "lm.nir"
    assert run("export", examples_dir / "checkpoints" / "spikegpt-shakespeare.pt", "-o", nir_path).exit_code == 0
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([[3.0], [2.5], [4.0]]))
    assert_one_line_error(run("simulate", nir_path, "--input", ids), "node 'emb'", "2.5", "whole number")
    np.save(ids, np.array([[3.0], [999.0]]))
    assert_one_line_error(run("simulate", nir_path, "--input", ids), "node 'emb'", "999", "outside the vocabulary")


def test_build_directories_and_outputs_follow_the_umask(net, tmp_path):
    old = os.umask(0o022)
    try:
        build, out = tmp_path / "build", tmp_path / "o.npz"
        assert run("compile", net[0], "-o", build).exit_code == 0
        assert run("simulate", net[0], "--input", net[1], "-o", out).exit_code == 0
    finally:
        os.umask(old)
    for d in (build, build / "lava"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, d
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE((build / "manifest.json").stat().st_mode) == 0o644


def test_lowered_build_reads_back_with_its_input_rule(net, tmp_path):
    build = tmp_path / "build"
    assert run("compile", net[0], "-o", build, "--spike-inputs").exit_code == 0
    g = read(build / "lowered.nir")
    assert g.annotations["input"]["signal"]["kind"] == "binary"
