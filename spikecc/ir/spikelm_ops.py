"""Extension ops for SpikeLM (Xing et al., ICML 2024; torch reference spikecc/models/spikelm.py).

SpikeLM presents every token for T spike steps and its neurons restart at every token, so its graph runs with
ONE SIMULATOR STEP = ONE SPIKE STEP: a token occupies T consecutive steps (graph metadata ``substeps = T``) and the
spike step of simulator step s is ``t = s mod T`` (the token index is ``s // T``). Ops that depend on t count the
steps they have run since the simulator started, so the token id is fed at every sub-step of its token.

* `ElasticBiSpike`: the elastic bi-spiking neuron (ternary spikes {-alpha_t, 0, +alpha_t}, one alpha per step).
* `CausalSelfAttention`: causal softmax attention over tokens with a KV cache per spike step (decoder).
* `SelfAttention`: bidirectional softmax attention over a whole sequence presented at once (BERT and BART encoders),
  with an optional padding mask.
* `CrossAttention`: a decoder token's query attending to a presented sequence (BART's encoder-decoder attention).
* `PositionEmbedding`: learned absolute positions, for a token stream (decoder) or a whole sequence (encoder).
* `TokenMean`: running mean over the T spike steps of a token (SpikeLM's read-out, ``mean_t h[t]``).

Everything else SpikeLM needs is an existing node: `nir.Affine` (every linear, with its bias), `nir.Scale` (residual
sums), and `Embedding`, `LayerNorm`, `GELU` of spikecc.ir.lm_ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from spikecc.errors import InputFileError, ShapeError
from spikecc.ir.ops import ExtensionOp, register_op
from spikecc.ir.signals import REAL, Signal, ternary

THRESHOLD_MODES = ("code", "paper")
POSITION_MODES = ("stream", "sequence")


class ContextLengthError(InputFileError, ValueError):
    """A token stream went past the learned position table (the model's context window).

    A `ValueError` like the reference's (`SpikeLM.step` raises ValueError there), and a spikecc error so the CLI
    prints it as one line."""


@register_op
@dataclass(eq=False)
class ElasticBiSpike(ExtensionOp):
    """SpikeLM's elastic bi-spiking neuron, one spike step per simulator step (paper Eq. 1, 12, 13; the code's
    ``mem = mem_old * beta * (alpha[t-1] - s[t-1]) + x[t]``). Elementwise, any input shape. With t = step mod T
    and beta = `leak`:

        m_t = x_t                                                          (t = 0: the membrane restarts per token)
        m_t = beta * m_{t-1} * (alpha_{t-1} - s_{t-1}) + x_t               (t = 1 .. T-1; evaluated in this order)

        threshold_mode "code":   s_t = alpha_t * clip(rint(m_t / alpha_t), -1, 1)   (rint: half to even, as torch.round;
                                                                                  fires iff |m_t| > alpha_t / 2)
        threshold_mode "paper":  s_t = alpha_t * ([m_t > alpha_t] - [m_t < -alpha_t])   (strict: m = +-alpha -> 0)

    With beta = 0 (SpikeLM's K and V neurons) the neuron is memoryless: m_t = x_t.

    Signal convention: the output values are exactly -alpha_t, 0 or +alpha_t, so the amplitude varies with the
    spike step. The edge's signal is declared ``ternary(max_t alpha_t)``: the largest magnitude a spike can carry
    (an upper bound for a consumer sizing its payload); the exact per-step amplitudes are the op's `alpha`.
    """

    T: int
    alpha: np.ndarray  # (T,) per-step thresholds / spike amplitudes, all > 0
    leak: float = 0.25
    threshold_mode: str = "code"

    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.alpha = np.asarray(self.alpha, dtype=np.float64).reshape(-1)
        if int(self.T) < 1:
            raise ValueError(f"ElasticBiSpike: T must be >= 1, got {self.T}")
        if self.alpha.shape != (int(self.T),):
            raise ValueError(f"ElasticBiSpike: alpha must hold one value per spike step ({self.T}), "
                             f"got shape {self.alpha.shape}")
        if not np.all(np.isfinite(self.alpha)) or np.any(self.alpha <= 0):
            raise ValueError(f"ElasticBiSpike: alpha must be finite and > 0, got {self.alpha.tolist()}")
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"ElasticBiSpike: threshold_mode must be one of {THRESHOLD_MODES}, "
                             f"got {self.threshold_mode!r}")
        super().__post_init__()

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return ternary(float(self.alpha.max()))


def _check_heads(name: str, in_shapes: dict[str, tuple[int, ...]], n_head: int) -> tuple[int, ...]:
    q, k, v = in_shapes["q"], in_shapes["k"], in_shapes["v"]
    if not (tuple(q) == tuple(k) == tuple(v)):
        raise ShapeError(f"{name}: ports q, k, v have shapes {q}, {k}, {v}; they must match")
    d = int(q[-1]) if q else 1
    if n_head < 1 or d % n_head:
        raise ShapeError(f"{name}: {d} features do not split into {n_head} heads")
    return tuple(q)


@register_op
@dataclass(eq=False)
class CausalSelfAttention(ExtensionOp):
    """Causal multi-head softmax attention of a decoder fed one token per T steps, with one KV cache per spike step.

    Ports q, k, v: vectors of d = n_head * d_head features (head h holds features h*d_head .. (h+1)*d_head - 1).
    At step s (spike step t = s mod T, token p = s // T) the op appends this step's k, v to the cache of spike
    step t (which then holds K_t, V_t for tokens 0 .. p, the current one included) and returns, per head h,

        y_h = softmax(q_h K_{t,h}^T / sqrt(d_head)) V_{t,h}          (softmax over the p + 1 cached tokens)

    heads concatenated. This is row p of the reference's causal attention at spike step t (``_attend`` with
    the causal mask, a KV cache as in `SpikeLM.step`): spike steps never mix, tokens mix only here.
    """

    n_head: int
    T: int

    input_ports: ClassVar[tuple[str, ...]] = ("q", "k", "v")
    stateful: ClassVar[bool] = True

    def output_shape(self, in_shapes):
        return _check_heads("CausalSelfAttention", in_shapes, int(self.n_head))


def _check_mask(name: str, in_shapes: dict[str, tuple[int, ...]], keys: tuple[int, ...]) -> None:
    mask = in_shapes.get("mask")
    n_keys = int(keys[0]) if len(keys) > 1 else 1
    if mask is not None and int(np.prod(mask)) != n_keys:
        raise ShapeError(f"{name}: port mask has shape {mask}, expected one value per key ({n_keys})")


@register_op
@dataclass(eq=False)
class SelfAttention(ExtensionOp):
    """Bidirectional multi-head softmax attention over a sequence presented at once (BERT and BART encoders).

    Ports q, k, v: (L, d) with d = n_head * d_head (head h holds features h*d_head .. (h+1)*d_head - 1); with
    ``masked``, port mask: (L,), 1 for a token to attend to and 0 for padding (Hugging Face's ``attention_mask``).
    Per step and head h, with Q_h, K_h, V_h the (L, d_head) column blocks:

        Y_h = softmax(Q_h K_h^T / sqrt(d_head) + M) V_h              (softmax over the L keys, row by row)
        M_j = (1 - mask_j) * min_float                               (0 without a mask)

    M is Hugging Face's extended attention mask (``(1.0 - mask) * torch.finfo(dtype).min``, added to the scores), as
    the SpikeLM code adds it (``spikeLM-BERT/spike_bert.py``): padded keys get weight exactly 0, so the rows of the
    real tokens equal those of the unpadded sequence. Output (L, d), heads concatenated. No state: every step is
    one spike step of the whole sequence.
    """

    n_head: int
    masked: bool = False

    @property
    def input_ports(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("q", "k", "v", "mask") if self.masked else ("q", "k", "v")

    def output_shape(self, in_shapes):
        shape = _check_heads("SelfAttention", in_shapes, int(self.n_head))
        _check_mask("SelfAttention", in_shapes, shape)
        return shape


@register_op
@dataclass(eq=False)
class CrossAttention(ExtensionOp):
    """Multi-head softmax attention of one decoder token's query over a presented sequence (BART's encoder-decoder
    attention, ``encoder_attn``), with a padding mask.

    Ports q: (d,), the decoder token's query; k, v: (L, d), the encoder sequence's keys and values; mask: (L,), 1 for
    a source token and 0 for padding. Per step and head h:

        y_h = softmax(q_h K_h^T / sqrt(d_head) + M) V_h               M_j = (1 - mask_j) * min_float

    output (d,), heads concatenated. No state: the keys and values arrive at every step.
    """

    n_head: int

    input_ports: ClassVar[tuple[str, ...]] = ("q", "k", "v", "mask")

    def output_shape(self, in_shapes):
        q, k, v = (tuple(in_shapes[p]) for p in ("q", "k", "v"))
        if tuple(k) != tuple(v) or len(k) != 2 or int(np.prod(q)) != int(k[1]):
            raise ShapeError(f"CrossAttention: ports q, k, v have shapes {q}, {k}, {v}; expected (d,), (L, d), (L, d)")
        if int(k[1]) % int(self.n_head):
            raise ShapeError(f"CrossAttention: {k[1]} features do not split into {self.n_head} heads")
        _check_mask("CrossAttention", in_shapes, k)
        return (int(k[1]),)


@register_op
@dataclass(eq=False)
class PositionEmbedding(ExtensionOp):
    """Learned absolute position embedding (table `weight`, (P, d)). The input port carries the token id(s); it
    fixes the shape and pacing, its values are unused.

    * mode "stream" (causal LM: one token id per step, each token held for T steps):
      ``y[s] = weight[s // T]``, shape (d,). A position s // T >= P raises `ContextLengthError`, as the reference's
      `SpikeLM.step` raises past its context.
    * mode "sequence" (encoder: a whole sequence of L ids presented at every step): ``y = weight[:L]``, shape
      (L, d), the same at every step (requires L <= P).
    """

    weight: np.ndarray  # (P, d)
    T: int = 1
    mode: str = "stream"

    stateful: ClassVar[bool] = True  # in stream mode the output follows the step count

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight)
        if self.weight.ndim != 2:
            raise ValueError(f"PositionEmbedding: weight must be (positions, d), got shape {self.weight.shape}")
        if int(self.T) < 1:
            raise ValueError(f"PositionEmbedding: T must be >= 1, got {self.T}")
        if self.mode not in POSITION_MODES:
            raise ValueError(f"PositionEmbedding: mode must be one of {POSITION_MODES}, got {self.mode!r}")
        super().__post_init__()

    def natural_shape(self) -> tuple[int, ...]:
        return (int(self.weight.shape[1]),)

    def output_shape(self, in_shapes):
        n = int(np.prod(in_shapes["input"]))
        d = int(self.weight.shape[1])
        if self.mode == "stream":
            if n != 1:
                raise ShapeError(f"PositionEmbedding (stream): the input must be one token id, got shape "
                                 f"{in_shapes['input']}")
            return (d,)
        if n > int(self.weight.shape[0]):
            raise ShapeError(f"PositionEmbedding (sequence): {n} tokens exceed the {self.weight.shape[0]} "
                             "learned positions")
        return (n, d)


@register_op
@dataclass(eq=False)
class TokenMean(ExtensionOp):
    """Running mean over the spike steps of the current token (SpikeLM's ``mean_t h[t]``), elementwise:

        y_t = (x_0 + x_1 + ... + x_t) / (t + 1)              (t = step mod T; summed left to right, then divided)

    At the token's last step (t = T - 1) this is the mean over its T steps, in the same order of float operations
    as torch's ``x.mean(0)`` on a (T, ...) float64 tensor (a sequential sum, then one division by T).
    """

    T: int

    stateful: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if int(self.T) < 1:
            raise ValueError(f"TokenMean: T must be >= 1, got {self.T}")
        super().__post_init__()

    def output_signal(self, in_signals: dict[str, Signal]) -> Signal:
        return REAL


SPIKELM_OPS = (ElasticBiSpike, CausalSelfAttention, SelfAttention, CrossAttention, PositionEmbedding, TokenMean)
