"""RWKV-6 ("Finch", BlinkDL's "x060") float reference: parallel (training) and token-by-token forms, and a loader
for public x060 checkpoints.

Sources: Peng et al., "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic Recurrence" (arXiv:2404.05892,
Sec. 4), the model the SpikeRWKV paper converts (Zhang, Shen, Wang 2025, Sec. 3.1, 3.5); BlinkDL's training code
RWKV-LM/RWKV-v5/src/model.py (classes RWKV_Tmix_x060, RWKV_CMix_x060) for the key layout and initialisation, and
the `rwkv` package's rwkv/model.py (att_one_v6_0 / att_seq_v6_0, ffn_one_v6) for inference conventions (GroupNorm
eps 64e-5, the bonus u used as is, ln0 applied to the embedding).

Block b, input x_t (C = d_model channels; A = dim_att = H heads x N head size), with h_{-1} = 0:

    h_t = ln1(x_t);  dx_t = h_{t-1} - h_t                                   (token shift)
    ddlerp (data-dependent token shift, Eq. "lerp" with a low-rank mix):
        s_t = h_t + dx_t * maa_x
        m_{j,t} = tanh(s_t W1_j) W2_j,   j in (w, k, v, r, g)               (W1 = time_maa_w1 (C, 5D), split in 5;
                                                                              W2 = time_maa_w2 (5, D, C))
        x_{j,t} = h_t + dx_t * (maa_j + m_{j,t})
    r_t = R x_{r,t},  k_t = K x_{k,t},  v_t = V x_{v,t},  g_t = silu(G x_{g,t})
    d_t = time_decay + tanh(x_{w,t} Wd1) Wd2;   w_t = exp(-exp(d_t))  in (0, 1)     (data-dependent decay)
    per head (vectors of N; S is N x N, S_{-1} = 0; u = time_faaaa):
        y_t = r_t (diag(u) k_t^T v_t + S_{t-1})
        S_t = diag(w_t) S_{t-1} + k_t^T v_t
    x_t <- x_t + O (GroupNorm_H(y_t) * g_t)                                   (ln_x: one group per head)

    f_t = ln2(x_t);  df_t = f_{t-1} - f_t
    x_t <- x_t + sigmoid(R' (f_t + df_t * maa_r)) * V' relu(K' (f_t + df_t * maa_k))^2

Block 0 applies ln0 to the embedding first; the model ends with ln_out and head. Linears have no bias.

Encoder slots. Every linear input inside the blocks passes through a named slot (`att.enc_r`, ... see SITES) that
holds `nn.Identity()` in the float model; `spikecc.models.spikerwkv6` installs multi-level spike encoders in some
of them (the SpikeRWKV conversion). The slots hold no tensors, so the state dict is exactly the x060 layout.

Key layout (x060, as BlinkDL's trainer saves it): emb.weight (V, C); blocks.0.ln0.*; blocks.{i}.ln{1,2}.*;
blocks.{i}.att.time_maa_{x,w,k,v,r,g} (1, 1, C); att.time_maa_w1 (C, 5D); att.time_maa_w2 (5, D, C);
att.time_decay (1, 1, A); att.time_decay_w1 (C, Dd); att.time_decay_w2 (Dd, A); att.time_faaaa (H, N);
att.{receptance,key,value,gate}.weight (A, C); att.output.weight (C, A); att.ln_x.{weight,bias} (A,);
blocks.{i}.ffn.time_maa_{k,r} (1, 1, C); ffn.key.weight (F, C); ffn.receptance.weight (C, C); ffn.value.weight
(C, F); ln_out.*; head.weight (V, C). Sizes are read from these shapes (H from time_faaaa).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecc.errors import CheckpointError
from spikecc.models.checkpoint import check_state_dict, fmt_shape, read_torch_file, write_atomically
from spikecc.models.spikerwkv import (  # noqa: F401  (generate: the family's API)
    Block,
    MultiLevelSpikeEncoder,
    RWKVLanguageModel,
    StepOutput,
    generate,
)

FAMILY = "rwkv6"
GN_EPS = 64e-5  # GroupNorm eps of x060 models: 1e-5 * head_size_divisor^2 with the trainer's divisor 8
MIX_TARGETS = ("w", "k", "v", "r", "g")  # order of the five low-rank mixes in time_maa_w1 / time_maa_w2
# encoder slot -> the linear (parameter or module) whose input it encodes
ATT_SITES = {"enc_r": "receptance", "enc_k": "key", "enc_v": "value", "enc_g": "gate", "enc_o": "output",
             "enc_maa": "time_maa_w1", "enc_decay": "time_decay_w1"}
FFN_SITES = {"enc_k": "key", "enc_r": "receptance", "enc_v": "value"}


@dataclass
class RWKV6Config:
    """Sizes of an RWKV-6 model; all of them follow from the x060 tensor shapes (`config_from_state_dict`)."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    head_size: int = 32
    dim_att: int = 0  # 0: d_model
    d_ffn: int = 0  # 0: int(3.5 * d_model) rounded down to a multiple of 32, as the x060 trainer
    d_mix_lora: int = 32  # D of the five token-shift mixes
    d_decay_lora: int = 64  # Dd of the decay
    gn_eps: float = GN_EPS

    def __post_init__(self) -> None:
        self.dim_att = self.dim_att or self.d_model
        self.d_ffn = self.d_ffn or int(self.d_model * 3.5) // 32 * 32
        for name in ("vocab_size", "d_model", "n_layers", "head_size", "dim_att", "d_ffn", "d_mix_lora",
                     "d_decay_lora"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim_att % self.head_size:
            raise ValueError(f"dim_att {self.dim_att} is not a multiple of head_size {self.head_size}")

    @property
    def n_heads(self) -> int:
        return self.dim_att // self.head_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RWKV6Config:
        return cls(**{k: (float if k == "gn_eps" else int)(d[k]) for k in CONFIG_KEYS})


CONFIG_KEYS = ("vocab_size", "d_model", "n_layers", "head_size", "dim_att", "d_ffn", "d_mix_lora", "d_decay_lora",
               "gn_eps")


def _token_shift(x: Tensor) -> Tensor:
    """Row t of (..., T, C) gets row t-1; row 0 gets zeros."""
    return F.pad(x, (0, 0, 1, -1))


def _encoded(module: nn.Module, slot: str, x: Tensor, rec: StepOutput | None, prefix: str) -> Tensor:
    """x through the encoder slot `slot` of `module`. Recording (token-by-token form, rec given) with an encoder
    installed: the spikes and flags go into rec under the slot's full name and the linear sees decode(encode(x)),
    which equals the encoder's forward (and so the parallel form) bit for bit."""
    enc = getattr(module, slot)
    if rec is None or not isinstance(enc, MultiLevelSpikeEncoder):
        return enc(x)
    spikes, pol = enc.encode(x)
    rec.spikes[prefix + slot], rec.polarity[prefix + slot] = spikes, pol
    return enc.decode(spikes, pol)


def wkv6_recurrent(r: Tensor, k: Tensor, v: Tensor, w: Tensor, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """One token of the WKV-6 recurrence: r, k, v, w (H, N), u (H, N), state S (H, N, N) -> (y (H, N), S')."""
    a = k.unsqueeze(-1) * v.unsqueeze(-2)  # k^T v per head
    y = (r.unsqueeze(-2) @ (u.unsqueeze(-1) * a + state)).squeeze(-2)
    return y, a + w.unsqueeze(-1) * state


def wkv6_chunked(r: Tensor, k: Tensor, v: Tensor, logw: Tensor, u: Tensor, chunk: int = 16) -> Tensor:
    """The WKV-6 recurrence for whole sequences, parallel within chunks: r, k, v, logw = log w_t (B, H, T, N),
    u (H, N) -> y (B, H, T, N), from a zero state.

    Unrolled, y_t = r_t diag(u) k_t^T v_t + sum_{s<t} r_t diag(prod_{s<tau<t} w_tau) k_s^T v_s. Within a chunk the
    decay products are exp of differences of cumulative log-decays, which are <= 0 wherever they are used (masked
    before exp), so nothing overflows; the state carries the sum over earlier chunks.
    """
    B, H, T, N = r.shape
    S = r.new_zeros(B, H, N, N)
    uu = u.unsqueeze(1)  # (H, 1, N)
    outs = []
    for c0 in range(0, T, chunk):
        rc, kc, vc, lw = (t[:, :, c0 : c0 + chunk] for t in (r, k, v, logw))
        L = rc.shape[2]
        cum = lw.cumsum(2)  # sum_{tau <= t} log w_tau (within the chunk)
        excl = cum - lw  # sum_{tau < t}
        y = (rc * excl.exp()) @ S  # the state entering the chunk, decayed to each t
        diff = excl.unsqueeze(3) - cum.unsqueeze(2)  # (B, H, t, s, N): sum_{s < tau < t} log w_tau
        below = torch.ones(L, L, dtype=torch.bool, device=r.device).tril(-1)[:, :, None]
        decay = torch.where(below, diff, torch.full_like(diff, -math.inf)).exp()
        att = (rc.unsqueeze(3) * kc.unsqueeze(2) * decay).sum(-1)  # (B, H, t, s)
        y = y + att @ vc + (rc * uu * kc).sum(-1, keepdim=True) * vc
        outs.append(y)
        last = cum[:, :, -1:]  # (B, H, 1, N)
        S = last.transpose(2, 3).exp() * S + (kc * (last - cum).exp()).transpose(2, 3) @ vc
    return torch.cat(outs, dim=2)


class TimeMix(nn.Module):
    """RWKV-6 time mixing (x060): ddlerp token shift, data-dependent decay, matrix-valued WKV, GroupNorm, SiLU gate."""

    def __init__(self, cfg: RWKV6Config, layer: int) -> None:
        super().__init__()
        C, A, D, Dd = cfg.d_model, cfg.dim_att, cfg.d_mix_lora, cfg.d_decay_lora
        self.n_heads, self.head_size = cfg.n_heads, cfg.head_size
        # x060 initialisation (RWKV_Tmix_x060.__init__): mixes ramp over channels, decays spread from -6 to -1
        r01 = layer / max(cfg.n_layers - 1, 1)
        r10 = 1.0 - layer / cfg.n_layers
        ddd = (torch.arange(C, dtype=torch.float32) / C).reshape(1, 1, C)
        self.time_maa_x = nn.Parameter(1.0 - ddd**r10)
        self.time_maa_w = nn.Parameter(1.0 - ddd**r10)
        self.time_maa_k = nn.Parameter(1.0 - ddd**r10)
        self.time_maa_v = nn.Parameter(1.0 - (ddd**r10 + 0.3 * r01))
        self.time_maa_r = nn.Parameter(1.0 - ddd ** (0.5 * r10))
        self.time_maa_g = nn.Parameter(1.0 - ddd ** (0.5 * r10))
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * D))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, D, C).uniform_(-0.01, 0.01))
        n = torch.arange(A, dtype=torch.float32) / max(A - 1, 1)
        self.time_decay = nn.Parameter((-6 + 5 * n ** (0.7 + 1.3 * r01)).reshape(1, 1, A))
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, Dd))
        self.time_decay_w2 = nn.Parameter(torch.empty(Dd, A).uniform_(-0.01, 0.01))
        zigzag = ((torch.arange(A) + 1) % 3 - 1).float() * 0.1
        self.time_faaaa = nn.Parameter((r01 * (1 - n) + zigzag).reshape(self.n_heads, self.head_size))
        self.receptance = nn.Linear(C, A, bias=False)
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.gate = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.ln_x = nn.GroupNorm(self.n_heads, A, eps=cfg.gn_eps)
        for slot in ATT_SITES:
            setattr(self, slot, nn.Identity())

    def mixes(self, h: Tensor, dx: Tensor, rec: StepOutput | None = None, prefix: str = "") -> dict[str, Tensor]:
        """ddlerp: the five shifted inputs x_j = h + dx * (maa_j + m_j) for j in MIX_TARGETS, any leading dims."""
        s = h + dx * self.time_maa_x.reshape(-1)
        D = self.time_maa_w2.shape[1]
        t = torch.tanh(_encoded(self, "enc_maa", s, rec, prefix) @ self.time_maa_w1)
        t = t.reshape(*t.shape[:-1], 5, D)
        m = torch.einsum("...jd,jdc->j...c", t, self.time_maa_w2)
        return {j: h + dx * (getattr(self, f"time_maa_{j}").reshape(-1) + m[i]) for i, j in enumerate(MIX_TARGETS)}

    def project(self, h: Tensor, dx: Tensor, rec: StepOutput | None = None, prefix: str = ""):
        """(r, k, v, g, log w) of the module docstring for inputs h and dx = h_prev - h (any leading dims)."""
        x = self.mixes(h, dx, rec, prefix)
        r = self.receptance(_encoded(self, "enc_r", x["r"], rec, prefix))
        k = self.key(_encoded(self, "enc_k", x["k"], rec, prefix))
        v = self.value(_encoded(self, "enc_v", x["v"], rec, prefix))
        g = F.silu(self.gate(_encoded(self, "enc_g", x["g"], rec, prefix)))
        xw = _encoded(self, "enc_decay", x["w"], rec, prefix)
        d = self.time_decay.reshape(-1) + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        return r, k, v, g, -torch.exp(d)

    def finish(self, y: Tensor, g: Tensor, rec: StepOutput | None = None, prefix: str = "") -> Tensor:
        """O (GroupNorm(y) * g) for y, g (..., A)."""
        lead = y.shape[:-1]
        y = self.ln_x(y.reshape(-1, y.shape[-1])).reshape(*lead, -1)
        return self.output(_encoded(self, "enc_o", y * g, rec, prefix))

    def forward(self, h: Tensor) -> Tensor:
        """h (B, T, C) -> the branch output (B, T, C), from a zero state."""
        B, T, _ = h.shape
        H, N = self.n_heads, self.head_size
        r, k, v, g, logw = self.project(h, _token_shift(h) - h)
        heads = [t.reshape(B, T, H, N).transpose(1, 2) for t in (r, k, v, logw)]
        y = wkv6_chunked(*heads, self.time_faaaa).transpose(1, 2).reshape(B, T, H * N)
        return self.finish(y, g)

    def step(self, h: Tensor, prev: Tensor, S: Tensor, rec: StepOutput | None, prefix: str):
        """One token: h, prev (C,), S (H, N, N) -> (branch output (C,), S')."""
        H, N = self.n_heads, self.head_size
        r, k, v, g, logw = self.project(h, prev - h, rec, prefix)
        y, S = wkv6_recurrent(r.view(H, N), k.view(H, N), v.view(H, N), torch.exp(logw).view(H, N),
                              self.time_faaaa, S)
        return self.finish(y.reshape(-1), g, rec, prefix), S


class ChannelMix(nn.Module):
    """RWKV-6 channel mixing (x060): token shift with static mixes, squared-ReLU key, sigmoid receptance."""

    def __init__(self, cfg: RWKV6Config, layer: int) -> None:
        super().__init__()
        C = cfg.d_model
        r10 = 1.0 - layer / cfg.n_layers
        ddd = (torch.arange(C, dtype=torch.float32) / C).reshape(1, 1, C)
        self.time_maa_k = nn.Parameter(1.0 - ddd**r10)
        self.time_maa_r = nn.Parameter(1.0 - ddd**r10)
        self.key = nn.Linear(C, cfg.d_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(cfg.d_ffn, C, bias=False)
        for slot in FFN_SITES:
            setattr(self, slot, nn.Identity())

    def forward(self, f: Tensor) -> Tensor:
        """f (B, T, C) -> the branch output, from a zero state."""
        return self.mix(f, _token_shift(f) - f)

    def step(self, f: Tensor, prev: Tensor, rec: StepOutput | None, prefix: str) -> Tensor:
        """One token: f, prev (C,) -> the branch output (C,)."""
        return self.mix(f, prev - f, rec, prefix)

    def mix(self, f: Tensor, df: Tensor, rec: StepOutput | None = None, prefix: str = "") -> Tensor:
        """f and df = f_prev - f (any leading dims) -> the branch output."""
        xk = f + df * self.time_maa_k.reshape(-1)
        xr = f + df * self.time_maa_r.reshape(-1)
        kk = torch.relu(self.key(_encoded(self, "enc_k", xk, rec, prefix))) ** 2
        kv = self.value(_encoded(self, "enc_v", kk, rec, prefix))
        return torch.sigmoid(self.receptance(_encoded(self, "enc_r", xr, rec, prefix))) * kv


class RWKV6(RWKVLanguageModel):
    """RWKV-6 language model. `forward(idx)` is the parallel form; `init_state()` / `step()` the recurrent form;
    both give the same logits up to float rounding. Encoder slots are empty (identity) unless a conversion filled
    them (`spikecc.models.spikerwkv6`)."""

    def __init__(self, cfg: RWKV6Config) -> None:
        # x060 zero-initialises att.output and ffn.value; the shared stack's small values are near enough
        super().__init__(cfg, functools.partial(Block, time_mix=TimeMix, channel_mix=ChannelMix))

    def init_state(self) -> tuple[Tensor, Tensor, Tensor]:
        """(previous ln1 output (L, C), WKV states (L, H, N, N), previous ln2 output (L, C)), all zero."""
        p = self.head.weight
        cfg = self.cfg
        z = torch.zeros(cfg.n_layers, cfg.d_model, dtype=p.dtype, device=p.device)
        S = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.head_size, cfg.head_size, dtype=p.dtype, device=p.device)
        return z, S, z.clone()

    def step_detailed(self, token_id: int | Tensor, state: tuple[Tensor, Tensor, Tensor]) -> StepOutput:
        """One token through the recurrent form, with the spikes and flags of every installed encoder."""
        tok = torch.as_tensor(token_id, dtype=torch.long, device=self.emb.weight.device).reshape(())
        att_prev, wkv, ffn_prev = state
        new = (torch.empty_like(att_prev), torch.empty_like(wkv), torch.empty_like(ffn_prev))
        out = StepOutput(logits=torch.empty(0), state=new, spikes={}, polarity={})
        x = self.emb(tok)
        for i, blk in enumerate(self.blocks):
            if hasattr(blk, "ln0"):
                x = blk.ln0(x)
            h = blk.ln1(x)
            a, new[1][i] = blk.att.step(h, att_prev[i], wkv[i], out, f"blocks.{i}.att.")
            new[0][i] = h
            x = x + a
            f = blk.ln2(x)
            x = x + blk.ffn.step(f, ffn_prev[i], out, f"blocks.{i}.ffn.")
            new[2][i] = f
        out.logits = self.head(self.ln_out(x))
        return out



# ----------------------------------------------------------------------------------------------------- checkpoints


def _other_layout(keys: list[str]) -> str | None:
    """A one-line description of a known non-x060 RWKV layout, or None."""
    if any(k.endswith("att.time_mix_k") for k in keys) and not any(".time_maa_" in k for k in keys):
        if any(".att.ln_x." in k for k in keys):
            return "an RWKV-5 checkpoint (key '...att.ln_x.weight' with static '...att.time_mix_k')"
        return ("an RWKV-4 checkpoint (key '...att.time_mix_k', no '...att.time_maa_x'); spikecc loads RWKV-4 "
                "files as SpikeGPT (`spikecc generate` / `export`)")
    if any(k.endswith((".att.x_r", ".att.w0", ".att.a0")) for k in keys):
        return "an RWKV-7 checkpoint (keys '...att.x_r', '...att.w0')"
    return None


def config_from_state_dict(sd: Any, source: str = "<state dict>") -> RWKV6Config:
    """Read every size from the x060 tensor shapes; one-line CheckpointErrors (naming `source` and the key) for
    another RWKV generation, missing low-rank (LoRA) keys, a head size that does not divide the attention width,
    and any key or shape outside the layout."""
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: expected a raw RWKV-6 state dict (a dict of tensors), "
                              f"found {type(sd).__name__}")
    keys = [str(k) for k in sd]
    other = _other_layout(keys)
    if other:
        raise CheckpointError(f"{source}: {other}, not RWKV-6 'x060' (keys like 'blocks.0.att.time_maa_x')")
    for k in keys:
        if not isinstance(sd[k], Tensor) or not sd[k].is_floating_point():
            raise CheckpointError(f"{source}: key '{k}' is not a floating-point tensor")
    need = ["emb.weight", "blocks.0.att.key.weight", "blocks.0.ffn.key.weight", "blocks.0.att.time_maa_x"]
    for k in need:
        if k not in sd:
            raise CheckpointError(f"{source}: missing key '{k}'; not an RWKV-6 'x060' checkpoint")
    layers = sorted({int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))})
    for i in layers:
        for name, what in (("time_maa_w1", "token-shift mix"), ("time_maa_w2", "token-shift mix"),
                           ("time_decay_w1", "decay"), ("time_decay_w2", "decay")):
            if f"blocks.{i}.att.{name}" not in sd:
                raise CheckpointError(f"{source}: missing key 'blocks.{i}.att.{name}' (low-rank term of the "
                                      f"data-dependent {what}); RWKV-6 x060 checkpoints have all four LoRA keys")
    vocab, C = sd["emb.weight"].shape
    A = int(sd["blocks.0.att.key.weight"].shape[0])
    u = sd.get("blocks.0.att.time_faaaa")
    if u is None:
        raise CheckpointError(f"{source}: missing key 'blocks.0.att.time_faaaa' (the per-head bonus u)")
    if u.dim() != 2 or u.shape[0] * u.shape[1] != A:
        raise CheckpointError(
            f"{source}: key 'blocks.0.att.time_faaaa' has shape {fmt_shape(u.shape)}, expected (heads, head size) "
            f"with heads x head size = {A} channels of 'blocks.0.att.key.weight': wrong head size")
    w1, w2 = sd["blocks.0.att.time_maa_w1"], sd["blocks.0.att.time_maa_w2"]
    if w1.dim() != 2 or w1.shape[1] % 5 or w2.dim() != 3 or w2.shape[0] != 5:
        raise CheckpointError(f"{source}: keys 'blocks.0.att.time_maa_w1/w2' have shapes {fmt_shape(w1.shape)} and "
                              f"{fmt_shape(w2.shape)}, expected ({C}, 5 x D) and (5, D, {C})")
    try:
        cfg = RWKV6Config(vocab_size=int(vocab), d_model=int(C), n_layers=len(layers), head_size=int(u.shape[1]),
                          dim_att=A, d_ffn=int(sd["blocks.0.ffn.key.weight"].shape[0]),
                          d_mix_lora=int(w1.shape[1]) // 5,
                          d_decay_lora=int(sd["blocks.0.att.time_decay_w1"].shape[-1]))
    except ValueError as exc:
        raise CheckpointError(f"{source}: the tensor shapes do not describe an RWKV-6 model: {exc}") from None
    if layers != list(range(cfg.n_layers)):
        raise CheckpointError(f"{source}: block numbers {layers[:3]}... are not 0..{cfg.n_layers - 1}")
    with torch.device("meta"):  # shapes only, no allocation
        expected = RWKV6(cfg).state_dict()
    check_state_dict(sd, expected, source, "RWKV-6 x060", key_prefix="")
    return cfg


def rwkv6_from_state_dict(sd: Mapping[str, Tensor], source: str = "<state dict>",
                          dtype: torch.dtype = torch.float64) -> RWKV6:
    """An RWKV6 in eval mode and `dtype` from an x060 state dict (validated by `config_from_state_dict`)."""
    cfg = config_from_state_dict(sd, source)
    model = RWKV6(cfg)
    model.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()})
    return model.to(dtype).eval()


def load_rwkv6(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> RWKV6:
    """Load a public RWKV-6 x060 checkpoint (raw `torch.save(state_dict)`, any float dtype) as an RWKV6."""
    return rwkv6_from_state_dict(read_torch_file(path), str(path), dtype)


def vocab_beside(path: str | os.PathLike, vocab_size: int) -> str:
    """The character vocabulary stored beside an x060 checkpoint as `<name>.vocab.json` ({"chars": ...}, as
    `spikecc.models.spikegpt.save_vocab` writes it): a raw state dict has no room for one."""
    from spikecc.models.spikegpt import load_vocab

    vp = Path(path).with_suffix(".vocab.json")
    if not vp.exists():
        raise CheckpointError(f"{path}: no vocabulary file {vp.name} beside the checkpoint; an RWKV-6 state dict "
                              'does not store one (write {"chars": "..."} JSON there, ids in character order)')
    chars = load_vocab(vp).chars
    if len(chars) != vocab_size:
        raise CheckpointError(f"{vp}: {len(chars)} characters, but the checkpoint's emb.weight has {vocab_size} rows")
    return chars


def save_rwkv6(model: RWKV6, path: str | os.PathLike) -> None:
    """Write the raw x060 state dict (float32), atomically: readable by BlinkDL's `rwkv` package too."""
    sd = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    write_atomically(sd, path)
