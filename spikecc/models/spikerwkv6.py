"""SpikeRWKV as the paper has it: a pretrained RWKV-6 converted to a spiking model without retraining.

Source: Zhang, Shen, Wang, "SpikeRWKV: Energy-efficient Large Language Model with Spiking Neural Network" (2025),
Sec. 3.1 ("SpikeRWKV is RWKV6 converted"), 3.2 (IF neurons, Eq. 1-2), 3.3-3.4 (spiking flag, multi-level encoding,
Eq. 3-4), 3.5 (spiking time mixing), 4.1 (the 3L / 4L / 5L settings, T x l = 1 x 3, 1 x 4, 1 x 5), Eq. 5 (energy).

Conversion (`convert`): a copy of the float `spikecc.models.rwkv6.RWKV6` gets a multi-level spike encoder with
spiking flag (`spikecc.models.spikerwkv.MultiLevelSpikeEncoder`, the paper's Eq. 3-4, whose per-level spike trains
are those of integrate-and-fire neurons with reset by subtraction, Eq. 1-2) in front of chosen linears. The linears
and every other weight stay as trained. Each encoder carries l binary levels W_i = W_1 * 2^(1-i) and T steps; its
range is calibrated on a short text: W_1 is set so that sum_i W_i equals the largest magnitude that encoder's input
takes over the text in the float model,

    W_1 = a_max / (2 - 2^(1-l)),   so the code covers [-a_max, a_max] in steps of W_l / T, truncating toward 0.

With `quantile` q < 1, a_max is instead the q-quantile of the magnitudes (the ceil(q n)-th smallest of the n values
seen; the largest where that is 0): the few largest inputs saturate, and every other value gets a finer step. The
paper does not say how its ranges were set; q = 1 (the default) never saturates on the calibration text.

Which linears get encoders (`scope`):
  "paper" (the default): the receptance, key, value and gate projections of the time mixing, `att.enc_r`,
      `att.enc_k`, `att.enc_v`, `att.enc_g`. Sec. 3.5 names exactly these: after the ddlerp token shift "the input
      value is first converted into an input spike signal by Multi-head Spike Encoding ... multiplied by the synaptic
      weight" to give r, k, v and g, and Sec. 4.3 says spikes replace "the input weighting process".
  "all": every linear inside the blocks: the four above, the output projection (`att.enc_o`), the low-rank
      down-projections of the token-shift mix and of the decay (`att.enc_maa`, `att.enc_decay`), and the channel
      mix's key, receptance and value (`ffn.enc_k`, `ffn.enc_r`, `ffn.enc_v`). A spikecc option beyond the paper.
Never encoded: the embedding, the head, the low-rank up-projections (their inputs are tanh outputs that feed a
product with the token difference, not a synaptic weighting of the stream), LayerNorm/GroupNorm, the WKV recurrence.
`ffn.enc_v` is unsigned (its input relu(.)^2 is never negative, a flag would be constant); every other encoder signed.

Checkpoint (`save_spikerwkv6`): torch.save of {"family": "spikerwkv6", "config": RWKV6Config dict,
"encoders": {slot name: {"T", "level_weights", "polarity"}}, "conversion": {"levels", "T", "scope", "quantile",
"calibration_chars", "calibration_sha256"}, "state_dict": the x060 tensors (float32), "vocab": characters}.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spikecc.errors import CheckpointError
from spikecc.models.checkpoint import load_family_checkpoint, write_atomically
from spikecc.models.rwkv6 import ATT_SITES, CONFIG_KEYS, FFN_SITES, RWKV6, RWKV6Config
from spikecc.models.spikerwkv import (
    MultiLevelSpikeEncoder,
    binary_level_weights,
    encoder_energy,
    firing_rates,
    generate,  # noqa: F401  (the family's generate, used by the CLI's --reference)
)

FAMILY = "spikerwkv6"
SCOPES = {
    "paper": {"att": ("enc_r", "enc_k", "enc_v", "enc_g"), "ffn": ()},
    "all": {"att": tuple(ATT_SITES), "ffn": tuple(FFN_SITES)},
}
CONVERSION_KEYS = ("levels", "T", "scope", "quantile")  # the options a converted model records
UNSIGNED_SLOTS = ("ffn.enc_v",)  # inputs that are never negative: no spiking flag
# A short default calibration text (Shakespeare, Sonnet 18, public domain): plain letters and punctuation, so it
# fits most character vocabularies. Give your own with --calibration-text for other data.
DEFAULT_CALIBRATION_TEXT = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
    "Sometime too hot the eye of heaven shines,\nAnd often is his gold complexion dimm'd;\n"
    "And every fair from fair sometime declines,\nBy chance or nature's changing course untrimm'd;\n"
    "But thy eternal summer shall not fade,\nNor lose possession of that fair thou ow'st;\n"
    "Nor shall death brag thou wander'st in his shade,\nWhen in eternal lines to time thou grow'st:\n"
    "So long as men can breathe or eyes can see,\nSo long lives this, and this gives life to thee.\n"
)


def site_names(cfg: RWKV6Config, scope: str) -> list[str]:
    """Full encoder slot names of `scope`, in forward order of the blocks."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {sorted(SCOPES)}, got {scope!r}")
    return [f"blocks.{i}.{half}.{slot}" for i in range(cfg.n_layers) for half in ("att", "ffn")
            for slot in SCOPES[scope][half]]


def all_site_names(cfg: RWKV6Config) -> list[str]:
    return site_names(cfg, "all")


def is_unsigned(name: str) -> bool:
    return name.endswith(UNSIGNED_SLOTS)


def calibrated_level_weights(a_max: float, levels: int) -> list[float]:
    """Binary level weights W_1 > ... > W_l (W_{i+1} = W_i / 2) whose sum is a_max (1.0 for a silent input)."""
    scale = a_max if a_max > 0 and math.isfinite(a_max) else 1.0
    unit = binary_level_weights(levels, 0)  # 1/2, 1/4, ...: sum 1 - 2^-l
    total = sum(unit)
    return [scale * w / total for w in unit]


class _RangeProbe(nn.Module):
    """Identity that keeps the magnitudes |x| (x clipped at 0 for an unsigned slot) it sees."""

    def __init__(self, unsigned: bool) -> None:
        super().__init__()
        self.unsigned, self.seen = unsigned, []

    def forward(self, x: Tensor) -> Tensor:
        a = x.detach().clamp(min=0) if self.unsigned else x.detach().abs()
        self.seen.append(a.reshape(-1).double())
        return x

    def quantile(self, q: float) -> float:
        """The ceil(q * n)-th smallest magnitude (q = 1: the largest), or the largest where that is 0 (a zero range
        encodes nothing: e.g. relu^2 inputs that are mostly 0); 0.0 if nothing was seen."""
        a = torch.cat(self.seen) if self.seen else torch.zeros(1, dtype=torch.float64)
        k = min(a.numel(), max(1, math.ceil(q * a.numel())))
        return float(a.kthvalue(k).values) or float(a.max())


def _slot(model: RWKV6, name: str) -> tuple[nn.Module, str]:
    parent, slot = name.rsplit(".", 1)
    return model.get_submodule(parent), slot


@torch.no_grad()
def calibrate(model: RWKV6, ids: Tensor, names: Sequence[str], quantile: float = 1.0) -> dict[str, float]:
    """The q-quantile of the input magnitudes each slot in `names` sees while the float `model` reads `ids` (1-D);
    q = 1 is the largest magnitude."""
    probes = {}
    for name in names:
        parent, slot = _slot(model, name)
        probes[name] = _RangeProbe(is_unsigned(name))
        setattr(parent, slot, probes[name])
    try:
        model(ids.reshape(1, -1))
    finally:
        for name in names:
            parent, slot = _slot(model, name)
            setattr(parent, slot, nn.Identity())
    return {n: p.quantile(quantile) for n, p in probes.items()}


def install_encoders(model: RWKV6, encoders: dict[str, dict[str, Any]]) -> RWKV6:
    """Put a MultiLevelSpikeEncoder(T, level_weights, polarity) in each named slot (in place); returns model."""
    valid = set(all_site_names(model.cfg))
    for name, opts in encoders.items():
        if name not in valid:
            raise ValueError(f"'{name}' is not an encoder slot of this model (slots: blocks.N.att.enc_r, ...)")
        parent, slot = _slot(model, name)
        setattr(parent, slot, MultiLevelSpikeEncoder(int(opts["T"]), [float(w) for w in opts["level_weights"]],
                                                     bool(opts["polarity"])))
    return model


def _check_options(levels: int, T: int, scope: str, quantile: float = 1.0) -> None:
    if levels < 1 or T < 1:
        raise ValueError(f"levels and steps must be >= 1, got levels={levels}, steps={T}")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"the range quantile must be in (0, 1], got {quantile}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {sorted(SCOPES)}, got {scope!r}")


def convert(model: RWKV6, calibration_ids: Tensor, levels: int, T: int = 1, scope: str = "paper",
            quantile: float = 1.0) -> RWKV6:
    """A SpikeRWKV-6: a copy of the float `model` with calibrated multi-level encoders (module docstring); each
    encoder's range is the `quantile` of its input magnitudes on the calibration text (1: the largest)."""
    _check_options(levels, T, scope, quantile)
    if model.encoders():
        raise ValueError("the model already carries spike encoders; convert the float RWKV-6 model")
    names = site_names(model.cfg, scope)
    peaks = calibrate(model, calibration_ids, names, quantile)
    spiking = copy.deepcopy(model)
    spec = {n: {"T": T, "level_weights": calibrated_level_weights(peaks[n], levels), "polarity": not is_unsigned(n)}
            for n in names}
    spiking.conversion = {"levels": int(levels), "T": int(T), "scope": scope, "quantile": float(quantile)}
    return install_encoders(spiking, spec).eval()


def encoder_fan(model: RWKV6) -> dict[str, tuple[int, int]]:
    """Encoder name -> (C_in, C_out) of the linear it feeds (installed encoders only)."""
    fan = {}
    for name in model.encoders():
        parent, slot = _slot(model, name)
        half = ATT_SITES if name.split(".")[2] == "att" else FFN_SITES
        target = getattr(parent, half[slot])
        w = target.weight if isinstance(target, nn.Linear) else target.T  # the LoRA matrices are stored (in, out)
        fan[name] = (int(w.shape[1]), int(w.shape[0]))
    return fan


def energy_per_token(model: RWKV6, rates: dict[str, float]) -> dict[str, float]:
    """Paper Eq. 5 summed over the installed encoders (see `spikecc.models.spikerwkv.energy_per_token`)."""
    return encoder_energy(model.encoders(), encoder_fan(model), rates)


def measure_firing_rates(model: RWKV6, idx: Tensor) -> dict[str, float]:
    """Firing rate fr per encoder (spikes / (T * l * C_in * tokens)) while the model reads idx (B, L)."""
    return firing_rates(model, idx)


# ----------------------------------------------------------------------------------------------------- checkpoints


def save_spikerwkv6(model: RWKV6, vocab: str, path: str | os.PathLike, calibration_text: str,
                    meta: dict | None = None) -> None:
    """Write a converted model (format in the module docstring), atomically."""
    if len(vocab) != model.cfg.vocab_size:
        raise ValueError(f"vocab has {len(vocab)} characters, model expects {model.cfg.vocab_size}")
    encoders = {n: {"T": e.T, "level_weights": list(e.level_weights), "polarity": e.polarity}
                for n, e in model.encoders().items()}
    conv = dict(getattr(model, "conversion", {}), calibration_chars=len(calibration_text),
                calibration_sha256=hashlib.sha256(calibration_text.encode()).hexdigest())
    obj = {"family": FAMILY, "config": model.cfg.to_dict(), "encoders": encoders, "conversion": conv,
           "state_dict": {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()},
           "vocab": vocab}
    if meta is not None:
        obj["meta"] = meta
    write_atomically(obj, path)


def load_spikerwkv6(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> tuple[RWKV6, str]:
    """Load a checkpoint written by `save_spikerwkv6`: (model in eval mode and `dtype`, vocab characters).
    Every problem is a one-line CheckpointError naming the file and the key."""
    source = str(path)
    model, vocab, obj = load_family_checkpoint(path, FAMILY, CONFIG_KEYS,
                                               lambda conf: RWKV6(RWKV6Config.from_dict(conf)), ("encoders",))
    encs = obj["encoders"]
    if not isinstance(encs, dict):
        raise CheckpointError(f"{source}: key 'encoders' must be a dict, found {type(encs).__name__}")
    for name, opts in encs.items():
        try:
            install_encoders(model, {name: opts})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: key 'encoders.{name}' is not a valid encoder: {exc}") from None
    conv = obj.get("conversion", {})
    model.conversion = {k: conv[k] for k in CONVERSION_KEYS if k in conv}
    return model.to(dtype).eval(), vocab


def convert_file(source: str | os.PathLike, out: str | os.PathLike, levels: int, T: int = 1,
                 calibration_text: str | os.PathLike | None = None, scope: str = "paper",
                 quantile: float = 1.0) -> RWKV6:
    """`spikecc convert`: read an x060 checkpoint (and its vocabulary beside it), convert, write `out`.

    Never overwrites: the input, or any existing file at `out`, is refused with a one-line error; calibration text
    problems (unreadable, characters outside the vocabulary, fewer than two characters) are InputFileErrors.
    Returns the converted model (float64)."""
    from spikecc.errors import InputFileError
    from spikecc.models.rwkv6 import load_rwkv6, vocab_beside

    _check_options(levels, T, scope, quantile)
    source, out = Path(source), Path(out)
    if out.exists() or out.resolve() == source.resolve():
        what = "the input checkpoint" if out.resolve() == source.resolve() else "an existing file"
        raise InputFileError(f"{out}: is {what}; spikecc convert never overwrites, choose another -o path")
    model = load_rwkv6(source)
    vocab = vocab_beside(source, model.cfg.vocab_size)
    if calibration_text is None:
        text = DEFAULT_CALIBRATION_TEXT
    else:
        try:
            text = Path(calibration_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{calibration_text}: cannot read the calibration text ({type(exc).__name__})") \
                from None
    where = calibration_text or "the built-in calibration text"
    bad = sorted({c for c in text if c not in vocab})
    if bad:
        raise InputFileError(f"{where}: characters {''.join(bad)!r} are not in the model's vocabulary; give a "
                             "calibration text in the model's characters (--calibration-text)")
    if len(text) < 2:
        raise InputFileError(f"{where}: {len(text)} characters; the calibration needs a short text, not nothing")
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    spiking = convert(model, ids, levels, T, scope, quantile)
    save_spikerwkv6(spiking, vocab, out, text, meta={"source": source.name})
    return spiking
