"""The exit-code contract of the domain exceptions, and their keyword details."""

from __future__ import annotations

from pathlib import Path

import pytest

from charrnn.errors import (
    EXIT_CODES,
    CharrnnError,
    CheckpointError,
    ConfigError,
    CorpusError,
    DivergedError,
    InputMissingError,
    LockedError,
    ResourceError,
    StoreIOError,
    TooFewSamplesError,
    VocabError,
)


def test_every_error_keeps_its_exit_code():
    codes = {
        CharrnnError: 1,
        ConfigError: 2,
        ResourceError: 2,
        DivergedError: 3,
        TooFewSamplesError: 4,
        CorpusError: 65,
        VocabError: 65,
        CheckpointError: 65,
        InputMissingError: 66,
        StoreIOError: 74,
        LockedError: 75,
    }
    assert {cls: cls("x").exit_code for cls in codes} == codes
    assert set(codes.values()) <= set(EXIT_CODES)
    assert all(issubclass(cls, CharrnnError) for cls in codes)


def test_details_become_attributes_with_declared_defaults():
    e = VocabError("2 characters unknown", unknown=("\t", "é"))
    assert str(e) == "2 characters unknown" and e.unknown == ("\t", "é")
    assert VocabError("m").unknown == ()
    assert LockedError("locked", pid=42).pid == 42
    assert LockedError("locked").pid is None


def test_an_undeclared_detail_is_refused():
    with pytest.raises(TypeError, match="LockedError has no detail 'pdi'"):
        LockedError("locked", pdi=42)
    with pytest.raises(TypeError):
        CorpusError("empty", unknown=("x",))


def test_the_readme_exit_code_table_is_the_contract():
    # code 4 was missing from the README while every --help listed it
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert {int(code): text.strip() for code, text in rows} == EXIT_CODES
