"""The one place that touches the terminal: stderr logging, tqdm bars, rich tables.

rich and tqdm are imported lazily, only when something is drawn, so that
``charrnn sample`` starts fast. Bars are for humans: off when stderr is not a
terminal (cron), with TERM=dumb, or with --quiet. Colour follows NO_COLOR.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from typing import IO, Any


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def color_allowed() -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 batch', '2 batches': a count with its noun in the right number."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


class Log:
    """Messages for the person or the log file: always stderr, never stdout.

    When stderr is not a terminal (cron, a pipe, a file) every line starts with an
    ISO 8601 local timestamp with its offset. When a line cannot be written (the
    reader went away: EPIPE; a closed descriptor), logging stops silently and
    ``lost`` says why: the caller goes on and reports it in its summary.
    """

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self.lost: str | None = None  # why log lines could not be written, once they could not
        if sys.stderr is None:  # started with descriptor 2 closed (2>&-)
            self._lose("stderr is closed")
        try:
            self.stamped = not sys.stderr.isatty()
        except (OSError, ValueError, AttributeError):
            self.stamped = True

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._write(msg)

    def warn(self, msg: str) -> None:
        self._write(f"warning: {msg}")  # warnings show even with --quiet

    def _write(self, msg: str) -> None:
        if self.lost is not None:
            return
        if self.stamped:
            now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            msg = f"{now} {msg}"
        try:
            if self._bar is not None:
                self._bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)
        except (OSError, ValueError) as e:  # EPIPE, EBADF, a closed file object
            self._lose(getattr(e, "strerror", None) or str(e) or type(e).__name__)

    def _lose(self, why: str) -> None:
        """Stop logging; descriptor 2 now leads to /dev/null, so that nothing else that
        writes there (Python at exit, a warning) fails or lands in a file that took it."""
        self.lost = why
        self._bar = None
        with contextlib.suppress(OSError):
            fd = os.open(os.devnull, os.O_WRONLY)
            if fd != 2:
                os.dup2(fd, 2)
                os.close(fd)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - lives as long as the process

    def progress(self, total: int, initial: int, desc: str) -> Progress:
        enabled = not self.quiet and stderr_is_tty()
        bar = Progress(total, initial, desc, enabled)
        self._bar = bar.bar
        return bar

    def close_progress(self) -> None:
        self._bar = None


class Progress:
    """A tqdm bar on stderr, or nothing at all."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                colour=None,
                smoothing=0.1,
            )

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by n steps; new fields show with the step (at once when n is 0)."""
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=n == 0)
            if n:
                self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def rich_console(file: IO[str] | None = None, width: int | None = None, plain: bool | None = None):
    """A rich Console writing to ``file`` (stdout by default) that honours NO_COLOR/TERM
    (``plain``: no styling at all whatever they say; None asks them)."""
    from rich.console import Console

    f = file or sys.stdout
    if plain is None:
        plain = not color_allowed()
    # no_color alone keeps bold and dim escapes: NO_COLOR / TERM=dumb get no styling at all
    return Console(
        file=f,
        no_color=plain,
        color_system=None if plain else "auto",
        highlight=False,
        soft_wrap=False,
        width=width or report_width(f),
    )


def report_width(f: IO[str]) -> int | None:
    """Columns for a report: a terminal's own width; piped, $COLUMNS or 80 (so `| less`
    does not wrap every row)."""
    if f.isatty():
        return None  # rich asks the terminal (and honours COLUMNS itself)
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else 80
