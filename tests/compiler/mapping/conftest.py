"""Fixtures for the mapping tests: small Loihi-form graphs built in code, user target profiles, and builds of the
shipped language models compiled by `spikecc compile`."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import nir
import numpy as np
import pytest

from spikecc.ir import Graph
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF


def lif(n: int) -> LoihiLIF:
    ones = np.ones(n)
    return LoihiLIF(du=ones, dv=0.5 * ones, vth=ones, bias_mant=0 * ones, bias_exp=0 * ones)


@pytest.fixture
def loihi_chain() -> Callable[..., Graph]:
    """build(sizes, density=1.0, input_bits=8, seed=0): Input(sizes[0]) -> [LoihiDense -> LoihiLIF] per later
    size -> Output; the first synapses take graded input (input_bits), the rest binary spikes. Weights are
    random, with the given share of non-zeros; layer i is named `dense{i}` / `lif{i}`."""

    def build(sizes: list[int], density: float = 1.0, input_bits: int = 8, seed: int = 0) -> Graph:
        rng = np.random.default_rng(seed)
        g = Graph(metadata={"dt": 1e-4})
        g.add_node("input", nir.Input(input_type={"input": np.array([sizes[0]])}))
        g.annotate("input", signal={"kind": "graded", "bits": input_bits, "scale": 1.0, "amplitude": 1.0})
        src = "input"
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = rng.integers(1, 100, size=(n_out, n_in)) * rng.choice([-1, 1], size=(n_out, n_in))
            if density < 1.0:
                w = w * (rng.random((n_out, n_in)) < density)
            g.add_node(f"dense{i}", LoihiDense(weight=w, num_message_bits=input_bits if i == 0 else 0))
            g.connect(src, f"dense{i}")
            g.add_node(f"lif{i}", lif(n_out))
            g.connect(f"dense{i}", f"lif{i}")
            src = f"lif{i}"
        g.add_node("output", nir.Output(output_type={"output": np.array([sizes[-1]])}))
        g.connect(src, "output")
        return g

    return build


@pytest.fixture
def profile(tmp_path: Path) -> Callable[..., Path]:
    """profile(name, base="loihi2", **{"core.neurons": 256, ...}): a user profile file changing those figures."""

    def write(name: str, base: str = "loihi2", **figures: float) -> Path:
        lines = ["[target]", f'name = "{name}"', f'base = "{base}"']
        for key, value in figures.items():
            lines += [f"[{key}]", f"value = {value}"]
        path = tmp_path / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


# a short calibration text keeps each compile to seconds (the default is 256 characters of held-out text)
CALIBRATION = "First Citizen:\nBefore we proceed any further, hear me speak."


@pytest.fixture(scope="session")
def lm_build(tmp_path_factory, examples_dir) -> Callable[[str], Path]:
    """lm_build(name): the build directory `spikecc compile examples/checkpoints/{name}-shakespeare.pt` writes
    (with CALIBRATION as its calibration text), compiled once per test run; pytest-xdist workers share it."""
    from click.testing import CliRunner

    from spikecc.cli import main

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "lm-builds"
    root.mkdir(exist_ok=True)

    def get(name: str) -> Path:
        out = root / name
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one worker compiles, the others wait and read it
            if not (out / "manifest.json").exists():
                text = root / "calibration.txt"
                text.write_text(CALIBRATION)
                ckpt = examples_dir / "checkpoints" / f"{name}-shakespeare.pt"
                r = CliRunner().invoke(main, ["compile", str(ckpt), "-o", str(out), "--calibration-text", str(text)],
                                       catch_exceptions=False)
                assert r.exit_code == 0, r.output
        return out

    return get


@pytest.fixture(scope="session")
def lm_lowered(lm_build) -> Callable[[str], tuple[Graph, dict[str, np.ndarray]]]:
    """lm_lowered(name): a shipped model's compiled graph (lowered.nir) and its measured activity (activity.npz)."""
    from spikecc.estimate import load_activity, read_build

    def get(name: str) -> tuple[Graph, dict[str, np.ndarray]]:
        build = lm_build(name)
        return read_build(build), load_activity(build / "activity.npz")

    return get
