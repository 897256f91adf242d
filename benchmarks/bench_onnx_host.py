"""The host partition in onnxruntime: time per token and agreement with spikecc's simulator, in one run.

For each shipped checkpoint, compiled through the LM passes (float form) and quantized (fixed form, calibrated on
the prompt): a greedy generation of N tokens with the host stages in onnxruntime (spikecc.backends.onnx.HostRunner)
and the neuro-core phases in spikecc's CPU simulator, in lockstep with the whole-graph simulator. Prints per model and
form: the host stages per graph step, onnxruntime's time per token for all host stages (median over tokens), the
whole-graph simulator's time per token (host and cores), the largest logit difference and whether every token and
(fixed form) every integer payload agree. One thread everywhere; figures are medians, noisy on a shared machine.

    python benchmarks/bench_onnx_host.py [--tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console(highlight=False, width=140)


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    with threadpool_limits(1):
        rows = [row for family in ("spikegpt", "spikelm", "spikerwkv", "rwkv6") for row in measure(family, args.tokens)]
    table = Table(title=f"host partition in onnxruntime vs spikecc's simulator ({args.tokens} generated tokens)")
    for col in ("model", "form", "stages/step", "steps/token", "onnx host ms/token", "simulator ms/token",
                "max |logit diff|", "tokens agree", "payloads identical"):
        table.add_column(col, justify="right" if col not in ("model", "form") else "left")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    console.print(table)


def measure(family: str, n_tokens: int) -> list[tuple]:
    from spikecc.backends.cpu.lm_runner import graph_tokenizer
    from spikecc.backends.cpu.simulator import Simulator
    from spikecc.backends.onnx import HostRunner, SimulatorCore, export_host_program
    from spikecc.compiler.frontends import load_lm
    from spikecc.compiler.passes.quantize_lm import quantize_lm
    from spikecc.compiler.pipeline import lm_passes, run_passes
    from spikecc.ir.neurocore_ops import HostToCore

    lm = load_lm(ROOT / "examples" / "checkpoints" / f"{family}-shakespeare.pt")
    g = run_passes(lm.graph, lm_passes())
    ids = graph_tokenizer(g).encode("ROMEO:\nWhat say you")
    (inp,), (out,) = g.inputs(), g.outputs()
    substeps = int(g.metadata.get("substeps", 1))
    to_core = [n for n, op in g.nodes.items() if isinstance(op, HostToCore)]
    sim = Simulator(g)
    sim.start()
    top = dict.fromkeys(to_core, 0.0)
    for tok in ids:
        for _ in range(substeps):
            cur = sim.step({inp: np.array([float(tok)])})
            for n in to_core:
                top[n] = max(top[n], float(np.abs(cur[n]).max()))
    q = run_passes(g, [("quantize", lambda g, a: quantize_lm(g, a, calibration=top))])
    rows = []
    for form, graph in (("float", g), ("fixed", q)):
        program = export_host_program(graph, form)
        runner, core, ref = HostRunner(program), SimulatorCore(graph, form), Simulator(graph, mode=form)
        ref.start()
        host_ms, sim_ms, diff, agree, identical = [], [], 0.0, True, True
        feed = list(ids)
        for i in range(len(ids) + n_tokens - 1):
            tok = np.array([float(feed[i])])
            host = simulated = 0.0
            for _ in range(substeps):
                t0 = time.perf_counter()
                a = ref.step({inp: tok})
                simulated += time.perf_counter() - t0
                values = {inp: tok}
                for k, stage in enumerate(program.stages):  # run_step, with the host stages timed alone
                    t0 = time.perf_counter()
                    values.update(runner.step_stage(k, {t.name: values[t.name] for t in stage.inputs
                                                        if t.kind != "state"}))
                    host += time.perf_counter() - t0
                    if k < len(program.core_phases):
                        phase = program.core_phases[k]
                        values.update(core(k, {t.name: values[t.name] for t in phase.needs}))
                for k in range(len(program.stages), len(program.core_phases)):
                    values.update(core(k, {t.name: values[t.name] for t in program.core_phases[k].needs}))
                identical &= all(np.array_equal(a[n], values[n]) for n in to_core)
            diff = max(diff, float(np.abs(a[out] - values[out]).max()))
            host_ms.append(1e3 * host)
            sim_ms.append(1e3 * simulated)
            if i >= len(ids) - 1:
                agree &= int(np.argmax(a[out])) == int(np.argmax(values[out]))
                feed.append(int(np.argmax(values[out])))
        rows.append((family, form, len(program.stages), substeps, f"{statistics.median(host_ms):.2f}",
                     f"{statistics.median(sim_ms):.2f}", f"{diff:.1e}", "yes" if agree else "NO",
                     ("yes" if identical else "NO") if form == "fixed" else "-"))
    return rows


if __name__ == "__main__":
    main()
