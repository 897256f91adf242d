"""The CLI on NIR files from other tools: --dt on simulate, lava, compile and inspect; one-line warnings and
errors for batch axes, unstable time constants and silent layers."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from spikecc.cli import main
from spikecc.ir import Graph, write


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def chain(tau: float, readout: bool = False, in_shape=(3,)) -> Graph:
    """in -> Affine -> LIF (or LI) of 4 -> out; tau in seconds, r = 1, threshold 1."""
    n = 4
    g = Graph()
    g.add_node("in", nir.Input(input_type={"input": np.array(in_shape)}))
    g.add_node("w", nir.Affine(weight=np.full((n, int(np.prod(in_shape))), 0.8), bias=np.zeros(n)))
    neuron = (nir.LI(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n)) if readout else
              nir.LIF(tau=np.full(n, tau), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                      v_reset=np.zeros(n)))
    g.add_node("neuron", neuron)
    g.add_node("out", nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "w"), ("w", "neuron"), ("neuron", "out")]:
        g.connect(a, b)
    return g


@pytest.fixture
def slow_net(tmp_path: Path) -> tuple[Path, Path]:
    """A LIF with tau = 5 s, as exported by a tool whose step is 1 s: silent at dt = 1e-4, active at dt = 1."""
    write(chain(5.0), tmp_path / "slow.nir")
    np.save(tmp_path / "x.npy", np.ones((60, 3), dtype=np.float32))
    return tmp_path / "slow.nir", tmp_path / "x.npy"


def lines(text: str, prefix: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


def test_simulate_warns_about_a_silent_layer_and_dt_fixes_it(slow_net):
    path, x = slow_net
    res = run("simulate", path, "--input", x)
    assert res.exit_code == 0
    assert lines(res.stderr, "warning: ") == [
        "warning: node 'neuron' (LIF) never fired in 60 steps (dt = 0.0001 s); if the file was exported for another "
        "time step, pass it with --dt"]
    assert "60 steps, dt=0.0001 s (default; NIR files do not store dt: set it with --dt)" in res.stdout
    res = run("simulate", path, "--input", x, "--dt", "1")
    assert res.exit_code == 0 and "warning" not in res.stderr
    assert "60 steps, dt=1 s\n" in res.stdout


def test_inspect_shows_dt(slow_net):
    path, _ = slow_net
    assert "outputs: out; dt=0.0001 s (default; NIR files do not store dt: set it with --dt)\n" in \
        run("inspect", path).stdout
    assert "outputs: out; dt=0.25 s\n" in run("inspect", path, "--dt", "0.25").stdout


@pytest.mark.parametrize("dt", ["0", "-1", "nan", "inf"])
def test_bad_dt_is_a_one_line_error(slow_net, dt):
    path, x = slow_net
    for args in (("simulate", path, "--input", x), ("inspect", path)):
        res = run(*args, "--dt", dt)
        assert res.exit_code == 1
        assert res.stderr.strip().splitlines() == [
            f"error: dt = {float(dt)!r}: the time step must be a positive number of seconds (e.g. 1e-4)"]


def test_compile_records_dt_in_the_manifest(slow_net, tmp_path):
    path, _ = slow_net
    assert run("compile", path, "-o", tmp_path / "b1", "--float", "--dt", "0.5").exit_code == 0
    assert json.loads((tmp_path / "b1" / "manifest.json").read_text())["dt"] == 0.5
    assert run("compile", path, "-o", tmp_path / "b2", "--float").exit_code == 0
    assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["dt"] == 1e-4


def test_lava_takes_dt(slow_net):
    path, x = slow_net
    res = run("lava", path, "--input", x, "--steps", "8", "--dt", "1")
    assert res.exit_code == 0, res.output
    assert "8 steps, dt=1 s" in res.stdout


def test_unstable_readout_warns_then_stops_in_one_line(tmp_path):
    """LI with dt/tau = 3 at the default dt: a warning at load, then an error naming node and step."""
    write(chain(1e-4 / 3, readout=True), tmp_path / "u.nir")
    np.save(tmp_path / "x.npy", np.ones((1100, 3)))
    res = run("simulate", tmp_path / "u.nir", "--input", tmp_path / "x.npy")
    assert res.exit_code == 1 and "Traceback" not in res.output
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]  # (the progress bar leaves a blank line)
    assert len(err) == 2 and err[0].startswith("warning: ") and "node 'neuron' (LI): dt/tau = 3 >= 1" in err[0]
    assert err[1].startswith("error: node 'neuron' (LI): v became ") and " at step " in err[1]


def test_batch_axis_conv_file_simulates_and_inspect_says_so(tmp_path):
    """Input [1, 2, 5, 5] feeding a Conv2d (the file of issue 12: simulate used to fail with a bare ValueError)."""
    rng = np.random.default_rng(3)
    g = Graph()
    g.add_node("input", nir.Input(input_type={"input": np.array([1, 2, 5, 5])}))
    g.add_node("conv", nir.Conv2d(input_shape=(5, 5), weight=rng.normal(0, 1, (3, 2, 3, 3)), stride=1, padding=1,
                                  dilation=1, groups=1, bias=np.zeros(3)))
    n = (3, 5, 5)
    g.add_node("lif", nir.LIF(tau=np.full(n, 2e-4), r=np.full(n, 2.0), v_leak=np.zeros(n),
                              v_threshold=np.ones(n), v_reset=np.zeros(n)))
    g.add_node("output", nir.Output(output_type={"output": np.array(n)}))
    for a, b in [("input", "conv"), ("conv", "lif"), ("lif", "output")]:
        g.connect(a, b)
    write(g, tmp_path / "b.nir")
    np.save(tmp_path / "x.npy", (rng.random((20, 1, 2, 5, 5)) < 0.5).astype(np.float32))
    res = run("simulate", tmp_path / "b.nir", "--input", tmp_path / "x.npy", "-o", tmp_path / "out.npz")
    assert res.exit_code == 0 and res.stderr.strip() == ""
    assert np.load(tmp_path / "out.npz")["output"].shape == (20, 3, 5, 5)
    notes = lines(run("inspect", tmp_path / "b.nir").stdout, "note: ")
    assert notes == ["note: node 'conv' (Conv2d): input from 'input' has shape (1, 2, 5, 5); its leading axis of "
                     "size 1 is a batch axis (NIR shapes have none), skipped: reads (2, 5, 5)"]
