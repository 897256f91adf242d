"""SpikeGPT as the authors' inference script runs it: ridgerchu/SpikeGPT ``run.py`` with ``src/model_run.py``
(class ``RWKV_RNN``), re-implemented here in float64 from that code, one token per call.

What the script does, and this module with it:

* weights: ``blocks.{i}.att.output.weight`` and ``blocks.{i}.ffn.value.weight`` are divided by 2^(i // 6)
  (``RWKV_RESCALE_LAYER = 6``), ``time_*`` vectors are squeezed, ``time_decay`` becomes ``-exp(time_decay)``;
* embedding: ``atan(emb[token])`` (spikingjelly's ATan surrogate, whose forward is the Heaviside ``x >= 0``) when
  ``vocab_size == 77``, the raw row otherwise;
* per block: ``x = LN(x, ln0)`` on block 0; ``x = x + LIF_att(SA(LN(x, ln1)))``; ``x = x + LIF_ffn(FF(LN(x, ln2)))``;
  ``x = x / 2`` after blocks 6, 12, ...; the LIFs are spikingjelly ``LIFNode()`` (tau 2, threshold 1, hard reset to
  0, decay_input), one membrane per block and branch, kept across tokens;
* SA: token shift with the previous LN output, ``k = Kw xk``, ``v = Vw xv``, ``r = sigmoid(Rw xr)``, the wkv state
  (aa, bb, pp) updated with running maxima, ``out = Ow (r * a / b)``; FF: ``sigmoid(Rw xr) * (Vw relu(Kw xk)^2)``;
* logits ``head @ LN(x, ln_out)``.

``rescale_layer=None`` drops the rescaling (the training code's ``src/model.py`` equations) and ``binary`` overrides the
vocabulary-77 rule, so the same loop also serves as a reference for the training-code semantics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LIFNode:
    """spikingjelly ``clock_driven.neuron.LIFNode`` with its defaults (tau = 2, v_threshold = 1, v_reset = 0,
    decay_input = True), single step: charge ``v = v + (x - v) / tau``; fire ``s = (v - 1 >= 0)``; hard reset
    ``v = (1 - s) * v + s * 0``."""

    def __init__(self) -> None:
        self.v: torch.Tensor | float = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v + (x - self.v) / 2.0
        s = (v - 1.0 >= 0).to(x.dtype)
        self.v = (1.0 - s) * v + s * 0.0
        return s


class RunPy:
    """The authors' recurrent inference of a SpikeGPT state dict, float64.

    ``step(token)`` returns ``(logits, spikes)``; spikes are keyed like spikecc's layers: ``emb`` (binary embedding
    only), ``blocks.{i}.att_lif``, ``blocks.{i}.ffn_lif``.
    """

    def __init__(self, sd: dict[str, torch.Tensor], rescale_layer: int | None = 6, binary: bool | None = None,
                 consume: bool = False):
        """``consume=True`` empties ``sd`` while converting it (one float64 copy of a 216M model, not two)."""
        w = {}
        for k in list(sd):
            v = sd.pop(k) if consume else sd[k]
            w[k] = v.detach().to(torch.float64).clone()
        self.n_layer = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
        self.vocab, self.d = w["emb.weight"].shape
        self.rescale = rescale_layer
        for k in list(w):
            i = int(k.split(".")[1]) if k.startswith("blocks.") else 0
            if rescale_layer and (k.endswith("att.output.weight") or k.endswith("ffn.value.weight")):
                w[k] = w[k] / (2 ** (i // rescale_layer))
            if ".time_" in k:
                w[k] = w[k].squeeze()
            if k.endswith(".time_decay"):
                w[k] = -torch.exp(w[k])
        self.w = w
        self.binary = (self.vocab == 77) if binary is None else binary
        self.state = torch.zeros(5 * self.n_layer, self.d, dtype=torch.float64)
        for i in range(self.n_layer):
            self.state[5 * i + 4] -= 1e30
        self.mem1 = [LIFNode() for _ in range(self.n_layer)]
        self.mem2 = [LIFNode() for _ in range(self.n_layer)]

    def ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.d,), weight=self.w[f"{name}.weight"], bias=self.w[f"{name}.bias"])

    def ff(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"blocks.{i}.ffn."
        prev = self.state[5 * i + 0]
        xk = x * self.w[p + "time_mix_k"] + prev * (1 - self.w[p + "time_mix_k"])
        xr = x * self.w[p + "time_mix_r"] + prev * (1 - self.w[p + "time_mix_r"])
        self.state[5 * i + 0] = x
        r = torch.sigmoid(self.w[p + "receptance.weight"] @ xr)
        k = torch.square(torch.relu(self.w[p + "key.weight"] @ xk))
        return self.mem2[i](r * (self.w[p + "value.weight"] @ k))

    def sa(self, x: torch.Tensor, i: int) -> torch.Tensor:
        p = f"blocks.{i}.att."
        prev = self.state[5 * i + 1]
        mix = {c: x * self.w[p + f"time_mix_{c}"] + prev * (1 - self.w[p + f"time_mix_{c}"]) for c in "kvr"}
        self.state[5 * i + 1] = x
        r = torch.sigmoid(self.w[p + "receptance.weight"] @ mix["r"])
        k = self.w[p + "key.weight"] @ mix["k"]
        v = self.w[p + "value.weight"] @ mix["v"]
        aa, bb, pp = self.state[5 * i + 2], self.state[5 * i + 3], self.state[5 * i + 4]
        ww = self.w[p + "time_first"] + k
        q = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - q), torch.exp(ww - q)
        a, b = e1 * aa + e2 * v, e1 * bb + e2
        ww = pp + self.w[p + "time_decay"]
        q = torch.maximum(ww, k)
        e1, e2 = torch.exp(ww - q), torch.exp(k - q)
        self.state[5 * i + 2] = e1 * aa + e2 * v
        self.state[5 * i + 3] = e1 * bb + e2
        self.state[5 * i + 4] = q
        return self.mem1[i](self.w[p + "output.weight"] @ (r * (a / b)))

    @torch.no_grad()
    def step(self, token: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        spikes: dict[str, torch.Tensor] = {}
        x = self.w["emb.weight"][token]
        if self.binary:
            x = (x >= 0).to(x.dtype)
            spikes["emb"] = x
        for i in range(self.n_layer):
            if i == 0:
                x = self.ln(x, "blocks.0.ln0")
            s = self.sa(self.ln(x, f"blocks.{i}.ln1"), i)
            spikes[f"blocks.{i}.att_lif"] = s
            x = x + s
            s = self.ff(self.ln(x, f"blocks.{i}.ln2"), i)
            spikes[f"blocks.{i}.ffn_lif"] = s
            x = x + s
            if self.rescale and (i + 1) % self.rescale == 0:
                x = x / 2
        return self.w["head.weight"] @ self.ln(x, "ln_out"), spikes

    def run(self, tokens: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (len, vocab) and spikes {layer: (len, D)} over a token sequence, from the current state."""
        outs = [self.step(t) for t in tokens]
        return torch.stack([o[0] for o in outs]), {n: torch.stack([o[1][n] for o in outs]) for n in outs[0][1]}

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """Feed ``prompt``, then take the argmax ``n`` times (feeding each choice): the generated ids."""
        logits = None
        for t in prompt:
            logits, _ = self.step(t)
        out = []
        for _ in range(n):
            nxt = int(torch.argmax(logits))
            out.append(nxt)
            logits, _ = self.step(nxt)
        return out
