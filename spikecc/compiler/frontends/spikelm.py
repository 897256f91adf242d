"""SpikeLM -> IR graph: the SpikeLM-style causal decoder (`export_spikelm`) and the BERT-layout encoder
(`export_spikelm_bert`); the BART encoder-decoder is in `spikelm_bart`.

ONE SIMULATOR STEP = ONE SPIKE STEP. SpikeLM presents every token for T spike steps and restarts its neurons at
every token, so a token occupies T consecutive simulator steps (metadata ``substeps = T``); the token id (or the
id sequence) is fed at every one of them and the output is read at the token's last step. The ops that depend on
the spike step t = step mod T are SpikeLM's own (spikecc.ir.spikelm_ops): `ElasticBiSpike`, `CausalSelfAttention`
(one KV cache per spike step), `SelfAttention`, `PositionEmbedding` and `TokenMean`. The rest are standard NIR
nodes (`nir.Affine` for every linear, bias included; `nir.Scale` of ones as a residual sum: edges into one port are
summed) and spikecc's `Embedding`, `LayerNorm`, `GELU`.

SpikeLM-style causal decoder (`SpikeLM`, pre-LN), per layer i with x the residual stream (``emb`` = tok_emb + pos_emb
before layer 0):

    a  = layers.i.ln1(x)
    s  = layers.i.attn.in_spike(a)                                    # ElasticBiSpike, beta = leak
    q  = layers.i.attn.query(s);  k = layers.i.attn.k_spike(layers.i.attn.key(s))        # k_spike, v_spike: beta = 0
                                  v = layers.i.attn.v_spike(layers.i.attn.value(s))
    c  = layers.i.attn.attend(q, k, v)                                # CausalSelfAttention
    x  = layers.i.res1(x + layers.i.attn.out(layers.i.attn.out_in_spike(c)))
    f  = layers.i.mlp.out_in_spike(layers.i.mlp.gelu(layers.i.mlp.fc1(layers.i.mlp.in_spike(layers.i.ln2(x)))))
    x  = layers.i.res2(x + layers.i.mlp.fc2(f))
    logits = head(ln_f(mean(x)))                                      # mean: TokenMean over the token's T steps

BERT-layout encoder (`SpikeBertEncoder`, post-LN; the whole sequence of L ids at every step, (L, hidden) rows;
three Inputs: input_ids, token_type_ids and attention_mask, each (L,)):

    e  = embeddings.ln(embeddings.word(input_ids) + embeddings.token_type(token_type_ids) + embeddings.position(ids))
    per layer i:  q = attn.query(attn.q_in_spike(h)),  k = attn.k_spike(attn.key(attn.k_in_spike(h))),
                  v = attn.v_spike(attn.value(attn.v_in_spike(h)))
                  a = attn.ln(attn.res(attn.out(attn.out_in_spike(attn.attend(q, k, v, attention_mask))) + h))
                  h = mlp.ln(mlp.res(mlp.fc2(mlp.out_in_spike(mlp.gelu(mlp.fc1(mlp.in_spike(a))))) + a))
    hidden = mean(h)                                                  # read at the last of the T steps

Spiking nodes carry the reference's spike names (``layers.{i}.attn.in_spike`` ...), so a simulator's spikes line
up with `SpikeLM.step(...)[2]` and `SpikeBertEncoder(..., return_spikes=True)[1]`. Weights are copied in float64.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.compiler.frontends.builder import LMGraphBuilder, to_numpy
from spikecc.errors import CheckpointError
from spikecc.ir import Graph
from spikecc.ir.lm_ops import GELU, Embedding
from spikecc.ir.spikelm_ops import CausalSelfAttention, ElasticBiSpike, PositionEmbedding, SelfAttention, TokenMean

FAMILY = "spikelm"
BERT_FAMILY = "spikelm-bert"
BERT_SEQ_LEN = 128  # the sequence length `load_lm` exports encoders for (BERT's and SpikeLM's pre-training length)


class _SpikeLMBuilder(LMGraphBuilder):
    """The shared builder plus SpikeLM's neuron and a sequence input."""

    def spike(self, name: str, neuron, src: str) -> str:
        """A reference `ElasticBiSpike` module -> the `ElasticBiSpike` op (its frozen per-step alphas, its leak)."""
        try:
            op = ElasticBiSpike(T=int(neuron.T), alpha=to_numpy(neuron.alpha), leak=float(neuron.leak),
                                threshold_mode=str(neuron.threshold_mode))
        except ValueError as exc:  # e.g. a non-positive alpha: name the layer it belongs to
            raise CheckpointError(f"layer '{name}': {exc}; the spike amplitudes must be positive") from None
        return self.node(name, op, src)

    def sequence_input(self, name: str, length: int, vocab_size: int) -> str:
        """An Input of `length` token ids (shape (length,)), annotated like `token_input`."""
        self.g.add_node(name, nir.Input(input_type={"input": np.array([length])}))
        self.g.annotate(name, signal={"kind": "graded", "bits": int(np.ceil(np.log2(max(2, vocab_size)))),
                                      "scale": 1.0, "amplitude": 1.0})
        return name


def _check_calibrated(model) -> None:
    from spikecc.models.spikelm import ElasticBiSpike as TorchSpike

    raw = [n for n, m in model.named_modules() if isinstance(m, TorchSpike) and not bool(m.calibrated)]
    if raw:
        # an uncalibrated reference neuron would calibrate alpha on the first input it sees; the graph has fixed
        # alphas, so it cannot follow: refuse rather than export alphas of 1 that the reference would not use
        raise ValueError(f"neuron '{raw[0]}' is not calibrated (alpha not frozen yet); run one batch through the "
                         "model (spikecc.models.spikelm.recalibrate) before exporting")


def export_spikelm(model, vocab_chars: str, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a SpikeLM-style causal decoder (`spikecc.models.spikelm.SpikeLM`; see the module
    docstring for the layout).

    Input ``token`` (one id, fed at each of the T steps of its token); Output ``logits`` (vocab,), valid at the
    token's last step. Positions advance every T steps; past ``context`` tokens the graph raises
    `ContextLengthError`, as the reference's `step` raises ValueError.
    """
    cfg = model.config
    if len(vocab_chars) != cfg.vocab_size:
        raise ValueError(f"vocab has {len(vocab_chars)} characters, the model expects {cfg.vocab_size}")
    _check_calibrated(model)
    d, T = cfg.d_model, int(cfg.T)
    g = Graph(metadata={"dt": dt, "family": FAMILY, "vocab": str(vocab_chars), "substeps": T, "step": "spike",
                        "T": T, "n_layer": cfg.n_layer, "d_model": d, "n_head": cfg.n_head, "d_ff": cfg.d_ff,
                        "context": cfg.context, "vocab_size": cfg.vocab_size, "threshold_mode": cfg.threshold_mode,
                        "leak": float(cfg.leak), "k": float(cfg.k)})
    b = _SpikeLMBuilder(g, dt)
    tok = b.token_input("token", cfg.vocab_size)
    b.node("tok_emb", Embedding(weight=to_numpy(model.tok_emb.weight)), tok)
    # the token id only paces the position table: position = step // T
    b.node("pos_emb", PositionEmbedding(weight=to_numpy(model.pos_emb.weight), T=T, mode="stream"), tok)
    x = b.residual("emb", d, "tok_emb", "pos_emb")  # tok_emb[id] + pos_emb[p], the reference's h_0

    for i, layer in enumerate(model.layers):
        p = f"layers.{i}"
        at, mlp = layer.attn, layer.mlp
        s = b.spike(f"{p}.attn.in_spike", at.in_spike, b.layer_norm(f"{p}.ln1", layer.ln1, x))
        q = b.linear(f"{p}.attn.query", at.query, s)  # Q stays real
        k = b.spike(f"{p}.attn.k_spike", at.k_spike, b.linear(f"{p}.attn.key", at.key, s))
        v = b.spike(f"{p}.attn.v_spike", at.v_spike, b.linear(f"{p}.attn.value", at.value, s))
        c = b.ports(f"{p}.attn.attend", CausalSelfAttention(n_head=int(at.n_head), T=T), q=q, k=k, v=v)
        o = b.linear(f"{p}.attn.out", at.out, b.spike(f"{p}.attn.out_in_spike", at.out_in_spike, c))
        x = b.residual(f"{p}.res1", d, x, o)

        s1 = b.spike(f"{p}.mlp.in_spike", mlp.in_spike, b.layer_norm(f"{p}.ln2", layer.ln2, x))
        h = b.node(f"{p}.mlp.gelu", GELU(), b.linear(f"{p}.mlp.fc1", mlp.fc1, s1))
        f = b.linear(f"{p}.mlp.fc2", mlp.fc2, b.spike(f"{p}.mlp.out_in_spike", mlp.out_in_spike, h))
        x = b.residual(f"{p}.res2", d, x, f)

    m = b.node("mean", TokenMean(T=T), x)
    b.linear("head", model.head, b.layer_norm("ln_f", model.ln_f, m))
    b.output("logits", cfg.vocab_size, "head")
    return g


def export_spikelm_bert(encoder, seq_len: int, dt: float = 1e-4) -> Graph:
    """Build the IR graph of a `spikecc.models.spikelm.SpikeBertEncoder` for sequences of ``seq_len`` tokens.

    Inputs ``input_ids``, ``token_type_ids`` (segment ids of a sentence pair; zeros for one sentence) and
    ``attention_mask`` (1 for a token, 0 for padding), each (seq_len,) and fed at each of the T steps; Output
    ``hidden`` (seq_len, hidden): the last hidden states ``mean_t h[t]``, valid at the last of the T steps (every
    further T steps take a new sequence). Padded keys get no attention weight (`SelfAttention`), so a padded
    sequence gives the unpadded sequence's hidden states on its real tokens. The pooler (real, after the encoder) is
    not part of the graph.
    """
    cfg = encoder.config
    seq_len = int(seq_len)
    if not 1 <= seq_len <= cfg.max_pos:
        raise ValueError(f"seq_len must be in 1..{cfg.max_pos} (the learned positions), got {seq_len}")
    _check_calibrated(encoder)
    H, T = cfg.hidden, int(cfg.T)
    g = Graph(metadata={"dt": dt, "family": BERT_FAMILY, "substeps": T, "step": "spike", "T": T,
                        "seq_len": seq_len, "n_layer": cfg.n_layer, "hidden": H, "num_heads": cfg.num_heads,
                        "intermediate": cfg.intermediate, "vocab_size": cfg.vocab_size, "max_pos": cfg.max_pos,
                        "threshold_mode": cfg.threshold_mode, "leak": float(cfg.leak), "k": float(cfg.k)})
    b = _SpikeLMBuilder(g, dt)
    ids = b.sequence_input("input_ids", seq_len, cfg.vocab_size)
    type_ids = b.sequence_input("token_type_ids", seq_len, cfg.type_vocab)
    mask = b.sequence_input("attention_mask", seq_len, 2)
    emb = encoder.embeddings
    word = b.node("embeddings.word", Embedding(weight=to_numpy(emb.word.weight)), ids)
    ttype = b.node("embeddings.token_type", Embedding(weight=to_numpy(emb.token_type.weight)), type_ids)
    pos = b.node("embeddings.position",
                 PositionEmbedding(weight=to_numpy(emb.position.weight[:seq_len]), T=T, mode="sequence"), ids)
    # summed in this edge order: (word + token_type) + position, the reference's order of additions
    h = b.layer_norm("embeddings.ln", emb.ln, word)
    g.connect(ttype, h)
    g.connect(pos, h)

    for i, layer in enumerate(encoder.layers):
        p = f"layers.{i}"
        at, mlp = layer.attn, layer.mlp
        q = b.linear(f"{p}.attn.query", at.query, b.spike(f"{p}.attn.q_in_spike", at.q_in_spike, h))
        k_lin = b.linear(f"{p}.attn.key", at.key, b.spike(f"{p}.attn.k_in_spike", at.k_in_spike, h))
        v_lin = b.linear(f"{p}.attn.value", at.value, b.spike(f"{p}.attn.v_in_spike", at.v_in_spike, h))
        k = b.spike(f"{p}.attn.k_spike", at.k_spike, k_lin)
        v = b.spike(f"{p}.attn.v_spike", at.v_spike, v_lin)
        c = b.ports(f"{p}.attn.attend", SelfAttention(n_head=int(cfg.num_heads), masked=True), q=q, k=k, v=v,
                    mask=mask)
        o = b.linear(f"{p}.attn.out", at.out, b.spike(f"{p}.attn.out_in_spike", at.out_in_spike, c))
        # residual sums of (L, hidden) rows: a Scale of one scalar 1 (NIR broadcasts size-1 parameters)
        a = b.layer_norm(f"{p}.attn.ln", at.ln, b.residual(f"{p}.attn.res", 1, o, h))

        s1 = b.spike(f"{p}.mlp.in_spike", mlp.in_spike, a)
        f = b.node(f"{p}.mlp.gelu", GELU(), b.linear(f"{p}.mlp.fc1", mlp.fc1, s1))
        f = b.linear(f"{p}.mlp.fc2", mlp.fc2, b.spike(f"{p}.mlp.out_in_spike", mlp.out_in_spike, f))
        h = b.layer_norm(f"{p}.mlp.ln", mlp.ln, b.residual(f"{p}.mlp.res", 1, f, a))

    b.node("mean", TokenMean(T=T), h)
    b.node("hidden", nir.Output(output_type={"output": np.array([seq_len, H])}), "mean")
    return g
