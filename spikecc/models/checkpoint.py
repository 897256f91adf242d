"""Checks shared by the checkpoint loaders: every problem becomes a one-line CheckpointError that names the
file and the key."""

from __future__ import annotations

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
