"""SpikeLM BART (`spikecc.models.spikelm_bart.SpikeBart`) -> IR graph: an encoder part and a decoder part.

ONE SIMULATOR STEP = ONE SPIKE STEP, as for the other SpikeLM graphs (``substeps = T``). The graph holds two parts
that share no edge; the host passes the encoder's output to the decoder, once per source (graph metadata
``seq2seq`` names the nodes, `spikecc.backends.cpu.seq2seq_runner` runs the protocol):

* encoder: Inputs ``input_ids`` and ``attention_mask`` (source_len,), the source padded with ``pad_token_id`` and
  its 1/0 mask, fed for T steps; Output ``encoder_hidden`` (source_len, d), the mean over the T steps (valid at the
  last one). Per layer (post-LN; ``normalize_before`` models are pre-LN), with h the (source_len, d) rows::

      q = self_attn.q_proj(self_attn.q_in_spike(h));  k = self_attn.k_spike(self_attn.k_proj(self_attn.k_in_spike(h)))
      v likewise;  c = self_attn.attend(q, k, v, attention_mask)                               # SelfAttention
      h = self_attn_layer_norm(self_attn.res(h + self_attn.out_proj(self_attn.out_in_spike(c))))
      h = final_layer_norm(mlp_res(h + fc2(fc2_in_spike(gelu(fc1(fc1_in_spike(h)))))))

* decoder: Inputs ``token`` (1,), fed for the T steps of its token, ``memory`` (source_len, d) and ``memory_mask``
  (source_len,), the encoder's output and the source mask, fed at every step; Output ``logits`` (vocab,), valid at
  the token's last step. Per layer: causal self-attention (`CausalSelfAttention`, a KV cache per spike step),
  encoder-decoder attention (`CrossAttention`: the query of this token, keys and values spiked from ``memory``
  through ``encoder_attn.k_in_spike`` / ``k_proj`` / ``k_spike`` and the V path), the MLP; then
  ``lm_head(mean) + final_logits_bias`` (one Affine).

Embeddings: ``layernorm_embedding(embed_tokens(ids) + embed_positions)`` with the shared table times ``embed_scale``
and BART's positions offset by 2. Node names are the reference's module paths (``encoder.layers.0.self_attn.
q_in_spike`` ...), so simulated spikes line up with the reference's. Weights are copied in float64.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.frontends.builder import to_numpy
from spikecc.compiler.frontends.spikelm import _check_calibrated, _SpikeLMBuilder
from spikecc.ir import Graph
from spikecc.ir.lm_ops import GELU, Embedding
from spikecc.ir.spikelm_ops import CausalSelfAttention, CrossAttention, PositionEmbedding, SelfAttention, TokenMean

BART_FAMILY = "spikelm-bart"
BART_SOURCE_LEN = 64  # the source length `load_lm` exports for (prompts are padded to it and masked)
OFFSET = 2  # BART's learned positions start at row 2

#: Node names of the two parts (graph metadata "seq2seq"), read by the runner.
PARTS = {"source": "input_ids", "source_mask": "attention_mask", "encoder_output": "encoder_hidden",
         "token": "token", "memory": "memory", "memory_mask": "memory_mask", "logits": "logits"}


def export_spikelm_bart(model, source_len: int = BART_SOURCE_LEN, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a SpikeLM BART for sources of ``source_len`` tokens (see the module docstring)."""
    cfg = model.config
    source_len = min(int(source_len), cfg.max_pos)
    if source_len < 1:
        raise ValueError(f"source_len must be >= 1, got {source_len}")
    _check_calibrated(model)
    d, T = cfg.d_model, int(cfg.T)
    g = Graph(metadata={
        "dt": dt, "family": BART_FAMILY, "substeps": T, "step": "spike", "T": T, "seq_len": source_len,
        "d_model": d, "vocab_size": cfg.vocab_size, "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers, "encoder_heads": cfg.encoder_heads, "decoder_heads": cfg.decoder_heads,
        "context": cfg.max_pos, "pre_ln": bool(cfg.pre_ln), "threshold_mode": cfg.threshold_mode,
        "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id, "seq2seq": dict(PARTS)})
    b = _SpikeLMBuilder(g, dt)
    table = to_numpy(model.shared.weight) * cfg.embed_scale  # E[ids] * embed_scale, folded into the table
    part = PARTS

    def block(x: str, size: int, name: str, norm, branch) -> str:
        """Post-LN ``norm(x + branch(x))`` or pre-LN ``x + branch(norm(x))``; `size` of the residual Scale."""
        if cfg.pre_ln:
            return b.residual(f"{name}.res", size, x, branch(b.layer_norm(f"{name}_layer_norm", norm, x)))
        return b.layer_norm(f"{name}_layer_norm", norm, b.residual(f"{name}.res", size, x, branch(x)))

    def mlp(p: str, layer, size: int, x: str) -> str:
        def branch(h: str) -> str:
            f = b.linear(f"{p}.fc1", layer.fc1, b.spike(f"{p}.fc1_in_spike", layer.fc1_in_spike, h))
            f = b.node(f"{p}.gelu", GELU(), f)
            return b.linear(f"{p}.fc2", layer.fc2, b.spike(f"{p}.fc2_in_spike", layer.fc2_in_spike, f))

        # the MLP's LayerNorm is BART's `final_layer_norm`: name the block after it
        return block(x, size, f"{p}.final", layer.final_layer_norm, branch)

    def kv(p: str, attn, src: str) -> tuple[str, str]:
        k = b.linear(f"{p}.k_proj", attn.k_proj, b.spike(f"{p}.k_in_spike", attn.k_in_spike, src))
        v = b.linear(f"{p}.v_proj", attn.v_proj, b.spike(f"{p}.v_in_spike", attn.v_in_spike, src))
        return b.spike(f"{p}.k_spike", attn.k_spike, k), b.spike(f"{p}.v_spike", attn.v_spike, v)

    def attention(p: str, attn, op, h: str, kv_src: str | None, **extra: str) -> str:
        q = b.linear(f"{p}.q_proj", attn.q_proj, b.spike(f"{p}.q_in_spike", attn.q_in_spike, h))
        k, v = kv(p, attn, kv_src if kv_src is not None else h)
        c = b.ports(f"{p}.attend", op, q=q, k=k, v=v, **extra)
        return b.linear(f"{p}.out_proj", attn.out_proj, b.spike(f"{p}.out_in_spike", attn.out_in_spike, c))

    # ---- encoder part
    enc = model.encoder
    src = b.sequence_input(part["source"], source_len, cfg.vocab_size)
    mask = b.sequence_input(part["source_mask"], source_len, 2)
    tok = b.node("encoder.embed_tokens", Embedding(weight=table), src)
    pos = b.node("encoder.embed_positions", PositionEmbedding(
        weight=to_numpy(enc.embed_positions.weight[OFFSET:OFFSET + source_len]), T=T, mode="sequence"), src)
    h = b.layer_norm("encoder.layernorm_embedding", enc.layernorm_embedding, tok)
    g.connect(pos, h)  # E[ids] * scale + positions, the reference's order
    for i, layer in enumerate(enc.layers):
        p = f"encoder.layers.{i}"
        op = SelfAttention(n_head=int(cfg.encoder_heads), masked=True)
        h = block(h, 1, f"{p}.self_attn", layer.self_attn_layer_norm,
                  lambda x, p=p, layer=layer, op=op: attention(f"{p}.self_attn", layer.self_attn, op, x, None,
                                                               mask=mask))
        h = mlp(p, layer, 1, h)
    if enc.layer_norm is not None:
        h = b.layer_norm("encoder.layer_norm", enc.layer_norm, h)
    b.node("encoder.mean", TokenMean(T=T), h)
    b.node(part["encoder_output"], nir.Output(output_type={"output": np.array([source_len, d])}), "encoder.mean")

    # ---- decoder part
    dec = model.decoder
    token = b.token_input(part["token"], cfg.vocab_size)
    memory = part["memory"]
    g.add_node(memory, nir.Input(input_type={"input": np.array([source_len, d])}))
    memory_mask = b.sequence_input(part["memory_mask"], source_len, 2)
    tok = b.node("decoder.embed_tokens", Embedding(weight=table), token)
    pos = b.node("decoder.embed_positions", PositionEmbedding(
        weight=to_numpy(dec.embed_positions.weight[OFFSET:]), T=T, mode="stream"), token)
    h = b.layer_norm("decoder.layernorm_embedding", dec.layernorm_embedding, tok)
    g.connect(pos, h)
    for i, layer in enumerate(dec.layers):
        p = f"decoder.layers.{i}"
        self_op = CausalSelfAttention(n_head=int(cfg.decoder_heads), T=T)
        h = block(h, d, f"{p}.self_attn", layer.self_attn_layer_norm,
                  lambda x, p=p, layer=layer, op=self_op: attention(f"{p}.self_attn", layer.self_attn, op, x, None))
        cross_op = CrossAttention(n_head=int(cfg.decoder_heads))
        h = block(h, d, f"{p}.encoder_attn", layer.encoder_attn_layer_norm,
                  lambda x, p=p, layer=layer, op=cross_op: attention(f"{p}.encoder_attn", layer.encoder_attn, op, x,
                                                                     memory, mask=memory_mask))
        h = mlp(p, layer, d, h)
    if dec.layer_norm is not None:
        h = b.layer_norm("decoder.layer_norm", dec.layer_norm, h)
    m = b.node("decoder.mean", TokenMean(T=T), h)
    b.node("lm_head", nir.Affine(weight=to_numpy(model.lm_head.weight),
                                 bias=to_numpy(model.final_logits_bias).reshape(-1)), m)
    b.output(part["logits"], cfg.vocab_size, "lm_head")
    return g
