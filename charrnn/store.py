"""Checkpoint store: atomic save, validated load, latest/best, retention, lock.

Layout of a store (``$CHARRNN_STORE``, default ``./checkpoints``)::

    checkpoints/
      dinos/                         one directory per run
        ckpt-000000100.npz           committed checkpoints, zero-padded step so names sort
        ckpt-000000200.npz
        best.npz                     hard link to (or copy of) the best checkpoint
        diverged.npz                 the state at a divergence: a record, never a checkpoint
        lock                         flock target; holds the pid of the last holder
        .ckpt-000000300.npz.tmp-4242-9f1c0a2b   a writer's temp file (ignored, cleaned)

A checkpoint is one uncompressed ``.npz`` (a zip of ``.npy`` members) holding the
caller's arrays plus a reserved ``__meta__`` member: a UTF-8 JSON header stored as
a uint8 array::

    {"format": "charrnn-checkpoint", "format_version": 2, "run": "dinos",
     "step": 200, "saved_at": "2025-01-01T03:00:00+00:00", "confirmed": true,
     "arrays": [["param.Wya", "<f8", [27, 128]], ...], "meta": {...caller's meta...}}

The caller's meta sits under its own key so it round-trips exactly and can never
collide with the store's fields. ``confirmed`` says whether the caller vouched for the
weights when it saved them (see :meth:`Store.save`; absent in older files). Nothing is
ever pickled, on write or on read.

Crash safety: a checkpoint is written under a temp name, fsynced, renamed over its
final name with ``os.replace`` (atomic on POSIX) and the directory is fsynced. A
process killed at any instant leaves either the old set of checkpoints or the new
one, never a torn file under a committed name; temp files of dead writers are
ignored by readers and removed by :meth:`Store.clean_leftovers`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np

from charrnn.atomic import (
    atomic_write,
    dead_temp,
    fsync_dir,
    remove_files,
    temp_name,
    temp_pattern,
)
from charrnn.errors import (
    CheckpointError,
    ConfigError,
    InputMissingError,
    LockedError,
    StoreIOError,
)

__all__ = [
    "ENV_VAR",
    "FORMAT",
    "FORMAT_VERSION",
    "META_KEY",
    "Checkpoint",
    "RunInfo",
    "Store",
    "default_root",
    "validate_arrays",
]

FORMAT = "charrnn-checkpoint"
FORMAT_VERSION = 2  # 2: the header lists every array (name, dtype, shape)
ENV_VAR = "CHARRNN_STORE"  # the one shared variable that moves the store
DEFAULT_ROOT = "checkpoints"
META_KEY = "__meta__"  # reserved member holding the JSON header

BEST_NAME = "best.npz"
# where a run that diverged keeps its last state and history, for `clip-stats RUN:diverged`:
# not a checkpoint, so resuming, sample, runs and retention never see it
DIVERGED_NAME = "diverged.npz"
# --fresh moves the old run's checkpoints here; readers use them while the run directory
# has none, and the new run's first save deletes them (see Store.retire)
PREVIOUS = ".previous"
LOCK_NAME = "lock"
TRAIN_HINT = "train one with: charrnn train CORPUS"
_LOCK_ATTEMPTS = 5  # a run directory replaced this often while we wait is not an accident

_RUN_RE = re.compile(r"[A-Za-z0-9._-]+")
# exactly the names Store.checkpoint_name writes (f"ckpt-{step:09d}.npz": nine digits, more
# without a leading zero), ascii digits only: retention deletes what matches, so a user's
# "ckpt-5.npz" or "ckpt-١٠.npz" beside the checkpoints must not
_STEP_DIGITS = r"(?:[0-9]{9}|[1-9][0-9]{9,})"
_CKPT_RE = re.compile(rf"ckpt-({_STEP_DIGITS})\.npz")
# temp files: a dot so listings and globs skip them, the writer's pid so the
# cleaner can tell a dead writer from a live one
_TMP_RE = temp_pattern(rf"ckpt-{_STEP_DIGITS}\.npz|best\.npz|diverged\.npz")
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_MEMBERS = 4096  # a checkpoint holds a few dozen arrays
_MAX_META_BYTES = 64 << 20  # the JSON header: configs, vocabulary, rng state
_MAX_NPY_HEADER = 10_000  # numpy writes ~128 bytes and reads no more than this by default
_READ_CHUNK = 1 << 20  # bytes copied at a time from a member into its array

# what a damaged or foreign byte string can make zipfile / np.lib.format raise;
# the bytes are already in memory, so none of these is an i/o error
_PARSE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,  # includes UnicodeDecodeError and json.JSONDecodeError
    KeyError,
    OverflowError,
    MemoryError,
    NotImplementedError,  # unsupported zip compression
    RuntimeError,  # encrypted zip member
)

Warn = Callable[[str], None]
# what a caller (the model loader) checks beyond the bytes; raises CheckpointError
Schema = Callable[["Checkpoint"], None]


def is_run_name(name: object) -> bool:
    """The run-name rule: ``[A-Za-z0-9._-]+``, not starting with a dot."""
    return isinstance(name, str) and bool(_RUN_RE.fullmatch(name)) and not name.startswith(".")


def run_name_from(stem: str) -> str:
    """A valid run name from a file stem: 'my names' -> 'my-names'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "corpus"


def default_root() -> Path:
    """The store directory: ``$CHARRNN_STORE`` if set and non-empty, else ``./checkpoints``."""
    value = os.environ.get(ENV_VAR, "")
    return Path(value).expanduser() if value else Path(DEFAULT_ROOT)


@dataclass(frozen=True, eq=False)  # eq=False: comparing dicts of arrays has no single truth
class Checkpoint:
    """One loaded, validated checkpoint."""

    path: Path  # the file it was read from
    run: str  # run name recorded at save time
    step: int  # training step recorded at save time
    arrays: dict[str, np.ndarray]  # the caller's arrays, in saved order
    meta: dict  # the caller's meta, exactly as saved
    saved_at: str = ""  # iso 8601 utc time of the save
    # whether the saver vouched for the weights when it wrote them (Store.save's confirmed);
    # None: not recorded (a file older than the field)
    confirmed: bool | None = None


@dataclass(frozen=True)
class RunInfo:
    """A run directory that holds at least one committed checkpoint."""

    name: str  # run name (the directory name)
    latest_step: int  # highest committed step
    n_checkpoints: int  # committed ckpt-*.npz files
    updated: float  # newest checkpoint mtime, epoch seconds
    has_best: bool = False  # whether best.npz exists


class _Corrupt(Exception):
    """Internal: why a file is not a usable checkpoint (no path; callers add it)."""


def _show(path: Path) -> str:
    # "./checkpoints" reads as a place on disk; a bare "checkpoints" reads as a word
    s = str(path)
    return s if path.is_absolute() or s.startswith(".") else f"./{s}"


def _unlink_or_warn(path: Path, on_warning: Warn | None, what: str = "") -> bool:
    """Delete ``path``; a failure other than its absence is a warning. True if it went."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        if on_warning is not None:
            on_warning(f"cannot remove {what}{path}: {_strerror(e)}")
        return False
    return True


def _unlink_quiet(path: Path) -> None:
    with suppress(OSError):
        os.unlink(path)


def _nonfinite(a: np.ndarray) -> bool:
    return a.dtype.kind in "fc" and not bool(np.isfinite(a).all())


def _json_default(o: Any) -> Any:
    # numpy scalars (a np.float32 loss, an np.int64 step) are common in meta
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


# --------------------------------------------------------------------------- reading


def _parse(f: IO[bytes], size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse and validate an open checkpoint file of ``size`` bytes; raise _Corrupt.

    Nothing is inflated or allocated before it is known to fit: members must be stored
    uncompressed (as charrnn writes them), so they can never hold more than the file;
    the metadata member is read first (bounded), and its manifest of array names,
    dtypes and shapes must match the members exactly before any array is read.
    """
    if size == 0:
        raise _Corrupt("empty file")
    if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
        raise _Corrupt("not a checkpoint (not an .npz file)")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
        infos = zf.infolist()
    except _PARSE_ERRORS as e:
        raise _Corrupt(f"truncated or damaged file ({_one_line(e)})") from None
    with zf:
        members = _check_members(infos, size)
        meta_info = members.pop(META_KEY, None)
        if meta_info is None:
            raise _Corrupt("not a charrnn checkpoint (an .npz without charrnn metadata)")
        if meta_info.file_size > _MAX_META_BYTES:
            raise _Corrupt(
                f"metadata is {meta_info.file_size:,} bytes, more than any charrnn writes"
            )
        meta_arr = _read_member(zf, meta_info, META_KEY)
        if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
            raise _Corrupt(f"metadata {META_KEY!r} is not a uint8 vector")
        try:
            header = json.loads(meta_arr.tobytes().decode("utf-8"))
        except ValueError:
            raise _Corrupt("metadata is not valid JSON") from None
        _check_header(header)
        manifest = _check_manifest(header, members)
        arrays: dict[str, np.ndarray] = {}
        for key, info in members.items():
            arr = _read_member(zf, info, key, manifest.get(key))
            if _nonfinite(arr):
                raise _Corrupt(f"contains NaN/inf in {key!r}")
            arrays[key] = arr
    return header, arrays


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _check_members(infos: list[zipfile.ZipInfo], size: int) -> dict[str, zipfile.ZipInfo]:
    """Member names and declared sizes, before reading any of them."""
    if len(infos) > _MAX_MEMBERS:
        raise _Corrupt(f"{len(infos):,} members, more than any charrnn checkpoint holds")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        if not name.endswith(".npy"):
            raise _Corrupt(f"unexpected member {name!r}")
        key = name[: -len(".npy")]
        if key in members:
            raise _Corrupt(f"duplicate array {key!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise _Corrupt(f"member {name!r} is compressed or encrypted; charrnn never writes that")
        if info.compress_size != info.file_size:
            raise _Corrupt(f"member {name!r} has inconsistent sizes")
        total += info.file_size
        members[key] = info
    if total > size:
        raise _Corrupt(f"members claim {total:,} bytes, more than the file's {size:,}")
    return members


def _check_manifest(
    header: dict[str, Any], members: dict[str, zipfile.ZipInfo]
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Format 2 lists every array (name, dtype, shape): the members must be exactly those,
    each of the size that dtype and shape take. Format 1 has no list (older files)."""
    listed = header.get("arrays")
    if header["format_version"] < 2:
        return {}
    if not isinstance(listed, list):
        raise _Corrupt("metadata lacks the list of arrays")
    manifest: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    for entry in listed:
        try:
            key, dtype_str, shape_list = entry
            if not isinstance(key, str) or not isinstance(dtype_str, str):
                raise TypeError
            dtype = np.dtype(dtype_str)
            shape = tuple(shape_list)
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
                raise TypeError
        except (TypeError, ValueError):
            raise _Corrupt(f"bad entry {_clip(entry)} in the list of arrays") from None
        if key in manifest:
            raise _Corrupt(f"array {key!r} is listed twice")
        manifest[key] = (dtype, shape)
    missing = [k for k in manifest if k not in members]
    unknown = [k for k in members if k not in manifest]
    if missing:
        raise _Corrupt(f"member {missing[0]!r} is missing ({len(missing)} of {len(manifest)})")
    if unknown:
        raise _Corrupt(f"unknown member {unknown[0]!r} (not in the list of arrays)")
    for key, (dtype, shape) in manifest.items():
        data = math.prod(shape) * dtype.itemsize
        header_bytes = members[key].file_size - data
        if not 0 < header_bytes <= _MAX_NPY_HEADER + 16:
            raise _Corrupt(f"member {key!r} does not have the size its dtype and shape take")
    return manifest


def _clip(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _read_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    key: str,
    want: tuple[np.dtype, tuple[int, ...]] | None = None,
) -> np.ndarray:
    """One .npy member: header checked against the manifest and the byte count, then
    the data read straight into the array's own buffer (no second copy)."""
    try:
        with zf.open(info) as m:
            version = np.lib.format.read_magic(m)
            if version == (1, 0):
                read_header = np.lib.format.read_array_header_1_0
            elif version in ((2, 0), (3, 0)):
                read_header = np.lib.format.read_array_header_2_0
            else:
                raise _Corrupt(f"array {key!r} uses unsupported .npy version {version}")
            try:
                shape, fortran, dtype = read_header(m, max_header_size=_MAX_NPY_HEADER)
            except ValueError as e:
                if "max_header_size" in str(e):
                    raise _Corrupt(
                        f"array {key!r} has a .npy header over {_MAX_NPY_HEADER} bytes"
                    ) from None
                raise _Corrupt(f"bad array header for {key!r} ({_one_line(e)[:120]})") from None
            if dtype.hasobject:
                # an object array can only be read by unpickling: never
                raise _Corrupt(f"array {key!r} has object dtype (pickled data is never loaded)")
            if not _storable(dtype):
                raise _Corrupt(f"array {key!r} has unsupported dtype {dtype}")
            if want is not None and (dtype, shape) != want:
                raise _Corrupt(
                    f"array {key!r} is {dtype} {shape}, but the metadata says {want[0]} {want[1]}"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            # a damaged header could claim a huge shape; refuse before allocating it
            if info.file_size - m.tell() != nbytes:
                raise _Corrupt(f"array {key!r} is truncated or has a damaged header")
            buf = bytearray(nbytes)
            view = memoryview(buf)
            pos = 0
            while pos < nbytes:
                chunk = m.read(min(nbytes - pos, _READ_CHUNK))
                if not chunk:
                    raise _Corrupt(f"array {key!r} is truncated")
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            if m.read(1):  # also the point where zipfile checks the member's crc
                raise _Corrupt(f"array {key!r} is longer than its header says")
    except _PARSE_ERRORS as e:
        raise _Corrupt(f"damaged data in {key!r} ({_one_line(e)})") from None
    flat = np.frombuffer(buf, dtype=dtype)
    if fortran:
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


def _storable(dtype: np.dtype) -> bool:
    """Plain numbers only: booleans, integers, floats, complex; no records or sub-arrays."""
    return dtype.kind in "biufc" and dtype.names is None and dtype.subdtype is None


def _check_header(header: Any) -> None:
    if not isinstance(header, dict):
        raise _Corrupt("not a charrnn checkpoint (metadata is not a JSON object)")
    fmt = header.get("format")
    if fmt != FORMAT:
        raise _Corrupt(f"not a charrnn checkpoint (format {_clip(fmt)})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Corrupt(f"bad format_version {_clip(version)}")
    if version > FORMAT_VERSION:
        raise _Corrupt(f"written by a newer charrnn (format {version}); upgrade charrnn")
    step = header.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise _Corrupt(f"bad step {_clip(step)} in metadata")
    if not isinstance(header.get("run"), str):
        raise _Corrupt("bad run name in metadata")
    if not isinstance(header.get("meta"), dict):
        raise _Corrupt("bad meta in metadata (not a JSON object)")


def _read(path: Path, schema: Schema | None = None) -> Checkpoint:
    """Read and validate one file. FileNotFoundError passes through (a reader racing
    retention needs to tell "gone" from "bad"); other i/o errors become StoreIOError."""
    try:
        # O_NONBLOCK: a FIFO under a checkpoint's name must not hang the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as e:
        raise StoreIOError(f"cannot read checkpoint {path}: {_strerror(e)}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise _Corrupt("not a regular file")
        try:
            header, arrays = _parse(f, st.st_size)
        except OSError as e:
            if e.errno == errno.EINVAL:  # a damaged offset sent a seek before the start
                raise _Corrupt("truncated or damaged file (bad offsets)") from None
            raise StoreIOError(f"cannot read checkpoint {path}: {_strerror(e)}") from None
    ck = Checkpoint(
        path=path,
        run=header["run"],
        step=header["step"],
        arrays=arrays,
        meta=header["meta"],
        saved_at=str(header.get("saved_at", "")),
        confirmed=header["confirmed"] if isinstance(header.get("confirmed"), bool) else None,
    )
    if schema is not None:
        try:
            schema(ck)
        except CheckpointError as e:
            raise _Corrupt(str(e)) from None
    return ck


def validate_arrays(
    path: Path | str,
    arrays: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[tuple[int, ...], str]],
) -> None:
    """Check that ``arrays`` has every expected name with its (shape, dtype).

    For the model loader: ``validate_arrays(ckpt.path, ckpt.arrays, {"Wya": ((V, H),
    "float64"), ...})``. Extra arrays are allowed (optimizer state, history). Raises one
    CheckpointError naming the file and every mismatch, e.g.
    ``"ckpt.npz: 'Wya' has shape (65, 128), expected (27, 128)"``.
    """
    problems = []
    for key, (shape, dtype) in expected.items():
        arr = arrays.get(key)
        if arr is None:
            problems.append(f"missing array {key!r}")
            continue
        want_shape = tuple(int(n) for n in shape)
        if arr.shape != want_shape:
            problems.append(f"{key!r} has shape {arr.shape}, expected {want_shape}")
        if arr.dtype != np.dtype(dtype):
            problems.append(f"{key!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))


# --------------------------------------------------------------------------- the store


class Store:
    """A directory of runs, each a directory of checkpoints. Safe against SIGKILL at
    any point, concurrent readers, and (with :meth:`lock`) a second writer."""

    def __init__(self, root: Path | str, schema: Schema | None = None) -> None:
        self.root = Path(root).expanduser()
        # checked on every read: a checkpoint that fails it is corrupt everywhere
        self.schema = schema
        self._held: dict[str, tuple[int, int]] = {}  # run -> (st_dev, st_ino) of its locked dir

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ----------------------------------------------------------------- naming

    def run_dir(self, run: str) -> Path:
        """The run's directory; the name must be ``[A-Za-z0-9._-]+`` without a leading dot
        (so it can never escape the store or hide as a dotfile)."""
        if not is_run_name(run):
            raise CheckpointError(
                f"invalid run name {run!r}: use letters, digits, '.', '_' and '-', "
                "not starting with '.'"
            )
        return self.root / run

    @staticmethod
    def checkpoint_name(step: int) -> str:
        return f"ckpt-{step:09d}.npz"

    @staticmethod
    def step_of(path: Path) -> int:
        """The step a checkpoint's name says (ckpt-000000700.npz: 700); ValueError otherwise."""
        m = _CKPT_RE.fullmatch(path.name)
        if m is None:
            raise ValueError(f"{path.name} is not a checkpoint's name")
        return int(m.group(1))

    # ----------------------------------------------------------------- listing

    def checkpoints(self, run: str) -> list[Path]:
        """Committed checkpoint files of ``run``, oldest step first (temp files skipped)."""
        d = self.run_dir(run)
        return [p for _, p in self._steps(self._home(d))]

    def _home(self, d: Path) -> Path:
        """Where the run's committed checkpoints are: its directory, or, between a --fresh
        start and the new run's first save, the old run's in ``.previous``."""
        if self._steps(d) or not self._steps(d / PREVIOUS):
            return d
        return d / PREVIOUS

    @staticmethod
    def _steps(d: Path) -> list[tuple[int, Path]]:
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            m = _CKPT_RE.fullmatch(entry.name)
            # a symlink is not a checkpoint the store wrote: never listed, so never pruned
            if m is not None and entry.is_file(follow_symlinks=False):
                found.append((int(m.group(1)), Path(entry.path)))
        found.sort()
        return found

    def runs(self) -> list[RunInfo]:
        """Runs holding at least one committed checkpoint, least recently updated first.
        Stray files and directories without checkpoints are ignored."""
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        infos = []
        for entry in entries:
            name = entry.name
            if not is_run_name(name):
                continue
            if not entry.is_dir():
                continue
            steps, mtimes = [], []
            for step, path in self._steps(self._home(Path(entry.path))):
                try:
                    mtimes.append(path.stat().st_mtime)
                except FileNotFoundError:  # pruned while we looked
                    continue
                steps.append(step)
            if not steps:
                continue
            infos.append(
                RunInfo(
                    name=name,
                    latest_step=max(steps),
                    n_checkpoints=len(steps),
                    updated=max(mtimes),
                    has_best=(Path(entry.path) / BEST_NAME).is_file(),
                )
            )
        infos.sort(key=lambda r: (r.updated, r.name))
        return infos

    def latest_run(self) -> str | None:
        """The most recently trained run (newest checkpoint mtime), or None."""
        runs = self.runs()
        return runs[-1].name if runs else None

    # ----------------------------------------------------------------- saving

    def save(
        self,
        run: str,
        step: int,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        *,
        best: bool = False,
        keep: int | None = 3,
        on_warning: Warn | None = None,
        confirmed: bool = True,
    ) -> Path:
        """Atomically write checkpoint ``step`` of ``run`` and return its path.

        Everything is validated before the disk is touched: non-finite float arrays,
        object arrays and meta that is not strict JSON raise CheckpointError and write
        nothing. ``best=True`` also points ``best.npz`` at it. Afterwards the one just
        written and the ``keep - 1`` before it (by step) are kept (``None`` keeps all);
        newer ones (unreadable, or not the store's) and best.npz always survive. A failed
        prune is reported through ``on_warning``, since the checkpoint itself is safe.
        Disk full or permission errors raise StoreIOError with the temp file removed and
        earlier checkpoints untouched.

        ``confirmed=False``: the caller cannot vouch for these weights yet (it may find
        them broken and :meth:`discard` the file), so nothing older goes for it: retention
        and the deletion of a --fresh run's replaced checkpoints wait for :meth:`settle`
        or the next confirmed save. The header records it (:attr:`Checkpoint.confirmed`):
        a later session whose first steps diverge on these weights knows that nobody ever
        vouched for them. The run's first checkpoint also deletes a
        ``diverged.npz`` left beside no checkpoint: the record of an earlier attempt at the
        run that never saved one, not of this run.
        """
        d = self.run_dir(run)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        step = int(step)
        if keep is not None and (isinstance(keep, bool) or keep < 1):
            raise ValueError(f"keep must be at least 1 (or None to keep all), got {keep!r}")
        final = d / self.checkpoint_name(step)
        members = self._members(run, step, arrays, meta, confirmed)

        self._mkdir(d)
        self._check_held(run)
        first = not self._steps(d)
        atomic_write(final, lambda f: _write_npz(f, members), "checkpoint to")

        if best:
            self._point_best(d, final)
        if first:  # a record beside no checkpoint is an earlier attempt's, not this run's
            self._remove_record(d / DIVERGED_NAME, on_warning)
        if confirmed:
            self._settle(d, keep, final, on_warning)
        return final

    def settle(
        self, run: str, keep: int | None, vouched: Path, on_warning: Warn | None = None
    ) -> None:
        """The caller now vouches for checkpoint ``vouched`` of the run (one saved with
        ``confirmed=False``, or the one it resumed from): retention keeps it and the
        ``keep - 1`` before it, and the checkpoints a --fresh start set aside go. A
        checkpoint that is not one of the run directory's (gone, best.npz, one of
        ``.previous``) settles nothing. Call it under :meth:`lock`."""
        self._check_held(run)
        self._settle(self.run_dir(run), keep, Path(vouched), on_warning)

    def _settle(self, d: Path, keep: int | None, vouched: Path, on_warning: Warn | None) -> None:
        steps = self._steps(d)
        at = next((i for i, (_, p) in enumerate(steps) if p.name == vouched.name), None)
        if vouched.parent != d or at is None:
            return
        if keep is not None:
            # only older ones go: a newer one is unreadable (the caller resumed from an older)
            # or not the store's, and vouching for a newest that latest() skips would delete
            # the checkpoint being trained from while keeping the broken one
            self._prune([p for _, p in steps[:at]], keep - 1, on_warning)
        self._drop_previous(d, on_warning)  # the new run has committed: the old one goes

    @staticmethod
    def _remove_record(path: Path, on_warning: Warn | None) -> None:
        """Delete the diverged record at ``path`` if it is the store's (see _own_record)."""
        if not os.path.lexists(path):
            return
        if not _own_record(path):
            if on_warning is not None:
                on_warning(f"left {path} alone: {_NOT_OURS}")
            return
        if _unlink_or_warn(path, on_warning):
            with suppress(OSError):
                fsync_dir(path.parent)

    def save_diverged(
        self, run: str, step: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
    ) -> Path:
        """Atomically write the state of ``run`` at a divergence as ``<run>/diverged.npz``
        (replacing an earlier one), validated as :meth:`save` does. It is a record for
        ``RUN:diverged``, not a checkpoint: resuming, ``latest``, ``runs`` and retention
        ignore it, so the run stays at its last sane checkpoint."""
        d = self.run_dir(run)
        final = d / DIVERGED_NAME
        members = self._members(run, int(step), arrays, meta)
        self._mkdir(d)
        self._check_held(run)
        if os.path.lexists(final) and not _own_record(final):  # renaming over it would remove it
            raise StoreIOError(f"{final} is {_NOT_OURS}; move it away to keep the record")
        atomic_write(final, lambda f: _write_npz(f, members), "diverged state to")
        return final

    def discard(self, run: str, path: Path) -> bool:
        """Delete checkpoint ``path`` of ``run``, one the caller found holds broken weights;
        return whether it went. Only a ``ckpt-*.npz`` of the run's own directory goes, and
        never the one best.npz is (call it under :meth:`lock`)."""
        d = self.run_dir(run)
        self._check_held(run)
        path = Path(path)
        if path.parent != d or not _CKPT_RE.fullmatch(path.name):
            raise ValueError(f"{path} is not a checkpoint of run {run!r}")
        with suppress(OSError):
            if os.path.samefile(path, d / BEST_NAME):
                return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreIOError(f"cannot remove checkpoint {path}: {_strerror(e)}") from None
        fsync_dir(d)
        return True

    def unused(self, run: str) -> bool:
        """Whether ``run`` holds nothing of value: no checkpoint, best, .previous or
        diverged record (a lock file and a token cache are not of value)."""
        d = self.run_dir(run)
        keep = (PREVIOUS, BEST_NAME, DIVERGED_NAME)
        return not self._steps(d) and not any(os.path.lexists(d / n) for n in keep)

    def forget(self, run: str, clear: Callable[[Path], None] | None = None) -> bool:
        """Remove the directory of a run that never committed anything (a train that failed
        before its first checkpoint): ``clear(directory)`` first (the caller removes its
        own files there, such as the token cache), then the lock file, then the directory,
        only if that left it empty. Anything else in it (a checkpoint, a record, a file
        charrnn did not name) keeps it. Call it under :meth:`lock`: nothing is touched
        unless the lock is still on the directory at the run's path (raises LockedError
        if it was moved or replaced meanwhile); returns whether the directory went."""
        d = self.run_dir(run)
        self._check_held(run)  # before any deletion: the files at d may be someone else's now
        if not self.unused(run):
            return False
        if clear is not None:
            clear(d)
        try:
            lock = _open_lock_file(d / LOCK_NAME, os.O_RDONLY)  # ours: a plain, single file
            os.close(lock)
            os.unlink(d / LOCK_NAME)
        except (OSError, StoreIOError):
            return False
        try:
            os.rmdir(d)
        except OSError:  # not empty: someone's files stay, and so does the directory
            return False
        with suppress(OSError):
            fsync_dir(d.parent)
        return True

    def retire(self, run: str) -> int:
        """--fresh: set the run's checkpoints (and best.npz, diverged.npz) aside; return
        how many checkpoints there were.

        They move into ``<run>/.previous`` (oldest first, so the run directory keeps its
        newest until the last move) and readers keep using them there until the next
        :meth:`save` of the run commits, which deletes them. A kill at any point leaves
        a usable run: the old one, or the new one. Call it under :meth:`lock`.
        """
        d = self.run_dir(run)
        self._check_held(run)
        steps = self._steps(d)
        record = _own_record(d / DIVERGED_NAME)
        if not steps and not record:
            return 0
        prev = d / PREVIOUS
        if os.path.lexists(prev):  # an earlier --fresh never saved: its leftovers are older
            self._drop_previous(d, None)
            if os.path.lexists(prev):
                raise StoreIOError(
                    f"{prev} holds files charrnn did not write (checkpoints a --fresh start set "
                    "aside go there); move them away and run again"
                )
        try:
            prev.mkdir()
            fsync_dir(d)
            for _, path in steps:
                os.rename(path, prev / path.name)
            with suppress(FileNotFoundError):
                os.rename(d / BEST_NAME, prev / BEST_NAME)
            if record:  # the old run's record goes with it; a file planted there stays
                os.rename(d / DIVERGED_NAME, prev / DIVERGED_NAME)
            fsync_dir(prev)
            fsync_dir(d)
        except OSError as e:
            raise StoreIOError(f"cannot set aside the checkpoints of {d}: {_strerror(e)}") from None
        return len(steps)

    def _drop_previous(self, d: Path, on_warning: Warn | None) -> None:
        prev = d / PREVIOUS
        try:
            if not stat.S_ISDIR(os.lstat(prev).st_mode):  # a symlink: someone else's folder
                return
            entries = list(os.scandir(prev))
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            for entry in entries:
                if entry.name == DIVERGED_NAME:
                    ours = _own_record(Path(entry.path))
                else:
                    ours = entry.is_file(follow_symlinks=False) and (
                        entry.name == BEST_NAME or bool(_CKPT_RE.fullmatch(entry.name))
                    )
                if ours:
                    os.unlink(entry.path)
            os.rmdir(prev)  # fails, and is reported, if someone put their own files there
            fsync_dir(d)
        except OSError as e:
            if on_warning is not None:
                on_warning(f"cannot remove the replaced run's {prev}: {_strerror(e)}")

    @staticmethod
    def _members(
        run: str,
        step: int,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        confirmed: bool | None = None,
    ) -> list[tuple[str, np.ndarray]]:
        """Validate the payload and turn it into (member name, array) pairs, header first."""
        where = f"checkpoint step {step} of run {run!r}"
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"cannot save {where}: meta must be a dict")
        out: list[tuple[str, np.ndarray]] = []
        for key, value in arrays.items():
            if not isinstance(key, str) or not key or "\x00" in key:
                raise ValueError(f"array names must be non-empty strings, got {key!r}")
            if key == META_KEY:
                raise ValueError(f"array name {META_KEY!r} is reserved for the store")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise CheckpointError(
                    f"cannot save {where}: array {key!r} has object dtype (it would need pickle)"
                )
            if not _storable(arr.dtype):
                raise CheckpointError(
                    f"cannot save {where}: array {key!r} has dtype {arr.dtype}; "
                    "only booleans, integers, floats and complex numbers are stored"
                )
            if _nonfinite(arr):
                raise CheckpointError(f"refusing to save {where}: NaN/inf in {key!r}")
            out.append((key, arr))
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run": run,
            "step": step,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "arrays": [[key, arr.dtype.str, list(arr.shape)] for key, arr in out],
            "meta": dict(meta),
        }
        if confirmed is not None:  # a checkpoint's, not a diverged record's
            header["confirmed"] = confirmed
        try:
            # strict JSON: no NaN/Infinity tokens that other JSON readers reject
            text = json.dumps(header, ensure_ascii=False, allow_nan=False, default=_json_default)
        except (TypeError, ValueError) as e:
            raise CheckpointError(
                f"cannot save {where}: meta is not strict JSON ({e}); use None for missing numbers"
            ) from None
        encoded = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return [(META_KEY, encoded), *out]

    def _mkdir(self, d: Path) -> None:
        try:
            existed = d.is_dir()
            d.mkdir(parents=True, exist_ok=True)
            if not existed:
                fsync_dir(d.parent)  # a new run directory survives a power cut too
        except OSError as e:
            raise StoreIOError(f"cannot create run directory {d}: {_strerror(e)}") from None

    def _point_best(self, d: Path, final: Path) -> None:
        best = d / BEST_NAME
        tmp = temp_name(best)
        try:
            os.link(final, tmp)  # free and atomic: best shares the checkpoint's inode
        except OSError:
            # filesystems without hard links: a durable copy instead
            def copy(dst: IO[bytes]) -> None:
                with open(final, "rb") as src:
                    shutil.copyfileobj(src, dst)

            try:
                atomic_write(best, copy, "best checkpoint")
            except StoreIOError as e:
                raise StoreIOError(f"saved {final} but {e}") from None
            return
        try:
            os.replace(tmp, best)
            fsync_dir(d)
        except OSError as e:
            _unlink_quiet(tmp)
            raise StoreIOError(f"saved {final} but cannot update {best}: {_strerror(e)}") from None
        except BaseException:
            _unlink_quiet(tmp)
            raise

    @staticmethod
    def _prune(older: list[Path], keep: int, on_warning: Warn | None) -> None:
        """Delete all but the newest ``keep`` of ``older`` (checkpoints, oldest first)."""
        for path in older[: max(len(older) - keep, 0)]:
            _unlink_or_warn(path, on_warning, "old checkpoint ")

    # ----------------------------------------------------------------- loading

    def load(self, path: Path | str) -> Checkpoint:
        """Read and fully validate one checkpoint file.

        Raises CheckpointError naming the file when it is truncated, not an .npz, has
        a bad crc, lacks or has unreadable metadata, is not ours, is from a newer
        format, holds object arrays or NaN/inf; InputMissingError when it does not
        exist; StoreIOError when it cannot be read.
        """
        path = Path(path)
        try:
            return _read(path, self.schema)
        except FileNotFoundError:
            raise InputMissingError(f"no checkpoint file at {path}") from None
        except IsADirectoryError:
            raise InputMissingError(f"{path} is a directory, not a checkpoint file") from None
        except _Corrupt as e:
            raise CheckpointError(f"{path}: {e}") from None

    def latest(self, run: str, on_warning: Warn | None = None) -> Checkpoint:
        """The newest valid checkpoint of ``run``.

        Corrupt checkpoints are skipped, each reported through ``on_warning`` as
        "skipping corrupt checkpoint X: reason; using Y". A file that vanishes between
        listing and reading (pruned by a concurrent writer) is skipped silently. If
        every ckpt-*.npz is corrupt, a valid best.npz is used. Raises InputMissingError
        when the run has no checkpoint, CheckpointError when all are corrupt.
        """
        d = self.run_dir(run)
        skipped: list[tuple[Path, str]] = []
        found: Checkpoint | None = None
        for _attempt in range(3):  # a writer can prune a whole listing; look again
            home = self._home(d)
            paths = [p for _, p in self._steps(home)]
            vanished = 0
            for path in reversed(paths):
                if any(path == s for s, _ in skipped):
                    continue
                try:
                    found = _read(path, self.schema)
                    break
                except FileNotFoundError:
                    vanished += 1
                except _Corrupt as e:
                    skipped.append((path, str(e)))
            if found is not None or not vanished:
                break
        if found is None and skipped:
            # last resort: best.npz may hold a separate, intact copy
            with suppress(FileNotFoundError, _Corrupt):
                found = _read(home / BEST_NAME, self.schema)
        if found is None:
            if skipped:
                newest, reason = skipped[0]
                raise CheckpointError(
                    f"all {len(skipped)} checkpoint(s) of run {run!r} are corrupt "
                    f"(newest {newest}: {reason})"
                )
            if _own_record(d / DIVERGED_NAME):
                raise self._no_checkpoint(run)
            raise InputMissingError(f"no checkpoints in run {run!r} ({_show(d)}); {TRAIN_HINT}")
        if on_warning is not None:
            for path, reason in skipped:
                on_warning(f"skipping corrupt checkpoint {path}: {reason}; using {found.path}")
        return found

    def best(self, run: str) -> Checkpoint | None:
        """The run's best checkpoint, or None if it never saved one with ``best=True``."""
        path = self._home(self.run_dir(run)) / BEST_NAME
        try:
            return _read(path, self.schema)
        except FileNotFoundError:
            return None
        except _Corrupt as e:
            raise CheckpointError(f"{path}: {e}") from None

    def resolve(
        self, spec: str | None, on_warning: Warn | None = None, allow_diverged: bool = False
    ) -> Checkpoint:
        """Turn what the user typed into a checkpoint.

        ``None`` → latest checkpoint of the latest run; ``RUN`` → its latest;
        ``RUN:best``, ``RUN:latest``, ``RUN:STEP``; a path to an existing file → that
        file (an existing file wins over a run of the same name). Anything missing
        raises InputMissingError with a one-line hint. ``RUN:diverged`` (or a path to a
        ``diverged.npz``) is the record of a divergence (see :meth:`save_diverged`), with
        broken weights: only with ``allow_diverged`` (clip-stats reads what happened),
        elsewhere a ConfigError (usage) saying so.
        """
        if spec is None:
            run = self.latest_run()
            if run is None:
                raise InputMissingError(f"no checkpoints in {_show(self.root)}; {TRAIN_HINT}")
            return self.latest(run, on_warning)

        path = Path(spec).expanduser()
        if path.is_file():
            if path.name == DIVERGED_NAME and not allow_diverged:
                raise _not_a_checkpoint(spec, f"{path.parent.name}:diverged")
            return self.load(path)
        if spec.endswith(".npz") or "/" in spec or os.sep in spec:
            raise InputMissingError(f"no checkpoint file at {spec}")

        run, _, selector = spec.partition(":")
        if not is_run_name(run):
            raise InputMissingError(
                f"no run or checkpoint file named {spec!r} in {_show(self.root)}; "
                f"{self._runs_hint()}"
            )
        if selector == "diverged":  # a record, there even when the run has no checkpoint
            if not allow_diverged:
                raise _not_a_checkpoint(spec, spec)
            try:
                return _read(self.run_dir(run) / DIVERGED_NAME, self.schema)
            except FileNotFoundError:
                if not self._steps(self._home(self.run_dir(run))):
                    raise self._no_checkpoint(run) from None
                raise InputMissingError(
                    f"run {run!r} has no diverged state: it did not diverge since its first "
                    "checkpoint"
                ) from None
            except _Corrupt as e:
                raise CheckpointError(f"{self.run_dir(run) / DIVERGED_NAME}: {e}") from None
        steps = self._steps(self._home(self.run_dir(run)))
        if not steps:
            raise self._no_checkpoint(run)
        if selector in ("", "latest"):
            return self.latest(run, on_warning)
        if selector == "best":
            found = self.best(run)
            if found is None:
                raise InputMissingError(
                    f"run {run!r} has no best checkpoint; use {run!r} for its latest"
                )
            return found
        if selector.isdigit():
            for step, p in steps:
                if step == int(selector):
                    return self.load(p)
            # best.npz outlives retention: its step is one the user may have been told
            best: Checkpoint | None = None
            with suppress(CheckpointError):  # unreadable: the steps listed say what there is
                best = self.best(run)
            if best is not None and best.step == int(selector):
                return best
            listed = ", ".join(
                f"{s} (best)" if best is not None and s == best.step else str(s)
                for s in sorted({s for s, _ in steps} | ({best.step} if best else set()))
            )
            raise InputMissingError(
                f"run {run!r} has no checkpoint at step {int(selector)}; steps: {listed}"
            )
        raise ConfigError(  # a mistyped RUN:STEP is a usage error, not a missing input
            f"unknown checkpoint selector {selector!r} in {spec!r}; "
            f"use RUN, RUN:best, RUN:latest, RUN:STEP{', RUN:diverged' * allow_diverged} "
            "or a path to a .npz file"
        )

    def _no_checkpoint(self, run: str) -> InputMissingError:
        """The error for a run without checkpoints: one that diverged before its first
        keeps only its record (diverged.npz), and is not missing: it says where to look."""
        if _own_record(self.run_dir(run) / DIVERGED_NAME):
            return InputMissingError(
                f"run {run!r} has no checkpoint (it diverged before its first; "
                f"charrnn clip-stats {run}:diverged shows what happened)"
            )
        return InputMissingError(f"no run named {run!r} in {_show(self.root)}; {self._runs_hint()}")

    def _runs_hint(self) -> str:
        names = [r.name for r in self.runs()]
        if not names:
            return f"no runs yet; {TRAIN_HINT}"
        return "runs: " + ", ".join(sorted(names))

    # ----------------------------------------------------------------- locking

    @contextmanager
    def lock(
        self,
        run: str,
        wait: float | bool = False,
        on_wait: Callable[[int | None], None] | None = None,
    ) -> Iterator[None]:
        """Hold the run's exclusive writer lock for the ``with`` block.

        ``wait=False`` raises LockedError at once if another process holds it;
        ``wait=True`` blocks until it is free; ``wait=<seconds>`` polls, then raises.
        When it has to wait, ``on_wait`` is called once first with the holder's pid
        (None if unknown), so that the caller can say whom it waits for.

        The lock is ``flock`` on the run directory itself, so deleting or replacing the
        ``lock`` file cannot let a second writer in. After locking, the directory at the
        path must still be the one locked (else it was moved away meanwhile: try again),
        and :meth:`save` checks that again before every commit. The kernel drops the lock
        when the holder's descriptor is closed, including on SIGKILL, so a dead holder
        never leaves a stale lock.

        ``<run>/lock`` only names the holder's pid for messages. It is opened without
        following symlinks and must be a regular file with one link, so a planted
        symlink or hard link to someone else's file is refused, never written.

        flock locks belong to an open file, so a second ``lock()`` of the same run in
        the same process also fails, as it should.
        """
        if isinstance(wait, bool):
            timeout: float | None = None if wait else 0.0
        else:
            if wait < 0:
                raise ValueError(f"wait must be True, False or seconds >= 0, got {wait!r}")
            timeout = float(wait)
        d = self.run_dir(run)
        for _attempt in range(_LOCK_ATTEMPTS):
            self._mkdir(d)
            try:
                # os.open files are not inherited by children (pep 446), so a subprocess
                # of the holder cannot keep the lock alive after the holder dies
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:  # removed just now by a train that failed (forget)
                continue
            except OSError as e:
                raise StoreIOError(f"cannot open run directory {d}: {_strerror(e)}") from None
            try:
                self._acquire(fd, run, timeout, on_wait)
                held = os.fstat(fd)
                if not _same_file(held, d):
                    os.close(fd)  # moved away or replaced while we waited: lock the new one
                    continue
                _write_pid(d / LOCK_NAME)
            except BaseException:
                os.close(fd)
                raise
            self._held[run] = (held.st_dev, held.st_ino)
            try:
                yield
            finally:
                self._held.pop(run, None)
                os.close(fd)  # closing releases the flock
            return
        raise LockedError(f"run directory {d} keeps being replaced; is another program moving it?")

    def _check_held(self, run: str) -> None:
        """Before a commit: if we hold the run's lock, it must still be on the run directory."""
        held = self._held.get(run)
        if held is None:
            return
        d = self.run_dir(run)
        try:
            st = os.stat(d)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != held:
            raise LockedError(
                f"run directory {d} was moved or replaced while this process held its lock; "
                "stopping without writing (another charrnn may own it now)"
            )

    def _acquire(
        self,
        fd: int,
        run: str,
        timeout: float | None,
        on_wait: Callable[[int | None], None] | None = None,
    ) -> None:
        if timeout != 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(_holder_pid(self.run_dir(run) / LOCK_NAME))
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
        pid = _holder_pid(self.run_dir(run) / LOCK_NAME)
        who = f"pid {pid}" if pid is not None else "another process"
        if timeout == 0:
            msg = (
                f"run {run!r} is locked by {who} (another charrnn train); "
                "wait for it or pass --wait"
            )
        else:
            msg = (
                f"run {run!r} is still locked by {who} (another charrnn train) "
                f"after waiting {timeout:g}s"
            )
        raise LockedError(msg, pid=pid)

    # ----------------------------------------------------------------- cleanup

    def clean_leftovers(self, run: str) -> list[Path]:
        """Remove temp files left by killed writers; return what was removed.

        Call it while holding :meth:`lock`. As a second guard, a temp file whose writer
        pid is still alive (and is not this process) is left alone.
        """
        return remove_files(
            self.run_dir(run), lambda entry: dead_temp(entry.name, _TMP_RE), "leftover"
        )


def _not_a_checkpoint(spec: str, selector: str) -> ConfigError:
    return ConfigError(
        f"{spec} is the record of a diverged run (its weights are broken), not a checkpoint: "
        f"only clip-stats reads it (charrnn clip-stats {selector})"
    )


def _write_npz(f: Any, members: list[tuple[str, np.ndarray]]) -> None:
    """What np.savez does, minus its traps: an array named "file" or "allow_pickle"
    would collide with savez's own parameters, and allow_pickle is never on here."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in members:
            with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


_NOT_OURS = "a symbolic link or a file with other hard links, not charrnn's record"


def _own_record(path: Path) -> bool:
    """Whether ``path`` can be the store's diverged record: a regular file with one link,
    as atomic_write leaves it. A symlink or a hard link planted under the name is someone
    else's file: never renamed, replaced or deleted. (Not for checkpoints: best.npz is a
    second link to one.)"""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _same_file(st: os.stat_result, path: Path) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _open_lock_file(path: Path, flags: int) -> int:
    """Open ``path`` without following a symlink; refuse anything but our own plain file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StoreIOError(
                f"{path} is a symbolic link, not charrnn's lock file; remove it and run again"
            ) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        kind = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
        raise StoreIOError(f"{path} {kind}: it is not charrnn's lock file; remove it and run again")
    return fd


def _write_pid(path: Path) -> None:
    """Name the holder in ``path``; a new file that cannot be written is removed again."""
    created = True
    try:
        try:
            fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            created = False
            fd = _open_lock_file(path, os.O_RDWR)
    except OSError as e:
        raise StoreIOError(f"cannot open lock file {path}: {_strerror(e)}") from None
    try:
        data = f"{os.getpid()}\n".encode()
        os.pwrite(fd, data, 0)  # write, then cut: never an empty file on a full disk
        os.ftruncate(fd, len(data))
    except OSError as e:
        if created:
            _unlink_quiet(path)
        raise StoreIOError(f"cannot write lock file {path}: {_strerror(e)}") from None
    finally:
        os.close(fd)


def _holder_pid(path: Path) -> int | None:
    try:
        fd = _open_lock_file(path, os.O_RDONLY)
    except (OSError, StoreIOError):
        return None
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None
