"""Every command and option explains itself; exit codes are part of --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.errors import EXIT_CODES

DINOS = Path(__file__).resolve().parent.parent / "data" / "dinos.txt"


def _commands():
    return sorted(cli.commands.items())


def test_every_command_and_option_has_help():
    assert {"train", "sample", "score", "runs"} <= set(cli.commands)
    for name, cmd in _commands():
        assert cmd.help and cmd.help.strip(), f"{name} has no help text"
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help and param.help.strip(), f"{name} {param.opts} has no help"


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_help_lists_exit_codes_and_env(name):
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0
    for code, text in EXIT_CODES.items():
        assert f"{code}  {text}" in r.output
    assert "CHARRNN_STORE" in r.output or name == "runs" or "--store" in r.output
    assert "CHARRNN_<COMMAND>_<OPTION>" in r.output.replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_offers_json(name):
    cmd = cli.commands[name]
    assert any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option))


def test_version_and_module_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("charrnn, version")


def test_unknown_command_is_a_usage_error():
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "frobnicate"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "No such command" in r.stderr and r.stdout == ""


# --------------------------------------------------------------------------- issue 13: 4, 5, 6

ONE_LINE_USAGE_ERRORS = [
    (["frobnicate"], "No such command", "charrnn --help"),
    (["train", "--frob"], "No such option", "charrnn train --help"),
    (["sample", "--top-p", "-0.1"], "--top-p: top-p must be in (0, 1]", "charrnn sample --help"),
    (["sample", "--top-p", "1.5"], "--top-p: top-p must be in (0, 1]", "charrnn sample --help"),
    (["train", "--dropout", "1"], "--dropout: dropout must be in [0, 1)", "charrnn train --help"),
    # an option's type follows its field's annotation (int, float | None, ...)
    (["train", "--keep", "1.5"], "--keep", "charrnn train --help"),
    (["train", "--layers", "two"], "--layers", "charrnn train --help"),
    (["train", "--epochs", "nan"], "--epochs", "charrnn train --help"),
    (["sample", "--top-k", "1.5"], "--top-k", "charrnn sample --help"),
    (["sample", "--length", "0"], "--length", "charrnn sample --help"),
    (
        ["train", "--store", "/nonexistent", "--steps", "10", "--epochs", "2"],
        "error: --steps / --epochs: give steps or epochs",  # not --run: "the run's" is prose
        "charrnn train --help",
    ),
    # a missing argument is named (its click message is empty: it read "FILE: ")
    (["score", "--model", "dinos"], "error: Missing argument 'FILE' (see", "charrnn score --help"),
    (["score"], "error: Missing argument 'FILE' (see", "charrnn score --help"),
    # click's parser gives no context for a missing value: the subcommand's help all the same
    (["sample", "dinos", "--prime"], "'--prime' requires an argument", "charrnn sample --help"),
    (["clip-stats", "--probe"], "'--probe' requires an argument", "charrnn clip-stats --help"),
    (["train", "-q", "--run"], "'--run' requires an argument", "charrnn train --help"),
    # the option is named, in its own words (not the dataclass's vocab_size or "batch size")
    (
        ["train", "--hidden", "0"],
        "error: --hidden: must be at least 1, not 0",
        "charrnn train --help",
    ),
    (
        ["train", "--batch-size", "0"],
        "error: --batch-size: must be at least 1, not 0",
        "charrnn train --help",
    ),
    (
        ["train", "--embedding", "-1"],
        "error: --embedding: must be at least 0, not -1",
        "charrnn train --help",
    ),
    (
        ["sample", "-n", "abc"],
        "error: --num: 'abc' is not a valid integer (see",
        "charrnn sample --help",
    ),
    # an unknown encoding is a usage error (it exited 65, as bad data)
    (
        ["train", "--encoding", "nope"],
        "error: --encoding: unknown encoding 'nope'; e.g. utf-8",
        "charrnn train --help",
    ),
    (
        ["train", "--encoding", "rot13"],
        "error: --encoding: 'rot13' is not a text encoding",
        "charrnn train --help",
    ),
]


@pytest.mark.parametrize("args, needle, hint", ONE_LINE_USAGE_ERRORS)
def test_usage_errors_are_one_line_with_the_prefix_and_a_next_step(invoke, args, needle, hint):
    r = invoke(args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("charrnn: error: ") and needle in r.stderr
    assert f"see '{hint}'" in r.stderr
    # click's sentences end in a period, which read "... 'FILE'. (see ...)" before the hint
    assert ". (see" not in r.stderr, r.stderr


def test_a_bad_environment_variable_is_named(invoke):
    r = invoke(["sample"], env={"CHARRNN_SAMPLE_TOP_K": "lots"})
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("charrnn: error: CHARRNN_SAMPLE_TOP_K (--top-k): ")


@pytest.mark.parametrize("var", ["CHARRNN_SAMPLE_N", "CHARRNN_SAMPLE_NUM"])
def test_the_variable_named_is_the_one_set_in_plain_words(invoke, var):
    # the README's CHARRNN_SAMPLE_N was reported as CHARRNN_SAMPLE_NUM, "not a valid integer range"
    r = invoke(["sample"], env={var: "abc"})
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"charrnn: error: {var} (--num): 'abc' is not a valid integer (")


def test_a_help_that_states_its_default_shows_no_second_one():
    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    options = out.split("Options:")[1].split("\n  -")
    eval_every = next(o for o in options if o.startswith("-eval-every"))
    assert eval_every.count("[default:") == 1 and "names mode: 100" in eval_every
    assert all(o.count("[default:") <= 1 for o in options)


def test_a_missing_file_to_score_is_not_called_a_corpus(invoke, tmp_path):
    r = invoke(["score", str(tmp_path / "nope.txt"), "--store", str(tmp_path)])
    assert r.exit_code == 66 and r.stdout == ""
    assert r.stderr == f"charrnn: error: file not found: {tmp_path / 'nope.txt'}\n"


def test_a_changed_setting_on_resume_is_one_line(invoke, tmp_path):
    base = ["train", str(DINOS), "--store", str(tmp_path), "-q", "--hidden", "8"]
    assert invoke([*base, "--steps", "2", "--batch-size", "8"]).exit_code == 0
    r = invoke([*base, "--steps", "4", "--batch-size", "4"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("charrnn: error: run 'dinos' was trained with --batch-size 8")


def test_an_unwritable_store_suggests_another(invoke, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = invoke(["train", str(DINOS), "--store", str(blocker / "store"), "--steps", "2"])
    assert r.exit_code == 74 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("charrnn: error: ") and "--store" in r.stderr
    assert "CHARRNN_STORE" in r.stderr


@pytest.mark.parametrize(
    "shell, marker", [("bash", "complete -o"), ("zsh", "#compdef"), ("fish", "complete --no-files")]
)
def test_completion_scripts_for_each_shell(shell, marker):
    env = {**os.environ, "_CHARRNN_COMPLETE": f"{shell}_source"}
    r = subprocess.run([sys.executable, "-m", "charrnn"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout and "_CHARRNN_COMPLETE" in r.stdout


def test_completion_offers_run_names_and_their_checkpoints(invoke, tmp_path):
    assert (
        invoke(
            [
                "train",
                str(DINOS),
                "--store",
                str(tmp_path),
                "-q",
                "--steps",
                "3",
                "--hidden",
                "8",
                "--batch-size",
                "8",
                "--seq-len",
                "8",
            ]
        ).exit_code
        == 0
    )

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_CHARRNN_COMPLETE": "bash_complete",
            "CHARRNN_STORE": str(tmp_path),
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        r = subprocess.run(
            [sys.executable, "-m", "charrnn"], env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        return [line.split(",", 1)[1] for line in r.stdout.splitlines()]

    assert complete("charrnn sample di") == ["dinos"]
    assert complete("charrnn clip-stats di") == ["dinos"]
    assert complete("charrnn score x --model dinos:") == ["dinos:best", "dinos:latest", "dinos:3"]


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_help_has_examples_in_plain_words(name):
    r = CliRunner().invoke(cli, [name, "--help"], terminal_width=100)
    assert r.exit_code == 0
    block = r.output.split("Examples:")[1].split("Options:")[0]
    examples = [
        line
        for line in block.splitlines()
        if line.strip().startswith(("charrnn", "echo", "COLUMNS", "CHARRNN"))
    ]
    assert 2 <= len(examples) <= 4, block
    for jargon in ("the assignment", "as in the lectures", "c<t-1>"):
        assert jargon not in r.output


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_numeric_options_show_a_number_metavar(name):
    for param in cli.commands[name].params:
        if (
            isinstance(param, click.Option)
            and isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))
            or getattr(param.type, "name", "") == "float"
        ):
            assert param.metavar in ("N", "X", "K", "P", "X|none"), param.opts


def test_sample_help_explains_the_ways_to_name_a_model():
    out = CliRunner().invoke(cli, ["sample", "--help"]).output
    for form in ("RUN:best", "RUN:latest", "RUN:STEP"):
        assert form in out
    out = CliRunner().invoke(cli, ["score", "--help"], terminal_width=200).output
    assert "--model RUN" in out and "RUN:best" in out


# --------------------------------------------------------------------------- clipping thresholds


@pytest.mark.parametrize("flag", ["--clip-norm", "--clip-value"])
def test_clipping_off_is_none_or_0_both_documented_and_a_negative_says_so(invoke, flag):
    from charrnn.cli import OptionalFloat

    out = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200).output
    line = next(x for x in out.splitlines() if x.strip().startswith(flag))
    assert "none: off. 0 means off too." in line
    off = OptionalFloat()
    assert [off.convert(v, None, None) for v in ("0", "0.0", "none", "OFF", "2.5")] == [
        None,
        None,
        None,
        None,
        2.5,
    ]
    for bad in ("-1", "nan", "inf"):
        r = invoke(["train", "--store", "/nonexistent", flag, bad])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1
        assert f"error: {flag}: {bad} is not a positive finite number (none or 0: no clipping)" in (
            r.stderr
        )
