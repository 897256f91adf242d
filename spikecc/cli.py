"""The `spikecc` command line: click commands that parse, call and print. No logic lives here.

Every spikecc error is printed as one line `error: ...` with exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import io
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from spikecc.errors import InputFileError, SpikeccError

console = Console(highlight=False)
if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    console = Console(highlight=False, width=160)


def friendly_errors(fn):
    """Turn spikecc errors (and file errors) into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpikeccError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (OSError, ValueError) as exc:  # e.g. unwritable output path, disk full
            click.echo(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", err=True)
            sys.exit(1)

    return wrapper


def load_input(path: Path) -> np.ndarray:
    """An input array from .npy (or the single array of an .npz)."""
    if not path.exists():
        raise InputFileError(f"{path}: no such input file; give a .npy array shaped (steps, *input shape)")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputFileError(f"{path}: not a numpy .npy/.npz file ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        if len(data.files) != 1:
            raise InputFileError(f"{path}: .npz holds {len(data.files)} arrays; give a .npy or a one-array .npz")
        data = data[data.files[0]]
    if not np.issubdtype(data.dtype, np.number) and data.dtype != bool:
        raise InputFileError(f"{path}: array of dtype {data.dtype}; inputs must be numeric")
    return data


def save_outputs(path: Path, outputs: dict[str, np.ndarray]) -> None:
    from spikecc.compiler.build_dir import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **outputs)
    atomic_write_bytes(path, buf.getvalue())


def progress_bar(total: int, label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True, disable=total < 2)


@click.group()
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


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--prompt", default=None, help="for language models: text to run through the simulator for activity")
@click.option("--tokens", type=int, default=32, show_default=True,
              help="for language models: tokens to generate after the prompt when measuring activity")
@lm_options
@friendly_errors
def inspect(file: Path, prompt: str | None, tokens: int, **options) -> None:
    """Show the nodes of a NIR FILE (type, shape, signal kind, parameters); for a spiking-LM checkpoint or
    exported LM, also the per-layer activity (firing rate, +/- split, spikes and synaptic ops per token)."""
    from spikecc.compiler.frontends import ENCODER_ONLY
    from spikecc.ir import read

    is_lm = file.suffix in LM_SUFFIXES or file.is_dir()
    if is_lm or options["tokenizer"] is not None:
        g = _load(file, options, reference=False).graph
        is_lm = True
    else:
        g = read(file)
        is_lm = "family" in g.metadata
    _print_nodes(g, str(file), compact=is_lm)
    if is_lm and g.metadata.get("family") not in ENCODER_ONLY:  # encoders (SpikeLM BERT) have no text to run
        if "vocab" in g.metadata or "tokenizer" in g.metadata:
            _print_lm_activity(g, prompt if prompt is not None else "To be, or not to be", tokens)
        else:
            console.print("no tokenizer, so no activity run: pass --tokenizer FILE (a Hugging Face tokenizer.json)")


def _print_nodes(g, title: str, compact: bool) -> None:
    from spikecc.ir import infer_shapes, infer_signals

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
    console.print(f"{total:,} parameters; inputs: {', '.join(g.inputs())}; outputs: {', '.join(g.outputs())}")


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


def run_options(fixed_help: str):
    """The arguments `simulate` and `lava` share: FILE, --input, --steps, --fixed-point, -o."""

    def deco(fn):
        for option in reversed([
            click.argument("file", type=click.Path(path_type=Path)),
            click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
                         help="numpy array shaped (steps, *input shape)"),
            click.option("--steps", type=int, default=None, help="steps to run (default: all input steps)"),
            click.option("--fixed-point", is_flag=True, help=fixed_help),
            click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
                         help=".npz with one array per Output node, named after it, shaped (steps, *shape)"),
        ]):
            fn = option(fn)
        return fn

    return deco


def _run_common(file: Path, input_path: Path, steps: int | None):
    from spikecc.ir import read

    g = read(file)
    return g, load_input(input_path), steps


def _print_activity(counts: dict, steps: int) -> None:
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
def simulate(file: Path, input_path: Path, steps: int | None, fixed_point: bool, output: Path | None) -> None:
    """Simulate a NIR FILE on the CPU (spikecc's event-driven simulator)."""
    from spikecc.backends.cpu import Simulator
    from spikecc.compiler.pipeline import prepare_run

    g, x, steps = _run_common(file, input_path, steps)
    g, x = prepare_run(g, x, fixed_point=fixed_point, lower=fixed_point)
    sim = Simulator(g, mode="fixed" if fixed_point else "float")
    with progress_bar(len(sim.components), "simulating") as bar:
        task = bar.add_task("sim", total=len(sim.components))
        res = sim.run(x, steps=steps, progress=lambda k: bar.update(task, completed=k))
    _print_activity(res.counts, res.steps)
    if output:
        save_outputs(output, res.outputs)
        console.print(f"wrote {output} ({', '.join(res.outputs)})")


@main.command()
@run_options(fixed_help="quantize and run Lava's bit-accurate (fixed_pt) models")
@friendly_errors
def lava(file: Path, input_path: Path, steps: int | None, fixed_point: bool, output: Path | None) -> None:
    """Run a NIR FILE in Lava's Loihi 2 simulator (Loihi2SimCfg). Each synapse layer adds Lava's
    one-step delay, so outputs lag the float NIR semantics by the number of layers on the path."""
    from spikecc.backends.lava import run_lava
    from spikecc.compiler.pipeline import prepare_run

    g, x, steps = _run_common(file, input_path, steps)
    steps = x.shape[0] if steps is None else steps
    if steps > x.shape[0]:
        raise InputFileError(f"asked for {steps} steps but {input_path} holds only {x.shape[0]}")
    lowered, xq = prepare_run(g, x[:steps], fixed_point=fixed_point)
    with console.status(f"running {steps} steps in Lava ({'fixed_pt' if fixed_point else 'floating_pt'})"):
        res = run_lava(lowered, xq, steps=steps, mode="fixed" if fixed_point else "float")
    for name, arr in res.outputs.items():
        console.print(f"{name}: shape {arr.shape}, {int(np.count_nonzero(arr)):,} non-zero outputs")
    if output:
        save_outputs(output, res.outputs)
        console.print(f"wrote {output} ({', '.join(res.outputs)})")


@main.command(name="compile")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="build directory (replaced atomically)")
@click.option("--float", "float_mode", is_flag=True, help="skip fixed-point quantization")
@click.option("--spike-inputs", is_flag=True,
              help="the Inputs carry binary spikes (sent as binary messages) rather than real values")
@friendly_errors
def compile_cmd(file: Path, out_dir: Path, float_mode: bool, spike_inputs: bool) -> None:
    """Compile a NIR FILE for Loihi 2 into a build directory (lowered graph, manifest, report, Lava module)."""
    from spikecc.compiler.pipeline import compile_file

    with console.status("compiling"):
        out = compile_file(file, out_dir, fixed_point=not float_mode, spike_inputs=spike_inputs)
    console.print(f"wrote {out}/: " + ", ".join(sorted(p.name for p in out.iterdir())))


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="text to start from (encoded by the model's tokenizer)")
@click.option("--tokens", type=int, default=64, show_default=True, help="tokens to generate")
@click.option("--reference", is_flag=True, help="run the torch reference model instead of the simulator")
@lm_options
@friendly_errors
def generate(checkpoint: Path, prompt: str, tokens: int, reference: bool, **options) -> None:
    """Generate text from a spiking-LM CHECKPOINT (a file, a save_pretrained directory or an exported .nir) with
    spikecc's simulator (greedy)."""
    from spikecc.backends.cpu.lm_runner import open_lm_simulator
    from spikecc.compiler.frontends import ENCODER_ONLY, family_name, reference_generate

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
    from spikecc.ir import validate, write

    lm = _load(checkpoint, options, reference=False)
    validate(lm.graph)
    write(lm.graph, output)
    console.print(f"wrote {output}: {family_name(lm.family)} ({lm.family}), {len(lm.graph.nodes)} nodes")


if __name__ == "__main__":
    main()
