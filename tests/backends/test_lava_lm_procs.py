"""spikecc's own Lava processes (spikecc.backends.lava.processes) against spikecc's CPU simulator and Lava itself.

1. fixed_pt, bit for bit: random graphs Input -> LoihiDense -> LoihiElastic -> SpikeRouter -> LoihiDense ->
   LoihiRelay -> Output (spike steps T = 1..4, one bank or T banks, split or signed routing, binary and graded
   inputs, five kinds of threshold pairs, biases, saturating membranes, mult_0 = 0 or not), quantized by hand into
   Loihi 2's widths, run in Lava (run_lava, Loihi2SimCfg) and in the CPU simulator: every output and membrane
   equal. A hand-worked example pins the fixed-point arithmetic to numbers computed here from the docstring.
2. floating_pt: the same graphs in float form: identical spikes, values within 1e-9.
3. Phase gating: a PhasedLIF and a phased Elastic (+ SpikeRouter) with period D, fed an input stream that carries
   values only in their slot, equal step for step the period-1 processes (Lava's own LIF, Elastic with period 1)
   on the compressed stream, and the CPU simulator; a token-synchronous pipeline (synapses of delay 0, one
   process per slot) run at D Lava steps per graph step equals the CPU simulator's token-synchronous run.
4. The generated module builds these processes from its own copies of spikecc's modules and reproduces the
   runs in a fresh Python process in which spikecc cannot be imported.
5. Lowering choices and one-line errors.

Each mode runs all networks of part 1-3 as one Lava network (Lava starts one OS process per process).
"""

from __future__ import annotations

import inspect
import multiprocessing
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import pytest

from spikecc.backends.cpu import Simulator
from spikecc.backends.lava import plan_network, run_lava, write_lava_module
from spikecc.backends.lava import processes as procs
from spikecc.errors import BackendError
from spikecc.ir import Graph
from spikecc.ir.formats import fixed_format
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF, LoihiTernaryLIF
from spikecc.ir.loihi_spec import UV_MAX
from spikecc.ir.neurocore_ops import LoihiElastic, LoihiRelay, SpikeRouter

D = 4  # Lava steps per graph step in the phase-gated networks
K = 12  # graph steps
STEPS = D * K
FIXED = {"format": fixed_format(state_bits=24)}
THRESHOLDS = ("symmetric", "asymmetric", "positive", "negative", "inverted")


# ------------------------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Net:
    """One small network inside a merged graph; `kind` says which, the rest which features it exercises."""

    prefix: str
    seed: int
    kind: str = "chain"  # chain | direct_lif | direct_elastic | pipeline
    T: int = 2
    banks: int = 1
    split: bool = True
    graded_in: bool = False
    thresholds: str = "symmetric"
    bias: bool = True
    mult0: bool = False  # mult_0 != 0: the membrane carries over from the last spike step of a token
    saturate: bool = False
    period: int = 1
    phase: int = 0
    outputs: dict[str, str] = field(default_factory=dict)  # Output node -> node it reads
    slots: dict[str, int] = field(default_factory=dict)  # pipeline: node -> its slot (phase)
    compressed: np.ndarray | None = None  # pipeline: its input, one row per graph step


def _dense(rng, fixed: bool, n_out: int, n_in: int, exp_fixed: int, graded: bool) -> LoihiDense:
    if fixed:  # mixed signs, 8 weight bits: even integers in [-256, 254] (LoihiDense's docstring)
        w = 2 * rng.integers(-128, 128, (n_out, n_in))
        return LoihiDense(weight=w, weight_exp=exp_fixed, num_message_bits=8 if graded else 0)
    return LoihiDense(weight=rng.normal(0.2, 1.0, (n_out, n_in)), weight_exp=int(rng.integers(-1, 2)),
                      num_message_bits=8 if graded else 0)


def _drive(op: LoihiDense, x: np.ndarray) -> np.ndarray:
    """The synaptic input the data make (to size thresholds by: set-up, not an expected output)."""
    acc = x @ np.asarray(op.weight, dtype=np.float64).T
    return acc * 2.0 ** op.weight_exp


def _inputs(rng, fixed: bool, graded: bool, rows: int, n: int) -> np.ndarray:
    mask = rng.random((rows, n)) < (0.5 if graded else 0.35)
    if not graded:
        return mask.astype(np.int64)
    if fixed:
        return np.where(mask, rng.integers(-127, 128, (rows, n)), 0).astype(np.int64)
    return np.where(mask, rng.uniform(-1.0, 1.0, (rows, n)), 0.0)


def _thresholds(rng, kind: str, scale: float, T: int) -> tuple[np.ndarray, np.ndarray]:
    a = scale * rng.uniform(0.4, 1.2, T)
    b = scale * rng.uniform(0.2, 1.5, T)
    hi, lo = {"symmetric": (a, -a), "asymmetric": (a, -b), "positive": (a, 0.15 * a),
              "negative": (-0.15 * a, -a), "inverted": (-0.3 * a, 0.3 * a)}[kind]
    return hi, lo


def _elastic(rng, net: Net, fixed: bool, n: int, scale: float) -> LoihiElastic:
    hi, lo = _thresholds(rng, net.thresholds, scale, net.T)
    if fixed:
        # 12-bit fraction. Below 2048 the membrane stays bounded (a -1 spike doubles it: (1 - u) = 2); the
        # saturating networks take up to 6000, where it grows
        mult = rng.integers(0, 6000 if net.saturate else 2048, net.T)
        bias = rng.integers(-int(0.3 * scale), int(0.3 * scale) + 1, n) if net.bias else np.zeros(n, np.int64)
        hi, lo = np.rint(hi).astype(np.int64), np.rint(lo).astype(np.int64)
    else:
        mult = rng.uniform(0.0, 0.5, net.T)
        bias = rng.uniform(-0.3, 0.3, n) * scale if net.bias else np.zeros(n)
    if not net.mult0:
        mult[0] = 0
    return LoihiElastic(T=net.T, mult=mult, hi=hi, lo=lo, bias=bias)


def _lif(rng, fixed: bool, n: int) -> LoihiLIF:
    if fixed:
        return LoihiLIF(du=np.full(n, int(rng.integers(0, 4096))), dv=np.full(n, int(rng.integers(0, 1500))),
                        vth=np.full(n, int(rng.integers(150, 600))), bias_mant=rng.integers(-40, 60, n),
                        bias_exp=np.full(n, 2), v_init=rng.integers(-3000, 3000, n), u_init=rng.integers(-500, 500, n))
    return LoihiLIF(du=np.full(n, rng.uniform(0.1, 1.0)), dv=np.full(n, rng.uniform(0.0, 0.4)),
                    vth=np.full(n, rng.uniform(0.5, 1.5)), bias_mant=rng.uniform(-0.05, 0.1, n),
                    bias_exp=np.zeros(n), v_init=rng.uniform(-0.5, 0.5, n), u_init=rng.uniform(-0.1, 0.1, n))


def _add(g: Graph, name: str, op, fixed: bool, **ann) -> str:
    return g.add_node(name, op, **(FIXED if fixed and not isinstance(op, nir.Input) else {}), **ann)


def _output(g: Graph, net: Net, src: str, size: int) -> None:
    name = f"{src}.out"
    g.add_node(name, nir.Output(output_type={"output": np.array([size])}))
    g.connect(src, name)
    net.outputs[name] = src


def _input(g: Graph, name: str, n: int, graded: bool, fixed: bool) -> str:
    """Binary spikes, or graded integer payloads (fixed: up to 16 bits, one unit per unit, which is how the generated
    module turns real inputs into payloads) or real values."""
    ann = {"input_bits": 16, "input_scale": 1.0} if fixed else {}
    return g.add_node(name, nir.Input(input_type={"input": np.array([n])}),
                      **(ann if graded else {"signal": {"kind": "binary"}}))


def add_chain(g: Graph, net: Net, fixed: bool) -> dict[str, np.ndarray]:
    """Input -> Dense -> Elastic -> SpikeRouter -> Dense -> Relay, Outputs on the elastic, router and relay."""
    rng = np.random.default_rng(net.seed)
    p = net.prefix
    n_in, n, m = (int(v) for v in rng.integers((3, 3, 2), (13, 11, 9)))
    x = _inputs(rng, fixed, net.graded_in, STEPS, n_in)
    d1 = _dense(rng, fixed, n, n_in, 7 if net.saturate else int(rng.integers(0, 4)), net.graded_in)
    scale = max(1.0, float(np.std(_drive(d1, x))))
    el = _elastic(rng, net, fixed, n, scale)
    rt = SpikeRouter(size=n, banks=net.banks, split=net.split)
    width = rt.natural_shape()[0]
    d2 = _dense(rng, fixed, m, width, int(rng.integers(0, 5)), graded=False)
    d2.num_message_bits = 0 if net.split else 2  # binary polarity channels, or signed unit spikes
    _input(g, f"{p}in", n_in, net.graded_in, fixed)
    for name, op in [(f"{p}d1", d1), (f"{p}el", el), (f"{p}rt", rt), (f"{p}d2", d2), (f"{p}rl", LoihiRelay(size=m))]:
        _add(g, name, op, fixed)
    for a, b in [("in", "d1"), ("d1", "el"), ("el", "rt"), ("rt", "d2"), ("d2", "rl")]:
        g.connect(p + a, p + b)
    for node, size in [("el", n), ("rt", width), ("rl", m)]:
        _output(g, net, p + node, size)
    return {f"{p}in": x}


def add_direct(g: Graph, net: Net, fixed: bool) -> dict[str, np.ndarray]:
    """Input -> LIF, or Input -> Elastic -> SpikeRouter, with no synapse in between; with period > 1 the input
    stream carries the compressed stream's row k at Lava step k D + phase (row k D + phase), zeros elsewhere."""
    rng = np.random.default_rng(net.seed)
    p, n = net.prefix, int(rng.integers(3, 8))
    gate = {"period": net.period, "phase": net.phase} if net.period > 1 else {}
    c = _inputs(rng, fixed, True, K, n) * (12 if fixed else 1)
    _input(g, f"{p}in", n, True, fixed)
    if net.kind == "direct_lif":
        _add(g, f"{p}lif", _lif(rng, fixed, n), fixed, **gate)
        g.connect(f"{p}in", f"{p}lif")
        _output(g, net, f"{p}lif", n)
    else:
        el = _elastic(rng, net, fixed, n, scale=float(np.std(c)) if fixed else 0.6)
        _add(g, f"{p}el", el, fixed, **gate)
        _add(g, f"{p}rt", SpikeRouter(size=n, banks=net.T, split=net.split), fixed, **gate)
        g.connect(f"{p}in", f"{p}el")
        g.connect(f"{p}el", f"{p}rt")
        _output(g, net, f"{p}el", n)
        _output(g, net, f"{p}rt", net.T * (2 if net.split else 1) * n)
    return {f"{p}in": spread(c, net.period, net.phase)}


def add_pipeline(g: Graph, net: Net, fixed: bool) -> dict[str, np.ndarray]:
    """A token-synchronous chain (synapses of delay 0) run at D Lava steps per graph step, one slot per stage:
    Input (slot 0) -> Dense -> LIF (1) -> Dense -> Elastic, SpikeRouter (2) -> Dense -> Relay (3)."""
    rng = np.random.default_rng(net.seed)
    p = net.prefix
    n_in, n1, n2, m = 8, 7, 6, 5
    c = _inputs(rng, fixed, False, K, n_in)
    d1 = _dense(rng, fixed, n1, n_in, 2, graded=False)
    lif = _lif(rng, fixed, n1)
    d2 = _dense(rng, fixed, n2, n1, 4, graded=False)
    el = _elastic(rng, net, fixed, n2, scale=3000.0 if fixed else 1.0)
    rt = SpikeRouter(size=n2, banks=net.T, split=net.split)
    d3 = _dense(rng, fixed, m, rt.natural_shape()[0], 3, graded=False)
    d3.num_message_bits = 0 if net.split else 2
    for d in (d1, d2, d3):
        d.delay = 0
    net.slots = {f"{p}lif": 1, f"{p}el": 2, f"{p}rt": 2, f"{p}rl": 3}
    _input(g, f"{p}in", n_in, False, fixed)
    for name, op in [("d1", d1), ("lif", lif), ("d2", d2), ("el", el), ("rt", rt), ("d3", d3),
                     ("rl", LoihiRelay(size=m))]:
        slot = net.slots.get(p + name)
        _add(g, p + name, op, fixed, **({"period": D, "phase": slot} if slot in (1, 2) else {}))
    for a, b in [("in", "d1"), ("d1", "lif"), ("lif", "d2"), ("d2", "el"), ("el", "rt"), ("rt", "d3"), ("d3", "rl")]:
        g.connect(p + a, p + b)
    for node, size in [("lif", n1), ("el", n2), ("rt", rt.natural_shape()[0]), ("rl", m)]:
        _output(g, net, p + node, size)
    net.compressed = c
    return {f"{p}in": spread(c, D, 0)}


def spread(c: np.ndarray, period: int, phase: int) -> np.ndarray:
    """Row k of `c` at row k * period + phase of a STEPS-row stream, zeros elsewhere (period 1: `c` padded)."""
    x = np.zeros((STEPS, *c.shape[1:]), dtype=c.dtype)
    x[phase:phase + period * len(c):period] = c
    return x


def make_nets() -> list[Net]:
    nets = [Net(f"c{k}_", seed=100 + k, **f) for k, f in enumerate([
        dict(T=1, banks=1, split=True, thresholds="symmetric"),
        dict(T=2, banks=2, split=True, graded_in=True, thresholds="asymmetric", mult0=True),
        dict(T=3, banks=3, split=False, thresholds="positive", bias=False),
        dict(T=4, banks=4, split=True, graded_in=True, thresholds="negative"),
        dict(T=4, banks=1, split=False, thresholds="inverted", mult0=True),
        dict(T=2, banks=2, split=False, graded_in=True, thresholds="symmetric", saturate=True),
        dict(T=3, banks=1, split=True, graded_in=True, thresholds="asymmetric", mult0=True, saturate=True),
        dict(T=2, banks=1, split=True, thresholds="positive"),
    ])]
    nets += [Net("lif1_", seed=200, kind="direct_lif"), Net("lifD_", seed=200, kind="direct_lif", period=D, phase=1),
             Net("el1_", seed=201, kind="direct_elastic", T=3, thresholds="asymmetric", mult0=True),
             Net("elD_", seed=201, kind="direct_elastic", T=3, thresholds="asymmetric", mult0=True, period=D, phase=2),
             Net("pipe_", seed=202, kind="pipeline", T=2, split=False, thresholds="symmetric")]
    return nets


BUILDERS = {"chain": add_chain, "direct_lif": add_direct, "direct_elastic": add_direct, "pipeline": add_pipeline}


def build(nets: list[Net], fixed: bool) -> tuple[Graph, dict[str, np.ndarray]]:
    g = Graph(metadata={"dt": 1e-3})
    inputs: dict[str, np.ndarray] = {}
    for net in nets:
        net.outputs = {}
        inputs.update(BUILDERS[net.kind](g, net, fixed))
    return g, inputs


# ------------------------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Runs:
    nets: list[Net]
    graph: Graph
    inputs: dict[str, np.ndarray]
    cpu: object  # SimResult on `inputs`
    cpu_compressed: object  # SimResult with the pipeline fed its compressed stream (token-synchronous reference)
    lava: object  # LavaResult


def stateful(g: Graph) -> list[str]:
    return [n for n, op in g.nodes.items() if isinstance(op, (LoihiElastic, LoihiLIF))]


def run_mode(mode: str) -> Runs:
    nets = make_nets()
    g, inputs = build(nets, fixed=mode == "fixed")
    states = stateful(g)
    cpu = Simulator(g, mode=mode).run(inputs, record_states=states)
    compressed = dict(inputs)
    for net in nets:
        if net.kind == "pipeline":
            compressed[f"{net.prefix}in"] = spread(net.compressed, 1, 0)
    cpu_c = Simulator(g, mode=mode).run(compressed, record_states=states)
    lava = run_lava(g, inputs, mode=mode, record_states=states)
    return Runs(nets, g, inputs, cpu, cpu_c, lava)


@pytest.fixture(scope="module")
def fixed_runs() -> Runs:
    return run_mode("fixed")


@pytest.fixture(scope="module")
def float_runs() -> Runs:
    return run_mode("float")


def _same(want: np.ndarray, got: np.ndarray, exact: bool) -> np.ndarray:
    """Where the two differ: exactly, or beyond float rounding (Lava's numpy sums a Dense in another order)."""
    return (want != got) if exact else ~np.isclose(want, got, rtol=1e-9, atol=1e-9)


def chain_mismatches(runs: Runs, exact: bool) -> list[str]:
    bad = []
    for net in (n for n in runs.nets if n.kind == "chain"):
        for out, node in net.outputs.items():
            spikes = not isinstance(runs.graph.nodes[node], LoihiRelay)
            diff = _same(runs.cpu.outputs[out], runs.lava.outputs[out], exact or spikes)
            if diff.any():
                t = int(np.argwhere(diff)[0][0])
                bad.append(f"{out}: {int(diff.sum())} values differ, first at step {t}: cpu "
                           f"{runs.cpu.outputs[out][t]} lava {runs.lava.outputs[out][t]}")
        el = f"{net.prefix}el"
        diff = _same(runs.cpu.states[el]["m"], runs.lava.states[el]["m"], exact)
        if diff.any():
            bad.append(f"{el}.m: {int(diff.sum())} values differ, first at step {int(np.argwhere(diff)[0][0])}")
    return bad


# ------------------------------------------------------------------------------------------------------------------
# 1. fixed point, bit for bit
# ------------------------------------------------------------------------------------------------------------------
def test_networks_cover_the_features(fixed_runs):
    chains = [n for n in fixed_runs.nets if n.kind == "chain"]
    assert {n.T for n in chains} == {1, 2, 3, 4}
    assert {n.thresholds for n in chains} == set(THRESHOLDS)
    assert {(n.split, n.banks > 1) for n in chains} == {(True, True), (True, False), (False, True), (False, False)}
    assert {n.graded_in for n in chains} == {True, False} and {n.mult0 for n in chains} == {True, False}
    g, cpu = fixed_runs.graph, fixed_runs.cpu
    for net in chains:
        el = f"{net.prefix}el"
        u, m = cpu.outputs[f"{el}.out"], cpu.states[el]["m"]
        assert (u == 1).any() and (u == -1).any(), el  # both polarities fire
        assert 0.02 < float(np.mean(u != 0)) < 0.98, el
        assert np.abs(m).max() < UV_MAX or net.saturate, el
        if net.saturate:  # the membrane hits the 24-bit limit
            assert np.abs(m).max() == UV_MAX, el
        assert np.abs(cpu.outputs[f"{net.prefix}rl.out"]).max() > 0
    # the widths of the hand quantization
    for op in g.nodes.values():
        if isinstance(op, LoihiElastic):
            assert max(np.abs(op.hi).max(), np.abs(op.lo).max(), np.abs(op.bias).max(initial=0)) <= UV_MAX
        if isinstance(op, LoihiDense):
            assert np.all(op.weight % 2 == 0) and op.weight.min() >= -256 and op.weight.max() <= 254


def test_fixed_point_bit_exact(fixed_runs):
    bad = chain_mismatches(fixed_runs, exact=True)
    assert not bad, "\n".join(bad)


def test_fixed_point_arithmetic_by_hand():
    """One elastic neuron, T = 2, mult = [0, 6144] (1.5 in 12-bit fraction), thresholds +-100, bias 3, fed
    directly (no synapse) with x; m and u worked out from LoihiElastic's fixed form:

        t0 k0: m = 0 + 50 + 3 = 53                                      u = 0
        t1 k1: 53 * 6144 = 325632, >> 12 = 79;  79 * 1 + 60 + 3 = 142     u = +1
        t2 k0: mult 0: 0 + (-10) + 3 = -7                                u = 0
        t3 k1: -7 * 6144 = -43008 -> -(43008 >> 12) = -10 (toward zero, not -11);  -10 + 0 + 3 = -7     u = 0
        t4 k0: 0 + 9000000 + 3 -> saturates at 2**23 - 1 = 8388607      u = +1
        t5 k1: (1 - u) = 0 drops the decayed membrane: 0 - 150 + 3 = -147   u = -1
        t6 k0: 0 - 200 + 3 = -197                                        u = -1
        t7 k1: -197 * 6144 = -1210368 -> -295;  (1 - u) = 2: -590 + 0 + 3 = -587    u = -1

    The router (2 banks, split) puts u > 0 in block (t mod 2, 0), u < 0 in block (t mod 2, 1). The same neuron
    and router phase-gated (period 3, phase 2) on the spread stream give the same values in their slots."""
    x = np.array([50, 60, -10, 0, 9_000_000, -150, -200, 0])
    m_want = np.array([53, 142, -7, -7, 8388607, -147, -197, -587])
    u_want = np.array([0, 1, 0, 0, 1, -1, -1, -1])
    route_want = np.array([[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0],
                           [1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]])
    g = Graph(metadata={"dt": 1e-3})
    for p, gate in (("a_", {}), ("b_", {"period": 3, "phase": 2})):
        g.add_node(f"{p}in", nir.Input(input_type={"input": np.array([1])}))
        g.add_node(f"{p}el", LoihiElastic(T=2, mult=[0, 6144], hi=[100, 100], lo=[-100, -100], bias=[3]), **FIXED,
                   **gate)
        g.add_node(f"{p}rt", SpikeRouter(size=1, banks=2, split=True), **FIXED, **gate)
        for node, size in (("el", 1), ("rt", 4)):
            g.add_node(f"{p}{node}.out", nir.Output(output_type={"output": np.array([size])}))
        for a, b in (("in", "el"), ("el", "rt"), ("el", "el.out"), ("rt", "rt.out")):
            g.connect(p + a, p + b)
    spread3 = np.zeros(3 * len(x), dtype=np.int64)
    spread3[2::3] = x
    inputs = {"a_in": np.concatenate([x, np.zeros(len(spread3) - len(x), np.int64)])[:, None], "b_in": spread3[:, None]}
    lava = run_lava(g, inputs, record_states=["a_el", "b_el"])
    cpu = Simulator(g, mode="fixed").run(inputs, record_states=["a_el"])
    for res in (lava, cpu):
        np.testing.assert_array_equal(res.states["a_el"]["m"][:8, 0], m_want)
        np.testing.assert_array_equal(res.outputs["a_el.out"][:8, 0], u_want)
        np.testing.assert_array_equal(res.outputs["a_rt.out"][:8], route_want)
    np.testing.assert_array_equal(lava.outputs["b_el.out"][2::3, 0], u_want)
    np.testing.assert_array_equal(lava.outputs["b_rt.out"][2::3], route_want)
    off = np.ones(len(spread3), bool)
    off[2::3] = False
    assert not lava.outputs["b_el.out"][off].any() and not lava.outputs["b_rt.out"][off].any()
    m_b = lava.states["b_el"]["m"][:, 0]
    np.testing.assert_array_equal(m_b[:2], [0, 0])  # nothing happens before the first slot
    np.testing.assert_array_equal(m_b[2:], np.repeat(m_want, 3)[:len(m_b) - 2])  # held between slots


# ------------------------------------------------------------------------------------------------------------------
# 2. float
# ------------------------------------------------------------------------------------------------------------------
def test_float_spike_for_spike(float_runs):
    bad = chain_mismatches(float_runs, exact=False)
    assert not bad, "\n".join(bad)
    spikes = sum(int(np.abs(float_runs.lava.outputs[f"{n.prefix}el.out"]).sum()) for n in float_runs.nets
                 if n.kind == "chain")
    assert spikes > 300


# ------------------------------------------------------------------------------------------------------------------
# 3. phase gating
# ------------------------------------------------------------------------------------------------------------------
def _slot_rows(phase: int) -> np.ndarray:
    return np.arange(phase, STEPS, D)


def _check_gated(lava_out: np.ndarray, want: np.ndarray, phase: int, exact: bool, what: str) -> None:
    """`lava_out` (STEPS rows) carries `want` (K rows) in the rows of slot `phase` and zeros in all others."""
    rows = _slot_rows(phase)
    assert not _same(want[:K], lava_out[rows], exact).any(), f"{what}: slot rows differ from the reference"
    others = np.setdiff1d(np.arange(STEPS), rows)
    assert not lava_out[others].any(), f"{what}: sends outside its slot"


def _check_held(lava_state: np.ndarray, want: np.ndarray, initial: np.ndarray, phase: int, exact: bool,
                what: str) -> None:
    """A gated state: its initial value before the first slot, then update k's value until the next slot."""
    assert not _same(np.broadcast_to(initial, lava_state[:phase].shape), lava_state[:phase], exact).any(), what
    held = np.repeat(want[:K], D, axis=0)[:STEPS - phase]
    assert not _same(held, lava_state[phase:], exact).any(), f"{what}: state moves outside its slot"


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_phased_processes_equal_period_one_on_the_compressed_stream(mode, fixed_runs, float_runs):
    runs = fixed_runs if mode == "fixed" else float_runs
    exact = mode == "fixed"
    lava, cpu = runs.lava, runs.cpu
    # period 1 (Lava's own LIF; Elastic and SpikeRouter with period 1) on the compressed stream = CPU simulator
    for out in ("lif1_lif.out", "el1_el.out", "el1_rt.out"):
        assert not _same(cpu.outputs[out][:K], lava.outputs[out][:K], exact=True).any(), out
    for node, var in (("lif1_lif", "u"), ("lif1_lif", "v"), ("el1_el", "m")):
        assert not _same(cpu.states[node][var][:K], lava.states[node][var][:K], exact).any(), (node, var)
    assert np.abs(lava.outputs["lif1_lif.out"][:K]).sum() >= 3 and np.abs(lava.outputs["el1_el.out"][:K]).sum() >= 3
    # period D: the same values in the slot rows, zeros elsewhere, state held between slots
    _check_gated(lava.outputs["lifD_lif.out"], lava.outputs["lif1_lif.out"], 1, True, "PhasedLIF spikes")
    lif = runs.graph.nodes["lifD_lif"]
    for var, init in (("u", lif.u_init), ("v", lif.v_init)):
        _check_held(lava.states["lifD_lif"][var], lava.states["lif1_lif"][var], np.asarray(init, float), 1, exact,
                    f"PhasedLIF {var}")
    _check_gated(lava.outputs["elD_el.out"], lava.outputs["el1_el.out"], 2, True, "phased Elastic spikes")
    _check_gated(lava.outputs["elD_rt.out"], lava.outputs["el1_rt.out"], 2, True, "phased SpikeRouter")
    _check_held(lava.states["elD_el"]["m"], lava.states["el1_el"]["m"], np.zeros(1), 2, exact, "phased Elastic m")
    assert runs.graph.nodes["lifD_lif"] is not runs.graph.nodes["lif1_lif"]
    assert plan_network(runs.graph).specs["lifD_lif"].cls == "PhasedLIF"
    assert plan_network(runs.graph).specs["lif1_lif"].cls == "LIF"


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_token_synchronous_pipeline_at_D_lava_steps_per_graph_step(mode, fixed_runs, float_runs):
    """Synapses of delay 0 in the graph; in Lava each Dense takes one Lava step, which the slots absorb: graph
    step k of the CPU simulator (fed the compressed stream) is Lava step k D + slot of each stage."""
    runs = fixed_runs if mode == "fixed" else float_runs
    exact = mode == "fixed"
    net = next(n for n in runs.nets if n.kind == "pipeline")
    ref, lava = runs.cpu_compressed, runs.lava
    for out, node in net.outputs.items():
        spikes = not isinstance(runs.graph.nodes[node], LoihiRelay)
        _check_gated(lava.outputs[out], ref.outputs[out], net.slots[node], exact or spikes, out)
    lif = runs.graph.nodes[f"{net.prefix}lif"]
    for var, init in (("u", lif.u_init), ("v", lif.v_init)):
        _check_held(lava.states[f"{net.prefix}lif"][var], ref.states[f"{net.prefix}lif"][var], np.asarray(init, float),
                    1, exact, f"pipeline LIF {var}")
    _check_held(lava.states[f"{net.prefix}el"]["m"], ref.states[f"{net.prefix}el"]["m"], np.zeros(1), 2, exact,
                "pipeline Elastic m")
    for node in ("lif", "el", "rl"):
        assert np.abs(ref.outputs[f"{net.prefix}{node}.out"][:K]).sum() > 0, node


def test_no_lava_processes_left(fixed_runs, float_runs):
    assert multiprocessing.active_children() == []


# ------------------------------------------------------------------------------------------------------------------
# 4. generated module
# ------------------------------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    sys.modules["spikecc"] = None  # `import spikecc` (and spikecc.anything) now raises ImportError
    import numpy as np
    for tag in sys.argv[1:]:
        sys.path.insert(0, tag)
        import lava_network
        data = np.load(tag + "/inputs.npz")
        out = lava_network.run({k: data[k] for k in data.files})
        np.savez(tag + "/outputs.npz", **out)
        sys.path.remove(tag)
        del sys.modules["lava_network"]
    loaded = sorted(k for k in sys.modules if k.split(".")[0] == "spikecc" and sys.modules[k] is not None)
    assert not loaded, loaded
    print("ok")
""")


def test_generated_module_runs_without_spikecc(tmp_path, fixed_runs, float_runs, fresh_python):
    chosen = ("c2_", "c6_", "elD_", "pipe_")
    dirs = []
    for mode, runs in (("fixed", fixed_runs), ("float", float_runs)):
        nets = [n for n in make_nets() if n.prefix in chosen]
        g, inputs = build(nets, fixed=mode == "fixed")
        out_dir = tmp_path / mode
        write_lava_module(g, out_dir)
        write_lava_module(g, tmp_path / f"{mode}-again")
        for p in sorted(out_dir.iterdir()):
            assert p.read_bytes() == (tmp_path / f"{mode}-again" / p.name).read_bytes(), p.name
        np.savez(out_dir / "inputs.npz", **inputs)
        dirs.append((out_dir, runs, nets))
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == [
        "inputs.npz", "lava_network.py", "lava_params.npz", "spikecc_lava_compat.py", "spikecc_processes.py"]
    rc, _, stderr = fresh_python(["-c", CHILD, *(str(d) for d, _, _ in dirs)], tmp_path)  # own session
    assert rc == 0, stderr[-3000:]
    assert "Cannot import module" not in stderr  # Lava's model search found everything it looked at
    for out_dir, runs, nets in dirs:
        got = np.load(out_dir / "outputs.npz")
        outs = [o for n in nets for o in n.outputs]
        assert sorted(got.files) == sorted(outs)
        for o in outs:  # the same Lava models as run_lava's, on the same data: the same numbers
            np.testing.assert_array_equal(got[o], runs.lava.outputs[o], err_msg=f"{out_dir.name} {o}")


def test_standalone_copies_come_from_the_one_source(tmp_path):
    """spikecc_processes.py is processes.py with its spikecc import written in as numbers; the compat copy is
    spikecc/lava_compat.py itself. Neither imports spikecc."""
    from spikecc import lava_compat
    from spikecc.backends.lava.codegen import standalone_source
    from spikecc.ir import loihi_spec

    copy = standalone_source(procs.__name__).splitlines()
    original = inspect.getsource(procs).splitlines()
    assert copy[0].startswith("# Copy of spikecc.backends.lava.processes, written by spikecc")
    body = copy[2:]  # below the two-line header
    (at,) = [i for i, ln in enumerate(original) if ln.startswith("from spikecc")]
    names = ["MULTIPLIER_SHIFT", "UV_BITS", "UV_MAX"]
    assert body[:at] == original[:at] and body[at + len(names):] == original[at + 1:]
    assert body[at:at + len(names)] == [f"{k} = {getattr(loihi_spec, k)!r}  # spikecc.ir.loihi_spec.{k}" for k in names]
    compat = standalone_source(lava_compat.__name__).splitlines()
    assert compat[2:] == inspect.getsource(lava_compat).splitlines()
    for text in (copy, compat):
        assert not [ln for ln in text if ln.lstrip().startswith(("import spikecc", "from spikecc"))]


# ------------------------------------------------------------------------------------------------------------------
# 5. lowering and errors
# ------------------------------------------------------------------------------------------------------------------
def test_models_are_what_lavas_own_selection_picks():
    """run_lava names each spikecc process's model itself (so Lava does not search spikecc's packages);
    Loihi2SimCfg's own selection among the models picks the same ones."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    made = {procs.Elastic: procs.Elastic(shape=(2,), mult=[0], hi=[1], lo=[-1]),
            procs.SpikeRouter: procs.SpikeRouter(size=2), procs.Relay: procs.Relay(shape=(2,)),
            procs.PhasedLIF: procs.PhasedLIF(shape=(2,), period=2, phase=1)}
    every_model = [m for m in vars(procs).values() if isinstance(m, type) and hasattr(m, "implements_process")]
    for cls, proc in made.items():
        mine = [m for m in every_model if m.implements_process is cls]
        for tag in procs.SELECT_TAGS:
            if cls is procs.Relay and tag == "fixed_pt":
                with pytest.raises(LookupError):  # fixed point relays are Lava's GradedVec
                    procs.model_for(cls, tag)
                continue
            assert Loihi2SimCfg(select_tag=tag).select(proc, mine) is procs.model_for(cls, tag)


def _lm_chain(fixed: bool = True, **annotations) -> Graph:
    g = Graph(metadata={"dt": 1e-3})
    fmt = FIXED if fixed else {}
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}), signal={"kind": "binary"})
    g.add_node("d", LoihiDense(weight=np.full((2, 3), 4)), **fmt)
    g.add_node("el", LoihiElastic(T=2, mult=[0, 100], hi=[10, 10], lo=[-10, -10], bias=[0, 1]), **fmt, **annotations)
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    for a, b in (("in", "d"), ("d", "el"), ("el", "out")):
        g.connect(a, b)
    return g


def _one_line(e: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def test_lowering_passes_the_gate_from_the_annotations():
    spec = plan_network(_lm_chain(period=3, phase=2)).specs["el"]
    assert (spec.cls, spec.kwargs["period"], spec.kwargs["phase"], spec.states) == ("Elastic", 3, 2, ("m",))
    assert plan_network(_lm_chain()).specs["el"].kwargs["period"] == 1
    specs = []
    for fixed in (True, False):
        g = _lm_chain(fixed)
        g.add_node("rl", LoihiRelay(size=2), **(FIXED if fixed else {}))
        g.connect("d", "rl")
        specs.append(plan_network(g).specs["rl"])
    fixed, flt = specs
    assert (fixed.cls, fixed.kwargs, fixed.named) == ("GradedVec", {"shape": (2,), "vth": 0}, False)
    assert (flt.cls, flt.named) == ("Relay", True)


@pytest.mark.parametrize("ann, message", [
    ({"period": 3, "phase": 3}, "got period=3, phase=3"),
    ({"period": 0}, "got period=0, phase=0"),
    ({"period": 2.5}, "got period=2.5, phase=0"),
])
def test_error_bad_gate(ann, message):
    with pytest.raises(BackendError) as e:
        plan_network(_lm_chain(**ann))
    assert _one_line(e) == (f"node 'el': phase gating needs integers period >= 1 and 0 <= phase < period, {message}; "
                            "fix the node's annotations")


def test_error_unquantized_and_out_of_range_elastic():
    g = _lm_chain()
    g.nodes["el"].hi = np.array([10.5, 10])
    with pytest.raises(BackendError, match="node 'el': hi holds non-integer values in a fixed-point run"):
        plan_network(g)
    g.nodes["el"].hi = np.array([10, 2**23])
    with pytest.raises(BackendError) as e:
        plan_network(g)
    assert _one_line(e) == ("node 'el': hi = 8388608 is outside Loihi 2's range [-8388607, 8388607]; re-quantize "
                            "the layer (quantize_for_loihi) with a smaller scale")


def test_error_gated_ternary_lif_and_wide_relay():
    g = _lm_chain()
    n = 2
    g.nodes["el"] = LoihiTernaryLIF(du=np.zeros(n), dv=np.zeros(n), vth_hi=np.full(n, 5), vth_lo=np.full(n, -5),
                                    bias_mant=np.zeros(n), bias_exp=np.zeros(n))
    g.annotate("el", period=2, phase=0)
    with pytest.raises(BackendError) as e:
        plan_network(g)
    assert _one_line(e).startswith("node 'el': spikecc has no phase-gated TernaryLIF process")
    g = _lm_chain()
    g.add_node("rl", LoihiRelay(size=2, message_bits=32), **FIXED)
    g.connect("d", "rl")
    with pytest.raises(BackendError, match="node 'rl': relays 32-bit messages, but Lava's GradedVec carries 24"):
        write_lava_module(g, Path("/nonexistent/never-written"))
