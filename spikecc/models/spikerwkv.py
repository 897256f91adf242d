"""SpikeRWKV torch reference: multi-level ("multi-head") spike encoding feeding RWKV time and channel mixing.

Source: Zhang, Shen, Wang, "SpikeRWKV: Energy-efficient Large Language Model with Spiking Neural Network" (2025),
arXiv 2025. No code was published; everything below is read off the paper, and the
places where the paper is silent or self-contradictory are listed under "Interpretation" with the choice made.

Multi-level spike encoding (paper Sec. 3.3, 3.4, Eq. 3-4)
---------------------------------------------------------
A real value x is carried by ``l`` spike layers ("levels", the paper's digits of precision) over ``T`` time steps plus
one polarity bit, the "spiking flag" d'_f. With binary spikes d'_i^j(x) in {0, 1} for level i and time step j:

    x_hat = (1/T) * sum_{j=1..T} sum_{i=1..l} d'_i^j(x) * W_i * d'_f(x)          (Eq. 3 with Eq. 4)

where W_i > 0 are the level ("numerical compression") weights and d'_f(x) = +1 for x >= 0, -1 for x < 0.
Writing c_i = sum_j d'_i^j in {0..T} for the spike count of level i, x_hat = d'_f * sum_i W_i * c_i / T.

Counts (which spikes fire) are chosen greedily from the most significant level down, on the magnitude
a = min(|x|, sum_i W_i) (saturating at the largest representable value):

    r_0 = a,   c_i = clamp(floor(r_{i-1} * T / W_i), 0, T),   r_i = r_{i-1} - c_i * W_i / T

i.e. truncation ("the first l digits", Sec. 3.4). Within level i the c_i spikes are spread over the T steps the way
an integrate-and-fire neuron (Eq. 1-2, threshold 1, reset by subtraction) driven by the constant current c_i / T
emits them:

    d'_i^j = floor(j * c_i / T) - floor((j - 1) * c_i / T),   j = 1..T

Two weight choices make the greedy code an exact positional number system with error < W_l / T:
- binary, W_i = 2^(int_bits - i) (the default; the paper's "l = 6: 2 integer bits and 4 fractional bits"), and
- base (T + 1), W_i = T * (T + 1)^(int_digits - i): c_i is the i-th base-(T+1) digit. With T = 9 this is the decimal
  example of Fig. 3: -0.234567 with l = 6 -> flag -1 and digits 0,2,3,4,5,6, i.e. -0.23456.

Training uses a straight-through estimator: the forward value is x_hat exactly, the gradient is 1 where the input is
inside the representable range [-sum W, sum W] (or [0, sum W] for an unsigned encoder) and 0 outside (like hardtanh).

Energy (paper Eq. 5, second one): E_snn = C_in * fr * T * l * E_AC per encoded linear input, fr = mean firing rate of
the l * T spike slots; the ANN reference is E_ann = C_in * E_MAC. The paper quotes E_AC = 0.9 pJ, E_MAC = 4.6 pJ
(32-bit float, 45 nm, Horowitz 2014). See `energy_per_token`.

RWKV block (RWKV-4 time mixing, as in SpikeGPT appendix C, Zhu et al., TMLR 2024)
-------------------------------------------------------------------------------
Per block b with input x_t (d_model), token shift uses the previous token's normalised input (zero before the first):

    h_t = ln1(x_t),  h_{-1} = 0
    xk = h_t*mu_k + h_{t-1}*(1-mu_k),  xv = h_t*mu_v + h_{t-1}*(1-mu_v),  xr = h_t*mu_r + h_{t-1}*(1-mu_r)
    k_t = K @ enc_k(xk),  v_t = V @ enc_v(xv),  r_t = sigmoid(R @ enc_r(xr))
    w = -exp(time_decay),  u = time_first
    wkv_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{(t-1-i)w + k_i} + e^{u + k_t})
    x_t <- x_t + O @ enc_o(r_t * wkv_t)

    g_t = ln2(x_t)
    xk = g_t*nu_k + g_{t-1}*(1-nu_k),  xr = g_t*nu_r + g_{t-1}*(1-nu_r)
    kk_t = relu(K' @ enc_k'(xk))^2
    x_t <- x_t + sigmoid(R' @ enc_r'(xr)) * (V' @ enc_v'(kk_t))

Block 0 applies ln0 to the embedding first; the model ends with ln_out and a real-valued head. Every linear inside the
blocks takes a spike-encoded input (seven encoders per block); embedding, LayerNorms, exp/sigmoid/products and the head
stay real, as in the paper, where spikes replace "the input weighting process" of the linears (Sec. 4.3).

Encoder names (keys of the `spikes` dict of `SpikeRWKV.step`, equal to the module paths):
    blocks.{i}.att.enc_k, blocks.{i}.att.enc_v, blocks.{i}.att.enc_r, blocks.{i}.att.enc_o,
    blocks.{i}.ffn.enc_k, blocks.{i}.ffn.enc_r, blocks.{i}.ffn.enc_v
Each maps to that token's spikes, a (T, l, C_in) tensor of 0.0/1.0 in the model's dtype.

State-dict keys follow the SpikeGPT checkpoint naming (ridgerchu/SpikeGPT, src/model.py): emb.weight, blocks.0.ln0.*,
blocks.{i}.ln{1,2}.*,
blocks.{i}.att.{time_decay,time_first,time_mix_k,time_mix_v,time_mix_r,key,value,receptance,output}.*,
blocks.{i}.ffn.{time_mix_k,time_mix_r,key,receptance,value}.*, ln_out.*, head.weight. Linears have no bias.
Encoders hold no tensors in the state dict; their options live in the checkpoint's config.

Interpretation (where the paper is ambiguous)
---------------------------------------------
- The paper says SpikeRWKV is RWKV6 with ddlerp token shift, but only describes encoding the inputs of the linears; we
  use RWKV-4 time mixing (static mu, no gate g, vector state), like SpikeGPT. This module is that RWKV-4 variant
  (family "spikerwkv", trained with the encoders); the paper's own method, a pretrained RWKV-6 converted without
  retraining, is spikecc.models.spikerwkv6 (family "spikerwkv6").
- Which linears are encoded: the paper shows "Spiking Time Mixing" only; we encode every linear input inside the blocks
  (time and channel mix), not the head.
- How spikes are chosen is not given; greedy truncation matches "the first l digits" and the Fig. 3 example.
- The paper calls T x l the precision and says T=3,l=1 equals T=1,l=3 in precision; under Eq. 3 the T steps of one
  level are equally weighted, so a level has T+1 values, not 2^T. We follow Eq. 3.
- The spiking flag: Sec. 3.3 says the flag spikes for negative inputs; we expose it as polarity in {-1, +1}
  (flag spike = polarity == -1). It is not counted in the paper's energy formula, nor here.
- ffn.enc_v is unsigned (no flag): its input relu(.)^2 is never negative, so a flag would be constant.
- Eq. 5 has no fan-out term (C_out); `energy_per_token` reports the paper's formula and, separately, the
  synaptic-operation count C_in * C_out * fr * T * l * E_AC that a crossbar would actually perform.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecc.models.checkpoint import load_family_checkpoint

FAMILY = "spikerwkv"
ENCODER_NAMES_ATT = ("enc_k", "enc_v", "enc_r", "enc_o")
ENCODER_NAMES_FFN = ("enc_k", "enc_r", "enc_v")
E_AC_45NM_PJ = 0.9  # pJ per 32-bit float accumulate, 45 nm (Horowitz 2014), as quoted by the paper
E_MAC_45NM_PJ = 4.6  # pJ per 32-bit float multiply-accumulate, same source as quoted by the paper
_NEG_BIG = -1e30  # "minus infinity" for the running max of the WKV state; finite so that exp(a - b) is never nan


def _is_pow2(v: float) -> bool:
    m, _ = math.frexp(v)
    return v > 0 and m == 0.5


def binary_level_weights(levels: int, int_bits: int) -> list[float]:
    """W_i = 2^(int_bits - i), i = 1..levels: `int_bits` integer bits, the rest fractional (paper Sec. 3.4)."""
    return [2.0 ** (int_bits - i) for i in range(1, levels + 1)]


def radix_level_weights(levels: int, T: int, int_digits: int) -> list[float]:
    """W_i = T * (T+1)^(int_digits - i): counts become base-(T+1) digits (T = 9 gives the decimal digits of Fig. 3)."""
    return [T * float(T + 1) ** (int_digits - i) for i in range(1, levels + 1)]


class MultiLevelSpikeEncoder(nn.Module):
    """Multi-level spike encoder with spiking flag (paper Eq. 3-4); see the module docstring for the equations.

    forward(x) returns x_hat (same shape and dtype as x) with a straight-through gradient;
    encode(x) returns (spikes (T, l, *x.shape) of 0/1 in x.dtype, polarity (*x.shape) of +-1);
    decode(spikes, polarity) returns x_hat, bit for bit equal to forward(x).
    """

    def __init__(self, T: int, level_weights: Sequence[float], polarity: bool = True) -> None:
        super().__init__()
        weights = [float(w) for w in level_weights]
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        if not weights or any(not (w > 0 and math.isfinite(w)) for w in weights):
            raise ValueError(f"level weights must be positive and finite, got {weights}")
        if any(b >= a for a, b in zip(weights, weights[1:])):
            # greedy most-significant-first encoding needs a strictly decreasing order
            raise ValueError(f"level weights must be strictly decreasing, got {weights}")
        self.T = int(T)
        self.level_weights = tuple(weights)
        self.polarity = bool(polarity)
        self._fast = _is_pow2(self.T) and self.levels + int(math.log2(self.T)) <= 20 and all(
            _is_pow2(w) for w in weights
        ) and all(a == 2 * b for a, b in zip(weights, weights[1:]))
        # the options are plain attributes, not buffers: the checkpoint's config is their single source of truth.
        # _rate_stats collects (spikes, slots) per forward while SpikeRWKV.firing_rates runs, else None
        self._rate_stats: list[tuple[float, int]] | None = None

    @property
    def levels(self) -> int:
        return len(self.level_weights)

    @property
    def max_value(self) -> float:
        """Largest representable magnitude: every spike of every level fires, sum_i W_i."""
        return float(sum(self.level_weights))

    @property
    def resolution(self) -> float:
        """Value of one spike of the finest level, W_l / T: the truncation error bound inside the range."""
        return self.level_weights[-1] / self.T

    def extra_repr(self) -> str:
        return f"T={self.T}, level_weights={list(self.level_weights)}, polarity={self.polarity}"

    def _magnitude_and_polarity(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.polarity:
            pol = torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))
            mag = x.abs()
        else:
            # unsigned encoder: no flag, negative inputs are clipped to 0 (there is no way to spike them)
            pol = torch.ones_like(x)
            mag = x.clamp(min=0)
        return mag.clamp(max=self.max_value), pol

    def _levels(self, x: Tensor):
        """Yield (c_i, W_i / T) per level, most significant first, and finally the polarity (see module docstring)."""
        r, pol = self._magnitude_and_polarity(x.detach())
        for w in self.level_weights:
            c = torch.floor(r * (self.T / w)).clamp_(0, self.T)
            r = r - c * (w / self.T)
            yield c, w / self.T
        yield pol, None

    def counts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Greedy spike counts c_i in {0..T}, shape (l, *x.shape) in x.dtype, and the polarity (*x.shape)."""
        out = list(self._levels(x))
        return torch.stack([c for c, _ in out[:-1]]), out[-1][0]

    def _combine(self, counts: Sequence[Tensor], pol: Tensor) -> Tensor:
        """x_hat = polarity * sum_i c_i * (W_i / T), summed from the most significant level down. The single place
        where values are formed, shared by forward and decode, so both give bit-identical results."""
        q = counts[0] * (self.level_weights[0] / self.T)
        for c, w in zip(counts[1:], self.level_weights[1:]):
            q = q + c * (w / self.T)
        return pol * q

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Spikes (T, l, *x.shape) with values 0/1 in x.dtype, and the polarity (*x.shape) with values -1/+1."""
        c, pol = self.counts(x)
        ci = c.to(torch.int64)
        j = torch.arange(self.T + 1, device=x.device).reshape((-1,) + (1,) * ci.dim())
        # integrate-and-fire spreading: cumulative spikes after step j are floor(j * c / T) (exact integer maths)
        cum = torch.div(j * ci, self.T, rounding_mode="floor")
        spikes = (cum[1:] - cum[:-1]).to(x.dtype)
        return spikes, pol

    def decode(self, spikes: Tensor, polarity: Tensor) -> Tensor:
        """Eq. 3: (1/T) sum_j sum_i spike * W_i * flag. Accepts the output of `encode`."""
        if spikes.dim() < 2 or spikes.shape[0] != self.T or spikes.shape[1] != self.levels:
            raise ValueError(f"spikes must have shape (T={self.T}, l={self.levels}, ...), got {tuple(spikes.shape)}")
        return self._combine(spikes.sum(0), polarity.to(spikes.dtype))

    def quantize(self, x: Tensor) -> Tensor:
        """x_hat without gradient. Binary weights with T a power of two take a shortcut: the greedy code is then
        exactly floor(a / res) * res with res = W_l / T (every step of the greedy code and every partial sum of
        Eq. 3 is an exactly representable dyadic number, and the greedy error is < res), so two ops replace 6 * l.
        tests/models/test_spikerwkv.py checks the shortcut against decode(encode(x)) bit for bit."""
        if self._fast:
            a, pol = self._magnitude_and_polarity(x.detach())
            res = self.resolution
            return pol * (torch.floor(a * (1.0 / res)) * res)
        *levels, (pol, _) = self._levels(x)
        return self._combine([c for c, _ in levels], pol)

    def forward(self, x: Tensor) -> Tensor:
        if self._rate_stats is not None:
            c, pol = self.counts(x)
            self._rate_stats.append((float(c.sum()), c.numel() * self.T))
            q = self._combine(c, pol)
        else:
            q = self.quantize(x)
        lo = -self.max_value if self.polarity else 0.0
        xc = x.clamp(lo, self.max_value)
        # q + (xc - xc.detach()) is exactly q in value (the second term is 0.0) with d/dx = 1 inside the range
        return q + (xc - xc.detach())


@dataclass
class SpikeRWKVConfig:
    """Plain options of a SpikeRWKV model; `to_dict()` is what the checkpoint stores under "config"."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    d_ffn: int = 512
    T: int = 1
    level_weights: list[float] = field(default_factory=lambda: binary_level_weights(6, 2))
    polarity: bool = True

    @property
    def levels(self) -> int:
        return len(self.level_weights)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level_weights"] = [float(w) for w in self.level_weights]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpikeRWKVConfig:
        return cls(
            vocab_size=int(d["vocab_size"]),
            d_model=int(d["d_model"]),
            n_layers=int(d["n_layers"]),
            d_ffn=int(d["d_ffn"]),
            T=int(d["T"]),
            level_weights=[float(w) for w in d["level_weights"]],
            polarity=bool(d["polarity"]),
        )


CONFIG_KEYS = ("vocab_size", "d_model", "n_layers", "d_ffn", "T", "level_weights", "polarity")


def _shift(x: Tensor) -> Tensor:
    """Token shift along dim -2: row t gets row t-1, row 0 gets zeros."""
    return F.pad(x, (0, 0, 1, -1))


def wkv_parallel(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The WKV sum of the module docstring for a whole sequence: k, v (B, L, C), w = -exp(time_decay), u (C,).

    Computed as two decay-weighted matmuls, numerator and denominator, with e^{k - max k} factored out (it cancels).
    Done in float64 whatever the input dtype: a float32 e^{k - max k} could underflow to 0 in both numerator and
    denominator, and the cost is small next to the linears.
    """
    dtype = k.dtype
    w64, u64, k64, v64 = w.double(), u.double(), k.double(), v.double()
    L = k.shape[-2]
    t = torch.arange(L, device=k.device)
    lag = t[:, None] - 1 - t[None, :]  # (t-1-i)
    # decay[c, t, i] = e^{(t-1-i) w_c} for i < t, e^{u_c} for i == t, 0 for i > t; laid out (C, L, L) for bmm.
    # It depends on the lag only: gather it from a (C, L + 1) table [e^{0 w} .. e^{(L-2) w}, e^u, 0] in one op,
    # the cheapest way to build (and differentiate) the (C, L, L) tensor.
    powers = torch.exp(torch.arange(L - 1, device=k.device, dtype=torch.float64)[None, :] * w64[:, None])
    table = torch.cat([powers, torch.exp(u64)[:, None], torch.zeros_like(u64)[:, None]], dim=1)
    col = torch.where(lag >= 0, lag, torch.where(lag == -1, L - 1, L))
    decay = table[:, col]
    kmax = k64.detach().amax(dim=-2, keepdim=True)
    ek = torch.exp(k64 - kmax)
    both = torch.cat([ek * v64, ek], dim=0)  # (2B, L, C): numerator and denominator terms in one bmm
    nd = torch.bmm(decay, both.permute(2, 1, 0))  # (C, L, 2B)
    nd = nd.permute(2, 1, 0)  # (2B, L, C)
    B = k.shape[0]
    num, den = nd[:B], nd[B:]
    return (num / den).to(dtype)


class TimeMix(nn.Module):
    """RWKV-4 time mixing whose four linears take multi-level spike-encoded inputs (module docstring)."""

    def __init__(self, cfg: SpikeRWKVConfig, layer: int) -> None:
        super().__init__()
        d = cfg.d_model
        ratio_0_to_1 = layer / max(cfg.n_layers - 1, 1)
        ratio_1_to_almost0 = 1.0 - layer / cfg.n_layers
        # RWKV-4 initialisation: decay speeds spread over channels, mixing ramps from current to previous token
        h = torch.arange(d, dtype=torch.float32)
        decay = -5 + 8 * (h / max(d - 1, 1)) ** (0.7 + 1.3 * ratio_0_to_1)
        zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(d)], dtype=torch.float32) * 0.5
        ramp = h / d
        self.time_decay = nn.Parameter(decay)
        self.time_first = nn.Parameter(torch.full((d,), math.log(0.3)) + zigzag)
        self.time_mix_k = nn.Parameter(ramp**ratio_1_to_almost0)
        self.time_mix_v = nn.Parameter(ramp**ratio_1_to_almost0 + 0.3 * ratio_0_to_1)
        self.time_mix_r = nn.Parameter(ramp ** (0.5 * ratio_1_to_almost0))
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.output = nn.Linear(d, d, bias=False)
        for name in ENCODER_NAMES_ATT:
            setattr(self, name, MultiLevelSpikeEncoder(cfg.T, cfg.level_weights, cfg.polarity))

    def _mix(self, h: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        xk = h * self.time_mix_k + prev * (1 - self.time_mix_k)
        xv = h * self.time_mix_v + prev * (1 - self.time_mix_v)
        xr = h * self.time_mix_r + prev * (1 - self.time_mix_r)
        return xk, xv, xr

    def forward(self, h: Tensor) -> Tensor:
        xk, xv, xr = self._mix(h, _shift(h))
        k = self.key(self.enc_k(xk))
        v = self.value(self.enc_v(xv))
        r = torch.sigmoid(self.receptance(self.enc_r(xr)))
        wkv = wkv_parallel(-torch.exp(self.time_decay), self.time_first, k, v)
        return self.output(self.enc_o(r * wkv))

    def step(self, h: Tensor, st: Tensor, spikes: dict[str, Tensor], pols: dict[str, Tensor], prefix: str):
        """One token. st rows: 0 previous h, 1 aa (numerator), 2 bb (denominator), 3 pp (running max exponent).
        Returns (output, new state rows 0..3). Linears see decode(encode(.)) of the inputs, i.e. the actual spikes."""
        xk, xv, xr = self._mix(h, st[0])

        def enc(name: str, x: Tensor) -> Tensor:
            s, p = getattr(self, name).encode(x)
            spikes[prefix + name], pols[prefix + name] = s, p
            return getattr(self, name).decode(s, p)

        k = self.key(enc("enc_k", xk))
        v = self.value(enc("enc_v", xv))
        r = torch.sigmoid(self.receptance(enc("enc_r", xr)))
        aa, bb, pp = st[1], st[2], st[3]
        w = -torch.exp(self.time_decay)
        # output uses the current token with bonus u; the max trick keeps every exp() <= 1
        ww = self.time_first + k
        p = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
        wkv = (e1 * aa + e2 * v) / (e1 * bb + e2)
        # state update: decay the past by e^w, add the current token without bonus
        ww = pp + w
        p = torch.maximum(ww, k)
        e1, e2 = torch.exp(ww - p), torch.exp(k - p)
        new = torch.stack([h, e1 * aa + e2 * v, e1 * bb + e2, p])
        return self.output(enc("enc_o", r * wkv)), new


class ChannelMix(nn.Module):
    """RWKV-4 channel mixing (squared-ReLU FFN with sigmoid receptance) on spike-encoded linear inputs."""

    def __init__(self, cfg: SpikeRWKVConfig, layer: int) -> None:
        super().__init__()
        d = cfg.d_model
        ratio_1_to_almost0 = 1.0 - layer / cfg.n_layers
        ramp = torch.arange(d, dtype=torch.float32) / d
        self.time_mix_k = nn.Parameter(ramp**ratio_1_to_almost0)
        self.time_mix_r = nn.Parameter(ramp**ratio_1_to_almost0)
        self.key = nn.Linear(d, cfg.d_ffn, bias=False)
        self.receptance = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(cfg.d_ffn, d, bias=False)
        self.enc_k = MultiLevelSpikeEncoder(cfg.T, cfg.level_weights, cfg.polarity)
        self.enc_r = MultiLevelSpikeEncoder(cfg.T, cfg.level_weights, cfg.polarity)
        # relu(.)^2 >= 0: this encoder never needs the spiking flag
        self.enc_v = MultiLevelSpikeEncoder(cfg.T, cfg.level_weights, polarity=False)

    def _mix(self, g: Tensor, prev: Tensor) -> tuple[Tensor, Tensor]:
        xk = g * self.time_mix_k + prev * (1 - self.time_mix_k)
        xr = g * self.time_mix_r + prev * (1 - self.time_mix_r)
        return xk, xr

    def forward(self, g: Tensor) -> Tensor:
        xk, xr = self._mix(g, _shift(g))
        kk = torch.relu(self.key(self.enc_k(xk))) ** 2
        return torch.sigmoid(self.receptance(self.enc_r(xr))) * self.value(self.enc_v(kk))

    def step(self, g: Tensor, prev: Tensor, spikes: dict[str, Tensor], pols: dict[str, Tensor], prefix: str):
        xk, xr = self._mix(g, prev)

        def enc(name: str, x: Tensor) -> Tensor:
            s, p = getattr(self, name).encode(x)
            spikes[prefix + name], pols[prefix + name] = s, p
            return getattr(self, name).decode(s, p)

        kk = torch.relu(self.key(enc("enc_k", xk))) ** 2
        r = torch.sigmoid(self.receptance(enc("enc_r", xr)))
        return r * self.value(enc("enc_v", kk))


class Block(nn.Module):
    """x + att(ln1(x)), then x + ffn(ln2(x)); block 0 applies ln0 first. `time_mix` / `channel_mix` build the two
    halves (RWKV-4's here; spikecc.models.rwkv6 passes RWKV-6's)."""

    def __init__(self, cfg: Any, layer: int, time_mix: Any = None, channel_mix: Any = None) -> None:
        super().__init__()
        if layer == 0:
            self.ln0 = nn.LayerNorm(cfg.d_model)
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.att = (time_mix or TimeMix)(cfg, layer)
        self.ffn = (channel_mix or ChannelMix)(cfg, layer)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "ln0"):
            x = self.ln0(x)
        x = x + self.att(self.ln1(x))
        return x + self.ffn(self.ln2(x))


@dataclass
class StepOutput:
    """Everything one recurrent step produces; `SpikeRWKV.step` returns the first three fields."""

    logits: Tensor  # (vocab,)
    state: Tensor  # (n_layers, 5, d_model)
    spikes: dict[str, Tensor]  # encoder name -> (T, l, C_in) of 0/1
    polarity: dict[str, Tensor]  # encoder name -> (C_in,) of -1/+1 (the spiking flag; flag spike where -1)


class RWKVLanguageModel(nn.Module):
    """Embedding -> blocks -> ln_out -> head: the stack SpikeRWKV and RWKV-6 (spikecc.models.rwkv6) share.

    Gives the parallel form `forward(idx)`, the encoder listing, and `step()` on top of the subclass's
    `step_detailed(token, state) -> StepOutput`. `block(cfg, layer)` builds one block.
    """

    def __init__(self, cfg: Any, block: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(block(cfg, i) for i in range(cfg.n_layers))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        nn.init.uniform_(self.emb.weight, -0.1, 0.1)
        for blk in self.blocks:
            # residual-branch outputs start small so early training sees a near-identity stack
            nn.init.normal_(blk.att.output.weight, std=0.02)
            nn.init.normal_(blk.ffn.value.weight, std=0.02)

    def encoders(self) -> dict[str, MultiLevelSpikeEncoder]:
        """Encoder name (module path, e.g. "blocks.0.att.enc_k") -> encoder, in forward order."""
        return {n: m for n, m in self.named_modules() if isinstance(m, MultiLevelSpikeEncoder)}

    def forward(self, idx: Tensor) -> Tensor:
        """idx (B, L) int64 -> logits (B, L, vocab)."""
        x = self.emb(idx)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_out(x))

    def step_detailed(self, token_id: int | Tensor, state: Any) -> StepOutput:
        raise NotImplementedError

    def step(self, token_id: int | Tensor, state: Any) -> tuple[Tensor, Any, dict[str, Tensor]]:
        """(logits (vocab,), new state, spikes: encoder name -> (T, l, C_in) 0/1 tensor for this token)."""
        out = self.step_detailed(token_id, state)
        return out.logits, out.state, out.spikes


class SpikeRWKV(RWKVLanguageModel):
    """Small SpikeRWKV language model: embedding, RWKV blocks with spike-encoded linears, ln_out, head.

    `forward(idx)` is the parallel (training) form; `init_state()` / `step()` the recurrent form. Both give the
    same logits (up to float rounding; test in float64).
    """

    def __init__(self, cfg: SpikeRWKVConfig) -> None:
        super().__init__(cfg, Block)

    def init_state(self) -> Tensor:
        """Recurrent state (n_layers, 5, d_model): rows att prev-h, aa, bb, pp (= -1e30), ffn prev-g."""
        p = self.head.weight
        st = torch.zeros(self.cfg.n_layers, 5, self.cfg.d_model, dtype=p.dtype, device=p.device)
        st[:, 3] = _NEG_BIG
        return st

    def step_detailed(self, token_id: int | Tensor, state: Tensor) -> StepOutput:
        """One token through the recurrent form, with the spikes and flags of every encoder."""
        tok = torch.as_tensor(token_id, dtype=torch.long, device=self.emb.weight.device).reshape(())
        x = self.emb(tok)
        spikes: dict[str, Tensor] = {}
        pols: dict[str, Tensor] = {}
        new_state = torch.empty_like(state)
        for i, blk in enumerate(self.blocks):
            if hasattr(blk, "ln0"):
                x = blk.ln0(x)
            h = blk.ln1(x)
            a, new_state[i, 0:4] = blk.att.step(h, state[i, 0:4], spikes, pols, f"blocks.{i}.att.")
            x = x + a
            g = blk.ln2(x)
            x = x + blk.ffn.step(g, state[i, 4], spikes, pols, f"blocks.{i}.ffn.")
            new_state[i, 4] = g
        return StepOutput(self.head(self.ln_out(x)), new_state, spikes, pols)

    def firing_rates(self, idx: Tensor) -> dict[str, float]:
        """Mean firing rate per encoder over a batch: spikes / (T * l * C_in * tokens), the paper's fr."""
        return firing_rates(self, idx)


@torch.no_grad()
def firing_rates(model: nn.Module, idx: Tensor) -> dict[str, float]:
    """Mean firing rate per encoder of `model.encoders()` over `model(idx)`: spikes / (T * l * C_in * tokens)."""
    encs = model.encoders()
    for e in encs.values():
        e._rate_stats = []
    try:
        model(idx)
        return {n: sum(s for s, _ in e._rate_stats) / sum(m for _, m in e._rate_stats) for n, e in encs.items()}
    finally:
        for e in encs.values():
            e._rate_stats = None


def encoder_fan(model: SpikeRWKV) -> dict[str, tuple[int, int]]:
    """Encoder name -> (C_in, C_out) of the linear it feeds."""
    fan = {}
    for i, blk in enumerate(model.blocks):
        for enc, lin in (("enc_k", "key"), ("enc_v", "value"), ("enc_r", "receptance"), ("enc_o", "output")):
            w = getattr(blk.att, lin).weight
            fan[f"blocks.{i}.att.{enc}"] = (w.shape[1], w.shape[0])
        for enc, lin in (("enc_k", "key"), ("enc_r", "receptance"), ("enc_v", "value")):
            w = getattr(blk.ffn, lin).weight
            fan[f"blocks.{i}.ffn.{enc}"] = (w.shape[1], w.shape[0])
    return fan


def energy_per_token(
    model: SpikeRWKV, rates: dict[str, float], e_ac_pj: float = E_AC_45NM_PJ, e_mac_pj: float = E_MAC_45NM_PJ
) -> dict[str, float]:
    """Energy per token in pJ, summed over encoders.

    paper_snn_pj: sum C_in * fr * T * l * E_AC (paper Eq. 5, SNN); paper_ann_pj: sum C_in * E_MAC (Eq. 5, ANN);
    synop_snn_pj: sum C_in * C_out * fr * T * l * E_AC (every spike reaches C_out synapses);
    synop_ann_pj: sum C_in * C_out * E_MAC (dense real-valued linears).
    """
    return encoder_energy(model.encoders(), encoder_fan(model), rates, e_ac_pj, e_mac_pj)


def encoder_energy(
    encoders: dict[str, MultiLevelSpikeEncoder], fan: dict[str, tuple[int, int]], rates: dict[str, float],
    e_ac_pj: float = E_AC_45NM_PJ, e_mac_pj: float = E_MAC_45NM_PJ,
) -> dict[str, float]:
    """`energy_per_token` for any set of encoders (each with its own T and l), given the (C_in, C_out) of the
    linear each feeds and their firing rates."""
    out = {"paper_snn_pj": 0.0, "paper_ann_pj": 0.0, "synop_snn_pj": 0.0, "synop_ann_pj": 0.0}
    for name, (cin, cout) in fan.items():
        fr = rates[name]
        T, levels = encoders[name].T, encoders[name].levels
        out["paper_snn_pj"] += cin * fr * T * levels * e_ac_pj
        out["paper_ann_pj"] += cin * e_mac_pj
        out["synop_snn_pj"] += cin * cout * fr * T * levels * e_ac_pj
        out["synop_ann_pj"] += cin * cout * e_mac_pj
    return out


# ----------------------------------------------------------------------------------------------------- checkpoints


def _vocab_chars(vocab: Any) -> str:
    return vocab if isinstance(vocab, str) else vocab.chars


def save_spikerwkv(model: SpikeRWKV, vocab: Any, path: str | os.PathLike, meta: dict | None = None) -> None:
    """torch.save {"family": "spikerwkv", "config": plain dict, "state_dict": float32 tensors, "vocab": chars}.

    Tensors are stored as float32 whatever the model's dtype (half the size; the reference runs in float64 after
    loading). `meta` (plain data) is stored under "meta" for the model card.
    """
    chars = _vocab_chars(vocab)
    if len(chars) != model.cfg.vocab_size:
        raise ValueError(f"vocab has {len(chars)} characters, model expects {model.cfg.vocab_size}")
    sd = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
    obj = {"family": FAMILY, "config": model.cfg.to_dict(), "state_dict": sd, "vocab": chars}
    if meta is not None:
        obj["meta"] = meta
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint under the final name


def load_spikerwkv(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> tuple[SpikeRWKV, str]:
    """Load a checkpoint written by `save_spikerwkv`; returns (model in eval mode and `dtype`, vocab chars).

    Raises CheckpointError (one line naming the file and the key) for an unreadable, truncated or non-torch file,
    a wrong family, missing/unexpected keys, config values that do not build a model, and wrong tensor shapes.
    """
    model, vocab, _ = load_family_checkpoint(path, FAMILY, CONFIG_KEYS,
                                             lambda conf: SpikeRWKV(SpikeRWKVConfig.from_dict(conf)))
    return model.to(dtype).eval(), vocab


@torch.no_grad()
def generate(model: SpikeRWKV, vocab: Any, prompt: str, n_tokens: int) -> str:
    """Greedy (argmax, ties to the lowest id) continuation of `prompt` through the recurrent form; returns the
    n_tokens new characters (without the prompt). Deterministic: no sampling."""
    chars = _vocab_chars(vocab)
    if not prompt:
        raise ValueError("prompt must contain at least one character")
    index = {c: i for i, c in enumerate(chars)}
    missing = sorted({c for c in prompt if c not in index})
    if missing:
        raise ValueError(f"characters {missing!r} are not in the model's vocabulary")
    state = model.init_state()
    logits = None
    for c in prompt:
        logits, state, _ = model.step(index[c], state)
    out = []
    for _ in range(n_tokens):
        tok = int(torch.argmax(logits))
        out.append(chars[tok])
        logits, state, _ = model.step(tok, state)
    return "".join(out)
