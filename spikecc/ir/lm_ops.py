"""Extension ops for spiking language models: what NIR has no node for (nir 1.0.8 has no
node for LayerNorm, softmax, attention, elementwise products, exp or RWKV's gated recurrence).

The simulator step of an LM graph is one token (SpikeGPT's SNN time axis is the token sequence).
Every op below works on flat vectors of one token; `stateful` ops carry state from token to token.
Ports follow NIR's sub-graph convention: edges address `"<node>.<port>"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spikecc.ir.ops import ExtensionOp, register_op
from spikecc.ir.signals import BINARY, REAL, Signal


@register_op
@dataclass(eq=False)
class Embedding(ExtensionOp):
    """Token lookup: y = weight[token] for the integer token id arriving at `input` (shape (1,)); for a
    sequence of ids (shape (L,)) the output is the (L, d) stack of their rows.

    A binary table (entries in {0, 1}) is SpikeGPT's binary embedding Theta(E) folded at export: the
    output is then a binary spike vector.
    """

    weight: np.ndarray  # (vocab, d)

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.weight.shape[1]),)

    def output_shape(self, in_shapes):
        n = int(np.prod(in_shapes["input"]))
        return self.natural_shape() if n == 1 else (n, int(self.weight.shape[1]))

    def output_signal(self, in_signals) -> Signal:
        return BINARY if np.isin(self.weight, (0, 1)).all() else REAL


@register_op
@dataclass(eq=False)
class LayerNorm(ExtensionOp):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias   (biased variance, as torch), over the last
    axis: an (L, d) input is normalised row by row."""

    def output_shape(self, in_shapes):
        return in_shapes["input"]

    weight: np.ndarray
    bias: np.ndarray
    eps: float = 1e-5

    def natural_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.weight))


@register_op
@dataclass(eq=False)
class Sigmoid(ExtensionOp):
    """y = 1 / (1 + exp(-x)), elementwise."""


@register_op
@dataclass(eq=False)
class Exp(ExtensionOp):
    """y = exp(x), elementwise."""


@register_op
@dataclass(eq=False)
class SquaredReLU(ExtensionOp):
    """y = max(x, 0)^2, elementwise (RWKV channel-mix)."""


@register_op
@dataclass(eq=False)
class GELU(ExtensionOp):
    """y = x/2 * (1 + erf(x/sqrt(2))), elementwise (exact GELU, as torch's default)."""


@register_op
@dataclass(eq=False)
class Product(ExtensionOp):
    """y = a * b, elementwise product of two signals (ports `a`, `b`; same shape)."""

    input_ports: ClassVar[tuple[str, ...]] = ("a", "b")

    def output_shape(self, in_shapes):
        if int(np.prod(in_shapes["a"])) != int(np.prod(in_shapes["b"])):
            from spikecc.errors import ShapeError

            raise ShapeError(f"Product inputs have shapes {in_shapes['a']} and {in_shapes['b']}; they must match")
        return in_shapes["a"]


@register_op
@dataclass(eq=False)
class DiscreteLIF(ExtensionOp):
    """spikingjelly's LIFNode (decay_input=True, hard reset), in step units, as SpikeGPT uses it:

        H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau
        S[t] = 1 if H[t] - v_threshold >= 0 else 0          (>=: NIR's LIF fires only on >)
        V[t] = v_reset where S[t] else H[t]

    NIR's LIF with dt/tau = 1/tau, r = 1 has the same update but a strict threshold, so the two differ
    only when H lands exactly on the threshold; this op keeps spikingjelly's rule exactly.
    """

    tau: np.ndarray
    v_threshold: np.ndarray
    v_reset: np.ndarray

    stateful: ClassVar[bool] = True

    def natural_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.tau))

    def output_shape(self, in_shapes):
        return self.natural_shape()

    def output_signal(self, in_signals) -> Signal:
        return BINARY


@register_op
@dataclass(eq=False)
class WKV(ExtensionOp):
    """RWKV-4's wkv recurrence over tokens (ports `k`, `v`), with w = -exp(time_decay), u = time_first:

        wkv[t] = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t})

    evaluated in the running-max form (state aa, bb, pp; pp starts at -1e30) so exp never overflows:

        q = max(pp, u+k);  y = (e^{pp-q} aa + e^{u+k-q} v) / (e^{pp-q} bb + e^{u+k-q})
        q' = max(pp+w, k); aa' = e^{pp+w-q'} aa + e^{k-q'} v; bb' = e^{pp+w-q'} bb + e^{k-q'}; pp' = q'
    """

    time_decay: np.ndarray
    time_first: np.ndarray

    input_ports: ClassVar[tuple[str, ...]] = ("k", "v")
    stateful: ClassVar[bool] = True

    def natural_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.time_decay))

    def output_shape(self, in_shapes):
        return self.natural_shape()


LM_OPS = (Embedding, LayerNorm, Sigmoid, Exp, SquaredReLU, GELU, Product, DiscreteLIF, WKV)
