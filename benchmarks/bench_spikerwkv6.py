"""SpikeRWKV conversion of the shipped RWKV-6 model: perplexity, firing rates and energy per token, beside the paper.

    .venv/bin/python benchmarks/bench_spikerwkv6.py [--checkpoint examples/checkpoints/rwkv6-shakespeare.pt]

The float RWKV-6 checkpoint is converted (no retraining) at the paper's 3L, 4L and 5L settings (T = 1, l = 3, 4, 5,
Sec. 4.1), with the encoders where the paper puts them (time-mix r, k, v, g: scope "paper") and, for comparison,
before every linear in the blocks (scope "all"); every encoder's range is calibrated on the short text beside the
checkpoint (<name>.calibration.txt, training split): its largest input magnitude there ("max") or the 99% quantile
of them ("q 0.99"). Each model then reads the held-out text (<name>.heldout.txt,
validation split) as one sequence; the table gives, per character: cross-entropy as perplexity and bits per
character, the mean firing rate fr of the encoders (spikes / (T x l x C_in x tokens)), the share of encoder inputs
beyond the calibrated range (clipped), and the paper's energy per token (Eq. 5, E_snn = sum over encoders of
C_in x fr x T x l x E_AC, against E_ann = sum of C_in x E_MAC; E_AC = 0.9 pJ, E_MAC = 4.6 pJ) with EE = E_ann / E_snn.

The paper's own figures (Table 1, WikiText-103 token PPL of a pretrained RWKV-6; Table 3, average energy on NLU
tasks, one input of C_in = 2560) are printed beneath for the trend; fr there is back-solved from its energies.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spikecc.models.rwkv6 import load_rwkv6, vocab_beside
from spikecc.models.spikerwkv6 import convert, energy_per_token, measure_firing_rates

DEFAULT = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "rwkv6-shakespeare.pt"
# Paper Table 1 (WikiText-103 PPL) and Table 3 (average E in pJ, EE): RWKV, SpikeRWKV-3L/4L/5L
PAPER = {"float": (12.73, 11776.0, None), 3: (12.90, 2412.3, 4.88), 4: (12.12, 4476.5, 2.63), 5: (12.53, 6551.6, 1.79)}
PAPER_C_IN = 2560
CARD_SECTION = "## SpikeRWKV conversion (3L / 4L / 5L)"
QUANTILES = (1.0, 0.99)  # encoder range: the largest input on the calibration text, and its 99% quantile


@torch.no_grad()
def nats_per_char(model, ids: torch.Tensor) -> float:
    logits = model(ids[None, :-1])[0]
    return float(F.cross_entropy(logits, ids[1:]))


@torch.no_grad()
def clipped_share(model, ids: torch.Tensor) -> float:
    """Share of encoder input values whose magnitude exceeds the encoder's calibrated range."""
    over, total = 0, 0
    hooks = []

    def count(enc, args):
        nonlocal over, total
        x = args[0] if enc.polarity else args[0].clamp(min=0)
        over += int((x.abs() > enc.max_value).sum())
        total += x.numel()

    for enc in model.encoders().values():
        hooks.append(enc.register_forward_pre_hook(count))
    try:
        model(ids[None, :-1])
    finally:
        for h in hooks:
            h.remove()
    return over / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-card", action="store_true",
                    help="also put the tables in the checkpoint's card (<name>.md), section 'SpikeRWKV conversion'")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    model = load_rwkv6(args.checkpoint)  # float64
    vocab = vocab_beside(args.checkpoint, model.cfg.vocab_size)
    index = {c: i for i, c in enumerate(vocab)}
    cal_text = args.checkpoint.with_suffix(".calibration.txt").read_text(encoding="utf-8")
    held_text = args.checkpoint.with_suffix(".heldout.txt").read_text(encoding="utf-8")
    cal = torch.tensor([index[c] for c in cal_text])
    held = torch.tensor([index[c] for c in held_text])
    cfg = model.cfg
    print(f"{args.checkpoint.name}: RWKV-6 L={cfg.n_layers} C={cfg.d_model} H={cfg.n_heads}x{cfg.head_size}; "
          f"calibration {len(cal_text)} chars, held-out {len(held_text)} chars")

    base = nats_per_char(model, held)
    rows = [("RWKV-6 (float)", "-", "-", "-", base, None, None, None)]
    for scope in ("paper", "all"):
        for quantile in QUANTILES:
            for levels in (3, 4, 5):
                spiking = convert(model, cal, levels, T=1, scope=scope, quantile=quantile)
                loss = nats_per_char(spiking, held)
                rates = measure_firing_rates(spiking, held[None, :-1])
                e = energy_per_token(spiking, rates)
                rng = "max" if quantile == 1.0 else f"q {quantile:g}"
                rows.append((f"SpikeRWKV-{levels}L", scope, f"{len(rates)}", rng, loss,
                             sum(rates.values()) / len(rates), clipped_share(spiking, held), e))

    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line)
        lines.append(line)

    out()
    out("| model | encoders | range | T x l | PPL/char | BPC | vs float | mean fr | clipped | E_snn pJ/token | "
        "E_ann pJ/token | EE |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, scope, n_enc, rng, loss, fr, clip, e in rows:
        ppl = math.exp(loss)
        rel = f"{ppl / math.exp(base) - 1:+.1%}" if e is not None else "-"
        if e is None:
            out(f"| {name} | - | - | - | {ppl:.3f} | {loss / math.log(2):.4f} | - | - | - | - | - | - |")
            continue
        tl = f"1 x {name.split('-')[1][0]}"
        out(f"| {name} | {scope} ({n_enc}) | {rng} | {tl} | {ppl:.3f} | {loss / math.log(2):.4f} | {rel} | {fr:.3f} | "
            f"{clip:.2e} | {e['paper_snn_pj']:.0f} | {e['paper_ann_pj']:.0f} | "
            f"{e['paper_ann_pj'] / e['paper_snn_pj']:.2f}x |")

    out()
    out("Paper (pretrained RWKV-6, WikiText-103 token PPL, Table 1; energy Table 3 avg, C_in = 2560):")
    out()
    out("| model | PPL | vs float | fr (back-solved) | E_snn pJ | E_ann pJ | EE |")
    out("|---|---|---|---|---|---|---|")
    ppl0 = PAPER["float"][0]
    out(f"| RWKV | {ppl0:.2f} | - | - | - | {PAPER['float'][1]:.0f} | - |")
    for levels in (3, 4, 5):
        ppl, e, ee = PAPER[levels]
        fr = e / (PAPER_C_IN * levels * 0.9)
        out(f"| SpikeRWKV-{levels}L | {ppl:.2f} | {ppl / ppl0 - 1:+.1%} | {fr:.3f} | {e:.1f} | "
            f"{PAPER['float'][1]:.0f} | {ee:.2f}x |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.write_card:
        card = args.checkpoint.with_suffix(".md")
        head = card.read_text(encoding="utf-8").split(CARD_SECTION)[0].rstrip("\n")
        intro = (f"Written by `benchmarks/bench_spikerwkv6.py --write-card`: calibrated on `{args.checkpoint.stem}"
                 f".calibration.txt` ({len(cal_text)} chars, training split), evaluated on `{args.checkpoint.stem}"
                 f".heldout.txt` ({len(held_text)} chars, validation split, read as one sequence). Per character; "
                 "energy by the paper's Eq. 5 summed over the encoders (E_AC 0.9 pJ, E_MAC 4.6 pJ).")
        card.write_text(f"{head}\n\n{CARD_SECTION}\n\n{intro}\n" + "\n".join(lines) + "\n", encoding="utf-8")
        print(f"card -> {card}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
