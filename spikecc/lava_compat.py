"""Make lava-nc 0.10.0 importable on Python 3.11 without touching site-packages.

`lava/magma/compiler/var_model.py` declares dataclass fields such as `x: ByteEncoder = ByteEncoder()`.
Python 3.11 rejects unhashable instances as dataclass defaults (`ValueError: mutable default ...`), so
`import lava.magma.compiler...` fails. A meta-path finder intercepts that one module and rewrites each
such default to `field(default_factory=ByteEncoder)` in the source before it is compiled. The behaviour
is the same: every instance still gets its own fresh ByteEncoder. On Python < 3.11 that rewrite does nothing.

`lava/magma/runtime/message_infrastructure/multiprocessing.py` calls `mp.set_start_method('fork')` when it is
imported, which raises "context has already been set" once anything in the process has fixed the start method,
even to fork (a `multiprocessing.get_start_method()` does; so does starting a Dask cluster before Lava is
imported). The same hook rewrites that call to pass `force=True` where the method already is fork: the same
method, set again. A process that chose another method still gets Lava's error.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

TARGET_MODULE = "lava.magma.compiler.var_model"
START_METHOD_MODULE = "lava.magma.runtime.message_infrastructure.multiprocessing"
# `name: ByteEncoder = ByteEncoder()` -> `name: ByteEncoder = field(default_factory=ByteEncoder)`
_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*(\w+)\s*=\s*)\2\(\)\s*$", re.MULTILINE)
_SET_FORK = re.compile(r"""\bmp\.set_start_method\((['"])fork\1\)""")


def rewrite_var_model_source(source: str) -> str:
    """Turn instance defaults of the form `T()` into `field(default_factory=T)` and import `field`."""
    # Spelled with a module-qualified name so no import line has to be placed in the module
    # (it has `from __future__` imports, which must stay first).
    return _MUTABLE_DEFAULT.sub(r"\1__import__('dataclasses').field(default_factory=\2)", source)


def rewrite_start_method_source(source: str) -> str:
    """`mp.set_start_method('fork')` -> the same call with force=True where the method already is fork."""
    return _SET_FORK.sub("mp.set_start_method('fork', force=mp.get_start_method(allow_none=True) == 'fork')",
                         source)


REWRITES = {TARGET_MODULE: rewrite_var_model_source, START_METHOD_MODULE: rewrite_start_method_source}


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        text = REWRITES[self.name](importlib.util.decode_source(data))
        return compile(text, path, "exec", dont_inherit=True, optimize=_optimize)

    def get_code(self, fullname):  # type: ignore[override]
        # Bypass the bytecode cache: a cached .pyc of the unpatched source must never be used.
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in REWRITES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _RewritingLoader(fullname, spec.origin)
        return spec


def install_lava_py311_fix() -> bool:
    """Install the hook once (idempotent). Returns True where the dataclass rewrite matters (Python >= 3.11);
    the start-method rewrite is installed on every version."""
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())
    return sys.version_info >= (3, 11)
