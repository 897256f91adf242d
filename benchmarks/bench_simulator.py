"""spikecc's CPU simulator vs Lava's Loihi 2 simulator on the same lowered networks, in one run.

Networks (random, fixed seeds): Dense 512x512 + LIF, and a 10-layer chain of Dense 512x512 + LIF, fed a
Poisson spike train (5% per input per step), 1,000 steps. Each network is lowered with `lower_for_loihi`
(and quantized for the fixed-point rows); both backends run the very same graph, and the benchmark checks
that the output spikes are identical before it reports any speed.

Prints, per network and mode: median wall time over the repeats, steps/s for both, the ratio, firing rate,
and synaptic events per second (synaptic operations counted by spikecc's simulator / its wall time).
Target (issue 2): spikecc >= 50x Lava on the 10-layer chain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import nir
import numpy as np
from rich.console import Console
from rich.table import Table

import spikecc  # noqa: F401  (Lava's Python 3.11 fix)
from spikecc.backends.cpu import Simulator
from spikecc.backends.lava import run_lava
from spikecc.driver import prepare_run
from spikecc.ir import Graph

N = 512


def chain(layers: int, seed: int = 0) -> Graph:
    """Input(512) -> [Affine 512x512 -> LIF] x layers -> Output, weights scaled for a few % firing."""
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": 1e-4})
    g.add_node("in", nir.Input(input_type={"input": np.array([N])}))
    prev = "in"
    for i in range(layers):
        # Gain chosen so each layer fires at a few percent per step, typical of trained SNNs.
        w = rng.normal(0.0, 1.0, size=(N, N)) * (0.45 / np.sqrt(N * 0.05))
        g.add_node(f"fc{i}", nir.Affine(weight=w, bias=np.zeros(N)))
        beta = 0.9
        tau = 1e-4 / (1 - beta)
        g.add_node(f"lif{i}", nir.LIF(tau=np.full(N, tau), r=np.full(N, tau / 1e-4), v_leak=np.zeros(N),
                                      v_threshold=np.ones(N), v_reset=np.zeros(N)))
        g.connect(prev, f"fc{i}")
        g.connect(f"fc{i}", f"lif{i}")
        prev = f"lif{i}"
    g.add_node("out", nir.Output(output_type={"output": np.array([N])}))
    g.connect(prev, "out")
    return g


def measure(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5, help="spikecc repeats (median reported)")
    ap.add_argument("--lava-repeats", type=int, default=3, help="Lava repeats (median reported)")
    args = ap.parse_args(argv)

    console = Console(width=None if Console().is_terminal else 150)
    rng = np.random.default_rng(1)
    x = (rng.random((args.steps, N)) < 0.05).astype(np.float64)
    table = Table(title=f"spikecc simulator vs Lava Loihi2SimCfg, {args.steps} steps (medians)")
    for col in ("network", "mode", "spikecc steps/s", "Lava steps/s", "ratio", "identical spikes",
                "firing rate", "synaptic events/s"):
        table.add_column(col, justify="left" if col in ("network", "mode") else "right")
    ok = True
    for label, layers in (("Dense 512x512 + LIF", 1), ("10-layer chain", 10)):
        graph = chain(layers)
        for fixed in (False, True):
            lowered, xin = prepare_run(graph, x, fixed_point=fixed)
            mode = "fixed" if fixed else "float"
            sim = Simulator(lowered, mode=mode)
            t_cpu, res = measure(lambda s=sim, xi=xin: s.run(xi), args.repeats)
            t_lava, lres = measure(lambda g=lowered, m=mode, xi=xin: run_lava(g, xi, steps=args.steps, mode=m),
                                   args.lava_repeats)
            same = bool(np.array_equal(res.outputs["out"], lres.outputs["out"]))
            ok &= same
            lifs = [n for n in lowered.nodes if res.counts[n].spiking and n not in ("in", "out")]
            rate = sum(res.counts[n].events for n in lifs) / (len(lifs) * N * args.steps)
            synops = res.total("synops")
            table.add_row(label, "fixed_pt" if fixed else "floating_pt", f"{args.steps / t_cpu:,.0f}",
                          f"{args.steps / t_lava:,.1f}", f"{t_lava / t_cpu:,.1f}x", "yes" if same else "NO",
                          f"{rate:.3f}", f"{synops / t_cpu:,.3g}")
    console.print(table)
    console.print("ratio = Lava wall time / spikecc wall time on the same lowered graph and input")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
