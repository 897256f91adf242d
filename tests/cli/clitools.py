"""Helpers shared by the CLI tests (tests/cli is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nir
import numpy as np
from click.testing import CliRunner

from spikecc.cli import main
from spikecc.ir import Graph, write


def small_graph(seed: int = 0) -> Graph:
    """Input(6) -> Affine -> LIF(10) -> Affine -> LIF(3) -> Output, snntorch-style parameters."""
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": 1e-4})
    g.add_node("input", nir.Input(input_type={"input": np.array([6])}))
    prev, size = "input", 6
    for i, n in enumerate((10, 3)):
        g.add_node(f"fc{i}", nir.Affine(weight=rng.normal(0, 0.8, (n, size)), bias=np.zeros(n)))
        tau = 1e-4 / (1 - 0.85)
        g.add_node(f"lif{i}", nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / 1e-4), v_leak=np.zeros(n),
                                      v_threshold=np.ones(n), v_reset=np.zeros(n)))
        g.connect(prev, f"fc{i}")
        g.connect(f"fc{i}", f"lif{i}")
        prev, size = f"lif{i}", n
    g.add_node("output", nir.Output(output_type={"output": np.array([3])}))
    g.connect(prev, "output")
    return g


def write_net(tmp_path: Path) -> tuple[Path, Path]:
    """small_graph() as net.nir and a 120-step 0/1 input x.npy in `tmp_path`."""
    path = tmp_path / "net.nir"
    write(small_graph(), path)
    x = (np.random.default_rng(1).random((120, 6)) < 0.4).astype(np.float32)
    inp = tmp_path / "x.npy"
    np.save(inp, x)
    return path, inp


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if os.environ.get("SPIKECC_CATALOGUE"):  # the bad-input catalogue: one line per command run by a test
        _catalogue(os.environ["SPIKECC_CATALOGUE"], str(args[0]), result)
    return result


def _catalogue(path: str, command: str, result) -> None:
    """Append what a command did: a one-line error, a traceback, a warning, or a plain success."""
    err = result.stderr.strip()
    if "Traceback" in result.output + result.stderr:
        outcome = "traceback"
    elif result.exit_code != 0:
        outcome = "one-line error" if err.startswith("error: ") and len(err.splitlines()) == 1 else "other failure"
    else:
        outcome = "warning" if "warning" in err.lower() else "accepted"
    line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "command": command, "outcome": outcome,
            "message": err.splitlines()[-1][:200] if err else ""}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output + result.stderr
    for f in fragments:
        assert f in err, (f, err)
