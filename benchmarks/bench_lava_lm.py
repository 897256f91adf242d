"""Whole language models in Lava against spikecc's simulator, fixed point: for each shipped checkpoint (compiled
with default options), the wall time per generated token in Lava's Loihi 2 simulator (Loihi2SimCfg, fixed_pt, the
host partition in onnxruntime inside a Lava process) and in spikecc's CPU simulator, their ratio, and the OS
processes Lava started. Both generate the same tokens (checked here too). Medians over the generated tokens; Lava's
start-up (compiling the process graph, starting its processes) is printed apart.

    python benchmarks/bench_lava_lm.py [--tokens 16] [--models spikegpt,spikerwkv,spikelm]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "ROMEO:"
console = Console(highlight=False, width=150)


def simulator_token_times(graph, prompt_ids: list[int], n: int) -> tuple[list[int], list[float]]:
    from spikecc.backends.cpu.lm_runner import LMSimulator

    lm = LMSimulator(graph, mode="fixed")
    lm.sim.start()
    fed, out, times = list(prompt_ids), [], []
    for i in range(len(prompt_ids) + n):
        t = time.perf_counter()
        logits = lm.feed(fed[i])
        times.append(time.perf_counter() - t)
        if i >= len(prompt_ids) - 1 and len(out) < n:
            out.append(int(np.argmax(logits)))
            fed.append(out[-1])
    return out, times[len(prompt_ids):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--models", default="spikegpt,spikerwkv,spikelm")
    args = ap.parse_args()
    from spikecc.driver import lm_build_graph
    from spikecc.lm_build import compile_lm
    from spikecc.lm_lava import lava_generate

    table = Table(title=f"fixed point, {args.tokens} tokens after {PROMPT!r}: time per generated token (median)")
    for col in ("model", "Lava steps/token", "Lava s/token", "spikecc s/token", "Lava / spikecc", "OS processes",
                "Lava start-up s", "same tokens"):
        table.add_column(col, justify="left" if col == "model" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            build = Path(tmp) / name
            compile_lm(ROOT / "examples" / "checkpoints" / f"{name}-shakespeare.pt", build)
            graph = lm_build_graph(build, fixed_point=True)
            gen = lava_generate(graph, PROMPT, args.tokens, "fixed")
            res = gen.result
            sim_tokens, sim_times = simulator_token_times(graph, gen.prompt_ids, args.tokens)
            lava_s = float(np.median(res.token_s[len(gen.prompt_ids):]))
            sim_s = float(np.median(sim_times))
            steps = res.period * int(graph.metadata.get("substeps", 1))
            table.add_row(name, str(steps), f"{lava_s:.3f}", f"{sim_s:.4f}", f"{lava_s / sim_s:.0f}x",
                          str(res.processes), f"{res.startup_s:.1f}", "yes" if sim_tokens == res.tokens else "NO")
    console.print(table)


if __name__ == "__main__":
    main()
