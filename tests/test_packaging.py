"""The wheel a user installs: its own distribution name, the bundled corpora inside it."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        cwd=build,
    )
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_ships_the_bundled_corpora_inside_the_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "charrnn/data/dinos.txt" in names and "charrnn/data/tinyshakespeare.txt" in names
    assert not any(n.startswith(("tests/", "bench/", "checkpoints/")) for n in names)


def test_the_distribution_name_is_not_the_taken_charrnn(wheel):
    # "charrnn" on PyPI is someone else's 0.1.1 from 2017
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "\nName: charrnn-numpy\n" in text
    assert "Requires-Python: >=3.10" in text
    entry = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("entry_points.txt"))
    assert "charrnn = charrnn.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_ci_tools_come_from_the_test_extra(wheel):
    # a fresh machine gets its tools only from `pip install -e '.[test]'`: every
    # `python3 -m TOOL` that .ci/run calls must be installed by that extra
    ci = (ROOT / ".ci" / "run").read_text()
    tools = set(re.findall(r"python3 -m (\w+)", ci)) - {"pip", "venv"}
    assert {"ruff", "pytest"} <= tools
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    extra = {
        re.match(r"[\w-]+", line.split(":", 1)[1].strip()).group(0)
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and 'extra == "test"' in line
    }
    assert tools <= extra, tools - extra
