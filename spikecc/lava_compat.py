"""Make lava-nc 0.10.0 importable on Python 3.11 without touching site-packages.

`lava/magma/compiler/var_model.py` declares dataclass fields such as `x: ByteEncoder = ByteEncoder()`.
Python 3.11 rejects unhashable instances as dataclass defaults (`ValueError: mutable default ...`), so
`import lava.magma.compiler...` fails. A meta-path finder intercepts that one module and rewrites each
such default to `field(default_factory=ByteEncoder)` in the source before it is compiled. The behaviour
is the same: every instance still gets its own fresh ByteEncoder. On Python < 3.11 the hook does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

TARGET_MODULE = "lava.magma.compiler.var_model"
# `name: ByteEncoder = ByteEncoder()` -> `name: ByteEncoder = field(default_factory=ByteEncoder)`
_MUTABLE_DEFAULT = re.compile(r"^(\s+\w+\s*:\s*(\w+)\s*=\s*)\2\(\)\s*$", re.MULTILINE)


def rewrite_var_model_source(source: str) -> str:
    """Turn instance defaults of the form `T()` into `field(default_factory=T)` and import `field`."""
    # Spelled with a module-qualified name so no import line has to be placed in the module
    # (it has `from __future__` imports, which must stay first).
    return _MUTABLE_DEFAULT.sub(r"\1__import__('dataclasses').field(default_factory=\2)", source)


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):  # type: ignore[override]
        text = rewrite_var_model_source(importlib.util.decode_source(data))
        return compile(text, path, "exec", dont_inherit=True, optimize=_optimize)

    def get_code(self, fullname):  # type: ignore[override]
        # Bypass the bytecode cache: a cached .pyc of the unpatched source must never be used.
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class _VarModelFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        spec.loader = _RewritingLoader(fullname, spec.origin)
        return spec


def install_lava_py311_fix() -> bool:
    """Install the hook once (idempotent). Returns True where it is active (Python >= 3.11)."""
    if sys.version_info < (3, 11):
        return False
    if not any(isinstance(f, _VarModelFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _VarModelFinder())
    return True
