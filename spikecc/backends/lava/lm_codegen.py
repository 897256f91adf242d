"""The deployable Lava module of a compiled language model (BUILD/lava/): a generated `lava_lm.py` beside the data
that rebuilds the whole process graph and generates text in Lava, without spikecc.

    lm_module_files(modes, tokenizer, cores, copies, info) -> {relative path: bytes or Npz}

    lava_lm.py                  the generated module (its docstring is the user's manual)
    spikecc_lm_processes.py     copy of spikecc.backends.lava.lm_processes: the network builder run_lm_lava uses
    spikecc_processes.py        copy of spikecc.backends.lava.processes: spikecc's phase-gated processes and models
    spikecc_lava_compat.py      copy of spikecc.lava_compat: Lava 0.10's import fix for Python 3.11
    <copies>                    further copies the caller names (the driver: the ONNX stage runner)
    tokenizer.json              the model's tokenizer: {"chars": ...}, or a Hugging Face tokenizer.json
    cores.json                  the mapping's core assignment per node (empty where the build has none)
    fixed/ float/               per mode: network.json + params.npz (lm_network.lm_network_data, saved), host/ (the
                                ONNX host program's files, given by the caller)

One source of truth: the module builds the network with the copy of lm_processes.build_lm_network, from the data
spikecc.backends.lava.lm_network.lm_network_data made, which is also what run_lm_lava builds from. Copies are made
from the modules' source at write time (spikecc.backends.lava.codegen.standalone_source). The bytes depend only on
the inputs: JSON with sorted keys, .npz entries sorted with a fixed date, no timestamps or paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import spikecc
from spikecc.backends.lava.codegen import COMPAT_STEM, COPIES, PROCESSES_STEM, standalone_source
from spikecc.errors import BackendError
from spikecc.files import Npz, json_text

MODULE_NAME = "lava_lm.py"
LM_PROCESSES_STEM = "spikecc_lm_processes"
LM_PROCESSES = "spikecc.backends.lava.lm_processes"
STAGE_RUNNER_STEM = "spikecc_stage_runner"  # the caller supplies it: StageRunner.from_directory(host dir)
TOKENIZER_FILE = "tokenizer.json"
CORES_FILE = "cores.json"
HOST_DIR = "host"
MODES = ("fixed", "float")  # folder names; the module also takes Lava's tags fixed_pt, floating_pt


def lm_module_files(modes: Mapping[str, tuple[dict, dict[str, np.ndarray], dict[str, bytes]]],
                    tokenizer: str, cores: dict, copies: Mapping[str, str], info: Mapping[str, Any]) \
        -> dict[str, bytes | Npz]:
    """Every file of BUILD/lava/ by relative path (the parameter files as `Npz`: bytes() gives the file's bytes).
    `modes[mode]` = (data, arrays, host program files) for "fixed" and/or "float"; `tokenizer` the text of
    tokenizer.json; `cores` what cores.json holds ("nodes": node -> cores); `copies` further file stems -> spikecc
    module to copy (must include STAGE_RUNNER_STEM); `info` the family, context and summary written into the
    module."""
    if not modes or set(modes) - set(MODES):
        raise BackendError(f"a language-model Lava module holds the modes {', '.join(MODES)}, not {sorted(modes)}")
    if STAGE_RUNNER_STEM not in copies:
        raise BackendError(f"the module needs {STAGE_RUNNER_STEM}.py (the ONNX stage runner) among the copies")
    files: dict[str, bytes | Npz] = {}
    for stem, module in {**COPIES, LM_PROCESSES_STEM: LM_PROCESSES, **copies}.items():
        files[f"{stem}.py"] = standalone_source(module).encode("utf8")
    for mode, (data, arrays, host) in modes.items():
        files[f"{mode}/network.json"] = json_text(data).encode("utf8")
        files[f"{mode}/params.npz"] = Npz(arrays)  # streamed into its file (216M: GBs of weights)
        for name, content in host.items():
            files[f"{mode}/{HOST_DIR}/{name}"] = content
    files[TOKENIZER_FILE] = tokenizer.encode("utf8")
    files[CORES_FILE] = json_text(cores).encode("utf8")
    header = HEADER.format(
        family=info.get("family", "?"), version=spikecc.__version__, summary=info.get("summary", ""),
        modes=", ".join(modes))
    constants = "\n".join([
        f"FAMILY = {info.get('family')!r}",
        f"MODES = {list(modes)!r}  # one folder per mode beside this file",
        f"CONTEXT = {int(info.get('context') or 0)!r}  # tokens the model can take (0: no limit)",
        f"TOKENIZER = {info.get('tokenizer_kind', 'chars')!r}  # chars, or hf (needs the `tokenizers` package)",
        f"COMPAT, PROCESSES = {COMPAT_STEM!r}, {PROCESSES_STEM!r}  # copies of spikecc's modules",
        f"LM_PROCESSES, STAGE_RUNNER = {LM_PROCESSES_STEM!r}, {STAGE_RUNNER_STEM!r}",
        f"TOKENIZER_FILE, CORES_FILE, HOST_DIR = {TOKENIZER_FILE!r}, {CORES_FILE!r}, {HOST_DIR!r}",
    ])
    files[MODULE_NAME] = (header + BODY.replace("# <constants>", constants)).encode("utf8")
    return dict(sorted(files.items()))


HEADER = '''"""A spikecc-compiled {family} language model as one Lava process graph that generates text inside Lava
(written by spikecc {version} from {summary}; regenerate it with `spikecc compile`, do not edit).

    generate(prompt, tokens, mode="fixed", hardware=None) -> str        the greedy continuation of `prompt`
    generate_ids(prompt_ids, tokens, mode="fixed", hardware=None) -> list[int]
    prepare(prompt_ids, tokens, mode, hardware) -> (network, run_cfg, compile_cfg)   everything up to the run
    build(prompt_ids, tokens, mode) -> network      the live processes (lm_processes.LMNetwork), not run
    hardware_available() -> bool                    Intel's lava-loihi installed (lava.utils.loihi.is_installed)

    python lava_lm.py --prompt TEXT --tokens N [--float] [--hardware | --simulator]
        prints the prompt and its continuation, as `spikecc generate BUILD` does

Modes ({modes}): "fixed" (Lava's fixed_pt, bit-exact with `spikecc generate BUILD --fixed-point`, from the
build's lowered.nir) and "float" (floating_pt, from float.nir). It imports lava, numpy and onnxruntime, never
spikecc (and `tokenizers` only for a model with a Hugging Face tokenizer). Beside it:

    spikecc_lm_processes.py   the network builder spikecc's own Lava runs use (copy of spikecc's module)
    spikecc_processes.py      spikecc's phase-gated neuron, router and relay processes with their models (copy)
    spikecc_stage_runner.py   steps the ONNX host program in onnxruntime (copy)
    spikecc_lava_compat.py    makes lava-nc 0.10 importable on Python 3.11 (copy)
    <mode>/network.json, <mode>/params.npz    the processes, their arguments, connections, slots and port maps
    <mode>/host/              the host partition: one ONNX model per host stage, program.json, state.npz
    tokenizer.json            text <-> token ids
    cores.json                node -> the cores the mapping (budget.json) assigned, passed to Lava (below)

The network: one process per neuro-core node (Lava's Dense, LIF, GradedVec; spikecc's Elastic, SpikeRouter, Relay,
PhasedLIF), ONE host process that runs the ONNX host stages, a token source and a greedy sampler: generation runs
inside Lava, each graph step taking `period` Lava steps (the depth of its dataflow). `mode` also takes Lava's tags
"fixed_pt" and "floating_pt".

Hardware. hardware=None runs on Loihi 2 where lava-loihi is installed (Loihi2HwCfg), else in Lava's simulator
(Loihi2SimCfg); hardware=True/False forces either. spikecc's tests could not run the hardware path (lava-loihi
is not installed where spikecc is developed): they build everything up to the run call. On hardware, Lava's Dense
and GradedVec (and LIF, where one is not phase-gated) take lava-loihi's neuro-core models; the host, token source,
sampler and spikecc's own processes (the phase-gated PhasedLIF among them) have Python models only, so they run on
the host CPU (Loihi2HwCfg falls back to Python models). Loihi 2 computes in fixed
point: "float" runs in simulation only. On Intel's research cloud, select a system first (e.g.
lava.utils.loihi.use_slurm_host()).

Core assignment. cores.json (node -> [{{"chip", "core", "neurons": [lo, hi]}}]) is passed as Lava's
compile_config["partitioning"] (process name -> {{"cores": ...}}; every process is named after its node). lava-nc
0.10 reads that key in Compiler._compile_proc_groups (lava/magma/compiler/compiler.py) and hands it to each
SubCompiler.compile; the open-source PyProcCompiler ignores it, and the neuro-core subcompiler that can use it
ships with lava-loihi, whose layout for it lava-nc does not define (only Dict[str, Dict]). Lava's own Mapper
(lava/magma/compiler/mapper.py) numbers logical cores in the order it meets them. Pass partition=False to leave
the placement to Lava.
"""
'''

BODY = '''
import hashlib
import importlib.util
import json
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
# <constants>


def _beside(stem):
    """A module written next to this file, loaded by path once per Python process under a name that holds its
    content's digest (two builds' copies never mix), compiled in memory (no __pycache__ inside the build)."""
    path = HERE / (stem + ".py")
    source = path.read_bytes()
    name = stem + "_" + hashlib.sha256(source).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Lava and dataclasses look modules up through sys.modules
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


_beside(COMPAT).install_lava_py311_fix()  # before the first import of lava
_LM = _beside(LM_PROCESSES)
_PROCESSES = _beside(PROCESSES)
_HOST = _beside(STAGE_RUNNER)
_MODE_NAMES = {"fixed": "fixed", "fixed_pt": "fixed", "float": "float", "floating_pt": "float"}


def hardware_available():
    """True where Intel's lava-loihi is installed (lava.utils.loihi.is_installed)."""
    from lava.utils.loihi import is_installed

    return is_installed()


def _mode(mode):
    name = _MODE_NAMES.get(mode)
    if name not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (or fixed_pt, floating_pt), not {mode!r}")
    return name


def tokenizer():
    """(encode, decode) of the model's tokenizer: a character vocabulary, or a Hugging Face tokenizer.json (encode
    adds its special tokens, decode skips them, as the `tokenizers` library does by default)."""
    text = (HERE / TOKENIZER_FILE).read_text(encoding="utf8")
    entry = json.loads(text)
    if "chars" in entry:
        chars = entry["chars"]
        index = {c: i for i, c in enumerate(chars)}

        def encode(s):
            missing = sorted({c for c in s if c not in index})
            if missing:
                raise ValueError(f"characters {missing!r} are not in the model's vocabulary of {len(chars)}")
            return [index[c] for c in s]

        return encode, lambda ids: "".join(chars[int(i)] for i in ids)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(text)
    return (lambda s: list(tok.encode(s).ids),
            lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=True))


def cores():
    """node -> the cores the build's mapping assigned ({} where it has none)."""
    return json.loads((HERE / CORES_FILE).read_text(encoding="utf8"))["nodes"]


def build(prompt_ids, tokens, mode="fixed"):
    """The live network, set to feed `prompt_ids` and generate `tokens` (lm_processes.LMNetwork), not run."""
    folder = HERE / _mode(mode)
    data, arrays = _LM.load_lm_network(folder)
    runner = partial(_HOST.StageRunner.from_directory, folder / HOST_DIR)
    return _LM.build_lm_network(data, arrays, _PROCESSES, runner, prompt_ids, tokens)


def prepare(prompt_ids, tokens, mode="fixed", hardware=None, partition=True):
    """Everything up to the run call: (network, run config, compile config)."""
    hardware = hardware_available() if hardware is None else bool(hardware)
    if hardware and _mode(mode) != "fixed":
        raise ValueError("Loihi 2 computes in fixed point: run mode 'float' in simulation (hardware=False)")
    if not prompt_ids:
        raise ValueError("the prompt is empty; give at least one token")
    if CONTEXT and len(prompt_ids) + tokens > CONTEXT:
        raise ValueError(f"the prompt ({len(prompt_ids)} tokens) and {tokens} new tokens exceed the model's context "
                         f"of {CONTEXT}; generate fewer tokens")
    net = build(prompt_ids, tokens, mode)
    return net, _LM.run_config(net, hardware), _LM.compile_config(net, cores() if partition else None)


def generate_ids(prompt_ids, tokens, mode="fixed", hardware=None, partition=True):
    """The ids of `tokens` tokens generated greedily after `prompt_ids` in Lava. The runtime is stopped in every
    case (also on errors and Ctrl-C)."""
    net, run_cfg, compile_cfg = prepare(prompt_ids, tokens, mode, hardware, partition)
    logits = _LM.run_lm_network(net, run_cfg, compile_cfg)
    return _LM.greedy_tokens(logits, len(prompt_ids))


def generate(prompt, tokens, mode="fixed", hardware=None, partition=True):
    """The text of `tokens` tokens generated greedily after `prompt` in Lava (the continuation only)."""
    encode, decode = tokenizer()
    return decode(generate_ids(encode(prompt), tokens, mode, hardware, partition))


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Generate text with this language model in Lava.")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--float", action="store_true", help="floating_pt (simulation only) instead of fixed_pt")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--hardware", action="store_true", help="Loihi 2 (Loihi2HwCfg; needs lava-loihi)")
    where.add_argument("--simulator", action="store_true", help="Lava's simulator even where lava-loihi is installed")
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error("--tokens must be at least 1")
    hardware = True if args.hardware else False if args.simulator else None
    try:
        text = generate(args.prompt, args.tokens, "float" if args.float else "fixed", hardware)
    except (ValueError, _LM.LavaRunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(args.prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
