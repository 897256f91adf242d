"""The Lava backend against spikecc's CPU simulator.

1. fixed point: spikecc's fixed mode equals Lava's fixed_pt models bit for bit, output spikes and u/v states;
2. float: spikecc's float mode equals Lava's floating_pt models spike for spike (voltages to rounding);
3. the generated Lava module rebuilds the same network, reproduces the spikes, and is byte-identical when
   written twice;
4. unsupported input gives one-line BackendErrors that name the node.

The networks are random NIR graphs (2-5 layers of 4-32 neurons, random weights, thresholds, leaks and input
spike trains) taken through the real passes: lower_for_loihi (float form) and quantize_for_loihi (fixed
point). Among them: recurrent layers (a Linear from a LIF back to itself), ternary neurons (graded +-1
messages), skip connections (two synapse layers summed into one neuron), LI readouts (the Output reads v),
a synapse layer straight into an Output (currents), Affine biases (which give the neurons a non-zero initial
membrane value v_init, Lava's `v`), real-valued (graded) inputs and per-neuron time constants.

Lava starts one OS process per process model (about 0.05-0.1 s each on two busy cores), so the networks
are batched: each group of networks is merged into one graph of disconnected sub-networks and run as one
Lava network, once per mode.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import pytest

from spikecc.backends.cpu import Simulator
from spikecc.backends.lava import run_lava, write_lava_module
from spikecc.compiler.passes import lower_for_loihi, quantize_for_loihi, quantize_inputs
from spikecc.errors import BackendError
from spikecc.ir import Graph, TernaryLIF
from spikecc.ir.formats import is_fixed
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LoihiDense, LoihiLIF

DT = 1e-4
N_NETWORKS = 24
GROUPS = 4  # Lava runs per mode


# ------------------------------------------------------------------------------------------------
# random networks
# ------------------------------------------------------------------------------------------------
@dataclass
class NetSpec:
    """One random network inside a merged graph: its node prefix and the features it exercises."""

    prefix: str
    layers: int
    recurrent: bool = False
    ternary: bool = False
    readout: bool = False
    skip: bool = False
    dense_out: bool = False
    bias: bool = False
    graded_in: bool = False  # real-valued input: graded messages (quantize_inputs makes 8-bit payloads)
    input_node: str = ""
    outputs: list[str] = field(default_factory=list)
    readouts: dict[str, str] = field(default_factory=dict)  # Output -> NIR readout node (LI)


def _lif_params(rng: np.random.Generator, n: int, uniform: bool) -> dict[str, np.ndarray]:
    """snntorch-style LIF (tau = dt/(1-beta), r = tau/dt, so v <- beta v + I), threshold around 1."""
    beta = np.full(n, rng.uniform(0.5, 0.95)) if uniform else rng.uniform(0.5, 0.95, n)
    tau = DT / (1 - beta)
    return dict(tau=tau, r=tau / DT, v_leak=np.zeros(n),
                v_threshold=np.full(n, 1.0) if uniform else rng.uniform(0.7, 1.3, n), v_reset=np.zeros(n))


def _weights(rng: np.random.Generator, n_out: int, n_in: int, drive: float) -> np.ndarray:
    """Mixed-sign weights biased positive, scaled so that neurons fire at moderate rates."""
    return rng.normal(0.35, 0.7, (n_out, n_in)) * drive / np.sqrt(n_in)


def add_random_net(g: Graph, rng: np.random.Generator, spec: NetSpec) -> None:
    """Add one random network to `g`, its node names prefixed with `spec.prefix`."""
    p = spec.prefix
    spec.skip = spec.skip and spec.layers >= 3 and not spec.dense_out  # needs two neuron layers before the last
    sizes = [int(v) for v in rng.integers(4, 33, spec.layers + 1)]
    signal = {} if spec.graded_in else {"signal": {"kind": "binary"}}
    spec.input_node = g.add_node(f"{p}in", nir.Input(input_type={"input": np.array([sizes[0]])}), **signal)
    prev, prev_size, neurons = spec.input_node, sizes[0], []
    ternary_at = int(rng.integers(0, spec.layers - 1)) if spec.ternary else -1
    recurrent_at = int(rng.integers(0, spec.layers - 1)) if spec.recurrent else -1
    for i in range(1, spec.layers + 1):
        n, last = sizes[i], i == spec.layers
        w = _weights(rng, n, prev_size, drive=3.0)
        if spec.bias and not last:
            fc = nir.Affine(weight=w, bias=rng.uniform(-0.05, 0.15, n))
        else:
            fc = nir.Linear(weight=w)
        g.add_node(f"{p}fc{i}", fc)
        g.connect(prev, f"{p}fc{i}")
        if last and spec.dense_out:  # a synapse layer straight into the Output: it records currents
            g.add_node(f"{p}out", nir.Output(output_type={"output": np.array([n])}))
            g.connect(f"{p}fc{i}", f"{p}out")
            spec.outputs.append(f"{p}out")
            break
        name = f"{p}lif{i}"
        prm = _lif_params(rng, n, uniform=bool(rng.integers(0, 2)))
        if last and spec.readout:
            g.add_node(name, nir.LI(tau=prm["tau"], r=prm["r"], v_leak=prm["v_leak"]))
        elif i - 1 == ternary_at:
            th = rng.uniform(0.6, 1.2)
            g.add_node(name, TernaryLIF(tau=prm["tau"], r=prm["r"], v_leak=prm["v_leak"],
                                        v_threshold_hi=np.full(n, th), v_threshold_lo=np.full(n, -th),
                                        v_reset=np.zeros(n), amplitude=float(rng.choice([0.5, 1.0]))))
        else:
            g.add_node(name, nir.LIF(**prm))
        g.connect(f"{p}fc{i}", name)
        if i - 1 == recurrent_at:  # a Linear from the LIF back to itself
            g.add_node(f"{p}rec{i}", nir.Linear(weight=rng.normal(0.0, 0.8, (n, n)) / np.sqrt(n)))
            g.connect(name, f"{p}rec{i}")
            g.connect(f"{p}rec{i}", name)
        if spec.skip and i == spec.layers and len(neurons) >= 2:  # a second synapse layer from two layers back
            src, src_size = neurons[-2]
            g.add_node(f"{p}skip", nir.Linear(weight=_weights(rng, n, src_size, drive=2.0)))
            g.connect(src, f"{p}skip")
            g.connect(f"{p}skip", name)
        neurons.append((name, n))
        prev, prev_size = name, n
    if not spec.dense_out:
        g.add_node(f"{p}out", nir.Output(output_type={"output": np.array([prev_size])}))
        g.connect(prev, f"{p}out")
        spec.outputs.append(f"{p}out")
        if spec.readout:
            spec.readouts[f"{p}out"] = prev
        if len(neurons) >= 2:  # a second Output on a hidden layer
            hid = neurons[0]
            g.add_node(f"{p}hid", nir.Output(output_type={"output": np.array([hid[1]])}))
            g.connect(hid[0], f"{p}hid")
            spec.outputs.append(f"{p}hid")


def add_cuba_net(g: Graph) -> NetSpec:
    """in -> Affine -> CubaLIF -> Affine -> CubaLIF -> out, biases on both Affines: lower_for_loihi starts both
    layers at u_init != 0 (the synaptic-current bias's rise) and v_init != 0. Its own random stream, so the
    random networks stay what they are."""
    rng = np.random.default_rng(99)
    spec = NetSpec(prefix="cuba_", layers=2, bias=True)
    spec.input_node = g.add_node("cuba_in", nir.Input(input_type={"input": np.array([10])}), signal={"kind": "binary"})
    prev, n_prev = spec.input_node, 10
    for i, n in enumerate((12, 6), start=1):
        g.add_node(f"cuba_fc{i}", nir.Affine(weight=_weights(rng, n, n_prev, drive=3.0), bias=rng.uniform(0, 0.2, n)))
        tau_mem = DT / rng.uniform(0.1, 0.3, n)
        g.add_node(f"cuba_lif{i}", nir.CubaLIF(tau_syn=DT / rng.uniform(0.2, 0.5, n), tau_mem=tau_mem, r=tau_mem / DT,
                                               v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n),
                                               w_in=np.ones(n)))
        g.connect(prev, f"cuba_fc{i}")
        g.connect(f"cuba_fc{i}", f"cuba_lif{i}")
        prev, n_prev = f"cuba_lif{i}", n
    g.add_node("cuba_out", nir.Output(output_type={"output": np.array([n_prev])}))
    g.connect(prev, "cuba_out")
    spec.outputs.append("cuba_out")
    return spec


def add_timing_net(g: Graph) -> NetSpec:
    """in -> Linear(2) -> LIF(beta 0, threshold 1) -> out: one input spike at step 0 gives one output spike at
    step 1 (the Dense delivers a step late) in both simulators; written out in test_time_alignment."""
    spec = NetSpec(prefix="timing_", layers=1)
    spec.input_node = g.add_node("timing_in", nir.Input(input_type={"input": np.array([1])}), signal={"kind": "binary"})
    g.add_node("timing_fc", nir.Linear(weight=np.array([[2.0]])))
    g.add_node("timing_lif", nir.LIF(tau=np.array([DT]), r=np.array([1.0]), v_leak=np.zeros(1),
                                     v_threshold=np.ones(1), v_reset=np.zeros(1)))
    g.add_node("timing_out", nir.Output(output_type={"output": np.array([1])}))
    for a, b in [("timing_in", "timing_fc"), ("timing_fc", "timing_lif"), ("timing_lif", "timing_out")]:
        g.connect(a, b)
    spec.outputs.append("timing_out")
    return spec


@dataclass
class Batch:
    """A group of random networks merged into one NIR graph, with its input spike trains."""

    nir_graph: Graph
    nets: list[NetSpec]
    inputs: dict[str, np.ndarray]
    steps: int
    float_graph: Graph | None = None
    fixed_graph: Graph | None = None
    fixed_inputs: dict[str, np.ndarray] = field(default_factory=dict)


def make_batches(seed: int = 2024) -> list[Batch]:
    rng = np.random.default_rng(seed)
    features = []
    for k in range(N_NETWORKS):
        # The first networks pin the features down; the rest draw them at random.
        f = dict(recurrent=k in (0, 4) or rng.random() < 0.25, ternary=k in (1, 4) or rng.random() < 0.25,
                 readout=k == 2 or (k > 5 and rng.random() < 0.15), skip=k in (3, 5) or rng.random() < 0.2,
                 bias=k == 5 or rng.random() < 0.3)
        f["dense_out"] = k == 6 or (k > 6 and not f["readout"] and rng.random() < 0.1)
        f["graded_in"] = k == 7 or (k > 7 and rng.random() < 0.15)
        features.append(f)
    batches = []
    for gi in range(GROUPS):
        g = Graph(metadata={"dt": DT})
        nets = []
        for k in range(gi, N_NETWORKS, GROUPS):
            spec = NetSpec(prefix=f"n{k}_", layers=int(rng.integers(2, 6)), **features[k])
            add_random_net(g, rng, spec)
            nets.append(spec)
        if gi == 0:
            nets.append(add_timing_net(g))
        steps = int(rng.integers(50, 101))
        inputs = {}
        for spec in nets:
            n = int(g.nodes[spec.input_node].input_type["input"][0])
            mask = rng.random((steps, n)) < rng.uniform(0.1, 0.4)
            if spec.graded_in:
                inputs[spec.input_node] = np.where(mask, rng.uniform(-0.5, 1.0, (steps, n)), 0.0)
            else:
                inputs[spec.input_node] = mask.astype(np.int64)
        if gi == 0:
            inputs["timing_in"] = np.zeros((steps, 1), dtype=np.int64)
            inputs["timing_in"][0, 0] = 1
        if gi == 1:  # after the random draws: the other networks and inputs stay the same
            nets.append(add_cuba_net(g))
            inputs["cuba_in"] = (np.random.default_rng(98).random((steps, 10)) < 0.3).astype(np.int64)
        b = Batch(nir_graph=g, nets=nets, inputs=inputs, steps=steps)
        b.float_graph = lower_for_loihi(g)
        b.fixed_graph = quantize_for_loihi(b.float_graph)
        b.fixed_inputs = quantize_inputs(b.fixed_graph, inputs)  # binary stays 0/1, real -> 8-bit payloads
        batches.append(b)
    return batches


def neuron_nodes(g: Graph) -> list[str]:
    return [n for n, op in g.nodes.items() if isinstance(op, LOIHI_NEURON_OPS)]


@dataclass
class Runs:
    batches: list[Batch]
    cpu: list  # SimResult per batch
    lava: list  # LavaResult per batch
    lava_wall_s: float


def run_both(batches: list[Batch], mode: str) -> Runs:
    cpu, lava, wall = [], [], 0.0
    for b in batches:
        g, x = (b.fixed_graph, b.fixed_inputs) if mode == "fixed" else (b.float_graph, b.inputs)
        states = neuron_nodes(g)
        cpu.append(Simulator(g, mode=mode).run(x, steps=b.steps, record_states=states))
        res = run_lava(g, x, steps=b.steps, mode=mode, record_states=states)
        lava.append(res)
        wall += res.wall_s
    return Runs(batches, cpu, lava, wall)


@pytest.fixture(scope="module")
def batches() -> list[Batch]:
    return make_batches()


@pytest.fixture(scope="module")
def fixed_runs(batches) -> Runs:
    return run_both(batches, "fixed")


@pytest.fixture(scope="module")
def float_runs(batches) -> Runs:
    return run_both(batches, "float")


def cpu_output(b: Batch, cpu, out: str) -> np.ndarray:
    """What the CPU simulator says an Output reads: its values, or for an LI readout (which Lava reads as v,
    lower_for_loihi's annotation readout='v') the readout neuron's v state."""
    for spec in b.nets:
        if out in spec.readouts:
            return cpu.states[spec.readouts[out]]["v"]
    return cpu.outputs[out]


def is_real_valued(b: Batch, out: str) -> bool:
    """Outputs that carry voltages (LI readouts) or synaptic currents (a Dense straight into the Output)."""
    return any(out in s.readouts or (s.dense_out and out == f"{s.prefix}out") for s in b.nets)


def mismatches(runs: Runs, exact: bool) -> list[str]:
    """One line per (network, Output or state) where CPU and Lava differ. Spikes must always be equal;
    with exact=False (float), voltages and currents may differ by rounding (numpy sums Lava's Dense
    columns in another order than the CPU simulator's event-driven gather)."""
    bad = []
    for b, cpu, lv in zip(runs.batches, runs.cpu, runs.lava):
        for out in b.nir_graph.outputs():
            want, got = cpu_output(b, cpu, out), lv.outputs[out]
            if is_real_valued(b, out) and not exact:
                diff = ~np.isclose(want, got, rtol=1e-9, atol=1e-9)
            else:
                diff = want != got
            if diff.any():
                t = int(np.argwhere(diff)[0][0])
                bad.append(f"output {out}: {int(diff.sum())} values differ, first at step {t}: cpu {want[t]} "
                           f"lava {got[t]}")
        for node, st in cpu.states.items():
            for var, want in st.items():
                got = lv.states[node][var]
                diff = (want != got) if exact else ~np.isclose(want, got, rtol=1e-9, atol=1e-9)
                if diff.any():
                    t = int(np.argwhere(diff)[0][0])
                    bad.append(f"state {node}.{var}: {int(diff.sum())} values differ, first at step {t}")
    return bad


# ------------------------------------------------------------------------------------------------
# 1. fixed point, bit for bit
# ------------------------------------------------------------------------------------------------
def test_networks_cover_the_features(batches):
    nets = [s for b in batches for s in b.nets if s.prefix != "timing_"]
    assert len(nets) >= 20
    assert {s.layers for s in nets} >= {2, 3, 4, 5}
    for feature in ("recurrent", "ternary", "readout", "skip", "dense_out", "bias", "graded_in"):
        assert any(getattr(s, feature) for s in nets), feature
    fixed = [b.fixed_graph for b in batches]
    assert all(is_fixed(g) for g in fixed)
    assert any(type(op).__name__ == "LoihiTernaryLIF" for g in fixed for op in g.nodes.values())
    bits = {op.num_message_bits for g in fixed for op in g.nodes.values() if isinstance(op, LoihiDense)}
    assert bits == {0, 2, 8}  # binary spikes, ternary spikes, 8-bit graded inputs
    # some layers have per-neuron decays and thresholds (Lava's Python models take them per neuron)
    assert any(np.unique(op.dv).size > 1 for g in fixed for op in g.nodes.values() if isinstance(op, LoihiLIF))
    # biases act before the first input arrives: lower_for_loihi starts those layers at v_init != 0, per neuron
    # (and, for CubaLIF, u_init != 0), which Lava receives as its u and v initial values
    for graphs in (fixed, [b.float_graph for b in batches]):
        ops = [op for g in graphs for op in g.nodes.values() if isinstance(op, LOIHI_NEURON_OPS)]
        assert sum(np.unique(op.v_init).size > 1 for op in ops) >= 5 and any(not op.v_init.any() for op in ops)
        assert sum(np.all(op.u_init != 0) for op in ops) >= 2


def test_fixed_point_bit_exact(fixed_runs):
    bad = mismatches(fixed_runs, exact=True)
    assert not bad, "\n".join(bad[:20])


def test_fixed_point_networks_are_active(fixed_runs):
    """The comparison means something only if the networks spike: most spiking outputs are active."""
    active, total = 0, 0
    for b, cpu in zip(fixed_runs.batches, fixed_runs.cpu):
        for spec in b.nets:
            for out in spec.outputs:
                if is_real_valued(b, out):
                    continue
                total += 1
                rate = float(np.abs(cpu.outputs[out]).mean())
                active += 0.0 < rate < 0.9
    assert total >= 20 and active >= 0.75 * total, (active, total)


def test_no_lava_processes_left(fixed_runs, float_runs):
    assert multiprocessing.active_children() == []


# ------------------------------------------------------------------------------------------------
# 2. float, spike for spike
# ------------------------------------------------------------------------------------------------
def test_float_spike_for_spike(float_runs):
    bad = mismatches(float_runs, exact=False)
    assert not bad, "\n".join(bad[:20])
    spikes = sum(int(np.abs(lv.outputs[o]).sum()) for b, lv in zip(float_runs.batches, float_runs.lava)
                 for o in b.nir_graph.outputs() if not is_real_valued(b, o))
    assert spikes > 1000


def test_time_alignment(float_runs, fixed_runs):
    """Lava step t (counted from 1) is the CPU simulator's step t-1: the input spike at step 0 crosses the
    Dense, whose output arrives one step later, so the neuron spikes at step 1 on both sides."""
    for runs in (float_runs, fixed_runs):
        cpu, lv = runs.cpu[0], runs.lava[0]
        want = np.zeros((runs.batches[0].steps, 1))
        want[1, 0] = 1
        np.testing.assert_array_equal(cpu.outputs["timing_out"], want)
        np.testing.assert_array_equal(lv.outputs["timing_out"], want)


def test_hand_built_loihi_graph_with_aliases_and_repeated_edges():
    """A Loihi-form graph written by hand: a Flatten (no process; edges pass through it) and an Output that
    reads the same neuron over two paths (counted twice, as the CPU simulator sums edges)."""
    g = Graph(metadata={"dt": DT, "fixed_point": True})
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}))
    g.add_node("d", LoihiDense(weight=np.array([[2, 4, 6], [8, 10, -12]])), fixed_point=True)
    g.add_node("l", LoihiLIF(du=np.full(2, 4095), dv=np.array([0, 100]), vth=np.full(2, 20),
                             bias_mant=np.array([1, 0]), bias_exp=np.array([5, 0]), v_init=np.array([-700, 1200])),
               fixed_point=True)
    g.add_node("flat", nir.Flatten(input_type={"input": np.array([2])}))
    g.add_node("out", nir.Output(output_type={"output": np.array([2])}))
    for a, b in [("in", "d"), ("d", "l"), ("l", "flat"), ("l", "out"), ("flat", "out")]:
        g.connect(a, b)
    x = (np.random.default_rng(3).random((30, 3)) < 0.5).astype(np.int64)
    cpu = Simulator(g, mode="fixed").run(x, record_states=["l"])
    lv = run_lava(g, x, record_states={"l": ["v"]})
    assert lv.mode == "fixed" and set(lv.states["l"]) == {"v"}
    np.testing.assert_array_equal(lv.outputs["out"], cpu.outputs["out"])
    np.testing.assert_array_equal(lv.states["l"]["v"], cpu.states["l"]["v"])
    assert lv.outputs["out"].max() == 2
    assert cpu.states["l"]["v"][0, 0] == -700 + 32  # v starts at v_init (dv = 0 keeps it), plus 1 << 5

    g.connect("d", "l")  # a second edge between the same two processes
    with pytest.raises(BackendError) as e:
        run_lava(g, x)
    assert _one_line(e) == ("node 'l': receives 'd' over more than one edge, and Lava cannot connect the same two "
                            "ports twice; merge those edges into one synapse layer (sum the weights)")


def test_failure_inside_lava_stops_every_process(monkeypatch):
    """An exception in a process model (here the probe's, patched before Lava forks) becomes a one-line
    BackendError, and no Lava OS process or shared buffer is left behind (Lava's own stop() would hang)."""
    from spikecc.backends.lava import network

    def boom(self) -> None:
        raise ValueError("boom in a Lava process")

    monkeypatch.setattr(network.PyProbeModelBase, "run_spk", boom)
    with pytest.raises(BackendError) as e:
        run_lava(_lowered_chain(), np.ones((5, 3)))
    assert _one_line(e) == "the Lava run failed: ValueError: boom in a Lava process"
    assert multiprocessing.active_children() == [] and network._SHARED == {}


# ------------------------------------------------------------------------------------------------
# 3. generated module
# ------------------------------------------------------------------------------------------------
def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_generated_module_reproduces_spikes(tmp_path):
    rng = np.random.default_rng(7)
    g = Graph(metadata={"dt": DT})
    spec = NetSpec(prefix="g_", layers=4, recurrent=True, ternary=True, readout=True, skip=True, bias=True)
    add_random_net(g, rng, spec)
    steps = 60
    x = (rng.random((steps, int(g.nodes[spec.input_node].input_type["input"][0]))) < 0.3).astype(np.int64)
    fixed = quantize_for_loihi(lower_for_loihi(g))

    first = write_lava_module(fixed, tmp_path / "a")
    write_lava_module(fixed, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    # the biased layers start at their v_init: per-neuron integers in the parameter file, Lava's `v`
    assert ", v=P[" in first.read_text()
    params = np.load(tmp_path / "a" / "lava_params.npz")
    assert any(k.endswith("/v") and params[k].dtype.kind == "i" and params[k].any() for k in params.files)
    # Lava's own processes only: no copy of spikecc's processes, only of its Python 3.11 import fix
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["lava_network.py", "lava_params.npz",
                                                                  "spikecc_lava_compat.py"]
    mod = _import(first, "spikecc_test_lava_network")
    assert mod.MODE == "fixed" and not mod.hardware_available()
    out = mod.run(x, steps, hardware=False)

    cpu = Simulator(fixed, mode="fixed").run(x, record_states=neuron_nodes(fixed))
    assert set(out) == set(fixed.outputs())
    for o in fixed.outputs():
        want = cpu.states[spec.readouts[o]]["v"] if o in spec.readouts else cpu.outputs[o]
        np.testing.assert_array_equal(out[o], want.reshape(steps, -1), err_msg=o)
    assert np.abs(out["g_hid"]).sum() > 0

    # float form: a module of its own, also deterministic
    flt = lower_for_loihi(g)
    write_lava_module(flt, tmp_path / "f1")
    write_lava_module(flt, tmp_path / "f2")
    assert _digest(tmp_path / "f1") == _digest(tmp_path / "f2")
    assert 'MODE = "float"' in (tmp_path / "f1" / "lava_network.py").read_text()
    assert _digest(tmp_path / "f1") != _digest(tmp_path / "a")


# ------------------------------------------------------------------------------------------------
# 4. errors
# ------------------------------------------------------------------------------------------------
def _chain(*ops: nir.NIRNode, n_in: int | tuple[int, ...] = 3, n_out: int | None = None) -> Graph:
    g = Graph(metadata={"dt": DT})
    g.add_node("in", nir.Input(input_type={"input": np.atleast_1d(n_in)}), signal={"kind": "binary"})
    prev = "in"
    for i, op in enumerate(ops):
        name = f"x{i}"
        g.add_node(name, op)
        g.connect(prev, name)
        prev = name
    g.add_node("out", nir.Output(output_type={"output": np.array([n_in if n_out is None else n_out])}))
    g.connect(prev, "out")
    return g


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_error_unlowered_nir_op():
    g = _chain(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)), n_out=2)
    with pytest.raises(BackendError) as e:
        run_lava(g, np.zeros((4, 3)), mode="float")
    assert _one_line(e).startswith("node 'x0': Lava has no process for Affine here; lower the graph with "
                                   "lower_for_loihi first")
    with pytest.raises(BackendError, match="node 'x0': Lava has no process for Conv2d"):
        conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 2, 2)), stride=1, padding=0, dilation=1,
                          groups=1, bias=np.zeros(1))
        write_lava_module(_chain(conv, n_in=(1, 4, 4), n_out=9), Path("/nonexistent/never-written"))


def _lowered_chain(n: int = 3) -> Graph:
    g = _chain(nir.Linear(weight=np.eye(n)), nir.LIF(tau=np.full(n, 2 * DT), r=np.full(n, 2.0), v_leak=np.zeros(n),
                                                    v_threshold=np.ones(n), v_reset=np.zeros(n)), n_in=n)
    return lower_for_loihi(g)


def test_error_mode_mismatch():
    flt = _lowered_chain()
    with pytest.raises(BackendError) as e:
        run_lava(flt, np.zeros((4, 3)), mode="fixed")
    assert "quantize_for_loihi" in _one_line(e)
    with pytest.raises(BackendError, match="mode='fixed'"):
        run_lava(quantize_for_loihi(flt), np.zeros((4, 3)), mode="float")
    with pytest.raises(BackendError, match="mode must be one of"):
        run_lava(flt, np.zeros((4, 3)), mode="double")


def test_error_out_of_range_and_unquantized_parameters():
    fixed = quantize_for_loihi(_lowered_chain())
    lif = next(n for n, op in fixed.nodes.items() if isinstance(op, LoihiLIF))
    bad = fixed.copy()
    bad.nodes[lif].du = np.full(3, 5000)
    with pytest.raises(BackendError) as e:
        write_lava_module(bad, Path("/nonexistent/never-written"))
    assert _one_line(e) == (f"node '{lif}': du = 5000 is outside Loihi 2's range [0, 4095]; re-quantize the layer "
                            "(quantize_for_loihi) with a smaller scale")
    dense = next(n for n, op in fixed.nodes.items() if isinstance(op, LoihiDense))
    bad = fixed.copy()
    bad.nodes[dense].weight = bad.nodes[dense].weight + 0.5
    with pytest.raises(BackendError, match=f"node '{dense}': weight holds non-integer values"):
        run_lava(bad, np.zeros((4, 3)))


def test_error_states_and_inputs():
    flt = _lowered_chain()
    dense = next(n for n, op in flt.nodes.items() if isinstance(op, LoihiDense))
    with pytest.raises(BackendError, match=f"node '{dense}': Lava records the states \\(none\\) here"):
        run_lava(flt, np.zeros((4, 3)), record_states=[dense])
    with pytest.raises(BackendError, match="unknown node 'nope'"):
        run_lava(flt, np.zeros((4, 3)), record_states=["nope"])
    from spikecc.errors import InputFileError

    with pytest.raises(InputFileError, match="has shape \\(4, 5\\), expected \\(steps, 3\\)"):
        run_lava(flt, np.zeros((4, 5)))
    with pytest.raises(InputFileError, match="holds only 4"):
        run_lava(flt, np.zeros((4, 3)), steps=10)
    with pytest.raises(InputFileError, match="holds 0.5 at index \\(0, 0\\), but the Input carries binary spikes"):
        run_lava(quantize_for_loihi(flt), np.full((4, 3), 0.5))
    graded = flt.copy()
    graded.annotate("in", signal={"kind": "real"})
    with pytest.raises(InputFileError, match="non-integer values.*quantize_inputs"):
        run_lava(quantize_for_loihi(graded), np.full((4, 3), 0.5))
