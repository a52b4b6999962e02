"""The one place that touches the terminal: stderr logging, tqdm bars, rich tables.

rich and tqdm are imported lazily, only when something is drawn, so that
``charrnn sample`` starts fast. Bars are for humans: off when stderr is not a
terminal (cron), with TERM=dumb, or with --quiet. Colour follows NO_COLOR.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM", "") != "dumb"


def color_allowed() -> bool:
    return "NO_COLOR" not in os.environ and os.environ.get("TERM", "") != "dumb"


class Log:
    """Messages for the person or the log file: always stderr, never stdout."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._bar: Any = None

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._write(msg)

    def warn(self, msg: str) -> None:
        self._write(f"warning: {msg}")  # warnings show even with --quiet

    def _write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

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
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def rich_console(file: TextIO | None = None, width: int | None = None):
    """A rich Console writing to ``file`` (stdout by default) that honours NO_COLOR/TERM."""
    from rich.console import Console

    f = file or sys.stdout
    plain = not color_allowed()
    # no_color alone keeps bold and dim escapes: NO_COLOR / TERM=dumb get no styling at all
    return Console(
        file=f,
        no_color=plain,
        color_system=None if plain else "auto",
        highlight=False,
        soft_wrap=False,
        width=width or (None if f.isatty() else 100),
    )
