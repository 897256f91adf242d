"""`spikecc compile CHECKPOINT`: the build of a language model, deterministic, with its reports; generation from
the build; `--max-error`; bad checkpoints and graphs give one line naming the layer and leave no build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import assert_one_line_error, run

from spikecc.compiler.pipeline import lm_passes

LM_FILES = {"input.nir", "float.nir", "lowered.nir", "manifest.json", "quantization.json", "quantization.txt",
            "partition.json", "partition.txt", "activity.npz", "budget.json", "budget.txt", "budget.html"}


@pytest.fixture(scope="module")
def spikegpt_builds(tmp_path_factory, examples_dir) -> tuple[Path, Path, object]:
    tmp = tmp_path_factory.mktemp("lm")
    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    first = run("compile", ckpt, "-o", tmp / "a", "--calibration-tokens", 64)
    assert first.exit_code == 0, first.output
    assert run("compile", ckpt, "-o", tmp / "b", "--calibration-tokens", 64).exit_code == 0
    return tmp / "a", tmp / "b", first


def test_compile_prints_a_line_per_pass_and_writes_the_build(spikegpt_builds):
    build, _, result = spikegpt_builds
    for name, _ in lm_passes():
        assert f"{name}: " in result.stdout
    assert "quantize: " in result.stdout and "budget: " in result.stdout
    assert LM_FILES | {"lava"} <= {p.name for p in build.iterdir()}
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["kind"] == "language-model" and manifest["family"] == "spikegpt"
    assert manifest["lava"] == "lava/lava_lm.py" and (build / manifest["lava"]).is_file()
    assert manifest["options"] == {"polarity": "split", "levels": "auto", "message_bits": 12, "weight_bits": 8}
    assert manifest["passes"] == [name for name, _ in lm_passes()] + ["quantize"]
    assert manifest["calibration"]["tokens"] == 64
    assert manifest["model"]["embedding"] == "binary"  # recorded from the exported graph (the shipped model's)
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((build / rel).read_bytes()).hexdigest() == digest
    part = json.loads((build / "partition.json").read_text())
    # SpikeGPT's linears read LayerNorm outputs: graded messages into the cores, and the report says which
    assert any("att.key" in n for n in part["graded_input_layers"])
    assert part["neurocore"]["synops_per_token"] > 0 and part["host"]["ops_per_token"] > 0
    quant = json.loads((build / "quantization.json").read_text())
    assert quant["worst"]["sqnr_db"] > 10 and quant["spike_agreement"] > 0.9
    budget = json.loads((build / "budget.json").read_text())
    assert budget["cores"] >= budget["lower_bound_cores"] >= 1 and budget["violations"] == []


def test_two_compiles_of_the_same_checkpoint_are_byte_identical(spikegpt_builds):
    a, b, _ = spikegpt_builds
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_generate_from_the_build(spikegpt_builds, examples_dir):
    build = spikegpt_builds[0]
    ckpt = examples_dir / "checkpoints" / "spikegpt-shakespeare.pt"
    ref = run("generate", ckpt, "--prompt", "JULIET:", "--tokens", 40, "--reference")
    flt = run("generate", build, "--prompt", "JULIET:", "--tokens", 40)
    fixed = run("generate", build, "--prompt", "JULIET:", "--tokens", 40, "--fixed-point")
    assert ref.exit_code == flt.exit_code == fixed.exit_code == 0, (flt.output, fixed.output)
    assert flt.stdout == ref.stdout
    assert fixed.stdout.startswith("JULIET:") and len(fixed.stdout) == len(ref.stdout)
    assert_one_line_error(run("generate", build, "--prompt", "a", "--reference"), "--reference")


def test_max_error_refuses_naming_the_layer_and_writes_nothing(tmp_path, examples_dir):
    out = tmp_path / "build"
    result = run("compile", examples_dir / "checkpoints" / "spikerwkv-shakespeare.pt", "-o", out,
                 "--calibration-tokens", 32, "--max-error", 1e-9)
    assert_one_line_error(result, "layer '", "relative quantization error", "--max-error")
    assert not out.exists() and [p for p in tmp_path.iterdir()] == []


def _spikelm_ckpt(examples_dir: Path, tmp_path: Path, edit) -> Path:
    obj = torch.load(examples_dir / "checkpoints" / "spikelm-shakespeare.pt", weights_only=True)
    edit(obj["state_dict"])
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    return path


def _first(sd: dict, fragment: str) -> str:
    return next(k for k in sorted(sd) if fragment in k)


@pytest.mark.parametrize("edit, fragments", [
    (lambda sd: sd[_first(sd, "alpha")].fill_(float("nan")), ("alpha", "NaN or infinite")),
    (lambda sd: sd[_first(sd, "alpha")].fill_(float("inf")), ("alpha", "NaN or infinite")),
    (lambda sd: sd[_first(sd, "alpha")].fill_(-0.5), ("in_spike", "alpha", "> 0")),
    (lambda sd: sd[_first(sd, "fc1.weight")].__setitem__((0, 0), float("inf")), ("fc1.weight", "infinite")),
])
def test_bad_checkpoints_name_the_layer_and_leave_no_build(tmp_path, examples_dir, edit, fragments):
    path = _spikelm_ckpt(examples_dir, tmp_path, edit)
    out = tmp_path / "build"
    result = run("compile", path, "-o", out, "--calibration-tokens", 16)
    assert_one_line_error(result, "bad.pt", *fragments)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_a_weight_that_overflows_every_exponent_names_the_layer(tmp_path, examples_dir):
    """One huge weight in a layer with one state scale (SpikeGPT's LIF layers): every other weight of the layer
    rounds to 0, whole neurons lose their input; refused, naming the layer."""
    sd = torch.load(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt", weights_only=True)
    sd["blocks.0.att.output.weight"][0, 0] = 1e30
    path = tmp_path / "outlier.pt"
    torch.save(sd, path)
    (tmp_path / "outlier.vocab.json").write_bytes(
        (examples_dir / "checkpoints" / "spikegpt-shakespeare.vocab.json").read_bytes())
    out = tmp_path / "build"
    result = run("compile", path, "-o", out, "--calibration-tokens", 16)
    assert_one_line_error(result, "layer 'blocks.0.att.output'", "round to 0", "127 of 128 neurons")
    assert not out.exists()


def test_an_op_without_a_rule_names_the_node(tmp_path, examples_dir):
    """An extension op the simulator has no kernel for, in an exported LM graph: one line naming the node."""
    from dataclasses import dataclass

    from spikecc.compiler.frontends import load_lm
    from spikecc.ir import write
    from spikecc.ir.ops import ExtensionOp, register_op

    @register_op
    @dataclass(eq=False)
    class Mystery(ExtensionOp):
        """y = ?: an op nothing lowers."""

    g = load_lm(examples_dir / "checkpoints" / "spikegpt-shakespeare.pt").graph
    g.add_node("mystery", Mystery())
    (edge,) = [e for e in g.edges if e.dst == "ln_out"]
    g.edges.remove(edge)
    g.connect(edge.src, "mystery")
    g.connect("mystery", "ln_out")
    path = tmp_path / "lm.nir"
    write(g, path)
    out = tmp_path / "build"
    assert_one_line_error(run("compile", path, "-o", out, "--calibration-tokens", 8), "node 'mystery'", "Mystery")
    assert not out.exists()


def test_activity_of_the_build_is_what_the_calibration_run_measured(spikegpt_builds):
    build = spikegpt_builds[0]
    with np.load(build / "activity.npz") as act:
        rates = {k: act[k] for k in act.files}
    lifs = [k for k in rates if k.endswith("_lif")]
    assert lifs and all(0 < r.mean() < 1 for k, r in rates.items() if k in lifs)
