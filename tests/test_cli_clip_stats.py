"""`charrnn clip-stats` read through a pipe: the width it is given, words that fit NO_COLOR."""

from __future__ import annotations

import re
from pathlib import Path


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_piped_report_fits_80_columns_or_columns(invoke, trained_store):
    r = invoke(["clip-stats", "dinos", "--store", str(trained_store)], env={"COLUMNS": ""})
    assert r.exit_code == 0, r.stderr
    assert widest(r.stdout) <= 80
    r = invoke(["clip-stats", "dinos", "--store", str(trained_store)], env={"COLUMNS": "120"})
    assert 80 < widest(r.stdout) <= 120


def test_no_color_legend_does_not_point_at_colours(invoke, tmp_path):
    small = ["--hidden", "8", "--batch-size", "8", "--seq-len", "16", "-q"]
    dinos = str(Path(__file__).resolve().parent.parent / "data" / "dinos.txt")
    train = ["train", dinos, "--store", str(tmp_path), "--steps", "10", "--clip-norm", "0.01"]
    assert invoke([*train, *small]).exit_code == 0  # every step clipped: columns above it
    r = invoke(["clip-stats", "dinos", "--store", str(tmp_path)], env={"NO_COLOR": "1"})
    assert r.exit_code == 0 and "\x1b[" not in r.stdout
    assert "┈ --clip-norm 0.01" in r.stdout  # the threshold row is drawn, with its legend
    assert not re.search(r"\bred\b", r.stdout), r.stdout
