"""CPU lowerings of the language-model extension ops (float; one simulator step = one token)."""

from __future__ import annotations

import math

import numpy as np

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, per_neuron, require_float
from spikecc.ir.lm_ops import GELU, WKV, DiscreteLIF, Embedding, Exp, LayerNorm, Product, Sigmoid, SquaredReLU

_erf = np.vectorize(math.erf, otypes=[np.float64])


class Elementwise(Kernel):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def step(self, x):
        return self.fn(x["input"])

    def run(self, xs, steps, record):
        return self.fn(xs["input"]), {}


ELEMENTWISE = {
    Sigmoid: lambda x: 1.0 / (1.0 + np.exp(-x)),
    Exp: np.exp,
    SquaredReLU: lambda x: np.square(np.maximum(x, 0.0)),
    GELU: lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
}


@lowers(*ELEMENTWISE)
def lower_elementwise(op, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return Elementwise(ELEMENTWISE[type(op)])


class ProductKernel(Kernel):
    def step(self, x):
        return x["a"] * x["b"]

    def run(self, xs, steps, record):
        return xs["a"] * xs["b"], {}


@lowers(Product)
def lower_product(op, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return ProductKernel()


class EmbeddingKernel(Kernel):
    """Lookup; each token reads one row, so one synaptic operation per output element."""

    def __init__(self, table: np.ndarray, name: str) -> None:
        super().__init__()
        self.table, self.name = table, name

    def _ids(self, x: np.ndarray) -> np.ndarray:
        """Token ids as integers; a fractional or out-of-vocabulary id is an error, never truncated."""
        from spikecc.errors import InputFileError

        x = np.asarray(x).reshape(-1)
        if x.size and not np.all(np.isfinite(x) & (x == np.rint(x))):
            bad = x[~(np.isfinite(x) & (x == np.rint(x)))][0]
            raise InputFileError(f"node '{self.name}': token id {bad} is not a whole number; give integer ids")
        ids = x.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.table)):
            bad = ids[(ids < 0) | (ids >= len(self.table))][0]
            raise InputFileError(f"node '{self.name}': token id {int(bad)} is outside the vocabulary of "
                                 f"{len(self.table)} (ids 0..{len(self.table) - 1})")
        return ids

    def step(self, x):
        ids = self._ids(x["input"])
        self.synops += ids.size * self.table.shape[1]
        return self.table[ids].reshape(-1)

    def run(self, xs, steps, record):
        ids = self._ids(xs["input"])
        self.synops += ids.size * self.table.shape[1]
        return self.table[ids].reshape(steps, -1), {}


@lowers(Embedding)
def lower_embedding(op: Embedding, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return EmbeddingKernel(np.asarray(op.weight, dtype=ctx.dtype), ctx.name)


class LayerNormKernel(Kernel):
    def __init__(self, weight, bias, eps) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps

    def _ln(self, x):
        shape = x.shape
        x = x.reshape(*shape[:-1], -1, len(self.weight))  # rows of d features
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        return ((x - mean) / np.sqrt(var + self.eps) * self.weight + self.bias).reshape(shape)

    def step(self, x):
        return self._ln(x["input"])

    def run(self, xs, steps, record):
        return self._ln(xs["input"]), {}


@lowers(LayerNorm)
def lower_layernorm(op: LayerNorm, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return LayerNormKernel(np.asarray(op.weight, ctx.dtype), np.asarray(op.bias, ctx.dtype), float(op.eps))


class DiscreteLIFKernel(Kernel):
    state_names = ("v",)

    def __init__(self, tau, vth, v_reset, dtype) -> None:
        super().__init__()
        self.tau, self.vth, self.v_reset, self.dtype = tau, vth, v_reset, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.v = self.v_reset.copy()

    def step(self, x):
        h = self.v + (x["input"] - (self.v - self.v_reset)) / self.tau
        s = h - self.vth >= 0
        self.v = np.where(s, self.v_reset, h)
        return s.astype(self.dtype)


@lowers(DiscreteLIF)
def lower_discrete_lif(op: DiscreteLIF, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    n = ctx.size
    return DiscreteLIFKernel(per_neuron(op.tau, n, ctx.dtype), per_neuron(op.v_threshold, n, ctx.dtype),
                             per_neuron(op.v_reset, n, ctx.dtype), ctx.dtype)


class WKVKernel(Kernel):
    state_names = ("aa", "bb", "pp")

    def __init__(self, w, u, dtype) -> None:
        super().__init__()
        self.w, self.u, self.dtype = w, u, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        n = len(self.w)
        self.aa = np.zeros(n, self.dtype)
        self.bb = np.zeros(n, self.dtype)
        self.pp = np.full(n, -1e30, self.dtype)

    def step(self, x):
        k, v = x["k"], x["v"]
        ww = self.u + k
        q = np.maximum(self.pp, ww)
        e1, e2 = np.exp(self.pp - q), np.exp(ww - q)
        y = (e1 * self.aa + e2 * v) / (e1 * self.bb + e2)
        ww = self.pp + self.w
        q = np.maximum(ww, k)
        e1, e2 = np.exp(ww - q), np.exp(k - q)
        self.aa, self.bb, self.pp = e1 * self.aa + e2 * v, e1 * self.bb + e2, q
        return y


@lowers(WKV)
def lower_wkv(op: WKV, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    n = ctx.size
    return WKVKernel(-np.exp(per_neuron(op.time_decay, n, ctx.dtype)), per_neuron(op.time_first, n, ctx.dtype),
                     ctx.dtype)
