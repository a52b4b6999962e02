"""`charrnn score` as users and scripts run it: agreement with the training loss, per line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charrnn.cli import _load_for_inference
from charrnn.console import Log
from charrnn.scoring import score_lines, score_text


@pytest.fixture
def store(trained_store: Path) -> Path:
    return trained_store


def _model(store, run="dinos"):
    ck, model, vocab = _load_for_inference(store, run, "latest", Log(True))
    return model, vocab


def test_score_agrees_with_the_training_loss(invoke, store):
    model, vocab = _model(store)
    text = "Tyrannosaurus\nStegosaurus\nAbc"
    lp, n = score_text(model, vocab, text, chunk=5)
    ids = np.array([vocab.eos_id, *vocab.encode(text)])
    loss, _ = model.loss(ids[None, :-1], ids[None, 1:])
    assert n == len(text)
    assert -lp / n == pytest.approx(loss, rel=1e-6)
    r = invoke(["score", "-", "--store", str(store), "--model", "dinos", "--json"], input=text)
    doc = json.loads(r.stdout)
    assert doc["n_chars"] == n and doc["nats_per_char"] == pytest.approx(loss, rel=1e-6)
    assert doc["bits_per_char"] == pytest.approx(loss / math.log(2), rel=1e-6)
    assert doc["perplexity"] == pytest.approx(math.exp(loss), rel=1e-6)


def test_per_line_scores_rank_real_names_above_noise(invoke, store):
    model, vocab = _model(store)
    rows = score_lines(model, vocab, ["Tyrannosaurus", "Xqzkwvj", ""])
    assert rows[0][1] == len("Tyrannosaurus") + 1  # the end of line is scored too
    assert rows[0][0] / rows[0][1] > rows[1][0] / rows[1][1]
    # batched per-line scores equal scoring each line alone
    lp, n = score_text(model, vocab, "Tyrannosaurus\n")
    assert rows[0][0] == pytest.approx(lp, rel=1e-6) and rows[0][1] == n
    r = invoke(
        ["score", "-", "--store", str(store), "--model", "dinos", "--per-line"],
        input="Tyrannosaurus\nXqzkwvj\n",
    )
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2


def test_score_unknown_characters(invoke, store, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("Tyrannosaurus €uro\n")
    r = invoke(["score", str(f), "--store", str(store), "--model", "dinos"])
    assert r.exit_code == 65 and "'€'" in r.stderr and "--skip-unknown" in r.stderr
    r = invoke(
        ["score", str(f), "--store", str(store), "--model", "dinos", "--skip-unknown", "--json"]
    )
    assert r.exit_code == 0
    assert json.loads(r.stdout)["skipped_chars"] == 2  # '€' and ' '
    r = invoke(["score", str(tmp_path / "nope.txt"), "--store", str(store)])
    assert r.exit_code == 66


def test_per_line_on_an_empty_file_is_an_error_as_without_it(invoke, store, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for extra in ([], ["--per-line"]):
        r = invoke(["score", str(empty), "--store", str(store), "--model", "dinos", *extra])
        assert r.exit_code == 65 and "nothing to score" in r.stderr and r.stdout == ""
