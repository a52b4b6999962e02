"""Issue 11 at the command line: charrnn never harms what is not its own, never calls a
failure success, and answers bad input with one line and a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from charrnn.store import Store

ROOT = Path(__file__).resolve().parent.parent
DINOS = str(ROOT / "data" / "dinos.txt")
SMALL = ["--hidden", "8", "--batch-size", "4", "--seq-len", "8"]


class _Main:
    """Adapter so CliRunner drives charrnn.cli.main (which maps errors to exit codes)."""

    name = "charrnn"

    def main(self, args=None, prog_name=None, **extra):
        from charrnn.cli import main

        main(list(args or []))


def invoke(args: list[str], env: dict | None = None, input=None):
    return CliRunner().invoke(_Main(), args, env=env, input=input)


def one_line_error(r, code: int, contains: str) -> None:
    assert r.exit_code == code, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: "), r.stderr
    assert contains in lines[0], lines[0]


def charrnn(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, **kw.pop("env", {})},
        **kw,
    )


# ----------------------------------------------------------------------------- 1. not ours


def test_train_leaves_foreign_files_in_the_cache_directory(tmp_path):
    corpus = tmp_path / "d.txt"
    corpus.write_text("hello world\nhow are you\n" * 20)
    cache = tmp_path / "store" / "d" / "cache"
    cache.mkdir(parents=True)
    (cache / "notes.txt").write_text("keep\n")
    stale = cache / "tokens-0123456789abcdef0123.u8"  # charrnn's, of another corpus version
    stale.write_bytes(b"x")
    r = invoke(["train", str(corpus), "--store", str(tmp_path / "store"), "--steps", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert (cache / "notes.txt").read_text() == "keep\n"
    assert not stale.exists()


def test_train_refuses_a_symlinked_lock_and_leaves_its_target_alone(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("my thesis\n")
    run = tmp_path / "store" / "dinos"
    run.mkdir(parents=True)
    (run / "lock").symlink_to(precious)
    r = invoke(["train", DINOS, "--store", str(tmp_path / "store"), "--steps", "1", *SMALL])
    one_line_error(r, 74, "is a symbolic link, not charrnn's lock file; remove it")
    assert precious.read_text() == "my thesis\n"


# ----------------------------------------------------------------------------- 6. hangs


def test_train_refuses_a_device_before_taking_the_lock(tmp_path):
    with Store(tmp_path).lock("zero"):  # held: a refusal after locking would say 75
        r = invoke(["train", "/dev/zero", "--store", str(tmp_path), "--steps", "1"])
    one_line_error(r, 65, "/dev/zero is a device, not a regular file")


def test_train_refuses_a_fifo_instead_of_hanging(tmp_path):
    fifo = tmp_path / "names"
    os.mkfifo(fifo)
    r = charrnn("train", str(fifo), "--store", str(tmp_path / "s"), "--steps", "1", timeout=60)
    assert r.returncode == 65, r.stderr
    assert r.stderr.strip() == (
        f"charrnn: error: {fifo} is a FIFO, not a regular file; save the text to a file, "
        "or pipe it in as - (standard input)"
    )
    assert not (tmp_path / "s" / "names").exists()  # no run directory, no lock
