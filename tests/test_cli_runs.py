"""`charrnn runs`: a table with a header for people, ISO 8601 times in --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from charrnn.store import Store

ROOT = Path(__file__).resolve().parent.parent


def test_runs_table_has_a_header_the_model_and_its_best_loss(invoke, trained_store):
    r = invoke(["runs", "--store", str(trained_store)])
    assert r.exit_code == 0 and r.stderr == ""
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["RUN", "STEP", "CKPTS", "MODEL", "BEST", "VAL", "UPDATED"]
    assert [row.split()[0] for row in rows] == [i.name for i in Store(trained_store).runs()]
    dinos = next(row for row in rows if row.startswith("dinos"))
    assert "lstm 1x32" in dinos


def test_runs_json_gives_iso_times_and_the_model(invoke, trained_store):
    docs = json.loads(invoke(["runs", "--store", str(trained_store), "--json"]).stdout)
    assert {d["run"] for d in docs} == {"dinos", "prose"}
    for d in docs:
        when = datetime.fromisoformat(d["updated"])
        assert when.utcoffset() is not None  # a zone, not a bare float epoch
        assert d["model"] == "lstm 1x32" and d["best_val_loss"] > 0


def test_an_empty_store_says_how_to_fill_it(invoke, tmp_path):
    r = invoke(["runs", "--store", str(tmp_path)])
    assert r.exit_code == 0 and r.stdout == "" and "charrnn train" in r.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_stdout_is_named_with_exit_74(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [sys.executable, "-m", "charrnn", "runs", "--json", "--store", str(tmp_path)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    assert r.returncode == 74
    assert r.stderr == "charrnn: error: cannot write to stdout: No space left on device\n"
