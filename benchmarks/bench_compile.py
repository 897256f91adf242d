"""How long `spikecc compile` takes on a language model, and how much memory: the shipped checkpoints, the
published 216M SpikeGPT shape (L18, D768, FFN 3072, vocabulary 50277; random weights made here, with a BPE
tokenizer trained here on the offline corpus and padded to 50277 ids) and SpikeLM in the BERT-base layout (L12,
hidden 768, intermediate 3072, vocabulary 30522, 512 positions; random weights made here, calibrated on seeded
pseudo-random ids: an encoder compiled without its tokenizer). Each compile runs in a fresh process
(`spikecc compile`), timed from outside, its peak resident memory read from the child's own high-water mark.

Target (issue: compile a spiking-LM checkpoint): the 216M shape compiles in under 5 minutes and 8 GB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console(highlight=False, width=140)


def make_216m(folder: Path) -> Path:
    """A 216M-shape SpikeGPT state dict (float32, random) and its tokenizer.json beside it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from spikecc.models.data import shakespeare_text
    from spikecc.models.spikegpt import random_state_dict

    ckpt = folder / "spikegpt-216m.pt"
    torch.save(random_state_dict(n_layer=18, d_model=768, vocab=50277, seed=0, dtype=torch.float32), ckpt)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([shakespeare_text()[:200_000]], trainer=trainer)
    tok.add_tokens([f"<t{i}>" for i in range(50277 - tok.get_vocab_size())])
    tok.save(str(folder / "tokenizer.json"))
    return ckpt


def make_bert_base(folder: Path) -> Path:
    """A SpikeLM checkpoint in BERT-base layout (random weights, calibrated alphas)."""
    import torch

    from spikecc.models.spikelm import random_bert_state_dict

    ckpt = folder / "spikelm-bert-base.pt"
    torch.save(random_bert_state_dict(n_layer=12, hidden=768, intermediate=3072, vocab=30522, max_pos=512, seed=0),
               ckpt)
    return ckpt


def compile_child(ckpt: Path, out: Path, extra: list[str]) -> tuple[float, float, str]:
    """(seconds, peak GiB, last line) of `spikecc compile CKPT -o OUT` in a fresh process."""
    code = ("import resource, runpy, sys\n"
            "sys.argv = ['spikecc'] + sys.argv[1:]\n"
            "try:\n"
            "    runpy.run_module('spikecc.cli', run_name='__main__')\n"
            "finally:\n"
            "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
            "    print(f'PEAK_KB {hwm}', file=sys.stderr)\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "compile", str(ckpt), "-o", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"compile of {ckpt.name} failed: {proc.stderr.strip().splitlines()[-2:]}")
    peak = next(int(ln.split()[1]) for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KB")) / 2**20
    budget = next((ln for ln in proc.stdout.splitlines() if ln.startswith("budget:")), "budget: -")
    return wall, peak, budget


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calibration-tokens", type=int, default=64,
                        help="tokens of calibration text for the 216M shape (the shipped models use the default)")
    parser.add_argument("--skip-216m", action="store_true")
    parser.add_argument("--skip-bert", action="store_true", help="skip the SpikeLM BERT-base layout")
    args = parser.parse_args()
    table = Table(title="spikecc compile: wall time and peak memory of one compile (fresh process)")
    for col in ("model", "seconds", "peak GiB", "mapping"):
        table.add_column(col, justify="left" if col in ("model", "mapping") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for family in ("spikegpt", "spikelm", "spikerwkv"):
            wall, peak, budget = compile_child(ROOT / "examples" / "checkpoints" / f"{family}-shakespeare.pt",
                                               tmp / f"build-{family}", [])
            table.add_row(f"{family}-shakespeare", f"{wall:.1f}", f"{peak:.2f}", budget)
        if not args.skip_bert:
            wall, peak, budget = compile_child(make_bert_base(tmp), tmp / "build-bert", [])
            table.add_row("SpikeLM BERT-base layout (random ids)", f"{wall:.1f}", f"{peak:.2f}", budget)
        if not args.skip_216m:
            ckpt = make_216m(tmp)
            wall, peak, budget = compile_child(ckpt, tmp / "build-216m",
                                               ["--calibration-tokens", str(args.calibration_tokens)])
            table.add_row(f"SpikeGPT 216M shape ({args.calibration_tokens} calibration tokens)", f"{wall:.1f}",
                          f"{peak:.2f}", budget)
            ok = wall < 300 and peak < 8
            console.print(table)
            console.print(f"216M shape: {wall:.0f} s (target < 300 s), {peak:.2f} GiB (target < 8 GiB): "
                          f"{'met' if ok else 'NOT met'}")
            return 0 if ok else 1
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
