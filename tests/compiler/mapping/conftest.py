"""Fixtures for the mapping tests: small Loihi-form graphs built in code, and user target profiles."""

from __future__ import annotations

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
