"""Shared pytest fixtures (generic; add new ones here rather than importing between test files)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"


def load_example_module(relpath: str) -> ModuleType:
    """Import a module that lives under examples/ (not an installed package), once per session."""
    path = EXAMPLES_DIR / relpath
    name = "spikecc_example_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES_DIR


@pytest.fixture(scope="session")
def networks_dir() -> Path:
    """examples/networks: the committed NIR files exported by snntorch and their input spike trains."""
    return EXAMPLES_DIR / "networks"


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A fresh empty directory per test (pytest's tmp_path, named for what tests use it for)."""
    d = tmp_path / "work"
    d.mkdir()
    return d


def run_fresh_python(args: list[str], cwd: Path, timeout: float = 600) -> tuple[int, str, str]:
    """`python -I ARGS`: this interpreter without PYTHONPATH, user site or the current directory on sys.path (the
    children then check that they never import spikecc), in a session of its own, so that a hang takes every OS
    process it started (Lava's) down with it. Returns (returncode, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-I", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


@pytest.fixture(scope="session")
def fresh_python():
    """run_fresh_python: a fresh Python process of its own session (generated Lava modules, without spikecc)."""
    return run_fresh_python


@pytest.fixture(scope="session")
def snntorch_nets() -> ModuleType:
    """examples/networks/snntorch_nets.py: rebuilds the example torch networks with their exact weights."""
    return load_example_module("networks/snntorch_nets.py")


def _assert_checkpoint_error(path: Path, obj, *fragments: str) -> None:
    """Save `obj` (unless None) to `path`; `load_lm` and `spikecc generate` must both report it in one line
    naming the file and each of `fragments`, the CLI with exit status 1."""
    import torch
    from click.testing import CliRunner

    from spikecc.cli import main
    from spikecc.compiler.frontends import load_lm
    from spikecc.errors import CheckpointError

    if obj is not None:
        torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        load_lm(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    for f in fragments:
        assert f in msg, (f, msg)
    result = CliRunner().invoke(main, ["generate", str(path), "--prompt", "ab", "--tokens", "4"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {msg}", result.output


@pytest.fixture
def checkpoint_error():
    """`checkpoint_error(path, obj, *fragments)`: a bad checkpoint gives one-line errors (see above)."""
    return _assert_checkpoint_error


def _write_nir_omitting_none(path: Path, graph, version: str | None = None) -> None:
    """Write a `nir.NIRGraph` in NIR's HDF5 layout (as nir.write does) but leave out every field whose value is
    None, the way older NIR releases wrote convolutions (nir 0.2 had no input_shape field). nir 1.0.8's own
    writer fails on such fields (exporters such as norse 1.1.0 and sinabs 3.1.3 leave Conv2d.input_shape None).
    `version` overrides the version string stored in the file."""
    import h5py
    import nir

    def write_group(group, d: dict) -> None:
        for k, v in d.items():
            if v is None or (k == "metadata" and not v):
                continue
            if isinstance(v, dict):
                write_group(group.create_group(str(k)), v)
            elif isinstance(v, str):
                group.create_dataset(k, data=v, dtype=h5py.string_dtype())
            else:
                group.create_dataset(k, data=v.detach().numpy() if hasattr(v, "detach") else v)

    with h5py.File(path, "w") as f:
        f.create_dataset("version", data=version or nir.version, dtype=h5py.string_dtype())
        write_group(f.create_group("node"), graph.to_dict())


@pytest.fixture
def write_nir_omitting_none():
    """`write_nir_omitting_none(path, graph, version=None)`: NIR HDF5 without the None-valued fields (see above)."""
    return _write_nir_omitting_none


def _cli_one_line_error(args: list[str]) -> str:
    """Run `spikecc ARGS` in this process; it must fail with exit status 1 and one `error: ...` line on stderr,
    which is returned."""
    from click.testing import CliRunner

    from spikecc.cli import main

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.fixture
def one_line_error():
    """`one_line_error(args)`: the CLI's one-line error for `spikecc ARGS` (see above)."""
    return _cli_one_line_error


def _reference_run(model, vocab: str, prompt: str, n: int):
    """Greedy generation through a spike-encoding LM's `step_detailed` (SpikeRWKV, SpikeRWKV-6): (ids fed, logits
    after each, signed spikes (T*l*C per token, the MultiLevelEncoder op's order) per encoder)."""
    import numpy as np
    import torch

    ids = [vocab.index(c) for c in prompt]
    state = model.init_state()
    logits, spikes = [], {name: [] for name in model.encoders()}
    with torch.no_grad():
        i = 0
        while True:
            out = model.step_detailed(ids[i], state)
            state = out.state
            logits.append(out.logits.numpy())
            for name in spikes:
                spikes[name].append((out.spikes[name] * out.polarity[name]).numpy().reshape(-1))
            i += 1
            if i == len(ids):
                if len(ids) == len(prompt) + n:
                    break
                ids.append(int(torch.argmax(out.logits)))
    return ids, np.stack(logits), {k: np.stack(v) for k, v in spikes.items()}


def _compare_with_reference(model, graph, vocab: str, prompt: str, n: int):
    """Simulate `graph` and the torch `model` on the same greedy run of n tokens after `prompt`; asserts identical
    tokens and text, returns (max |logit diff|, spike mismatches, spikes fired, negative spikes)."""
    import numpy as np

    from spikecc.backends.cpu.lm_runner import LMSimulator
    from spikecc.models.spikerwkv import generate

    run = LMSimulator(graph).generate(prompt, n, record=True)
    ids, ref_logits, ref_spikes = _reference_run(model, vocab, prompt, n)
    assert run.token_ids == ids, "generated tokens differ from the torch reference"
    assert prompt + run.text == prompt + generate(model, vocab, prompt, n)
    assert set(run.spikes) == set(ref_spikes), "the simulator's spiking nodes are not the reference's encoders"
    mismatches = fired = negative = 0
    for name, ref in ref_spikes.items():
        sim = run.spikes[name][:, 0, :]  # one sub-step per token
        assert sim.shape == ref.shape, name
        mismatches += int(np.count_nonzero(sim != ref))
        fired += int(np.count_nonzero(ref))
        negative += int(np.count_nonzero(ref < 0))
    return float(np.abs(run.logits - ref_logits).max()), mismatches, fired, negative


@pytest.fixture
def compare_with_reference():
    """`compare_with_reference(model, graph, vocab, prompt, n)`: an exported spike-encoding LM simulated by spikecc
    against its torch reference (see above)."""
    return _compare_with_reference


def _tiny_rwkv6(seed: int = 0, vocab_size: int = 30):
    """A small random float64 RWKV-6 (d_model 32, 2 layers, 4 heads of 8, low-rank sizes 4 and 6), every weight
    moved well away from its initialisation so that mixes, decays and gates all matter."""
    import torch

    from spikecc.models.rwkv6 import RWKV6, RWKV6Config

    torch.manual_seed(seed)
    cfg = RWKV6Config(vocab_size=vocab_size, d_model=32, n_layers=2, head_size=8, d_mix_lora=4, d_decay_lora=6)
    model = RWKV6(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.fixture(scope="session")
def tiny_rwkv6():
    """`tiny_rwkv6(seed=0, vocab_size=30)`: a new small random float RWKV-6 model (see above)."""
    return _tiny_rwkv6


def _train_bpe(vocab_size: int = 400, chars: int = 100_000, pad_to: int | None = None):
    """A byte-level BPE tokenizer (GPT-2 / GPT-NeoX style, `tokenizers` library) trained on the first `chars`
    characters of the offline Shakespeare corpus; deterministic. `pad_to`: added tokens ``<t0>``, ``<t1>`` ... up to
    that many ids, so that every id of a large random model decodes to text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from spikecc.models.data import shakespeare_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([shakespeare_text()[:chars]], trainer=trainer)
    if pad_to is not None:
        tok.add_tokens([f"<t{i}>" for i in range(pad_to - tok.get_vocab_size())])
    return tok


@pytest.fixture(scope="session")
def train_bpe():
    """`train_bpe(vocab_size=400, chars=100_000, pad_to=None)`: a BPE `tokenizers.Tokenizer` trained here, no
    download."""
    return _train_bpe


@pytest.fixture(scope="session")
def made_once(tmp_path_factory):
    """`made_once(name, make) -> Path`: a folder that `make(folder)` fills once per test session, also when
    pytest-xdist spreads a module's tests over several workers (each would otherwise build the module's fixtures
    again): the workers share the parent of their base temporary folders; the first to take the lock makes the
    folder, the others wait for it and reuse it. A failed `make` leaves no folder, so the next caller tries again."""
    import fcntl
    import os
    import shutil

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent

    def made(name: str, make) -> Path:
        folder, done = root / name, root / f"{name}.done"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                done.touch()
        return folder

    return made


@pytest.fixture(scope="session")
def shipped_lm_build(made_once):
    """compile(name) -> the build of examples/checkpoints/NAME-shakespeare.pt compiled with default options
    (`spikecc compile CHECKPOINT -o BUILD`), once per session (also across pytest-xdist workers)."""
    from spikecc.lm_build import compile_lm

    def compile(name: str) -> Path:
        ckpt = EXAMPLES_DIR / "checkpoints" / f"{name}-shakespeare.pt"
        return made_once(f"shipped-{name}-build", lambda d: compile_lm(ckpt, d / "build")) / "build"

    return compile
