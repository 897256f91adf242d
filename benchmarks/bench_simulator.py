"""spikecc's CPU simulator vs Lava's Loihi 2 simulator on the same lowered networks, in one run.

Networks (random, fixed seeds): Dense 512x512 + LIF, and a 10-layer chain of Dense 512x512 + LIF, fed a
Poisson spike train (5% per input per step), 1,000 steps. Each network is lowered with `lower_for_loihi`
(and quantized for the fixed-point rows); both backends run the very same graph, and the benchmark checks
that the output spikes are identical before it reports any speed.

Prints, per network and mode: median wall time over the repeats, steps/s for both, the ratio, firing rate,
synaptic events per second (synaptic operations counted by spikecc's simulator / its wall time) beside the
machine's limit for them, and the fixed-point / float speed ratio. The limit: every synaptic event reads one
weight (float: 8 bytes, fixed point: 1 byte, Loihi's 8-bit weight), so events/s cannot exceed the memory read
bandwidth / weight size. The bandwidth is measured here, in the same run, by streaming a buffer of the
network's weight footprint (what the simulator reads; it may sit in cache) and one larger than the
last-level cache (DRAM).

Then the neuro-core part of SpikeGPT-216M's shape (`spikegpt_216m_neurocore`) in fixed point: time per
token, run as one window whose tokens are all known (evaluation with teacher forcing, not generation).
Targets (issue 13): on the 10-layer chain, fixed point at least as fast as float and >= 100x Lava fixed_pt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import nir
import numpy as np
from numba import njit
from rich.console import Console
from rich.table import Table

import spikecc  # noqa: F401  (Lava's Python 3.11 fix)
from spikecc.backends.cpu import Simulator
from spikecc.backends.lava import run_lava
from spikecc.driver import prepare_run
from spikecc.ir import Graph, LoihiDense, LoihiLIF

N = 512
WEIGHT_BYTES = {"float": 8, "fixed": 1}  # one weight read per synaptic event (float64 / Loihi's 8 bits)


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


def spikegpt_216m_neurocore(blocks: int = 18, d: int = 768, ffn: int = 3072, seed: int = 0) \
        -> tuple[Graph, dict[str, tuple[int, float]]]:
    """A synthetic Loihi-form, fixed-point graph with the shape of SpikeGPT-216M's neuro-core part.

    SpikeGPT-216M (paper section 4.1; checkpoint keys blocks.{i}.att.{key,value,receptance,output},
    blocks.{i}.ffn.{key,receptance,value}): 18 blocks, d = 768, FFN width 3072. Per block, each linear layer
    becomes a LoihiDense with graded 8-bit inputs (the host sends real values: LayerNorm outputs, the WKV
    result, relu(k)^2) feeding a LoihiLIF population (tau = 2: dv = 2048; no current memory: du = 4095):

        att:  x_att (d) -> key, value, receptance (d x d);   wkv (d) -> output (d x d)
        ffn:  x_ffn (d) -> key (ffn x d), receptance (d x d);   k2 (ffn) -> value (d x ffn)

    Weights are random Loihi integers (even, in [-256, 254]: MIXED sign mode); thresholds give a firing
    rate of a few percent. Returns the graph and, per Input, (size, fraction of non-zero payloads):
    LayerNorm and WKV outputs are dense, relu(k)^2 is zero where k < 0 (half). A stand-in until the real
    compiled graph replaces it: the host ops between the layers are not part of the neuro-core time.
    """
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": 1e-4, "fixed_point": True})
    inputs: dict[str, tuple[int, float]] = {}
    layers = {  # name: (input, n_out, n_in)
        "att.key": ("x_att", d, d), "att.value": ("x_att", d, d), "att.receptance": ("x_att", d, d),
        "att.output": ("wkv", d, d), "ffn.key": ("x_ffn", ffn, d), "ffn.receptance": ("x_ffn", d, d),
        "ffn.value": ("k2", d, ffn)}
    for b in range(blocks):
        for src, (size, density) in {"x_att": (d, 1.0), "wkv": (d, 1.0), "x_ffn": (d, 1.0),
                                     "k2": (ffn, 0.5)}.items():
            name = f"b{b}.{src}"
            g.add_node(name, nir.Input(input_type={"input": np.array([size])}))
            g.annotate(name, signal={"kind": "graded", "amplitude": 1.0, "bits": 8, "scale": 1.0})
            inputs[name] = (size, density)
        for layer, (src, n_out, n_in) in layers.items():
            w = (rng.integers(-128, 128, size=(n_out, n_in), dtype=np.int16) * 2).astype(np.int16)
            # std of W @ x ~ 2 * 74 * 73 * sqrt(n_in * density): weight_exp -6 keeps a_in near 16 bits
            g.add_node(f"b{b}.{layer}", LoihiDense(weight=w, weight_exp=-6, num_message_bits=8), fixed_point=True)
            sd = 2 * 74 * 73 * np.sqrt(n_in * inputs[f"b{b}.{src}"][1]) / 64
            n = np.full(n_out, 1)
            g.add_node(f"b{b}.{layer}.lif", LoihiLIF(du=n * 4095, dv=n * 2048, vth=n * int(1.6 * sd), bias_mant=n * 0,
                                                     bias_exp=n * 0), fixed_point=True)
            g.connect(f"b{b}.{src}", f"b{b}.{layer}")
            g.connect(f"b{b}.{layer}", f"b{b}.{layer}.lif")
    last = f"b{blocks - 1}.ffn.value.lif"
    g.add_node("out", nir.Output(output_type={"output": np.array([d])}))
    g.connect(last, "out")
    return g, inputs


def graded_payloads(inputs: dict[str, tuple[int, float]], tokens: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, (size, density) in inputs.items():
        x = rng.integers(-127, 128, size=(tokens, size))
        if density < 1.0:
            x = np.maximum(x, 0) if density == 0.5 else np.where(rng.random(x.shape) < density, x, 0)
        out[name] = x
    return out


def measure(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


@njit(cache=True)
def _stream(buf: np.ndarray, passes: int) -> int:
    """Read every element of `buf` `passes` times (a compiled, vectorised int64 sum: loads, not arithmetic,
    bound it)."""
    total = 0
    for _ in range(passes):
        for i in range(buf.size):
            total += buf[i]
    return total


def read_bandwidth(nbytes: int, repeats: int = 7) -> float:
    """Median bytes/s of one core streaming a buffer of `nbytes` (in cache when it fits, else from DRAM)."""
    buf = np.ones(max(1, nbytes // 8), dtype=np.int64)
    passes = max(1, (256 << 20) // max(1, buf.nbytes))  # small buffers: repeat to time at least ~256 MB
    _stream(buf, 1)  # compile, and fault the pages in
    t, _ = measure(lambda: _stream(buf, passes), repeats)
    return buf.nbytes * passes / t


def weight_footprint(sim: Simulator, mode: str) -> int:
    """Bytes of weights the simulator reads: non-zero synapses x bytes per weight."""
    return sum(int(k.fanout.sum()) for k in sim.kernels.values() if hasattr(k, "fanout")) * WEIGHT_BYTES[mode]


def chains_table(args, console: Console, dram_bw: float) -> tuple[bool, dict]:
    rng = np.random.default_rng(1)
    x = (rng.random((args.steps, N)) < 0.05).astype(np.float64)
    table = Table(title=f"spikecc simulator vs Lava Loihi2SimCfg, {args.steps} steps (medians of {args.repeats} "
                        f"spikecc and {args.lava_repeats} Lava runs)")
    for col in ("network", "mode", "spikecc steps/s", "Lava steps/s", "ratio", "identical spikes", "firing rate",
                "synaptic events/s", "limit (weights read)", "of limit"):
        table.add_column(col, justify="left" if col in ("network", "mode") else "right")
    ok, speed = True, {}
    for label, layers in (("Dense 512x512 + LIF", 1), ("10-layer chain", 10)):
        graph = chain(layers)
        for fixed in (False, True):
            lowered, xin = prepare_run(graph, x, fixed_point=fixed, spike_inputs=True)
            mode = "fixed" if fixed else "float"
            sim = Simulator(lowered, mode=mode)
            sim.run(xin)  # load the compiled loops before timing
            t_cpu, res = measure(lambda s=sim, xi=xin: s.run(xi), args.repeats)
            t_lava, lres = measure(lambda g=lowered, m=mode, xi=xin: run_lava(g, xi, steps=args.steps, mode=m),
                                   args.lava_repeats)
            same = bool(np.array_equal(res.outputs["out"], lres.outputs["out"]))
            ok &= same
            lifs = [n for n in lowered.nodes if res.counts[n].spiking and n not in ("in", "out")]
            rate = sum(res.counts[n].events for n in lifs) / (len(lifs) * N * args.steps)
            events = res.total("synops") / t_cpu
            footprint = weight_footprint(sim, mode)
            limit = read_bandwidth(footprint) / WEIGHT_BYTES[mode]
            speed[(layers, mode)] = (args.steps / t_cpu, args.steps / t_lava)
            table.add_row(label, "fixed_pt" if fixed else "floating_pt", f"{args.steps / t_cpu:,.0f}",
                          f"{args.steps / t_lava:,.1f}", f"{t_lava / t_cpu:,.1f}x", "yes" if same else "NO",
                          f"{rate:.3f}", f"{events:.3g}",
                          f"{limit:.3g} ({footprint / 2**20:.1f} MB)", f"{events / limit:.0%}")
    console.print(table)
    console.print("ratio = Lava wall time / spikecc wall time on the same lowered graph and input; limit = one "
                  "weight read per synaptic event (float64: 8 bytes, fixed point: 1) at the read bandwidth measured "
                  "for a buffer of the network's weights (in brackets); "
                  f"from DRAM (a {args.dram_mb} MB buffer) one core reads {dram_bw / 1e9:.1f} GB/s, "
                  f"i.e. {dram_bw:.3g} 8-bit or {dram_bw / 8:.3g} float64 weights/s")
    return ok, speed


def spikegpt_table(args, console: Console, dram_bw: float) -> None:
    t0 = time.perf_counter()
    g, inputs = spikegpt_216m_neurocore(blocks=args.blocks)
    xs = graded_payloads(inputs, args.tokens)
    sim = Simulator(g, mode="fixed")
    build = time.perf_counter() - t0
    sim.run(xs)
    t, res = measure(lambda: sim.run(xs), args.spikegpt_repeats)
    synapses = sum(int(np.size(op.weight)) for op in g.nodes.values() if isinstance(op, LoihiDense))
    events = res.total("synops") / args.tokens
    lifs = [n for n, op in g.nodes.items() if isinstance(op, LoihiLIF)]
    rate = sum(res.counts[n].events for n in lifs) / (sum(res.counts[n].neurons for n in lifs) * args.tokens)
    table = Table(title=f"SpikeGPT-216M shape, neuro-core part (synthetic, {args.blocks} blocks x 7 LoihiDense + "
                        f"LoihiLIF, graded 8-bit inputs), fixed point, {args.tokens} tokens as one window "
                        f"(median of {args.spikegpt_repeats})")
    for col in ("synapses", "time per token", "tokens/s", "synaptic events/token", "synaptic events/s",
                "LIF firing rate", "DRAM limit per token", "build"):
        table.add_column(col, justify="right")
    dram_time = synapses / dram_bw  # every weight read once per token from DRAM, 1 byte each
    table.add_row(f"{synapses / 1e6:.1f}M", f"{1e3 * t / args.tokens:.2f} ms", f"{args.tokens / t:,.1f}",
                  f"{events / 1e6:.1f}M", f"{events * args.tokens / t:.3g}", f"{rate:.3f}",
                  f"{1e3 * dram_time:.2f} ms", f"{build:.1f} s")
    console.print(table)
    console.print("DRAM limit per token: every weight byte read once per token at the measured DRAM bandwidth "
                  "(a layer's weights stay in cache across the window's tokens, so the run can beat it)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5, help="spikecc repeats (median reported)")
    ap.add_argument("--lava-repeats", type=int, default=3, help="Lava repeats (median reported)")
    ap.add_argument("--tokens", type=int, default=32, help="tokens of the SpikeGPT-216M-shape run")
    ap.add_argument("--blocks", type=int, default=18, help="blocks of the SpikeGPT-216M-shape graph")
    ap.add_argument("--spikegpt-repeats", type=int, default=3)
    ap.add_argument("--dram-mb", type=int, default=512, help="buffer for the DRAM bandwidth (above the L3 size)")
    ap.add_argument("--no-spikegpt", action="store_true", help="skip the SpikeGPT-216M-shape run")
    args = ap.parse_args(argv)

    console = Console(width=None if Console().is_terminal else 170)
    dram_bw = read_bandwidth(args.dram_mb << 20, repeats=5)
    ok, speed = chains_table(args, console, dram_bw)
    fixed, flt = speed[(10, "fixed")], speed[(10, "float")]
    console.print(f"10-layer chain: fixed point / float = {fixed[0] / flt[0]:.2f}x (target >= 1); "
                  f"fixed point / Lava fixed_pt = {fixed[0] / fixed[1]:.0f}x (target >= 100x)")
    if not ok:
        console.print("[red]spikes differ between spikecc and Lava: speed figures are void[/red]")
    if not args.no_spikegpt:
        spikegpt_table(args, console, dram_bw)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
