"""`charrnn score` as users and scripts run it: agreement with the training loss (streams
for prose, lines for names), per line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charrnn.batches import line_split
from charrnn.cli import _load_for_inference
from charrnn.console import Log
from charrnn.corpus import load_corpus
from charrnn.reading import CorpusOptions
from charrnn.scoring import score_lines, score_text
from charrnn.store import Store

DINOS = Path(__file__).resolve().parent.parent / "data" / "dinos.txt"


@pytest.fixture
def store(trained_store: Path) -> Path:
    return trained_store


def _model(store, run="dinos"):
    which = None if ":" in run else "latest"
    ck, model, vocab = _load_for_inference(store, run, which, Log(True))
    return model, vocab


def test_score_agrees_with_the_training_loss(invoke, store):
    model, vocab = _model(store)
    text = "Tyrannosaurus\nStegosaurus\nAbc"
    lp, n = score_text(model, vocab, text, chunk=5)
    ids = np.array([vocab.eos_id, *vocab.encode(text)])
    loss, _ = model.loss(ids[None, :-1], ids[None, 1:])
    assert n == len(text)
    assert -lp / n == pytest.approx(loss, rel=1e-6)
    r = invoke(
        ["score", "-", "--store", str(store), "--model", "dinos", "--stream", "--json"], input=text
    )
    doc = json.loads(r.stdout)
    assert doc["scored_as"] == "stream" and doc["n_lines"] is None
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


def _score(invoke, store, *args, input=None):
    r = invoke(["score", *args, "--store", str(store)], input=input)
    assert r.exit_code == 0, r.stderr
    return r


def test_a_names_model_scores_a_file_line_by_line_as_per_line_sums(invoke, store):
    # issue 10's newcomer: the headline carried the state across names (2.30 nats/char on
    # dinos.txt) while --per-line summed to 1.39; a names model is scored as it trained
    names = "\n".join(DINOS.read_text().splitlines()[::7]) + "\n"
    r = _score(invoke, store, "-", "--model", "dinos", "--json", input=names)
    head = json.loads(r.stdout)
    assert "scored each line on its own from the start state" in r.stderr
    r = _score(invoke, store, "-", "--model", "dinos", "--per-line", "--json", input=names)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert head["scored_as"] == "lines" and head["n_lines"] == len(rows)
    assert head["n_chars"] == sum(row["n_chars"] for row in rows) == len(names)
    lp = sum(row["logprob"] for row in rows)
    assert head["logprob"] == pytest.approx(lp, rel=1e-12)
    assert head["nats_per_char"] == pytest.approx(-lp / head["n_chars"], rel=1e-12)
    assert head["bits_per_char"] == pytest.approx(head["nats_per_char"] / math.log(2), rel=1e-12)
    assert head["perplexity"] == pytest.approx(math.exp(head["nats_per_char"]), rel=1e-12)
    # --stream keeps the old score, the state carried across line ends: not the same
    r = _score(invoke, store, "-", "--model", "dinos", "--stream", "--json", input=names)
    stream = json.loads(r.stdout)
    assert stream["scored_as"] == "stream" and "scored each line" not in r.stderr
    model, vocab = _model(store, "dinos:best")
    want, n = score_text(model, vocab, names)
    assert stream["n_chars"] == n and stream["logprob"] == pytest.approx(want, rel=1e-9)
    assert abs(stream["nats_per_char"] - head["nats_per_char"]) > 0.05
    # the terminal form says the same, with the line count
    r = _score(invoke, store, "-", "--model", "dinos", input=names)
    assert f"lines           {len(rows):,}" in r.stdout
    assert f"nats/char       {head['nats_per_char']:.4f}" in r.stdout


def test_the_headline_on_the_validation_names_is_the_runs_validation_loss(invoke, store, tmp_path):
    ck = Store(store).resolve("dinos:best")
    train = ck.meta["train"]
    corpus = load_corpus([DINOS], CorpusOptions.from_json(ck.meta["corpus"]["options"]))
    sp = line_split(
        corpus.ids,
        corpus.vocab.eos_id,
        train["batch_size"],
        train["val_fraction"],
        train["split_seed"],
        train["seed"],
        train["max_line"],
    )
    val = [corpus.vocab.decode(corpus.ids[sp.starts[i] : sp.starts[i] + sp.lengths[i]])
           for i in sp.val_index.tolist()]  # fmt: skip
    f = tmp_path / "val.txt"
    f.write_text("\n".join(val) + "\n")
    r = _score(invoke, store, str(f), "--model", "dinos:best", "--json", "-q")
    doc = json.loads(r.stdout)
    assert r.stderr == "" and doc["n_lines"] == len(val)
    assert doc["nats_per_char"] == pytest.approx(ck.meta["best_val"], rel=1e-5)
    r = _score(invoke, store, str(f), "--model", "dinos:best", "--json", "--stream")
    assert json.loads(r.stdout)["nats_per_char"] > ck.meta["best_val"] + 0.05


def test_a_prose_model_still_scores_one_stream(invoke, store):
    text = "ROMEO:\nWhat light through yonder window breaks?\nIt is the east.\n"
    r = _score(invoke, store, "-", "--model", "prose", "--json", input=text)
    doc = json.loads(r.stdout)
    assert r.stderr.count("\n") <= 1 and "scored each line" not in r.stderr
    model, vocab = _model(store, "prose")
    want, n = score_text(model, vocab, text)
    assert doc["scored_as"] == "stream" and doc["n_lines"] is None
    assert doc["n_chars"] == n and doc["logprob"] == pytest.approx(want, rel=1e-9)
    # --lines: the per-line sums, for a prose model too
    r = _score(invoke, store, "-", "--model", "prose", "--lines", "--json", input=text)
    lines = json.loads(r.stdout)
    rows = score_lines(model, vocab, text.splitlines())
    assert lines["scored_as"] == "lines" and lines["n_lines"] == 3
    assert lines["logprob"] == pytest.approx(sum(row[0] for row in rows), rel=1e-9)
    assert lines["logprob"] != pytest.approx(want, rel=1e-3)


def test_the_environment_chooses_lines_or_stream(invoke, store):
    text = "tyrannosaurus\nvelociraptor\n"
    args = ["score", "-", "--store", str(store), "--model", "dinos", "--json", "-q"]
    for value, want in (("0", "stream"), ("false", "stream"), ("1", "lines")):
        r = invoke(args, env={"CHARRNN_SCORE_LINES": value}, input=text)
        assert r.exit_code == 0 and json.loads(r.stdout)["scored_as"] == want, r.stderr
    r = invoke([*args, "--lines"], env={"CHARRNN_SCORE_LINES": "0"}, input=text)
    assert json.loads(r.stdout)["scored_as"] == "lines"  # the command line wins


def test_per_line_with_stream_is_a_usage_error(invoke, store):
    r = invoke(["score", "-", "--store", str(store), "--per-line", "--stream"], input="abc\n")
    assert r.exit_code == 2 and r.stdout == ""
    assert "error: --per-line scores lines one by one; drop --stream" in r.stderr


@pytest.mark.parametrize(
    "env, args, said",
    [
        # it said "drop --stream", which nobody typed
        ({"CHARRNN_SCORE_LINES": "0"}, ["--per-line"], "--per-line scores lines one by one; "
         "unset CHARRNN_SCORE_LINES"),
        ({"CHARRNN_SCORE_PER_LINE": "1"}, ["--stream"], "CHARRNN_SCORE_PER_LINE (--per-line) "
         "scores lines one by one; drop --stream"),
        ({"CHARRNN_SCORE_PER_LINE": "1", "CHARRNN_SCORE_LINES": "0"}, [],
         "CHARRNN_SCORE_PER_LINE (--per-line) scores lines one by one; unset CHARRNN_SCORE_LINES"),
    ],
)  # fmt: skip
def test_per_line_with_stream_from_the_environment_names_the_variable(
    invoke, store, env, args, said
):
    r = invoke(["score", "-", "--store", str(store), *args], env=env, input="abc\n")
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"charrnn: error: {said} (see 'charrnn score --help')")


def test_lines_without_a_newline_in_the_vocabulary_names_where_lines_came_from(invoke, tmp_path):
    flat = tmp_path / "flat.txt"
    flat.write_text("abcab cabd " * 400)  # no newline: the model's vocabulary has none
    tiny = ["--steps", "2", "--hidden", "8", "--batch-size", "4", "--seq-len", "16", "-q"]
    r = invoke(["train", str(flat), "--store", str(tmp_path), *tiny])
    assert r.exit_code == 0, r.stderr
    args = ["score", str(flat), "--store", str(tmp_path), "--model", "flat", "-q"]
    r = invoke([*args, "--lines"])
    assert r.exit_code == 2 and r.stdout == ""
    assert "error: --lines needs a newline in the model's vocabulary; use --stream" in r.stderr
    r = invoke(args, env={"CHARRNN_SCORE_LINES": "1"})
    assert r.exit_code == 2 and r.stdout == ""
    assert "error: CHARRNN_SCORE_LINES (--lines) needs a newline in the model's" in r.stderr
    r = invoke([*args, "--stream"], env={"CHARRNN_SCORE_LINES": "1"})
    assert r.exit_code == 0, r.stderr  # the advice works: the command line wins
