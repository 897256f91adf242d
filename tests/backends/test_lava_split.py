"""Neuron layers split by value for Loihi 2 (spikecc.backends.lava.split) against spikecc's CPU simulator.

Loihi 2 holds a LIF's du, dv and thresholds once per process (lava/proc/lif/process.py declares them
`Var(shape=(1,))`), so the split plan gives every group of neurons with equal values a process of its own and
cuts the synapse layers around it into blocks. Checked here:

1. random networks whose layers draw their decays and thresholds from two values each (so a layer splits into
   a few groups): recurrence (a block per pair of groups), a ternary layer, a skip connection, an LI readout
   (read as v, one Monitor per group), a synapse layer straight into an Output, graded inputs, biases. The
   split plan run in Lava's simulator equals the whole plan and spikecc's CPU simulator: bit for bit in fixed
   point (outputs and u/v states), spike for spike in float (voltages to rounding: the blocks add their
   partial sums in another order); so does the generated module, in a fresh Python without spikecc;
2. hand-built fixed-point graphs: split blocks whose signs differ from their layer's keep the layer's sign
   mode (it sets how Lava's Dense truncates weights); layers that cannot be split exactly (a synapse layer
   shared with another layer, one that floors its sums) stay whole, named with the reason, and the generated
   module's hardware check refuses them in one line while its simulation still agrees with the CPU;
3. every example network (examples/networks): `spikecc compile` says what it split, the generated module
   lists nothing it could not split, passes its hardware check and builds only processes with one du, dv and
   threshold each; two compiles give the same bytes. The smallest (cuba_lif, 135 processes) runs its split plan
   in Lava's simulator, in a fresh Python without spikecc, equal to the CPU simulator. The others split every
   neuron into a group of its own (their snntorch export draws per-neuron decays and thresholds): 373 to 3,067
   processes, each an OS process in Lava's simulator, too many to run here; for them the checks stop at the
   built processes.

Not tested: a run under Loihi2HwCfg itself (lava-loihi, Intel's proprietary extension, is not installed here).
The generated module's hardware path is tested up to the run call: its check, its config and its processes.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from spikecc.backends.cpu import Simulator
from spikecc.backends.lava import plan_network, run_lava, write_lava_module
from spikecc.cli import main
from spikecc.compiler.passes import lower_for_loihi, quantize_for_loihi, quantize_inputs
from spikecc.errors import BackendError
from spikecc.ir import Graph, TernaryLIF, read, write
from spikecc.ir.loihi_ops import LOIHI_NEURON_OPS, LoihiDense, LoihiLIF, LoihiTernaryLIF

DT = 1e-4
STEPS = 60
PER_PROCESS = {"LoihiLIF": ("du", "dv", "vth"), "LoihiTernaryLIF": ("du", "dv", "vth_hi", "vth_lo")}


# ------------------------------------------------------------------------------------------------------------------
# networks whose layers take a few values
# ------------------------------------------------------------------------------------------------------------------
def _two_values(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.choice(rng.uniform(lo, hi, 2), n)


def _lif(rng: np.random.Generator, n: int) -> nir.LIF:
    """snntorch-style LIF (v <- beta v + I), beta and threshold each one of two values."""
    tau = DT / (1 - _two_values(rng, n, 0.6, 0.95))
    return nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(n), v_threshold=_two_values(rng, n, 0.7, 1.3),
                   v_reset=np.zeros(n))


def _linear(rng: np.random.Generator, n_out: int, n_in: int, bias: bool = False) -> nir.NIRNode:
    w = rng.normal(0.35, 0.7, (n_out, n_in)) * 3.0 / np.sqrt(n_in)
    return nir.Affine(weight=w, bias=rng.uniform(-0.05, 0.15, n_out)) if bias else nir.Linear(weight=w)


def few_valued_graph(seed: int = 5) -> tuple[Graph, dict[str, np.ndarray]]:
    """Three networks in one graph (module docstring, item 1) and their inputs:

    a_: in(10) -> fc1 -> l1(12) <-> rec1, l1 -> fc2 -> l2(9, ternary) -> fc3 -> l3(6) -> out; l1 -> skip -> l3;
        l1 -> hid (Output)
    b_: in(8, real) -> fc1 (Affine) -> l1(10) -> fc2 -> ro(7, LI readout) -> out; l1 -> cur -> currents (Output)
    """
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": DT})

    def out(name: str, src: str, n: int) -> None:
        g.add_node(name, nir.Output(output_type={"output": np.array([n])}))
        g.connect(src, name)

    def chain(*pairs: tuple[str, str]) -> None:
        for a, b in pairs:
            g.connect(a, b)

    g.add_node("a_in", nir.Input(input_type={"input": np.array([10])}), signal={"kind": "binary"})
    g.add_node("a_fc1", _linear(rng, 12, 10))
    g.add_node("a_l1", _lif(rng, 12))
    g.add_node("a_rec1", nir.Linear(weight=rng.normal(0.0, 0.8, (12, 12)) / np.sqrt(12)))
    g.add_node("a_fc2", _linear(rng, 9, 12))
    tern = _lif(rng, 9)
    th = _two_values(rng, 9, 0.6, 1.1)
    g.add_node("a_l2", TernaryLIF(tau=tern.tau, r=tern.r, v_leak=tern.v_leak, v_threshold_hi=th, v_threshold_lo=-th,
                                  v_reset=np.zeros(9), amplitude=1.0))
    g.add_node("a_fc3", _linear(rng, 6, 9))
    g.add_node("a_skip", _linear(rng, 6, 12))
    g.add_node("a_l3", _lif(rng, 6))
    chain(("a_in", "a_fc1"), ("a_fc1", "a_l1"), ("a_l1", "a_rec1"), ("a_rec1", "a_l1"), ("a_l1", "a_fc2"),
          ("a_fc2", "a_l2"), ("a_l2", "a_fc3"), ("a_fc3", "a_l3"), ("a_l1", "a_skip"), ("a_skip", "a_l3"))
    out("a_out", "a_l3", 6)
    out("a_hid", "a_l1", 12)

    g.add_node("b_in", nir.Input(input_type={"input": np.array([8])}))  # real values: graded 8-bit payloads
    g.add_node("b_fc1", _linear(rng, 10, 8, bias=True))
    g.add_node("b_l1", _lif(rng, 10))
    g.add_node("b_fc2", _linear(rng, 7, 10))
    tau = DT / (1 - _two_values(rng, 7, 0.7, 0.95))
    g.add_node("b_ro", nir.LI(tau=tau, r=tau / DT, v_leak=np.zeros(7)))
    g.add_node("b_cur", _linear(rng, 4, 10))
    chain(("b_in", "b_fc1"), ("b_fc1", "b_l1"), ("b_l1", "b_fc2"), ("b_fc2", "b_ro"), ("b_l1", "b_cur"))
    out("b_out", "b_ro", 7)
    out("b_currents", "b_cur", 4)

    inputs = {"a_in": (rng.random((STEPS, 10)) < 0.3).astype(np.int64),
              "b_in": np.where(rng.random((STEPS, 8)) < 0.4, rng.uniform(-0.5, 1.0, (STEPS, 8)), 0.0)}
    return g, inputs


SPLIT_LAYERS = ["a_l1", "a_l2", "a_l3", "b_l1", "b_ro"]
READOUTS = {"b_out": "b_ro"}  # Output -> LI readout: Lava reads its v, the CPU simulator's state


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(nir_path: Path, out: Path) -> str:
    result = CliRunner().invoke(main, ["compile", str(nir_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result.output


def neuron_nodes(g: Graph) -> list[str]:
    return [n for n, op in g.nodes.items() if isinstance(op, LOIHI_NEURON_OPS)]


def value_tuples(op) -> list[tuple]:
    """Per neuron, its per-process values (what Loihi 2 holds once per process), straight from the op."""
    names = PER_PROCESS[type(op).__name__]
    return list(zip(*(np.asarray(getattr(op, k)).reshape(-1).tolist() for k in names), strict=True))


@pytest.fixture(scope="module")
def graphs() -> dict[str, tuple[Graph, dict[str, np.ndarray]]]:
    g, x = few_valued_graph()
    flt = lower_for_loihi(g)
    fixed = quantize_for_loihi(flt)
    return {"float": (flt, x), "fixed": (fixed, quantize_inputs(fixed, x)), "nir": (g, x)}


@pytest.fixture(scope="module")
def runs(graphs) -> dict[str, dict]:
    """Per mode: the CPU simulator, Lava with the whole plan and Lava with the split plan, all neuron states."""
    out = {}
    for mode in ("fixed", "float"):
        g, x = graphs[mode]
        states = neuron_nodes(g)
        out[mode] = {"cpu": Simulator(g, mode=mode).run(x, record_states=states),
                     "whole": run_lava(g, x, record_states=states),
                     "split": run_lava(g, x, record_states=states, split=True)}
    return out


def _cpu_output(cpu, out: str) -> np.ndarray:
    return cpu.states[READOUTS[out]]["v"] if out in READOUTS else cpu.outputs[out]


# ------------------------------------------------------------------------------------------------------------------
# 1. few-valued random networks
# ------------------------------------------------------------------------------------------------------------------
def test_each_value_group_is_one_process_with_its_values(graphs):
    for mode in ("fixed", "float"):
        g, _ = graphs[mode]
        plan = plan_network(g, split=True)
        assert sorted(plan.splits) == SPLIT_LAYERS and plan.kept == {}, mode
        for node in SPLIT_LAYERS:
            values = value_tuples(g.nodes[node])
            assert 2 <= len(set(values)) <= 4  # two values per parameter, drawn per neuron
            parts = plan.parts[node]
            assert len(parts) == len(set(values)), node  # one process per distinct value tuple, no more
            covered = np.sort(np.concatenate([p.index for p in parts]))
            np.testing.assert_array_equal(covered, np.arange(len(values)))
            names = PER_PROCESS[type(g.nodes[node]).__name__]
            for p in parts:
                kwargs = plan.specs[p.process].kwargs
                assert kwargs["shape"] == (p.index.size,)
                got = tuple(kwargs[k] for k in names)
                assert all(np.ndim(v) == 0 for v in got), (node, got)
                assert {values[i] for i in p.index} == {got}, node
        # the recurrent layer's synapses: one block per (row group, column group) with any non-zero weight
        k = len(plan.parts["a_l1"])
        blocks = [k for k in plan.specs if k.startswith("a_rec1[")]
        assert len(blocks) == k * k


def test_split_plan_equals_whole_plan_and_cpu_bit_for_bit(runs, graphs):
    g, _ = graphs["fixed"]
    r = runs["fixed"]
    for out in g.outputs():
        want = _cpu_output(r["cpu"], out)
        np.testing.assert_array_equal(r["split"].outputs[out], want, err_msg=out)
        np.testing.assert_array_equal(r["split"].outputs[out], r["whole"].outputs[out], err_msg=out)
    for node in neuron_nodes(g):
        for var in ("u", "v"):
            np.testing.assert_array_equal(r["split"].states[node][var], r["cpu"].states[node][var],
                                          err_msg=f"{node}.{var}")
    for node in ("a_l1", "a_l2", "a_l3", "b_l1"):  # every kind of layer fires
        assert np.abs(r["cpu"].outputs.get(node, r["cpu"].states[node]["v"])).sum() > 0, node
    assert (r["split"].outputs["a_hid"].sum(axis=0) > 0).sum() >= 6
    assert np.any(r["split"].outputs["b_currents"] != 0) and np.any(r["split"].outputs["b_out"] != 0)


def test_split_plan_equals_cpu_spike_for_spike_in_float(runs, graphs):
    g, _ = graphs["float"]
    r = runs["float"]
    for out in g.outputs():
        want, got = _cpu_output(r["cpu"], out), r["split"].outputs[out]
        if out in READOUTS or out == "b_currents":  # voltages and currents: to rounding
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=out)
        else:
            np.testing.assert_array_equal(got, want, err_msg=out)
    for node in neuron_nodes(g):
        np.testing.assert_allclose(r["split"].states[node]["v"], r["cpu"].states[node]["v"], rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------------------------
# 2. sign modes of the blocks
# ------------------------------------------------------------------------------------------------------------------
def test_blocks_keep_their_layers_sign_mode():
    """Layer weights of both signs with 6 weight bits: Lava's Dense truncates 3 low bits (mixed sign mode).
    Group 0's rows are all positive and group 1's all negative with a -256: as blocks of their own, Lava would
    call them excitatory (2 bits truncated: 4 and 12 survive) and inhibitory (clipped to -255, then 252), unless
    the block keeps the layer's sign mode. The CPU simulator applies the layer's rule (LoihiDense)."""
    w = np.array([[4, 12, 20, 36], [-256, -8, -40, -16], [4, 12, 28, 44], [-256, -24, -8, -48]])
    g = Graph(metadata={"dt": DT, "fixed_point": True})
    g.add_node("in", nir.Input(input_type={"input": np.array([4])}), signal={"kind": "binary"})
    g.add_node("d", LoihiDense(weight=w, num_weight_bits=6), fixed_point=True)
    g.add_node("l", LoihiLIF(du=np.full(4, 4095), dv=np.full(4, 1000), vth=np.array([3, 9, 3, 9]),
                             bias_mant=np.array([40, 2000, 40, 2000]), bias_exp=np.zeros(4, int)), fixed_point=True)
    g.add_node("out", nir.Output(output_type={"output": np.array([4])}))
    for a, b in [("in", "d"), ("d", "l"), ("l", "out")]:
        g.connect(a, b)
    plan = plan_network(g, split=True)
    assert [p.index.tolist() for p in plan.parts["l"]] == [[0, 2], [1, 3]]
    assert [plan.specs[f"d[{i}]"].kwargs["sign_mode"] for i in (0, 1)] == [1, 1]  # Lava's SignMode.MIXED
    x = (np.random.default_rng(4).random((40, 4)) < 0.6).astype(np.int64)
    cpu = Simulator(g, mode="fixed").run(x, record_states=["l"])
    lv = run_lava(g, x, record_states=["l"], split=True)
    np.testing.assert_array_equal(lv.states["l"]["u"], cpu.states["l"]["u"])
    np.testing.assert_array_equal(lv.outputs["out"], cpu.outputs["out"])
    # the currents would differ under the blocks' own sign modes (12 -> 12 instead of 8, -256 -> -252)
    assert np.any(cpu.states["l"]["u"][:, 0] % (8 << 6) == 0) and cpu.outputs["out"].sum() > 0


def _loihi_lif(dv: list[int], vth: int = 5) -> LoihiLIF:
    n = len(dv)
    return LoihiLIF(du=np.full(n, 4095), dv=np.array(dv), vth=np.full(n, vth), bias_mant=np.zeros(n, int),
                    bias_exp=np.zeros(n, int))


def test_layers_that_cannot_be_split_are_named_and_refused_on_hardware(tmp_path):
    """l1 feeds a synapse layer with weight_exp < 0, which floors its sum: cut into per-group parts it would
    floor each part. la and lb share one synapse layer, whose rows cannot follow two layers' groups. All three
    stay whole; l2 (fed by the flooring layer, which it alone reads) splits."""
    g = Graph(metadata={"dt": DT, "fixed_point": True})
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}), signal={"kind": "binary"})
    nodes = {"d1": LoihiDense(weight=np.full((4, 3), 60)), "l1": _loihi_lif([10, 20, 10, 20]),
             "d2": LoihiDense(weight=np.full((2, 4), 70), weight_exp=-1), "l2": _loihi_lif([30, 90]),
             "d3": LoihiDense(weight=np.array([[50, 90, 0], [120, 0, 40]])), "la": _loihi_lif([5, 50]),
             "lb": _loihi_lif([5, 60])}
    for name, op in nodes.items():
        g.add_node(name, op, fixed_point=True)
    for name, n in (("out2", 2), ("outa", 2), ("outb", 2)):
        g.add_node(name, nir.Output(output_type={"output": np.array([n])}))
    for a, b in [("in", "d1"), ("d1", "l1"), ("l1", "d2"), ("d2", "l2"), ("l2", "out2"), ("in", "d3"), ("d3", "la"),
                 ("d3", "lb"), ("la", "outa"), ("lb", "outb")]:
        g.connect(a, b)
    plan = plan_network(g, split=True)
    assert list(plan.splits) == ["l2"] and list(plan.kept) == ["l1", "la", "lb"]
    assert plan.kept["l1"] == ("its synapse layer 'd2' has weight_exp -1 < 0, which floors each sum, so the sum "
                               "cannot be cut into per-group parts exactly")
    assert plan.kept["la"] == "its synapse layer 'd3' also feeds 'lb', so its rows cannot follow la's groups"

    write_lava_module(g, tmp_path / "m")
    mod = _import(tmp_path / "m" / "lava_network.py", "spikecc_test_split_kept")
    assert list(mod.NON_UNIFORM) == ["l1", "la", "lb"] and list(mod.SPLITS) == ["l2"]
    with pytest.raises(ValueError) as e:
        mod.check_hardware()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("layers l1, la, lb keep several du/dv/threshold values in one process")
    assert "l1: its synapse layer 'd2' has weight_exp -1 < 0" in msg
    with pytest.raises(ValueError, match="layers l1, la, lb keep"):
        mod.run(np.zeros((5, 3)), hardware=True)  # refused before any process is built
    x = (np.random.default_rng(6).random((30, 3)) < 0.5).astype(np.int64)
    cpu = Simulator(g, mode="fixed").run(x)
    out = mod.run(x, hardware=False, split=True)  # in simulation the split plan still runs, kept layers whole
    for o in ("out2", "outa", "outb"):
        np.testing.assert_array_equal(out[o], cpu.outputs[o], err_msg=o)
    assert all(cpu.outputs[o].sum() > 0 for o in ("out2", "outa", "outb"))


def test_a_ternary_layer_that_lava_cannot_simulate_whole_and_cannot_split_is_an_error():
    """Lava's fixed-point TernaryLIF model takes one vth_hi/vth_lo per process, so even the simulation plan splits
    a layer whose thresholds differ; where it cannot (here its synapse layer also feeds another layer), the plan
    refuses in one line instead of Lava failing inside a forked process."""
    g = Graph(metadata={"dt": DT, "fixed_point": True})
    g.add_node("in", nir.Input(input_type={"input": np.array([3])}), signal={"kind": "binary"})
    g.add_node("d", LoihiDense(weight=np.full((2, 3), 60)), fixed_point=True)
    g.add_node("t", LoihiTernaryLIF(du=np.full(2, 4095), dv=np.full(2, 10), vth_hi=np.array([5, 9]),
                                    vth_lo=np.array([-5, -9]), bias_mant=np.zeros(2, int), bias_exp=np.zeros(2, int)),
               fixed_point=True)
    g.add_node("l", _loihi_lif([10, 10]), fixed_point=True)
    for name in ("out_t", "out_l"):
        g.add_node(name, nir.Output(output_type={"output": np.array([2])}))
    for a, b in [("in", "d"), ("d", "t"), ("d", "l"), ("t", "out_t"), ("l", "out_l")]:
        g.connect(a, b)
    with pytest.raises(BackendError) as e:
        plan_network(g)
    assert str(e.value) == ("node 't': Lava's TernaryLIF model takes one vth_hi and one vth_lo per process, and this "
                            "layer's differ between neurons, but it cannot be split by value: its synapse layer 'd' "
                            "also feeds 'l', so its rows cannot follow t's groups; give its neurons equal values")


def test_compile_says_when_there_is_nothing_to_split(tmp_path):
    g = Graph(metadata={"dt": DT})
    g.add_node("input", nir.Input(input_type={"input": np.array([4])}))
    g.add_node("fc", nir.Linear(weight=np.full((3, 4), 0.5)))
    tau = np.full(3, DT / 0.2)
    g.add_node("lif", nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3)))
    g.add_node("output", nir.Output(output_type={"output": np.array([3])}))
    for a, b in [("input", "fc"), ("fc", "lif"), ("lif", "output")]:
        g.connect(a, b)
    write(g, tmp_path / "uniform.nir")
    printed = _compile(tmp_path / "uniform.nir", tmp_path / "build")
    assert "lava: every population has one du/dv/threshold value per layer; nothing to split for Loihi 2" in printed
    lava = json.loads((tmp_path / "build" / "manifest.json").read_text())["lava"]
    assert lava == {"split": {}, "kept_whole": {}, "processes": {"whole": 3, "split": 3}}  # source, Dense, LIF
    source = (tmp_path / "build" / "lava" / "lava_network.py").read_text()
    assert "_build_split = _build_whole" in source and "SPLIT = WHOLE" in source


# ------------------------------------------------------------------------------------------------------------------
# the generated module, in a Python without spikecc
# ------------------------------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["spikecc"] = None  # `import spikecc` (and spikecc.anything) now raises ImportError
    import numpy as np
    folder, steps = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, folder)
    import lava_network as m
    data = np.load(folder + "/inputs.npz")
    inputs = {k: data[k][:steps] for k in data.files}
    np.savez(folder + "/split.npz", **m.run(inputs, steps, hardware=False, split=True))
    if len(sys.argv) > 3:
        np.savez(folder + "/whole.npz", **m.run(inputs, steps, hardware=False))
    try:
        m.check_hardware()
        refusal = None
    except ValueError as e:
        refusal = str(e)
    procs = m.build(inputs, steps, split=True)
    values = {name: [np.size(getattr(p, k).init) for k in ("du", "dv", "vth", "vth_hi", "vth_lo") if hasattr(p, k)]
              for name, p in procs.items() if hasattr(p, "du")}
    loaded = sorted(k for k in sys.modules if k.split(".")[0] == "spikecc" and sys.modules[k] is not None)
    json.dump({"refusal": refusal, "values": values, "config": type(m.run_config(True)).__name__,
               "spikecc_loaded": loaded}, open(folder + "/report.json", "w"))
""")


def run_child(fresh_python, folder: Path, steps: int, whole: bool = False) -> dict:
    """Run the generated module in `folder` in a fresh Python that cannot import spikecc (CHILD)."""
    rc, _, err = fresh_python(["-c", CHILD, str(folder), str(steps), *(["whole"] if whole else [])], folder, 300)
    assert rc == 0, err[-3000:]
    report = json.loads((folder / "report.json").read_text())
    assert report["spikecc_loaded"] == []
    return report


def test_generated_module_runs_the_split_plan_without_spikecc(tmp_path, graphs, runs, fresh_python):
    g, _ = graphs["fixed"]
    _, real_x = graphs["nir"]
    folder = tmp_path / "module"
    write_lava_module(g, folder)
    write_lava_module(g, tmp_path / "again")
    for p in sorted(folder.iterdir()):
        assert p.read_bytes() == (tmp_path / "again" / p.name).read_bytes(), p.name
    np.savez(folder / "inputs.npz", **real_x)  # the module quantizes real inputs itself, as `spikecc lava` does
    report = run_child(fresh_python, folder, STEPS, whole=True)
    split, whole = np.load(folder / "split.npz"), np.load(folder / "whole.npz")
    cpu = runs["fixed"]["cpu"]
    for out in g.outputs():
        np.testing.assert_array_equal(split[out], _cpu_output(cpu, out), err_msg=out)
        np.testing.assert_array_equal(whole[out], split[out], err_msg=out)
    # every neuron process of the split plan holds one du, dv and threshold: the hardware check passes
    values = report["values"]
    assert {n.split("[")[0] for n in values} == set(SPLIT_LAYERS)
    assert all(sizes == [1] * len(sizes) for sizes in values.values())
    assert report["refusal"] is None and report["config"] == "Loihi2HwCfg"


# ------------------------------------------------------------------------------------------------------------------
# 3. the example networks
# ------------------------------------------------------------------------------------------------------------------
EXAMPLES = ["ff_lif", "cuba_lif", "conv_lif", "recurrent_rleaky"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_builds_split_every_layer_and_pass_the_hardware_check(name, networks_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    printed = _compile(networks_dir / f"{name}.nir", first)
    _compile(networks_dir / f"{name}.nir", second)
    for p in sorted(q for q in first.rglob("*") if q.is_file()):
        assert p.read_bytes() == (second / p.relative_to(first)).read_bytes(), p
    lowered = read(first / "lowered.nir")
    # what should split, from the lowered graph itself: every neuron layer whose per-process values differ
    expected = {n: len(set(value_tuples(op))) for n, op in lowered.nodes.items()
                if isinstance(op, LOIHI_NEURON_OPS) and len(set(value_tuples(op))) > 1}
    assert expected  # snntorch's export draws per-neuron decays and thresholds
    manifest = json.loads((first / "manifest.json").read_text())["lava"]
    assert manifest["kept_whole"] == {}
    assert {n: s["groups"] for n, s in manifest["split"].items()} == expected
    line = next(ln for ln in printed.splitlines() if ln.startswith("lava: split"))
    assert line.startswith(f"lava: split {len(expected)} population(s) by value for Loihi 2: ")
    for n, k in expected.items():
        assert f"{n} ({lowered.nodes[n].du.size} -> {k} groups by " in line
    assert f"{manifest['processes']['split']:,} Lava processes on hardware" in line

    mod = _import(first / "lava" / "lava_network.py", f"spikecc_test_split_{name}")
    assert mod.NON_UNIFORM == {} and set(mod.SPLITS) == set(expected)
    mod.check_hardware()  # passes: nothing left whole
    with pytest.raises(ValueError, match="run the split plan"):
        mod.check_hardware(split=False)
    assert type(mod.run_config(True)).__name__ == "Loihi2HwCfg"
    procs = mod.build(None, 1, split=True)
    assert len(procs) == manifest["processes"]["split"]
    neurons = [p for p in procs.values() if hasattr(p, "vth")]
    assert sum(int(np.prod(p.v.shape)) for p in neurons) == sum(lowered.nodes[n].du.size for n in expected)
    for p in neurons:
        for k in ("du", "dv", "vth"):
            assert np.size(getattr(p, k).init) == 1, (p.name, k)


def test_cuba_example_split_plan_runs_in_lava_equal_to_cpu(networks_dir, tmp_path, fresh_python):
    build = tmp_path / "build"
    _compile(networks_dir / "cuba_lif.nir", build)
    lowered = read(build / "lowered.nir")
    x = np.load(networks_dir / "cuba_lif.input.npy").astype(np.float64)[:STEPS]
    folder = build / "lava"
    np.savez(folder / "inputs.npz", input=x)
    report = run_child(fresh_python, folder, STEPS)
    assert report["refusal"] is None and all(s == [1, 1, 1] for s in report["values"].values())
    got = np.load(folder / "split.npz")["output"]
    want = Simulator(lowered, mode="fixed").run(quantize_inputs(lowered, x)).outputs["output"]
    np.testing.assert_array_equal(got, want)
    assert want.sum() > 5
