"""Frontends: turn a checkpoint (or another tool's file) into spikecc's IR.

`load_lm(path)` accepts a spiking-LM checkpoint of any supported family or a `.nir` file a frontend wrote,
and returns the IR graph (with its tokenizer in the metadata) plus, for checkpoints, the torch reference
model. Families are recognised from the file itself:

    raw state dict with `emb.weight`, `blocks.0.att.time_decay`   SpikeGPT (published layout)
    dict with "family": "spikelm"                                 SpikeLM-style causal decoder (spikecc's format)
    dict with "family": "spikerwkv"                               SpikeRWKV (spikecc's format)
    state dict with `bert.encoder.layer.*`                        SpikeLM BERT encoder (no generation)
    state dict with `model.decoder.layers.*.encoder_attn.*`       SpikeLM BART encoder-decoder (Hugging Face keys)
    raw state dict with `blocks.0.att.time_maa_x`                 RWKV-6 x060 (public layout; vocab beside it)
    dict with "family": "spikerwkv6"                              SpikeRWKV-6, converted (spikecc convert)

Every checkpoint is checked before a model is built: its tensors must be finite and must fit in memory (a corrupt
header can declare terabytes), and whatever a loader's own checks do not foresee still ends in one line naming
the file.

A checkpoint is a file (`torch.save`) or a Hugging Face `save_pretrained` directory: `config.json` with
`model.safetensors` or `pytorch_model.bin` (sizes and head counts are then read from `config.json`).

Tokenizer: the `tokenizer` argument (a Hugging Face tokenizer.json or a character vocabulary file), else the one the
checkpoint holds (the characters of spikecc's SpikeLM and SpikeRWKV checkpoints, a SpikeGPT's `.vocab.json`
sidecar), else a tokenizer file found beside it (`spikecc.models.tokenizer.find_tokenizer`).
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


@dataclass
class Pretrained:
    """A Hugging Face `save_pretrained` directory: its state dict and its config.json (empty if absent)."""

    state_dict: dict
    config: dict
    weights: Path


def _sniff(path: Path) -> tuple[str, Any]:
    import torch

    if path.is_dir() or path.suffix == ".safetensors":
        return _sniff_pretrained(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files (zip, pickle, EOF)
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or another format): "
                              f"{first_line(exc)}") from None
    _check_tensors(obj, path)
    if isinstance(obj, dict) and isinstance(obj.get("family"), str):
        return obj["family"], obj
    return _family_of(obj, path), obj


def _check_tensors(obj: Any, path: Path) -> None:
    from spikecc.models.checkpoint import check_finite, check_size

    check_size(obj, str(path))
    check_finite(obj, str(path))


def _family_of(obj: Any, path: Path, config: dict | None = None) -> str:
    """The family of a raw state dict, from its keys (and a config.json's `model_type`)."""
    keys = [k for k in obj if isinstance(k, str)] if isinstance(obj, dict) else []
    model_type = str((config or {}).get("model_type", ""))
    if "blocks.0.att.time_maa_x" in keys:  # before SpikeGPT: RWKV-6 has emb.weight and blocks.* too
        return "rwkv6"
    if "emb.weight" in keys and any(k.startswith("blocks.") for k in keys):
        return "spikegpt"
    if model_type in ("bart", "mbart") or any(".encoder_attn." in k for k in keys):
        return "spikelm-bart"
    if model_type == "bert" or any(".encoder.layer." in k or k.startswith("encoder.layer.") for k in keys):
        return "spikelm-bert"
    raise CheckpointError(f"{path}: not a checkpoint of a supported family (SpikeGPT, SpikeLM, SpikeRWKV, RWKV-6); "
                          "expected SpikeGPT keys like 'emb.weight', Hugging Face BERT/BART keys or a dict with a "
                          "'family' entry")


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _sniff_pretrained(path: Path) -> tuple[str, Pretrained]:
    """A `save_pretrained` directory (config.json plus model.safetensors or pytorch_model.bin), or a .safetensors
    file (with the config.json beside it, if any)."""
    import json

    import torch

    folder = path if path.is_dir() else path.parent
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None) if path.is_dir() else path
    if weights is None:
        sharded = sorted(p.name for p in path.glob("*.index.json"))
        hint = (f" (found {sharded[0]}: sharded checkpoints are not supported; save with a larger max_shard_size)"
                if sharded else "")
        raise CheckpointError(f"{path}: a directory without {' or '.join(WEIGHT_FILES)}{hint}; give a "
                              "save_pretrained directory or a checkpoint file")
    config: dict = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{folder / 'config.json'}: not a JSON file ({first_line(exc)})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{folder / 'config.json'}: expected a JSON object, found {type(config).__name__}")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(weights))
        else:
            sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many types for truncated or foreign files
        raise CheckpointError(f"{weights}: not a readable {weights.suffix[1:]} checkpoint (truncated or another "
                              f"format): {first_line(exc)}") from None
    if not isinstance(sd, dict):
        raise CheckpointError(f"{weights}: expected a state dict, found {type(sd).__name__}")
    _check_tensors(sd, weights)
    return _family_of(sd, weights, config), Pretrained(sd, config, weights)


def _spikegpt(path: Path, obj: Any, reference: bool = True, embedding: str | None = None,
              inference: str | None = None) -> LoadedLM:
    from spikecc.compiler.frontends.spikegpt import export_spikegpt
    from spikecc.models.spikegpt import load_spikegpt, load_vocab

    sd = obj.state_dict if isinstance(obj, Pretrained) else obj
    sidecar = path.with_suffix(".vocab.json") if path.is_file() else path / "vocab.json"
    model = load_spikegpt(sd, embedding=embedding, inference=inference or "training", vocab_file=sidecar)
    # export from the stored dtype (float32 -> float64 is exact), so a 216M model never exists twice in float64
    graph = export_spikegpt(model.eval())
    if sidecar.is_file():
        graph.metadata["vocab"] = load_vocab(sidecar).chars
    if isinstance(sd, dict):
        sd.clear()  # the model holds the tensors it needs; let the float32 copies go when it is cast below
    return LoadedLM("spikegpt", graph, model.double() if reference else None, str(path))


def _spikerwkv(path: Path, obj: Any, reference: bool = True) -> LoadedLM:
    from spikecc.compiler.frontends.spikerwkv import export_spikerwkv
    from spikecc.models.spikerwkv import load_spikerwkv

    # load_spikerwkv re-reads the file and validates every key, raising its one-line CheckpointErrors
    model, vocab = load_spikerwkv(path)  # float64, eval mode
    return LoadedLM("spikerwkv", export_spikerwkv(model, vocab), model, str(path))


def _spikelm(path: Path, obj: Any, reference: bool = True) -> LoadedLM:
    from spikecc.compiler.frontends.spikelm import export_spikelm
    from spikecc.models.spikelm import load_spikelm

    # load_spikelm re-reads the file and validates every key, raising its one-line CheckpointErrors
    model, vocab = load_spikelm(path)  # float64, eval mode
    return LoadedLM("spikelm", export_spikelm(model, vocab.chars), model, str(path))


def _spikelm_bert(path: Path, obj: Any, reference: bool = True, seq_len: int | None = None) -> LoadedLM:
    from spikecc.compiler.frontends.spikelm import BERT_FAMILY, BERT_SEQ_LEN, export_spikelm_bert
    from spikecc.models.spikelm import load_spikelm_bert

    config = obj.config if isinstance(obj, Pretrained) else {}
    sd = obj.state_dict if isinstance(obj, Pretrained) else obj
    where = obj.weights if isinstance(obj, Pretrained) else path
    # Build from the state dict already read (a BERT-base file is 440 MB: no second read), naming the file in errors.
    try:
        encoder = load_spikelm_bert(sd, config=config)  # float64, eval mode, code thresholds (the published ones)
    except (CheckpointError, ValueError) as exc:
        msg = str(exc).removeprefix("<state_dict>: ")
        raise CheckpointError(f"{where}: {msg}") from None
    if isinstance(sd, dict):
        sd.clear()  # the encoder holds its own copies; free the raw tensors before the export copies the weights
    graph = export_spikelm_bert(encoder, min(seq_len or BERT_SEQ_LEN, encoder.config.max_pos))
    return LoadedLM(BERT_FAMILY, graph, encoder if reference else None, str(path))


def _spikelm_bart(path: Path, obj: Any, reference: bool = True, seq_len: int | None = None) -> LoadedLM:
    from spikecc.compiler.frontends.spikelm_bart import BART_FAMILY, BART_SOURCE_LEN, export_spikelm_bart
    from spikecc.models.spikelm_bart import load_spikelm_bart

    config = obj.config if isinstance(obj, Pretrained) else {}
    sd = obj.state_dict if isinstance(obj, Pretrained) else obj
    where = obj.weights if isinstance(obj, Pretrained) else path
    try:
        model = load_spikelm_bart(sd, config=config)  # float64, eval mode
    except (CheckpointError, ValueError) as exc:
        raise CheckpointError(f"{where}: {str(exc).removeprefix('<state_dict>: ')}") from None
    if isinstance(sd, dict):
        sd.clear()
    graph = export_spikelm_bart(model, seq_len or BART_SOURCE_LEN)
    return LoadedLM(BART_FAMILY, graph, model if reference else None, str(path))


def _rwkv6(path: Path, obj: Any, reference: bool = True) -> LoadedLM:
    from spikecc.compiler.frontends.rwkv6 import export_rwkv6
    from spikecc.models.rwkv6 import rwkv6_from_state_dict, vocab_beside

    model = rwkv6_from_state_dict(obj, str(path))  # float64, eval mode; one-line CheckpointErrors for bad layouts
    vocab = vocab_beside(path, model.cfg.vocab_size)
    return LoadedLM("rwkv6", export_rwkv6(model, vocab), model if reference else None, str(path))


def _spikerwkv6(path: Path, obj: Any, reference: bool = True) -> LoadedLM:
    from spikecc.compiler.frontends.rwkv6 import export_rwkv6
    from spikecc.models.spikerwkv6 import load_spikerwkv6

    model, vocab = load_spikerwkv6(path)  # float64, eval mode, every key validated
    return LoadedLM("spikerwkv6", export_rwkv6(model, vocab), model if reference else None, str(path))


LOADERS: dict[str, Callable[..., LoadedLM]] = {"spikegpt": _spikegpt, "spikerwkv": _spikerwkv, "spikelm": _spikelm,
                                               "spikelm-bert": _spikelm_bert, "spikelm-bart": _spikelm_bart,
                                               "rwkv6": _rwkv6, "spikerwkv6": _spikerwkv6}
#: Families without a language-model head: they encode, they cannot generate text.
ENCODER_ONLY = frozenset({"spikelm-bert"})
#: What each family is, in words (the CLI's wording).
FAMILY_NAMES = {"spikegpt": "SpikeGPT", "spikelm": "SpikeLM-style causal decoder", "spikerwkv": "SpikeRWKV",
                "spikelm-bert": "SpikeLM BERT encoder", "spikelm-bart": "SpikeLM BART encoder-decoder",
                "rwkv6": "RWKV-6 (float)", "spikerwkv6": "SpikeRWKV-6 (converted from RWKV-6)"}


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


#: The load options each family takes (beyond the tokenizer and `reference`).
OPTIONS = {"spikegpt": ("embedding", "inference"), "spikelm-bert": ("seq_len",), "spikelm-bart": ("seq_len",)}


def load_lm(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None, *, reference: bool = True,
            embedding: str | None = None, inference: str | None = None, seq_len: int | None = None) -> LoadedLM:
    """A spiking LM from a checkpoint or an exported `.nir` file (see the module docstring).

    ``tokenizer``: a tokenizer file that overrides the checkpoint's own (stored in the graph metadata).
    ``reference=False`` drops the torch reference model once the graph is exported (less memory: a caller that only
    simulates). Family options (None = the family's default): SpikeGPT's ``embedding`` and ``inference``
    (`spikecc.models.spikegpt`); ``seq_len``, the sequence length an encoder graph is exported for (SpikeLM BERT:
    128; SpikeLM BART: the source, 64; never more than the learned positions).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; give a checkpoint (.pt), a save_pretrained directory or an "
                              "exported .nir file")
    given = {k: v for k, v in {"embedding": embedding, "inference": inference, "seq_len": seq_len}.items()
             if v is not None}
    if path.suffix == ".nir":
        graph = read(path)
        if "family" not in graph.metadata:
            raise CheckpointError(f"{path}: a NIR graph without language-model metadata; export a checkpoint "
                                  "with `spikecc export CHECKPOINT -o FILE.nir` first")
        if given:
            key = next(iter(given))
            raise CheckpointError(f"{path}: --{key.replace('_', '-')} applies when loading a checkpoint; an exported "
                                  f"graph keeps the one it was exported with ({graph.metadata.get(key, 'none')})")
        return _with_tokenizer(LoadedLM(str(graph.metadata["family"]), graph, None, str(path)), path, tokenizer)
    family, obj = _sniff(path)
    if family not in LOADERS:
        raise CheckpointError(f"{path}: family '{family}' has no frontend; supported: {', '.join(sorted(LOADERS))}")
    foreign = [k for k in given if k not in OPTIONS.get(family, ())]
    if foreign:
        takers = [f for f, keys in OPTIONS.items() if foreign[0] in keys]
        raise CheckpointError(f"{path}: --{foreign[0].replace('_', '-')} is an option of {' and '.join(takers)} "
                              f"checkpoints; this is {family}")
    try:
        lm = LOADERS[family](path, obj, reference, **given)
    except CheckpointError as exc:  # loaders that check a state dict name it "<state dict>": name the file
        msg = str(exc)
        for anonymous in ("<state dict>: ", "<state_dict>: "):
            msg = msg.removeprefix(anonymous)
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        # what the loaders' checks did not foresee still ends in one line naming the file
        raise CheckpointError(f"{path}: not a valid {family} checkpoint ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
    return _with_tokenizer(lm, path, tokenizer)


def _with_tokenizer(lm: LoadedLM, path: Path, tokenizer: str | os.PathLike | None) -> LoadedLM:
    """Store the tokenizer in the graph metadata: the one given, else the model's own, else one beside the file."""
    from spikecc.models.tokenizer import find_tokenizer, from_metadata, load_tokenizer

    meta = lm.graph.metadata
    if tokenizer is None:
        if from_metadata(meta) is not None:
            return lm
        tokenizer = find_tokenizer(path)
        if tokenizer is None:
            return lm
    tok = load_tokenizer(tokenizer)
    if "vocab_size" in meta:
        tok.check_model(int(meta["vocab_size"]), str(tokenizer))
    meta.pop("vocab", None)
    meta.pop("tokenizer", None)
    meta.update(tok.to_metadata())
    return lm


def reference_generate(lm: LoadedLM, prompt: str, n_tokens: int) -> str:
    """Greedy generation with the torch reference model of `lm` (the `--reference` path of the CLI), through the
    graph's tokenizer."""
    import importlib

    from spikecc.errors import InputFileError
    from spikecc.models.tokenizer import CharTokenizer, require_tokenizer

    tok = require_tokenizer(lm.graph.metadata, lm.source)
    if lm.family == "spikerwkv" and not isinstance(tok, CharTokenizer):
        raise InputFileError(f"{lm.source}: SpikeRWKV checkpoints generate with their character vocabulary only")
    module = importlib.import_module(f"spikecc.models.{lm.family.replace('-', '_')}")
    return module.generate(lm.model, tok, prompt, n_tokens)

