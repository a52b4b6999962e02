"""`charrnn sample` as users and scripts run it: streams, seeds, names, prose, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DINOS = ROOT / "data" / "dinos.txt"
SMALL = ["--hidden", "32", "--batch-size", "16", "--seq-len", "32"]


@pytest.fixture
def store(trained_store: Path) -> Path:
    return trained_store


@pytest.fixture
def sample(invoke, store):
    """``sample(*args, input=None)``: charrnn sample on the trained store."""
    return lambda *args, input=None: invoke(["sample", "--store", str(store), *args], input=input)


def test_names_one_per_line_exactly_n(sample, store):
    r = sample("dinos", "-n", "1000", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[-1] == "" and len(lines) == 1001
    assert all(lines[:-1])  # exactly n names, none empty
    # the one word on stderr: which checkpoint (the run has validation: its best)
    assert r.stderr.count("\n") == 1 and "its best checkpoint, step" in r.stderr


def test_no_argument_uses_the_latest_run(sample, store):
    r = sample("--seed", "1")
    assert r.exit_code == 0, r.stderr
    # the prose model was trained last: one text of --length characters
    assert len(r.stdout) == 500 + 1


def test_same_seed_same_bytes_and_another_seed_differs(sample, store):
    a = sample("dinos", "-n", "50", "--seed", "7").stdout
    b = sample("dinos", "-n", "50", "--seed", "7").stdout
    c = sample("dinos", "-n", "50", "--seed", "8").stdout
    assert a == b and a != c


def test_seed_from_environment(invoke, sample, store):
    env = {"CHARRNN_SAMPLE_SEED": "7"}
    a = invoke(["sample", "--store", str(store), "dinos", "-n", "20"], env=env).stdout
    b = sample("dinos", "-n", "20", "--seed", "7").stdout
    assert a == b


def test_names_end_at_the_newline(sample, store):
    r = sample("dinos", "-n", "200", "--seed", "3", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 200
    assert all("\n" not in row["text"] for row in rows)
    assert sum(row["finished"] for row in rows) >= 190
    assert all(row["logprob"] < 0 for row in rows)
    r = sample("dinos", "-n", "20", "--seed", "3", "--max-length", "4", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(len(row["text"]) <= 4 for row in rows)


def test_temperature_zero_is_greedy_and_small_temperature_agrees(sample, store):
    greedy = sample("dinos", "-n", "5", "-t", "0").stdout
    assert len(set(greedy.splitlines())) == 1  # argmax: every sample identical
    cold = sample("dinos", "-n", "5", "-t", "1e-6", "--seed", "1").stdout
    assert cold == greedy
    top1 = sample("dinos", "-n", "5", "--top-k", "1", "--seed", "9").stdout
    assert top1 == greedy


@pytest.mark.parametrize("t", ["-1", "nan", "inf", "-inf", "hot"])
def test_bad_temperature_is_a_usage_error(sample, store, t):
    r = sample("dinos", "-t", t)
    assert r.exit_code == 2 and "temperature" in r.stderr.lower()
    assert r.stdout == ""


def test_prime_is_echoed_and_unknown_prime_is_a_clear_error(sample, store):
    r = sample("dinos", "-n", "5", "--prime", "Tyr", "--seed", "1")
    assert r.exit_code == 0
    assert all(line.startswith("Tyr") for line in r.stdout.splitlines())
    r = sample("dinos", "--prime", "T☃r€")
    assert r.exit_code == 65 and r.stdout == ""
    assert "'☃'" in r.stderr and "'€'" in r.stderr and "vocabulary" in r.stderr
    assert "KeyError" not in r.stderr and "Traceback" not in r.stderr


def test_prose_streams_length_characters(sample, store):
    r = sample("prose", "--length", "300", "--seed", "2")
    assert r.exit_code == 0
    assert len(r.stdout) == 301 and r.stdout.endswith("\n")
    r = sample("prose", "--length", "50", "-n", "3", "--seed", "2", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["n_chars"] for row in rows] == [50, 50, 50]


def test_novel_never_prints_a_training_line(invoke, tmp_path):
    corpus = tmp_path / "few.txt"
    corpus.write_text("abc\nabd\nabe\nbcd\n" * 300)
    r = invoke(
        [
            "train",
            str(corpus),
            "--store",
            str(tmp_path),
            "-q",
            "--steps",
            "120",
            "--lr",
            "0.02",
            "--hidden",
            "32",
            "--batch-size",
            "8",
            "--seq-len",
            "16",
        ]
    )
    assert r.exit_code == 0, r.stderr
    plain = invoke(["sample", "--store", str(tmp_path), "-n", "50", "--seed", "1"])
    known = {"abc", "abd", "abe", "bcd"}
    assert sum(line in known for line in plain.stdout.splitlines()) > 25  # it memorised them
    r = invoke(
        ["sample", "--store", str(tmp_path), "-n", "10", "--seed", "1", "--novel", "-t", "2"]
    )
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines and not known & set(lines)
    assert "dropped" in r.stderr and "train/val names" in r.stderr


def test_missing_run_and_empty_store(invoke, sample, tmp_path, store):
    r = invoke(["sample", "--store", str(tmp_path / "empty")])
    assert r.exit_code == 66 and "charrnn train" in r.stderr
    r = sample("nosuchrun")
    assert r.exit_code == 66 and "dinos" in r.stderr


def test_broken_pipe_is_not_an_error(store):
    import subprocess
    import sys

    cmd = f"{sys.executable} -m charrnn sample --store {store} dinos -n 100000 --seed 1 | head -n 3"
    p = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, cwd=ROOT
    )
    assert len(p.stdout.splitlines()) == 3
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "Error" not in p.stderr


def test_sample_never_imports_rich_tqdm_or_torch(store):
    """Cold start: the sampling path imports nothing that draws (checked with -X importtime)."""
    import subprocess
    import sys

    p = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "charrnn",
            "sample",
            "--store",
            str(store),
            "dinos",
            "-n",
            "3",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in p.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "numpy" in imported and "click" in imported  # the check sees real imports
    assert not imported & {"rich", "tqdm", "torch"}


def test_without_run_the_run_used_is_named_on_stderr(sample):
    r = sample("--seed", "1", "--length", "10")
    assert r.exit_code == 0 and "using run 'prose'" in r.stderr
    assert sample("--seed", "1", "--length", "10", "-q").stderr == ""


def test_prose_json_has_the_fields_names_mode_has(sample, trained_store):
    from charrnn.cli import _load_for_inference
    from charrnn.console import Log
    from charrnn.scoring import score_text

    r = sample("prose", "-n", "2", "--length", "30", "--json", "--seed", "3")
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(docs) == 2
    names = json.loads(sample("dinos", "-n", "1", "--json", "--seed", "3").stdout)
    for doc in docs:
        # every field but the origin (train/val/new: a names-mode category)
        assert set(names) - {"origin"} <= set(doc)
        assert doc["finished"] is True and doc["n_chars"] == 30
        _, model, vocab = _load_for_inference(trained_store, "prose", None, Log(True))
        assert doc["logprob"] == pytest.approx(score_text(model, vocab, doc["text"])[0], rel=1e-5)


@pytest.mark.parametrize(
    "command",
    [["sample", "dinos"], ["score", str(DINOS), "--model", "dinos"], ["clip-stats", "dinos"]],
)
def test_best_and_latest_together_is_a_usage_error(invoke, store, command):
    # it was accepted silently, the last of the two winning
    for pair in (["--best", "--latest"], ["--latest", "--best"]):
        r = invoke([*command, "--store", str(store), *pair])
        assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
        assert r.stderr.startswith("charrnn: error: --best and --latest exclude each other")
        assert f"see 'charrnn {command[0]} --help'" in r.stderr


@pytest.mark.parametrize(
    "command, prefix",
    [
        (["sample", "dinos"], "CHARRNN_SAMPLE"),
        (["score", str(DINOS), "--model", "dinos"], "CHARRNN_SCORE"),
        (["clip-stats", "dinos"], "CHARRNN_CLIP_STATS"),
    ],
)
def test_best_and_latest_both_from_the_environment_name_the_variables(
    invoke, store, command, prefix
):
    # it said "--best and --latest exclude each other: give one", neither of them typed
    env = {f"{prefix}_BEST": "1", f"{prefix}_LATEST": "1"}
    r = invoke([*command, "--store", str(store)], env=env)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(
        f"charrnn: error: {prefix}_BEST (--best) and {prefix}_LATEST (--latest) "
        "exclude each other: unset one"
    )


def test_best_or_latest_on_the_command_line_overrides_the_environment(invoke, store):
    env = {"CHARRNN_SAMPLE_LATEST": "1"}
    r = invoke(["sample", "dinos:best", "--store", str(store)], env=env)
    assert r.exit_code == 2 and r.stdout == ""  # the variable counts, and is named
    assert "error: CHARRNN_SAMPLE_LATEST (--latest) takes a run name, not 'dinos:best'" in r.stderr
    r = invoke(["sample", "dinos", "--store", str(store), "-n", "1", "--best"], env=env)
    assert r.exit_code == 0 and r.stdout.count("\n") == 1, r.stderr


@pytest.mark.parametrize(
    "args, said",
    [
        (["--max-length", "5"], "--max-length applies to names mode only"),
        (["--max-length", "5", "--unique"], "--unique and --max-length apply to names mode only"),
    ],
)
def test_an_option_of_names_mode_is_refused_on_prose(sample, args, said):
    # --max-length was ignored on prose (20 characters, exit 0) while --unique was refused
    r = sample("prose", "--length", "20", *args)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("charrnn: error:") == 1
    assert f"charrnn: error: {said}; prose mode writes --length characters" in r.stderr


@pytest.mark.parametrize(
    "env, args, said",
    [
        ({"CHARRNN_SAMPLE_NOVEL": "1"}, [], "CHARRNN_SAMPLE_NOVEL (--novel) applies"),
        (
            {"CHARRNN_SAMPLE_MAX_LENGTH": "5"},
            ["--unique"],
            "--unique and CHARRNN_SAMPLE_MAX_LENGTH (--max-length) apply",
        ),
        (
            {"CHARRNN_SAMPLE_MIN_LENGTH": "3"},
            [],
            "CHARRNN_SAMPLE_MIN_LENGTH (--min-length) applies",
        ),
    ],
)
def test_an_option_of_names_mode_from_the_environment_is_refused_by_its_variable(
    invoke, store, env, args, said
):
    # the refusal named the flag, which the user never typed
    r = invoke(["sample", "--store", str(store), "prose", "--length", "20", *args], env=env)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("charrnn: error:") == 1
    assert f"charrnn: error: {said} to names mode only; prose mode writes --length" in r.stderr


def test_length_from_the_environment_is_refused_in_names_mode_by_its_variable(invoke, store):
    r = invoke(["sample", "--store", str(store), "dinos"], env={"CHARRNN_SAMPLE_LENGTH": "50"})
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("charrnn: error:") == 1
    assert (
        "charrnn: error: CHARRNN_SAMPLE_LENGTH (--length) applies to prose mode only; "
        "names end at the newline" in r.stderr
    )


def test_length_is_refused_in_names_mode(sample):
    r = sample("dinos", "--length", "20")
    assert r.exit_code == 2 and r.stdout == ""
    assert "charrnn: error: --length applies to prose mode only" in r.stderr
    # the defaults still apply where they belong
    assert len(sample("prose", "--seed", "1", "-q").stdout) == 500 + 1
    assert sample("dinos", "-n", "3", "--max-length", "2", "-q").exit_code == 0


def test_a_mistyped_step_is_a_usage_error(sample):
    r = sample("dinos:abc")
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("charrnn: error: unknown checkpoint selector 'abc' in 'dinos:abc'")


@pytest.mark.parametrize(
    "var, value, said",
    [
        (
            "CHARRNN_SAMPLE_TEMPERATURE",
            "-1",
            "CHARRNN_SAMPLE_TEMPERATURE (--temperature): "
            "temperature must be a finite number >= 0, not -1.0",
        ),
        ("CHARRNN_SAMPLE_TOP_P", "1.5", "CHARRNN_SAMPLE_TOP_P (--top-p): top-p must be in (0, 1]"),
        ("CHARRNN_SAMPLE_TOP_K", "0", "CHARRNN_SAMPLE_TOP_K (--top-k): top-k must be at least 1"),
    ],
)
def test_a_value_out_of_range_from_the_environment_names_its_variable(
    invoke, store, var, value, said
):
    # the range checks (SampleOptions) named the flag, which nobody typed
    r = invoke(["sample", "--store", str(store), "dinos"], env={var: value})
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"charrnn: error: {said}"), r.stderr
    assert r.stderr.endswith(" (see 'charrnn sample --help')\n")


def test_a_value_out_of_range_on_the_command_line_names_the_flag_over_the_environment(
    invoke, store
):
    env = {"CHARRNN_SAMPLE_TOP_P": "0.9"}
    r = invoke(["sample", "--store", str(store), "dinos", "--top-p", "2"], env=env)
    assert r.exit_code == 2
    assert r.stderr.startswith("charrnn: error: --top-p: top-p must be in (0, 1], not 2.0")


def test_a_run_that_diverged_before_its_first_checkpoint_is_named_not_missing(invoke, tmp_path):
    # it keeps only diverged.npz; sample and clip-stats called it "no run named 'd1'"
    train = ["train", str(DINOS), "--store", str(tmp_path), "--run", "d1", "-q"]
    r = invoke([*train, "--hidden", "8", "--lr", "1e6", "--steps", "50"])
    assert r.exit_code == 3, r.stderr
    for command in (["sample", "d1"], ["clip-stats", "d1"], ["sample", "d1:best"]):
        r = invoke([command[0], "--store", str(tmp_path), *command[1:]])
        assert r.exit_code == 66 and r.stdout == ""
        assert r.stderr == (
            "charrnn: error: run 'd1' has no checkpoint (it diverged before its first; "
            "charrnn clip-stats d1:diverged shows what happened)\n"
        )
    r = invoke(["clip-stats", "--store", str(tmp_path), "d1:diverged", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"]["nonfinite"] >= 5
