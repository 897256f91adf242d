"""SpikeLM's generative model: a BART encoder-decoder built from elastic bi-spiking neurons, torch reference.

Paper: Xing et al., "SpikeLM", ICML 2024, Sec. 5.3 and Table 8 (BART-base for summarization, mBART-large for
translation, both initialised from and distilled from an ANN teacher, App. A.2.2). The authors published their BERT
code only (github.com/Xingrun-Xing/SpikeLM, ``spikeLM-BERT/``), so this model applies that code's spiking to the
Hugging Face BART layout (``transformers/models/bart/modeling_bart.py``) the paper names:

* every linear of every encoder and decoder layer is the code's ``SpikeLinear``: an `ElasticBiSpike` neuron (beta =
  0.25, one alpha per spike step, checkpoint keys ``<linear>.act_clip_val.{t}``) on its input. That is q_proj,
  k_proj, v_proj, out_proj of self-attention and of encoder-decoder attention (``encoder_attn``), fc1 and fc2;
* the outputs of the K and V projections are spiked again, beta = 0 (``spike_bert.py``'s ``act_quantizer_k/v``;
  keys ``self_attn.clip_key.{t}`` / ``clip_value.{t}``, ``encoder_attn.clip_key.{t}`` / ``clip_value.{t}``) in self-
  and cross-attention alike (the paper: spiking keys and values make both attention products additions); Q stays
  real;
* embeddings, LayerNorm, softmax, GELU, residual adds and the LM head (the "last regression") stay real;
* every token is presented for T spike steps (the code's ``hidden_states.repeat(T, ...)``); the encoder's output is
  the mean over the T steps (as the code's BERT encoder returns ``hidden_states.mean(0)``), and the decoder's cross
  attention reads that mean, again for T steps, through its K/V input neurons; the decoder's mean over T feeds the LM
  head. Where the BART layout has a final LayerNorm (mBART's ``encoder.layer_norm`` / ``decoder.layer_norm``) it is
  applied per step, before the mean.

BART, per encoder layer (post-LN; mBART, ``normalize_before``, is pre-LN), x shaped (T, B, L, d)::

    x = LN_sa(x + out_proj(S_o(Attn(q_proj(S_q(x)) * dh^-0.5, S_K(k_proj(S_k(x))), S_V(v_proj(S_v(x))), mask))))
    x = LN_final(x + fc2(S_2(GELU(fc1(S_1(x))))))

per decoder layer: causal self-attention as above, then ``x = LN_ca(x + encoder_attn(x, memory))`` with keys and
values from the encoder output, then the MLP. Embeddings: ``LN_emb(E[ids] * embed_scale + P[positions + 2])``
(BART's learned positions are offset by 2). Logits: ``lm_head(mean_t x) + final_logits_bias``.

Decoding (`encode`, `start`, `step`) reproduces the full `forward` exactly: neurons restart at every token, so the
decoder keeps a KV cache per spike step, and the cross-attention keys and values are computed once per source.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikecc.errors import CheckpointError
from spikecc.models.checkpoint import fmt_shape
from spikecc.models.spikelm import (
    ALPHA_EPS,
    THRESHOLD_MODES,
    ElasticBiSpike,
    _config_int,
    _need,
    _torch_load,
    bert_init,
)

FAMILY = "spikelm-bart"
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding: "Bart is set up so that if padding_idx is specified then offset
# the embedding ids by 2"; its table has max_position_embeddings + 2 rows

__all__ = [
    "FAMILY",
    "SpikeBart",
    "SpikeBartConfig",
    "SpikeBartState",
    "bart_key_map",
    "generate",
    "load_spikelm_bart",
    "random_bart_state_dict",
]


@dataclass
class SpikeBartConfig:
    """Sizes, spiking options and special tokens of a SpikeLM BART (Hugging Face config.json names in comments)."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int  # encoder_attention_heads
    decoder_heads: int  # decoder_attention_heads
    encoder_ffn: int  # encoder_ffn_dim
    decoder_ffn: int  # decoder_ffn_dim
    max_pos: int  # max_position_embeddings (the tables hold max_pos + 2 rows)
    T: int = 4
    k: float = 2.0
    threshold_mode: str = "code"
    leak: float = 0.25
    pre_ln: bool = False  # normalize_before (mBART)
    scale_embedding: bool = False  # embeddings times sqrt(d_model)
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2

    def __post_init__(self) -> None:
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ValueError(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        for heads, which in ((self.encoder_heads, "encoder"), (self.decoder_heads, "decoder")):
            if heads < 1 or self.d_model % heads:
                raise ValueError(f"d_model ({self.d_model}) must be a multiple of the {which} heads ({heads})")

    @property
    def embed_scale(self) -> float:
        return math.sqrt(self.d_model) if self.scale_embedding else 1.0


def _neuron(cfg: SpikeBartConfig, leak: float | None = None) -> ElasticBiSpike:
    return ElasticBiSpike(cfg.T, cfg.k, cfg.threshold_mode, cfg.leak if leak is None else leak)  # type: ignore[arg-type]


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, Lk) 1/0 mask -> (1, B, 1, 1, Lk) additive mask (Hugging Face's ``(1 - mask) * finfo.min``)."""
    if mask is None:
        return None
    return ((1.0 - mask.to(dtype)) * torch.finfo(dtype).min)[None, :, None, None, :]


class _Attention(nn.Module):
    """Spiking multi-head attention (self or encoder-decoder): ``out_proj(S_o(softmax(Q K^T dh^-0.5 + M) V))`` with
    ``Q = q_proj(S_q(x))``, ``K = S_K(k_proj(S_k(src)))``, ``V = S_V(v_proj(S_v(src)))``, per spike step and head."""

    def __init__(self, cfg: SpikeBartConfig, heads: int):
        super().__init__()
        d = cfg.d_model
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.q_in_spike, self.k_in_spike, self.v_in_spike, self.out_in_spike = (_neuron(cfg) for _ in range(4))
        self.k_spike, self.v_spike = _neuron(cfg, 0.0), _neuron(cfg, 0.0)

    def _heads(self, x: Tensor) -> Tensor:  # (T, B, L, d) -> (T, B, h, L, dh)
        T, B, L, d = x.shape
        return x.view(T, B, L, self.heads, d // self.heads).transpose(2, 3)

    def kv(self, src: Tensor, spikes: dict[str, Tensor] | None, prefix: str) -> tuple[Tensor, Tensor]:
        """Spiked keys and values of ``src`` (T, B, L, d), split into heads."""
        sk, sv = self.k_in_spike(src), self.v_in_spike(src)
        k, v = self.k_spike(self.k_proj(sk)), self.v_spike(self.v_proj(sv))
        if spikes is not None:
            spikes.update({f"{prefix}.k_in_spike": sk, f"{prefix}.v_in_spike": sv,
                           f"{prefix}.k_spike": k, f"{prefix}.v_spike": v})
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor], add_mask: Tensor | None,
                spikes: dict[str, Tensor] | None, prefix: str) -> Tensor:
        sq = self.q_in_spike(x)
        q = self._heads(self.q_proj(sq))
        dh = q.shape[-1]
        scores = (q @ kv[0].transpose(-1, -2)) * dh ** -0.5
        if add_mask is not None:
            scores = scores + add_mask
        ctx = torch.softmax(scores, dim=-1) @ kv[1]
        T, B, h, L, _ = ctx.shape
        so = self.out_in_spike(ctx.transpose(2, 3).reshape(T, B, L, h * dh))
        if spikes is not None:
            spikes.update({f"{prefix}.q_in_spike": sq, f"{prefix}.out_in_spike": so})
        return self.out_proj(so)


class _Layer(nn.Module):
    """One encoder (``cross=False``) or decoder layer: attention blocks and the spiking MLP, each with its LayerNorm
    (after the residual add, BART; before the branch, mBART)."""

    def __init__(self, cfg: SpikeBartConfig, heads: int, ffn: int, cross: bool):
        super().__init__()
        d, eps = cfg.d_model, cfg.layer_norm_eps
        self.pre_ln = cfg.pre_ln
        self.self_attn = _Attention(cfg, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        if cross:
            self.encoder_attn = _Attention(cfg, heads)
            self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.fc1_in_spike, self.fc2_in_spike = _neuron(cfg), _neuron(cfg)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)

    def _block(self, x: Tensor, norm: nn.LayerNorm, branch) -> Tensor:
        if self.pre_ln:
            return x + branch(norm(x))
        return norm(x + branch(x))

    def forward(self, x: Tensor, self_kv, self_mask: Tensor | None, cross_kv, cross_mask: Tensor | None,
                spikes: dict[str, Tensor] | None, prefix: str) -> Tensor:
        """``self_kv(h)`` gives the self-attention keys and values of the block's input h (so a decoder can prepend
        its cache); ``cross_kv`` the encoder-decoder ones (decoder only)."""
        x = self._block(x, self.self_attn_layer_norm,
                        lambda h: self.self_attn(h, self_kv(h), self_mask, spikes, f"{prefix}.self_attn"))
        if cross_kv is not None:
            x = self._block(x, self.encoder_attn_layer_norm,
                            lambda h: self.encoder_attn(h, cross_kv, cross_mask, spikes, f"{prefix}.encoder_attn"))
        return self._block(x, self.final_layer_norm, lambda h: self._mlp(h, spikes, prefix))

    def _mlp(self, x: Tensor, spikes: dict[str, Tensor] | None, prefix: str) -> Tensor:
        s1 = self.fc1_in_spike(x)
        s2 = self.fc2_in_spike(F.gelu(self.fc1(s1)))  # exact (erf) GELU: BART's "gelu"
        if spikes is not None:
            spikes.update({f"{prefix}.fc1_in_spike": s1, f"{prefix}.fc2_in_spike": s2})
        return self.fc2(s2)


class _Stack(nn.Module):
    """Encoder or decoder: positions, embedding LayerNorm, layers, and (mBART) the final LayerNorm."""

    def __init__(self, cfg: SpikeBartConfig, n_layer: int, heads: int, ffn: int, cross: bool):
        super().__init__()
        self.embed_positions = nn.Embedding(cfg.max_pos + POSITION_OFFSET, cfg.d_model)
        self.layernorm_embedding = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(_Layer(cfg, heads, ffn, cross) for _ in range(n_layer))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.pre_ln else None


@dataclass
class SpikeBartState:
    """Decoding state: the encoder output, its mask, per decoder layer the cross-attention keys and values (computed
    once) and the self-attention KV cache, each (T, 1, heads, length, dh)."""

    memory: Tensor
    mask: Tensor
    cross: list[tuple[Tensor, Tensor]]
    pos: int = 0
    cache: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)
    cross_spikes: dict[str, Tensor] = field(default_factory=dict)


class SpikeBart(nn.Module):
    """SpikeLM BART (module docstring). Spike names are the neurons' module paths, e.g.
    ``encoder.layers.0.self_attn.q_in_spike``, ``decoder.layers.1.encoder_attn.k_spike``,
    ``decoder.layers.1.fc2_in_spike``; ``state_dict()[name + ".alpha"]`` holds a neuron's per-step alphas."""

    def __init__(self, config: SpikeBartConfig):
        super().__init__()
        cfg = self.config = config
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder = _Stack(cfg, cfg.encoder_layers, cfg.encoder_heads, cfg.encoder_ffn, cross=False)
        self.decoder = _Stack(cfg, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ffn, cross=True)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, cfg.vocab_size))

    def spike_names(self) -> list[str]:
        return [n for n, m in self.named_modules() if isinstance(m, ElasticBiSpike)]

    def _embed(self, stack: _Stack, ids: Tensor, start: int) -> Tensor:
        cfg = self.config
        L = ids.shape[-1]
        if start + L > cfg.max_pos:
            raise ValueError(f"positions {start}..{start + L - 1} exceed the model's {cfg.max_pos} learned positions")
        pos = torch.arange(start, start + L, device=ids.device) + POSITION_OFFSET
        h = stack.layernorm_embedding(self.shared(ids) * cfg.embed_scale + stack.embed_positions(pos))
        return h.unsqueeze(0).expand(cfg.T, *h.shape)  # every token is presented for T spike steps

    @staticmethod
    def _readout(stack: _Stack, x: Tensor) -> Tensor:
        if stack.layer_norm is not None:
            x = stack.layer_norm(x)
        return x.mean(0)

    def encode(self, ids: Tensor, mask: Tensor | None = None,
               spikes: dict[str, Tensor] | None = None) -> Tensor:
        """Source ids (B, L) [and a 1/0 padding mask] -> encoder output (B, L, d), the mean over the T steps."""
        x = self._embed(self.encoder, ids, 0)
        add = _additive(mask, x.dtype)
        for i, layer in enumerate(self.encoder.layers):
            p = f"encoder.layers.{i}"
            x = layer(x, lambda h, layer=layer, p=p: layer.self_attn.kv(h, spikes, f"{p}.self_attn"), add, None, None,
                      spikes, p)
        return self._readout(self.encoder, x)

    def _cross_kv(self, memory: Tensor, spikes: dict[str, Tensor] | None) -> list[tuple[Tensor, Tensor]]:
        src = memory.unsqueeze(0).expand(self.config.T, *memory.shape)  # the encoder output, for T steps again
        return [layer.encoder_attn.kv(src, spikes, f"decoder.layers.{i}.encoder_attn")
                for i, layer in enumerate(self.decoder.layers)]

    def decode(self, ids: Tensor, memory: Tensor, mask: Tensor | None = None,
               spikes: dict[str, Tensor] | None = None) -> Tensor:
        """Teacher-forced decoder: target ids (B, Lt), encoder output (B, Ls, d) -> logits (B, Lt, vocab)."""
        x = self._embed(self.decoder, ids, 0)
        Lt = ids.shape[-1]
        causal = torch.full((Lt, Lt), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)
        cross = self._cross_kv(memory, spikes)
        add = _additive(mask, x.dtype)
        for i, layer in enumerate(self.decoder.layers):
            p = f"decoder.layers.{i}"
            x = layer(x, lambda h, layer=layer, p=p: layer.self_attn.kv(h, spikes, f"{p}.self_attn"), causal,
                      cross[i], add, spikes, p)
        return self.lm_head(self._readout(self.decoder, x)) + self.final_logits_bias

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor | None = None,
                return_spikes: bool = False) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        spikes: dict[str, Tensor] | None = {} if return_spikes else None
        logits = self.decode(tgt, self.encode(src, src_mask, spikes), src_mask, spikes)
        return (logits, spikes) if spikes is not None else logits

    # ---- incremental decoding ----
    def start(self, memory: Tensor, mask: Tensor | None = None) -> SpikeBartState:
        """Decoding state for one source (batch 1): its cross-attention keys and values, computed once."""
        spikes: dict[str, Tensor] = {}
        cross = self._cross_kv(memory, spikes)
        if mask is None:
            mask = torch.ones(memory.shape[:2], dtype=memory.dtype, device=memory.device)
        return SpikeBartState(memory, mask, cross, 0, [None] * len(cross), spikes)

    def step(self, token: int, state: SpikeBartState) -> tuple[Tensor, SpikeBartState, dict[str, Tensor]]:
        """One decoder token at position ``state.pos`` -> (logits (vocab,), new state, that token's spikes (T, n))."""
        ids = torch.tensor([[int(token)]], device=self.shared.weight.device)
        x = self._embed(self.decoder, ids, state.pos)
        spikes: dict[str, Tensor] = {}
        add = _additive(state.mask, x.dtype)
        cache: list[tuple[Tensor, Tensor] | None] = []
        for i, layer in enumerate(self.decoder.layers):
            p = f"decoder.layers.{i}"

            def self_kv(h, layer=layer, p=p, past=state.cache[i]):
                k, v = layer.self_attn.kv(h, spikes, f"{p}.self_attn")
                if past is not None:
                    k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
                cache.append((k, v))
                return k, v

            x = layer(x, self_kv, None, state.cross[i], add, spikes, p)
        logits = (self.lm_head(self._readout(self.decoder, x)) + self.final_logits_bias)[0, 0]
        new = SpikeBartState(state.memory, state.mask, state.cross, state.pos + 1, cache, state.cross_spikes)
        return logits, new, {n: s[:, 0, 0] for n, s in spikes.items()}


@torch.no_grad()
def generate(model: SpikeBart, tokenizer: Any, prompt: str, n_tokens: int) -> str:
    """Greedy (argmax) decoding of the source ``prompt``: the decoder starts from ``decoder_start_token_id`` and stops
    after ``n_tokens`` tokens or at ``eos_token_id``; returns the decoded target text (special tokens skipped)."""
    model.eval()
    return tokenizer.decode(greedy_ids(model, tokenizer.encode(prompt), n_tokens))


@torch.no_grad()
def greedy_ids(model: SpikeBart, src: list[int], n_tokens: int) -> list[int]:
    """The generated target ids (without the start token; the end token, if reached, excluded)."""
    if not src:
        raise ValueError("the source has no tokens")
    cfg = model.config
    dev = model.shared.weight.device
    memory = model.encode(torch.tensor([src], device=dev))
    state = model.start(memory)
    token, out = cfg.decoder_start_token_id, []
    for _ in range(n_tokens):
        logits, state, _ = model.step(token, state)
        token = int(torch.argmax(logits))
        if token == cfg.eos_token_id:
            break
        out.append(token)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints: Hugging Face BART keys plus SpikeLM's clip keys
# --------------------------------------------------------------------------------------------------------------------

_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj")
_IGNORED = re.compile(r".*\.weight_clip_val|.*position_ids|(model\.)?(encoder|decoder)\.embed_tokens\.weight"
                      r"|lm_head\.weight|final_logits_bias")


def bart_key_map(cfg: SpikeBartConfig, prefix: str = "model.") -> list[tuple[str, str, int | None, tuple[int, ...]]]:
    """Every key of a SpikeLM BART checkpoint: (checkpoint key, our state-dict key, spike step or None, shape).

    ``{prefix}shared.weight`` -> ``shared.weight``; ``{prefix}{encoder,decoder}.embed_positions.weight``,
    ``.layernorm_embedding.*``, (mBART) ``.layer_norm.*`` and ``.layers.{i}.<module>.{weight,bias}`` keep their names
    without the prefix; alphas: ``<layer>.<attn>.<q|k|v|out>_proj.act_clip_val.{t}`` -> ``<layer>.<attn>.<q|k|v|out>
    _in_spike.alpha[t]``, ``<layer>.fc{1,2}.act_clip_val.{t}`` -> ``<layer>.fc{1,2}_in_spike.alpha[t]``,
    ``<layer>.<attn>.clip_key.{t}`` / ``clip_value.{t}`` -> ``<layer>.<attn>.k_spike`` / ``v_spike.alpha[t]``.
    ``lm_head.weight`` (tied to ``shared`` by default), ``final_logits_bias`` and the ``embed_tokens`` copies of the
    shared table are optional (`load_spikelm_bart`).
    """
    d, V, P = cfg.d_model, cfg.vocab_size, cfg.max_pos + POSITION_OFFSET
    rows: list[tuple[str, str, int | None, tuple[int, ...]]] = [
        (f"{prefix}shared.weight", "shared.weight", None, (V, d))]

    def norm(key: str) -> None:
        rows.extend((f"{prefix}{key}.{w}", f"{key}.{w}", None, (d,)) for w in ("weight", "bias"))

    for stack, n_layer, ffn in (("encoder", cfg.encoder_layers, cfg.encoder_ffn),
                                ("decoder", cfg.decoder_layers, cfg.decoder_ffn)):
        rows.append((f"{prefix}{stack}.embed_positions.weight", f"{stack}.embed_positions.weight", None, (P, d)))
        norm(f"{stack}.layernorm_embedding")
        attns = ("self_attn", "encoder_attn") if stack == "decoder" else ("self_attn",)
        for i in range(n_layer):
            L = f"{stack}.layers.{i}"
            for attn in attns:
                for lin in _LINEARS:
                    rows.append((f"{prefix}{L}.{attn}.{lin}.weight", f"{L}.{attn}.{lin}.weight", None, (d, d)))
                    rows.append((f"{prefix}{L}.{attn}.{lin}.bias", f"{L}.{attn}.{lin}.bias", None, (d,)))
                norm(f"{L}.{attn}_layer_norm")
            for fc, shape in (("fc1", (ffn, d)), ("fc2", (d, ffn))):
                rows.append((f"{prefix}{L}.{fc}.weight", f"{L}.{fc}.weight", None, shape))
                rows.append((f"{prefix}{L}.{fc}.bias", f"{L}.{fc}.bias", None, shape[:1]))
            norm(f"{L}.final_layer_norm")
            for t in range(cfg.T):
                for attn in attns:
                    for lin in _LINEARS:
                        rows.append((f"{prefix}{L}.{attn}.{lin}.act_clip_val.{t}",
                                     f"{L}.{attn}.{lin[:-5]}_in_spike.alpha", t, ()))
                    rows.append((f"{prefix}{L}.{attn}.clip_key.{t}", f"{L}.{attn}.k_spike.alpha", t, ()))
                    rows.append((f"{prefix}{L}.{attn}.clip_value.{t}", f"{L}.{attn}.v_spike.alpha", t, ()))
                for fc in ("fc1", "fc2"):
                    rows.append((f"{prefix}{L}.{fc}.act_clip_val.{t}", f"{L}.{fc}_in_spike.alpha", t, ()))
        if cfg.pre_ln:
            norm(f"{stack}.layer_norm")
    return rows


def load_spikelm_bart(
    source: str | os.PathLike[str] | Mapping[str, Tensor],
    config: Mapping[str, Any] | None = None,
    threshold_mode: str = "code",
    dtype: torch.dtype = torch.float64,
) -> SpikeBart:
    """Build a SpikeLM BART from a checkpoint file or state dict in Hugging Face BART key layout plus clip keys
    (`bart_key_map`), ``model.``-prefixed (BartForConditionalGeneration) or not (BartModel).

    Sizes come from shapes; heads, special tokens, ``scale_embedding`` and ``normalize_before`` from ``config`` (a
    config.json) where given (heads default to d_model // 64; mBART's pre-LN is also recognised by its
    ``encoder.layer_norm`` keys). Only ``activation_function`` "gelu" is supported. ``lm_head.weight`` defaults to
    the shared table (BART ties them) and ``final_logits_bias`` to zeros. Every problem is a one-line
    `CheckpointError` naming the file (or "<state_dict>") and the key.
    """
    name = "<state_dict>" if isinstance(source, Mapping) else str(source)
    obj = source if isinstance(source, Mapping) else _torch_load(source)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name}: expected a state dict, found {type(obj).__name__}")
    sd = obj
    config = dict(config or {})
    prefix = "model." if "model.shared.weight" in sd else ""

    def need(key: str, ndim: int) -> Tensor:
        return _need(sd, key, ndim, name)

    V, d = need(f"{prefix}shared.weight", 2).shape
    P = need(f"{prefix}encoder.embed_positions.weight", 2).shape[0]

    def n_layers(stack: str) -> int:
        ids = {int(m.group(1)) for k in sd if isinstance(k, str)
               and (m := re.match(re.escape(f"{prefix}{stack}.layers.") + r"(\d+)\.", k))}
        return max(ids) + 1 if ids else 1  # none: the layer-0 lookups below name the missing key

    enc_layers, dec_layers = n_layers("encoder"), n_layers("decoder")
    enc_ffn = need(f"{prefix}encoder.layers.0.fc1.weight", 2).shape[0]
    dec_ffn = need(f"{prefix}decoder.layers.0.fc1.weight", 2).shape[0]
    T = 0
    while f"{prefix}encoder.layers.0.self_attn.clip_key.{T}" in sd:
        T += 1
    if T == 0:
        hint = (" (a plain BART without SpikeLM spike thresholds?)"
                if f"{prefix}encoder.layers.0.self_attn.q_proj.weight" in sd else "")
        raise CheckpointError(f"{name}: missing key '{prefix}encoder.layers.0.self_attn.clip_key.0'{hint}")
    act = config.get("activation_function", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{name}: config.json activation_function is {act!r}; only 'gelu' (BART's) is supported")
    heads = d // 64 if d >= 64 else 1
    try:
        cfg = SpikeBartConfig(
            vocab_size=int(V), d_model=int(d), encoder_layers=enc_layers, decoder_layers=dec_layers,
            encoder_heads=_config_int(config, "encoder_attention_heads", name, heads),
            decoder_heads=_config_int(config, "decoder_attention_heads", name, heads),
            encoder_ffn=int(enc_ffn), decoder_ffn=int(dec_ffn), max_pos=int(P) - POSITION_OFFSET, T=T,
            threshold_mode=threshold_mode,
            pre_ln=bool(config.get("normalize_before", f"{prefix}encoder.layer_norm.weight" in sd)),
            scale_embedding=bool(config.get("scale_embedding", False)),
            pad_token_id=_config_int(config, "pad_token_id", name, 1, minimum=0),
            bos_token_id=_config_int(config, "bos_token_id", name, 0, minimum=0),
            eos_token_id=_config_int(config, "eos_token_id", name, 2, minimum=0),
            decoder_start_token_id=_config_int(config, "decoder_start_token_id", name,
                                               config.get("eos_token_id", 2), minimum=0),
        )  # fmt: skip
    except ValueError as e:
        raise CheckpointError(f"{name}: {e}") from None
    with torch.device("meta"):
        model = SpikeBart(cfg)
    own: dict[str, Tensor] = {}
    rows = bart_key_map(cfg, prefix)
    alphas: dict[str, list[float]] = {}
    for key, own_key, t, shape in rows:
        v = need(key, len(shape))
        if t is None:
            if tuple(v.shape) != shape:
                raise CheckpointError(
                    f"{name}: key '{key}' has shape {fmt_shape(v.shape)}, expected {fmt_shape(shape)}")
            own[own_key] = v.detach().to(dtype)
        else:
            if not bool(torch.isfinite(v).all()):
                raise CheckpointError(f"{name}: key '{key}' holds a non-finite alpha ({float(v)})")
            alphas.setdefault(own_key, [1.0] * T)[t] = max(float(v), ALPHA_EPS)
    for own_key, values in alphas.items():
        own[own_key] = torch.tensor(values, dtype=dtype)
        own[own_key.removesuffix(".alpha") + ".calibrated"] = torch.tensor(True)
    head = sd.get("lm_head.weight", sd[f"{prefix}shared.weight"])
    if not isinstance(head, Tensor) or tuple(head.shape) != (V, d):
        raise CheckpointError(f"{name}: key 'lm_head.weight' has shape {fmt_shape(getattr(head, 'shape', ()))}, "
                              f"expected {fmt_shape((V, d))}")
    own["lm_head.weight"] = head.detach().to(dtype)
    bias = sd.get("final_logits_bias", torch.zeros(1, V))
    if not isinstance(bias, Tensor) or bias.numel() != V:
        raise CheckpointError(f"{name}: key 'final_logits_bias' has shape {fmt_shape(getattr(bias, 'shape', ()))}, "
                              f"expected {fmt_shape((1, V))}")
    own["final_logits_bias"] = bias.detach().reshape(1, V).to(dtype)
    for stack in ("encoder", "decoder"):
        tied = sd.get(f"{prefix}{stack}.embed_tokens.weight")
        if tied is not None and (not isinstance(tied, Tensor) or tuple(tied.shape) != (V, d)):
            raise CheckpointError(f"{name}: key '{prefix}{stack}.embed_tokens.weight' has shape "
                                  f"{fmt_shape(getattr(tied, 'shape', ()))}, expected {fmt_shape((V, d))}")
    known = {r[0] for r in rows}
    for key in sd:
        if key not in known and not (isinstance(key, str) and _IGNORED.fullmatch(key)):
            raise CheckpointError(f"{name}: unexpected key '{key}' (not part of a SpikeLM BART with {T} spike steps)")
    model.load_state_dict(own, strict=True, assign=True)
    return model.eval()


def random_bart_state_dict(
    vocab: int = 50265,
    d_model: int = 768,
    encoder_layers: int = 6,
    decoder_layers: int = 6,
    ffn: int = 3072,
    max_pos: int = 1024,
    heads: int | None = None,
    T: int = 4,
    seed: int = 0,
    pre_ln: bool = False,
    tied: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """A random SpikeLM BART checkpoint (BART-base sizes by default) in the ``model.``-prefixed Hugging Face layout
    with clip keys and ``final_logits_bias`` zero; alphas calibrated (paper Eq. 10, code thresholds) on one random
    source and target of 8 tokens. Weights ~ N(0, 0.02), LayerNorm 1/0 (BART's init). ``lm_head.weight`` is the
    shared table (``tied``, as BART's) or a random matrix of its own (a random tied model mostly predicts the token it
    was fed, so its greedy text is the end token at once)."""
    g = torch.Generator().manual_seed(seed)
    h = heads or (d_model // 64 if d_model >= 64 else 1)
    cfg = SpikeBartConfig(vocab, d_model, encoder_layers, decoder_layers, h, h, ffn, ffn, max_pos, T=T, pre_ln=pre_ln)
    model = SpikeBart(cfg).to(dtype)
    bert_init(model, g)  # BART's init is BERT's (init_std 0.02)
    with torch.no_grad():
        if tied:
            model.lm_head.weight = model.shared.weight
        src = torch.randint(0, vocab, (1, 8), generator=g)
        tgt = torch.randint(0, vocab, (1, 8), generator=g)
        model(src, tgt)  # calibrates every neuron on this first batch
    own = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, own_key, t, _ in bart_key_map(cfg):
        out[key] = (own[own_key][t] if t is not None else own[own_key]).detach().clone()
    out["model.encoder.embed_tokens.weight"] = out["model.shared.weight"]
    out["model.decoder.embed_tokens.weight"] = out["model.shared.weight"]
    out["lm_head.weight"] = out["model.shared.weight"] if tied else model.lm_head.weight.detach().clone()
    out["final_logits_bias"] = torch.zeros(1, vocab, dtype=dtype)
    return out
