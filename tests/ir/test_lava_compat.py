"""The import hook that makes lava-nc 0.10.0 importable on Python 3.11 (lava/magma/compiler/var_model.py gives
dataclass fields ByteEncoder() instances as defaults, which Python 3.11 rejects as mutable defaults).

It rewrites `lava/magma/compiler/var_model.py` in memory as it is imported; the file on disk never changes.
A subprocess without the hook shows that the unpatched module really fails, so the hook is what fixes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import spikecc
from spikecc.lava_compat import TARGET_MODULE, _VarModelFinder, install_lava_py311_fix, rewrite_var_model_source

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="the dataclass check is new in Python 3.11")


def var_model_file() -> Path:
    spec = importlib.machinery.PathFinder.find_spec("lava")
    assert spec is not None, "lava-nc is not installed"
    return Path(spec.submodule_search_locations[0]) / "magma" / "compiler" / "var_model.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


SAMPLE = '''\
from dataclasses import dataclass


@dataclass
class ByteEncoder:  # a dataclass with eq=True, so unhashable: Python 3.11 rejects it as a default
    value: int = 0


class Other:
    pass


@dataclass
class ChipEncoder:
    x: ByteEncoder = ByteEncoder()
    y : ByteEncoder=ByteEncoder()
    n: int = 0
    o: Other = ByteEncoder()


def make() -> ByteEncoder:
    return ByteEncoder()
'''


def test_rewrite_turns_instance_defaults_into_factories():
    out = rewrite_var_model_source(SAMPLE)
    assert "x: ByteEncoder = __import__('dataclasses').field(default_factory=ByteEncoder)" in out
    assert "y : ByteEncoder=__import__('dataclasses').field(default_factory=ByteEncoder)" in out
    # only `name: T = T()` changes: other defaults, mismatched types and code outside fields stay as they were
    assert "    n: int = 0\n" in out and "    o: Other = ByteEncoder()\n" in out
    assert "    return ByteEncoder()\n" in out
    assert len(out.splitlines()) == len(SAMPLE.splitlines())  # line numbers in tracebacks stay right


@needs_311
def test_rewritten_sample_runs_and_the_original_does_not():
    fixed = SAMPLE.replace("    o: Other = ByteEncoder()\n", "")
    with pytest.raises(ValueError, match="mutable default"):
        exec(compile(fixed, "<sample>", "exec"), {})
    ns: dict = {}
    exec(compile(rewrite_var_model_source(fixed), "<sample>", "exec"), ns)
    a, b = ns["ChipEncoder"](), ns["ChipEncoder"]()
    assert a.x is not b.x and isinstance(a.x, ns["ByteEncoder"])


def test_var_model_imports_after_spikecc():
    assert spikecc.__version__  # importing spikecc installed the hook
    vm = importlib.import_module(TARGET_MODULE)
    if sys.version_info >= (3, 11):
        assert type(vm.__spec__.loader).__name__ == "_RewritingLoader"
    a, b = vm.ChipEncoder(), vm.ChipEncoder()
    assert isinstance(a.x, vm.ByteEncoder) and a.x is not b.x and a.y is not b.y
    names = {f.name for f in dataclasses.fields(vm.ChipEncoder)}
    assert {"x", "y", "z"} <= names


def test_install_is_idempotent():
    install_lava_py311_fix()
    install_lava_py311_fix()
    assert sum(isinstance(f, _VarModelFinder) for f in sys.meta_path) == (1 if sys.version_info >= (3, 11) else 0)


def test_site_packages_file_is_unchanged():
    path = var_model_file()
    before = sha256(path)
    proc = run_python("import spikecc, lava.magma.compiler.var_model as vm; vm.ChipEncoder()")
    assert proc.returncode == 0, proc.stderr
    assert sha256(path) == before
    assert "= ByteEncoder()" in path.read_text()  # the fix lives in memory only


@needs_311
def test_without_the_hook_lava_fails_to_import():
    proc = run_python("import lava.magma.compiler.var_model")
    assert proc.returncode != 0
    assert "ValueError: mutable default" in proc.stderr and "ByteEncoder" in proc.stderr
    assert "use default_factory" in proc.stderr


def test_lava_imports_after_the_start_method_was_fixed():
    """Lava's message infrastructure calls mp.set_start_method('fork') at import, which raises once anything has
    fixed the method (here `get_start_method()`, as starting a Dask cluster before a compile does). Without the
    hook the import fails; with it, the method stays fork and Lava imports."""
    fix_first = "import multiprocessing as mp; mp.get_start_method(); "
    plain = run_python(fix_first + "import spikecc.lava_compat as c, sys; "
                       "sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, c._VarModelFinder)]; "
                       "sys.meta_path.insert(0, c._VarModelFinder()); c.REWRITES.pop(c.START_METHOD_MODULE); "
                       "import lava.magma.runtime.message_infrastructure.multiprocessing")
    assert plain.returncode != 0 and "context has already been set" in plain.stderr
    fixed = run_python(fix_first + "import spikecc; import lava.magma.runtime.message_infrastructure.multiprocessing; "
                       "from lava.magma.core.process.process import AbstractProcess; print(mp.get_start_method())")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "fork"


def test_the_start_method_rewrite_keeps_another_method_an_error():
    from spikecc.lava_compat import rewrite_start_method_source

    out = rewrite_start_method_source("if x:\n    mp.set_start_method('fork')\n")
    assert out == "if x:\n    mp.set_start_method('fork', force=mp.get_start_method(allow_none=True) == 'fork')\n"
    spawned = run_python("import multiprocessing as mp; mp.set_start_method('spawn'); import spikecc; "
                         "import lava.magma.runtime.message_infrastructure.multiprocessing")
    assert spawned.returncode != 0 and "context has already been set" in spawned.stderr
