"""Shared pytest fixtures (generic; add new ones here rather than importing between test files)."""

from __future__ import annotations

import importlib.util
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
