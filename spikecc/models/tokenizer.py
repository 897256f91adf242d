"""Tokenizers: one interface over spikecc's character vocabularies and Hugging Face ``tokenizer.json`` files.

A spiking LM reads token ids. Its tokenizer turns a prompt into ids and generated ids back into text:

* ``chars`` (`CharTokenizer`): id = position of the character in a string of distinct characters. spikecc's
  character models use it (the ``.vocab.json`` sidecar of a SpikeGPT state dict, the ``vocab`` entry of spikecc's
  SpikeLM and SpikeRWKV checkpoints), as does the authors' 77-character BookCorpus SpikeGPT.
* ``hf`` (`HFTokenizer`): a Hugging Face ``tokenizers`` file, e.g. the GPT-NeoX BPE ``20B_tokenizer.json`` that the
  authors' ``run.py`` loads for SpikeGPT-216M (ridgerchu/SpikeGPT), or the ``tokenizer.json`` a ``save_pretrained``
  directory holds. Encoding adds the file's special tokens (its post-processor), as ``tokenizers.Tokenizer.encode``
  does by default; decoding skips special tokens, as ``Tokenizer.decode`` does by default.

An exported graph carries its tokenizer in its metadata (`to_metadata`: ``vocab`` for characters, ``tokenizer``
for the JSON text of a Hugging Face file), so a ``.nir`` file generates text on its own (`from_metadata`).

This module imports no torch: the simulator's LM runner uses it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from spikecc.errors import InputFileError
from spikecc.models.data import CharVocab

__all__ = [
    "CharTokenizer",
    "HFTokenizer",
    "Tokenizer",
    "find_tokenizer",
    "from_metadata",
    "load_tokenizer",
    "require_tokenizer",
]

#: File names looked for beside a checkpoint, in this order (``{stem}`` is the checkpoint's name without suffix).
BESIDE = ("{stem}.tokenizer.json", "tokenizer.json")


class Tokenizer(ABC):
    """Text <-> token ids."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of ids the tokenizer knows (ids 0 .. size - 1)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; raises `InputFileError` naming what cannot be encoded."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``."""

    @abstractmethod
    def to_metadata(self) -> dict[str, str]:
        """The graph-metadata entries that store this tokenizer (read back by `from_metadata`)."""

    def windows(self, text: str, length: int) -> list[list[int]]:
        """``text`` as consecutive windows of exactly ``length`` ids (a last, shorter window is dropped): the
        sequences an encoder reads whole."""
        ids = self.encode(text)
        return [ids[i:i + length] for i in range(0, len(ids) - length + 1, length)]

    def check_model(self, vocab_size: int, source: str) -> None:
        """Refuse a tokenizer that produces ids the model has no embedding row for."""
        if self.size > vocab_size:
            raise InputFileError(f"{source}: the tokenizer has {self.size} tokens but the model's vocabulary has "
                                 f"{vocab_size}; give the tokenizer the model was trained with")


class CharTokenizer(Tokenizer):
    """Character vocabulary (`spikecc.models.data.CharVocab`): id i is ``chars[i]``."""

    kind = "chars"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise InputFileError("a character vocabulary must hold distinct characters")
        self.vocab = CharVocab(chars)

    @property
    def chars(self) -> str:
        return self.vocab.chars

    @property
    def size(self) -> int:
        return self.vocab.size

    def encode(self, text: str) -> list[int]:
        try:
            return self.vocab.encode(text).tolist()
        except ValueError as exc:  # names the characters outside the vocabulary
            raise InputFileError(f"prompt {exc} of {self.size}") from None

    def decode(self, ids: Iterable[int]) -> str:
        return self.vocab.decode(ids)

    def to_metadata(self) -> dict[str, str]:
        return {"vocab": self.chars}

    def check_model(self, vocab_size: int, source: str) -> None:
        if self.size != vocab_size:  # every character id must be a row of the embedding, and every row a character
            raise InputFileError(f"{source}: the vocabulary has {self.size} characters but the model {vocab_size}")


class HFTokenizer(Tokenizer):
    """A Hugging Face ``tokenizers`` tokenizer, from the text of its ``tokenizer.json``."""

    kind = "hf"

    def __init__(self, json_text: str, source: str = "<tokenizer.json>") -> None:
        from tokenizers import Tokenizer as _HF

        try:
            self._tok = _HF.from_str(json_text)
        except Exception as exc:  # the Rust parser raises a bare Exception with serde's message
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise InputFileError(f"{source}: not a Hugging Face tokenizer.json ({first})") from None
        self.json_text = json_text
        self.source = source

    @property
    def size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` without special tokens; ids the file does not know decode to nothing (a model's
        embedding may have more rows than its tokenizer has tokens, as SpikeGPT-216M's 50277 for 50254 + 23)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def windows(self, text: str, length: int) -> list[list[int]]:
        """Windows of ``length`` ids as the tokenizer itself cuts a long text (truncation with overflow, no stride):
        each window carries the special tokens of the file's post-processor (BERT's ``[CLS] ... [SEP]``), as a
        sequence encoded on its own would; a last, shorter window is dropped."""
        from tokenizers import Tokenizer as _HF

        special = self._tok.num_special_tokens_to_add(False)
        if length <= special:
            raise InputFileError(f"{self.source}: windows of {length} tokens leave no room beside the {special} "
                                 "special tokens the tokenizer adds")
        tok = _HF.from_str(self.json_text)  # a copy: truncation is a setting of the tokenizer object
        tok.enable_truncation(max_length=length, stride=0)
        enc = tok.encode(text)
        return [list(e.ids) for e in (enc, *enc.overflowing) if len(e.ids) == length]

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. ``"</s>"``), or None."""
        return self._tok.token_to_id(token)

    def to_metadata(self) -> dict[str, str]:
        return {"tokenizer": self.json_text}


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a file: a Hugging Face ``tokenizer.json`` or a spikecc character vocabulary
    (``{"chars": "..."}``, the ``.vocab.json`` that spikecc's SpikeGPT training script writes)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such tokenizer file; give a Hugging Face tokenizer.json")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputFileError(f"{p}: not a JSON tokenizer file ({first})") from None
    if isinstance(data, dict) and isinstance(data.get("chars"), str):
        return CharTokenizer(data["chars"])
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return HFTokenizer(text, str(p))
    raise InputFileError(f"{p}: neither a Hugging Face tokenizer.json (no 'model' entry) nor a character "
                         "vocabulary (no 'chars' entry)")


def find_tokenizer(checkpoint: str | Path) -> Path | None:
    """A tokenizer file beside a checkpoint: ``{stem}.tokenizer.json`` or ``tokenizer.json`` in its directory (inside
    it, for a ``save_pretrained`` directory); None if there is none."""
    p = Path(checkpoint)
    folder, stem = (p, "") if p.is_dir() else (p.parent, p.stem)
    for pattern in BESIDE:
        if "{stem}" in pattern and not stem:
            continue
        candidate = folder / pattern.format(stem=stem)
        if candidate.is_file():
            return candidate
    return None


def from_metadata(meta: Mapping[str, Any]) -> Tokenizer | None:
    """The tokenizer stored in graph metadata (`Tokenizer.to_metadata`), or None if the graph has none."""
    if isinstance(meta.get("tokenizer"), str):
        return HFTokenizer(meta["tokenizer"], "graph metadata 'tokenizer'")
    if isinstance(meta.get("vocab"), str):
        return CharTokenizer(meta["vocab"])
    return None


def require_tokenizer(meta: Mapping[str, Any], what: str) -> Tokenizer:
    """`from_metadata`, or a one-line `InputFileError` that says how to give ``what`` (a graph, a file) a tokenizer."""
    tok = from_metadata(meta)
    if tok is None:
        raise InputFileError(f"{what} has no tokenizer: pass --tokenizer FILE (a Hugging Face tokenizer.json) or put "
                             "tokenizer.json beside the checkpoint (a character model: its .vocab.json)")
    return tok
