"""Does it fit on Loihi 2? Mapping figures, in one run.

Prints, against the loihi2 target profile:
1. cores used vs the lower bound, for the example NIR networks (compiled) and for a Loihi-form stand-in of the
   shipped language models' shape and of the published 216M SpikeGPT (spikecc.compiler.mapping.synthetic:
   SpikeGPT's neuro-core part with random weights, until the compiler lowers real checkpoints);
2. messages per step between chips, greedy placement vs the METIS partitioner, on the 216M shape with activity
   from a simulated 16-token prompt (spikecc's CPU simulator running the stand-in graph);
3. time and peak memory to build the 216M stand-in and map it (in a fresh process each repeat; medians), and
   the map time at 6, 12 and 18 blocks (nothing grows faster than the cores);
4. the papers' energy model: SpikeGPT's Table 1 from its inputs, and the shipped checkpoints at measured rates.

Targets (issue 8): cores within 10% of the lower bound for dense layers; METIS below greedy between chips;
216M mapped in < 5 min and < 8 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console(highlight=False, width=140)

# shapes of the shipped example checkpoints (their cards in examples/checkpoints/*.md): L, d, d_ffn, vocab
SHIPPED = {"spikegpt-shakespeare": (2, 128, 512, 84), "spikelm-shakespeare": (2, 128, 512, 84),
           "spikerwkv-shakespeare": (2, 128, 512, 84)}


def peak_gb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space; getrusage's
    ru_maxrss would carry over the peak of the (forked) parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def map_child(n_layer: int, activity: str | None, placement: str) -> dict:
    """Build the stand-in graph and map it in this process; time and peak memory (the child's whole life)."""
    from spikecc.compiler.mapping import map_graph
    from spikecc.compiler.mapping.synthetic import SPIKEGPT_216M, spikegpt_graph

    t0 = time.perf_counter()
    g = spikegpt_graph(**dict(SPIKEGPT_216M, n_layer=n_layer))
    t1 = time.perf_counter()
    act = dict(np.load(activity)) if activity else None
    m = map_graph(g, "loihi2", activity=act, placement=placement)
    t2 = time.perf_counter()
    return {"build_s": t1 - t0, "map_s": t2 - t1, "peak_gb": peak_gb(),
            "cores": m.n_cores, "lower_bound": m.lower_bound_cores, "chips": m.chips,
            "alternatives": m.placement.alternatives, "violations": len(m.violations)}


def in_child(n_layer: int, activity: str | None, placement: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n_layer), "--placement", placement]
    if activity:
        cmd += ["--activity", activity]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cores_table() -> None:
    from spikecc.compiler.mapping import map_graph
    from spikecc.compiler.mapping.synthetic import spikegpt_graph
    from spikecc.compiler.pipeline import lower_for_target
    from spikecc.ir import read

    t = Table(title="cores used vs lower bound (loihi2)")
    for col in ("network", "cores", "lower bound", "over", "chips", "dense layers"):
        t.add_column(col, justify="left" if col == "network" else "right")
    for path in sorted((ROOT / "examples" / "networks").glob("*.nir")):
        m = map_graph(lower_for_target(read(path), fixed_point=True))
        t.add_row(f"{path.name} (compiled)", str(m.n_cores), str(m.lower_bound_cores),
                  f"{m.n_cores / m.lower_bound_cores - 1:+.1%}", str(m.chips), "mixed")
    for name, (L, d, f, v) in SHIPPED.items():
        m = map_graph(spikegpt_graph(n_layer=L, d=d, d_ffn=f, vocab=v), placement="greedy")
        t.add_row(f"{name} shape (stand-in L{L} d{d} ffn{f})", str(m.n_cores), str(m.lower_bound_cores),
                  f"{m.n_cores / m.lower_bound_cores - 1:+.1%}", str(m.chips), "all")
    console.print(t)


def simulate_216m(path: Path, tokens: int) -> dict:
    from spikecc.backends.cpu import Simulator
    from spikecc.compiler.mapping import activity_from_traces
    from spikecc.compiler.mapping.synthetic import SPIKEGPT_216M, neuron_nodes, spikegpt_graph

    t0 = time.perf_counter()
    g = spikegpt_graph(**SPIKEGPT_216M)
    prompt = (np.arange(tokens) * 7919 % SPIKEGPT_216M["vocab"]).reshape(tokens, 1)
    res = Simulator(g).run(prompt, record=neuron_nodes(g))
    act = activity_from_traces(res.traces)
    np.savez(path, **act)
    rates = np.array([v.mean() for v in act.values()])
    return {"seconds": time.perf_counter() - t0, "mean_rate": float(rates.mean()), "min": float(rates.min()),
            "max": float(rates.max())}


def energy_table() -> None:
    from spikecc.compiler.energy import EnergyTable, count_graph, energy_table, spikegpt_table1
    from spikecc.compiler.frontends import load_lm
    from spikecc.estimate import measure_lm

    t1 = EnergyTable(spikegpt_table1(3072, 512, 0.15), e_mac=4.5, e_ac=0.9)
    console.print(f"SpikeGPT Table 1 (T 3072, d 512, rate 0.15, E_MAC 4.5, E_AC 0.9 pJ), per block: "
                  f"ANN {t1.ann_total_pj:.4e} pJ, SNN {t1.snn_total_pj:.4e} pJ, {t1.ratio:.1f}x "
                  "(paper: 3.29e10 vs 1.02e9, 32.2x from rounded rows)")
    t = Table(title="papers' energy model at measured firing rates, 64 tokens of held-out text, fp32")
    for col in ("checkpoint", "ANN mJ", "SNN mJ", "ANN/SNN", "spike-driven share of SNN ops"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right")
    for name in SHIPPED:
        g = load_lm(ROOT / "examples" / "checkpoints" / f"{name}.pt").graph
        measured = measure_lm(g, 64)
        e = energy_table(count_graph(g, measured.synops, measured.tokens), "fp32", measured.tokens)
        acs = sum(r.snn_acs for r in e.rows)
        macs = sum(r.snn_macs for r in e.rows)
        t.add_row(name, f"{e.ann_total_pj / 1e9:.4f}", f"{e.snn_total_pj / 1e9:.4f}", f"{e.ratio:.2f}x",
                  f"{acs / max(1.0, acs + macs):.1%}")
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--activity", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--placement", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(map_child(args.child, args.activity, args.placement)))
        return

    cores_table()
    with tempfile.TemporaryDirectory() as tmp:
        act = Path(tmp) / "activity.npz"
        sim = simulate_216m(act, args.tokens)
        console.print(f"216M stand-in simulated for {args.tokens} tokens in {sim['seconds']:.0f} s: LIF firing rates "
                      f"{sim['min']:.3f}..{sim['max']:.3f} (mean {sim['mean_rate']:.3f})")
        runs = [in_child(18, str(act), "auto") for _ in range(args.repeats)]
        r = runs[0]
        alt = r["alternatives"]
        console.print(f"216M SpikeGPT shape (L18 d768 ffn3072 vocab 50277): {r['cores']:,} cores, lower bound "
                      f"{r['lower_bound']:,} ({r['cores'] / r['lower_bound'] - 1:+.1%}), {r['chips']} chips, "
                      f"{r['violations']} violations")
        console.print(f"messages per step between chips: greedy {alt['greedy']:,.1f}, METIS {alt['metis']:,.1f} "
                      f"({alt['greedy'] / max(alt['metis'], 1e-9):.1f}x fewer)")
        med = {k: statistics.median(x[k] for x in runs) for k in ("build_s", "map_s", "peak_gb")}
        all_maps = ", ".join(f"{x['map_s']:.1f}" for x in runs)
        console.print(f"build stand-in + map (greedy and METIS both), median of {len(runs)} fresh processes: "
                      f"build {med['build_s']:.1f} s, map {med['map_s']:.1f} s, peak memory {med['peak_gb']:.2f} GB "
                      f"(all runs: map {all_maps} s)")
    scale = Table(title="map time vs size (METIS placement, assumed activity; one fresh process each)")
    for col in ("blocks", "cores", "chips", "map s", "ms per core"):
        scale.add_column(col, justify="right")
    for L in (6, 12, 18):
        x = in_child(L, None, "metis")
        scale.add_row(str(L), f"{x['cores']:,}", str(x["chips"]), f"{x['map_s']:.1f}",
                      f"{1000 * x['map_s'] / x['cores']:.2f}")
    console.print(scale)
    energy_table()


if __name__ == "__main__":
    main()
