"""The `spikecc` command line: click commands that parse, call and print. No logic lives here.

Every spikecc error is printed as one line `error: ...` with exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import warnings
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from spikecc.errors import GraphError, InputFileError, SpikeccError, SpikeccWarning, first_line

console = Console(highlight=False)
if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    console = Console(highlight=False, width=160)


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so every `finally` (Lava shutdown, temporary files) runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message).strip().replace("\n", " ")
    click.echo(f"warning: {text}", err=True)


def friendly_errors(fn):
    """Run a command so that the user sees one line for every outcome but success: spikecc errors and file
    errors as `error: ...` (exit 1), Ctrl-C and SIGTERM as `error: interrupted ...` (exit 130 / 143), after
    every `finally` has run (no Lava process and no temporary file is left behind); warnings as one
    `warning: ...` line each. A bug in spikecc itself also ends in one line (exit 2) unless SPIKECC_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", SpikeccWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except SpikeccError as exc:
            click.echo(f"error: {_naming_the_input(exc, kwargs)}", err=True)
            sys.exit(1)
        except (OSError, ValueError) as exc:  # e.g. unwritable output path, disk full
            click.echo(f"error: {type(exc).__name__}: {first_line(exc)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted (Ctrl-C); stopped, nothing left running or half-written", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("error: terminated (SIGTERM); stopped, nothing left running or half-written", err=True)
            sys.exit(143)
        except Exception as exc:
            if os.environ.get("SPIKECC_DEBUG"):
                raise
            click.echo(f"error: internal error in spikecc ({type(exc).__name__}: {first_line(exc)}); please report "
                       "it with the command line (SPIKECC_DEBUG=1 shows the traceback)", err=True)
            sys.exit(2)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _naming_the_input(exc: SpikeccError, kwargs: dict) -> str:
    """The error's line; an error in a graph's structure or shapes names the file the graph came from (the
    command's input) as well as the node, unless it already does."""
    message = str(exc)
    source = kwargs.get("file") or kwargs.get("checkpoint")
    if isinstance(exc, GraphError) and isinstance(source, Path) and source.name not in message:
        return f"{source}: {message}"
    return message


def load_input(path: Path) -> np.ndarray:
    """An input array from .npy (or the single array of an .npz)."""
    if not path.exists():
        raise InputFileError(f"{path}: no such input file; give a .npy array shaped (steps, *input shape)")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputFileError(f"{path}: not a numpy .npy/.npz file ({first_line(exc)})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        if len(data.files) != 1:
            raise InputFileError(f"{path}: .npz holds {len(data.files)} arrays; give a .npy or a one-array .npz")
        data = data[data.files[0]]
    if data.dtype.kind not in "biufc":
        raise InputFileError(f"{path}: array of dtype {data.dtype}; inputs must be numeric")
    return data


def progress_bar(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=total < 2)


class OneLineGroup(click.Group):
    """click's usage errors (a missing option, `--tokens 0`) as one line `error: ...` with exit status 2, like
    every other error, instead of click's usage block."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if getattr(exc, "ctx", None) else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("error: interrupted (Ctrl-C)", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineGroup)
@click.version_option(package_name="spikecc")
def main() -> None:
    """spikecc: compile spiking networks and spiking language models to Intel Loihi 2 (through Lava),
    and verify them with an event-driven CPU simulator."""


LM_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def lm_options(fn):
    """The options of commands that load a language model: --tokenizer, and SpikeGPT's --embedding / --inference."""
    for option in reversed([
        click.option("--tokenizer", type=click.Path(path_type=Path), default=None,
                     help="a Hugging Face tokenizer.json (BPE models) or character vocabulary; default: the "
                          "checkpoint's own, else tokenizer.json beside it"),
        click.option("--embedding", type=click.Choice(["binary", "real"]), default=None,
                     help="SpikeGPT: binary (training code) or real-valued embedding; default: the authors' rule "
                          "(binary only for a 77-token vocabulary) unless the .vocab.json sidecar says"),
        click.option("--inference", type=click.Choice(["training", "rescaled"]), default=None,
                     help="SpikeGPT: the training code's equations (default) or the authors' run.py "
                          "(RWKV_RESCALE_LAYER = 6: branch outputs / 2^(i//6), x / 2 every 6 blocks)"),
        click.option("--seq-len", type=click.IntRange(min=1), default=None,
                     help="SpikeLM BERT / BART: the sequence (source) length the graph is exported for "
                          "(default 128 / 64)"),
    ]):
        fn = option(fn)
    return fn


def _load(file: Path, options: dict, reference: bool = True):
    from spikecc.compiler.frontends import load_lm

    return load_lm(file, options.pop("tokenizer"), reference=reference, **options)


dt_option = click.option(
    "--dt", type=float, default=None, metavar="SECONDS",
    help="seconds one simulation step stands for (default: the file's own dt, else 1e-4); NIR files do not store "
         "it, so give the step the network was exported for")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="for language models: text to run through the simulator for activity")
@click.option("--tokens", type=click.IntRange(min=0), default=32, show_default=True,
              help="for language models: tokens to generate after the prompt when measuring activity")
@dt_option
@lm_options
@friendly_errors
def inspect(file: Path, prompt: str | None, tokens: int, dt: float | None, **options) -> None:
    """Show the nodes of a NIR FILE (type, shape, signal kind, parameters); for a spiking-LM checkpoint or
    exported LM, also the per-layer activity (firing rate, +/- split, spikes and synaptic ops per token)."""
    from spikecc.compiler.frontends import ENCODER_ONLY
    from spikecc.ir import read

    is_lm = file.suffix in LM_SUFFIXES or file.is_dir()
    if is_lm or options["tokenizer"] is not None:
        if dt is not None:
            raise InputFileError(f"{file}: --dt applies to NIR files; a language-model checkpoint runs in its own "
                                 "step units")
        g = _load(file, options, reference=False).graph
        is_lm = True
    else:
        g = read(file, dt=dt)
        is_lm = "family" in g.metadata
    _print_nodes(g, str(file), compact=is_lm)
    if is_lm and g.metadata.get("family") not in ENCODER_ONLY:  # encoders (SpikeLM BERT) have no text to run
        if "vocab" in g.metadata or "tokenizer" in g.metadata:
            _print_lm_activity(g, prompt if prompt is not None else "To be, or not to be", tokens)
        else:
            console.print("no tokenizer, so no activity run: pass --tokenizer FILE (a Hugging Face tokenizer.json)")


def _print_nodes(g, title: str, compact: bool) -> None:
    from spikecc.ir import infer_shapes, infer_signals
    from spikecc.ir.infer import load_notes

    shapes, signals = infer_shapes(g), infer_signals(g)
    order, delayed = g.schedule()
    table = Table(title=f"{title}  ({len(g.nodes)} nodes, {len(g.edges)} edges, dt={g.dt:g} s)")
    for col in ("node", "type", "shape", "output", "params", "inputs"):
        table.add_column(col, justify="right" if col == "params" else "left")
    total = 0
    shown = 0
    for name in order:
        op = g.nodes[name]
        n_params = sum(int(np.size(v)) for k, v in vars(op).items()
                       if isinstance(v, np.ndarray) and k not in ("input_type", "output_type"))
        total += n_params
        if compact and shown >= 60:
            continue
        shown += 1
        ins = ", ".join(e.src + (" (t-1)" if e in delayed else "") for e in g.in_edges(name))
        table.add_row(name, type(op).__name__, str(shapes[name]), str(signals[name]), f"{n_params:,}", ins)
    console.print(table)
    if shown < len(order):
        console.print(f"... {len(order) - shown} more nodes")
    console.print(f"{total:,} parameters; inputs: {', '.join(g.inputs())}; outputs: {', '.join(g.outputs())}; "
                  f"{_dt_text(g)}", soft_wrap=True, markup=False)
    for note in load_notes(g, shapes):
        console.print(f"note: {note}", soft_wrap=True, markup=False)


def _dt_text(g) -> str:
    return f"dt={g.dt:g} s" + ("" if "dt" in g.metadata else " (default; NIR files do not store dt: set it with --dt)")


def _print_lm_activity(g, prompt: str, tokens: int) -> None:
    from spikecc.backends.cpu.lm_runner import open_lm_simulator
    from spikecc.compiler.frontends import family_name

    lm = open_lm_simulator(g)
    run = lm.generate(prompt, tokens)
    table = Table(title=f"{family_name(lm.family)}: activity over {len(run.token_ids)} tokens "
                        f"({lm.substeps} step{'s' if lm.substeps > 1 else ''} per token), prompt {prompt!r}")
    for col in ("spiking layer", "neurons", "rate", "+ rate", "- rate", "spikes/token", "synops/token"):
        table.add_column(col, justify="left" if col == "spiking layer" else "right")
    for a in lm.activity(run):
        table.add_row(a.layer, str(a.neurons), f"{a.rate:.4f}", f"{a.positive:.4f}", f"{a.negative:.4f}",
                      f"{a.spikes_per_token:,.1f}", f"{a.synops_per_token:,.0f}")
    console.print(table)
    total = sum(c.synops for c in run.counts.values()) / max(1, len(run.token_ids))
    console.print(f"all synaptic operations (spike-driven and real-valued) per token: {total:,.0f}; "
                  f"generated: {run.text!r}")


def input_options(fn):
    """--spike-inputs and --input-range: the one input rule of simulate, lava and compile (spikecc.driver)."""
    fn = click.option("--input-range", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                      help="fixed point: real input values are sent as 8-bit graded payloads of this full scale "
                           "(values beyond it are clipped, with a warning)")(fn)
    return click.option("--spike-inputs", is_flag=True,
                        help="the Inputs carry binary spikes (0/1, sent as binary messages); without it they carry "
                             "real values (graded messages), unless the graph says otherwise")(fn)


def run_options(fixed_help: str, input_help: str = "numpy array shaped (steps, *input shape)"):
    """The arguments `simulate` and `lava` share: FILE, --input, --steps, --fixed-point, -o, input options."""

    def deco(fn):
        for option in reversed([
            click.argument("file", type=click.Path(path_type=Path)),
            click.option("--input", "input_path", required=fn.__name__ != "lava", type=click.Path(path_type=Path),
                         help=input_help),
            click.option("--steps", type=click.IntRange(min=1), default=None,
                         help="steps to run (default: all input steps)"),
            click.option("--fixed-point", is_flag=True, help=fixed_help),
            click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
                         help=".npz with one array per Output node, named after it, shaped (steps, *shape)"),
            dt_option,
        ]):
            fn = option(fn)
        return input_options(fn)

    return deco


def _prepare(file: Path, input_path: Path, steps: int | None, fixed_point: bool, output: Path | None,
             spike_inputs: bool, input_range: float, lower: bool, dt: float | None):
    """Check the output path, read the graph and the input, and prepare the run (spikecc.driver.prepare_run)."""
    from spikecc.driver import prepare_run
    from spikecc.files import check_output_file
    from spikecc.ir import read

    if output is not None:
        check_output_file(output, inputs=[file, input_path])
    g = read(file, dt=dt)
    x = load_input(input_path)
    if steps is not None and x.ndim and steps > x.shape[0]:
        raise InputFileError(f"{input_path}: asked for {steps} steps but the input holds only {x.shape[0]}; "
                             "pass a longer input or fewer steps")
    if steps is not None:
        x = x[:steps]
    return prepare_run(g, x, fixed_point=fixed_point, lower=lower or fixed_point, spike_inputs=spike_inputs,
                       input_range=input_range, source=str(file))


def _save(output: Path | None, outputs: dict) -> None:
    if output:
        from spikecc.files import write_outputs_npz

        write_outputs_npz(output, outputs)
        console.print(f"wrote {output} ({', '.join(outputs)})")


def _print_activity(counts: dict, steps: int, g) -> None:
    console.print(f"{steps} steps, {_dt_text(g)}", soft_wrap=True)
    table = Table(title=f"activity over {steps} steps")
    for col in ("node", "neurons", "events", "rate/step", "synops"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for name, c in counts.items():
        spikes = c.spiking or c.events  # real-valued nodes carry no events
        table.add_row(name, str(c.neurons), f"{c.events:,}" if spikes else "-",
                      f"{c.rate(steps):.4f}" if spikes else "-", f"{c.synops:,}")
    console.print(table)


@main.command()
@run_options(fixed_help="lower + quantize for Loihi 2 and run bit-accurately")
@friendly_errors
def simulate(file: Path, input_path: Path, steps: int | None, fixed_point: bool, output: Path | None,
             dt: float | None, spike_inputs: bool, input_range: float) -> None:
    """Simulate a NIR FILE on the CPU (spikecc's event-driven simulator)."""
    from spikecc.backends.cpu import Simulator
    from spikecc.driver import is_fixed

    g, x = _prepare(file, input_path, steps, fixed_point, output, spike_inputs, input_range, lower=False, dt=dt)
    sim = Simulator(g, mode="fixed" if is_fixed(g) else "float")
    sim.check_inputs(x, steps)  # bad input: one line now, not after a progress bar has started
    with progress_bar(len(sim.components), "simulating") as bar:
        task = bar.add_task("sim", total=len(sim.components))
        res = sim.run(x, steps=steps, progress=lambda k: bar.update(task, completed=k))
    _print_activity(res.counts, res.steps, g)
    _save(output, res.outputs)


@main.command()
@run_options(fixed_help="quantize and run Lava's bit-accurate (fixed_pt) models; a language-model build: run "
                        "its lowered.nir (fixed_pt) instead of float.nir (floating_pt)",
             input_help="a NIR FILE's input: numpy array shaped (steps, *input shape)")
@click.option("--prompt", default=None, help="a language-model BUILD: text to start from")
@click.option("--tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="a language-model BUILD: tokens to generate")
@friendly_errors
def lava(file: Path, input_path: Path | None, steps: int | None, fixed_point: bool, output: Path | None,
         dt: float | None, spike_inputs: bool, input_range: float, prompt: str | None, tokens: int) -> None:
    """Run a NIR FILE in Lava's Loihi 2 simulator (Loihi2SimCfg), or generate text with a language-model BUILD
    inside Lava (spikecc compile CHECKPOINT -o BUILD; printed as `spikecc generate` does). For a NIR FILE, each
    synapse layer adds Lava's one-step delay, so outputs lag the float NIR semantics by the number of layers on
    the path."""
    from spikecc.driver import is_build, is_fixed

    if is_build(file):
        return _lava_lm(file, prompt, tokens, fixed_point, input_path, output)
    if input_path is None:
        raise InputFileError(f"{file}: give --input (a numpy array shaped (steps, *input shape)) to run a NIR "
                             "network; --prompt runs a language-model build (spikecc compile CHECKPOINT -o BUILD)")
    if prompt is not None:
        raise InputFileError(f"{file}: --prompt needs a language-model build directory, not a NIR file; compile "
                             "the checkpoint with spikecc compile CHECKPOINT -o BUILD")
    from spikecc.backends.lava import run_lava

    lowered, xq = _prepare(file, input_path, steps, fixed_point, output, spike_inputs, input_range, lower=True,
                           dt=dt)
    mode = "fixed" if is_fixed(lowered) else "float"
    with console.status(f"running in Lava ({'fixed_pt' if mode == 'fixed' else 'floating_pt'})"):
        res = run_lava(lowered, xq, steps=steps, mode=mode)
    console.print(f"{res.steps} steps, {_dt_text(lowered)}", soft_wrap=True)
    for name, arr in res.outputs.items():
        console.print(f"{name}: shape {arr.shape}, {int(np.count_nonzero(arr)):,} non-zero outputs")
    _save(output, res.outputs)


def _lava_lm(build: Path, prompt: str | None, tokens: int, fixed_point: bool, input_path: Path | None,
             output: Path | None) -> None:
    """`spikecc lava BUILD --prompt`: the text on stdout (as `generate` prints it); progress and Lava's time per
    token on stderr."""
    from spikecc.driver import lm_build_graph
    from spikecc.lm_lava import lava_generate

    if prompt is None:
        raise InputFileError(f"{build}: a language-model build generates text: give --prompt TEXT (and --tokens N)")
    if input_path is not None or output is not None:
        raise InputFileError(f"{build}: --input and -o run NIR networks; a language-model build takes --prompt "
                             "and --tokens")
    mode = "fixed" if fixed_point else "float"
    graph = lm_build_graph(build, fixed_point)
    err = Console(stderr=True, highlight=False)
    lava_mode = "fixed_pt" if fixed_point else "floating_pt"
    bar = progress_bar(2, f"Lava {lava_mode}: tokens fed")
    with bar:
        task = bar.add_task("lava", total=None)

        def on_token(i: int, fed: int, seconds: float) -> None:
            bar.update(task, total=fed, completed=i + 1)

        gen = lava_generate(graph, prompt, tokens, mode, on_token)
    res = gen.result
    click.echo(prompt + gen.text)
    per = np.array(res.token_s[len(gen.prompt_ids):] or res.token_s)
    err.print(f"Lava {lava_mode}: {len(res.token_s)} tokens fed ({len(gen.prompt_ids)} of the prompt), "
              f"{res.period} Lava steps per graph step, {res.lava_steps:,} steps; {res.processes} OS processes; "
              f"start-up {res.startup_s:.1f} s; per generated token {np.median(per):.3f} s median "
              f"({per.min():.3f}-{per.max():.3f} s)", soft_wrap=True)


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="text to start from")
@click.option("--tokens", type=click.IntRange(min=1), default=16, show_default=True, help="tokens to generate")
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None,
              help="the checkpoint the build came from (default: the manifest's file, beside the build or here, "
                   "if its hash matches)")
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON")
@friendly_errors
def verify(build: Path, prompt: str, tokens: int, checkpoint: Path | None, as_json: bool) -> None:
    """Run a language-model BUILD everywhere (the torch reference, spikecc float and fixed point, Lava floating_pt
    and fixed_pt) on the same greedy generation and compare them pair by pair: generated tokens, per-layer
    agreement, the first (layer, step, neuron) where they diverge. Exits 1 when a pair that must be exact is not
    (reference vs spikecc float, spikecc fixed vs Lava fixed_pt, spikecc float vs Lava floating_pt)."""
    import json

    from spikecc.driver import is_build
    from spikecc.lm_lava import verify_build

    if not is_build(build):
        raise InputFileError(f"{build}: not a build directory; compile the checkpoint first (spikecc compile "
                             f"CHECKPOINT -o {build})")
    with console.status("running the reference, spikecc and Lava"):
        report = verify_build(build, prompt, tokens, checkpoint)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_verify(report)
    if not report["ok"]:
        sys.exit(1)


def _print_verify(report: dict) -> None:
    for name, text in report["texts"].items():
        console.print(f"{name:>17}: {report['prompt'] + text!r}", soft_wrap=True)
    table = Table(title=f"{report['tokens']} tokens after {report['prompt']!r}")
    for col in ("pair", "must match", "tokens", "layers equal", "first divergence"):
        table.add_column(col, justify="left" if col in ("pair", "first divergence") else "right")
    for p in report["pairs"]:
        layers = p["layer_agreement"]
        first = p["first_divergence"]
        where = "-" if first is None else (
            f"{first['layer']} step {first['step']} neuron {first['element']}: {first[p['a']]:g} vs "
            f"{first[p['b']]:g}" + (f" (fed by {', '.join(first['fed_by'])})" if first["fed_by"] else ""))
        must = ("yes" if p["required"] else "no") + ("" if p["exact"] else " (differs)")
        table.add_row(f"{p['a']} vs {p['b']}", must,
                      f"{p['tokens_agree']}/{p['tokens']}",
                      f"{sum(v == 1.0 for v in layers.values())}/{len(layers)}", where)
    console.print(table)
    for what in report["not_run"]:
        console.print(f"not run: {what}")
    console.print("verify: every required pair agrees exactly" if report["ok"] else
                  "verify: FAILED: " + "; ".join(f"{p['a']} vs {p['b']}" for p in report["pairs"]
                                                 if p["required"] and not p["exact"]), soft_wrap=True)


@main.command(name="compile")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="build directory: a new one, or an earlier spikecc build, which is replaced atomically")
@click.option("--float", "float_mode", is_flag=True, help="NIR networks: skip fixed-point quantization")
@input_options
@dt_option
@click.option("--target", default="loihi2", show_default=True,
              help="language models: target profile for the budget (loihi2, loihi1 or a .toml file)")
@click.option("--polarity", type=click.Choice(["split", "graded"]), default="split", show_default=True,
              help="language models: ternary spikes as two binary channels (split) or signed graded messages")
@click.option("--levels", type=click.Choice(["auto", "binary", "graded"]), default="auto", show_default=True,
              help="SpikeRWKV encoders: binary level channels, one graded value, or auto (graded when T = 1)")
@click.option("--weight-bits", type=click.IntRange(1, 8), default=8, show_default=True, help="language models")
@click.option("--message-bits", type=click.IntRange(2, 24), default=12, show_default=True,
              help="language models: bits of graded host-to-core messages")
@click.option("--max-error", type=click.FloatRange(min=0), default=None,
              help="language models: fail if a layer's relative quantization error (noise RMS / signal RMS on the "
                   "calibration text) exceeds this")
@click.option("--calibration-text", type=click.Path(path_type=Path), default=None,
              help="language models: text for calibration (default: held-out Shakespeare)")
@click.option("--calibration-tokens", type=click.IntRange(min=2), default=256, show_default=True,
              help="language models: tokens of the calibration text to run (at most the model's context)")
@lm_options
@friendly_errors
def compile_cmd(file: Path, out_dir: Path, float_mode: bool, spike_inputs: bool, input_range: float,
                dt: float | None, target: str, polarity: str, levels: str, weight_bits: int, message_bits: int,
                max_error: float | None, calibration_text: Path | None, calibration_tokens: int, **options) -> None:
    """Compile a NIR FILE or a spiking-LM checkpoint for Loihi 2 into a build directory: lowered graph,
    manifest, reports, Lava module (NIR networks), quantization, partition and budget reports (LMs)."""
    if _is_lm_file(file):
        _compile_lm(file, out_dir, target, polarity, levels, weight_bits, message_bits, max_error, calibration_text,
                    calibration_tokens, options)
        return
    from spikecc.driver import compile_file, lava_split_lines

    with console.status("compiling"):
        out = compile_file(file, out_dir, fixed_point=not float_mode, spike_inputs=spike_inputs,
                           input_range=input_range, dt=dt)
    for line in lava_split_lines(out):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"wrote {out}/: " + ", ".join(sorted(p.name for p in out.iterdir())))


def _is_lm_file(file: Path) -> bool:
    """A checkpoint (or save_pretrained directory), or an exported LM .nir (it carries a model family)."""
    if file.suffix in LM_SUFFIXES or file.is_dir():
        return True
    if file.suffix == ".nir" and file.is_file():
        from spikecc.ir import read

        return "family" in read(file).metadata
    return False


def _compile_lm(file: Path, out_dir: Path, target: str, polarity: str, levels: str, weight_bits: int,
                message_bits: int, max_error: float | None, calibration_text: Path | None, calibration_tokens: int,
                options: dict) -> None:
    from spikecc.compiler.pipeline import LMOptions
    from spikecc.lm_build import compile_lm, describe_pass, summary_lines

    tokenizer = options.pop("tokenizer", None)
    status = console.status("compiling")

    def stage(text: str) -> None:
        status.update(text)

    with status:
        build = compile_lm(file, out_dir, LMOptions(polarity=polarity, levels=levels, message_bits=message_bits,
                                                    weight_bits=weight_bits),
                           calibration_text=calibration_text, max_error=max_error, target=target,
                           tokenizer=tokenizer, load_options=options,
                           on_pass=lambda name, a, b: console.print(describe_pass(name, a, b), markup=False),
                           on_stage=stage, calibration_tokens=calibration_tokens)
    for line in summary_lines(build):
        console.print(line, markup=False)
    console.print(f"wrote {build.path}/: " + ", ".join(sorted(p.name for p in build.path.iterdir())))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="text to start from (encoded by the model's tokenizer)")
@click.option("--tokens", type=click.IntRange(min=1), default=64, show_default=True, help="tokens to generate")
@click.option("--reference", is_flag=True, help="run the torch reference model instead of the simulator")
@click.option("--fixed-point", is_flag=True,
              help="a build directory: run its neuro-core part bit-accurately (lowered.nir) instead of in float")
@lm_options
@friendly_errors
def generate(checkpoint: Path, prompt: str, tokens: int, reference: bool, fixed_point: bool, **options) -> None:
    """Generate text from a spiking-LM CHECKPOINT (a file, a save_pretrained directory or an exported .nir), or
    from a BUILD directory that `spikecc compile` wrote, with spikecc's simulator (greedy)."""
    from spikecc.backends.cpu.lm_runner import open_lm_simulator
    from spikecc.compiler.frontends import ENCODER_ONLY, family_name, reference_generate
    from spikecc.driver import is_build, lm_build_graph

    if is_build(checkpoint):
        if reference:
            raise InputFileError(f"{checkpoint}: --reference runs a checkpoint's torch model; give the checkpoint")
        graph = lm_build_graph(checkpoint, fixed_point)
        with console.status(f"generating {tokens} tokens in the simulator"):
            text = open_lm_simulator(graph, mode="fixed" if fixed_point else "float").generate(prompt, tokens).text
        click.echo(prompt + text)
        return
    if fixed_point:
        raise InputFileError(f"{checkpoint}: --fixed-point runs a compiled build; compile it first "
                             "(spikecc compile CHECKPOINT -o BUILD) and generate from BUILD")
    lm = _load(checkpoint, options, reference=reference)
    if lm.family in ENCODER_ONLY:
        raise InputFileError(f"{checkpoint}: a {family_name(lm.family)} is an encoder without an LM head, "
                             "so it cannot generate text; use `spikecc inspect` or `spikecc export`")
    if reference:
        if lm.model is None:
            raise InputFileError(f"{checkpoint}: --reference needs the checkpoint, not an exported .nir")
        text = reference_generate(lm, prompt, tokens)
    else:
        with console.status(f"generating {tokens} tokens in the simulator"):
            text = open_lm_simulator(lm.graph).generate(prompt, tokens).text
    click.echo(prompt + text)


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="the .nir file to write")
@lm_options
@friendly_errors
def export(checkpoint: Path, output: Path, **options) -> None:
    """Export a spiking-LM CHECKPOINT to a .nir file (NIR nodes + spikecc extension ops, tokenizer included)."""
    from spikecc.compiler.frontends import family_name
    from spikecc.files import check_output_file
    from spikecc.ir import validate, write

    check_output_file(output, inputs=[checkpoint])
    lm = _load(checkpoint, options, reference=False)
    validate(lm.graph)
    write(lm.graph, output)
    console.print(f"wrote {output}: {family_name(lm.family)} ({lm.family}), {len(lm.graph.nodes)} nodes")


@main.command()
@click.argument("build", type=click.Path(path_type=Path))
@click.option("--target", default="loihi2", show_default=True,
              help="target profile: a built-in name (loihi2, loihi1) or the path of a .toml profile")
@click.option("--chips", type=click.IntRange(min=1), default=None,
              help="chips available (fewer than needed: a violation)")
@click.option("--split", type=click.Choice(["min-cores", "fan-in", "output"]), default="min-cores", show_default=True,
              help="when to split a layer's input rows into partial sums")
@click.option("--placement", type=click.Choice(["auto", "greedy", "metis"]), default="auto", show_default=True,
              help="how cores are placed onto chips")
@click.option("--activity", type=click.Path(path_type=Path), default=None,
              help=".npz with one array per node: events per neuron per step (default: assumed rates)")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="also write budget.json, budget.txt, budget.html and plots into this new directory")
@click.option("--json", "as_json", is_flag=True, help="print the budget as JSON")
@friendly_errors
def budget(build: Path, target: str, chips: int | None, split: str, placement: str, activity: Path | None,
           report: Path | None, as_json: bool) -> None:
    """Does the compiled network in BUILD fit the target? Cores, chips, per-layer and per-core budget, traffic,
    latency and energy; exits 1 if anything is over budget (each violation names layer, resource, value, limit)."""
    import json

    from spikecc.compiler.mapping.report import budget_json, budget_text
    from spikecc.estimate import budget_of_build, write_report

    m = budget_of_build(build, target, chips=chips, split=split, placement=placement, activity=activity)
    if report is not None:
        write_report(m, report)
    click.echo(json.dumps(budget_json(m), indent=1, sort_keys=True) if as_json
               else budget_text(m, per_core=m.n_cores <= 64).rstrip())
    if m.violations:
        click.echo(f"error: {len(m.violations)} budget violation(s); first: {m.violations[0].message()}", err=True)
        sys.exit(1)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--seq-len", type=click.IntRange(min=1), default=128, show_default=True,
              help="tokens of held-out text to measure firing rates on")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="E_MAC/E_AC at 45 nm (Horowitz 2014)")
@click.option("--target", default="loihi2", show_default=True, help="target profile for a build's Loihi estimate")
@click.option("--input", "input_path", type=click.Path(path_type=Path), default=None,
              help="for a build of a non-language model: input .npy shaped (steps, *input shape)")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON (ann_mj, snn_mj, layers, ...)")
@friendly_errors
def energy(source: Path, seq_len: int, precision: str, target: str, input_path: Path | None, as_json: bool) -> None:
    """Energy of a CHECKPOINT or BUILD: the papers' model (ANN MACs x E_MAC vs SNN ACs x E_AC at measured firing
    rates), per layer and in total, in mJ; for a build also the target profile's Loihi estimate."""
    import json

    from spikecc.estimate import energy_json, energy_of

    table, mapping, measured = energy_of(source, seq_len, precision, target, input_path)
    data = energy_json(table, mapping, measured)
    if as_json:
        click.echo(json.dumps(data, indent=1, sort_keys=True))
        return
    out = Table(title=f"energy over {measured.tokens} tokens, {precision}: E_MAC {table.e_mac} pJ, "
                      f"E_AC {table.e_ac} pJ (Horowitz 2014, 45 nm)")
    for col in ("layer", "ANN MACs", "SNN ACs", "SNN MACs", "ANN mJ", "SNN mJ"):
        out.add_column(col, justify="left" if col == "layer" else "right")
    for r in data["layers"]:
        out.add_row(r["layer"], f"{r['ann_macs']:,.0f}", f"{r['snn_acs']:,.0f}", f"{r['snn_macs']:,.0f}",
                    f"{r['ann_mj']:.4g}", f"{r['snn_mj']:.4g}")
    out.add_row("total", "", "", "", f"{data['ann_mj']:.4g}", f"{data['snn_mj']:.4g}")
    console.print(out)
    console.print(f"ANN / SNN: {data['ratio']:.2f}x")
    if "loihi_mj" in data:
        lo = data["loihi"]
        console.print(f"{lo['target']} estimate: {data['loihi_mj']:.4g} mJ ({lo['token_uj']:.4g} uJ per token, "
                      f"{lo['cores']} cores on {lo['chips']} chip(s)); {lo['assumes']}")


def cluster_options(fn):
    """--workers / --scheduler / --connect-timeout: where `eval` and `sweep` run their windows."""
    from spikecc.distributed import CONNECT_TIMEOUT

    for option in reversed([
        click.option("--workers", type=int, default=1, show_default=True,
                     help="run on a local Dask cluster of N worker processes (1: in this process, no cluster)"),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="run on an existing Dask cluster, e.g. tcp://HOST:8786"),
        click.option("--connect-timeout", type=float, default=CONNECT_TIMEOUT, show_default=True,
                     help="seconds to reach the scheduler and to wait for its first worker"),
        click.option("--window", type=int, default=64, show_default=True, help="scored tokens per window"),
        click.option("--warmup", type=int, default=64, show_default=True,
                     help="context tokens fed before each window from a fresh state, not scored"),
    ]):
        fn = option(fn)
    return fn


@main.command(name="eval")
@click.argument("subject", metavar="CHECKPOINT_OR_BUILD", type=click.Path(path_type=Path))
@click.option("--text", "text", required=True, type=click.Path(path_type=Path), help="UTF-8 text to evaluate on")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["reference", "float", "fixed"]),
              help="modes to evaluate (repeatable; default: every mode the model has)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@cluster_options
@friendly_errors
def eval_cmd(subject: Path, text: Path, modes: tuple[str, ...], as_json: bool, workers: int, scheduler: str | None,
             connect_timeout: float, window: int, warmup: int) -> None:
    """Next-token accuracy and perplexity of a spiking LM on a text: the torch reference, the float IR graph in
    the simulator, and a compiled build's fixed-point graph. The text is cut into windows that each start from a
    fresh state after --warmup tokens of context, so results are identical for any number of workers."""
    import json

    from spikecc import evaluate
    from spikecc.distributed import executor

    with executor(workers, scheduler, connect_timeout) as ex:  # cluster faults first: they take the longest to find
        plan = evaluate.plan(evaluate.load_subject(subject), text, list(modes) or None, window, warmup)
        bar = progress_bar(plan.tasks, "windows")
        task = bar.add_task("eval", total=plan.tasks)
        with bar:
            result = evaluate.run(plan, ex, progress=lambda done, total: bar.update(task, completed=done))
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return
    table = Table(title=f"{subject} on {text}: {len(plan.ids):,} tokens, {len(plan.windows)} windows of {window} "
                        f"after {warmup} warm-up tokens, {result.workers} worker(s)")
    for col in ("mode", "perplexity", "accuracy", "nats/token", "scored tokens"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for m, s in result.scores.items():
        table.add_row(m, f"{s.perplexity:.4f}", f"{s.accuracy:.4f}", f"{s.nll:.4f}", f"{s.tokens:,}")
    console.print(table)
    for m, why in result.to_json()["unavailable"].items():
        console.print(f"{m}: not evaluated ({why})")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--grid", "grid", multiple=True, required=True, metavar="NAME=V1,V2",
              help="a compile option and its values (repeatable): weight_bits, polarity, message_bits, k (SpikeLM)")
@click.option("--text", "text", required=True, type=click.Path(path_type=Path), help="UTF-8 text to evaluate on")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="text that re-calibrates SpikeLM's alphas for --grid k")
@click.option("--mode", type=click.Choice(["auto", "float", "fixed"]), default="auto", show_default=True,
              help="what each build is evaluated in (auto: its fixed-point graph, bit-accurate)")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="directory for sweep.json, sweep.txt, sweep.png and the build cache")
@cluster_options
@friendly_errors
def sweep(checkpoint: Path, grid: tuple[str, ...], text: Path, calibration: Path | None, mode: str, out: Path,
          workers: int, scheduler: str | None, connect_timeout: float, window: int, warmup: int) -> None:
    """Build CHECKPOINT with every combination of the --grid options (each build cached by the hash of its
    options), evaluate each on --text, and write a table, JSON and a plot of perplexity against cores and
    energy per token."""
    from spikecc import sweep as sweeping
    from spikecc.distributed import executor

    parsed = sweeping.parse_grid(grid)
    with executor(workers, scheduler, connect_timeout) as ex, progress_bar(2, "windows") as bar:
        task = bar.add_task("sweep", total=None)
        report = sweeping.sweep(checkpoint, parsed, text, out, ex, mode=mode, window=window, warmup=warmup,
                                calibration=calibration,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(sweeping.table(report))
    console.print(f"wrote {out}/: " + ", ".join(sweeping.OUTPUTS) + ", cache/")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--levels", type=int, required=True, help="spike levels l per encoder (the paper's 3L/4L/5L: 3, 4, 5)")
@click.option("--steps", type=int, default=1, show_default=True, help="encoder time steps T per token")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="the SpikeRWKV checkpoint to write (never overwrites)")
@click.option("--calibration-text", type=click.Path(path_type=Path), default=None,
              help="text whose activations set each encoder's range (default: a short built-in text)")
@click.option("--scope", type=click.Choice(["paper", "all"]), default="paper", show_default=True,
              help="paper: encoders before the time-mix r/k/v/g linears; all: before every linear in the blocks")
@click.option("--quantile", type=float, default=1.0, show_default=True,
              help="each range is this quantile of the input magnitudes on the text (1: the largest, no clipping)")
@friendly_errors
def convert(checkpoint: Path, levels: int, steps: int, output: Path, calibration_text: Path | None,
            scope: str, quantile: float) -> None:
    """Convert an RWKV-6 (x060) CHECKPOINT to SpikeRWKV without retraining: multi-level spike encoders with a
    spiking flag (paper Eq. 3-4) in front of the linears, ranges calibrated on a short text."""
    from spikecc.models.spikerwkv6 import convert_file

    model = convert_file(checkpoint, output, levels, steps, calibration_text, scope, quantile)
    encs = model.encoders()
    console.print(f"wrote {output}: spikerwkv6, {len(encs)} encoders ({scope}), T={steps} x l={levels}")


if __name__ == "__main__":
    main()
