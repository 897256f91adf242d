"""CPU lowerings of SpikeLM's extension ops (float mode; one simulator step = one spike step, T steps per token).

Written from the equations of `spikecc.ir.spikelm_ops`, not by calling the torch model (backends do not import
torch). The neuron does the reference's float operations in the reference's order, so its spikes follow the
reference's bit for bit given the same input currents; attention, softmax and the mean follow the reference's
formulas (the sums inside matrix products and softmax may round differently from torch's vectorised kernels, at the
1e-16 level). tests/compiler/test_spikelm_export.py checks every kernel against the torch modules.

Each kernel counts the steps it has run since `reset` (the simulator resets every kernel when a run starts), which
gives the spike step t = step mod T.
"""

from __future__ import annotations

import math

import numpy as np

from spikecc.backends.cpu.kernels import BuildContext, Kernel, lowers, require_float
from spikecc.ir.spikelm_ops import (
    CausalSelfAttention,
    ContextLengthError,
    CrossAttention,
    ElasticBiSpike,
    PositionEmbedding,
    SelfAttention,
    TokenMean,
)


def elastic_bi_spike(x: np.ndarray, alpha: np.ndarray, leak: float, code: bool) -> np.ndarray:
    """Spikes (T, ...) of input currents x (T, ...) for one token: the equations of `ElasticBiSpike`."""
    spikes = np.empty_like(x)
    m = s = None
    for t in range(len(alpha)):
        if t == 0 or leak == 0.0:
            m = x[t]
        else:
            # same association as the reference: ((beta * m) * (alpha_{t-1} - s_{t-1})) + x_t
            m = leak * m * (alpha[t - 1] - s) + x[t]
        s = _fire(m, alpha[t], code)
        spikes[t] = s
    return spikes


def _fire(m: np.ndarray, a: np.float64, code: bool) -> np.ndarray:
    if code:
        q = np.clip(np.rint(m / a), -1.0, 1.0)  # rint rounds half to even, as torch.round
    else:
        q = (m > a).astype(m.dtype) - (m < -a).astype(m.dtype)
    return q * a  # q is exactly -1, 0 or 1: the spike is exactly -a, 0 or +a


class ElasticBiSpikeKernel(Kernel):
    state_names = ("m",)

    def __init__(self, T: int, alpha: np.ndarray, leak: float, code: bool, size: int, dtype) -> None:
        super().__init__()
        self.T, self.alpha, self.leak, self.code, self.size, self.dtype = T, alpha, leak, code, size, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.t = 0
        self.m = np.zeros(self.size, self.dtype)
        self.s = np.zeros(self.size, self.dtype)

    def step(self, x):
        t = self.t % self.T
        cur = x["input"]
        if t == 0 or self.leak == 0.0:
            m = cur  # the membrane restarts at every token (and K/V neurons have none)
        else:
            m = self.leak * self.m * (self.alpha[t - 1] - self.s) + cur
        self.m, self.s = m, _fire(m, self.alpha[t], self.code)
        self.t += 1
        return self.s

    def run(self, xs, steps, record):
        if record or steps % self.T:
            return super().run(xs, steps, record)
        # whole tokens from a fresh state: every token is independent, so do all tokens of a spike step at once
        x = xs["input"].reshape(steps // self.T, self.T, -1)
        out = elastic_bi_spike(np.moveaxis(x, 1, 0), self.alpha, self.leak, self.code)
        self.t += steps
        return np.moveaxis(out, 0, 1).reshape(steps, -1), {}


@lowers(ElasticBiSpike)
def lower_elastic_bi_spike(op: ElasticBiSpike, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return ElasticBiSpikeKernel(int(op.T), np.asarray(op.alpha, dtype=ctx.dtype), float(op.leak),
                                op.threshold_mode == "code", ctx.size, ctx.dtype)


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """softmax(q k^T / sqrt(d_head) + M) v over the last two axes: q (..., Lq, dh), k and v (..., Lk, dh); with a
    padding mask (..., Lk) of 1 (attend) and 0 (padding), M = (1 - mask) * min_float (Hugging Face's extended mask)."""
    scores = (q @ np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + ((1.0 - mask) * np.finfo(scores.dtype).min)[..., None, :]
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


class CausalSelfAttentionKernel(Kernel):
    """KV cache per spike step: `keys[t][:n[t]]` holds the (n, d) spiked keys of spike step t of every token so far.

    Synaptic operations, event-driven: Q K^T touches every non-zero cached key element once (one multiply-add
    with the query), P V every non-zero cached value element once; counted per port in `port_synops`.
    """

    def __init__(self, n_head: int, T: int, d: int, dtype) -> None:
        super().__init__()
        self.h, self.T, self.d, self.dtype = n_head, T, d, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.t = 0
        self.keys = [np.zeros((16, self.d), self.dtype) for _ in range(self.T)]
        self.values = [np.zeros((16, self.d), self.dtype) for _ in range(self.T)]
        self.n = [0] * self.T
        self.nnz = {"k": [0] * self.T, "v": [0] * self.T}  # non-zeros in each spike step's cache
        self.port_synops = {"k": 0, "v": 0}

    def step(self, x):
        t = self.t % self.T
        self.t += 1
        n = self.n[t]
        if n == len(self.keys[t]):  # grow the cache by doubling (amortised O(1) appends)
            self.keys[t] = np.concatenate([self.keys[t], np.zeros_like(self.keys[t])])
            self.values[t] = np.concatenate([self.values[t], np.zeros_like(self.values[t])])
        self.keys[t][n] = x["k"]
        self.values[t][n] = x["v"]
        self.n[t] = n = n + 1
        for port in ("k", "v"):
            self.nnz[port][t] += int(np.count_nonzero(x[port]))
            self.port_synops[port] += self.nnz[port][t]
        self.synops = self.port_synops["k"] + self.port_synops["v"]
        h, dh = self.h, self.d // self.h
        q = x["q"].reshape(h, 1, dh)
        k = self.keys[t][:n].reshape(n, h, dh).transpose(1, 0, 2)  # (h, n, dh)
        v = self.values[t][:n].reshape(n, h, dh).transpose(1, 0, 2)
        return attend(q, k, v).reshape(self.d)


@lowers(CausalSelfAttention)
def lower_causal_self_attention(op: CausalSelfAttention, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return CausalSelfAttentionKernel(int(op.n_head), int(op.T), ctx.size, ctx.dtype)


class SequenceAttentionKernel(Kernel):
    """Attention of Lq query rows over Lk presented key/value rows (flat ports), with an optional padding mask:
    `SelfAttention` (Lq = Lk) and `CrossAttention` (Lq = 1)."""

    def __init__(self, n_head: int, Lq: int, Lk: int, d: int) -> None:
        super().__init__()
        self.h, self.Lq, self.Lk, self.d = n_head, Lq, Lk, d

    def _attend(self, x):  # flat (..., L*d) ports -> (..., Lq*d)
        q = x["q"]
        lead = q.shape[:-1]
        h, dh = self.h, self.d // self.h

        def heads(a, n):  # (..., n*d) -> (..., h, n, dh)
            return np.swapaxes(a.reshape(*lead, n, h, dh), -2, -3)

        mask = x["mask"].reshape(*lead, 1, self.Lk) if "mask" in x else None  # the same mask for every head
        y = attend(heads(q, self.Lq), heads(x["k"], self.Lk), heads(x["v"], self.Lk), mask)
        return np.swapaxes(y, -2, -3).reshape(*lead, self.Lq * self.d)

    def step(self, x):
        return self._attend(x)

    def run(self, xs, steps, record):
        return self._attend(xs), {}


@lowers(SelfAttention, CrossAttention)
def lower_sequence_attention(op: SelfAttention | CrossAttention, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    k = ctx.in_shapes["k"]
    Lk = int(np.prod(k[:-1])) if len(k) > 1 else 1
    Lq = int(np.prod(ctx.out_shape[:-1])) if len(ctx.out_shape) > 1 else 1
    return SequenceAttentionKernel(int(op.n_head), Lq, Lk, int(k[-1]))


class PositionEmbeddingKernel(Kernel):
    def __init__(self, table: np.ndarray, T: int, stream: bool, n_out: int) -> None:
        super().__init__()
        self.table, self.T, self.stream, self.n_out = table, T, stream, n_out
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.t = 0

    def _rows(self, steps: int) -> np.ndarray:
        if not self.stream:  # the whole sequence at every step
            return np.broadcast_to(self.table[: self.n_out // self.table.shape[1]].reshape(-1),
                                   (steps, self.n_out)).copy()
        pos = np.arange(self.t, self.t + steps) // self.T
        if steps and pos[-1] >= len(self.table):
            p = len(self.table)
            raise ContextLengthError(
                f"token {p + 1} would need position {p}, past the model's context of {p} tokens (learned positions "
                f"0..{p - 1}); the graph runs one token at a time and cannot slide a window over the text as the "
                f"torch reference's generate does: keep the prompt plus the generated tokens within {p}")
        self.t += steps
        return self.table[pos]

    def step(self, x):
        return self._rows(1)[0]

    def run(self, xs, steps, record):
        return self._rows(steps), {}


@lowers(PositionEmbedding)
def lower_position_embedding(op: PositionEmbedding, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return PositionEmbeddingKernel(np.asarray(op.weight, dtype=ctx.dtype), int(op.T), op.mode == "stream",
                                   ctx.size)


class TokenMeanKernel(Kernel):
    state_names = ("acc",)

    def __init__(self, T: int, size: int, dtype) -> None:
        super().__init__()
        self.T, self.size, self.dtype = T, size, dtype
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.t = 0
        self.acc = np.zeros(self.size, self.dtype)

    def step(self, x):
        t = self.t % self.T
        self.t += 1
        # sequential sum, one division: torch's mean over a (T, ...) float64 tensor does exactly this
        self.acc = x["input"].copy() if t == 0 else self.acc + x["input"]
        return self.acc / (t + 1)


@lowers(TokenMean)
def lower_token_mean(op: TokenMean, ctx: BuildContext) -> Kernel:
    require_float(ctx, op)
    return TokenMeanKernel(int(op.T), ctx.size, ctx.dtype)
