"""Domain exceptions, each with the process exit code the CLI maps it to.

The core raises these; only ``cli.py`` turns them into a one-line message and
an exit status. The codes follow BSD sysexits where one fits.
"""

from __future__ import annotations

from typing import Any

# the exit-code contract (documented in `charrnn --help` and the README)
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected internal error
EXIT_USAGE = 2  # bad option or argument (click's own code)
EXIT_DIVERGED = 3  # training stopped: loss non-finite or far above uniform guessing
EXIT_SHORT = 4  # sample: fewer names than -n passed the filters within the draw budget
EXIT_DATA = 65  # bad corpus, checkpoint or text (EX_DATAERR)
EXIT_NOINPUT = 66  # input file, run or checkpoint missing, a directory or unpermitted (EX_NOINPUT)
EXIT_IO = 74  # read/write failure, disk full (EX_IOERR)
EXIT_LOCKED = 75  # the run is locked by another process (EX_TEMPFAIL)
EXIT_SIGINT = 130  # interrupted by Ctrl-C, after a safe checkpoint
EXIT_SIGTERM = 143  # terminated, after a safe checkpoint

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_ERROR: "unexpected error",
    EXIT_USAGE: "usage error (bad option or argument, or more memory than there is)",
    EXIT_DIVERGED: "training diverged (loss non-finite or far above uniform guessing)",
    EXIT_SHORT: "sample: the filters let fewer than -n names through (those found are printed)",
    EXIT_DATA: "bad input data: corpus, checkpoint or text",
    EXIT_NOINPUT: "input missing: file, run or checkpoint not found "
    "(or a directory, or not permitted)",
    EXIT_IO: "I/O error (unreadable, unwritable, disk full)",
    EXIT_LOCKED: "run locked by another charrnn process",
    EXIT_SIGINT: "interrupted (SIGINT) after saving a checkpoint",
    EXIT_SIGTERM: "terminated (SIGTERM) after saving a checkpoint",
}


class CharrnnError(Exception):
    """Base class: a message for the user and the exit code that goes with it.

    A subclass names its code once, in its class line (``exit_code=EXIT_DATA``).
    Keyword details given when raising, such as ``VocabError(msg, unknown=...)``,
    become attributes; a subclass declares each one with its default.
    """

    exit_code = EXIT_ERROR

    def __init_subclass__(cls, exit_code: int | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, *args: object, **details: Any) -> None:
        super().__init__(*args)
        for name, value in details.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no detail {name!r}")
            setattr(self, name, value)


class ConfigError(CharrnnError, exit_code=EXIT_USAGE):
    """A setting conflicts with the saved run or with another setting."""


class CorpusError(CharrnnError, exit_code=EXIT_DATA):
    """The corpus cannot be used: empty, too short, binary, badly encoded."""


class VocabError(CharrnnError, exit_code=EXIT_DATA):
    """Text holds characters the model's vocabulary does not know."""

    unknown: tuple[str, ...] = ()  # those characters, in order of first appearance


class InputMissingError(CharrnnError, exit_code=EXIT_NOINPUT):
    """A file, run or checkpoint that was asked for does not exist."""


class CheckpointError(CharrnnError, exit_code=EXIT_DATA):
    """A checkpoint is corrupt, truncated, foreign or from a newer format."""


class StoreIOError(CharrnnError, exit_code=EXIT_IO):
    """Reading or writing the store failed (permissions, disk full)."""


class LockedError(CharrnnError, exit_code=EXIT_LOCKED):
    """Another process holds the run's lock."""

    pid: int | None = None  # the holder's process id, when the lock file names it


class ResourceError(CharrnnError, exit_code=EXIT_USAGE):
    """What was asked for needs more memory than the machine has (a usage error)."""


class DivergedError(CharrnnError, exit_code=EXIT_DIVERGED):
    """Training produced non-finite loss or gradients too many steps in a row."""

    what: str = ""  # what happened, without the advice (the session adds where the run stays)
    advice: str = ""  # what to change, e.g. "a lower learning rate (--lr 0.0002)"


class TooFewSamplesError(CharrnnError, exit_code=EXIT_SHORT):
    """Sampling filters (--novel, --unique, --min-length) could not be met within the
    bounded number of draws; the names found were printed before this is raised."""
