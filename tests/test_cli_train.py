"""`charrnn train` as users and cron jobs use it: exit codes, streams, resume, lock, kills."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn.store import Store

ROOT = Path(__file__).resolve().parent.parent
DINOS = str(ROOT / "data" / "dinos.txt")
SMALL = ["--hidden", "16", "--batch-size", "8", "--seq-len", "16"]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def params_of(store: Path, run: str) -> dict[str, np.ndarray]:
    ck = Store(store).latest(run)
    return {k: v for k, v in ck.arrays.items() if k.startswith(("param.", "opt.", "train."))}


def test_train_writes_nothing_on_stdout_and_logs_on_stderr(invoke, tmp_path):
    r = invoke(
        ["train", DINOS, "--store", str(tmp_path), "--steps", "12", "--eval-every", "6", *SMALL]
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert "step 12" in r.stderr and "val" in r.stderr
    assert [p.name for p in Store(tmp_path).checkpoints("dinos")] == [
        "ckpt-000000006.npz",
        "ckpt-000000012.npz",
    ]


def test_train_json_summary(invoke, tmp_path):
    r = invoke(
        [
            "train",
            DINOS,
            "--store",
            str(tmp_path),
            "--steps",
            "10",
            "--eval-every",
            "5",
            "--json",
            "-q",
            *SMALL,
        ]
    )
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["run"] == "dinos" and doc["step"] == 10 and doc["status"] == "done"
    assert doc["val_loss"] > 0 and doc["train_loss"] > 0
    assert doc["corpus"]["n_chars"] == 19909 and doc["corpus"]["is_lines"] is True
    assert r.stderr == ""


def test_env_vars_set_options(invoke, tmp_path):
    env = {
        "CHARRNN_STORE": str(tmp_path),
        "CHARRNN_TRAIN_STEPS": "7",
        "CHARRNN_TRAIN_HIDDEN": "8",
        "CHARRNN_TRAIN_RUN": "envrun",
    }
    r = invoke(["train", DINOS, "-q", "--batch-size", "8", "--seq-len", "16"], env=env)
    assert r.exit_code == 0, r.stderr
    ck = Store(tmp_path).latest("envrun")
    assert ck.step == 7 and ck.meta["model"]["hidden"] == 8


@pytest.mark.parametrize(
    "content, code, needle",
    [
        (None, 66, "not found"),
        ("DIR", 66, "directory"),
        (b"", 65, "empty"),
        (b"ab\xff\xfecd\n", 65, "invalid UTF-8 at byte 2"),
        ("\ufeffhello".encode("utf-16"), 65, "UTF-16"),
        (b"abc\x00def" * 100, 65, "NUL"),
        (b"a", 65, "at least 2"),
    ],
    ids=["missing", "directory", "empty", "bad-utf8", "utf16", "nul", "too-short"],
)
def test_bad_corpus_gets_one_line_error_and_exit_code(invoke, tmp_path, content, code, needle):
    path = tmp_path / "corpus.txt"
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    r = invoke(["train", str(path), "--store", str(tmp_path / "store"), "--steps", "2"])
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("charrnn: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], r.stderr
    assert needle in errors[0]
    assert "Traceback" not in r.stderr
    assert list((tmp_path / "store").glob("*")) == []  # no run folder left behind


def test_a_train_that_fails_before_its_first_checkpoint_removes_only_its_own_folder(
    invoke, tmp_path
):
    store = tmp_path / "store"
    # fails after the corpus went into the token cache: the cache, lock and folder go
    r = invoke(["train", DINOS, "--store", str(store), "--run", "big", "--hidden", "100000000"])
    assert r.exit_code == 2 and "memory" in r.stderr
    assert not (store / "big").exists()
    # a folder that was there before stays, with what is not charrnn's
    (store / "mine").mkdir()
    (store / "mine" / "notes.txt").write_text("mine\n")
    r = invoke(["train", DINOS, "--store", str(store), "--run", "mine", "--hidden", "100000000"])
    assert r.exit_code == 2
    assert (store / "mine" / "notes.txt").read_text() == "mine\n"
    # a run that fails after its first checkpoint keeps everything
    ok = ["train", DINOS, "--store", str(store), "--run", "ok", *SMALL, "-q"]
    assert invoke([*ok, "--steps", "5", "--eval-every", "5"]).exit_code == 0
    r = invoke([*ok, "--steps", "10", "--cell", "gru"])
    assert r.exit_code == 2 and [p.name for p in Store(store).checkpoints("ok")] == [
        "ckpt-000000005.npz"
    ]
    assert (store / "ok" / "cache").is_dir()


def test_a_failed_train_leaves_a_folder_put_in_place_of_its_own_alone(tmp_path):
    from charrnn.console import Log
    from charrnn.errors import LockedError
    from charrnn.model import ModelConfig
    from charrnn.request import TrainRequest
    from charrnn.session import run_training

    store = tmp_path / "store"

    class Mover(Log):
        """Once the corpus is read (its token cache written), the run folder is moved
        away and another put in its place, with a token cache and a file of its own."""

        def info(self, msg: str) -> None:
            if msg.startswith("corpus "):
                (store / "m").rename(store / "m.old")
                (store / "m").mkdir()
                shutil.copytree(store / "m.old" / "cache", store / "m" / "cache")
                (store / "m" / "notes.txt").write_text("mine\n")

    request = TrainRequest(
        corpus=(DINOS,), run="m", store=store, model=ModelConfig(vocab_size=1, hidden=8),
        steps=3,
    )  # fmt: skip
    with pytest.raises(LockedError, match="moved or replaced"):
        run_training(request, Mover(quiet=True))
    theirs = sorted(p.name for p in (store / "m" / "cache").iterdir())
    assert len(theirs) == 2 and all(n.startswith("tokens-") for n in theirs)
    assert (store / "m" / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (store / "m.old").iterdir()) == ["cache", "lock"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lr", "nan"], "--lr"),
        (["--dropout", "1.0"], "--dropout"),
        (["--time", "soon"], "duration"),
        (["--cell", "transformer"], "--cell"),
        (["--clip-norm", "-1"], "--clip-norm"),
        (["--peephole", "--cell", "gru"], "--peephole"),
    ],
)
def test_bad_options_are_usage_errors(invoke, tmp_path, args, needle):
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "2", *args])
    assert r.exit_code == 2
    assert needle in r.stderr
    assert not Store(tmp_path).runs()


def test_resume_is_bit_identical_to_training_straight(invoke, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = [DINOS, "-q", "--eval-every", "5", "--dropout", "0.1", *SMALL]
    assert invoke(["train", *common, "--store", str(a), "--steps", "13"]).exit_code == 0
    r = invoke(["train", *common, "--store", str(a), "--steps", "26"])
    assert r.exit_code == 0, r.stderr
    assert invoke(["train", *common, "--store", str(b), "--steps", "26"]).exit_code == 0
    pa, pb = params_of(a, "dinos"), params_of(b, "dinos")
    assert pa.keys() == pb.keys() and len(pa) > 3
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    ha = Store(a).latest("dinos").arrays["hist.loss"]
    hb = Store(b).latest("dinos").arrays["hist.loss"]
    assert np.array_equal(ha, hb)


def test_epochs_are_a_total_and_rerun_is_a_noop(invoke, tmp_path):
    args = ["train", DINOS, "--store", str(tmp_path), "--epochs", "1", *SMALL]
    r = invoke(args)
    assert r.exit_code == 0, r.stderr
    step = Store(tmp_path).latest("dinos").step
    r = invoke(args)
    assert r.exit_code == 0 and "nothing to do" in r.stderr
    assert Store(tmp_path).latest("dinos").step == step


def test_changed_corpus_is_refused_unless_asked(invoke, tmp_path):
    corpus = tmp_path / "names.txt"
    corpus.write_text(Path(DINOS).read_text())
    store = str(tmp_path / "s")
    assert invoke(["train", str(corpus), "--store", store, "--steps", "3", *SMALL]).exit_code == 0
    corpus.write_text(Path(DINOS).read_text().replace("saurus", "suarus"))
    r = invoke(["train", str(corpus), "--store", store, "--steps", "6", *SMALL])
    assert r.exit_code == 65 and "changed" in r.stderr
    r = invoke(
        ["train", str(corpus), "--store", store, "--steps", "6", "--allow-changed-corpus", *SMALL]
    )
    assert r.exit_code == 0, r.stderr
    assert Store(store).latest("names").step == 6


def test_changed_model_options_are_refused_on_resume(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL]
    assert invoke([*base, "--steps", "3"]).exit_code == 0
    r = invoke([*base, "--steps", "6", "--cell", "gru"])
    assert r.exit_code == 2 and "--cell lstm" in r.stderr
    r = invoke([*base, "--steps", "6", "--cell", "gru", "--fresh"])
    assert r.exit_code == 0, r.stderr
    ck = Store(tmp_path).latest("dinos")
    assert ck.meta["model"]["cell"] == "gru" and ck.step == 6


def test_resume_keeps_saved_settings_unless_given(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), "-q", *SMALL]
    assert invoke([*base, "--steps", "3", "--lr", "0.01", "--clip-value", "5"]).exit_code == 0
    assert invoke([*base, "--steps", "6"]).exit_code == 0
    optim = Store(tmp_path).latest("dinos").meta["optim"]
    assert optim["lr"] == 0.01 and optim["clip_value"] == 5.0
    assert invoke([*base, "--steps", "9", "--lr", "0.001"]).exit_code == 0
    assert Store(tmp_path).latest("dinos").meta["optim"]["lr"] == 0.001
    r = invoke([*base, "--steps", "12", "--optimizer", "sgd"])
    assert r.exit_code == 2 and "--optimizer adam" in r.stderr


def test_lock_refuses_a_second_trainer(invoke, tmp_path):
    st = Store(tmp_path)
    with st.lock("dinos"):
        r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "2", *SMALL])
    assert r.exit_code == 75
    assert f"locked by pid {os.getpid()}" in r.stderr


def test_divergence_stops_with_exit_3_and_no_nan_checkpoint(invoke, tmp_path):
    args = [
        "train",
        DINOS,
        "--store",
        str(tmp_path),
        *SMALL,
        "--eval-every",
        "1000",
        "--clip-norm",
        "none",
        "--optimizer",
        "sgd",
        "--lr",
        "1e38",
        "--steps",
        "200",
    ]
    r = invoke(args)
    assert r.exit_code == 3, r.stderr
    assert r.stderr.count("charrnn: error:") == 1
    # every update would overflow: none is taken, so no checkpoint, and the advice fits
    # a run without norm clipping
    assert last_line(r.stderr).endswith(
        "; the run has no checkpoint yet: train it again with --clip-norm 5 or a lower "
        "learning rate (--lr 1e+37)"
    )
    st = Store(tmp_path)
    assert st.checkpoints("dinos") == []
    # for clip-stats: finite, and not a checkpoint
    record = st.resolve("dinos:diverged", allow_diverged=True)
    assert all(np.isfinite(v).all() for k, v in record.arrays.items() if v.dtype.kind == "f")
    assert record.arrays["hist.skipped"][-5:].all() and record.step < 200


def test_a_diverged_run_stays_at_its_last_sane_checkpoint_and_resumes(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--eval-every", "10", "-q"]
    assert invoke([*base, "--steps", "20"]).exit_code == 0
    st = Store(tmp_path)
    sane = params_of(tmp_path, "dinos")
    # the update of step 21 has a sane loss and breaks the weights; with a checkpoint at
    # every step, that one is written and then found broken by the steps after it
    r = invoke([*base, "--steps", "100", "--lr", "1e6", "--save-every", "1"])
    assert r.exit_code == 3, r.stderr
    assert r.stdout == ""
    assert last_line(r.stderr).endswith(
        "; the run stays at its last checkpoint (step 20): resume with a lower learning rate "
        "(--lr 100000), or start over with --fresh"
    )  # norm clipping is on (the default): no --clip-norm advice
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    after = params_of(tmp_path, "dinos")
    assert all(np.array_equal(sane[k], after[k]) for k in sane)
    record = st.resolve("dinos:diverged", allow_diverged=True)
    assert record.step > 21 and record.arrays["hist.skipped"][-5:].all()
    assert np.abs(record.arrays["param.Wya"]).max() > 1e3  # the broken weights, kept aside
    doc = json.loads(invoke(["clip-stats", "--store", str(tmp_path), "dinos:diverged",
                             "--json"]).stdout)  # fmt: skip
    assert doc["step"] == record.step and doc["steps"]["nonfinite"] >= 5
    # a sane learning rate carries on from step 20, as if nothing had happened
    r = invoke([*base[:-1], "--steps", "40", "--lr", "0.005", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "resuming run 'dinos' from step 20" in r.stderr and "skipped" not in r.stderr
    assert doc["status"] == "done" and doc["step"] == 40 and doc["optim"]["lr"] == 0.005
    assert doc["val_loss"] < 3.5
    r = invoke(["sample", "--store", str(tmp_path), "dinos", "-n", "3", "--seed", "1"])
    assert r.exit_code == 0 and "step 40" in r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_a_run_that_ends_while_its_loss_is_not_sane_ends_as_a_divergence(invoke, tmp_path):
    # no validation to check the weights: the update of step 1 breaks them, steps 2 and 3
    # say so, and the run ends at its target before the divergence rule's 5 steps. It saves
    # nothing of them, and does not say "done" (exit 0): cron would re-run it forever
    args = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0"]
    r = invoke([*args, "--lr", "1e6", "--steps", "3", "--eval-every", "100", "--json"])
    assert r.exit_code == 3, r.stderr
    assert r.stdout == ""
    assert "step 3: no checkpoint while the loss is not sane (2 steps in a row)" in r.stderr
    assert last_line(r.stderr) == (
        "charrnn: error: training diverged: the run ended at step 3 with the loss of its last "
        "2 steps non-finite or above 3x log(V) = 11.91 nats/char (uniform guessing); the run "
        "has no checkpoint yet: train it again with a lower learning rate (--lr 100000)"
    )
    st = Store(tmp_path)
    assert st.checkpoints("dinos") == []
    record = st.resolve("dinos:diverged", allow_diverged=True)
    assert record.step == 3 and record.arrays["hist.skipped"].tolist() == [False, True, True]
    # resumed: the run stays at its checkpoint, and says so
    assert invoke([*args, "--steps", "10", "-q"]).exit_code == 0
    r = invoke([*args, "--lr", "1e6", "--steps", "13", "-q"])
    assert r.exit_code == 3, r.stderr
    assert last_line(r.stderr).startswith(
        "charrnn: error: training diverged: the run ended at step 13 with the loss of its last "
        "2 steps"
    )
    assert last_line(r.stderr).endswith("; the run stays at its last checkpoint (step 10): "
                                        "resume with a lower learning rate (--lr 100000), "
                                        "or start over with --fresh")  # fmt: skip
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz"]


def test_keep_1_never_prunes_the_last_sane_checkpoint_for_an_unconfirmed_one(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    base += ["--keep", "1"]
    assert invoke([*base, "--steps", "20"]).exit_code == 0
    st = Store(tmp_path)
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000020.npz"]
    sane = params_of(tmp_path, "dinos")
    # step 21's update breaks the weights and is saved; with --keep 1 that save used to
    # delete step 20's checkpoint, and the divergence then removed step 21's: none was left
    r = invoke([*base, "--steps", "100", "--lr", "1e6", "--save-every", "1"])
    assert r.exit_code == 3, r.stderr
    assert last_line(r.stderr).endswith(
        "; the run stays at its last checkpoint (step 20): resume with a lower learning rate "
        "(--lr 100000), or start over with --fresh"
    )
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000020.npz"]
    after = params_of(tmp_path, "dinos")
    assert all(np.array_equal(sane[k], after[k]) for k in sane)
    # while the loss is sane, --keep holds: a checkpoint a step, each confirmed by the next
    # step, the last (unconfirmed when the run ends) kept beside the one before it
    r = invoke([*base, "--steps", "25", "--save-every", "1"])
    assert r.exit_code == 0, r.stderr
    names = ["ckpt-000000024.npz", "ckpt-000000025.npz"]
    assert [p.name for p in st.checkpoints("dinos")] == names
    # the next train's first sane loss confirms step 25's weights: step 24's goes
    assert invoke([*base, "--steps", "27", "--eval-every", "100"]).exit_code == 0
    names = ["ckpt-000000025.npz", "ckpt-000000027.npz"]
    assert [p.name for p in st.checkpoints("dinos")] == names


@pytest.mark.parametrize("newest", ["torn", "users"])
def test_a_run_killed_before_its_first_save_keeps_the_checkpoint_it_resumed_from(
    invoke, tmp_path, monkeypatch, newest
):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    base += ["--keep", "1"]
    assert invoke([*base, "--eval-every", "10", "--steps", "20"]).exit_code == 0
    st = Store(tmp_path)
    d = st.run_dir("dinos")
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    if newest == "torn":  # the newest checkpoint unreadable: the next train resumes at step 10
        last = d / "ckpt-000000020.npz"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:  # a file of the user's under a checkpoint's name, newer than any
        (d / "ckpt-000000020.npz").unlink()
        (d / "ckpt-999999999.npz").write_bytes(b"a user's file")

    def killed(*args, **kwargs):  # the process dies at its first save, as under SIGKILL
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save", killed)
    r = invoke([*base, "--eval-every", "100000", "--steps", "100"])
    assert r.exit_code == 130, r.stderr
    assert "; using " in r.stderr and "ckpt-000000010.npz\n" in r.stderr  # resumed from it
    # the first sane loss used to prune to the newest --keep files: step 10's went, and the
    # run was left with only the unreadable one ("all 1 checkpoint(s) ... are corrupt")
    assert (d / "ckpt-000000010.npz").is_file()
    assert Store(tmp_path).latest("dinos", on_warning=lambda msg: None).step == 10
    if newest == "users":
        assert (d / "ckpt-999999999.npz").read_bytes() == b"a user's file"


def test_fresh_that_diverges_before_its_first_sane_checkpoint_keeps_the_old_run(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    assert invoke([*base, "--steps", "10"]).exit_code == 0
    st = Store(tmp_path)
    old = params_of(tmp_path, "dinos")
    # the new run's step-1 checkpoint is unconfirmed: the old run is not deleted for it
    r = invoke([*base, "--fresh", "--steps", "100", "--lr", "1e6", "--save-every", "1"])
    assert r.exit_code == 3, r.stderr
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz"]
    after = params_of(tmp_path, "dinos")
    assert all(np.array_equal(old[k], after[k]) for k in old)


def test_a_run_broken_when_saved_is_told_to_start_over(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--eval-every", "10", "-q"]
    assert invoke([*base, "--steps", "10", "--lr", "1e6", "--save-every", "1"]).exit_code == 3
    st = Store(tmp_path)
    # what charrnn before this fix kept: a checkpoint of the broken weights
    record = st.resolve("dinos:diverged", allow_diverged=True)
    assert st.checkpoints("dinos") == []  # its step-1 checkpoint was found broken, removed
    st.save("dinos", record.step, record.arrays, record.meta)
    # its first steps diverge whatever the learning rate: only --fresh helps
    r = invoke([*base, "--steps", "100", "--lr", "0.005"])
    assert r.exit_code == 3
    assert last_line(r.stderr).endswith(
        f"; the run's checkpoint at step {record.step} diverges before any update (its weights "
        "were broken when it was saved): start over with --fresh"
    )
    assert [p.name for p in st.checkpoints("dinos")] == [st.checkpoint_name(record.step)]
    r = invoke([*base, "--steps", "20", "--lr", "0.005", "--fresh"])
    assert r.exit_code == 0, r.stderr
    # the old run's record went with it
    assert not (tmp_path / "dinos" / "diverged.npz").exists()
    assert not (tmp_path / "dinos" / ".previous").exists()


def test_a_broken_unconfirmed_last_checkpoint_is_removed_for_the_sane_one_before_it(
    invoke, tmp_path
):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    base += ["--keep", "1", "--eval-every", "10"]
    assert invoke([*base, "--steps", "20"]).exit_code == 0
    st = Store(tmp_path)
    d = st.run_dir("dinos")
    # a run without validation ends with --keep + 1: step 20's not yet confirmed by a step
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    last = st.load(d / "ckpt-000000020.npz")
    assert last.confirmed is False
    # stand-in for weights that step 20's update broke: saved, as then, unconfirmed
    arrays = dict(last.arrays)
    for key in ("param.Wya", "param.by"):
        arrays[key] = arrays[key] * 1e6
    st.save("dinos", 20, arrays, last.meta, keep=None, confirmed=False)
    torn = (d / "ckpt-000000010.npz").read_bytes()
    (d / "ckpt-000000010.npz").write_bytes(torn[:100])
    # with nothing readable to stay at, the broken one stays (and --fresh is the way out)
    r = invoke([*base, "--steps", "40"])
    assert r.exit_code == 3
    assert last_line(r.stderr).endswith("diverges before any update (its weights were broken "
                                        "when it was saved): start over with --fresh")  # fmt: skip
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]
    (d / "ckpt-000000010.npz").write_bytes(torn)
    # it used to stay, and every re-run diverged again; now it goes, once, and the run
    # stays at step 10; no update ran, so the learning rate is not to blame (the advice was
    # a lower one, though the same command then trains on)
    r = invoke([*base, "--steps", "40"])
    assert r.exit_code == 3
    said = last_line(r.stderr)
    assert said.endswith(
        "; its checkpoint at step 20 was broken (it diverges before any update) and is removed: "
        "the run stays at its previous checkpoint (step 10): run the same command again to "
        "train on from step 10"
    )
    assert "--lr" not in said and "learning rate" not in said.partition("; its")[2]
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz"]
    r = invoke([*base, "--steps", "40"])
    assert r.exit_code == 0, r.stderr
    assert st.latest("dinos").step == 40


def test_a_confirmed_last_checkpoint_is_not_removed_when_it_diverges_at_once(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--eval-every", "10", "-q"]
    assert invoke([*base, "--steps", "20"]).exit_code == 0  # both validated
    st = Store(tmp_path)
    last = st.latest("dinos")
    assert last.confirmed is True
    arrays = dict(last.arrays)
    for key in ("param.Wya", "param.by"):
        arrays[key] = arrays[key] * 1e6
    st.save("dinos", 20, arrays, last.meta, keep=None)  # vouched for when saved: not ours to judge
    r = invoke([*base, "--steps", "40"])
    assert r.exit_code == 3
    assert last_line(r.stderr).endswith("start over with --fresh")
    assert [p.name for p in st.checkpoints("dinos")] == ["ckpt-000000010.npz", "ckpt-000000020.npz"]


def test_a_run_that_diverged_before_its_first_checkpoint_does_not_keep_its_record(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    r = invoke([*base, "--steps", "100", "--lr", "1e3", "--optimizer", "sgd"])
    assert r.exit_code == 3 and "train it again with" in last_line(r.stderr)
    st = Store(tmp_path)
    assert st.load(tmp_path / "dinos" / "diverged.npz").meta["optim"]["name"] == "sgd"
    # trained again as the error line says (no --fresh): the record is of no run now
    assert invoke([*base, "--steps", "10"]).exit_code == 0
    assert not (tmp_path / "dinos" / "diverged.npz").exists()
    r = invoke(["clip-stats", "--store", str(tmp_path), "dinos:diverged"])
    assert r.exit_code == 66
    assert last_line(r.stderr) == (
        "charrnn: error: run 'dinos' has no diverged state: it did not diverge since its first "
        "checkpoint"
    )
    # a run that had checkpoints when it diverged keeps its record beside them
    assert invoke([*base, "--steps", "100", "--lr", "1e6"]).exit_code == 3
    assert invoke([*base, "--steps", "20"]).exit_code == 0
    assert (tmp_path / "dinos" / "diverged.npz").is_file()


@pytest.mark.parametrize("command", [["sample", "-n", "3"], ["score", "--model"]])
def test_sample_and_score_refuse_the_diverged_record(invoke, tmp_path, command):
    base = ["train", DINOS, "--store", str(tmp_path), *SMALL, "--val-fraction", "0", "-q"]
    assert invoke([*base, "--steps", "100", "--lr", "1e3", "--optimizer", "sgd"]).exit_code == 3
    names = tmp_path / "names.txt"
    names.write_text("abc\n")
    record = tmp_path / "dinos" / "diverged.npz"
    for spec in ("dinos:diverged", str(record)):
        args = [*command, spec] + ([str(names)] if command[0] == "score" else [])
        r = invoke([command[0], "--store", str(tmp_path), *args[1:]])
        assert r.exit_code == 2, r.stderr
        assert r.stdout == ""
        assert r.stderr == (
            f"charrnn: error: {spec} is the record of a diverged run (its weights are broken), "
            "not a checkpoint: only clip-stats reads it (charrnn clip-stats dinos:diverged)\n"
        )
    r = invoke(["clip-stats", "--store", str(tmp_path), "dinos:diverged", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"]["nonfinite"] >= 5


# --------------------------------------------------------------------------- real processes


def _spawn(args: list[str], store: Path) -> subprocess.Popen:
    env = {**os.environ, "CHARRNN_STORE": str(store), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )


def _wait_for_checkpoint(store: Path, run: str, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (store / run).is_dir() and Store(store).checkpoints(run):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_then_exits_with_its_code(tmp_path, sig, code):
    p = _spawn([DINOS, "--steps", "100000", "--eval-every", "50", *SMALL], tmp_path)
    _wait_for_checkpoint(tmp_path, "dinos")
    time.sleep(0.3)
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == code, err.decode()
    assert out == b""
    ck = Store(tmp_path).latest("dinos")
    assert "interrupted" in err.decode() and str(ck.path.name) in err.decode()
    assert ck.step % 50 != 0 or ck.step >= 50


def test_second_process_is_refused_while_first_trains(invoke, tmp_path):
    p = _spawn([DINOS, "--steps", "100000", "--eval-every", "50", *SMALL], tmp_path)
    try:
        _wait_for_checkpoint(tmp_path, "dinos")
        q = _spawn([DINOS, "--steps", "10", *SMALL], tmp_path)
        out, err = q.communicate(timeout=30)
        assert q.returncode == 75
        assert f"locked by pid {p.pid}" in err.decode()
    finally:
        p.kill()
        p.wait()
    # the killed holder leaves no stale lock: training resumes at once
    r = invoke(
        [
            "train",
            DINOS,
            "--store",
            str(tmp_path),
            "-q",
            *SMALL,
            "--steps",
            str(Store(tmp_path).latest("dinos").step + 2),
        ]
    )
    assert r.exit_code == 0, r.stderr


def test_sigkill_at_random_moments_never_breaks_the_store(invoke, tmp_path):
    rnd = random.Random(1234)
    # --patience 0: names mode would stop early, and this is about kills, not about stopping
    args = [DINOS, "--steps", "100000", "--eval-every", "2", "--keep", "2", "--patience", "0"]
    args += SMALL
    kills = 0
    for i in range(12):
        p = _spawn(args, tmp_path)
        deadline = time.monotonic() + 120
        while i == 0 and not Store(tmp_path).checkpoints("dinos") and time.monotonic() < deadline:
            time.sleep(0.1)  # a loaded machine can take seconds to start: one checkpoint first
        time.sleep(rnd.uniform(0.6, 2.0))
        p.kill()
        p.wait()
        kills += 1
        st = Store(tmp_path)
        for path in st.checkpoints("dinos"):
            st.load(path)  # every committed checkpoint loads
        if st.checkpoints("dinos"):
            st.latest("dinos")
    assert kills == 12
    st = Store(tmp_path)
    before = st.latest("dinos").step
    assert before > 0
    r = invoke(
        [
            "train",
            DINOS,
            "--store",
            str(tmp_path),
            "-q",
            "--keep",
            "2",
            "--eval-every",
            "2",
            "--patience",
            "0",
            *SMALL,
            "--steps",
            str(before + 4),
        ]
    )
    assert r.exit_code == 0, r.stderr
    assert st.latest("dinos").step == before + 4
    leftovers = [p for p in (tmp_path / "dinos").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_corrupt_latest_falls_back_with_a_warning(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), "-q", "--eval-every", "3", *SMALL]
    assert invoke([*base, "--steps", "6"]).exit_code == 0
    newest = Store(tmp_path).checkpoints("dinos")[-1]
    newest.write_bytes(newest.read_bytes()[:5000])  # truncated, as by a failing disk
    r = invoke(["sample", "--store", str(tmp_path), "-n", "2", "--seed", "1"])
    assert r.exit_code == 0
    assert len(r.stdout.splitlines()) == 2
    assert "warning:" in r.stderr and newest.name in r.stderr
    r = invoke(["sample", "--store", str(tmp_path), str(newest)])
    assert r.exit_code == 65
    assert r.stderr.count("\n") == 1 and newest.name in r.stderr
    # training resumes from the newest valid checkpoint
    r = invoke([*base, "--steps", "9"])
    assert r.exit_code == 0 and Store(tmp_path).latest("dinos").step == 9


def test_write_failure_is_exit_74(invoke, tmp_path, monkeypatch):
    from charrnn.errors import StoreIOError

    def full(*args, **kwargs):
        raise StoreIOError(f"cannot write checkpoint to {tmp_path}: No space left on device")

    monkeypatch.setattr(Store, "save", full)
    r = invoke(["train", DINOS, "--store", str(tmp_path), "-q", "--steps", "3", *SMALL])
    assert r.exit_code == 74 and "No space left" in r.stderr


def test_run_name_from_an_odd_file_name_and_bad_run_option(invoke, tmp_path):
    corpus = tmp_path / "my dino names.txt"
    corpus.write_text(Path(DINOS).read_text())
    r = invoke(["train", str(corpus), "--store", str(tmp_path / "s"), "-q", "--steps", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert [i.name for i in Store(tmp_path / "s").runs()] == ["my-dino-names"]
    r = invoke(["train", str(corpus), "--store", str(tmp_path / "s"), "--run", "../x", *SMALL])
    assert r.exit_code == 2 and "--run" in r.stderr


def test_fresh_with_bad_settings_keeps_the_old_run(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), "-q", *SMALL]
    assert invoke([*base, "--steps", "3"]).exit_code == 0
    one_line = tmp_path / "one-line.txt"
    one_line.write_text("no newline here")  # names mode needs lines
    r = invoke(
        ["train", str(one_line), "--run", "dinos", "--store", str(tmp_path), "-q", "--fresh"]
        + ["--allow-changed-corpus", "--steps", "3", "--mode", "names"]
    )
    assert r.exit_code == 65 and "names mode" in r.stderr, r.stderr
    assert Store(tmp_path).latest("dinos").step == 3  # nothing was lost


def test_lowercase_model_reads_the_prime_lowercased(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), "-q", "--lowercase", "--steps", "3", *SMALL]
    assert invoke(base).exit_code == 0
    r = invoke(["sample", "--store", str(tmp_path), "--prime", "Tyr", "-n", "2", "--seed", "1"])
    assert r.exit_code == 0, r.stderr
    assert all(line.startswith("tyr") for line in r.stdout.splitlines())


def test_no_corpus_trains_the_lowercase_dinosaurs(invoke, tmp_path):
    r = invoke(["train", "--store", str(tmp_path), "-q", "--steps", "2", *SMALL])
    assert r.exit_code == 0, r.stderr
    ck = Store(tmp_path).latest("dinos")
    assert len(ck.meta["vocab"]["chars"]) == 27  # a-z and the newline, as in the assignment
    assert ck.meta["corpus"]["options"]["lowercase"] is True
    r = invoke(["train", DINOS, "--store", str(tmp_path / "k"), "-q", "--steps", "2", *SMALL])
    assert len(Store(tmp_path / "k").latest("dinos").meta["vocab"]["chars"]) == 53
    # issue 13.1: the same file read with its capitals names the real difference, and how
    # to go on; not "the corpus changed", which was false
    r = invoke(["train", DINOS, "--store", str(tmp_path), "-q", "--steps", "4", *SMALL])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "run 'dinos' was trained with --lowercase" in r.stderr
    assert "pass --lowercase to resume it, --run NAME for a new run" in r.stderr
    assert "changed" not in r.stderr
    r = invoke(["train", DINOS, "--store", str(tmp_path), "-q", "--steps", "4", "--lowercase"])
    assert r.exit_code == 0, r.stderr


def test_no_validation_says_so_instead_of_nan(invoke, tmp_path):
    args = ["train", DINOS, "--store", str(tmp_path), "--steps", "4", "--eval-every", "2"]
    r = invoke([*args, "--val-fraction", "0", *SMALL])
    assert r.exit_code == 0, r.stderr
    assert "nan" not in r.stderr and "no validation" in r.stderr
    assert "step 4: no validation" in r.stderr


def test_small_words_agree_with_their_numbers(invoke, tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("".join(Path(DINOS).read_text().splitlines(keepends=True)[:25])[:200])
    args = ["train", str(corpus), "--store", str(tmp_path / "s"), "--steps", "1", *SMALL]
    r = invoke([*args, "--mode", "prose"])  # names mode would count lines a batch
    assert r.exit_code == 0, r.stderr
    assert "(1 batch of 8x16 per epoch)" in r.stderr and "1 batches" not in r.stderr


def test_a_decode_error_says_how_bytes_and_lines_are_counted(invoke, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\nde\xff\n" * 20)
    r = invoke(["train", str(bad), "--store", str(tmp_path / "s"), "--steps", "1"])
    assert r.exit_code == 65
    assert "at byte 6 (line 2), counting bytes from 0 and lines from 1" in r.stderr


def test_a_prime_error_shows_the_characters_as_typed(invoke, tmp_path):
    base = ["train", DINOS, "--store", str(tmp_path), "-q", "--lowercase", "--steps", "1", *SMALL]
    assert invoke(base).exit_code == 0
    r = invoke(["sample", "--store", str(tmp_path), "--prime", "Éric", "-q"])
    assert r.exit_code == 65 and r.stderr.count("\n") == 1
    assert "'É'" in r.stderr and "'é'" not in r.stderr


@pytest.mark.parametrize(
    "var, value, said",
    [
        (
            "CHARRNN_TRAIN_STEPS",
            "0",
            "CHARRNN_TRAIN_STEPS (--steps): steps must be at least 1, not 0",
        ),
        (
            "CHARRNN_TRAIN_LR",
            "-1",
            "CHARRNN_TRAIN_LR (--lr): lr (learning rate) must be a positive number, not -1.0",
        ),
        ("CHARRNN_TRAIN_KEEP", "0", "CHARRNN_TRAIN_KEEP (--keep): keep must be at least 1, not 0"),
        ("CHARRNN_TRAIN_PATIENCE", "-1", "CHARRNN_TRAIN_PATIENCE (--patience): patience must be"),
    ],
)
def test_a_value_out_of_range_from_the_environment_names_its_variable(
    invoke, tmp_path, var, value, said
):
    # the dataclasses' range checks named the flag, which nobody typed (type errors did not)
    r = invoke(["train", DINOS, "--store", str(tmp_path)], env={var: value})
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"charrnn: error: {said}"), r.stderr
    assert r.stderr.endswith(" (see 'charrnn train --help')\n")
    assert not (tmp_path / "dinos").exists()


def test_a_check_on_two_options_names_each_as_it_was_given(invoke, tmp_path):
    args = ["train", DINOS, "--store", str(tmp_path), "--steps", "3"]
    r = invoke(args, env={"CHARRNN_TRAIN_EPOCHS": "2"})
    assert r.exit_code == 2
    assert r.stderr.startswith(
        "charrnn: error: --steps / CHARRNN_TRAIN_EPOCHS (--epochs): give steps or epochs"
    ), r.stderr
    # typed beats set: the flag alone
    r = invoke([*args, "--keep", "0"], env={"CHARRNN_TRAIN_KEEP": "2"})
    assert r.stderr.startswith("charrnn: error: --keep: keep must be at least 1, not 0")


def test_a_list_shorter_than_the_rule_is_prose_unless_told_and_the_docs_say_so(invoke, tmp_path):
    from charrnn import corpus

    names = Path(DINOS).read_text().splitlines(keepends=True)
    short, enough = tmp_path / "short.txt", tmp_path / "enough.txt"
    short.write_text("".join(names[: corpus._LINES_MIN - 1]))
    enough.write_text("".join(names[: corpus._LINES_MIN]))
    store = ["--store", str(tmp_path / "s"), "--steps", "1", "--hidden", "8"]
    r = invoke(["train", str(short), *store])
    assert r.exit_code == 0, r.stderr
    assert ", prose (" in r.stderr and " characters (1 batch of " in r.stderr
    r = invoke(["train", str(enough), *store])
    assert ", one item per line (" in r.stderr and " lines, each from the start state" in r.stderr
    r = invoke(["train", str(short), "--run", "told", "--mode", "names", *store])
    assert r.exit_code == 0, r.stderr
    assert " on 8 lines, each from the start state" in r.stderr
    assert ", prose by its shape (--mode names given) (" in r.stderr  # no contradiction
    r = invoke(["train", str(enough), "--run", "as-prose", "--mode", "prose", *store])
    assert ", one item per line by its shape (--mode prose given) (" in r.stderr
    # the rule is written where users look for it, with the corpus module's numbers
    docs = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = docs.split("## Names mode")[1].split("\n## ")[0]
    for said in (
        f"at least {corpus._LINES_MIN} lines",
        f"average {corpus._LINES_MEAN_MAX} characters or fewer",
        f"{corpus._LINES_LONG_FRACTION:.0%} of them are longer than {corpus._LINES_LONG}",
        f"{corpus._LINES_EMPTY_FRACTION:.0%} are blank",
        "`--mode names`",
        "`--mode prose`",
    ):
        assert said in " ".join(section.split()), said
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"at least **{corpus._LINES_MIN} lines**" in readme and "`--mode names`" in readme


def test_no_validation_says_why_when_the_user_did_not_ask_for_none(invoke, tmp_path):
    # a one-line names corpus said "1 batch of 1 lines" and "no validation (--val-fraction
    # 0)" though nobody passed --val-fraction: nothing could be held out
    corpus = tmp_path / "one.txt"
    corpus.write_text("abc\n")
    args = ["train", str(corpus), "--store", str(tmp_path / "s"), "--hidden", "8"]
    r = invoke([*args, "--steps", "10", "--mode", "names", "--eval-every", "10"])
    assert r.exit_code == 0, r.stderr
    assert "--val-fraction" not in r.stderr and "1 lines" not in r.stderr
    assert (
        "(1 batch of 1 line per epoch), no validation (one distinct line: nothing to hold out)"
        in r.stderr
    )
    assert "step 10: no validation (one distinct line: nothing to hold out)  " in r.stderr
    # prose too short for a validation tail of two characters
    r = invoke([*args, "--steps", "4", "--mode", "prose", "--eval-every", "4", "--run", "p"])
    assert r.exit_code == 0, r.stderr
    why = "no validation (the text is too short to hold out a validation tail)"
    assert f"per epoch), {why}" in r.stderr and f"step 4: {why}  " in r.stderr
    assert "--val-fraction" not in r.stderr
