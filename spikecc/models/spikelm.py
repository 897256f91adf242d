"""SpikeLM (Xing et al., ICML 2024): elastic bi-spiking transformers, torch reference.

Two models share one neuron, `ElasticBiSpike` (a third, SpikeLM's BART encoder-decoder, is
`spikecc.models.spikelm_bart`):

* `SpikeLM`, a SpikeLM-style causal decoder: spikecc's own design, not a model of the paper (whose generative models
  are BART encoder-decoders), a small character LM that spikes like SpikeLM and can generate text, with an
  incremental mode (`init_state` / `step`, KV cache) that reproduces the full causal forward exactly; saved in
  spikecc's own checkpoint format (`save_spikelm` / `load_spikelm`).
* `SpikeBertEncoder`, the bidirectional BERT encoder of the published SpikeLM code, built from a SpikeLM checkpoint in
  Hugging Face BERT key layout (`load_spikelm_bert`, `random_bert_state_dict`), with token types and a padding mask.

How SpikeLM spikes (paper Sec. 3.1, 4 and App. A.1; published code `spikeLM-BERT/spiking.py`, `spike_bert.py`):

* every token is presented for ``T`` spike steps (T = 4): the embedding output is repeated T times, every layer works
  on tensors shaped ``(T, ..., features)`` and the last hidden state is the mean over the T steps;
* an elastic bi-spiking neuron sits on the input of every linear layer (Q, K, V, attention output, both MLP linears):
  the linear sees ternary spikes ``{-alpha_t, 0, +alpha_t}``, never real values;
* the outputs of the K and V linears are spiked again (a neuron without membrane, beta = 0), so that both attention
  products (Q K^T and P V) take spikes on one side; Q stays real;
* softmax, GELU, LayerNorm, the residual adds and the last regression (LM head) stay real.

The spiking time axis is the T steps of one token, not the token sequence: a neuron's membrane starts afresh for every
token, and only attention mixes tokens. That is what makes a KV cache exact.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecc.errors import CheckpointError
from spikecc.models.checkpoint import check_state_dict, fmt_shape
from spikecc.models.data import CharVocab

ThresholdMode = Literal["paper", "code"]
THRESHOLD_MODES: tuple[str, ...] = ("paper", "code")
FAMILY = "spikelm"
ALPHA_EPS = 1e-5  # the published code clamps every alpha to at least 1e-5 before use

__all__ = [
    "ALPHA_EPS",
    "FAMILY",
    "THRESHOLD_MODES",
    "ElasticBiSpike",
    "FiringRate",
    "FiringRateMeter",
    "SpikeBertConfig",
    "SpikeBertEncoder",
    "SpikeLM",
    "SpikeLMConfig",
    "SpikeLMState",
    "firing_rates",
    "generate",
    "load_spikelm",
    "load_spikelm_bert",
    "random_bert_state_dict",
    "recalibrate",
    "save_spikelm",
    "unigram_loss_on",
    "val_loss",
]


# --------------------------------------------------------------------------------------------------------------------
# The neuron
# --------------------------------------------------------------------------------------------------------------------


class _TernarySpike(torch.autograd.Function):
    """Ternary spike of one step with the straight-through estimator of paper Eq. 7.

    forward, ``code``:  s = alpha * clamp(round(m / alpha), -1, 1)     (torch.round: half to even, |m| = alpha/2 -> 0)
    forward, ``paper``: s = +alpha if m > alpha, -alpha if m < -alpha, else 0             (Eq. 12, strict comparisons)
    backward (both):    ds/dm = 1 if |m| <= alpha else 0 (Eq. 7: d/dm clip(m/alpha, -1, 1), times alpha from Eq. 12;
                        the code's ``indicate_middle``); alpha gets no gradient: frozen after calibration (Eq. 10).
    """

    @staticmethod
    def forward(ctx: Any, m: Tensor, alpha: Tensor, code_mode: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(m.abs() <= alpha)
        if code_mode:
            q = torch.round(m / alpha).clamp_(-1.0, 1.0)
        else:
            q = (m > alpha).to(m.dtype).sub_((m < -alpha).to(m.dtype))
        # q is exactly -1, 0 or +1, so q * alpha is exactly -alpha, 0 or +alpha (no rounding).
        return q.mul_(alpha)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None


class ElasticBiSpike(nn.Module):
    """Elastic bi-spiking neuron: ternary spikes {-alpha_t, 0, +alpha_t} over T steps, one alpha per step.

    Input ``x`` is shaped ``(T, ...)``: the input current of each of the T spike steps. For one neuron, with
    ``beta = leak``:

        m_0 = x_0
        m_t = beta * m_{t-1} * (alpha_{t-1} - s_{t-1}) + x_t                                  (t = 1 .. T-1)

        threshold_mode "paper" (Eq. 12):  s_t = +alpha_t if m_t > alpha_t;  -alpha_t if m_t < -alpha_t;  0 otherwise
        threshold_mode "code":            s_t = alpha_t * clamp(round(m_t / alpha_t), -1, 1)
                                          (fires iff |m_t| > alpha_t / 2; round half to even: |m_t| = alpha_t/2 -> 0)

    The membrane update is paper Eq. 1 (m(t) = v(t-1) + x(t)) with Eq. 13 (v(t) = m(t)(alpha(t) - s(t)) + v_reset s(t)),
    where App. A.1 keeps beta = 0.25 of Eq. 3 for the neurons on linear inputs and beta = 0 for K and V, and v_reset = 0
    (the paper gives no value; the code has none). This is exactly the published code:
    ``mem = mem_old * 0.25 * (alpha[i-1] - output[i-1]) + input[i]``. Note that the factor multiplies the membrane by
    alpha (not a reset to a residual): after a +alpha spike the membrane is cleared, after 0 it is scaled by beta*alpha,
    after -alpha by 2*beta*alpha. With beta = 0 (K, V) the neuron is memoryless: m_t = x_t.

    Paper Eq. 12 leaves m = +-alpha out of both cases (strict comparisons, open interval); we give it 0. The paper's
    Eq. 10 indexes alpha by step as well (alpha^l(t)), so both modes keep one alpha per step; they differ only in the
    threshold (alpha vs alpha/2).

    Calibration (Eq. 10): on the first batch the neuron sees, alpha_t = max(k * mean|m_t|, 1e-5), computed step by step
    (m_t depends on alpha_{t-1}); then alpha is frozen. ``alpha`` (shape (T,)) and ``calibrated`` are buffers, so
    both are saved in the state dict. Gradients: straight-through (`_TernarySpike`); in the membrane recursion
    alpha_{t-1} and s_{t-1} are constants (the code detaches them) while m_{t-1} carries gradient.
    """

    def __init__(self, T: int = 4, k: float = 2.0, threshold_mode: ThresholdMode = "code", leak: float = 0.25):
        super().__init__()
        if threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {threshold_mode!r}")
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if not k > 0:
            raise ValueError(f"k must be > 0, got {k}")
        self.T = int(T)
        self.k = float(k)
        self.threshold_mode: ThresholdMode = threshold_mode
        self.leak = float(leak)
        self.register_buffer("alpha", torch.ones(self.T))
        self.register_buffer("calibrated", torch.tensor(False))

    def extra_repr(self) -> str:
        return f"T={self.T}, k={self.k}, threshold_mode={self.threshold_mode!r}, leak={self.leak}"

    def reset_calibration(self, k: float | None = None) -> None:
        """Forget alpha; the next batch calibrates it again (optionally with a new k)."""
        if k is not None:
            if not k > 0:
                raise ValueError(f"k must be > 0, got {k}")
            self.k = float(k)
        self.alpha.fill_(1.0)
        self.calibrated.fill_(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] != self.T:
            raise ValueError(
                f"ElasticBiSpike expects the spike-step axis first with T={self.T}, got shape {tuple(x.shape)}"
            )
        calibrate = not bool(self.calibrated)
        code_mode = self.threshold_mode == "code"
        alphas: list[Tensor] = []
        spikes: list[Tensor] = []
        m_prev: Tensor | None = None
        steps = x.unbind(0)  # one backward node for all steps (indexing x[t] would zero-fill a full grad per step)
        for t in range(self.T):
            if t == 0 or self.leak == 0.0:
                m = steps[t]
            else:
                assert m_prev is not None
                m = self.leak * m_prev * (alphas[t - 1] - spikes[t - 1].detach()) + steps[t]
            if calibrate:
                a = torch.clamp(self.k * m.detach().abs().mean(), min=ALPHA_EPS).to(self.alpha.dtype)
            else:
                a = self.alpha[t].detach().clone()
            s = _TernarySpike.apply(m, a.to(m.dtype), code_mode)
            alphas.append(a.to(m.dtype))
            spikes.append(s)
            m_prev = m
        if calibrate:
            # Written after the loop: the autograd graph above must not see the buffer change under it.
            with torch.no_grad():
                self.alpha.copy_(torch.stack(alphas).to(self.alpha.dtype))
                self.calibrated.fill_(True)
        return torch.stack(spikes)


def _neurons(module: nn.Module) -> dict[str, ElasticBiSpike]:
    return {name: m for name, m in module.named_modules() if isinstance(m, ElasticBiSpike)}


def recalibrate(model: nn.Module, batch: Tensor, k: float | None = None) -> None:
    """Reset every neuron's alpha (optionally with a new k) and calibrate again on ``batch`` (one forward pass)."""
    for neuron in _neurons(model).values():
        neuron.reset_calibration(k)
    with torch.no_grad():
        model(batch)


# --------------------------------------------------------------------------------------------------------------------
# Firing rates
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FiringRate:
    """Fraction of (step, neuron, token) slots that carry a spike; ``positive + negative == rate``."""

    rate: float
    positive: float
    negative: float
    slots: int


class FiringRateMeter:
    """Accumulates spike counts per spiking layer over several forward passes."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def update(self, spikes: Mapping[str, Tensor]) -> None:
        for name, s in spikes.items():
            c = self._counts.setdefault(name, [0, 0, 0])
            c[0] += int((s > 0).sum())
            c[1] += int((s < 0).sum())
            c[2] += s.numel()

    def rates(self) -> dict[str, FiringRate]:
        return {name: FiringRate((p + n) / tot, p / tot, n / tot, tot) for name, (p, n, tot) in self._counts.items()}

    def mean_rate(self, include_kv: bool = True) -> float:
        """Slot-weighted firing rate over all layers (optionally leaving out the K/V spikes)."""
        items = [(n, c) for n, c in self._counts.items() if include_kv or not n.endswith(("k_spike", "v_spike"))]
        spikes = sum(c[0] + c[1] for _, c in items)
        slots = sum(c[2] for _, c in items)
        return spikes / slots if slots else float("nan")


def firing_rates(spikes: Mapping[str, Tensor]) -> dict[str, FiringRate]:
    """Firing rate of each spike tensor of a ``spikes`` dict (as returned by ``forward(..., return_spikes=True)``)."""
    meter = FiringRateMeter()
    meter.update(spikes)
    return meter.rates()


# --------------------------------------------------------------------------------------------------------------------
# Causal LM
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SpikeLMConfig:
    """Sizes and spiking options of the causal `SpikeLM` (saved as a plain dict in checkpoints)."""

    vocab_size: int
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 4
    d_ff: int = 512
    context: int = 128
    T: int = 4
    k: float = 2.0
    threshold_mode: str = "code"
    leak: float = 0.25

    def __post_init__(self) -> None:
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_ff", "context", "T"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head})")


def _attend(q: Tensor, k: Tensor, v: Tensor, causal_offset: int | None) -> Tensor:
    """Softmax attention per spike step and head; q (..., Lq, dh), k/v (..., Lk, dh).

    With ``causal_offset = P`` query i (absolute position P + i) sees keys 0 .. P + i.
    """
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal_offset is not None:
        lq, lk = q.shape[-2], k.shape[-2]
        key_pos = torch.arange(lk, device=q.device)[None, :]
        allowed = key_pos <= torch.arange(lq, device=q.device)[:, None] + causal_offset
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class _CausalSpikingAttention(nn.Module):
    """``y = W_o S_o(softmax(Q K^T / sqrt(dh)) V) + b_o`` with ``Q = W_q S_in(x)``, ``K = S_k(W_k S_in(x))``,
    ``V = S_v(W_v S_in(x))``, per spike step and head, causal over tokens.

    Neurons: ``in_spike`` (input of the Q/K/V linears, beta = 0.25), ``k_spike`` and ``v_spike`` (beta = 0),
    ``out_in_spike`` (input of the output linear, beta = 0.25).
    """

    def __init__(self, cfg: SpikeLMConfig):
        super().__init__()
        d, mode = cfg.d_model, cfg.threshold_mode
        self.n_head = cfg.n_head
        self.in_spike = ElasticBiSpike(cfg.T, cfg.k, mode, cfg.leak)  # type: ignore[arg-type]
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.k_spike = ElasticBiSpike(cfg.T, cfg.k, mode, 0.0)  # type: ignore[arg-type]
        self.v_spike = ElasticBiSpike(cfg.T, cfg.k, mode, 0.0)  # type: ignore[arg-type]
        self.out_in_spike = ElasticBiSpike(cfg.T, cfg.k, mode, cfg.leak)  # type: ignore[arg-type]
        self.out = nn.Linear(d, d)

    def _heads(self, x: Tensor) -> Tensor:  # (T, B, L, D) -> (T, B, h, L, dh)
        T, B, L, D = x.shape
        return x.view(T, B, L, self.n_head, D // self.n_head).transpose(2, 3)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None, spikes: dict[str, Tensor] | None, prefix: str
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        s_in = self.in_spike(x)
        q = self.query(s_in)  # Q stays real
        k = self.k_spike(self.key(s_in))
        v = self.v_spike(self.value(s_in))
        qh, kh, vh = self._heads(q), self._heads(k), self._heads(v)
        offset = 0
        if past is not None:
            offset = past[0].shape[-2]
            kh = torch.cat([past[0], kh], dim=-2)
            vh = torch.cat([past[1], vh], dim=-2)
        ctx = _attend(qh, kh, vh, offset)
        T, B, L, D = x.shape
        ctx = ctx.transpose(2, 3).reshape(T, B, L, D)
        s_out = self.out_in_spike(ctx)
        if spikes is not None:
            spikes[f"{prefix}.in_spike"] = s_in
            spikes[f"{prefix}.k_spike"] = k
            spikes[f"{prefix}.v_spike"] = v
            spikes[f"{prefix}.out_in_spike"] = s_out
        return self.out(s_out), (kh, vh)


class _SpikingMLP(nn.Module):
    """``y = W_2 S_2(GELU(W_1 S_1(x) + b_1)) + b_2``; neurons ``in_spike`` (S_1) and ``out_in_spike`` (S_2)."""

    def __init__(self, d: int, d_ff: int, T: int, k: float, mode: str, leak: float):
        super().__init__()
        self.in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.fc1 = nn.Linear(d, d_ff)
        self.out_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.fc2 = nn.Linear(d_ff, d)

    def forward(self, x: Tensor, spikes: dict[str, Tensor] | None, prefix: str) -> Tensor:
        s1 = self.in_spike(x)
        s2 = self.out_in_spike(F.gelu(self.fc1(s1)))  # exact (erf) GELU, as BERT/SpikeLM
        if spikes is not None:
            spikes[f"{prefix}.in_spike"] = s1
            spikes[f"{prefix}.out_in_spike"] = s2
        return self.fc2(s2)


class _Block(nn.Module):
    """Pre-LN block: ``x = x + attn(LN_1(x)); x = x + mlp(LN_2(x))`` (LayerNorm per step and token, real)."""

    def __init__(self, cfg: SpikeLMConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = _CausalSpikingAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = _SpikingMLP(cfg.d_model, cfg.d_ff, cfg.T, cfg.k, cfg.threshold_mode, cfg.leak)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None, spikes: dict[str, Tensor] | None, prefix: str
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln1(x), past, spikes, f"{prefix}.attn")
        x = x + a
        x = x + self.mlp(self.ln2(x), spikes, f"{prefix}.mlp")
        return x, kv


@dataclass
class SpikeLMState:
    """Incremental-decoding state: the next position and, per layer, the cached spiked keys and values, each shaped
    ``(T, 1, n_head, pos, d_head)`` (None before the first token)."""

    pos: int = 0
    keys: list[Tensor | None] = field(default_factory=list)
    values: list[Tensor | None] = field(default_factory=list)


class SpikeLM(nn.Module):
    """SpikeLM-style causal decoder: a character LM built from elastic bi-spiking neurons (pre-LN GPT layout,
    SpikeLM spiking); spikecc's design, not an architecture of the SpikeLM paper.

    ``h_0 = E_tok[x] + E_pos[p]`` repeated over T steps; per layer (`_Block`) causal spiking attention and spiking MLP;
    ``logits = W_head LN_f(mean_t h_L[t]) + b`` (the last regression stays real, as in the paper).

    Spike names (keys of the ``spikes`` dict; each is also the module path of the neuron, so
    ``state_dict()[name + ".alpha"]`` holds its per-step alphas):

    =================================  ====================================================  =============
    name                               what spikes                                           features
    =================================  ====================================================  =============
    ``layers.{i}.attn.in_spike``       LN_1 output, input of the Q, K and V linears          d_model
    ``layers.{i}.attn.k_spike``        key (output of the K linear), beta = 0                d_model
    ``layers.{i}.attn.v_spike``        value (output of the V linear), beta = 0              d_model
    ``layers.{i}.attn.out_in_spike``   attention context, input of the output linear         d_model
    ``layers.{i}.mlp.in_spike``        LN_2 output, input of fc1                             d_model
    ``layers.{i}.mlp.out_in_spike``    GELU(fc1) output, input of fc2                        d_ff
    =================================  ====================================================  =============

    In `forward` the spike tensors are shaped ``(T, B, L, features)``; in `step`, ``(T, features)``. K/V features are
    ordered head-major (head h holds features ``h*d_head .. (h+1)*d_head - 1``).
    """

    def __init__(self, config: SpikeLMConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context, config.d_model)
        self.layers = nn.ModuleList([_Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    @property
    def calibrated(self) -> bool:
        return all(bool(n.calibrated) for n in _neurons(self).values())

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def spike_names(self) -> list[str]:
        """The names of all spiking layers, in forward order."""
        return list(_neurons(self))

    def _embed(self, idx: Tensor, start: int) -> Tensor:
        L = idx.shape[-1]
        if start + L > self.config.context:
            raise ValueError(f"positions {start}..{start + L - 1} exceed the model's context of {self.config.context}")
        pos = torch.arange(start, start + L, device=idx.device)
        h = self.tok_emb(idx) + self.pos_emb(pos)
        # Every token is presented for T spike steps (the code's `hidden_states.repeat(T, ...)`).
        return h.unsqueeze(0).expand(self.config.T, *h.shape)

    def forward(self, idx: Tensor, return_spikes: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Full causal forward: ``idx`` (B, L) token ids -> logits (B, L, vocab) [, spikes]."""
        spikes: dict[str, Tensor] | None = {} if return_spikes else None
        x = self._embed(idx, 0)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, None, spikes, f"layers.{i}")
        logits = self.head(self.ln_f(x.mean(0)))
        return (logits, spikes) if spikes is not None else logits

    def init_state(self) -> SpikeLMState:
        n = len(self.layers)
        return SpikeLMState(0, [None] * n, [None] * n)

    def step(self, token_id: int | Tensor, state: SpikeLMState) -> tuple[Tensor, SpikeLMState, dict[str, Tensor]]:
        """Feed one token (batch 1) at position ``state.pos``: -> (logits (vocab,), new state, spikes).

        ``spikes[name]`` is that token's ternary spike tensor, shaped ``(T, features)``. The input state is not
        modified. Reproduces row ``state.pos`` of `forward` on the whole prefix.
        """
        idx = torch.as_tensor(token_id, dtype=torch.long, device=self.tok_emb.weight.device).reshape(1, 1)
        spikes: dict[str, Tensor] = {}
        x = self._embed(idx, state.pos)
        keys: list[Tensor | None] = []
        values: list[Tensor | None] = []
        for i, layer in enumerate(self.layers):
            k_past, v_past = state.keys[i], state.values[i]
            past = (k_past, v_past) if k_past is not None and v_past is not None else None
            x, (k, v) = layer(x, past, spikes, f"layers.{i}")
            keys.append(k)
            values.append(v)
        logits = self.head(self.ln_f(x.mean(0)))[0, 0]
        return logits, SpikeLMState(state.pos + 1, keys, values), {n: s[:, 0, 0] for n, s in spikes.items()}


@torch.no_grad()
def generate(model: SpikeLM, vocab: CharVocab, prompt: str, n_tokens: int) -> str:
    """Greedy (argmax, deterministic) continuation of ``prompt`` by ``n_tokens`` characters; returns only the new text.

    Uses the incremental `SpikeLM.step` while the text fits the context; past it, the model re-reads the last
    ``context`` characters with the full forward (learned absolute positions cannot go further).
    """
    if not prompt:
        raise ValueError("generate needs a non-empty prompt (the model has no start-of-text token)")
    model.eval()
    ids = [int(i) for i in vocab.encode(prompt)]
    ctx = model.config.context
    out: list[int] = []
    state = model.init_state()
    logits: Tensor | None = None
    stepping = len(ids) <= ctx  # incremental while every position fits the learned position table
    if stepping:
        for i in ids:
            logits, state, _ = model.step(i, state)
    for _ in range(n_tokens):
        if not stepping:
            window = torch.tensor([ids[-ctx:]], dtype=torch.long, device=model.tok_emb.weight.device)
            logits = model(window)[0, -1]  # type: ignore[index]
        assert logits is not None
        nxt = int(torch.argmax(logits))
        ids.append(nxt)
        out.append(nxt)
        if stepping:
            if state.pos < ctx:
                logits, state, _ = model.step(nxt, state)
            else:
                stepping = False
    return vocab.decode(out)


@torch.no_grad()
def val_loss(model: SpikeLM, ids: np.ndarray | Tensor, n_chars: int | None = None, batch: int = 8) -> float:
    """Mean next-character cross-entropy (nats/char) over the first ``n_chars`` ids, cut into non-overlapping
    windows of the model's context (each window predicts all but its first character, from the window only)."""
    ids_t = torch.as_tensor(np.asarray(ids[:n_chars] if n_chars else ids), dtype=torch.long)
    ctx = model.config.context
    n_win = (len(ids_t) - 1) // ctx
    if n_win < 1:
        raise ValueError(f"need more than {ctx} characters to evaluate, got {len(ids_t)}")
    x = ids_t[: n_win * ctx].view(n_win, ctx)
    y = ids_t[1 : n_win * ctx + 1].view(n_win, ctx)
    dev = model.tok_emb.weight.device
    total, count = 0.0, 0
    for b in range(0, n_win, batch):
        logits = model(x[b : b + batch].to(dev))
        assert isinstance(logits, Tensor)
        target = y[b : b + batch].reshape(-1).to(dev)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), target, reduction="sum"))
        count += y[b : b + batch].numel()
    return total / count


def unigram_loss_on(train_ids: np.ndarray, ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/char) on ``ids`` of the add-one-smoothed unigram fit on ``train_ids`` (the baseline of
    `CharCorpus.unigram_loss`, on an arbitrary slice)."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(ids)].mean())


# --------------------------------------------------------------------------------------------------------------------
# Checkpoint I/O (shared)
# --------------------------------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _torch_load(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for truncated zips, pickles and foreign files
        raise CheckpointError(
            f"{p}: not a readable torch checkpoint (truncated or another format?): {_one_line(e)}"
        ) from e


def _foreign_family(sd: Mapping[str, Any]) -> str | None:
    """Name the model family a raw state dict belongs to when it is clearly not the one expected."""
    keys = [k for k in sd if isinstance(k, str)]
    for k in keys:
        if re.fullmatch(r"blocks\.\d+\.att\.time_(decay|first)", k):
            return f"a SpikeGPT (RWKV) checkpoint (key '{k}')"
    return None


# --------------------------------------------------------------------------------------------------------------------
# Causal LM checkpoints
# --------------------------------------------------------------------------------------------------------------------


def save_spikelm(
    path: str | os.PathLike[str], model: SpikeLM, vocab: CharVocab, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``{"family": "spikelm", "config", "state_dict", "vocab", "meta"}`` with ``torch.save`` (atomically).

    Floating tensors are stored as float32 (half the size of float64; `load_spikelm` casts back)."""
    if model.config.vocab_size != vocab.size:
        raise ValueError(f"vocab has {vocab.size} characters but the model expects {model.config.vocab_size}")
    sd = {
        k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in model.state_dict().items()
    }
    payload = {
        "family": FAMILY,
        "config": asdict(model.config),
        "state_dict": sd,
        "vocab": vocab.chars,
        "meta": dict(meta or {}),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a shipped checkpoint must be readable by others
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def load_spikelm(path: str | os.PathLike[str], dtype: torch.dtype = torch.float64) -> tuple[SpikeLM, CharVocab]:
    """Load a checkpoint written by `save_spikelm`: -> (model in eval mode, cast to ``dtype``; vocabulary).

    Raises `CheckpointError` (one line naming the file and the key) for unreadable files, other families, missing or
    unexpected keys and wrong shapes."""
    p = Path(path)
    obj = _torch_load(p)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict checkpoint, found {type(obj).__name__}")
    if "family" not in obj:
        foreign = _foreign_family(obj)
        if foreign:
            raise CheckpointError(f"{p}: this is {foreign}, not a spikecc SpikeLM checkpoint")
        if "bert.embeddings.word_embeddings.weight" in obj:
            raise CheckpointError(
                f"{p}: this is a BERT-layout SpikeLM encoder checkpoint (key 'bert.embeddings.word_embeddings.weight');"
                " load it with load_spikelm_bert"
            )
        raise CheckpointError(f"{p}: missing key 'family' (not a spikecc SpikeLM checkpoint)")
    if obj["family"] != FAMILY:
        raise CheckpointError(f"{p}: key 'family' is {obj['family']!r}, expected {FAMILY!r}")
    for key in ("config", "state_dict", "vocab"):
        if key not in obj:
            raise CheckpointError(f"{p}: missing key '{key}'")
    raw_cfg = obj["config"]
    if not isinstance(raw_cfg, dict):
        raise CheckpointError(f"{p}: key 'config' is a {type(raw_cfg).__name__}, expected a dict")
    known = {f.name for f in fields(SpikeLMConfig)}
    if "vocab_size" not in raw_cfg:
        raise CheckpointError(f"{p}: missing key 'config.vocab_size'")
    unknown = sorted(set(raw_cfg) - known)
    if unknown:
        raise CheckpointError(f"{p}: unexpected key 'config.{unknown[0]}'")
    try:
        cfg = SpikeLMConfig(**raw_cfg)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: bad 'config': {_one_line(e)}") from e
    vocab_chars = obj["vocab"]
    if not isinstance(vocab_chars, str) or len(vocab_chars) != cfg.vocab_size:
        n = len(vocab_chars) if isinstance(vocab_chars, str) else type(vocab_chars).__name__
        raise CheckpointError(f"{p}: key 'vocab' has {n} characters, expected a string of {cfg.vocab_size}")
    model = SpikeLM(cfg)
    sd = obj["state_dict"]
    check_state_dict(sd, model.state_dict(), str(p), FAMILY)
    model.load_state_dict(sd)
    model.to(dtype).eval()
    return model, CharVocab(vocab_chars)


# --------------------------------------------------------------------------------------------------------------------
# BERT-layout SpikeLM encoder
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SpikeBertConfig:
    """Sizes of a SpikeLM BERT encoder (read from checkpoint shapes by `load_spikelm_bert`)."""

    vocab_size: int
    hidden: int
    n_layer: int
    num_heads: int
    intermediate: int
    max_pos: int
    type_vocab: int = 2
    T: int = 4
    k: float = 2.0
    threshold_mode: str = "code"
    leak: float = 0.25
    layer_norm_eps: float = 1e-12
    pooler: bool = True

    def __post_init__(self) -> None:
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        if self.num_heads < 1 or self.hidden % self.num_heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of num_heads ({self.num_heads})")


class _BertEmbeddings(nn.Module):
    def __init__(self, cfg: SpikeBertConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden)
        self.position = nn.Embedding(cfg.max_pos, cfg.hidden)
        self.token_type = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)


class _BertAttention(nn.Module):
    """Post-LN BERT self-attention with SpikeLM spiking. Unlike the causal LM, Q, K and V each have their own input
    neuron (``q_in_spike``, ``k_in_spike``, ``v_in_spike``), as the code gives each `SpikeLinear` its own alphas."""

    def __init__(self, cfg: SpikeBertConfig):
        super().__init__()
        H, T, k, mode, leak = cfg.hidden, cfg.T, cfg.k, cfg.threshold_mode, cfg.leak
        self.n_head = cfg.num_heads
        self.q_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.k_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.v_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.k_spike = ElasticBiSpike(T, k, mode, 0.0)  # type: ignore[arg-type]
        self.v_spike = ElasticBiSpike(T, k, mode, 0.0)  # type: ignore[arg-type]
        self.out_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.out = nn.Linear(H, H)
        self.ln = nn.LayerNorm(H, eps=cfg.layer_norm_eps)


class _BertMLP(nn.Module):
    def __init__(self, cfg: SpikeBertConfig):
        super().__init__()
        T, k, mode, leak = cfg.T, cfg.k, cfg.threshold_mode, cfg.leak
        self.in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.out_in_spike = ElasticBiSpike(T, k, mode, leak)  # type: ignore[arg-type]
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)


class _BertLayer(nn.Module):
    def __init__(self, cfg: SpikeBertConfig):
        super().__init__()
        self.attn = _BertAttention(cfg)
        self.mlp = _BertMLP(cfg)


class SpikeBertEncoder(nn.Module):
    """The bidirectional encoder of the published SpikeLM BERT (no causal mask), implemented here in torch.

    ``e = LN(E_word[x] + E_pos[p] + E_type[tt])`` repeated over T steps, then per layer (post-LN, as BERT)::

        a = LN_a(h + W_o S_o(Attn(Q, K, V)) + b_o),   Q = W_q S_q(h) + b_q,
        K = S_K(W_k S_k(h) + b_k),   V = S_V(W_v S_v(h) + b_v)
        h = LN_m(a + W_2 S_2(GELU(W_1 S_1(a) + b_1)) + b_2)

    with attention per spike step and head (additive padding mask), and the output ``mean_t h[t]``. Spike names:
    ``layers.{i}.attn.{q_in,k_in,v_in}_spike``, ``layers.{i}.attn.{k,v}_spike``, ``layers.{i}.attn.out_in_spike``,
    ``layers.{i}.mlp.in_spike``, ``layers.{i}.mlp.out_in_spike`` (see `_bert_key_map` for the checkpoint keys).
    """

    def __init__(self, config: SpikeBertConfig):
        super().__init__()
        self.config = config
        self.embeddings = _BertEmbeddings(config)
        self.layers = nn.ModuleList([_BertLayer(config) for _ in range(config.n_layer)])
        self.pooler = nn.Linear(config.hidden, config.hidden) if config.pooler else None

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        return_spikes: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """``input_ids`` (B, L) -> last hidden state (B, L, hidden) [, spikes shaped (T, B, L, features)].

        ``attention_mask`` (B, L): 1 for tokens to attend to, 0 for padding (as Hugging Face)."""
        cfg = self.config
        B, L = input_ids.shape
        if L > cfg.max_pos:
            raise ValueError(f"sequence of {L} tokens exceeds max_pos={cfg.max_pos}")
        emb = self.embeddings
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pos = torch.arange(L, device=input_ids.device)
        h = emb.ln(emb.word(input_ids) + emb.token_type(token_type_ids) + emb.position(pos))
        x = h.unsqueeze(0).expand(cfg.T, *h.shape)
        add_mask: Tensor | None = None
        if attention_mask is not None:
            # (B, L) -> (1, B, 1, 1, L), added to the scores of every step and head (HF's extended mask).
            add_mask = (1.0 - attention_mask.to(h.dtype)) * torch.finfo(h.dtype).min
            add_mask = add_mask[None, :, None, None, :]
        spikes: dict[str, Tensor] | None = {} if return_spikes else None
        nh = cfg.num_heads
        dh = cfg.hidden // nh

        def heads(t: Tensor) -> Tensor:
            return t.view(cfg.T, B, L, nh, dh).transpose(2, 3)

        for i, layer in enumerate(self.layers):
            at, mlp = layer.attn, layer.mlp
            sq, sk, sv = at.q_in_spike(x), at.k_in_spike(x), at.v_in_spike(x)
            q = at.query(sq)
            k = at.k_spike(at.key(sk))
            v = at.v_spike(at.value(sv))
            scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(dh)
            if add_mask is not None:
                scores = scores + add_mask
            ctx = (torch.softmax(scores, dim=-1) @ heads(v)).transpose(2, 3).reshape(cfg.T, B, L, cfg.hidden)
            so = at.out_in_spike(ctx)
            a = at.ln(at.out(so) + x)
            s1 = mlp.in_spike(a)
            s2 = mlp.out_in_spike(F.gelu(mlp.fc1(s1)))
            x = mlp.ln(mlp.fc2(s2) + a)
            if spikes is not None:
                p = f"layers.{i}"
                spikes.update({
                    f"{p}.attn.q_in_spike": sq, f"{p}.attn.k_in_spike": sk, f"{p}.attn.v_in_spike": sv,
                    f"{p}.attn.k_spike": k, f"{p}.attn.v_spike": v, f"{p}.attn.out_in_spike": so,
                    f"{p}.mlp.in_spike": s1, f"{p}.mlp.out_in_spike": s2,
                })  # fmt: skip
        out = x.mean(0)
        return (out, spikes) if spikes is not None else out

    def pool(self, hidden: Tensor) -> Tensor:
        """BERT pooler (real): ``tanh(W h[:, 0] + b)``."""
        if self.pooler is None:
            raise ValueError("this encoder has no pooler (the checkpoint had no 'bert.pooler.dense.*' keys)")
        return torch.tanh(self.pooler(hidden[:, 0]))

    def to_bert_state_dict(self, prefix: str = "bert.") -> dict[str, Tensor]:
        """Export in the SpikeLM / Hugging Face BERT key layout (alphas as 0-d tensors, one key per step)."""
        own = self.state_dict()
        out: dict[str, Tensor] = {}
        for bert_key, own_key, t, _ in _bert_key_map(self.config, prefix):
            v = own[own_key]
            out[bert_key] = (v[t] if t is not None else v).detach().clone()
        return out


# Neurons on the inputs of the linears: SpikeLM key (module path under the layer) -> our neuron.
_BERT_ACT_CLIP = {
    "attention.self.query": "attn.q_in_spike",
    "attention.self.key": "attn.k_in_spike",
    "attention.self.value": "attn.v_in_spike",
    "attention.output.dense": "attn.out_in_spike",
    "intermediate.dense": "mlp.in_spike",
    "output.dense": "mlp.out_in_spike",
}
_BERT_LINEARS = {
    "attention.self.query": "attn.query",
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.output.dense": "attn.out",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_BERT_NORMS = {"attention.output.LayerNorm": "attn.ln", "output.LayerNorm": "mlp.ln"}
_BERT_IGNORED = re.compile(r"(cls|classifier|qa_outputs)\..*|.*position_ids|.*token_type_ids|.*\.weight_clip_val")


def _bert_key_map(cfg: SpikeBertConfig, prefix: str = "bert.") -> list[tuple[str, str, int | None, tuple[int, ...]]]:
    """Every checkpoint key of a SpikeLM BERT encoder: (checkpoint key, our state-dict key, step or None, shape).

    Mapping (``L = {prefix}encoder.layer.{i}.``; alphas are 0-d tensors, one per step t):

    * ``{prefix}embeddings.{word,position,token_type}_embeddings.weight``
      -> ``embeddings.{word,position,token_type}.weight``; ``{prefix}embeddings.LayerNorm.*`` -> ``embeddings.ln.*``
    * ``L attention.self.{query,key,value}.{weight,bias}`` -> ``layers.{i}.attn.{query,key,value}.*``;
      ``L attention.output.dense.*`` -> ``layers.{i}.attn.out.*``;
      ``L intermediate.dense.*`` -> ``layers.{i}.mlp.fc1.*``;
      ``L output.dense.*`` -> ``layers.{i}.mlp.fc2.*``; ``L attention.output.LayerNorm.*`` -> ``layers.{i}.attn.ln.*``;
      ``L output.LayerNorm.*`` -> ``layers.{i}.mlp.ln.*``
    * ``L <linear>.act_clip_val.{t}`` (alpha of the neuron on that linear's input): query -> ``attn.q_in_spike``,
      key -> ``attn.k_in_spike``, value -> ``attn.v_in_spike``, attention.output.dense -> ``attn.out_in_spike``,
      intermediate.dense -> ``mlp.in_spike``, output.dense -> ``mlp.out_in_spike`` (``.alpha[t]``)
    * ``L attention.self.clip_key.{t}`` -> ``layers.{i}.attn.k_spike.alpha[t]``;
      ``L attention.self.clip_value.{t}`` -> ``layers.{i}.attn.v_spike.alpha[t]``
    * ``{prefix}pooler.dense.*`` -> ``pooler.*`` (when the config has a pooler)
    """
    H, I = cfg.hidden, cfg.intermediate
    e = f"{prefix}embeddings."
    rows: list[tuple[str, str, int | None, tuple[int, ...]]] = [
        (f"{e}word_embeddings.weight", "embeddings.word.weight", None, (cfg.vocab_size, H)),
        (f"{e}position_embeddings.weight", "embeddings.position.weight", None, (cfg.max_pos, H)),
        (f"{e}token_type_embeddings.weight", "embeddings.token_type.weight", None, (cfg.type_vocab, H)),
        (f"{e}LayerNorm.weight", "embeddings.ln.weight", None, (H,)),
        (f"{e}LayerNorm.bias", "embeddings.ln.bias", None, (H,)),
    ]
    lin_shapes = {
        "attention.self.query": (H, H),
        "attention.self.key": (H, H),
        "attention.self.value": (H, H),
        "attention.output.dense": (H, H),
        "intermediate.dense": (I, H),
        "output.dense": (H, I),
    }
    for i in range(cfg.n_layer):
        L, o = f"{prefix}encoder.layer.{i}.", f"layers.{i}."
        for src, dst in _BERT_LINEARS.items():
            shape = lin_shapes[src]
            rows.append((f"{L}{src}.weight", f"{o}{dst}.weight", None, shape))
            rows.append((f"{L}{src}.bias", f"{o}{dst}.bias", None, (shape[0],)))
        for src, dst in _BERT_NORMS.items():
            rows.append((f"{L}{src}.weight", f"{o}{dst}.weight", None, (H,)))
            rows.append((f"{L}{src}.bias", f"{o}{dst}.bias", None, (H,)))
        for t in range(cfg.T):
            for src, dst in _BERT_ACT_CLIP.items():
                rows.append((f"{L}{src}.act_clip_val.{t}", f"{o}{dst}.alpha", t, ()))
            rows.append((f"{L}attention.self.clip_key.{t}", f"{o}attn.k_spike.alpha", t, ()))
            rows.append((f"{L}attention.self.clip_value.{t}", f"{o}attn.v_spike.alpha", t, ()))
    if cfg.pooler:
        rows.append((f"{prefix}pooler.dense.weight", "pooler.weight", None, (H, H)))
        rows.append((f"{prefix}pooler.dense.bias", "pooler.bias", None, (H,)))
    return rows


def _need(sd: Mapping[str, Any], key: str, ndim: int, name: str) -> Tensor:
    """``sd[key]``, a tensor of ``ndim`` dimensions, or a one-line CheckpointError naming ``name`` and the key."""
    if key not in sd:
        raise CheckpointError(f"{name}: missing key '{key}'")
    v = sd[key]
    if not isinstance(v, Tensor):
        raise CheckpointError(f"{name}: key '{key}' is a {type(v).__name__}, expected a tensor")
    if v.dim() != ndim:
        raise CheckpointError(f"{name}: key '{key}' has shape {fmt_shape(v.shape)}, expected a {ndim}-d tensor")
    return v


def _unwrap_bert(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: expected a state dict, found {type(obj).__name__}")
    for wrapper in ("state_dict", "model", "module"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and any(isinstance(k, str) and "embeddings." in k for k in inner):
            return dict(inner)
    return dict(obj)


def load_spikelm_bert(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    num_heads: int | None = None,
    threshold_mode: ThresholdMode = "code",
    dtype: torch.dtype = torch.float64,
    config: Mapping[str, Any] | None = None,
) -> SpikeBertEncoder:
    """Build the SpikeLM BERT encoder from a checkpoint file (or state dict) in Hugging Face BERT key layout.

    Layers, hidden, intermediate, vocabulary, positions, token types and T come from the keys and shapes;
    ``num_heads`` comes from ``config`` (a Hugging Face config.json: ``num_attention_heads``, also
    ``layer_norm_eps``) where given, else defaults to hidden // 64 (BERT's head size). ``threshold_mode`` defaults
    to "code": the published SpikeLM checkpoints come from the code. Loaded alphas count as calibrated (frozen;
    clamped to >= 1e-5 like the code). Keys ignored: ``cls.*`` / ``classifier.*`` / ``qa_outputs.*`` heads,
    ``*position_ids``, ``*token_type_ids`` and ``*.weight_clip_val`` (an unused buffer of the code's `SpikeLinear`).
    Any other unknown key, a missing key or a wrong shape raises `CheckpointError` naming the file and the key.
    """
    if isinstance(source, Mapping):
        name, obj = "<state_dict>", source
    else:
        name, obj = str(source), _torch_load(source)
    if isinstance(obj, Mapping) and obj.get("family") == FAMILY:
        raise CheckpointError(
            f"{name}: this is a spikecc SpikeLM-style causal decoder checkpoint (key 'family'); load it with "
            "load_spikelm"
        )
    sd = _unwrap_bert(obj, name)
    foreign = _foreign_family(sd)
    if foreign:
        raise CheckpointError(f"{name}: this is {foreign}, not a SpikeLM BERT-layout checkpoint")
    prefix = "bert."
    if f"{prefix}embeddings.word_embeddings.weight" not in sd and "embeddings.word_embeddings.weight" in sd:
        prefix = ""  # a bare BertModel state dict

    def need(key: str, ndim: int) -> Tensor:
        return _need(sd, key, ndim, name)

    word = need(f"{prefix}embeddings.word_embeddings.weight", 2)
    vocab_size, hidden = word.shape
    max_pos = need(f"{prefix}embeddings.position_embeddings.weight", 2).shape[0]
    type_vocab = need(f"{prefix}embeddings.token_type_embeddings.weight", 2).shape[0]
    layer_re = re.compile(re.escape(prefix) + r"encoder\.layer\.(\d+)\.")
    layer_ids = {int(m.group(1)) for k in sd if isinstance(k, str) and (m := layer_re.match(k))}
    n_layer = max(layer_ids) + 1 if layer_ids else 1  # no layers at all: the layer-0 lookups below name the key
    L0 = f"{prefix}encoder.layer.0."
    intermediate = need(f"{L0}intermediate.dense.weight", 2).shape[0]
    T = 0
    while f"{L0}attention.self.clip_key.{T}" in sd:
        T += 1
    if T == 0:
        hint = " (a plain BERT without SpikeLM spike thresholds?)" if f"{L0}attention.self.query.weight" in sd else ""
        raise CheckpointError(f"{name}: missing key '{L0}attention.self.clip_key.0'{hint}")
    config = dict(config or {})
    if num_heads is None and "num_attention_heads" in config:
        num_heads = _config_int(config, "num_attention_heads", name)
    heads = num_heads if num_heads is not None else max(1, hidden // 64)
    eps = float(config.get("layer_norm_eps", 1e-12))
    try:
        cfg = SpikeBertConfig(
            vocab_size=vocab_size, hidden=hidden, n_layer=n_layer, num_heads=heads, intermediate=intermediate,
            max_pos=max_pos, type_vocab=type_vocab, T=T, threshold_mode=threshold_mode, layer_norm_eps=eps,
            pooler=f"{prefix}pooler.dense.weight" in sd,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
    model = SpikeBertEncoder(cfg)
    own = model.state_dict()
    rows = _bert_key_map(cfg, prefix)
    for key, own_key, t, shape in rows:
        if key not in sd:
            raise CheckpointError(f"{name}: missing key '{key}'")
        v = sd[key]
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{name}: key '{key}' is a {type(v).__name__}, expected a tensor")
        if t is None:
            if tuple(v.shape) != shape:
                raise CheckpointError(
                    f"{name}: key '{key}' has shape {fmt_shape(v.shape)}, expected {fmt_shape(shape)}")
            own[own_key] = v.detach().clone()
        else:
            if v.numel() != 1:
                raise CheckpointError(f"{name}: key '{key}' has shape {fmt_shape(v.shape)}, expected () (one alpha)")
            if not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"{name}: key '{key}' holds a non-finite alpha ({float(v)})")
            own[own_key] = own[own_key].clone()
            own[own_key][t] = max(float(v.reshape(())), ALPHA_EPS)
    known = {r[0] for r in rows}
    for key in sd:
        if key not in known and not (isinstance(key, str) and _BERT_IGNORED.fullmatch(key)):
            raise CheckpointError(f"{name}: unexpected key '{key}' (not part of a SpikeLM BERT encoder with {T} steps)")
    for k_ in own:
        if k_.endswith(".calibrated"):
            own[k_] = torch.tensor(True)
    model.load_state_dict(own)
    return model.to(dtype).eval()


def _config_int(config: Mapping[str, Any], key: str, source: str, default: int | None = None, minimum: int = 1) -> int:
    """An integer entry of a config.json (``default`` when absent), or a one-line CheckpointError naming it."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointError(f"{source}: config.json entry '{key}' is {value!r}, expected an integer >= {minimum}")
    return value


@torch.no_grad()
def bert_init(model: nn.Module, g: torch.Generator) -> None:
    """BERT's initialisation, in parameter order from one generator: LayerNorm weight 1 and bias 0, other biases 0,
    other weights N(0, 0.02)."""
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in norms:
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.02)


def random_bert_state_dict(
    n_layer: int = 12,
    hidden: int = 768,
    intermediate: int = 3072,
    vocab: int = 30522,
    max_pos: int = 512,
    T: int = 4,
    seed: int = 0,
    num_heads: int | None = None,
    type_vocab: int = 2,
    k: float = 2.0,
) -> dict[str, Tensor]:
    """A random SpikeLM checkpoint in BERT layout (BERT-base sizes by default), made without storing anything.

    Weights ~ N(0, 0.02), LayerNorm 1/0 (BERT's init); the alphas are calibrated (Eq. 10, code thresholds, ``k``) on
    one random sequence of min(16, max_pos) tokens, so the spikes are realistic. Holds the keys a real SpikeLM
    pretraining checkpoint has for the encoder, the pooler and the unused ``weight_clip_val`` buffers.
    """
    g = torch.Generator().manual_seed(seed)
    cfg = SpikeBertConfig(
        vocab_size=vocab, hidden=hidden, n_layer=n_layer, num_heads=num_heads or max(1, hidden // 64),
        intermediate=intermediate, max_pos=max_pos, type_vocab=type_vocab, T=T, k=k,
    )  # fmt: skip
    model = SpikeBertEncoder(cfg)
    bert_init(model, g)
    with torch.no_grad():
        ids = torch.randint(0, vocab, (1, min(16, max_pos)), generator=g)
        model(ids)  # calibrates every neuron on this first batch
    sd = model.to_bert_state_dict()
    for i in range(n_layer):
        for lin in _BERT_LINEARS:
            sd[f"bert.encoder.layer.{i}.{lin}.weight_clip_val"] = torch.tensor([2.5])
    return sd
