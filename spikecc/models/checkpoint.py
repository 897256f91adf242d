"""Checks shared by the checkpoint loaders: every problem becomes a one-line CheckpointError that names the
file and the key."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from spikecc.errors import CheckpointError


def fmt_shape(shape: Sequence[int]) -> str:
    """A shape as Python writes a tuple: (3,), (4, 5), ()."""
    dims = [int(d) for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else "(" + ", ".join(map(str, dims)) + ")"


def check_state_dict(sd: Any, expected: Mapping[str, Tensor], source: str, family: str,
                     key_prefix: str = "state_dict.") -> None:
    """`sd` must hold exactly the keys of `expected`, each a tensor of the same shape."""
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{source}: key '{key_prefix.rstrip('.')}' is a {type(sd).__name__}, expected a dict")
    for key, ref in expected.items():
        if key not in sd:
            raise CheckpointError(f"{source}: missing key '{key_prefix}{key}'")
        got = sd[key]
        if not isinstance(got, Tensor):
            raise CheckpointError(f"{source}: key '{key_prefix}{key}' is a {type(got).__name__}, expected a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: key '{key_prefix}{key}' has shape {fmt_shape(got.shape)}, "
                                  f"expected {fmt_shape(ref.shape)}")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected key '{key_prefix}{extra[0]}' (not a {family} parameter)")


def check_finite(obj: Any, source: str, prefix: str = "") -> None:
    """Every floating-point tensor in `obj` (a state dict, possibly nested in dicts) holds finite values only."""
    import torch

    if isinstance(obj, Mapping):
        for key, value in obj.items():
            check_finite(value, source, f"{prefix}{key}.")
    elif isinstance(obj, Tensor) and (obj.is_floating_point() or obj.is_complex()):
        finite = torch.isfinite(obj)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(f"{source}: key '{prefix.rstrip('.')}' holds {bad} NaN or infinite value(s); "
                                  "the checkpoint is corrupt or its training diverged")


def check_size(obj: Any, source: str) -> None:
    """The tensors' logical sizes (a tensor expanded over a tiny storage counts in full, as using it would
    cost), summed, must fit in memory: a corrupt or hostile file must not end in an out-of-memory crash."""
    from spikecc.files import check_fits_in_memory

    sizes: dict[str, int] = {}

    def walk(o: Any, prefix: str) -> None:
        if isinstance(o, Mapping):
            for k, v in o.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(o, Tensor):
            sizes[prefix.rstrip(".")] = o.numel() * o.element_size()

    walk(obj, "")
    if sizes:
        check_fits_in_memory(source, sum(sizes.values()), f"key '{max(sizes, key=sizes.__getitem__)}'")


def read_torch_file(path: str | os.PathLike) -> Any:
    """`torch.load(path)` of plain data (weights_only), with one-line CheckpointErrors for a missing file, a
    directory, and a truncated or non-torch file."""
    import torch

    source = str(path)
    if not os.path.exists(source):
        raise CheckpointError(f"{source}: no such file")
    if os.path.isdir(source):
        raise CheckpointError(f"{source}: is a directory, expected a torch checkpoint file")
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, EOF, RuntimeError) for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{source}: not a readable torch checkpoint (truncated or another format): "
                              f"{first}") from None


def write_atomically(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary name beside `path`, then rename: a crash or a full disk never leaves a
    half-written file under the final name, nor the temporary one."""
    import torch

    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_family_checkpoint(path: str | os.PathLike, family: str, config_keys: Sequence[str],
                           build: Callable[[dict], Any], extra_keys: Sequence[str] = ()) -> tuple[Any, str, dict]:
    """Read one of spikecc's own checkpoints, {"family", "config", "state_dict", "vocab", *extra_keys}, and build
    its model: `build(config dict)` returns the module (raising TypeError/ValueError for a bad config), whose
    state dict is then checked and loaded. Returns (model, vocab characters, the whole checkpoint dict)."""
    source = str(path)
    obj = read_torch_file(path)
    keys = ("family", "config", "state_dict", "vocab", *extra_keys)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict with keys {'/'.join(keys)}, found {type(obj).__name__} "
                              f"(a raw state_dict? save it with spikecc's save function for {family})")
    for key in keys:
        if key not in obj:
            raise CheckpointError(f"{source}: missing key '{key}'")
    if obj["family"] != family:
        raise CheckpointError(f"{source}: key 'family' is {obj['family']!r}, expected {family!r}")
    conf = obj["config"]
    if not isinstance(conf, dict):
        raise CheckpointError(f"{source}: key 'config' must be a dict, found {type(conf).__name__}")
    for key in config_keys:
        if key not in conf:
            raise CheckpointError(f"{source}: missing key 'config.{key}'")
    try:
        model = build(conf)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: key 'config' does not describe a valid model: {exc}") from None
    vocab, size = obj["vocab"], model.cfg.vocab_size
    if not isinstance(vocab, str) or len(vocab) != size:
        found = len(vocab) if isinstance(vocab, str) else type(vocab).__name__
        raise CheckpointError(f"{source}: key 'vocab' must be a string of {size} characters, found {found}")
    check_state_dict(obj["state_dict"], model.state_dict(), source, family)
    model.load_state_dict(obj["state_dict"])
    return model, vocab, obj
