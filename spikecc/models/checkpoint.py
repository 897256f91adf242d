"""Checks shared by the checkpoint loaders: every problem becomes a one-line CheckpointError that names the
file and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
