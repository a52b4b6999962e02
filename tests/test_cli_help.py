"""Every command and option explains itself; exit codes are part of --help."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from charrnn.cli import cli
from charrnn.errors import EXIT_CODES


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
