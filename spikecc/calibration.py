"""What an encoder is calibrated on: whole sequences of token ids for the calibration run of `spikecc compile`
(spikecc.lm_build), where a generative model is teacher-forced over a text.

An encoder (SpikeLM's BERT layout) has no vocabulary of its own and no LM head: it reads sequences of L token ids
(the graph's ``seq_len``) at once. Its calibration run feeds consecutive whole sequences of L ids, each unpadded
(attention mask all ones) and one sentence (token types all zero), each for its T spike steps:

* with a tokenizer (``--tokenizer tokenizer.json``, a BERT WordPiece tokenizer in Hugging Face ``tokenizers``
  format, or one beside the checkpoint): the calibration text (default: the held-out tail of the offline
  Shakespeare corpus, as for the generative models) cut into windows of L ids the way the tokenizer cuts a long
  text, each with its special tokens (``[CLS] ... [SEP]``);
* without one, a FALLBACK: pseudo-random ids drawn uniformly from the model's vocabulary with a fixed seed.
  Real text has a skewed token distribution and structure random ids lack, so the ranges measured on them are a
  stand-in; the build's manifest and the compile output say which was used.

The number of sequences is ``tokens // L`` (at least one): ``--calibration-tokens`` counts tokens, rounded down to
whole sequences.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from spikecc.errors import InputFileError
from spikecc.ir import Graph

CALIBRATION_SEED = 0  # the fallback's pseudo-random ids
TEXT_CHARS_PER_TOKEN = 8  # held-out text taken per calibration token (WordPiece averages ~4 characters a token)


@dataclass(frozen=True)
class EncoderCalibration:
    """Sequences for an encoder's calibration run (module docstring)."""

    sequences: np.ndarray  # (n, L) token ids
    source: str  # "tokenizer" (text through the tokenizer) or "random-ids" (the fallback)
    text_name: str  # where the text came from (a file name, "shakespeare-validation"), or "" for random ids

    @property
    def ids(self) -> list[int]:
        """All ids, sequence after sequence (what the calibration and report runs feed)."""
        return [int(i) for i in self.sequences.reshape(-1)]

    @property
    def fallback(self) -> bool:
        return self.source == "random-ids"

    def manifest(self) -> dict:
        """The build manifest's `calibration` entry."""
        digest = hashlib.sha256(self.sequences.astype("<i8").tobytes())  # of the ids run
        out = {"tokens": int(self.sequences.size), "sequences": int(self.sequences.shape[0]),
               "seq_len": int(self.sequences.shape[1]), "ids_sha256": digest.hexdigest(), "source": self.source}
        if self.fallback:
            out["seed"] = CALIBRATION_SEED
            out["note"] = "pseudo-random token ids: a fallback for an encoder compiled without a tokenizer"
        else:
            out["text"] = self.text_name
        return out

    def describe(self) -> str:
        """One line for the compile output."""
        n, length = self.sequences.shape
        if self.fallback:
            return (f"calibration: {n} sequence(s) of {length} pseudo-random token ids (seed {CALIBRATION_SEED}), a "
                    "FALLBACK: no tokenizer was given; pass --tokenizer tokenizer.json to calibrate on text")
        return f"calibration: {n} sequence(s) of {length} tokens of {self.text_name} through the graph's tokenizer"


def encoder_calibration(graph: Graph, text: str | None, tokens: int, text_name: str | None = None) \
        -> EncoderCalibration:
    """The calibration sequences of an encoder graph (module docstring). `text`: the calibration text (None: the
    held-out Shakespeare tail), used only when the graph carries a tokenizer; `tokens`: how many ids to run,
    rounded down to whole sequences of the graph's ``seq_len`` (at least one)."""
    from spikecc.models.data import heldout_text
    from spikecc.models.tokenizer import from_metadata

    meta = graph.metadata
    length = int(meta["seq_len"])
    count = max(1, int(tokens) // length)
    tokenizer = from_metadata(meta)
    if tokenizer is None:
        if text is not None:
            raise InputFileError(f"{text_name or 'the calibration text'}: an encoder reads text through a tokenizer "
                                 "and the graph has none; pass --tokenizer tokenizer.json (its WordPiece tokenizer)")
        rng = np.random.default_rng(CALIBRATION_SEED)
        return EncoderCalibration(rng.integers(0, int(meta["vocab_size"]), size=(count, length)), "random-ids", "")
    name = text_name or "shakespeare-validation"
    if text is None:
        text = heldout_text()[:count * length * TEXT_CHARS_PER_TOKEN]
    windows = tokenizer.windows(text, length)[:count]
    if not windows:
        raise InputFileError(f"the calibration text ({name}) gives fewer than {length} tokens, the encoder's "
                             "sequence length; give a longer --calibration-text")
    return EncoderCalibration(np.asarray(windows, dtype=np.int64), "tokenizer", name)
