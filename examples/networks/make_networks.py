"""Build the example snntorch networks, export them with snntorch's own exporter and write them with nir.write.

    .venv/bin/python examples/networks/make_networks.py [OUT_DIR]

writes, for each network NAME in snntorch_nets.EXAMPLES, `NAME.nir` and the matching input spike train
`NAME.input.npy` (float32, shaped (steps, *input shape)), runnable as

    spikecc simulate examples/networks/NAME.nir --input examples/networks/NAME.input.npy

Everything is seeded, so running the script again reproduces the same weights and inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nir
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import snntorch_nets  # noqa: E402  (beside this script, not an installed package)


def main(out_dir: Path = HERE) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (build, shape, _) in snntorch_nets.EXAMPLES.items():
        graph = snntorch_nets.export(build(), shape)
        path = out_dir / f"{name}.nir"
        nir.write(path, graph)
        x = snntorch_nets.example_input(name)
        np.save(out_dir / f"{name}.input.npy", x)
        written += [path, out_dir / f"{name}.input.npy"]
        print(f"{path.name}: {len(graph.nodes)} nodes, input {x.shape} ({x.mean():.2f} spikes per entry per step)")
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
