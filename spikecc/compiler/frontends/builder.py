"""The building blocks the language-model frontends share: each adds one node (or a node pair) to a Graph
and connects its sources, so a frontend reads as the model's equations, one line per layer."""

from __future__ import annotations

import nir
import numpy as np

from spikecc.ir import Graph
from spikecc.ir.lm_ops import LayerNorm, Product


def to_numpy(t) -> np.ndarray:
    """A torch tensor (or parameter) as a float64 numpy copy (converted in one pass: a 216M-parameter float32 model
    is not first doubled in torch and then copied again)."""
    import torch

    t = t.detach().cpu()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.double()  # e.g. bfloat16, which numpy cannot hold
    return np.array(t.numpy(), dtype=np.float64)


class LMGraphBuilder:
    """Adds nodes to `graph`; every method returns the name of the node whose output is the result."""

    def __init__(self, graph: Graph, dt: float) -> None:
        self.g, self.dt = graph, dt

    def node(self, name: str, op: nir.NIRNode, *srcs: str) -> str:
        """`op` as node `name`, fed by the sum of `srcs` on its input port."""
        self.g.add_node(name, op)
        for s in srcs:
            self.g.connect(s, name)
        return name

    def token_input(self, name: str, vocab_size: int) -> str:
        """The token-id Input (shape (1,)), annotated as a graded payload wide enough for the vocabulary."""
        self.g.add_node(name, nir.Input(input_type={"input": np.array([1])}))
        self.g.annotate(name, signal={"kind": "graded", "bits": int(np.ceil(np.log2(max(2, vocab_size)))),
                                      "scale": 1.0, "amplitude": 1.0})
        return name

    def layer_norm(self, name: str, module, src: str) -> str:
        return self.node(name, LayerNorm(weight=to_numpy(module.weight), bias=to_numpy(module.bias),
                                         eps=float(module.eps)), src)

    def linear(self, name: str, module, *srcs: str) -> str:
        """torch Linear -> nir.Affine (with its bias) or nir.Linear (without)."""
        w = to_numpy(module.weight)
        if getattr(module, "bias", None) is not None:
            return self.node(name, nir.Affine(weight=w, bias=to_numpy(module.bias)), *srcs)
        return self.node(name, nir.Linear(weight=w), *srcs)

    def mixed(self, prefix: str, mix, cur: str, prev: str) -> tuple[str, str]:
        """RWKV's time-mix mix*cur + (1-mix)*prev as two Scale nodes; a consumer fed by both sums them."""
        m = to_numpy(mix).reshape(-1)
        return (self.node(f"{prefix}.cur", nir.Scale(scale=m), cur),
                self.node(f"{prefix}.prev", nir.Scale(scale=1.0 - m), prev))

    def residual(self, name: str, size: int, *srcs: str) -> str:
        """x + f(x): a Scale of ones whose input port sums the residual stream and the branch."""
        return self.node(name, nir.Scale(scale=np.ones(size)), *srcs)

    def shift(self, name: str, size: int, src: str) -> str:
        """RWKV's token shift: the previous step's value (zeros at step 0), a one-step NIR Delay."""
        return self.node(name, nir.Delay(delay=np.full(size, self.dt)), src)

    def product(self, name: str, a: str, b: str) -> str:
        self.g.add_node(name, Product())
        self.g.connect(a, name, "a")
        self.g.connect(b, name, "b")
        return name

    def ports(self, name: str, op: nir.NIRNode, **srcs: str) -> str:
        """A multi-input op, each source on its named port."""
        self.g.add_node(name, op)
        for port, s in srcs.items():
            self.g.connect(s, name, port)
        return name

    def output(self, name: str, size: int, src: str) -> str:
        self.g.add_node(name, nir.Output(output_type={"output": np.array([size])}))
        self.g.connect(src, name)
        return name
