"""NIR files written by other frameworks' exporters (norse 1.1.0, sinabs 3.1.3, rockpool 3.1.0): their own
simulation against spikecc's simulation of the file they export.

Each network is built in the framework, simulated there (batch of 1), exported with the framework's own
`to_nir`, written to HDF5 and read back with `spikecc.ir.read`. Where the exporter keeps the framework's
semantics, every spiking layer must match spike for spike at every step (and a readout's state within float32
rounding); where it does not, the test measures the loss (what the file holds, and that the two simulations
differ), which docs/nir-compatibility.md reports.

What each exporter needs (measured here):
- norse (norse/torch/utils/export_nir.py) writes tau = dt / tau_mem_inv instead of 1 / tau_mem_inv, so the
  file's dt/tau is norse's dt * tau_mem_inv only when spikecc's dt is norse's dt squared (1e-6 s for norse's
  default 1e-3 s); IAFCell becomes IF with r = 1 (v <- v + I), i.e. dt = 1. It keeps the batch axis in the
  Input type ([1, C, H, W]) and leaves Conv2d.input_shape None, which nir 1.0.8 cannot write, so the files
  are written without that field, as older NIR releases wrote them (fixture write_nir_omitting_none).
- sinabs (sinabs/nir.py) counts time in steps: IAF becomes IF with r = 1, i.e. dt = 1.
"""

from __future__ import annotations

import warnings

import nir
import norse.torch as norse  # norse, sinabs, rockpool: installed by `make venv` with --no-deps (see Makefile)
import numpy as np
import pytest
import rockpool.nn.modules.torch as rockpool_torch
import sinabs
import torch

from spikecc.backends.cpu import simulate
from spikecc.errors import BackendError, SpikeccWarning
from spikecc.ir import read

NORSE_DT = 1e-3  # norse's default integration step (LIFBoxCell(dt=0.001))
T = 150


def spike_input(shape, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((T, *shape)) < p).astype(np.float32)


def uniform(gen: torch.Generator, n, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def scaled(module: torch.nn.Module, gain: float, gen: torch.Generator) -> torch.nn.Module:
    """A layer with seeded weights times `gain` (so every layer is active but not saturated)."""
    with torch.no_grad():
        module.weight.copy_(gain * torch.randn(module.weight.shape, generator=gen) / module.weight[0].numel() ** 0.5)
        if module.bias is not None:
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return module


def assert_same(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    a, b = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    bad = np.argwhere(a != b)
    assert not len(bad), f"{what}: {len(bad)} values differ, first at (step, neuron) {tuple(bad[0])}"


def mismatches(ref: np.ndarray, got: np.ndarray) -> int:
    return int((ref.reshape(len(ref), -1) != got.reshape(len(got), -1)).sum())


def write_and_read(graph: nir.NIRGraph, path, writer, dt: float):
    writer(path, graph)
    return read(path, dt=dt)


# ------------------------------------------------------------------------------------------------
# norse
# ------------------------------------------------------------------------------------------------
def run_norse(modules: list[torch.nn.Module], x: np.ndarray) -> list[np.ndarray]:
    """Every module's output at every step, norse stepping its cells one step per call."""
    seq = norse.SequentialState(*modules, return_hidden=True)
    state, outs = None, []
    with torch.no_grad():
        for t in range(len(x)):
            hidden, state = seq(torch.as_tensor(x[t])[None], state)
            outs.append([h[0].numpy().copy() for h in hidden])
    return [np.stack([o[i] for o in outs]) for i in range(len(modules))]


def norse_dense(gen: torch.Generator) -> list[torch.nn.Module]:
    """Linear - LIFBoxCell - Linear - LIBoxCell, per-neuron time constants and thresholds."""
    from norse.torch.functional.leaky_integrator_box import LIBoxParameters
    from norse.torch.functional.lif_box import LIFBoxParameters

    lif = LIFBoxParameters(tau_mem_inv=uniform(gen, 16, 50, 200), v_th=uniform(gen, 16, 0.2, 0.4),
                           v_leak=torch.zeros(16))
    li = LIBoxParameters(tau_mem_inv=uniform(gen, 5, 50, 200), v_leak=torch.zeros(5))
    return [scaled(torch.nn.Linear(10, 16), 3.0, gen), norse.LIFBoxCell(lif),
            scaled(torch.nn.Linear(16, 5), 2.0, gen), norse.LIBoxCell(li)]


def test_norse_lif_box_and_li_box_match(write_nir_omitting_none, work_dir):
    gen = torch.Generator().manual_seed(0)
    modules = norse_dense(gen)
    x = spike_input((10,), 0.3, seed=0)
    ref = run_norse(modules, x)
    assert 0.05 < ref[1].mean() < 0.6, ref[1].mean()
    graph = norse.to_nir(norse.SequentialState(*modules), torch.zeros(1, 10))
    assert isinstance(graph.nodes["1"], nir.LIF) and isinstance(graph.nodes["3"], nir.LI)
    # the exporter's time constant: dt / tau_mem_inv (seconds squared), not 1 / tau_mem_inv
    np.testing.assert_allclose(graph.nodes["1"].tau, NORSE_DT / modules[1].p.tau_mem_inv.numpy(), rtol=1e-6)
    g = write_and_read(graph, work_dir / "norse.nir", write_nir_omitting_none, dt=NORSE_DT**2)
    res = simulate(g, x, dtype=np.float32, record=["1", "3"])
    assert_same(ref[1], res.traces["1"], "norse LIFBoxCell spikes")
    np.testing.assert_allclose(res.traces["3"].reshape(T, -1), ref[3].reshape(T, -1), rtol=0, atol=1e-5)
    assert np.abs(ref[3]).max() > 0.1


def test_norse_file_at_the_default_dt_warns_then_stops_at_inf(write_nir_omitting_none, work_dir):
    """At spikecc's default dt (1e-4 s) the norse file's dt/tau is about 10: forward Euler overshoots. spikecc
    says so at load, naming the node and the value; the LI readout (no reset) then grows by about 8x per step
    until float32 overflows, and the run stops there with an error naming the node and the step."""
    gen = torch.Generator().manual_seed(0)
    graph = norse.to_nir(norse.SequentialState(*norse_dense(gen)), torch.zeros(1, 10))
    write_nir_omitting_none(work_dir / "norse.nir", graph)
    with pytest.warns(SpikeccWarning, match=r"node '1' \(LIF\): dt/tau = \d+(\.\d+)? >= 1 for 16 of 16 neurons") as rec:
        g = read(work_dir / "norse.nir")
    assert any("node '3' (LI)" in str(w.message) for w in rec)
    with pytest.raises(BackendError, match=r"^node '3' \(LI\): v became -?inf at step \d+; dt/tau = [\d.]+ >= 1"):
        simulate(g, spike_input((10,), 0.3, seed=0), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpikeccWarning)
        read(work_dir / "norse.nir", dt=NORSE_DT**2)  # the right dt: no warning


def test_norse_conv_with_batch_axis_and_no_input_shape_matches(write_nir_omitting_none, work_dir):
    """norse's conv export: Input [1, 1, 8, 8] (batch axis kept), Conv2d without input_shape, scalar neuron
    parameters, Output [1, 2, 3, 3]."""
    from norse.torch.functional.lif_box import LIFBoxParameters

    gen = torch.Generator().manual_seed(1)
    p = LIFBoxParameters(v_th=torch.tensor(0.3))
    modules = [scaled(torch.nn.Conv2d(1, 3, 3, padding=1), 2.5, gen), norse.LIFBoxCell(p),
               scaled(torch.nn.Conv2d(3, 2, 3, stride=2), 5.0, gen), norse.LIFBoxCell(p)]
    x = spike_input((1, 8, 8), 0.3, seed=1)
    ref = run_norse(modules, x)
    assert ref[1].mean() > 0.05 and ref[3].mean() > 0.03
    graph = norse.to_nir(norse.SequentialState(*modules), torch.zeros(1, 1, 8, 8))
    assert list(graph.nodes["input"].input_type["input"]) == [1, 1, 8, 8]
    assert graph.nodes["0"].input_shape is None
    with pytest.raises(TypeError):  # nir 1.0.8's own writer cannot write it
        nir.write(work_dir / "plain.nir", graph)
    g = write_and_read(graph, work_dir / "norse_conv.nir", write_nir_omitting_none, dt=NORSE_DT**2)
    assert tuple(g.nodes["0"].input_shape) == (8, 8) and tuple(g.nodes["2"].input_shape) == (8, 8)
    res = simulate(g, x, dtype=np.float32, record=["1", "3"])
    assert_same(ref[1], res.traces["1"], "norse conv layer 1")
    assert_same(ref[3], res.traces["3"], "norse conv layer 3")
    assert res.outputs["output"].shape == (T, 2, 3, 3)


def test_norse_iaf_matches_at_dt_one(write_nir_omitting_none, work_dir):
    from norse.torch.functional.iaf import IAFParameters

    gen = torch.Generator().manual_seed(2)
    modules = [scaled(torch.nn.Linear(10, 12), 1.5, gen), norse.IAFCell(IAFParameters(v_th=torch.tensor(0.5)))]
    x = spike_input((10,), 0.3, seed=2)
    ref = run_norse(modules, x)
    assert 0.05 < ref[1].mean() < 0.6
    graph = norse.to_nir(norse.SequentialState(*modules), torch.zeros(1, 10))
    assert isinstance(graph.nodes["1"], nir.IF)
    g = write_and_read(graph, work_dir / "iaf.nir", write_nir_omitting_none, dt=1.0)
    assert_same(ref[1], simulate(g, x, dtype=np.float32, record=["1"]).traces["1"], "norse IAFCell")


def test_norse_lifcell_export_changes_its_semantics(write_nir_omitting_none, work_dir):
    """norse's LIFCell adds its input to the current as a jump after v's update (v sees it one step later);
    NIR's CubaLIF integrates dt/tau_syn * input before v. The exporter writes CubaLIF(w_in = 1) anyway."""
    from norse.torch.functional.lif import LIFParameters

    gen = torch.Generator().manual_seed(3)
    modules = [scaled(torch.nn.Linear(10, 12), 3.0, gen), norse.LIFCell(LIFParameters(v_th=torch.tensor(0.3)))]
    x = spike_input((10,), 0.3, seed=3)
    ref = run_norse(modules, x)
    graph = norse.to_nir(norse.SequentialState(*modules), torch.zeros(1, 10))
    assert isinstance(graph.nodes["1"], nir.CubaLIF) and float(np.asarray(graph.nodes["1"].w_in)) == 1.0
    g = write_and_read(graph, work_dir / "cuba.nir", write_nir_omitting_none, dt=NORSE_DT**2)
    got = simulate(g, x, dtype=np.float32, record=["1"]).traces["1"]
    assert ref[1].mean() > 0.05 and got.mean() > 0.05
    assert mismatches(ref[1], got) > 0.1 * ref[1].size


# ------------------------------------------------------------------------------------------------
# sinabs
# ------------------------------------------------------------------------------------------------
def run_sinabs(model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every child's output, (T, ...): Squeeze layers with batch_size=1 take time as the batch axis."""
    outs: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: outs.__setitem__(k, o.detach().numpy().copy()))
             for k, m in model.named_children()]
    with torch.no_grad():
        model(torch.as_tensor(x))
    for h in hooks:
        h.remove()
    sinabs.reset_states(model)
    return outs


def sinabs_conv_net(gen: torch.Generator, **neuron) -> torch.nn.Sequential:
    """Conv2d - IAF - SumPool2d - Flatten - Linear - IAF (sinabs's Squeeze layers, batch of 1)."""
    import sinabs.layers as sl

    return torch.nn.Sequential(scaled(torch.nn.Conv2d(2, 4, 3), 2.0, gen), sl.IAFSqueeze(batch_size=1, **neuron),
                               sl.SumPool2d(2), torch.nn.Flatten(), scaled(torch.nn.Linear(36, 5), 1.5, gen),
                               sl.IAFSqueeze(batch_size=1, **neuron))


def test_sinabs_single_spike_reset_iaf_matches_at_dt_one(write_nir_omitting_none, work_dir):
    from sinabs.activation import MembraneReset, SingleSpike

    gen = torch.Generator().manual_seed(4)
    model = sinabs_conv_net(gen, spike_fn=SingleSpike, reset_fn=MembraneReset())
    x = spike_input((2, 8, 8), 0.2, seed=4)
    ref = run_sinabs(model, x)
    assert ref["1"].mean() > 0.03 and ref["5"].mean() > 0.05
    graph = sinabs.to_nir(model, torch.zeros(1, 2, 8, 8))
    assert graph.nodes["0"].input_shape is None
    g = write_and_read(graph, work_dir / "sinabs.nir", write_nir_omitting_none, dt=1.0)
    res = simulate(g, x, dtype=np.float32, record=["1", "5"])
    assert_same(ref["1"], res.traces["1"], "sinabs conv IAF")
    assert_same(ref["5"], res.traces["5"], "sinabs output IAF")


def test_sinabs_default_iaf_loses_multispikes_and_subtractive_reset(write_nir_omitting_none, work_dir):
    """sinabs's default IAF emits several spikes per step (MultiSpike) and subtracts the threshold; the file
    says IF with v_reset = 0: one spike at most, reset to zero."""
    gen = torch.Generator().manual_seed(4)
    model = sinabs_conv_net(gen)
    x = spike_input((2, 8, 8), 0.2, seed=4)
    ref = run_sinabs(model, x)
    assert ref["1"].max() >= 2
    graph = sinabs.to_nir(model, torch.zeros(1, 2, 8, 8))
    assert not np.any(np.asarray(graph.nodes["1"].v_reset))
    g = write_and_read(graph, work_dir / "sinabs.nir", write_nir_omitting_none, dt=1.0)
    got = simulate(g, x, dtype=np.float32, record=["1"]).traces["1"]
    assert got.max() == 1 and mismatches(ref["1"], got) > 0.01 * got.size


def test_sinabs_lif_is_exported_with_tau_in_steps(write_nir_omitting_none, work_dir):
    """sinabs's LIF decays by exp(-1/tau) per step and adds its input unscaled; the file says LIF(tau in steps,
    r = 1), whose forward-Euler step at dt = 1 decays by 1 - 1/tau and scales the input by 1/tau. At the
    default dt (1e-4 s) the layer never fires: spikecc warns."""
    import sinabs.layers as sl
    from sinabs.activation import MembraneReset, SingleSpike

    gen = torch.Generator().manual_seed(5)
    model = torch.nn.Sequential(scaled(torch.nn.Linear(10, 8), 3.0, gen), sl.LIFSqueeze(
        tau_mem=torch.full((8,), 10.0), spike_threshold=torch.full((8,), 1.0), batch_size=1, spike_fn=SingleSpike,
        reset_fn=MembraneReset(), norm_input=False))
    x = spike_input((10,), 0.3, seed=5)
    ref = run_sinabs(model, x)
    graph = sinabs.to_nir(model, torch.zeros(1, 10))
    assert np.all(np.asarray(graph.nodes["1"].tau) == 10.0) and np.all(np.asarray(graph.nodes["1"].r) == 1.0)
    g = write_and_read(graph, work_dir / "lif.nir", write_nir_omitting_none, dt=1.0)
    got = simulate(g, x, dtype=np.float32, record=["1"]).traces["1"]
    assert ref["1"].mean() > 0.05 and mismatches(ref["1"], got) > 0.05 * got.size
    with pytest.warns(SpikeccWarning, match=r"node '1' \(LIF\) never fired in 150 steps \(dt = 0.0001 s\)"):
        res = simulate(read(work_dir / "lif.nir"), x)
    assert res.silent == ["1"]


# ------------------------------------------------------------------------------------------------
# rockpool
# ------------------------------------------------------------------------------------------------
def test_rockpool_export_drops_bias_and_recurrence_and_changes_the_neuron(work_dir):
    """rockpool's LIFTorch: isyn <- exp(-dt/tau_syn)(isyn + x), v <- exp(-dt/tau_mem) v + isyn + bias, several
    spikes per step, subtractive reset. The export writes CubaLIF with v_leak = 0 (the bias is dropped),
    r = tau exp(-dt/tau)/dt, no v_reset (zero) and no recurrent weights. The files load and run; the spike
    trains differ."""
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch

    torch.manual_seed(6)
    net = Sequential(LinearTorch((10, 8)), LIFTorch(8, tau_mem=0.02, tau_syn=0.01, dt=1e-3, bias=0.05))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    x = spike_input((10,), 0.3, seed=6)
    with torch.no_grad():
        _, _, rec = net(torch.as_tensor(x)[None], record=True)
    ref = rec["1_LIFTorch_output"][0].numpy()
    graph = rockpool_torch.to_nir(net, torch.zeros(1, 10))
    lif = graph.nodes["1_LIFTorch"]
    assert isinstance(lif, nir.CubaLIF) and not np.any(np.asarray(lif.v_leak))  # bias 0.05 lost
    nir.write(work_dir / "rockpool.nir", graph)
    got = simulate(read(work_dir / "rockpool.nir", dt=1e-3), x, record=["1_LIFTorch"]).traces["1_LIFTorch"]
    assert ref.mean() > 0.05 and got.mean() > 0.05
    assert mismatches(ref, got) > 0.05 * got.size

    recurrent = Sequential(LinearTorch((10, 8)), LIFTorch(8, has_rec=True, tau_mem=0.02, tau_syn=0.01, dt=1e-3))
    exported = rockpool_torch.to_nir(recurrent, torch.zeros(1, 10))
    assert not any(dst == src for src, dst in exported.edges)
    assert sorted(exported.nodes) == ["0_LinearTorch", "1_LIFTorch", "input", "output"]  # w_rec is gone
