"""SpikeLM's BART as the authors' code would run it, re-implemented here from that code, on a Hugging Face BART
state dict with SpikeLM's clip keys; float64, whole sequences (no cache), one function per module.

Sources:
* ``spikeLM-BERT/spiking.py`` (github.com/Xingrun-Xing/SpikeLM): ``SpikeLinear.forward`` runs the membrane over the
  T steps, ``mem = input[0]`` then ``mem = mem_old * 0.25 * (act_clip_val[i-1] - output[i-1]) + input[i]``, and
  ``ElasticBiSpiking.forward`` spikes ``(mem / alpha).round().clamp(-1, 1) * alpha`` with ``alpha`` at least 1e-5;
  then ``linear(output, weight) + bias``;
* ``spikeLM-BERT/spike_bert.py``: keys and values spiked step by step with ``clip_key[i]`` / ``clip_value[i]`` and no
  membrane; the additive mask ``attention_mask.unsqueeze(0)`` on the scores; ``hidden_states.repeat(T, ...)`` in and
  ``hidden_states.mean(0)`` out of the encoder;
* ``transformers/models/bart/modeling_bart.py``: ``BartAttention`` (``q_proj(x) * head_dim**-0.5``, softmax of
  ``q k^T + mask``, ``out_proj``), the post-LN encoder and decoder layers, ``BartLearnedPositionalEmbedding``
  (positions + 2), ``layernorm_embedding``, ``lm_head(x) + final_logits_bias``; the causal mask ``finfo.min`` above
  the diagonal; ``generate``'s greedy search from ``decoder_start_token_id`` without a cache (the whole prefix again
  for every token).

The encoder output (the mean over T) feeds the cross-attention's K/V SpikeLinears repeated over the T steps, and the
decoder's mean over T feeds ``lm_head`` (spikecc's reading of how the BERT code's T axis carries over to BART).

Spikes are keyed by the checkpoint module they come from: ``<...>.q_proj`` (the input spikes of q_proj),
``<...>.self_attn.clip_key`` (the spiked keys), ``<...>.fc1`` ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


class Ref:
    def __init__(self, sd: dict[str, torch.Tensor], heads: int, T: int = 4, prefix: str = "model.",
                 embed_scale: float = 1.0):
        self.w = {k: v.detach().to(torch.float64) for k, v in sd.items()}
        self.p, self.heads, self.T, self.embed_scale = prefix, heads, T, embed_scale
        self.pre_ln = f"{prefix}encoder.layer_norm.weight" in self.w  # mBART (modeling_mbart.py): pre-LN
        self.spikes: dict[str, list[torch.Tensor]] = {}

    def alpha(self, key: str, i: int) -> torch.Tensor:
        a = self.w[f"{key}.{i}"]
        return torch.where(a > EPS, a, torch.tensor(EPS, dtype=a.dtype))

    def record(self, name: str, s: torch.Tensor) -> None:
        self.spikes.setdefault(name, []).append(s)

    def spike_linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """spiking.py SpikeLinear on x (T, B, L, n)."""
        out = torch.zeros_like(x)
        mem_old = None
        for i in range(self.T):
            if i == 0:
                mem = x[0]
            else:
                mem = mem_old * 0.25 * (self.w[f"{name}.act_clip_val.{i - 1}"] - out[i - 1]) + x[i]
            a = self.alpha(f"{name}.act_clip_val", i)
            out[i] = (mem / a).round().clamp(-1, 1) * a
            mem_old = mem.clone()
        self.record(name, out)
        return F.linear(out, self.w[f"{name}.weight"]) + self.w[f"{name}.bias"]

    def spike_kv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """spike_bert.py's act_quantizer_k / _v: each step spiked with its own clip value, no membrane."""
        out = torch.cat([(x[i:i + 1] / self.alpha(name, i)).round().clamp(-1, 1) * self.alpha(name, i)
                         for i in range(self.T)], dim=0)
        self.record(name, out)
        return out

    def ln(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], 1e-5)

    def attention(self, name: str, x: torch.Tensor, src: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        T, B, Lq, d = x.shape
        Lk = src.shape[2]
        dh = d // self.heads
        q = self.spike_linear(f"{name}.q_proj", x) * dh ** -0.5
        k = self.spike_kv(f"{name}.clip_key", self.spike_linear(f"{name}.k_proj", src))
        v = self.spike_kv(f"{name}.clip_value", self.spike_linear(f"{name}.v_proj", src))

        def split(t, n):
            return t.view(T, B, n, self.heads, dh).permute(0, 1, 3, 2, 4)

        scores = split(q, Lq) @ split(k, Lk).transpose(-1, -2)
        if mask is not None:
            scores = scores + mask.unsqueeze(0)
        ctx = (torch.softmax(scores, dim=-1) @ split(v, Lk)).permute(0, 1, 3, 2, 4).reshape(T, B, Lq, d)
        return self.spike_linear(f"{name}.out_proj", ctx)

    def mlp(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.spike_linear(f"{name}.fc2", F.gelu(self.spike_linear(f"{name}.fc1", x)))

    def embed(self, stack: str, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1]) + 2
        tokens = self.w[f"{self.p}shared.weight"][ids] * self.embed_scale
        h = tokens + self.w[f"{self.p}{stack}.embed_positions.weight"][pos]
        h = self.ln(f"{self.p}{stack}.layernorm_embedding", h)
        return h.repeat(self.T, 1, 1, 1)

    def n_layers(self, stack: str) -> int:
        return 1 + max(int(k.split(".")[3]) for k in self.w if k.startswith(f"{self.p}{stack}.layers."))

    @staticmethod
    def extended(mask: torch.Tensor) -> torch.Tensor:
        """(B, L) 1/0 -> (B, 1, 1, L) additive mask, Hugging Face's (1 - mask) * finfo.min."""
        return ((1.0 - mask.double()) * torch.finfo(torch.float64).min)[:, None, None, :]

    @torch.no_grad()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed("encoder", ids)
        add = self.extended(mask) if mask is not None else None
        for i in range(self.n_layers("encoder")):
            L = f"{self.p}encoder.layers.{i}"
            x = self.block(f"{L}.self_attn_layer_norm", x, lambda h, L=L: self.attention(f"{L}.self_attn", h, h, add))
            x = self.block(f"{L}.final_layer_norm", x, lambda h, L=L: self.mlp(L, h))
        return self.final("encoder", x).mean(0)

    def block(self, norm: str, x: torch.Tensor, branch) -> torch.Tensor:
        """BART: LN(x + branch(x)); mBART: x + branch(LN(x))."""
        return x + branch(self.ln(norm, x)) if self.pre_ln else self.ln(norm, x + branch(x))

    def final(self, stack: str, x: torch.Tensor) -> torch.Tensor:
        return self.ln(f"{self.p}{stack}.layer_norm", x) if self.pre_ln else x

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed("decoder", ids)
        Lt = ids.shape[1]
        causal = torch.full((Lt, Lt), torch.finfo(torch.float64).min, dtype=torch.float64).triu(1)[None, None]
        add = self.extended(mask) if mask is not None else None
        src = memory.repeat(self.T, 1, 1, 1)
        for i in range(self.n_layers("decoder")):
            L = f"{self.p}decoder.layers.{i}"
            x = self.block(f"{L}.self_attn_layer_norm", x,
                           lambda h, L=L: self.attention(f"{L}.self_attn", h, h, causal))
            x = self.block(f"{L}.encoder_attn_layer_norm", x,
                           lambda h, L=L: self.attention(f"{L}.encoder_attn", h, src, add))
            x = self.block(f"{L}.final_layer_norm", x, lambda h, L=L: self.mlp(L, h))
        head = self.w.get("lm_head.weight", self.w[f"{self.p}shared.weight"])
        return F.linear(self.final("decoder", x).mean(0), head) + self.w["final_logits_bias"]

    @torch.no_grad()
    def greedy(self, src: list[int], n: int, start: int = 2, eos: int = 2) -> list[int]:
        """HF greedy search without a cache: the whole decoder prefix again for every new token."""
        memory = self.encode(torch.tensor([src]))
        ids = [start]
        for _ in range(n):
            nxt = int(torch.argmax(self.decode(torch.tensor([ids]), memory)[0, -1]))
            if nxt == eos:
                break
            ids.append(nxt)
        return ids[1:]


def spikecc_name(ref_name: str) -> str:
    """The spikecc neuron a reference spike key belongs to: ``...q_proj`` -> ``...q_in_spike``, ``...fc1`` ->
    ``...fc1_in_spike``, ``...clip_key`` -> ``...k_spike`` (the checkpoint prefix dropped)."""
    name = ref_name.removeprefix("model.")
    head, _, last = name.rpartition(".")
    if last.endswith("_proj"):
        return f"{head}.{last[:-5]}_in_spike"
    if last in ("fc1", "fc2"):
        return f"{head}.{last}_in_spike"
    kv = {"clip_key": "k_spike", "clip_value": "v_spike"}
    return f"{head}.{kv[last]}"
