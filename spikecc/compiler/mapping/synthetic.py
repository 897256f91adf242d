"""A Loihi-form graph with the shape of SpikeGPT's neuro-core part, random weights: for mapping benchmarks and
tests until the compiler lowers real checkpoints (it stands in for that graph; swap it out then).

Per block (SpikeGPT, Zhu et al., TMLR 2024, RWKV time-mix and channel-mix; sizes d, d_ffn):

    host:   a = ln1(x)
    chip:   K, V, R   LoihiDense d x d, graded input (LayerNorm outputs)  -> LoihiLIF each
    host:   wkv(K, V) * sigmoid(R)
    chip:   O         LoihiDense d x d, graded input                      -> LoihiLIF (the att LIF)
    host:   x = x + att;  f = ln2(x)
    chip:   FFN key   LoihiDense d -> d_ffn, graded input                 -> LoihiLIF
    host:   relu(key)^2
    chip:   FFN value LoihiDense d_ffn -> d, graded input                 -> LoihiLIF
            FFN recep LoihiDense d x d, graded input                      -> LoihiLIF
    host:   x = x + value * sigmoid(recep)

with a token Input, an Embedding on the host, and ln_out -> Output. SpikeGPT's linears take real LayerNorm
outputs, so every synapse layer receives graded messages from the host (`message_bits`). The graph is in
float form and runs in spikecc's CPU simulator (for activity). Shapes: the published 216M model is
`SPIKEGPT_216M` (L 18, d 768, d_ffn 3072, vocab 50277); the shipped example checkpoints are L 2, d 128, 512.
"""

from __future__ import annotations

import nir
import numpy as np

from spikecc.ir import Graph
from spikecc.ir.lm_ops import WKV, Embedding, LayerNorm, Product, Sigmoid, SquaredReLU
from spikecc.ir.loihi_ops import LoihiDense, LoihiLIF

SPIKEGPT_216M = {"n_layer": 18, "d": 768, "d_ffn": 3072, "vocab": 50277}
SHIPPED_SIZE = {"n_layer": 2, "d": 128, "d_ffn": 512, "vocab": 84}


def spikegpt_graph(n_layer: int, d: int, d_ffn: int, vocab: int, seed: int = 0, message_bits: int = 16,
                   weight_bits: int = 8, vth: float = 1.0) -> Graph:
    """The graph described in the module docstring. Weights ~ N(0, 1/n_in) (float32), LIF with du = 1 (the
    current is this step's input), dv = 0.5, threshold `vth`: a unit-variance input makes them fire at a
    rate of roughly 0.1-0.3."""
    rng = np.random.default_rng(seed)
    g = Graph(metadata={"dt": 1e-4, "name": f"synthetic SpikeGPT L{n_layer} d{d} ffn{d_ffn} vocab{vocab}",
                        "substeps": 1})
    g.add_node("token", nir.Input(input_type={"input": np.array([1])}))
    g.annotate("token", signal={"kind": "graded", "bits": int(np.ceil(np.log2(max(2, vocab)))), "scale": 1.0,
                                "amplitude": 1.0})
    g.add_node("emb", Embedding(weight=rng.standard_normal((vocab, d), dtype=np.float32)))
    g.connect("token", "emb")

    def node(name: str, op, *srcs: str, port: str = "input") -> str:
        g.add_node(name, op)
        for s in srcs:
            g.connect(s, name, port)
        return name

    def ln(name: str, src: str) -> str:
        return node(name, LayerNorm(weight=np.ones(d), bias=np.zeros(d)), src)

    def layer(name: str, src: str, n_in: int, n_out: int) -> str:
        w = rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(1 / np.sqrt(n_in))
        node(name, LoihiDense(weight=w, num_weight_bits=weight_bits, num_message_bits=message_bits), src)
        ones = np.ones(n_out)
        return node(f"{name}.lif", LoihiLIF(du=ones, dv=0.5 * ones, vth=vth * ones, bias_mant=0 * ones,
                                            bias_exp=0 * ones), name)

    x = "emb"
    for i in range(n_layer):
        p = f"blocks.{i}"
        a = ln(f"{p}.ln1", x)
        k, v, r = (layer(f"{p}.att.{n}", a, d, d) for n in ("key", "value", "receptance"))
        g.add_node(f"{p}.att.wkv", WKV(time_decay=rng.uniform(-1, 1, d), time_first=rng.uniform(-1, 1, d)))
        g.connect(k, f"{p}.att.wkv", "k")
        g.connect(v, f"{p}.att.wkv", "v")
        gate = node(f"{p}.att.gate", Product(), node(f"{p}.att.sigmoid", Sigmoid(), r), port="a")
        g.connect(f"{p}.att.wkv", gate, "b")
        att = layer(f"{p}.att.output", gate, d, d)
        x = node(f"{p}.res1", nir.Scale(scale=np.ones(d)), x, att)
        f = ln(f"{p}.ln2", x)
        key = layer(f"{p}.ffn.key", f, d, d_ffn)
        value = layer(f"{p}.ffn.value", node(f"{p}.ffn.relu_sq", SquaredReLU(), key), d_ffn, d)
        rec = node(f"{p}.ffn.sigmoid", Sigmoid(), layer(f"{p}.ffn.receptance", f, d, d))
        gate = node(f"{p}.ffn.gate", Product(), rec, port="a")
        g.connect(value, gate, "b")
        x = node(f"{p}.res2", nir.Scale(scale=np.ones(d)), x, gate)
    node("ln_out", LayerNorm(weight=np.ones(d), bias=np.zeros(d)), x)
    node("out", nir.Output(output_type={"output": np.array([d])}), "ln_out")
    return g


def neuron_nodes(g: Graph) -> list[str]:
    return [n for n, op in g.nodes.items() if isinstance(op, LoihiLIF)]
