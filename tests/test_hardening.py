"""Issue 11 at the command line: charrnn never harms what is not its own, never calls a
failure success, and answers bad input with one line and a documented exit code."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
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
    # besides the error, at most the one line that names the model chosen (its best checkpoint)
    lines = [x for x in r.stderr.strip().splitlines() if "its best checkpoint, step" not in x]
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


# ----------------------------------------------------------------------------- 4, 6: score


@pytest.fixture(scope="module")
def dinos_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    r = invoke(["train", "--store", str(root), "--steps", "2", "-q", *SMALL])  # lowercase dinos
    assert r.exit_code == 0, r.stderr
    return root


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom"])
def test_score_refuses_a_device(dinos_store, path):
    r = charrnn("score", path, "--store", str(dinos_store), timeout=60)
    assert r.returncode == 65, r.stderr
    assert r.stderr.strip() == (
        f"charrnn: error: {path} is a device, not a regular file; save the "
        "text to a file, or pipe it in as - (standard input)"
    )


def test_score_reads_text_like_the_corpus_reader(dinos_store, tmp_path):
    utf16 = tmp_path / "names16.txt"
    utf16.write_bytes("aachenosaurus\n".encode("utf-16"))
    r = invoke(["score", str(utf16), "--store", str(dinos_store)])
    one_line_error(
        r,
        65,
        f"{utf16} looks like UTF-16 text; the model reads utf-8: convert it first "
        "(e.g. iconv -f utf-16 -t utf-8)",
    )
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\xef\xbb\xbfAachenosaurus\r\nZuniceratops\r\n")  # BOM, CRLF, capitals
    lf = tmp_path / "lf.txt"
    lf.write_bytes(b"aachenosaurus\nzuniceratops\n")
    a = invoke(["score", str(crlf), "--store", str(dinos_store), "--json"])
    b = invoke(["score", str(lf), "--store", str(dinos_store), "--json"])
    assert a.exit_code == b.exit_code == 0, a.stderr + b.stderr
    assert json.loads(a.stdout)["logprob"] == json.loads(b.stdout)["logprob"]


def test_score_streams_in_bounded_memory(dinos_store, tmp_path):
    """64 MB of one line, scored by a process allowed 300 MB of address space (the old
    whole-file read needed over 300 MB for this; it now stays near 42 MB RSS)."""
    big = tmp_path / "sevens.txt"
    with open(big, "wb") as f:
        for _ in range(64):
            f.write(b"7" * (1 << 20))  # '7' is not in the model: dropped, so no time is spent
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (300 << 20, 300 << 20))\n"
        "from charrnn.cli import main\n"
        f"main(['score', {str(big)!r}, '--store', {str(dinos_store)!r}, '--skip-unknown'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 65, r.stderr
    assert f"dropped {64 << 20:,} characters not in the vocabulary" in r.stderr
    assert r.stderr.strip().endswith(f"charrnn: error: {big} has nothing to score")


# ----------------------------------------------------------------------------- 5. meaning


@pytest.fixture
def trained(tmp_path) -> Path:
    r = invoke(["train", "--store", str(tmp_path), "--steps", "4", "--eval-every", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    return tmp_path


def _rewrite(store: Path, change) -> Path:
    """Re-save the latest checkpoint of 'dinos' with valid crcs but ``change``d content."""
    st = Store(store)
    ck = st.latest("dinos")
    arrays, meta = dict(ck.arrays), dict(ck.meta)
    change(arrays, meta)
    return st.save("dinos", ck.step, arrays, meta, keep=None)


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            lambda a, m: a.update({"param.Wya": a["param.Wya"].astype(np.int64)}),
            "parameter 'param.Wya' is int64",
        ),
        (
            lambda a, m: a.update({"param.by": a["param.by"].astype(np.complex64)}),
            "parameter 'param.by' is complex64",
        ),
        (lambda a, m: a.update({"param.by": a["param.by"] > 0}), "parameter 'param.by' is bool"),
        (
            lambda a, m: a.update({"opt.m": np.array(0.5, np.float32)}),
            "array 'opt.m' is float32 ()",
        ),
        (
            lambda a, m: a.update({"param.Wya": np.full_like(a["param.Wya"], 3e38)}),
            "holds values beyond 1e+15",
        ),
        (lambda a, m: a.pop("hist.lr"), "training state is malformed"),
        (lambda a, m: a.update({"notes": np.ones(2)}), "unknown array 'notes'"),
        (lambda a, m: m.update({"optimizer_t": -3}), "'optimizer_t' is -3, not a count"),
        (lambda a, m: m.update({"elapsed": -1.0}), "'elapsed' is -1.0"),
        (lambda a, m: m["vocab"]["chars"].pop(), "vocabulary has 26 characters"),
        (lambda a, m: m["train"].update({"batch_size": 7}), "array 'train.hidden' is"),
    ],
)
def test_a_meaningless_checkpoint_is_corrupt_everywhere(trained, change, reason):
    bad = _rewrite(trained, change)
    commands = (
        ["sample", str(bad)],
        ["clip-stats", str(bad)],
        ["score", DINOS, "--model", str(bad)],
    )
    for args in commands:
        r = invoke([*args, "--store", str(trained)])
        one_line_error(r, 65, f"{bad}: ")
        assert reason in r.stderr, r.stderr
    # where the latest is asked for, the one before it is used, with a warning
    r = invoke(["sample", "dinos", "--latest", "-n", "1", "--store", str(trained), "--seed", "1"])
    assert r.exit_code == 0, r.stderr
    assert f"skipping corrupt checkpoint {bad}" in r.stderr
    assert "ckpt-000000002.npz" in r.stderr
    r = invoke(["train", "--store", str(trained), "--steps", "6", "--eval-every", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert "resuming run 'dinos' from step 2" in r.stderr


# ----------------------------------------------------------------------------- 2. --fresh


def test_fresh_killed_before_its_first_save_keeps_the_old_run(tmp_path):
    r = invoke(["train", "--store", str(tmp_path), "--steps", "4", "--eval-every", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["train", "--store", str(tmp_path), "--fresh", "--steps", "100000"]
    p = subprocess.Popen(
        [sys.executable, "-m", "charrnn", *args, "--eval-every", "100000", *SMALL],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = []
        for line in p.stderr:  # killed once it has set the old run aside and is training
            seen.append(line)
            if " training " in line:
                break
        p.kill()
    finally:
        p.wait()
    assert any(" training " in line for line in seen), seen
    assert Store(tmp_path).latest("dinos").step == 4
    assert any("set aside" in line for line in seen), seen
    r = invoke(["sample", "-n", "2", "--store", str(tmp_path), "--seed", "0"])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2
    r = invoke(["train", "--store", str(tmp_path), "--steps", "6", "--eval-every", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert "resuming run 'dinos' from step 4" in r.stderr
    # a --fresh run that saves replaces the old run for good
    r = invoke(["train", "--store", str(tmp_path), "--fresh", "--steps", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert "set aside" in r.stderr
    run = tmp_path / "dinos"
    assert [p.name for p in Store(tmp_path).checkpoints("dinos")] == ["ckpt-000000002.npz"]
    assert not (run / ".previous").exists()


# ----------------------------------------------------------------------------- 3. divergence


def test_the_divergence_rule():
    from charrnn.trainer import diverged

    assert not diverged(math.log(27), 27) and not diverged(2.9 * math.log(27), 27)
    assert diverged(3.1 * math.log(27), 27) and diverged(509.0, 27)
    assert diverged(math.nan, 27) and diverged(math.inf, 27)


@pytest.mark.parametrize(
    "args",
    [
        ["--lr", "100", "--clip-norm", "none"],
        ["--optimizer", "sgd", "--lr", "100", "--clip-norm", "none"],
        ["--optimizer", "adagrad", "--lr", "100", "--clip-norm", "none"],
        ["--optimizer", "rmsprop", "--lr", "100", "--clip-norm", "none"],
        ["--optimizer", "sgd", "--lr", "1e30"],
        ["--optimizer", "sgd", "--lr", "1e30", "--eval-every", "2"],  # validates mid-divergence
    ],
)
def test_divergence_exits_3_keeps_the_last_sane_state_and_is_never_best(tmp_path, args):
    base = ["train", "--store", str(tmp_path), "--steps", "60", "--hidden", "16"]
    r = invoke([*base, "--eval-every", "30", *args])
    assert r.exit_code == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("charrnn: error: training diverged: ")
    st = Store(tmp_path)
    record = st.resolve("dinos:diverged", allow_diverged=True)  # for clip-stats, finite
    params = [a for k, a in record.arrays.items() if k.startswith("param.")]
    assert all(np.isfinite(a).all() and np.abs(a).max() < 1e15 for a in params)
    # the run keeps only checkpoints from before the divergence, validated sane
    for path in st.checkpoints("dinos"):
        ck = st.load(path)
        assert ck.step < record.step and ck.arrays["val.loss"][-1] < 3 * math.log(27)
    best = st.best("dinos")  # only a validation before the divergence
    assert best is None or (best.step < record.step and best.meta["best_val"] < 3 * math.log(27))
    r = invoke(["clip-stats", "--store", str(tmp_path), "--json", "dinos:diverged"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["step"] == record.step and doc["steps"]["nonfinite"] > 0


# ----------------------------------------------------------------------------- 7. contract


@pytest.mark.parametrize("command", [["train", "--steps", "1"], ["sample", "-n", "1"]])
def test_a_negative_seed_is_a_usage_error(tmp_path, command):
    r = invoke([*command, "--store", str(tmp_path), "--seed", "-1"])
    one_line_error(r, 2, "--seed: must be at least 0, not -1")


def test_utf16_asked_for_a_bomless_file_is_one_line(tmp_path):
    text = tmp_path / "u8.txt"
    text.write_text("hello world\nabc\n")
    r = invoke(["train", str(text), "--store", str(tmp_path), "--encoding", "utf-16"])
    one_line_error(
        r,
        65,
        f"{text}: cannot decode as utf-16 (UTF-16 stream does not start with BOM); if it is "
        "utf-16 without a BOM, pass --encoding utf-16-le or utf-16-be; else pass the file's "
        "real --encoding",
    )


def test_stdout_that_cannot_write_the_model_s_characters_says_why(tmp_path):
    cjk = tmp_path / "cjk.txt"
    cjk.write_text("日本語の文章です。\n日本語\n" * 20)
    r = invoke(["train", str(cjk), "--store", str(tmp_path), "--steps", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "ascii"}
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "sample", "cjk", "--store", str(tmp_path), "-n", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 74, r.stderr
    assert r.stdout == ""
    # the error, and (first) the one line that names the checkpoint chosen
    lines = [x for x in r.stderr.strip().splitlines() if "its best checkpoint, step" not in x]
    assert len(lines) == 1 and lines[0].startswith(
        "charrnn: error: standard output's encoding (ascii) cannot write "
    )
    assert lines[0].endswith("; set PYTHONIOENCODING=utf-8 or use a UTF-8 locale")


def test_a_checkpoint_from_before_a_config_field_existed_still_loads(trained):
    def older(arrays, meta):
        for field in ("schedule", "warmup", "decay_steps", "lr_min"):
            meta["optim"].pop(field)  # written before the lr schedules existed
        meta["train"].pop("patience")

    path = _rewrite(trained, older)
    r = invoke(["sample", str(path), "-n", "1", "--store", str(trained), "--seed", "0"])
    assert r.exit_code == 0, r.stderr
    r = invoke(["train", "--store", str(trained), "--steps", "6", "--eval-every", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert "resuming run 'dinos' from step 4" in r.stderr


@pytest.mark.parametrize(
    "args, what",
    [
        (["train", "--run", "big", "--hidden", "8192", "--layers", "16"], "a 16x8192 lstm"),
        # (a huge --batch-size no longer is one: the batch shrinks to fit the corpus)
        (["train", "--run", "wide", "--hidden", "60000"], "a 1x60000 lstm"),
        (["sample", "--max-length", "1000000000000"], "--max-length 1000000000000 needs about"),
    ],
)
def test_asking_for_more_memory_than_there_is_is_a_usage_error(dinos_store, args, what):
    r = invoke([*args, "--store", str(dinos_store), "-q"])
    one_line_error(r, 2, what)
    assert "of memory, more than the " in r.stderr
