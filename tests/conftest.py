"""Fixtures shared by the command-line tests.

``invoke`` drives the real entry point (``charrnn.cli.main``, error mapping and exit
codes included) in-process with stdout and stderr captured apart; ``trained_store``
is a store with two small models (names and prose), trained once per test session
for the sample and score tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

# timing is never asserted in tests: on a shared, loaded machine hypothesis's default
# 200 ms deadline per example fails tests that are correct
settings.register_profile("charrnn", deadline=None)
settings.load_profile("charrnn")

ROOT = Path(__file__).resolve().parent.parent
DINOS = ROOT / "data" / "dinos.txt"

Invoke = Callable[..., Result]


class _Main:
    """Adapter so CliRunner drives charrnn.cli.main rather than the bare click group."""

    name = "charrnn"

    def main(self, args=None, prog_name=None, **extra):
        from charrnn.cli import main

        main(list(args or []))


def run_cli(args: list[str], env: dict | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(_Main(), args, env=env, input=input)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def invoke() -> Invoke:
    """``invoke(args, env=None, input=None)``: run charrnn, return the click Result."""
    return run_cli


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> Path:
    """A store with run 'dinos' (names, 150 steps) and run 'prose' (40 steps)."""
    root = tmp_path_factory.mktemp("store")
    small = ["--hidden", "32", "--batch-size", "16", "--seq-len", "32", "-q"]
    r = run_cli(
        ["train", str(DINOS), "--store", str(root), "--steps", "150", "--eval-every", "150"]
        + ["--lr", "0.01", *small]
    )
    assert r.exit_code == 0, r.stderr
    prose = root.parent / "prose.txt"
    prose.write_text((ROOT / "data" / "tinyshakespeare.txt").read_text()[:30000])
    r = run_cli(
        ["train", str(prose), "--store", str(root), "--steps", "40", "--eval-every", "40", *small]
    )
    assert r.exit_code == 0, r.stderr
    return root
