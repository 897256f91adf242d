"""Windowed evaluation of a spiking language model on a text: next-token accuracy and perplexity, in up to
three modes, on any number of workers, with bit-identical results.

Windows. Let the text's token ids be x_0 .. x_{N-1}. Every position p >= 1 is scored exactly once: the model
predicts x_p from what precedes it. Window k scores the positions p in [s, e) with s = 1 + kW and
e = min(s + W, N) (W = `window`). It starts from a fresh state (every membrane, recurrence and KV cache at its
initial value, as at the start of a text), is fed a warm-up context of up to C = `warmup` tokens,
x_{max(0, s-1-C)} .. x_{s-2}, whose predictions are not scored, and then its own tokens x_{s-1} .. x_{e-2}; the
logits after feeding token x_q predict x_{q+1}. A window depends on nothing but its own tokens, so windows run
anywhere, in any order, and the first window of a text sees exactly what an unwindowed run would. Models with
learned absolute positions (graph metadata `context`) need C + W <= context.

Scores. Per window: the sum over its scored positions of -log softmax(logits)[target] (nats, float64) and the
count of positions whose argmax (the lowest id on ties) is the target. Over the text:

    nll = fsum(window nlls) / tokens,   perplexity = exp(nll),   accuracy = correct / tokens

math.fsum is exactly rounded, so the total does not depend on the order windows finish in. Each window runs
single-threaded (torch and the BLAS thread pools limited to 1 thread): a multi-threaded reduction can round
differently in processes with different thread counts.

Modes (MODES): callables (subject, fed token ids) -> logits (len(fed), vocab), run from a fresh state.
    reference  the torch reference model (spikecc.models.<family>): its parallel `forward` over the window
    float      the exported IR graph in spikecc's simulator (LMSimulator), one token at a time
    fixed      the simulator in bit-accurate fixed point, on a graph whose neuro-core nodes are fixed point
               (a compiled build); the float IR graph of a checkpoint has none, so a checkpoint has no `fixed`
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikecc.distributed import Executor, InProcess
from spikecc.errors import InputFileError
from spikecc.ir import Graph

DEFAULT_WINDOW = 64
DEFAULT_WARMUP = 64


# -- what is evaluated ------------------------------------------------------------------------------------
def has_fixed_point(graph: Graph) -> bool:
    """Whether `graph` holds fixed-point nodes (the quantize passes give each node its number format)."""
    from spikecc.ir.formats import is_fixed

    return is_fixed(graph)


@dataclass
class Subject:
    """A language model as eval sees it: the float IR graph, the torch reference model, a fixed-point graph;
    any may be missing. Pickled to workers without its simulators (each process builds its own)."""

    family: str
    source: str
    graph: Graph | None = None
    model: Any = None
    fixed_graph: Graph | None = None
    lower_for_fixed: bool = False  # a checkpoint: the fixed graph is compiled (in memory) when `fixed` is asked for
    _runners: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_runners"] = {}
        return state

    def modes(self) -> dict[str, str | None]:
        """Each mode -> None where it can run, else why not."""
        return {
            "reference": None if self.model is not None else "no torch reference model (an exported graph or a build)",
            "float": None if self.graph is not None else "no float IR graph",
            "fixed": None if self.fixed_graph is not None or self.lower_for_fixed else
            "no graph with fixed-point neuro-core nodes (give a compiled build)",
        }

    @property
    def any_graph(self) -> Graph:
        return self.graph if self.graph is not None else self.fixed_graph

    def simulator(self, mode: str):
        """This thread's LMSimulator for `mode` ("float" or "fixed"), built once per process and thread."""
        from spikecc.backends.cpu.lm_runner import LMSimulator

        key = (mode, threading.get_ident())
        if key not in self._runners:
            graph = self.graph if mode == "float" else self.fixed_graph
            self._runners[key] = LMSimulator(graph) if mode == "float" else LMSimulator(graph, mode="fixed")
        return self._runners[key]


def load_subject(path: str | Path) -> Subject:
    """A checkpoint (.pt..., or a save_pretrained directory), an exported LM (.nir), or a build directory
    (`spikecc compile -o`: its float.nir and its fixed-point lowered.nir).

    A checkpoint or an exported graph gets its `fixed` mode by compiling it in memory with the default options
    (spikecc.lm_build.lower_lm: the pass spine, a calibration run, quantization): what `spikecc compile` would
    build, without writing it."""
    from spikecc.compiler.frontends import load_lm
    from spikecc.driver import require_generative
    from spikecc.ir import read
    from spikecc.models.tokenizer import from_metadata

    path = Path(path)
    if path.is_dir() and (path / "lowered.nir").exists():
        graph = read(path / "lowered.nir")
        require_generative(graph, path)
        if from_metadata(graph.metadata) is None:
            raise InputFileError(f"{path}: a build of a network that is not a language model (lowered.nir has no "
                                 "tokenizer); eval needs a language model")
        fixed = has_fixed_point(graph)
        float_graph = read(path / "float.nir") if (path / "float.nir").exists() else (None if fixed else graph)
        return Subject(str(graph.metadata.get("family", "")), str(path), graph=float_graph,
                       fixed_graph=graph if fixed else None)
    lm = load_lm(path)
    if from_metadata(lm.graph.metadata) is None:
        raise InputFileError(f"{path}: a {lm.family} model is an encoder without a vocabulary or LM head; eval "
                             "needs a language model")
    if has_fixed_point(lm.graph):
        return Subject(lm.family, str(path), graph=None, model=lm.model, fixed_graph=lm.graph)
    return Subject(lm.family, str(path), graph=lm.graph, model=lm.model, lower_for_fixed=True)


# -- windows and scores ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    index: int
    fed: tuple[int, ...]  # token ids fed from a fresh state: the warm-up context, then the window's own
    warm: int  # how many of them are warm-up (their predictions are not scored)
    targets: tuple[int, ...]  # the token each scored position should predict

    @property
    def tokens(self) -> int:
        return len(self.targets)


def make_windows(ids: Sequence[int], window: int, warmup: int) -> list[Window]:
    """The windows of the module docstring over `ids`."""
    ids = [int(i) for i in ids]
    out = []
    for k, s in enumerate(range(1, len(ids), window)):
        e = min(s + window, len(ids))
        f = max(0, s - 1 - warmup)
        out.append(Window(k, tuple(ids[f:e - 1]), s - 1 - f, tuple(ids[s:e])))
    return out


@dataclass(frozen=True)
class WindowScore:
    index: int
    nll: float  # sum of -log p(target) over the window's scored positions, nats
    correct: int
    tokens: int


def score(logits: np.ndarray, window: Window) -> WindowScore:
    rows = np.asarray(logits, dtype=np.float64)[window.warm:]
    targets = np.asarray(window.targets, dtype=np.int64)
    if rows.shape[0] != targets.size:
        raise ValueError(f"window {window.index}: {rows.shape[0]} scored rows of logits for {targets.size} targets")
    top = rows.max(axis=1)
    log_z = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    nll = math.fsum((log_z - rows[np.arange(targets.size), targets]).tolist())
    return WindowScore(window.index, nll, int(np.sum(rows.argmax(axis=1) == targets)), int(targets.size))


# -- modes ------------------------------------------------------------------------------------------------
def run_reference(subject: Subject, fed: Sequence[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        logits = subject.model(torch.tensor([list(fed)], dtype=torch.long))
    return logits[0].double().numpy()


def _run_simulator(mode: str) -> Callable[[Subject, Sequence[int]], np.ndarray]:
    def run(subject: Subject, fed: Sequence[int]) -> np.ndarray:
        lm = subject.simulator(mode)
        lm.sim.start()  # a fresh state
        return np.stack([lm.feed(t) for t in fed])

    run.__name__ = f"run_{mode}"
    return run


MODES: dict[str, Callable[[Subject, Sequence[int]], np.ndarray]] = {
    "reference": run_reference, "float": _run_simulator("float"), "fixed": _run_simulator("fixed")}


@contextlib.contextmanager
def single_threaded(mode: str) -> Iterator[None]:
    """torch and the BLAS libraries on one thread for the duration (see the module docstring)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        if mode != "reference":
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def evaluate_window(subject: Subject, mode: str, window: Window) -> WindowScore:
    """One window from a fresh state (a task: runs in whichever process the executor picks)."""
    with single_threaded(mode):
        return score(MODES[mode](subject, window.fed), window)


# -- a whole text -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeScore:
    perplexity: float
    accuracy: float
    nll: float  # nats per scored token
    tokens: int


def aggregate(scores: Sequence[WindowScore]) -> ModeScore:
    tokens = sum(s.tokens for s in scores)
    nll = math.fsum(s.nll for s in scores) / tokens
    return ModeScore(perplexity=math.exp(nll), accuracy=sum(s.correct for s in scores) / tokens, nll=nll,
                     tokens=tokens)


@dataclass
class Plan:
    subject: Subject
    text: str  # where the text came from
    ids: list[int]
    windows: list[Window]
    modes: list[str]
    window: int
    warmup: int

    @property
    def tasks(self) -> int:
        return len(self.windows) * len(self.modes)


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such text file; give a UTF-8 text file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded); give a UTF-8 "
                             "file") from None


def encode(subject: Subject, text: str, source: str) -> list[int]:
    """Token ids of `text` by the model's own encoder (LMSimulator.encode); an unknown character is named, the
    first in the text, with its line and column."""
    sim = subject.simulator("float" if subject.graph is not None else "fixed")
    try:
        return list(sim.encode(text))
    except InputFileError as exc:
        vocab = getattr(sim, "vocab", None)
        if not isinstance(vocab, str):
            raise InputFileError(f"{source}: {exc}") from None
        pos = next(i for i, c in enumerate(text) if c not in vocab)
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise InputFileError(f"{source}: character {text[pos]!r} (line {line}, column {col}) is not in the model's "
                             f"vocabulary of {len(vocab)} characters; remove or replace it") from None


def plan(subject: Subject, text_path: str | Path, modes: Sequence[str] | None = None, window: int = DEFAULT_WINDOW,
         warmup: int = DEFAULT_WARMUP) -> Plan:
    """Check the options and the text, and cut it into windows. `modes` None: every mode the subject has."""
    available = subject.modes()
    if modes is None:
        modes = [m for m, why in available.items() if why is None]
    for m in modes:
        if m not in MODES:
            raise InputFileError(f"unknown mode {m!r}; modes: {', '.join(MODES)}")
        if available[m] is not None:
            raise InputFileError(f"{subject.source}: mode {m!r} is not available: {available[m]}")
    if window < 1 or warmup < 0:
        raise InputFileError(f"--window must be >= 1 and --warmup >= 0, got {window} and {warmup}")
    if "fixed" in modes and subject.fixed_graph is None:  # a checkpoint: compile it as `spikecc compile` would
        from spikecc.lm_build import lower_lm

        subject.fixed_graph = lower_lm(subject.graph).fixed_graph
    context = int(subject.any_graph.metadata.get("context", 0) or 0)
    if context and window + warmup > context:
        raise InputFileError(f"{subject.source}: --window {window} + --warmup {warmup} exceed the model's context of "
                             f"{context} tokens (learned absolute positions); keep their sum within {context}")
    text = read_text(text_path)
    ids = encode(subject, text, str(text_path))
    if len(ids) < 2:
        raise InputFileError(f"{text_path}: {len(ids)} token(s); evaluation needs at least 2 (one to predict from)")
    return Plan(subject, str(text_path), ids, make_windows(ids, window, warmup), list(modes), window, warmup)


@dataclass
class Evaluation:
    plan: Plan
    scores: dict[str, ModeScore]
    workers: int

    def to_json(self) -> dict:
        p = self.plan
        unavailable = {m: why for m, why in p.subject.modes().items() if why is not None}
        return {
            "subject": p.subject.source, "family": p.subject.family, "text": p.text, "text_tokens": len(p.ids),
            "window": p.window, "warmup": p.warmup, "windows": len(p.windows),
            "modes": {m: vars(s) for m, s in self.scores.items()},
            "unavailable": unavailable,
        }


def run(p: Plan, executor: Executor | None = None,
        progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Evaluate every window in every mode of the plan on `executor` (default: this process)."""
    ex = executor or InProcess()
    shared = ex.share(p.subject)
    tasks = [(shared, m, w) for m in p.modes for w in p.windows]
    done: dict[int, WindowScore] = {}
    for i, s in ex.run(evaluate_window, tasks):
        done[i] = s
        if progress:
            progress(len(done), len(tasks))
    n = len(p.windows)
    scores = {m: aggregate([done[k * n + j] for j in range(n)]) for k, m in enumerate(p.modes)}
    return Evaluation(p, scores, ex.workers)
