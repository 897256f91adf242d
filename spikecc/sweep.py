"""`spikecc sweep`: compile a checkpoint under every combination of compile options, evaluate every build on a
text (spikecc.evaluate, windows spread over the executor's workers), and tabulate perplexity against cost.

    sweep(checkpoint, {"weight_bits": [4, 8], "polarity": ["split", "graded"]}, text, out_dir, executor)

Options (OPTIONS, listed in this order whatever the order on the command line):
    weight_bits   1..8: bits of the neuro-core weights (`spikecc compile --weight-bits`)
    polarity      split | graded: ternary spikes as two binary channels or signed graded messages (--polarity)
    message_bits  2..24: bits of the graded host -> neuro-core messages (--message-bits)
    k             SpikeLM only: every neuron's alphas re-calibrated with alpha_t = k * mean|m_t| (SpikeLM paper
                  Eq. 10; spikecc.models.spikelm.recalibrate) on a calibration text (`calibration`): its first
                  min(16, n // context) windows of `context` characters, one batch; the model changes before it
                  is compiled

Each combination is a real build: spikecc.lm_build.compile_lm with those options (a model option first rewrites the
checkpoint it compiles), what `spikecc compile` writes, with its budget on the target (`target`) mapped with the
activity its calibration run measured. Builds are cached under OUT/cache/<key>/ (build/, build.json; the rewritten
checkpoint where a model option applies), key = sha256 of the checkpoint's sha256, the options, the target, the
calibration text's sha256 (when used) and the spikecc version; an evaluation is cached beside its build, keyed by
the text, windows and mode. A build is evaluated in fixed point (its lowered.nir, bit-accurate) or in float
(its float.nir); costs (cores, energy per token on the target) come from its budget (spikecc.mapping_hooks).

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

import spikecc
from spikecc import evaluate, mapping_hooks
from spikecc.distributed import Executor, InProcess
from spikecc.errors import InputFileError
from spikecc.files import atomic_directory, atomic_write_bytes, sha256_file, write_json

OUTPUTS = ("sweep.json", "sweep.txt", "sweep.png")
MODES = ("auto", "float", "fixed")


# -- options ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildInput:
    """What an option may use besides the model: the calibration text (ids by the model's vocabulary)."""

    calibration: list[int] | None = None
    calibration_source: str = ""


@dataclass(frozen=True)
class SweepOption:
    """A compile option (`compile_field`: the spikecc.compiler.pipeline.LMOptions field it sets) or a model option
    (`apply`: changes the torch model, in place, before it is compiled)."""

    name: str
    parse: Callable[[str], Any]
    families: tuple[str, ...] | None  # None: every family
    compile_field: str | None = None
    apply: Callable[[Any, Any, BuildInput], None] | None = None  # (torch model, value, inputs)
    needs_calibration: bool = False
    doc: str = ""


def _int_in(name: str, lo: int, hi: int) -> Callable[[str], int]:
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = lo - 1
        if not lo <= v <= hi:
            raise ValueError(f"{name} must be an integer in {lo}..{hi}")
        return v

    return parse


def _parse_polarity(s: str) -> str:
    if s not in ("split", "graded"):
        raise ValueError("polarity must be split or graded")
    return s


def _parse_k(s: str) -> float:
    v = float(s)
    if not (math.isfinite(v) and v > 0):
        raise ValueError("k must be a positive number")
    return v


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
    SweepOption("weight_bits", _int_in("weight_bits", 1, 8), None, compile_field="weight_bits",
                doc="bits of the neuro-core weights"),
    SweepOption("polarity", _parse_polarity, None, compile_field="polarity",
                doc="ternary spikes as binary +/- channels (split) or signed graded messages (graded)"),
    SweepOption("message_bits", _int_in("message_bits", 2, 24), None, compile_field="message_bits",
                doc="bits of the graded host -> neuro-core messages"),
    SweepOption("k", _parse_k, ("spikelm",), apply=recalibrate_k, needs_calibration=True,
                doc="SpikeLM's alpha = k * mean|m|, re-calibrated on --calibration before compiling"),
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
            raise InputFileError(f"--grid {item!r}: unknown option {name!r}; options: {', '.join(OPTIONS)}")
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
        raise InputFileError(f"sweep cannot rewrite a {family} model; families: spikegpt, spikelm, spikerwkv")


def build_key(checkpoint_sha: str, options: dict, inputs: BuildInput | None, target: str = "loihi2") -> str:
    blob = {"checkpoint": checkpoint_sha, "options": options, "spikecc": spikecc.__version__, "target": target,
            "calibration": hashlib.sha256(json.dumps(inputs.calibration).encode()).hexdigest() if inputs else None}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def model_variant(checkpoint: Path, options: dict, out: Path, inputs: BuildInput) -> Path:
    """The checkpoint to compile: `checkpoint` itself, or, where model options apply, the model they changed,
    saved as `out`/checkpoint.pt in its family's format."""
    model_options = {n: v for n, v in options.items() if OPTIONS[n].apply is not None}
    if not model_options:
        return checkpoint
    from spikecc.compiler.frontends import load_lm

    lm = load_lm(checkpoint)
    for name, value in model_options.items():
        OPTIONS[name].apply(lm.model, value, inputs)
    path = out / "checkpoint.pt"
    _save(lm.family, lm.model, lm.graph.metadata["vocab"], path)
    return path


def compile_options(options: dict):
    """The LMOptions of a combination: the defaults of `spikecc compile`, changed by its compile options."""
    from spikecc.compiler.pipeline import LMOptions

    return LMOptions(**{OPTIONS[n].compile_field: v for n, v in options.items() if OPTIONS[n].compile_field})


def build(checkpoint: Path, options: dict, cache: Path, checkpoint_sha: str, inputs: BuildInput,
          target: str = "loihi2") -> tuple[evaluate.Subject, str, bool]:
    """(the build as eval sees it, its key, whether it came from the cache). A build is always evaluated as
    read back from its cache directory, so a cached and a fresh build are the same bits."""
    from spikecc.lm_build import compile_lm

    uses_calibration = any(OPTIONS[n].needs_calibration for n in options)
    key = build_key(checkpoint_sha, options, inputs if uses_calibration else None, target)
    where = cache / key
    cached = (where / "build.json").exists()
    if not cached:
        with atomic_directory(where) as tmp:
            source = model_variant(checkpoint, options, tmp, inputs)
            lm_options = compile_options(options)
            compile_lm(source, tmp / "build", lm_options, target=target)
            write_json(tmp / "build.json", {"checkpoint": checkpoint.name, "checkpoint_sha256": checkpoint_sha,
                                            "options": options, "compile_options": lm_options.as_dict(),
                                            "target": target, "spikecc": spikecc.__version__,
                                            "calibration": inputs.calibration_source if uses_calibration else None})
    return evaluate.load_subject(where / "build"), key, cached


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
    target: str = "loihi2"
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256, "text": self.text,
            "text_sha256": self.text_sha256, "mode": self.mode, "window": self.window, "warmup": self.warmup,
            "grid": self.grid, "target": self.target,
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


def _choose_mode(mode: str) -> str:
    """What every build is evaluated in: its fixed-point graph (auto) or its float graph."""
    if mode not in MODES:
        raise InputFileError(f"sweep mode {mode!r}: a sweep evaluates its builds, in {' or '.join(MODES[1:])} "
                             "(auto: fixed); the torch reference model would not see the compile options")
    return "fixed" if mode == "auto" else mode


def _base_subject(checkpoint: Path) -> evaluate.Subject:
    """The checkpoint as exported (no compile): its family, vocabulary and float graph, to check the options and
    the texts before anything is compiled."""
    from spikecc.compiler.frontends import load_lm
    from spikecc.models.tokenizer import from_metadata

    lm = load_lm(checkpoint)
    if from_metadata(lm.graph.metadata) is None:
        raise InputFileError(f"{checkpoint}: a {lm.family} model is an encoder without a vocabulary or LM head; a "
                             "sweep evaluates language models")
    return evaluate.Subject(lm.family, str(checkpoint), graph=lm.graph, model=lm.model)


def sweep(checkpoint: str | Path, grid: dict[str, list], text: str | Path, out: str | Path,
          executor: Executor | None = None, mode: str = "auto", window: int = evaluate.DEFAULT_WINDOW,
          warmup: int = evaluate.DEFAULT_WARMUP, calibration: str | Path | None = None,
          progress: Callable[[int, int], None] | None = None,
          on_builds: Callable[[int], None] | None = None, target: str = "loihi2") -> SweepReport:
    """Build, evaluate and report every combination of `grid` (see the module docstring)."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out)
    if not checkpoint.is_file() or checkpoint.suffix == ".nir":
        raise InputFileError(f"{checkpoint}: sweep needs a checkpoint file (its options rebuild the model)")
    if not grid:
        raise InputFileError("give at least one --grid NAME=V1,V2; options: " + ", ".join(OPTIONS))
    mode = _choose_mode(mode)
    base = _base_subject(checkpoint)
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
    text = Path(text)
    base_plan = evaluate.plan(base, text, ["float"], window, warmup)  # checks the text and the windows once
    ckpt_sha = sha256_file(checkpoint)
    text_sha = hashlib.sha256(evaluate.read_text(text).encode()).hexdigest()
    cache = out / "cache"
    out.mkdir(parents=True, exist_ok=True)

    combos = combinations(grid)
    builds = []
    for i, options in enumerate(combos):
        builds.append(build(checkpoint, options, cache, ckpt_sha, inputs, target))
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

    report = SweepReport(str(checkpoint), ckpt_sha, str(text), text_sha, mode, window, warmup, grid, target)
    for b, (subject, key, cached) in enumerate(builds):
        report.rows.append(Row(combos[b], key, cached, scores[b], mapping_hooks.cores(subject),
                               mapping_hooks.energy_per_token(subject)))
    write_outputs(report, out)
    return report


# -- outputs ----------------------------------------------------------------------------------------------
def _fmt(v: float | int | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _value(v: Any) -> str:
    """An option's value as written on the command line (numbers without trailing zeros)."""
    return format(v, "g") if isinstance(v, (int, float)) else str(v)


def table(report: SweepReport):
    from rich.table import Table

    t = Table(title=f"sweep of {report.checkpoint} on {report.text} ({report.mode} mode, window {report.window}, "
                    f"warm-up {report.warmup}; cores and energy on {report.target})")
    for name in report.grid:
        t.add_column(name, justify="right")
    for col in ("perplexity", "accuracy", "nats/token", "cores", "energy/token", "build", "cached"):
        t.add_column(col, justify="left" if col in ("build", "cached") else "right")
    for r in report.rows:
        t.add_row(*(_value(r.options[n]) for n in report.grid), f"{r.score.perplexity:.4f}",
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
    """Perplexity against cores and against energy per token; where a build has none (no neuro-core part),
    perplexity per build, said in the panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.grid)
    labels = ["/".join(_value(r.options[n]) for n in names) for r in report.rows]
    ppl = [r.score.perplexity for r in report.rows]
    energy_uj = [None if r.energy_per_token is None else r.energy_per_token * 1e6 for r in report.rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (what, unit, values) in zip(axes, [("cores", f"{report.target} cores", [r.cores for r in report.rows]),
                                               ("energy per token", f"uJ on {report.target}", energy_uj)]):
        if all(v is not None for v in values):
            ax.scatter(values, ppl)
            for i, (x, y, lab) in enumerate(zip(values, ppl, labels)):  # alternate sides: fewer overlaps
                ax.annotate(lab, (x, y), fontsize=7, xytext=(4, 4 if i % 2 == 0 else -10), textcoords="offset points")
            ax.set_xlabel(f"{what} ({unit})")
            ax.set_title(f"perplexity against {what}")
        else:
            ax.plot(range(len(ppl)), ppl, "o")
            ax.set_xticks(range(len(ppl)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{what}: not known for every build (no neuro-core part)", fontsize=9)
        ax.set_ylabel(f"perplexity ({report.mode})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(report.checkpoint).name} on {Path(report.text).name}; points labelled "
                 f"{'/'.join(names)}", fontsize=10)
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
