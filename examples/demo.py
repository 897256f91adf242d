"""`make demo`: compile a shipped example network, simulate it on the CPU in float and fixed point, run it
in Lava's Loihi 2 simulator in both modes, and print how well each pair agrees; then generate text from the
shipped spiking language models through spikecc's simulator and check it against the torch reference.

What should agree exactly, and why:
- CPU fixed point  vs Lava fixed_pt     : spikecc reproduces Lava's bit-accurate models, so 100%.
- CPU float (lowered) vs Lava floating_pt: the same float equations on both sides, so 100%.
- CPU float (NIR)  vs CPU float (lowered): the lowered graph runs one step later per synapse layer
  (Lava's Dense delay); after that shift they agree exactly, biases included: each neuron starts at the
  membrane value (v_init) from which its bias, acting alone until the first input arrives, reaches the
  NIR initial state just in time. 100% up to float rounding (a spike at a threshold to ~1e-15).
- CPU fixed vs CPU float (lowered)      : differs only by 8-bit weight quantization.

First, though, the reason spikecc exists: a shipped spiking language model (SpikeGPT) compiled for Loihi 2
with the spikecc CLI, its core budget, text generated inside Lava's Loihi 2 simulator (fixed_pt) next to spikecc's
fixed-point simulator, and `spikecc verify` across the reference, spikecc and Lava.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
NETWORK = HERE / "networks" / "ff_lif.nir"
INPUT = HERE / "networks" / "ff_lif.input.npy"
BUILD = Path("demo-build") / "ff_lif"
LM_CHECKPOINT = HERE / "checkpoints" / "spikegpt-shakespeare.pt"
LM_BUILD = Path("demo-build") / "spikegpt"
SPIKECC = Path(sys.executable).with_name("spikecc")  # the CLI of this environment


def spikecc(console: Console, *args: str, head: int = 60) -> subprocess.CompletedProcess:
    """Run one spikecc command as a user would, showing it and (the first `head` lines of) its output."""
    shown = " ".join(str(Path(a).relative_to(HERE.parent)) if a.startswith(str(HERE)) else a for a in args)
    console.print(f"[bold]$ spikecc {shown}[/bold]")
    done = subprocess.run([str(SPIKECC), *args], capture_output=True, text=True)
    lines = done.stdout.rstrip("\n").splitlines()
    if len(lines) > head:
        lines = lines[:head] + [f"... ({len(lines) - head} more lines)"]
    for text in (lines, done.stderr.rstrip("\n").splitlines()):
        if text:
            print("\n".join(text), flush=True)  # as the command printed it (its own width)
    return done


def language_model(console: Console) -> int:
    """Compile SpikeGPT for Loihi 2, show its budget, generate in Lava and verify every backend."""
    console.rule(f"a spiking language model on Loihi 2: {LM_CHECKPOINT.relative_to(HERE.parent)}")
    if spikecc(console, "compile", str(LM_CHECKPOINT), "-o", str(LM_BUILD)).returncode:
        return 1
    budget = spikecc(console, "budget", str(LM_BUILD), head=9)
    if budget.returncode:
        return 1
    prompt, tokens = "ROMEO:", "32"
    lava = spikecc(console, "lava", str(LM_BUILD), "--prompt", prompt, "--tokens", tokens, "--fixed-point")
    sim = spikecc(console, "generate", str(LM_BUILD), "--prompt", prompt, "--tokens", tokens, "--fixed-point")
    same = lava.returncode == sim.returncode == 0 and lava.stdout == sim.stdout
    console.print("Lava fixed_pt and spikecc's fixed-point simulator generate the same text: "
                  + ("yes" if same else "NO"))
    verify = spikecc(console, "verify", str(LM_BUILD), "--prompt", prompt, "--tokens", "8",
                     "--checkpoint", str(LM_CHECKPOINT))
    return 0 if same and verify.returncode == 0 else 1


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    same = int(np.sum(a == b))
    return f"{same}/{a.size} ({100.0 * same / max(1, a.size):.2f}%)"


def latency(graph, node: str) -> int:
    """Steps by which `node` lags the inputs: Loihi synapses (ops with an output delay) on the longest path
    from an Input, loops ignored."""
    from spikecc.ir.ops import output_delay

    order, delayed = graph.schedule()
    lag: dict[str, int] = {}
    for n in order:
        loop_back = [e for e in delayed if not output_delay(graph.nodes[e.src])]
        ins = [e for e in graph.in_edges(n) if e.src in lag and e not in loop_back]
        lag[n] = max((lag[e.src] + output_delay(graph.nodes[e.src]) for e in ins), default=0)
    return lag[node]


def main() -> int:
    import spikecc.ir as ir
    from spikecc.backends.cpu import simulate
    from spikecc.backends.lava import run_lava
    from spikecc.driver import compile_file, prepare_run

    console = Console(highlight=False)
    if not console.is_terminal:  # piped: the width the CLI prints at
        console = Console(highlight=False, width=120)
    if language_model(console):
        console.print("[red]the language model did not compile, run in Lava or verify[/red]")
        return 1
    console.rule(f"a NIR network: {NETWORK.relative_to(HERE.parent)}")
    x = np.load(INPUT)
    steps = x.shape[0]

    t0 = time.perf_counter()
    compile_file(NETWORK, BUILD, spike_inputs=True)
    console.print(f"compiled -> {BUILD}/ in {time.perf_counter() - t0:.2f} s: "
                  + ", ".join(sorted(p.name for p in BUILD.iterdir())))

    graph = ir.read(NETWORK)
    lowered_float, _ = prepare_run(graph, x, fixed_point=False, spike_inputs=True)
    lowered_fixed, xq = prepare_run(graph, x, fixed_point=True, spike_inputs=True)
    built = ir.read(BUILD / "lowered.nir")  # what `spikecc compile` wrote is what runs below
    assert {n: type(op).__name__ for n, op in built.nodes.items()} == \
        {n: type(op).__name__ for n, op in lowered_fixed.nodes.items()}
    out = graph.outputs()[0]

    from spikecc.backends.cpu import jit

    runs: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    notes: dict[str, str] = {}

    def timed(label, fn):
        loaded, compiled = jit.cache_events()
        t = time.perf_counter()
        runs[label] = fn()
        timings[label] = time.perf_counter() - t
        loaded, compiled = (a - b for a, b in zip(jit.cache_events(), (loaded, compiled)))
        if compiled:
            notes[label] = f"cold: compiles {compiled} loops (once after install)"
        elif loaded:
            notes[label] = f"cold: loads {loaded} compiled loops (once per process)"
        elif label.startswith("lava"):
            notes[label] = "Lava compile + process start (every run)"
        else:
            notes[label] = "steady state"

    timed("cpu float (NIR)", lambda: simulate(graph, x).outputs[out])
    timed("cpu float (lowered)", lambda: simulate(lowered_float, x).outputs[out])
    timed("cpu fixed", lambda: simulate(built, xq, mode="fixed").outputs[out])
    timed("lava floating_pt", lambda: run_lava(lowered_float, x, steps=steps, mode="float").outputs[out])
    timed("lava fixed_pt", lambda: run_lava(built, xq, steps=steps, mode="fixed").outputs[out])

    runs_table = Table(title=f"{steps} steps, output '{out}'")
    for col in ("run", "spikes", "wall time", "the time includes"):
        runs_table.add_column(col, justify="right" if col in ("spikes", "wall time") else "left")
    for label, arr in runs.items():
        runs_table.add_row(label, f"{int(np.count_nonzero(arr)):,}", f"{timings[label]:.3f} s", notes[label])
    console.print(runs_table)

    shift = latency(lowered_float, out)
    nir_shifted = np.concatenate([np.zeros_like(runs["cpu float (NIR)"][:shift]), runs["cpu float (NIR)"]])[:steps]
    pairs = [
        ("cpu fixed", runs["cpu fixed"], "lava fixed_pt", runs["lava fixed_pt"]),
        ("cpu float (lowered)", runs["cpu float (lowered)"], "lava floating_pt", runs["lava floating_pt"]),
        (f"cpu float (NIR) +{shift} steps", nir_shifted, "cpu float (lowered)", runs["cpu float (lowered)"]),
        ("cpu fixed", runs["cpu fixed"], "cpu float (lowered)", runs["cpu float (lowered)"]),
    ]
    table = Table(title="agreement (output spike trains, step by step)")
    for col in ("a", "b", "equal entries", "exact"):
        table.add_column(col)
    exact_needed = 0
    for i, (la, a, lb, b) in enumerate(pairs):
        exact = bool(np.array_equal(a, b))
        table.add_row(la, lb, agreement(a, b), "yes" if exact else "no")
        if i < 2 and not exact:
            exact_needed += 1
    console.print(table)
    if exact_needed:
        console.print("[red]spikecc and Lava disagree where they must agree exactly[/red]")
        return 1
    console.print("spikecc's simulator reproduces Lava in both modes exactly.")
    return generate_text(console)


def generate_text(console: Console) -> int:
    """Generate from the shipped spiking LM checkpoints through the CPU simulator, next to the torch
    reference model; the texts must be identical."""
    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.compiler.frontends import LOADERS, load_lm, reference_generate

    prompt = "ROMEO:\n"
    bad = 0
    for family in sorted(LOADERS):
        ckpt = HERE / "checkpoints" / f"{family}-shakespeare.pt"
        if not ckpt.exists():
            continue
        console.rule(f"{family}: {ckpt.relative_to(HERE.parent)}, greedy, 64 characters")
        lm = load_lm(ckpt)
        t0 = time.perf_counter()
        sim_text = LMSimulator(lm.graph).generate(prompt, 64).text
        t_sim = time.perf_counter() - t0
        ref_text = reference_generate(lm, prompt, 64)
        console.print(f"[bold]simulator[/bold] ({t_sim:.2f} s, {len(lm.graph.nodes)} graph nodes):")
        console.print(prompt + sim_text, markup=False)
        same = sim_text == ref_text
        bad += not same
        console.print(f"torch reference gives the same text: {'yes' if same else 'NO'}")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(BUILD.parent, ignore_errors=True) if "--clean" in sys.argv else None
