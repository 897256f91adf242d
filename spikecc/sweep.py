"""`spikecc sweep`: build a checkpoint under every combination of compile options, evaluate every build on a
text (spikecc.evaluate, windows spread over the executor's workers), and tabulate perplexity against cost.

    sweep(checkpoint, {"weight_bits": [4, 8], "k": [2, 3]}, text, out_dir, executor)

Options (OPTIONS, applied in that order whatever the order on the command line):
    weight_bits  1..8. Until language-model compilation lands, the weights of every linear layer inside the
                 blocks (the synapses that go onto neuro-cores: SpikeGPT-216M's K/V/R/output/FFN, SpikeLM's
                 Q/K/V/output/FC, SpikeRWKV's encoded linears) are rounded, per layer, onto Loihi 2's weight
                 grid for that many bits (spikecc.compiler.passes.quantize.quantize_weights: the grid
                 quantize_for_loihi uses, the largest |weight| on its top value); the rest of the model stays as
                 it is, and the build still runs in float. With LM compilation this becomes quantize_for_loihi's
                 weight_bits on the neuro-core graph.
    k            SpikeLM only: every neuron's alphas re-calibrated with alpha_t = k * mean|m_t| (SpikeLM paper
                 Eq. 10; spikecc.models.spikelm.recalibrate) on a calibration text (`calibration`): its first
                 min(16, n // context) windows of `context` characters, one batch.
Polarity mode and message width arrive with LM compilation: a new entry in OPTIONS each.

Builds are cached under OUT/cache/<key>/ (checkpoint, build.json), key = sha256 of the checkpoint's sha256, the
options, the calibration text's sha256 (when used) and the spikecc version; an evaluation is cached beside its
build, keyed by the text, windows and mode. Costs (cores, energy per token) come from spikecc.mapping_hooks.

Outputs in OUT: sweep.json (sorted keys; identical for any number of workers), sweep.txt (the table) and
sweep.png (perplexity against cores and against energy per token). OUT must be new, empty, or an earlier
sweep's directory: nothing else is overwritten.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import spikecc
from spikecc import evaluate, mapping_hooks
from spikecc.distributed import Executor, InProcess
from spikecc.errors import InputFileError
from spikecc.files import atomic_directory, atomic_write_bytes, sha256_file, write_json

OUTPUTS = ("sweep.json", "sweep.txt", "sweep.png")


# -- options ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildInput:
    """What an option may use besides the model: the calibration text (ids by the model's vocabulary)."""

    calibration: list[int] | None = None
    calibration_source: str = ""


@dataclass(frozen=True)
class SweepOption:
    name: str
    parse: Callable[[str], Any]
    apply: Callable[[Any, Any, BuildInput], None]  # (torch model, value, inputs): changes the model in place
    families: tuple[str, ...] | None  # None: every family
    needs_calibration: bool = False
    doc: str = ""


def _parse_bits(s: str) -> int:
    v = int(s)
    if not 1 <= v <= 8:
        raise ValueError("weight_bits must be an integer in 1..8")
    return v


def _parse_k(s: str) -> float:
    v = float(s)
    if not (math.isfinite(v) and v > 0):
        raise ValueError("k must be a positive number")
    return v


def round_block_weights(model, bits: int, _: BuildInput) -> None:
    """Each nn.Linear inside `blocks`/`layers` rounded onto Loihi's weight grid of `bits` bits (module docstring)."""
    import torch

    from spikecc.compiler.passes.quantize import quantize_weights, weight_grid

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.split(".")[0] in ("blocks", "layers"):
            w = m.weight.detach().to(torch.float64).numpy()
            top = float(np.abs(w).max())
            if top == 0.0:
                continue
            step, _, hi = weight_grid(bits, mixed=bool(w.min() < 0 < w.max()))
            unit = top / hi
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(quantize_weights(w, unit, bits) * unit))


def recalibrate_k(model, k: float, inputs: BuildInput) -> None:
    import torch

    from spikecc.models.spikelm import recalibrate

    context = model.config.context
    ids = inputs.calibration or []
    rows = min(16, len(ids) // context)
    if rows < 1:
        raise InputFileError(f"{inputs.calibration_source}: {len(ids)} characters; re-calibrating k needs at least "
                             f"{context} (one window of the model's context)")
    batch = torch.tensor(ids[: rows * context], dtype=torch.long).view(rows, context)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same alphas on every machine and run
    try:
        recalibrate(model, batch, k=k)
    finally:
        torch.set_num_threads(threads)


OPTIONS: dict[str, SweepOption] = {o.name: o for o in (
    SweepOption("weight_bits", _parse_bits, round_block_weights, None,
                doc="bits of the neuro-core weights (rounded onto Loihi's grid; float until LM compilation)"),
    SweepOption("k", _parse_k, recalibrate_k, ("spikelm",), needs_calibration=True,
                doc="SpikeLM's alpha = k * mean|m|, re-calibrated on --calibration"),
)}


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """["k=2,3", "weight_bits=4,8"] -> {"weight_bits": [4, 8], "k": [2.0, 3.0]} in OPTIONS order."""
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise InputFileError(f"--grid {item!r}: write NAME=V1,V2,...; options: {', '.join(OPTIONS)}")
        if name not in OPTIONS:
            raise InputFileError(f"--grid {item!r}: unknown option {name!r}; options: {', '.join(OPTIONS)} (polarity "
                                 "mode and message width come with language-model compilation)")
        if name in grid:
            raise InputFileError(f"--grid: option {name!r} is given twice; list all its values in one --grid")
        try:
            parsed = [OPTIONS[name].parse(v.strip()) for v in values.split(",")]
        except ValueError as exc:
            raise InputFileError(f"--grid {item!r}: {exc}") from None
        if len(set(parsed)) != len(parsed):
            raise InputFileError(f"--grid {item!r}: a value is listed twice")
        grid[name] = parsed
    return {n: grid[n] for n in OPTIONS if n in grid}


def combinations(grid: dict[str, list]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


# -- builds -----------------------------------------------------------------------------------------------
def _save(family: str, model, vocab: str, path: Path) -> None:
    """The model in its family's checkpoint format, readable by spikecc.compiler.frontends.load_lm."""
    from spikecc.models.data import CharVocab

    if family == "spikelm":
        from spikecc.models.spikelm import save_spikelm

        save_spikelm(path, model, CharVocab(vocab))
    elif family == "spikerwkv":
        from spikecc.models.spikerwkv import save_spikerwkv

        save_spikerwkv(model, vocab, path)
    elif family == "spikegpt":
        from spikecc.models.spikegpt import save_spikegpt, save_vocab

        save_spikegpt(model, path)
        save_vocab(CharVocab(vocab), path.with_suffix(".vocab.json"))
    else:
        raise InputFileError(f"sweep cannot rebuild a {family} model; families: spikegpt, spikelm, spikerwkv")


def build_key(checkpoint_sha: str, options: dict, inputs: BuildInput | None) -> str:
    blob = {"checkpoint": checkpoint_sha, "options": options, "spikecc": spikecc.__version__,
            "calibration": hashlib.sha256(json.dumps(inputs.calibration).encode()).hexdigest() if inputs else None}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def build(checkpoint: Path, options: dict, cache: Path, checkpoint_sha: str,
          inputs: BuildInput) -> tuple[evaluate.Subject, str, bool]:
    """(the build as eval sees it, its key, whether it came from the cache). A build is always evaluated as
    read back from its cache directory, so a cached and a fresh build are the same bits."""
    from spikecc.compiler.frontends import load_lm

    uses_calibration = any(OPTIONS[n].needs_calibration for n in options)
    key = build_key(checkpoint_sha, options, inputs if uses_calibration else None)
    where = cache / key
    cached = (where / "build.json").exists()
    if not cached:
        lm = load_lm(checkpoint)
        for name, value in options.items():
            OPTIONS[name].apply(lm.model, value, inputs)
        with atomic_directory(where) as tmp:
            _save(lm.family, lm.model, lm.graph.metadata["vocab"], tmp / "checkpoint.pt")
            write_json(tmp / "build.json", {"checkpoint": checkpoint.name, "checkpoint_sha256": checkpoint_sha,
                                            "options": options, "spikecc": spikecc.__version__,
                                            "calibration": inputs.calibration_source if uses_calibration else None})
    return evaluate.load_subject(where / "checkpoint.pt"), key, cached


# -- the sweep --------------------------------------------------------------------------------------------
@dataclass
class Row:
    options: dict[str, Any]
    key: str
    cached: bool
    score: evaluate.ModeScore
    cores: int | None
    energy_per_token: float | None  # joules


@dataclass
class SweepReport:
    checkpoint: str
    checkpoint_sha256: str
    text: str
    text_sha256: str
    mode: str
    window: int
    warmup: int
    grid: dict[str, list]
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256, "text": self.text,
            "text_sha256": self.text_sha256, "mode": self.mode, "window": self.window, "warmup": self.warmup,
            "grid": self.grid,
            "builds": [{"options": r.options, "key": r.key, "perplexity": r.score.perplexity,
                        "accuracy": r.score.accuracy, "nll": r.score.nll, "tokens": r.score.tokens,
                        "cores": r.cores, "energy_per_token_j": r.energy_per_token} for r in self.rows],
        }


def check_output_dir(out: Path) -> None:
    """OUT must be new, empty, or an earlier sweep's (only its own files are replaced)."""
    if out.exists() and not out.is_dir():
        raise InputFileError(f"{out}: exists and is not a directory; choose another -o")
    if out.is_dir():
        names = {p.name for p in out.iterdir()}
        if names and not ({"sweep.json", "cache"} & names):
            raise InputFileError(f"{out}: a directory with other files in it ({', '.join(sorted(names)[:3])}...); "
                                 "give a new or empty directory, or an earlier sweep's, to -o")


def _choose_mode(subject: evaluate.Subject, mode: str) -> str:
    available = subject.modes()
    if mode == "auto":
        return "fixed" if available["fixed"] is None else "float"
    if available.get(mode, "unknown mode") is not None:
        raise InputFileError(f"sweep mode {mode!r} is not available: {available.get(mode, 'unknown mode')}")
    return mode


def sweep(checkpoint: str | Path, grid: dict[str, list], text: str | Path, out: str | Path,
          executor: Executor | None = None, mode: str = "auto", window: int = evaluate.DEFAULT_WINDOW,
          warmup: int = evaluate.DEFAULT_WARMUP, calibration: str | Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          on_builds: Callable[[int], None] | None = None) -> SweepReport:
    """Build, evaluate and report every combination of `grid` (see the module docstring)."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out)
    if not checkpoint.is_file() or checkpoint.suffix == ".nir":
        raise InputFileError(f"{checkpoint}: sweep needs a checkpoint file (its options rebuild the model)")
    if not grid:
        raise InputFileError("give at least one --grid NAME=V1,V2; options: " + ", ".join(OPTIONS))
    base = evaluate.load_subject(checkpoint)
    for name in grid:
        fams = OPTIONS[name].families
        if fams is not None and base.family not in fams:
            raise InputFileError(f"--grid {name}: applies to {', '.join(fams)} models, {checkpoint} is {base.family}")
    inputs = BuildInput()
    if any(OPTIONS[n].needs_calibration for n in grid):
        if calibration is None:
            raise InputFileError("--grid k re-calibrates SpikeLM's alphas on a calibration text: give --calibration "
                                 "FILE (text the model was not evaluated on)")
        inputs = BuildInput(evaluate.encode(base, evaluate.read_text(calibration), str(calibration)), str(calibration))
    mode = _choose_mode(base, mode)
    text = Path(text)
    base_plan = evaluate.plan(base, text, [mode], window, warmup)  # checks the text and the windows once
    ckpt_sha = sha256_file(checkpoint)
    text_sha = hashlib.sha256(evaluate.read_text(text).encode()).hexdigest()
    cache = out / "cache"
    out.mkdir(parents=True, exist_ok=True)

    combos = combinations(grid)
    builds = []
    for i, options in enumerate(combos):
        builds.append(build(checkpoint, options, cache, ckpt_sha, inputs))
        if on_builds:
            on_builds(i + 1)
    ex = executor or InProcess()
    eval_key = hashlib.sha256(json.dumps([text_sha, mode, window, warmup]).encode()).hexdigest()[:16]
    scores: dict[int, evaluate.ModeScore] = {}
    todo: list[int] = []
    for b, (_, key, _) in enumerate(builds):
        saved = cache / key / f"eval-{eval_key}.json"
        if saved.exists():
            scores[b] = evaluate.ModeScore(**json.loads(saved.read_text()))
        else:
            todo.append(b)
    windows = base_plan.windows
    shared = {b: ex.share(builds[b][0]) for b in todo}
    tasks = [(shared[b], mode, w) for b in todo for w in windows]
    done: dict[int, evaluate.WindowScore] = {}
    for i, s in ex.run(evaluate.evaluate_window, tasks):
        done[i] = s
        if progress:
            progress(len(done), len(tasks))
    n = len(windows)
    for j, b in enumerate(todo):
        scores[b] = evaluate.aggregate([done[j * n + w] for w in range(n)])
        atomic_write_bytes(cache / builds[b][1] / f"eval-{eval_key}.json",
                           json.dumps(vars(scores[b]), sort_keys=True).encode())

    report = SweepReport(str(checkpoint), ckpt_sha, str(text), text_sha, mode, window, warmup, grid)
    for b, (subject, key, cached) in enumerate(builds):
        report.rows.append(Row(combos[b], key, cached, scores[b], mapping_hooks.cores(subject),
                               mapping_hooks.energy_per_token(subject)))
    write_outputs(report, out)
    return report


# -- outputs ----------------------------------------------------------------------------------------------
def _fmt(v: float | int | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(report: SweepReport):
    from rich.table import Table

    t = Table(title=f"sweep of {report.checkpoint} on {report.text} ({report.mode} mode, window {report.window}, "
                    f"warm-up {report.warmup})")
    for name in report.grid:
        t.add_column(name, justify="right")
    for col in ("perplexity", "accuracy", "nats/token", "cores", "energy/token", "build", "cached"):
        t.add_column(col, justify="left" if col in ("build", "cached") else "right")
    for r in report.rows:
        t.add_row(*(f"{r.options[n]:g}" for n in report.grid), f"{r.score.perplexity:.4f}",
                  f"{r.score.accuracy:.4f}", f"{r.score.nll:.4f}", _fmt(r.cores, ","),
                  _fmt(None if r.energy_per_token is None else r.energy_per_token * 1e6, ".3g") +
                  ("" if r.energy_per_token is None else " uJ"), r.key, "yes" if r.cached else "no")
    return t


def table_text(report: SweepReport) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(table(report))
    return console.export_text()


def plot_png(report: SweepReport) -> bytes:
    """Perplexity against cores and against energy per token; where those are not known yet (mapping stage),
    perplexity per build, said in the panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(f"{k}={v:g}" for k, v in r.options.items()) for r in report.rows]
    ppl = [r.score.perplexity for r in report.rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (what, unit, values) in zip(axes, [("cores", "Loihi 2 cores", [r.cores for r in report.rows]),
                                               ("energy per token", "J", [r.energy_per_token for r in report.rows])]):
        if all(v is not None for v in values):
            ax.scatter(values, ppl)
            for x, y, lab in zip(values, ppl, labels):
                ax.annotate(lab, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(f"{what} ({unit})")
            ax.set_title(f"perplexity against {what}")
        else:
            ax.plot(range(len(ppl)), ppl, "o")
            ax.set_xticks(range(len(ppl)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{what}: not estimated yet (no mapping stage)", fontsize=9)
        ax.set_ylabel(f"perplexity ({report.mode})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(report.checkpoint).name} on {Path(report.text).name}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_outputs(report: SweepReport, out: Path) -> None:
    atomic_write_bytes(out / "sweep.json",
                       (json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out / "sweep.txt", table_text(report).encode())
    atomic_write_bytes(out / "sweep.png", plot_png(report))
