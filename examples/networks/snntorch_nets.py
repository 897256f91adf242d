"""The snntorch networks behind the example NIR files, rebuilt exactly from fixed seeds.

`make_networks.py` exports them; the tests import this module to rebuild the same torch networks and run
snntorch's own simulation next to spikecc's. Everything is float32 (snntorch's spikes are float32).

Conventions (snntorch 1.0.0's export_to_nir):
- neuron parameters are per neuron (snntorch's exporter fails on scalar beta/threshold);
- reset is "zero" and, for Synaptic and RLeaky, `reset_delay=False`: those are the settings whose NIR export
  keeps snntorch's semantics. `reset_mechanism="subtract"` and Synaptic/RLeaky with `reset_delay=True` are
  available through the arguments so the tests can show where the export loses the semantics.
- every neuron uses `init_hidden=True`, so a network is an `nn.Sequential` called once per time step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import nir
import numpy as np
import snntorch as snn
import torch
from torch import nn

STEPS = 300  # length of the saved input spike trains
DT = 1e-4  # the step snntorch's exporter assumes (tau = dt / (1 - beta))


def _uniform(gen: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float32)


def init_linear(layer: nn.Module, gen: torch.Generator, gain: float, bias: bool = True) -> nn.Module:
    """Seeded weights, independent of torch's global RNG: uniform in +-gain/sqrt(fan_in), plus a small
    positive shift so that sparse binary input still drives the next layer."""
    with torch.no_grad():
        w = layer.weight
        fan_in = int(np.prod(w.shape[1:]))
        w.copy_(_uniform(gen, w.shape, -1.0, 1.0) * gain / np.sqrt(fan_in) + 0.3 * gain / np.sqrt(fan_in))
        if layer.bias is not None:
            if bias:
                layer.bias.copy_(_uniform(gen, layer.bias.shape, -0.05, 0.1))
            else:
                layer.bias.zero_()
    return layer


def leaky(gen: torch.Generator, shape, reset: str = "zero", reset_delay: bool = True,
          beta=(0.75, 0.95), threshold=(0.8, 1.2)) -> snn.Leaky:
    """Leaky keeps snntorch's default reset_delay=True: with reset "zero" it only zeroes the old membrane,
    which is the same as NIR's immediate reset (the tests check both settings)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return snn.Leaky(beta=_uniform(gen, shape, *beta), threshold=_uniform(gen, shape, *threshold),
                     init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay)


def synaptic(gen: torch.Generator, n: int, reset: str = "zero", reset_delay: bool = False,
             alpha=(0.5, 0.85), beta=(0.75, 0.95), threshold=(0.8, 1.2)) -> snn.Synaptic:
    return snn.Synaptic(alpha=_uniform(gen, (n,), *alpha), beta=_uniform(gen, (n,), *beta),
                        threshold=_uniform(gen, (n,), *threshold), init_hidden=True,
                        reset_mechanism=reset, reset_delay=reset_delay)


def rleaky(gen: torch.Generator, n: int, reset: str = "zero", reset_delay: bool = False, gain: float = 1.0,
           beta=(0.75, 0.95), threshold=(0.8, 1.2)) -> snn.RLeaky:
    layer = snn.RLeaky(beta=_uniform(gen, (n,), *beta), threshold=_uniform(gen, (n,), *threshold),
                       all_to_all=True, linear_features=n, init_hidden=True,
                       reset_mechanism=reset, reset_delay=reset_delay)
    with torch.no_grad():  # recurrent weights centred on zero: excitation and inhibition
        layer.recurrent.weight.copy_(_uniform(gen, (n, n), -1.0, 1.0) * gain / np.sqrt(n))
        layer.recurrent.bias.copy_(_uniform(gen, (n,), -0.05, 0.05))
    return layer


# ------------------------------------------------------------------------------------------------
# the four example networks
# ------------------------------------------------------------------------------------------------
def ff_lif(seed: int = 0, reset: str = "zero", reset_delay: bool = True) -> nn.Sequential:
    """Linear(12,20) -> Leaky -> Linear(20,16) -> Leaky -> Linear(16,4) -> Leaky."""
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        init_linear(nn.Linear(12, 20), g, 2.0), leaky(g, 20, reset, reset_delay),
        init_linear(nn.Linear(20, 16), g, 1.0), leaky(g, 16, reset, reset_delay),
        init_linear(nn.Linear(16, 4), g, 1.0), leaky(g, 4, reset, reset_delay),
    )


def cuba_lif(seed: int = 1, reset: str = "zero", reset_delay: bool = False) -> nn.Sequential:
    """Linear(10,16) -> Synaptic -> Linear(16,6) -> Synaptic (current-based LIF, exported as CubaLIF)."""
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        init_linear(nn.Linear(10, 16), g, 0.5), synaptic(g, 16, reset, reset_delay),
        init_linear(nn.Linear(16, 6), g, 0.25), synaptic(g, 6, reset, reset_delay),
    )


def recurrent_rleaky(seed: int = 2, reset: str = "zero", reset_delay: bool = False) -> nn.Sequential:
    """Linear(8,16) -> RLeaky(16, all-to-all recurrent Linear) -> Linear(16,5) -> Leaky."""
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        init_linear(nn.Linear(8, 16), g, 2.0), rleaky(g, 16, reset, reset_delay, gain=1.5),
        init_linear(nn.Linear(16, 5), g, 2.5), leaky(g, 5, reset),
    )


def conv_lif(seed: int = 3, reset: str = "zero") -> nn.Sequential:
    """Conv2d(1->4, 3x3, pad 1) -> Leaky(4x8x8) -> AvgPool2d(2) -> Flatten -> Linear(64,10) -> Leaky, on 1x8x8."""
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(
        init_linear(nn.Conv2d(1, 4, 3, padding=1), g, 2.5), leaky(g, (4, 8, 8), reset),
        nn.AvgPool2d(2), nn.Flatten(),
        init_linear(nn.Linear(64, 10), g, 1.5), leaky(g, 10, reset),
    )


# name -> (builder, input shape excluding time, input spike probability)
EXAMPLES: dict[str, tuple[Callable[..., nn.Sequential], tuple[int, ...], float]] = {
    "ff_lif": (ff_lif, (12,), 0.25),
    "cuba_lif": (cuba_lif, (10,), 0.25),
    "recurrent_rleaky": (recurrent_rleaky, (8,), 0.25),
    "conv_lif": (conv_lif, (1, 8, 8), 0.3),
}


def input_spikes(shape: tuple[int, ...], steps: int = STEPS, p: float = 0.25, seed: int = 0) -> np.ndarray:
    """Bernoulli(p) binary spike train, float32, shaped (steps, *shape)."""
    rng = np.random.default_rng(seed)
    return (rng.random((steps, *shape)) < p).astype(np.float32)


def example_input(name: str, steps: int = STEPS) -> np.ndarray:
    _, shape, p = EXAMPLES[name]
    return input_spikes(shape, steps, p, seed=100 + sorted(EXAMPLES).index(name))


# ------------------------------------------------------------------------------------------------
# export and snntorch's own simulation
# ------------------------------------------------------------------------------------------------
def export(net: nn.Module, input_shape: tuple[int, ...]) -> nir.NIRGraph:
    """snntorch's exporter, as documented: a batch-1 sample and `ignore_dims=[0]`."""
    from snntorch.export_nir import export_to_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_to_nir(net, torch.zeros((1, *input_shape)), ignore_dims=[0])


NEURON_TYPES = (snn.Leaky, snn.Synaptic, snn.RLeaky)


def neuron_layers(net: nn.Sequential) -> list[str]:
    """Names (the Sequential indices, which are also the exported node names) of the spiking layers."""
    return [name for name, m in net.named_children() if isinstance(m, NEURON_TYPES)]


def reset_state(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, NEURON_TYPES):
            for buf in ("mem", "syn", "spk"):
                if hasattr(m, buf):
                    setattr(m, buf, torch.zeros(0))


@torch.no_grad()
def run_snntorch(net: nn.Sequential, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """snntorch's simulation of `inputs` (steps, *shape): the output spikes of every spiking layer,
    by layer name, each shaped (steps, *layer shape), float32."""
    reset_state(net)
    names = neuron_layers(net)
    record: dict[str, list[np.ndarray]] = {n: [] for n in names}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: record[n].append(o[0].numpy().copy()))
             for n in names]
    try:
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        for t in range(x.shape[0]):
            net(x[t:t + 1])
    finally:
        for h in hooks:
            h.remove()
    return {n: np.stack(v) for n, v in record.items()}
