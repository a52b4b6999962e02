"""What a cron job needs from `charrnn train`: timestamped log lines, a dying stderr
reader that never turns into a fake success, checkpoints on a clock or a step count
apart from validation, validation on a clock and at bounded cost, and a --wait that
says whom it waits for and gives up with exit 75."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn import trainer
from charrnn.batches import LineBatches, line_spans
from charrnn.console import Log
from charrnn.model import CharRNN, ModelConfig
from charrnn.optim import OptimConfig
from charrnn.store import Store
from charrnn.trainer import EvalStats, Every, SaveDue, StepStats, TrainConfig, TrainState

ROOT = Path(__file__).resolve().parent.parent
DINOS = str(ROOT / "data" / "dinos.txt")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")  # ISO 8601, offset
TINY = ["--hidden", "8", "--batch-size", "8", "--seq-len", "16"]


class _Main:
    name = "charrnn"

    def main(self, args=None, prog_name=None, **extra):
        from charrnn.cli import main

        main(list(args or []))


def invoke(args: list[str]):
    return CliRunner().invoke(_Main(), args)


def charrnn(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "charrnn", *args], env=env, **kw)


# --------------------------------------------------------------------------- timestamps


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_carry_a_timestamp_when_stderr_is_not_a_terminal(monkeypatch):
    file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", file)
    log = Log()
    log.info("hello")
    log.warn("careful")
    lines = file.getvalue().splitlines()
    assert [STAMP.sub("", line) for line in lines] == ["hello", "warning: careful"]
    assert all(STAMP.match(line) for line in lines)
    # the offset is the local one
    offset = time.strftime("%z")
    assert lines[0][19:25] == f"{offset[:3]}:{offset[3:]}"


def test_log_lines_are_unchanged_on_a_terminal(monkeypatch):
    tty = _Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    Log().info("hello")
    assert tty.getvalue() == "hello\n"


def test_a_log_that_cannot_write_goes_quiet_and_says_why(monkeypatch):
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Broken())
    moved = []  # descriptor 2 goes to /dev/null: recorded here, not done to pytest's own
    monkeypatch.setattr("charrnn.console.os.dup2", lambda fd, to: moved.append(to))
    log = Log()
    log.info("one")
    assert log.lost == "Broken pipe" and moved == [2]
    log.warn("two")  # silently dropped: no exception
    assert moved == [2]


# --------------------------------------------------------------------------- a dying reader


def test_a_dying_stderr_reader_does_not_stop_training(tmp_path):
    """The issue's reproduction: `train ... 2>&1 >/dev/null | head -2` stopped at step
    10 of 60 and exited 0. Now the run finishes; its JSON says logging was lost."""
    out = tmp_path / "summary.json"
    with out.open("w") as stdout:
        p = charrnn(
            "train", DINOS, "--store", str(tmp_path / "st"), "--steps", "60",
            "--eval-every", "10", "--json", *TINY,
            stdout=stdout, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert p.stderr is not None
        head = [p.stderr.readline() for _ in range(2)]  # what `head -2` reads ...
        p.stderr.close()  # ... before it exits
        assert p.wait(timeout=120) == 0
    assert all(STAMP.match(line.decode()) for line in head)
    doc = json.loads(out.read_text())
    assert doc["status"] == "done" and doc["step"] == 60
    assert doc["logging"] == "lost" and doc["log_error"] == "Broken pipe"
    assert 0 <= doc["log_lost_at_step"] < 60
    assert Store(tmp_path / "st").latest("dinos").step == 60


def test_a_closed_stderr_trains_and_reports_it(tmp_path):
    p = charrnn(
        "train", DINOS, "--store", str(tmp_path), "--steps", "20", "--json", *TINY,
        stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2),
    )  # fmt: skip
    stdout, _ = p.communicate(timeout=120)
    assert p.returncode == 0
    doc = json.loads(stdout)  # stdout holds the product only: no log line strayed there
    assert doc["step"] == 20 and doc["logging"] == "lost" and doc["log_lost_at_step"] == 0
    assert doc["log_error"] == "stderr is closed"


def test_the_summary_says_logging_is_fine_when_it_is(tmp_path):
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "5", "--json", *TINY])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["logging"] == "ok" and doc["log_lost_at_step"] is None


# --------------------------------------------------------------------------- cadences


def test_cadences_parse_steps_or_durations():
    assert Every.parse("500") == Every(steps=500)
    assert Every.parse("10m") == Every(seconds=600.0)
    assert Every.parse("1h30m") == Every(seconds=5400.0)
    assert Every(steps=50).due(100, 0.0) and not Every(steps=50).due(101, 1e9)
    assert Every(seconds=60).due(1, 60.0) and not Every(seconds=60).due(1, 59.9)
    for bad in ("", "ten", "0", "-5m", "0s"):
        with pytest.raises(ValueError):
            Every.parse(bad)


class FakeClock:
    """time.perf_counter advancing one second per call: a clock the test controls."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _tiny_state(cfg: TrainConfig) -> tuple[TrainState, object]:
    from charrnn.batches import make_batches

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 4000)
    ts = TrainState.fresh(ModelConfig(vocab_size=5, hidden=4), OptimConfig(), cfg)
    return (
        ts,
        make_batches(ids, 0, 3600, cfg.batch_size, cfg.seq_len),
        make_batches(ids, 3600, 4000, cfg.batch_size, cfg.seq_len),
    )


def test_saves_and_validations_follow_their_clocks(monkeypatch):
    monkeypatch.setattr(trainer.time, "perf_counter", FakeClock())
    cfg = TrainConfig(batch_size=2, seq_len=8, eval_seconds=10.0)
    ts, batches, val = _tiny_state(cfg)
    kinds = []
    for ev in trainer.train(ts, batches, val, total_steps=30, save_every=Every(seconds=4.0)):
        if not isinstance(ev, StepStats):
            kinds.append((type(ev).__name__, ev.step))
    # the fake clock ticks once a step and once after each validation or save: every
    # 10 ticks a validation, 4 ticks after the last checkpoint (a validation's too) a save
    assert kinds == [
        ("SaveDue", 4),
        ("SaveDue", 8),
        ("EvalStats", 9),
        ("SaveDue", 13),
        ("SaveDue", 17),
        ("EvalStats", 18),
        ("SaveDue", 22),
        ("SaveDue", 26),
        ("EvalStats", 27),
        ("EvalStats", 30),  # the end of the run
    ]


def test_step_saves_are_independent_of_validation():
    cfg = TrainConfig(batch_size=2, seq_len=8, eval_every=10)
    ts, batches, val = _tiny_state(cfg)
    saves, evals = [], []
    for ev in trainer.train(ts, batches, val, total_steps=30, save_every=Every(steps=4)):
        if isinstance(ev, SaveDue):
            saves.append(ev.step)
        elif isinstance(ev, EvalStats):
            evals.append(ev.step)
    assert evals == [10, 20, 30]
    assert saves == [4, 8, 12, 16, 24, 28]  # 20 is a validation's checkpoint already


def test_save_every_keeps_retention_and_best(tmp_path):
    r = invoke(
        ["train", DINOS, "--store", str(tmp_path), "--steps", "40", "--eval-every", "20",
         "--save-every", "7", "--keep", "2", *TINY]
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    st = Store(tmp_path)
    assert [c.name for c in st.checkpoints("dinos")] == [
        "ckpt-000000035.npz",
        "ckpt-000000040.npz",
    ]
    assert "step 7: saved ckpt-000000007.npz" in r.stderr
    assert (tmp_path / "dinos" / "best.npz").exists()


def test_eval_every_takes_a_duration_and_resume_keeps_it(tmp_path):
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "6", "--eval-every", "10m",
                *TINY])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    meta = Store(tmp_path).latest("dinos").meta
    assert meta["train"]["eval_seconds"] == 600.0
    assert invoke(["train", DINOS, "--eval-every", "soon"]).exit_code == 2


# --------------------------------------------------------------------------- validation cost


def test_names_validation_is_spread_and_bounded():
    rng = np.random.default_rng(1)
    lines = ["".join(rng.choice(list("abcdef"), rng.integers(2, 12))) for _ in range(400)]
    ids = np.array([ord(c) - 96 for c in "\n".join(lines) + "\n"], dtype=np.int64)
    ids[ids < 0] = 0  # "\n" is id 0
    starts, lengths = line_spans(ids, 0)
    val = LineBatches(ids, starts, lengths, 0, batch_size=8, shuffle=False)
    model = CharRNN(ModelConfig(vocab_size=7, hidden=4), rng=rng)
    full = trainer.evaluate(model, val, 50)
    assert trainer.evaluate(model, val, 50, max_chars=10**9) == full
    picked = trainer._spread(val.n_batches, val.n_chars, val.n_chars // 5)
    assert 0 in picked and val.n_batches - 1 in picked  # short and long names both
    assert len(picked) == pytest.approx(val.n_batches / 5, abs=1)
    part = trainer.evaluate(model, val, 50, max_chars=val.n_chars // 5)
    assert part != full and abs(part - full) < 0.2


def test_eval_max_batches_is_an_option(tmp_path):
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "3",
                "--eval-max-batches", "1", *TINY])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert Store(tmp_path).latest("dinos").meta["train"]["eval_max_batches"] == 1


# --------------------------------------------------------------------------- --wait


def test_wait_names_the_holder_and_gives_up_with_75(tmp_path):
    st = Store(tmp_path)
    with st.lock("dinos"):
        t0 = time.monotonic()
        r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "3", "--wait", "0.3s"])
        waited = time.monotonic() - t0
    assert r.exit_code == 75
    assert f"locked by pid {os.getpid()}; waiting for it to finish (at most 0.3s)" in r.stderr
    assert waited >= 0.3
    r = invoke(["train", "--store", str(tmp_path), "--wait", DINOS])
    assert r.exit_code == 2 and "put --wait after CORPUS" in r.stderr


def test_wait_alone_waits_until_the_holder_is_gone(tmp_path):
    holder = charrnn(
        "train", DINOS, "--store", str(tmp_path), "--steps", "100000", *TINY,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stderr is not None
    holder.stderr.readline()  # it has the lock once it logs
    waiter = charrnn(
        "train", DINOS, "--store", str(tmp_path), "--steps", "3", *TINY, "--wait",
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert waiter.stderr is not None
    first = waiter.stderr.readline().decode()
    assert f"locked by pid {holder.pid}; waiting for it to finish" in first
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 143
    rest = waiter.communicate(timeout=120)[1].decode()
    assert waiter.returncode == 0 and "already has" in rest  # the holder's steps count


# --------------------------------------------------------------------------- kill and resume


def test_a_killed_job_resumes_with_history_and_parameters_together(tmp_path):
    p = charrnn(
        "train", DINOS, "--store", str(tmp_path), "--steps", "100000", "--save-every", "5",
        *TINY, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert p.stderr is not None
    for line in p.stderr:
        if b"step 20: saved" in line:
            break
    p.kill()  # SIGKILL: no chance to save
    p.wait()
    ck = Store(tmp_path).latest("dinos")
    ts = TrainState.from_checkpoint(ck.arrays, ck.meta)
    assert len(ts.history) == ts.step == ck.step >= 20
    assert ts.history.step[-1] == ts.step
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", str(ck.step + 10), *TINY])
    assert r.exit_code == 0, r.stderr
    ck2 = Store(tmp_path).latest("dinos")
    ts2 = TrainState.from_checkpoint(ck2.arrays, ck2.meta)
    assert len(ts2.history) == ts2.step == ck.step + 10
    np.testing.assert_array_equal(ts2.history.step, np.arange(1, ts2.step + 1))


def test_a_run_that_stopped_early_is_finished_until_told_otherwise(tmp_path):
    # cron re-runs the same command: once the patience has run out, each re-run used to
    # train another --eval-every steps and stop again; the run is finished instead
    args = ["train", DINOS, "--store", str(tmp_path), *TINY, "--eval-every", "5", "--lr", "0.05"]
    args += ["--patience", "1", "--steps", "3000"]
    r = invoke(args)
    assert r.exit_code == 0, r.stderr
    assert "stopped early: run 'dinos' at step" in r.stderr
    st = Store(tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in st.checkpoints("dinos")}
    step = st.latest("dinos").step
    assert step < 3000
    r = invoke(args)
    assert r.exit_code == 0 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # cron's log: one line, no "resuming"
    said = r.stderr.strip().splitlines()[-1]
    assert f"run 'dinos' stopped early at step {step} (best at step " in said
    assert said.endswith(
        "1 validation without a new best); nothing to do (--patience 0 trains on to the "
        "step target, a larger --patience waits longer for a new best)"
    )
    r = invoke([*args, "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["status"] == "stopped early" and doc["step"] == step
    assert doc["steps_trained"] == 0 and doc["stop_reason"].startswith(
        "no new best validation loss in the last 1 validation (best at step "
    )
    assert doc["stop_reason"].endswith("; already so before this command, nothing to do")
    assert {p.name: p.stat().st_mtime_ns for p in st.checkpoints("dinos")} == before
    # a larger patience waits for a new best; --patience 0 trains on to the step target
    r = invoke([*args[:-4], "--patience", "3", "--steps", "3000", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["steps_trained"] > 0 and doc["step"] > step
    target = doc["step"] + 10
    r = invoke([*args[:-4], "--patience", "0", "--steps", str(target), "--json"])
    doc = json.loads(r.stdout)
    assert doc["status"] == "done" and doc["step"] == target and doc["steps_trained"] == 10


def test_a_run_at_its_step_target_says_one_line_and_one_that_trains_says_what_it_resumes(
    tmp_path,
):
    # a finished run used to log the corpus and "resuming run ... from step N" before
    # saying it had nothing to do: three lines, one of them untrue (nothing resumed)
    args = ["train", DINOS, "--store", str(tmp_path), *TINY, "--eval-every", "5"]
    assert invoke([*args, "--steps", "5"]).exit_code == 0
    r = invoke([*args, "--steps", "5"])
    assert r.exit_code == 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].endswith("run 'dinos' already has 5 steps (target 5); nothing to do")
    assert invoke([*args, "--steps", "5", "-q"]).stderr == ""
    r = invoke([*args, "--steps", "10"])
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "corpus " in lines[0] and " characters, " in lines[0]
    assert lines[1].endswith("resuming run 'dinos' from step 5 (ckpt-000000005.npz)")
