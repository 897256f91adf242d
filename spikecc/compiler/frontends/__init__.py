"""Frontends: turn a checkpoint (or another tool's file) into spikecc's IR.

`load_lm(path)` accepts a spiking-LM checkpoint of any supported family or a `.nir` file a frontend wrote,
and returns the IR graph (with its vocabulary in the metadata) plus, for checkpoints, the torch reference
model. Families are recognised from the file itself:

    raw state dict with `emb.weight`, `blocks.0.att.time_decay`   SpikeGPT (published layout)
    dict with "family": "spikelm"                                 SpikeLM causal LM (spikecc's format)
    dict with "family": "spikerwkv"                               SpikeRWKV (spikecc's format)
    raw state dict with `blocks.0.att.time_maa_x`                 RWKV-6 x060 (public layout; vocab beside it)
    dict with "family": "spikerwkv6"                              SpikeRWKV-6, converted (spikecc convert)
    state dict with `bert.encoder.layer.*`                        SpikeLM BERT encoder (no generation)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikecc.errors import CheckpointError, first_line
from spikecc.ir import Graph, read


@dataclass
class LoadedLM:
    family: str
    graph: Graph
    model: Any = None  # the torch reference model (None when loaded from .nir)
    source: str = ""


def _sniff(path: Path) -> tuple[str, Any]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files (zip, pickle, EOF)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or another format): "
                              f"{first_line(exc)}") from None
    from spikecc.models.checkpoint import check_finite, check_size

    check_size(obj, str(path))
    check_finite(obj, str(path))
    if isinstance(obj, dict) and isinstance(obj.get("family"), str):
        return obj["family"], obj
    if isinstance(obj, dict) and "blocks.0.att.time_maa_x" in obj:
        return "rwkv6", obj
    if isinstance(obj, dict) and "emb.weight" in obj and any(k.startswith("blocks.") for k in obj):
        return "spikegpt", obj
    if isinstance(obj, dict) and any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in obj):
        return "spikelm-bert", obj
    raise CheckpointError(f"{path}: not a checkpoint of a supported family (SpikeGPT, SpikeLM, SpikeRWKV, RWKV-6); "
                          "expected SpikeGPT keys like 'emb.weight' or a dict with a 'family' entry")


def _spikegpt(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.spikegpt import export_spikegpt
    from spikecc.models.spikegpt import load_spikegpt, load_vocab

    model = load_spikegpt(obj if isinstance(obj, dict) else path).double()
    model.eval()
    graph = export_spikegpt(model)
    vocab_path = path.with_suffix(".vocab.json")
    if vocab_path.exists():
        graph.metadata["vocab"] = load_vocab(vocab_path).chars
    elif model.cfg.vocab_size <= 256:
        raise CheckpointError(f"{path}: no vocabulary file {vocab_path.name} beside the checkpoint; SpikeGPT's raw "
                              "state dict does not store one")
    return LoadedLM("spikegpt", graph, model, str(path))


def _spikerwkv(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.spikerwkv import export_spikerwkv
    from spikecc.models.spikerwkv import load_spikerwkv

    # load_spikerwkv re-reads the file and validates every key, raising its one-line CheckpointErrors
    model, vocab = load_spikerwkv(path)  # float64, eval mode
    return LoadedLM("spikerwkv", export_spikerwkv(model, vocab), model, str(path))


def _spikelm(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.spikelm import export_spikelm
    from spikecc.models.spikelm import load_spikelm

    # load_spikelm re-reads the file and validates every key, raising its one-line CheckpointErrors
    model, vocab = load_spikelm(path)  # float64, eval mode
    return LoadedLM("spikelm", export_spikelm(model, vocab.chars), model, str(path))


def _spikelm_bert(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.spikelm import BERT_FAMILY, BERT_SEQ_LEN, export_spikelm_bert
    from spikecc.models.spikelm import load_spikelm_bert

    # Build from the state dict already read (a BERT-base file is 440 MB: no second read), naming the file in errors.
    try:
        encoder = load_spikelm_bert(obj)  # float64, eval mode, code thresholds (the published checkpoints')
    except (CheckpointError, ValueError) as exc:
        msg = str(exc).removeprefix("<state_dict>: ")
        raise CheckpointError(f"{path}: {msg}") from None
    if isinstance(obj, dict):
        obj.clear()  # the encoder holds its own copies; free the raw tensors before the export copies the weights
    graph = export_spikelm_bert(encoder, min(BERT_SEQ_LEN, encoder.config.max_pos))
    return LoadedLM(BERT_FAMILY, graph, encoder, str(path))


def _rwkv6(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.rwkv6 import export_rwkv6
    from spikecc.models.rwkv6 import rwkv6_from_state_dict, vocab_beside

    model = rwkv6_from_state_dict(obj, str(path))  # float64, eval mode; one-line CheckpointErrors for bad layouts
    vocab = vocab_beside(path, model.cfg.vocab_size)
    return LoadedLM("rwkv6", export_rwkv6(model, vocab), model, str(path))


def _spikerwkv6(path: Path, obj: Any) -> LoadedLM:
    from spikecc.compiler.frontends.rwkv6 import export_rwkv6
    from spikecc.models.spikerwkv6 import load_spikerwkv6

    model, vocab = load_spikerwkv6(path)  # float64, eval mode, every key validated
    return LoadedLM("spikerwkv6", export_rwkv6(model, vocab), model, str(path))


LOADERS: dict[str, Callable[[Path, Any], LoadedLM]] = {"spikegpt": _spikegpt, "spikerwkv": _spikerwkv,
                                                        "spikelm": _spikelm, "spikelm-bert": _spikelm_bert,
                                                        "rwkv6": _rwkv6, "spikerwkv6": _spikerwkv6}


def load_lm(path: str | os.PathLike) -> LoadedLM:
    """A spiking LM from a checkpoint or an exported `.nir` file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; give a checkpoint (.pt) or an exported .nir file")
    if path.suffix == ".nir":
        graph = read(path)
        if "family" not in graph.metadata:
            raise CheckpointError(f"{path}: a NIR graph without language-model metadata; export a checkpoint "
                                  "with `spikecc export CHECKPOINT -o FILE.nir` first")
        return LoadedLM(str(graph.metadata["family"]), graph, None, str(path))
    family, obj = _sniff(path)
    if family not in LOADERS:
        raise CheckpointError(f"{path}: family '{family}' has no frontend; supported: {', '.join(sorted(LOADERS))}")
    try:
        return LOADERS[family](path, obj)
    except CheckpointError as exc:  # loaders that check a state dict name it "<state dict>": name the file
        msg = str(exc)
        for anonymous in ("<state dict>: ", "<state_dict>: "):
            msg = msg.removeprefix(anonymous)
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        # what the loaders' checks did not foresee still ends in one line naming the file
        raise CheckpointError(f"{path}: not a valid {family} checkpoint ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None


def reference_generate(lm: LoadedLM, prompt: str, n_tokens: int) -> str:
    """Greedy generation with the torch reference model of `lm` (the `--reference` path of the CLI)."""
    import importlib

    from spikecc.models.data import CharVocab

    module = importlib.import_module(f"spikecc.models.{lm.family}")
    return module.generate(lm.model, CharVocab(lm.graph.metadata["vocab"]), prompt, n_tokens)
