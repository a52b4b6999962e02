"""One way to write a file so that a crash never leaves it torn: the store's checkpoints,
best.npz and the corpus token cache all go through :func:`atomic_write`.

The steps, in the order that makes them crash-safe::

    .NAME.tmp-<pid>-<hex>   created with O_EXCL (never someone else's file), written,
                            fsynced (the data is on disk before a name points at it)
    os.replace(tmp, NAME)   atomic on POSIX: readers see the old file or the new one
    fsync(directory)        the rename itself survives a power cut

A temp name carries the writer's pid, so a cleaner can tell a dead writer's leftover
(:func:`dead_temp`) from a live writer's file.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO

from charrnn.errors import StoreIOError

__all__ = ["atomic_write", "dead_temp", "fsync_dir", "remove_files", "temp_name", "temp_pattern"]


def temp_name(final: Path) -> Path:
    """``.NAME.tmp-<pid>-<hex>`` beside ``final``: hidden, unique, and names its writer."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def temp_pattern(final_pattern: str) -> re.Pattern[str]:
    """The temp names of files whose names match ``final_pattern``; group 1 is the pid."""
    return re.compile(rf"\.(?:{final_pattern})\.tmp-(\d+)-[0-9a-f]+")


def dead_temp(name: str, pattern: re.Pattern[str]) -> bool:
    """Whether ``name`` is a temp file of ``pattern`` whose writer is gone (or is us)."""
    m = pattern.fullmatch(name)
    if m is None:
        return False
    pid = int(m.group(1))
    return pid == os.getpid() or not pid_alive(pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable (some filesystems refuse; that is fine)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object], what: str = "file") -> Path:
    """Write ``path`` through a temp file: a kill at any instant leaves the old file or
    the new one, never a torn one. ``write(f)`` fills the binary file ``f``.

    An OSError (disk full, permissions) becomes StoreIOError naming ``path`` (as
    "cannot write <what> <path>: reason"), with the temp file removed.
    """
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the name points at it
        os.replace(tmp, path)  # atomic: readers see the old file or the new one
        fsync_dir(path.parent)  # the rename itself survives a power cut
    except OSError as e:
        with suppress(OSError):
            os.unlink(tmp)
        raise StoreIOError(f"cannot write {what} {path}: {e.strerror or e}") from None
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def remove_files(
    directory: Path, ours: Callable[[os.DirEntry[str]], bool], what: str
) -> list[Path]:
    """Remove the entries of ``directory`` that ``ours`` picks; return them, sorted.

    A missing directory removes nothing; a file that vanishes first (another cleaner)
    is skipped; any other OSError becomes StoreIOError ("cannot remove <what> <path>").
    """
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if not ours(entry):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise StoreIOError(f"cannot remove {what} {entry.path}: {e.strerror or e}") from None
        removed.append(Path(entry.path))
    return sorted(removed)
