"""Files spikecc writes: atomic, deterministic, and never over something that is not its own.

Rules every command follows (they are the whole of spikecc's promise about a user's files):

- Nothing is written over an input of the same command (`-o m.pt` where `m.pt` is the checkpoint read).
- An existing output is replaced only when spikecc wrote it itself, recognised by its mark:
    build directory   a `manifest.json` that lists every file in the directory (`MANIFEST`, key "files");
                      a file the user added inside a build makes it the user's, so it is not replaced
                      (bytecode caches, `__pycache__/`, that running a build's generated module leaves are not)
    .npz / .pt (zip)  the zip archive comment starts with `MARK` (np.load and torch.load ignore it)
    .nir (HDF5)       the root attribute `MARK` (nir.read ignores it)
  Anything else at the output path is refused with a one-line error that says how to proceed.
- Output paths are checked before any work starts (`check_output_file`, `check_build_dir`), so a run does
  not fail at its very end because a folder is missing.
- Writes go to a temporary sibling first and are renamed into place when complete: a failure (or an
  interrupt) leaves the previous file or build untouched and no temporary file behind. Errors name the
  user's path, never the temporary one.
- New files and directories get the permissions the user's umask gives (mkdtemp's 0700 is widened).
- Bytes depend only on the content: JSON with sorted keys, zips with fixed dates, no timestamps.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from spikecc.errors import InputFileError

MARK = "spikecc"  # zip comment prefix / HDF5 root attribute of files spikecc wrote
MANIFEST = "manifest.json"
PYCACHE = "__pycache__"  # Python's bytecode caches of a build's generated modules: not the user's files


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json_text(data))


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


# -- recognising spikecc's own outputs ----------------------------------------------------------------
def zip_marked(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.comment.startswith(MARK.encode())
    except (OSError, zipfile.BadZipFile):
        return False


def hdf5_marked(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return MARK in f.attrs
    except OSError:
        return False


def mark_hdf5(path: Path) -> None:
    """Add spikecc's mark (the spikecc version) to an HDF5 file it just wrote."""
    import h5py

    import spikecc

    with h5py.File(path, "a") as f:
        f.attrs[MARK] = spikecc.__version__


def build_manifest(path: Path) -> dict | None:
    """The manifest of a spikecc build directory, or None if `path` is not one."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) \
            or "spikecc" not in (data.get("versions") or {}):
        return None
    return data


def written_by_spikecc(path: Path) -> bool:
    if path.is_dir():
        return build_manifest(path) is not None
    if path.suffix in (".nir", ".h5", ".hdf5"):
        return hdf5_marked(path)
    return zip_marked(path)


# -- checks before work starts ------------------------------------------------------------------------
def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output") \
        -> Path:
    """Refuse an output file path that would overwrite an input or a file spikecc did not write, or whose
    folder is missing; returns it as a Path. Call before the work starts."""
    path = Path(path)
    for src in inputs:
        src = Path(src)
        if _same(path, src) or path.resolve() == src.resolve():
            raise InputFileError(f"{path}: is also an input of this command ({src}); write the {what} to "
                                 "another path")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory; give a file path for the {what}")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise InputFileError(f"{path}: the folder {parent} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise InputFileError(f"{path}: the folder {parent} is not writable; choose another path")
    if path.exists() and not written_by_spikecc(path):
        raise InputFileError(f"{path}: exists and was not written by spikecc, so it is left alone; choose "
                             "another path, or move or delete it yourself")
    return path


def check_build_dir(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse a build directory that would replace anything but an earlier spikecc build (with nothing of the
    user's inside), the current directory or one above it, or a folder holding an input. Call first."""
    path = Path(path)
    resolved = path.resolve()
    if _inside(Path.cwd(), resolved):
        raise InputFileError(f"{path}: is the current directory or one above it, which a build cannot replace; "
                             "give a new directory for the build, e.g. -o build/NAME")
    for src in inputs:
        if _inside(Path(src), resolved):
            raise InputFileError(f"{path}: holds the input {src}, which replacing the build would delete; "
                                 "give a new directory for the build")
    if path.exists() and not path.is_dir():
        raise InputFileError(f"{path}: exists and is not a directory; choose another output path")
    if path.is_dir() and any(path.iterdir()):
        manifest = build_manifest(path)
        if manifest is None:
            raise InputFileError(f"{path}: exists and is not a spikecc build (no {MANIFEST} of spikecc's), so it "
                                 "is left alone; give a new directory, or remove this one yourself")
        listed = set(manifest["files"]) | {MANIFEST}
        extra = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()
                       and str(p.relative_to(path)) not in listed and PYCACHE not in p.relative_to(path).parts)
        if extra:
            raise InputFileError(f"{path}: is a spikecc build, but {extra[0]} in it was not written by spikecc, so "
                                 "the build is left alone; move that file out, or give a new directory")
    return path


# -- atomic writes ------------------------------------------------------------------------------------
@contextmanager
def atomic_directory(target: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `target` (checked with `check_build_dir`), on
    error or interrupt it is deleted and `target` is left as it was."""
    target = check_build_dir(target, inputs)
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"{target}: cannot create the parent directory {parent} ({exc.strerror})") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.tmp-", dir=parent))
    old: Path | None = None
    try:
        yield tmp
        mode = 0o777 & ~_umask()
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            os.chmod(d, mode)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name[:40]}.old-", dir=parent))
            os.replace(target, old / "build")
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old / "build", target)  # put the previous build back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Npz) -> None:
    """Write `data` to `path` through a temporary sibling renamed into place. Errors name `path`."""
    path = Path(path)
    try:
        with _temporary_sibling(path) as tmp:
            if isinstance(data, Npz):
                with open(tmp, "wb") as f:
                    write_npz(f, data.arrays, data.comment)
            else:
                tmp.write_bytes(data)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write ({exc.strerror or exc}); check the folder and free space") \
            from None


@contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block ends without error, else removed.
    The file gets the permissions the umask gives (as a plain open() would)."""
    tmp = path.with_name(f".{path.name[:40]}.tmp-{os.getpid()}")  # short: any valid name stays valid
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a path (nir.write, torch.save): yields a temporary path that becomes `path`
    when the block completes. Errors name `path`."""
    path = Path(path)
    try:
        with _temporary_sibling(path) as tmp:
            yield tmp
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write ({exc.strerror or exc}); check the folder and free space") \
            from None


def npz_bytes(arrays: dict[str, np.ndarray], comment: str = "") -> bytes:
    """An .npz (readable by np.load) whose bytes depend only on the arrays: sorted entries, stored
    uncompressed, each with the same fixed date (np.savez stamps the current time). `comment` goes into the
    zip comment (np.load ignores it): spikecc's mark on outputs it may replace later."""
    buf = io.BytesIO()
    write_npz(buf, arrays, comment)
    return buf.getvalue()


def write_npz(f: BinaryIO, arrays: Mapping[str, np.ndarray], comment: str = "") -> None:
    """`npz_bytes`' bytes written into an open binary file, one array at a time (a build's large parameter files
    never exist twice in memory)."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            a = np.asarray(arrays[key])
            # ascontiguousarray makes a 0-d array 1-d: keep scalars (a step counter) as they are
            a = np.ascontiguousarray(a) if a.ndim else a
            with zf.open(info, "w", force_zip64=a.nbytes > 2**31 - 2**20) as entry:
                np.lib.format.write_array(entry, a, allow_pickle=False)
        zf.comment = comment.encode()


@dataclass(frozen=True, eq=False)
class Npz:
    """An .npz file's content (`npz_bytes`), written by `atomic_write` straight into its file."""

    arrays: Mapping[str, np.ndarray]
    comment: str = ""

    def __bytes__(self) -> bytes:
        return npz_bytes(dict(self.arrays), self.comment)


def write_outputs_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """A run's outputs as a marked .npz (spikecc may replace it on the next run)."""
    atomic_write_bytes(path, npz_bytes(arrays, comment=f"{MARK} outputs"))


def available_memory() -> int | None:
    """Bytes of memory the system can give this process now (Linux MemAvailable), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits_in_memory(path: str | os.PathLike, nbytes: int, biggest: str) -> None:
    """Refuse a file whose declared arrays (`nbytes` in all, the largest named `biggest`) cannot fit in the
    memory free now: loading it would only end in an out-of-memory crash."""
    free = available_memory()
    if free is not None and nbytes > free:
        raise InputFileError(f"{path}: declares {nbytes / 2**30:.1f} GiB of parameters (largest: {biggest}), more "
                             f"than the {free / 2**30:.1f} GiB of memory free; the file is corrupt or too large "
                             "for this machine")
