"""SpikeGPT torch reference model (Zhu et al., TMLR 2024; code ridgerchu/SpikeGPT, RWKV-4 based).

This module is the ground truth every other part of spikecc (IR exporter, simulators, Loihi mapping) is
checked against, so it spells out the equations and keeps the published checkpoint layout.

Model (one forward pass over a token sequence ``idx[0..T-1]``; the SNN time axis IS the token axis):

    x_t     = Theta(E[idx_t])                       binary embedding, Theta(z) = 1 if z >= 0 else 0
                                                    (embedding="real": x_t = E[idx_t], see below)
    x_t     = ln0(x_t)                              block 0 only
    for each block i:
        x_t = x_t + LIF_att(att(ln1(x_t)))          spiking RWKV (time-mix)
        x_t = x_t + LIF_ffn(ffn(ln2(x_t)))          spiking RFFN (channel-mix)
    logits_t = head(ln_out(x_t))

Two options choose between the authors' training code and their inference script (ridgerchu/SpikeGPT):

* ``embedding``: "binary" (the training code, ``src/model.py``: ``x = self.atan(self.emb(idx))``, whose forward is
  Theta) or "real" (x_t = E[idx_t]). The inference script ``src/model_run.py`` binarizes only when
  ``vocab_size == 77`` (the BookCorpus character model); the 216M BPE model reads the real-valued embedding (paper
  Sec. 4.1: "remove the binary embedding but use the first layer neurons for encoding"). `authors_embedding` is that
  rule; `load_spikegpt` applies it unless told otherwise.
* ``inference``: "training" (default; the equations above, the training code's) or "rescaled", the inference
  script's ``RWKV_RESCALE_LAYER = 6``: it divides ``att.output.weight`` and ``ffn.value.weight`` of block i by
  2^(i // 6) and halves x after every sixth block (``if (i+1) % 6 == 0: x = x / 2``). For RWKV without spikes this
  only rescales the residual stream (LayerNorm undoes it), but here the LIFs between see inputs divided by 2^(i // 6)
  and their unit spikes are not scaled, so for L > 6 (both released checkpoints: L18 and L24) the two modes are
  different networks. Pick "training" to run what the training code trained (and what its losses measure); pick
  "rescaled" to reproduce the text the authors' ``run.py`` prints for a released checkpoint. For L <= 6 they agree.

LIF neuron (spikingjelly ``LIFNode``: tau = 2, v_threshold = 1, v_reset = 0, decay_input = True), one step
per token, membrane V carried from token to token and starting at 0:

    H_t = V_{t-1} + (X_t - V_{t-1}) / tau
    S_t = Theta(H_t - v_threshold)                  (>=: a neuron exactly at threshold fires)
    V_t = H_t * (1 - S_t)                           hard reset to 0

Time-mix (token shift: ``x_{-1} = 0``; ``x`` here is the ln1 output):

    xk = x_t * mix_k + x_{t-1} * (1 - mix_k)        (same for v, r)
    k = K xk,  v = V xv,  r = sigmoid(R xr)
    w = -exp(time_decay),  u = time_first
    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
          / (sum_{i<t} e^{(t-1-i) w + k_i}     + e^{u + k_t})
    out = O (r * wkv_t)

wkv is evaluated recurrently with the RWKV-4 running-max state (aa, bb, pp) so exp never overflows.

Channel-mix:

    xk, xr as above (from the ln2 output)
    out = sigmoid(R xr) * (V relu(K xk)^2)

Training uses the arctan surrogate gradient of the paper (spikingjelly ``surrogate.ATan(alpha=2)``) for
every Theta: d Theta(z)/dz ~= alpha / 2 / (1 + (pi/2 * alpha * z)^2).  As in spikingjelly with
``detach_reset=False`` the gradient also flows through the reset.

Checkpoint: the raw ``torch.save(state_dict)`` of the published code, no config file; L, D, vocabulary
and FFN width are read from tensor shapes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecc.errors import CheckpointError
from spikecc.models.data import CharVocab
from spikecc.models.tokenizer import Tokenizer

__all__ = [
    "ATAN_ALPHA",
    "SpikeGPT",
    "SpikeGPTConfig",
    "authors_embedding",
    "expected_shapes",
    "config_from_state_dict",
    "generate",
    "heaviside",
    "lif_sequence",
    "lif_step",
    "load_spikegpt",
    "load_vocab",
    "random_state_dict",
    "resolve_embedding",
    "save_spikegpt",
    "save_vocab",
    "spike_fn",
    "wkv_sequence",
    "wkv_sequence_autograd",
    "wkv_step",
]

#: Slope of the arctan surrogate gradient (spikingjelly ``surrogate.ATan`` default, used by SpikeGPT).
ATAN_ALPHA = 2.0
#: Initial running max ``pp`` of the wkv state: "minus infinity" that stays finite so that
#: ``pp - p`` and ``pp + w`` never produce inf - inf = nan (RWKV-4 uses -1e30 as well).
PP_INIT = -1e30
#: Embedding options: the training code's Heaviside spikes, or the real-valued rows.
EMBEDDINGS = ("binary", "real")
#: Inference options: the training code's equations, or the authors' inference script's rescaling.
INFERENCE_MODES = ("training", "rescaled")
#: ``RWKV_RESCALE_LAYER`` of the authors' ``src/model_run.py``: "set x=x/2 every X layer".
RESCALE_LAYER = 6
#: Vocabulary size at which the authors' ``model_run.py`` binarizes the embedding (the BookCorpus character model).
BINARY_EMBEDDING_VOCAB = 77


# --------------------------------------------------------------------------------------------------
# Spiking primitives
# --------------------------------------------------------------------------------------------------


class _ATanSpike(torch.autograd.Function):
    """Theta(z) = (z >= 0) forward; arctan surrogate alpha/2 / (1 + (pi/2 alpha z)^2) backward."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * (ATAN_ALPHA / 2.0 / (1.0 + (math.pi / 2.0 * ATAN_ALPHA * z) ** 2))


def heaviside(z: Tensor) -> Tensor:
    """Theta(z) = 1 where z >= 0 else 0, in z's dtype (no gradient): the inference-time spike function."""
    return (z >= 0).to(z.dtype)


def spike_fn(z: Tensor) -> Tensor:
    """Theta(z) with the arctan surrogate gradient when autograd is recording, plain Theta otherwise."""
    if torch.is_grad_enabled() and z.requires_grad:
        return _ATanSpike.apply(z)
    return heaviside(z)


def lif_step(x: Tensor, v: Tensor, tau: float = 2.0, v_threshold: float = 1.0) -> tuple[Tensor, Tensor]:
    """One spikingjelly LIF step: H = V + (X - V)/tau; S = Theta(H - v_th); V' = H (1 - S).

    Returns ``(S, V')``.  The order of the arithmetic is exactly spikingjelly's, so a reimplementation
    that follows the same equation gets bit-identical spikes.
    """
    h = v + (x - v) / tau
    s = spike_fn(h - v_threshold)
    return s, h * (1.0 - s)


def lif_sequence(
    x: Tensor, tau: float = 2.0, v_threshold: float = 1.0, v0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Run :func:`lif_step` along dim 1 of ``x`` (B, T, ...), one step per token.

    Returns ``(spikes (B, T, ...), final membrane (B, ...))``; the membrane starts at ``v0`` (default 0).
    When ``x`` needs a gradient the loop runs inside :class:`_LIFSequence`, whose hand-written backward
    (BPTT with the arctan surrogate, gradient through the reset) avoids building a T-deep autograd graph.
    """
    v = torch.zeros_like(x[:, 0]) if v0 is None else v0
    if torch.is_grad_enabled() and x.requires_grad and not v.requires_grad:
        return _LIFSequence.apply(x, v, tau, v_threshold)
    out = []
    for t in range(x.shape[1]):
        s, v = lif_step(x[:, t], v, tau, v_threshold)
        out.append(s)
    return torch.stack(out, dim=1), v


class _LIFSequence(torch.autograd.Function):
    """Whole-sequence LIF with manual BPTT.  With S_t = Theta(H_t - th), sigma'_t its surrogate slope:

        dL/dH_t   = gS_t sigma'_t + gV_t ((1 - S_t) - H_t sigma'_t)     (V_t = H_t (1 - S_t))
        dL/dX_t   = dL/dH_t / tau
        gV_{t-1}  = dL/dH_t (1 - 1/tau)                                 (H_t = V_{t-1} + (X_t - V_{t-1})/tau)
    """

    @staticmethod
    def forward(ctx, x: Tensor, v0: Tensor, tau: float, v_threshold: float):  # type: ignore[override]
        v = v0
        hs, ss = [], []
        for t in range(x.shape[1]):
            h = v + (x[:, t] - v) / tau  # the exact arithmetic of lif_step, so spikes are identical
            s = heaviside(h - v_threshold)
            v = h * (1.0 - s)
            hs.append(h)
            ss.append(s)
        h_all, s_all = torch.stack(hs, 1), torch.stack(ss, 1)
        ctx.save_for_backward(h_all, s_all)
        ctx.tau, ctx.v_threshold = tau, v_threshold
        return s_all, v

    @staticmethod
    def backward(ctx, g_s: Tensor, g_v_last: Tensor):  # type: ignore[override]
        h_all, s_all = ctx.saved_tensors
        tau, th = ctx.tau, ctx.v_threshold
        z = h_all - th
        slope = ATAN_ALPHA / 2.0 / (1.0 + (math.pi / 2.0 * ATAN_ALPHA * z) ** 2)
        g_v = g_v_last if g_v_last is not None else torch.zeros_like(h_all[:, 0])
        g_x = torch.empty_like(h_all)
        keep = 1.0 - 1.0 / tau
        for t in range(h_all.shape[1] - 1, -1, -1):
            sl = slope[:, t]
            g_h = g_s[:, t] * sl + g_v * ((1.0 - s_all[:, t]) - h_all[:, t] * sl)
            g_x[:, t] = g_h / tau
            g_v = g_h * keep
        return g_x, g_v, None, None


def wkv_step(
    w: Tensor, u: Tensor, k: Tensor, v: Tensor, aa: Tensor, bb: Tensor, pp: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One token of the RWKV-4 wkv recurrence in running-max form.

    State: ``aa = sum_i e^{k_i + decay - pp} v_i``, ``bb = sum_i e^{k_i + decay - pp}``, ``pp`` = running max
    of the exponents, so that ``aa * e^pp`` and ``bb * e^pp`` are the numerator and denominator sums.
    ``w`` is the (negative) per-step log decay ``-exp(time_decay)``, ``u`` the bonus ``time_first``.

        q = max(pp, u + k);  y = (e^{pp-q} aa + e^{u+k-q} v) / (e^{pp-q} bb + e^{u+k-q})
        q' = max(pp + w, k); aa' = e^{pp+w-q'} aa + e^{k-q'} v; bb' = e^{pp+w-q'} bb + e^{k-q'}; pp' = q'

    Returns ``(y, aa', bb', pp')``.
    """
    ww = u + k
    q = torch.maximum(pp, ww)
    e1 = torch.exp(pp - q)
    e2 = torch.exp(ww - q)
    y = (e1 * aa + e2 * v) / (e1 * bb + e2)
    ww = pp + w
    q = torch.maximum(ww, k)
    e1 = torch.exp(ww - q)
    e2 = torch.exp(k - q)
    return y, e1 * aa + e2 * v, e1 * bb + e2, q


def wkv_sequence(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """wkv for a whole sequence: ``k``, ``v`` shaped (B, T, C), state starting empty; returns (B, T, C).

    With autograd recording, runs :class:`_WKVSequence` (same forward arithmetic, hand-written backward);
    :func:`wkv_sequence_autograd` is the plain loop through :func:`wkv_step` that its test compares with.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (w, u, k, v)):
        return _WKVSequence.apply(w, u, k, v)
    with torch.no_grad():
        return wkv_sequence_autograd(w, u, k, v)


def wkv_sequence_autograd(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Plain loop of :func:`wkv_step` (differentiated by autograd: slow, used as the reference)."""
    b, _, c = k.shape
    aa = k.new_zeros(b, c)
    bb = k.new_zeros(b, c)
    pp = k.new_full((b, c), PP_INIT)
    ys = []
    for t in range(k.shape[1]):
        y, aa, bb, pp = wkv_step(w, u, k[:, t], v[:, t], aa, bb, pp)
        ys.append(y)
    return torch.stack(ys, dim=1)


class _WKVSequence(torch.autograd.Function):
    """wkv with a manual backward.  Writing y_t = sum_i alpha_{t,i} v_i (alpha: the normalised weights,
    e^{(t-1-i)w + k_i} / D_t for i < t and e^{u + k_t} / D_t for i = t), and g_t = dL/dy_t:

        gv_i = sum_{t >= i} g_t alpha_{t,i}
        gk_i = v_i gv_i - sum_{t >= i} g_t alpha_{t,i} y_t
        gu   = sum_t g_t alpha_{t,t} (v_t - y_t)
        gw   = sum_t g_t (N'_t - y_t D'_t) / D_t
               with N'_t = sum_{i<t} (t-1-i) e^{(t-1-i)w + k_i} v_i (D'_t alike, without v_i)

    The sums over t > i run backwards as P_i = e^w P_{i+1} + g_{i+1}/D_{i+1} (and Q_i with an extra
    y_{i+1}), kept as (p, q) * e^o with a running max o, exactly like the forward keeps (aa, bb) * e^pp:
    every exponential that is evaluated has a non-positive argument.
    """

    @staticmethod
    def forward(ctx, w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        b, n_t, c = k.shape
        aa = k.new_zeros(b, c)
        bb = k.new_zeros(b, c)
        pp = k.new_full((b, c), PP_INIT)
        da = k.new_zeros(b, c)  # d(aa)/dw and d(bb)/dw on the aa/bb scale
        db = k.new_zeros(b, c)
        ys, qs, ds = [], [], []
        g_w_factor = []  # (aa' - y bb') e1 / den for each t: dy_t/dw
        for t in range(n_t):
            kt, vt = k[:, t], v[:, t]
            ww = u + kt
            q = torch.maximum(pp, ww)
            e1 = torch.exp(pp - q)
            e2 = torch.exp(ww - q)
            den = e1 * bb + e2
            y = (e1 * aa + e2 * vt) / den
            ys.append(y)
            qs.append(q)
            ds.append(den)
            g_w_factor.append(e1 * (da - y * db) / den)
            ww = pp + w
            q2 = torch.maximum(ww, kt)
            e1 = torch.exp(ww - q2)
            e2 = torch.exp(kt - q2)
            # d/dw of (e^{pp} aa) = e^w (A + A'): both terms rescaled by e^{pp + w - q2} = e1.
            da = e1 * (aa + da)
            db = e1 * (bb + db)
            aa = e1 * aa + e2 * vt
            bb = e1 * bb + e2
            pp = q2
        y_all = torch.stack(ys, 1)
        ctx.save_for_backward(w, u, k, v, y_all, torch.stack(qs, 1), torch.stack(ds, 1),
                              torch.stack(g_w_factor, 1))
        return y_all

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        w, u, k, v, y, q, den, dydw = ctx.saved_tensors
        n_t = k.shape[1]
        g = g.contiguous()
        # 1/D_t = e^{-q_t} / den_t; g_t / D_t = e^{-q_t} * r_t with r_t = g_t / den_t.
        r = g / den
        gk = torch.empty_like(k)
        gv = torch.empty_like(v)
        gu = (r * torch.exp(u + k - q) * (v - y)).sum(dim=(0, 1))
        gw = (g * dydw).sum(dim=(0, 1))
        p_acc = torch.zeros_like(k[:, 0])
        q_acc = torch.zeros_like(k[:, 0])
        o = torch.full_like(k[:, 0], PP_INIT)  # log-scale of (p_acc, q_acc)
        for t in range(n_t - 1, -1, -1):
            kt, vt = k[:, t], v[:, t]
            self_w = r[:, t] * torch.exp(u + kt - q[:, t])  # g_t alpha_{t,t}
            later = torch.exp(kt + o)  # e^{k_t} * e^o, argument <= 0
            gv_t = self_w + later * p_acc
            gv[:, t] = gv_t
            gk[:, t] = vt * gv_t - (self_w * y[:, t] + later * q_acc)
            # fold in term t for position t-1: P_{t-1} = e^w P_t + g_t / D_t (g_t/D_t = r_t e^{-q_t})
            nq = -q[:, t]
            o2 = torch.maximum(w + o, nq)
            e1 = torch.exp(w + o - o2)
            e2 = torch.exp(nq - o2)
            p_acc = e1 * p_acc + e2 * r[:, t]
            q_acc = e1 * q_acc + e2 * r[:, t] * y[:, t]
            o = o2
        return gw, gu, gk, gv


def _scaled(x: Tensor, scale: float) -> Tensor:
    """``x * scale``, skipped for 1 (the training code has no multiplication there)."""
    return x if scale == 1.0 else x * scale


def _shift(x: Tensor) -> Tensor:
    """Token shift of (B, T, C): row t gets row t-1, row 0 gets zeros (``nn.ZeroPad2d((0, 0, 1, -1))``)."""
    return F.pad(x, (0, 0, 1, -1))


# --------------------------------------------------------------------------------------------------
# Modules (attribute names = published state-dict keys)
# --------------------------------------------------------------------------------------------------


@dataclass
class SpikeGPTConfig:
    """Sizes and neuron options.  Only the sizes are recoverable from a checkpoint; tau and v_threshold are
    the published values (spikingjelly LIFNode defaults as used by SpikeGPT)."""

    n_layer: int
    d_model: int
    vocab_size: int
    d_ffn: int
    tau: float = 2.0
    v_threshold: float = 1.0
    embedding: str = "binary"  # "binary" | "real" (module docstring)
    inference: str = "training"  # "training" | "rescaled" (module docstring)

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {self.embedding!r}")
        if self.inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {self.inference!r}")

    def branch_scale(self, i: int) -> float:
        """Factor on block i's LIF inputs: 2^-(i // 6) in "rescaled" mode (``model_run.py`` divides
        ``att.output.weight`` and ``ffn.value.weight`` by 2^(i // 6); a power of two, so scaling the product
        instead of the weights gives the same floats), else 1."""
        return 2.0 ** -(i // RESCALE_LAYER) if self.inference == "rescaled" else 1.0

    def halves_after(self, i: int) -> bool:
        """Whether x is halved after block i ("rescaled" mode: ``if (i+1) % RWKV_RESCALE_LAYER == 0: x = x / 2``)."""
        return self.inference == "rescaled" and (i + 1) % RESCALE_LAYER == 0


def authors_embedding(vocab_size: int) -> str:
    """The authors' inference rule (``src/model_run.py``): "binary" for the 77-character model, else "real"."""
    return "binary" if vocab_size == BINARY_EMBEDDING_VOCAB else "real"


class TimeMix(nn.Module):
    """RWKV-4 time-mix (the "spiking RWKV" token mixer before its LIF)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.time_decay = nn.Parameter(torch.zeros(d))
        self.time_first = nn.Parameter(torch.zeros(d))
        # (1, 1, D) as in the published code, so saved checkpoints keep that layout.
        self.time_mix_k = nn.Parameter(torch.full((1, 1, d), 0.5))
        self.time_mix_v = nn.Parameter(torch.full((1, 1, d), 0.5))
        self.time_mix_r = nn.Parameter(torch.full((1, 1, d), 0.5))
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.output = nn.Linear(d, d, bias=False)

    def _kvr(self, x: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mk, mv, mr = (m.reshape(-1) for m in (self.time_mix_k, self.time_mix_v, self.time_mix_r))
        k = self.key(x * mk + prev * (1 - mk))
        v = self.value(x * mv + prev * (1 - mv))
        r = torch.sigmoid(self.receptance(x * mr + prev * (1 - mr)))
        return k, v, r

    def forward(self, x: Tensor) -> Tensor:
        """Whole sequence, ``x`` (B, T, D) = ln1 output."""
        k, v, r = self._kvr(x, _shift(x))
        return self.output(r * wkv_sequence(-torch.exp(self.time_decay), self.time_first, k, v))

    def step(self, x: Tensor, prev: Tensor, aa: Tensor, bb: Tensor, pp: Tensor):
        """One token, ``x`` (B, D); returns ``(out, aa', bb', pp')``."""
        k, v, r = self._kvr(x, prev)
        y, aa, bb, pp = wkv_step(-torch.exp(self.time_decay), self.time_first, k, v, aa, bb, pp)
        return self.output(r * y), aa, bb, pp


class ChannelMix(nn.Module):
    """RWKV-4 channel-mix (the "spiking RFFN" before its LIF)."""

    def __init__(self, d: int, d_ffn: int) -> None:
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.full((1, 1, d), 0.5))
        self.time_mix_r = nn.Parameter(torch.full((1, 1, d), 0.5))
        self.key = nn.Linear(d, d_ffn, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d_ffn, d, bias=False)

    def mix(self, x: Tensor, prev: Tensor) -> Tensor:
        """out = sigmoid(R xr) * V relu(K xk)^2 for the current input ``x`` and shifted ``prev``."""
        mk, mr = self.time_mix_k.reshape(-1), self.time_mix_r.reshape(-1)
        k = torch.square(torch.relu(self.key(x * mk + prev * (1 - mk))))
        return torch.sigmoid(self.receptance(x * mr + prev * (1 - mr))) * self.value(k)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x, _shift(x))


class Block(nn.Module):
    def __init__(self, cfg: SpikeGPTConfig, layer_id: int) -> None:
        super().__init__()
        d = cfg.d_model
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(d)
        self.ln1 = nn.LayerNorm(d)
        self.ln2 = nn.LayerNorm(d)
        self.att = TimeMix(d)
        self.ffn = ChannelMix(d, cfg.d_ffn)


State = dict[str, Tensor]


class SpikeGPT(nn.Module):
    """SpikeGPT in two equivalent modes: :meth:`forward` (whole sequence, layer by layer, for training)
    and :meth:`step` (one token through all layers, the way a neuromorphic chip runs it).

    Spiking layers, in evaluation order, are named ``"emb"`` (binary embedding only), then
    ``"blocks.{i}.att_lif"`` and ``"blocks.{i}.ffn_lif"`` for each block; :meth:`spiking_layers` lists them.
    """

    def __init__(self, cfg: SpikeGPTConfig, *, init: bool = True) -> None:
        """``init=False`` skips :meth:`reset_parameters` (the loader builds on the meta device and then
        assigns the checkpoint tensors, so a 216M model is never allocated twice)."""
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if init:
            self.reset_parameters()

    # ---- initialisation (training from scratch only; loading overwrites everything) ----
    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """RWKV-4-style initialisation (decay spread over channels, time-mix ramps), with linears scaled
        so that the LIF inputs start around the threshold instead of silent (RWKV's zero-init output
        layers would give an all-zero spike train at step 0)."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        d, n = self.cfg.d_model, self.cfg.n_layer
        ramp = torch.arange(d, dtype=torch.float64) / d
        self.emb.weight.normal_(0.0, 1.0, generator=g)
        for i, blk in enumerate(self.blocks):
            r01 = i / max(n - 1, 1)
            r10 = 1.0 - i / n
            att, ffn = blk.att, blk.ffn
            h = torch.arange(d, dtype=torch.float64) / max(d - 1, 1)
            att.time_decay.copy_(-5 + 8 * h ** (0.7 + 1.3 * r01))
            zigzag = torch.tensor([((j + 1) % 3 - 1) * 0.5 for j in range(d)], dtype=torch.float64)
            att.time_first.copy_(math.log(0.3) + zigzag)
            att.time_mix_k.copy_(ramp.pow(r10).view(1, 1, d))
            att.time_mix_v.copy_((ramp.pow(r10) + 0.3 * r01).view(1, 1, d))
            att.time_mix_r.copy_(ramp.pow(0.5 * r10).view(1, 1, d))
            ffn.time_mix_k.copy_(ramp.pow(r10).view(1, 1, d))
            ffn.time_mix_r.copy_(ramp.pow(r10).view(1, 1, d))
            for lin in (att.key, att.value, att.receptance, att.output, ffn.key, ffn.receptance, ffn.value):
                lin.weight.normal_(0.0, 1.0 / math.sqrt(lin.in_features), generator=g)
            # relu(k)^2 has mean ~ 1/2 and heavy tails: shrink the value projection to keep LIF inputs O(1).
            ffn.value.weight.mul_(0.5)
            att.output.weight.mul_(2.0)
        self.head.weight.normal_(0.0, 0.5 / math.sqrt(d), generator=g)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()

    # ---- names ----
    def spiking_layers(self) -> list[str]:
        """Names of every spiking layer in evaluation order (keys of the ``spikes`` dicts)."""
        names = ["emb"] if self.cfg.embedding == "binary" else []
        for i in range(self.cfg.n_layer):
            names += [f"blocks.{i}.att_lif", f"blocks.{i}.ffn_lif"]
        return names

    @property
    def dtype(self) -> torch.dtype:
        return self.emb.weight.dtype

    # ---- parallel (sequence) mode ----
    def forward_with_spikes(self, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits (B, T, V) and every spiking layer's spike train (B, T, D) for token ids ``idx`` (B, T)."""
        cfg = self.cfg
        spikes: dict[str, Tensor] = {}
        x = self._embed(idx, spikes)
        for i, blk in enumerate(self.blocks):
            if i == 0:
                x = blk.ln0(x)
            scale = cfg.branch_scale(i)
            s, _ = lif_sequence(_scaled(blk.att(blk.ln1(x)), scale), cfg.tau, cfg.v_threshold)
            spikes[f"blocks.{i}.att_lif"] = s
            x = x + s
            s, _ = lif_sequence(_scaled(blk.ffn(blk.ln2(x)), scale), cfg.tau, cfg.v_threshold)
            spikes[f"blocks.{i}.ffn_lif"] = s
            x = x + s
            if cfg.halves_after(i):
                x = x / 2
        return self.head(self.ln_out(x)), spikes

    def _embed(self, idx: Tensor, spikes: dict[str, Tensor]) -> Tensor:
        """Theta(E[idx]) (recorded as the "emb" spikes) or, with ``embedding="real"``, E[idx]."""
        if self.cfg.embedding == "real":
            return self.emb(idx)
        x = spike_fn(self.emb(idx))
        spikes["emb"] = x
        return x

    def forward(self, idx: Tensor) -> Tensor:
        """Logits (B, T, V) for token ids (B, T); every recurrent state starts empty at t = 0."""
        return self.forward_with_spikes(idx)[0]

    # ---- recurrent (token-by-token) mode ----
    def init_state(self, batch: int = 1, dtype: torch.dtype | None = None) -> State:
        """Empty recurrent state (the state before the first token), as a flat dict of (B, D) tensors:

        ``blocks.{i}.att.shift`` / ``blocks.{i}.ffn.shift``: previous token's ln1 / ln2 output (0);
        ``blocks.{i}.att.{aa,bb,pp}``: wkv state (0, 0, PP_INIT);
        ``blocks.{i}.att_lif.v`` / ``blocks.{i}.ffn_lif.v``: LIF membranes (0).
        """
        dtype = dtype or self.dtype
        dev = self.emb.weight.device
        b, d = batch, self.cfg.d_model
        state: State = {}
        for i in range(self.cfg.n_layer):
            p = f"blocks.{i}"
            for name in (f"{p}.att.shift", f"{p}.att.aa", f"{p}.att.bb", f"{p}.att_lif.v",
                         f"{p}.ffn.shift", f"{p}.ffn_lif.v"):
                state[name] = torch.zeros(b, d, dtype=dtype, device=dev)
            state[f"{p}.att.pp"] = torch.full((b, d), PP_INIT, dtype=dtype, device=dev)
        return state

    def step(self, token_ids: Tensor, state: State) -> tuple[Tensor, State, dict[str, Tensor]]:
        """Advance one token: ``token_ids`` (B,) -> ``(logits (B, V), new_state, spikes)``.

        ``spikes`` maps each name of :meth:`spiking_layers` to that step's binary (B, D) spike tensor.
        The input ``state`` is not modified.
        """
        cfg = self.cfg
        new: State = {}
        spikes: dict[str, Tensor] = {}
        x = self._embed(token_ids, spikes)
        for i, blk in enumerate(self.blocks):
            p = f"blocks.{i}"
            if i == 0:
                x = blk.ln0(x)
            scale = cfg.branch_scale(i)
            xa = blk.ln1(x)
            a, new[f"{p}.att.aa"], new[f"{p}.att.bb"], new[f"{p}.att.pp"] = blk.att.step(
                xa, state[f"{p}.att.shift"], state[f"{p}.att.aa"], state[f"{p}.att.bb"], state[f"{p}.att.pp"]
            )
            new[f"{p}.att.shift"] = xa
            s, new[f"{p}.att_lif.v"] = lif_step(_scaled(a, scale), state[f"{p}.att_lif.v"], cfg.tau, cfg.v_threshold)
            spikes[f"{p}.att_lif"] = s
            x = x + s
            xf = blk.ln2(x)
            f = blk.ffn.mix(xf, state[f"{p}.ffn.shift"])
            new[f"{p}.ffn.shift"] = xf
            s, new[f"{p}.ffn_lif.v"] = lif_step(_scaled(f, scale), state[f"{p}.ffn_lif.v"], cfg.tau, cfg.v_threshold)
            spikes[f"{p}.ffn_lif"] = s
            x = x + s
            if cfg.halves_after(i):
                x = x / 2
        return self.head(self.ln_out(x)), new, spikes


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------

_LINEARS_ATT = ("key", "value", "receptance", "output")
_LINEARS_FFN = ("key", "receptance", "value")
# Per-channel vectors for which both the flat (D,) and the published (1, 1, D) layout are accepted.
_VECTOR_SUFFIXES = (
    ".att.time_decay", ".att.time_first", ".att.time_mix_k", ".att.time_mix_v", ".att.time_mix_r",
    ".ffn.time_mix_k", ".ffn.time_mix_r",
)


def expected_shapes(cfg: SpikeGPTConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the published state-dict layout with its shape, in a fixed order.

    Time-mix vectors use the published (1, 1, D) shape, time_decay / time_first (D,).
    """
    d, f, v = cfg.d_model, cfg.d_ffn, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"emb.weight": (v, d)}
    for i in range(cfg.n_layer):
        p = f"blocks.{i}"
        lns = ("ln0", "ln1", "ln2") if i == 0 else ("ln1", "ln2")
        for ln in lns:
            shapes[f"{p}.{ln}.weight"] = (d,)
            shapes[f"{p}.{ln}.bias"] = (d,)
        shapes[f"{p}.att.time_decay"] = (d,)
        shapes[f"{p}.att.time_first"] = (d,)
        for m in ("k", "v", "r"):
            shapes[f"{p}.att.time_mix_{m}"] = (1, 1, d)
        for name in _LINEARS_ATT:
            shapes[f"{p}.att.{name}.weight"] = (d, d)
        for m in ("k", "r"):
            shapes[f"{p}.ffn.time_mix_{m}"] = (1, 1, d)
        shapes[f"{p}.ffn.key.weight"] = (f, d)
        shapes[f"{p}.ffn.receptance.weight"] = (d, d)
        shapes[f"{p}.ffn.value.weight"] = (d, f)
    shapes["ln_out.weight"] = (d,)
    shapes["ln_out.bias"] = (d,)
    shapes["head.weight"] = (v, d)
    return shapes


def random_state_dict(
    n_layer: int,
    d_model: int,
    vocab: int,
    d_ffn: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """A complete published-layout state dict with random weights (no module is built).

    Each tensor is allocated once, directly in ``dtype``, and filled in place from one seeded generator,
    so peak memory is the size of the result (about 0.87 GB for the 216M model in float32).
    ``d_ffn`` defaults to 4 * d_model as in the published code.
    """
    cfg = SpikeGPTConfig(n_layer, d_model, vocab, 4 * d_model if d_ffn is None else d_ffn)
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in expected_shapes(cfg).items():
        t = torch.empty(shape, dtype=dtype)
        if key.endswith((".ln0.weight", ".ln1.weight", ".ln2.weight")) or key == "ln_out.weight":
            t.uniform_(0.8, 1.2, generator=g)
        elif key.endswith(".bias"):
            t.uniform_(-0.1, 0.1, generator=g)
        elif key.endswith(".time_decay"):
            t.uniform_(-5.0, 3.0, generator=g)
        elif key.endswith(".time_first"):
            t.uniform_(math.log(0.3) - 0.5, math.log(0.3) + 0.5, generator=g)
        elif ".time_mix_" in key:
            t.uniform_(0.0, 1.0, generator=g)
        elif key == "emb.weight":
            t.normal_(0.0, 1.0, generator=g)
        else:  # linear (out, in): std gain/sqrt(fan_in)
            # The projections that feed a LIF get a larger gain so that every spiking layer of a random
            # model fires at a moderate rate (with gain 1 the LIF inputs rarely reach the threshold and
            # tests comparing spike trains would compare zeros).
            gain = 4.0 if key.endswith(".att.output.weight") else 2.5 if key.endswith(".ffn.value.weight") else 1.0
            t.normal_(0.0, gain / math.sqrt(shape[1]), generator=g)
        out[key] = t
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _looks_like_bert(keys: list[str]) -> bool:
    markers = ("bert.", "encoder.layer.", "embeddings.word_embeddings", "attention.self.", "act_clip_val")
    return any(m in k for k in keys for m in markers)


def config_from_state_dict(
    sd: Mapping[str, object], source: str = "<state dict>", *, tau: float = 2.0, v_threshold: float = 1.0,
    embedding: str = "binary", inference: str = "training",
) -> SpikeGPTConfig:
    """Read L, D, vocabulary and FFN width from the tensor shapes and validate the whole layout.

    Raises :class:`CheckpointError` (one line, naming ``source`` and the offending key) for another
    family's checkpoint, missing or unexpected keys, non-tensor values and wrong shapes.
    """
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"{source}: expected a raw SpikeGPT state dict (a dict of tensors), found {type(sd).__name__}"
        )
    keys = [str(k) for k in sd.keys()]
    if not keys:
        raise CheckpointError(f"{source}: the state dict is empty; expected SpikeGPT weights")
    if _looks_like_bert(keys):
        raise CheckpointError(
            f"{source}: looks like a SpikeLM/BERT checkpoint, not SpikeGPT (e.g. key '{keys[0]}'); "
            "load it with the SpikeLM loader"
        )
    for wrapper in ("state_dict", "model", "module"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            raise CheckpointError(
                f"{source}: key '{wrapper}' holds a nested dict (a training checkpoint wrapper); "
                f"save the raw state dict, e.g. torch.save(ckpt['{wrapper}'], path)"
            )
    if any(k.startswith("blocks.0.ffnPre.") for k in keys):
        raise CheckpointError(
            f"{source}: key 'blocks.0.ffnPre.*' is the RWKV-ffnPre variant, which spikecc does not support"
        )
    for k in keys:
        if not isinstance(sd[k], Tensor):
            raise CheckpointError(f"{source}: key '{k}' is a {type(sd[k]).__name__}, not a tensor")
    for k in ("emb.weight", "blocks.0.ffn.key.weight"):
        if k not in sd:
            raise CheckpointError(f"{source}: missing key '{k}' (needed to read the model size); "
                                  "not a SpikeGPT checkpoint?")
    emb = sd["emb.weight"]
    if emb.dim() != 2:
        raise CheckpointError(
            f"{source}: key 'emb.weight' has shape {tuple(emb.shape)}, expected (vocab, d_model)"
        )
    vocab, d = emb.shape
    fk = sd["blocks.0.ffn.key.weight"]
    if fk.dim() != 2:
        raise CheckpointError(
            f"{source}: key 'blocks.0.ffn.key.weight' has shape {tuple(fk.shape)}, expected (d_ffn, {d})"
        )
    layer_ids = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    n_layer = max(layer_ids) + 1
    cfg = SpikeGPTConfig(n_layer, int(d), int(vocab), int(fk.shape[0]), tau=tau, v_threshold=v_threshold,
                         embedding=embedding, inference=inference)
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in sd]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source}: missing key '{missing[0]}'{more} for a SpikeGPT with "
                              f"L={n_layer} D={d} vocab={vocab}")
    unexpected = [k for k in keys if k not in shapes]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{source}: unexpected key '{unexpected[0]}'{more}; not in the SpikeGPT layout")
    for k, shape in shapes.items():
        found = tuple(sd[k].shape)
        ok = found == shape or (k.endswith(_VECTOR_SUFFIXES) and found in ((d,), (1, 1, d)))
        if not ok:
            raise CheckpointError(f"{source}: key '{k}' has shape {found}, expected {shape} "
                                  f"(L={n_layer} D={d} vocab={vocab} d_ffn={cfg.d_ffn})")
        if not sd[k].is_floating_point():
            raise CheckpointError(f"{source}: key '{k}' has dtype {sd[k].dtype}, expected a floating type")
    return cfg


def resolve_embedding(vocab_size: int, sidecar: str | os.PathLike | None = None) -> str:
    """The embedding a checkpoint was trained with, when nobody says:

    * the ``"embedding"`` entry of its character-vocabulary sidecar (``.vocab.json``, `save_vocab`), if any;
    * "binary" for any other such sidecar: spikecc's training script writes it, and trains with the training code's
      binary embedding;
    * otherwise the authors' inference rule (`authors_embedding`): binary only for a 77-token vocabulary.
    """
    if sidecar is not None and Path(sidecar).is_file():
        try:
            entry = json.loads(Path(sidecar).read_text(encoding="utf-8")).get("embedding", "binary")
        except (OSError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{sidecar}: not a vocabulary file ({type(exc).__name__}: {_one_line(exc)})") \
                from None
        if entry not in EMBEDDINGS:
            raise CheckpointError(f"{sidecar}: key 'embedding' is {entry!r}, expected one of {EMBEDDINGS}")
        return str(entry)
    return authors_embedding(vocab_size)


def load_spikegpt(
    path_or_state_dict: str | os.PathLike | Mapping[str, Tensor],
    *,
    tau: float = 2.0,
    v_threshold: float = 1.0,
    embedding: str | None = None,
    inference: str = "training",
    vocab_file: str | os.PathLike | None = None,
) -> SpikeGPT:
    """Build a :class:`SpikeGPT` from a published-layout checkpoint file or state dict.

    ``embedding`` None picks it with `resolve_embedding` from the character-vocabulary sidecar ``vocab_file``
    (default for a file: ``<file>.vocab.json``), else by the authors' rule: binary only at vocabulary 77.
    ``inference`` is "training" or "rescaled" (module docstring).
    The model takes the dtype of ``emb.weight`` (float32 for released files); call ``.double()`` for
    float64.  No copy is made where the dtype already matches: the parameters share storage with the
    given state dict (training the model changes those tensors).  Every problem is a one-line
    :class:`CheckpointError` naming the file and the key.
    """
    sidecar = vocab_file
    if isinstance(path_or_state_dict, Mapping):
        source, sd = "<state dict>", path_or_state_dict
    else:
        if sidecar is None:
            sidecar = Path(path_or_state_dict).with_suffix(".vocab.json")
        source = str(path_or_state_dict)
        if not os.path.exists(source):
            raise CheckpointError(f"{source}: no such checkpoint file")
        if os.path.isdir(source):
            raise CheckpointError(f"{source}: is a directory, expected a torch checkpoint file")
        try:
            sd = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types (pickle, zip, EOF, RuntimeError) for bad files
            raise CheckpointError(
                f"{source}: not a readable torch checkpoint (truncated or another format): "
                f"{type(exc).__name__}: {_one_line(exc)[:200]}"
            ) from None
    if inference not in INFERENCE_MODES:
        raise CheckpointError(f"{source}: inference must be one of {INFERENCE_MODES}, got {inference!r}")
    if embedding is not None and embedding not in EMBEDDINGS:
        raise CheckpointError(f"{source}: embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    cfg = config_from_state_dict(sd, source, tau=tau, v_threshold=v_threshold, inference=inference)
    cfg.embedding = embedding if embedding is not None else resolve_embedding(cfg.vocab_size, sidecar)
    dtype = sd["emb.weight"].dtype
    d = cfg.d_model
    fixed = {k: (v.reshape(1, 1, d) if ".time_mix_" in k else v.reshape(d) if ".time_" in k else v).to(dtype)
             for k, v in sd.items()}
    with torch.device("meta"):  # no allocation, no random init: the checkpoint tensors are assigned below
        model = SpikeGPT(cfg, init=False)
    model.load_state_dict(fixed, strict=True, assign=True)
    return model.eval()


def save_spikegpt(model: SpikeGPT, path: str | os.PathLike) -> None:
    """Write the raw published-layout state dict (``torch.save(state_dict)``), tensors detached on CPU."""
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    torch.save(sd, path)


def save_vocab(vocab: CharVocab, path: str | os.PathLike, **extra: object) -> None:
    """Store a :class:`CharVocab` next to a checkpoint (the raw state dict has no room for it). ``extra`` entries
    are stored too; ``embedding="binary"|"real"`` tells `load_spikegpt` how the model was trained."""
    Path(path).write_text(json.dumps({"chars": vocab.chars, **extra}, ensure_ascii=False, indent=1) + "\n",
                          encoding="utf-8")


def load_vocab(path: str | os.PathLike) -> CharVocab:
    """Read a vocabulary written by :func:`save_vocab`; raises :class:`CheckpointError` if malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        chars = data["chars"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: not a vocabulary file ({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    if not isinstance(chars, str) or len(set(chars)) != len(chars):
        raise CheckpointError(f"{path}: key 'chars' must be a string of distinct characters")
    return CharVocab(chars)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: SpikeGPT, vocab: CharVocab | Tokenizer, prompt: str, n_tokens: int, greedy: bool = True, seed: int = 0
) -> str:
    """Feed ``prompt`` through :meth:`SpikeGPT.step`, then produce ``n_tokens`` more tokens.

    ``vocab`` is a character vocabulary or any `spikecc.models.tokenizer.Tokenizer` (e.g. a BPE tokenizer.json).
    Greedy decoding takes the argmax (ties -> lowest id), so it is deterministic; ``greedy=False`` samples
    from the softmax with a generator seeded by ``seed``.  Returns only the generated continuation, decoded
    (``n_tokens`` characters for a character vocabulary).
    """
    if not prompt:
        raise ValueError("generate needs a non-empty prompt")
    if isinstance(vocab, Tokenizer):
        vocab.check_model(model.cfg.vocab_size, "generate")
    elif vocab.size != model.cfg.vocab_size:
        raise ValueError(f"vocabulary has {vocab.size} characters, the model {model.cfg.vocab_size}")
    ids = [int(t) for t in vocab.encode(prompt)]
    if not ids:
        raise ValueError(f"the prompt {prompt!r} encodes to no tokens")
    gen = torch.Generator().manual_seed(seed)
    dev = model.emb.weight.device
    state = model.init_state(1)
    logits = None
    for tok in ids:
        logits, state, _ = model.step(torch.tensor([tok], device=dev), state)
    out: list[int] = []
    for _ in range(n_tokens):
        assert logits is not None
        if greedy:
            nxt = int(torch.argmax(logits[0]))
        else:
            probs = torch.softmax(logits[0].double().cpu(), dim=-1)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(nxt)
        logits, state, _ = model.step(torch.tensor([nxt], device=dev), state)
    return vocab.decode(out)
