"""The wheel a user installs: its own distribution name, the bundled corpora inside it."""

from __future__ import annotations

import re
import shutil
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


def _make_wheel_command(python: str) -> str:
    r = subprocess.run(
        ["make", "-n", "-s", "wheel", f"PY={python}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("setuptools", [None, "65.5.0"])
def test_make_wheel_builds_in_isolation_when_setuptools_is_missing_or_too_old(tmp_path, setuptools):
    # a fresh venv has only Python and pip: 3.12 has no setuptools, 3.11 has 65.5 (no
    # bdist_wheel, and pyproject needs 68): `make wheel` must let pip fetch its own
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path)], check=True)
    python = tmp_path / "bin" / "python"
    if setuptools:
        (site,) = tmp_path.glob("lib/python*/site-packages")
        info = site / f"setuptools-{setuptools}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: setuptools\nVersion: {setuptools}\n"
        )
        out = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('setuptools'))"],
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == setuptools  # the venv really reports the old one
    command = _make_wheel_command(str(python))
    assert "pip wheel" in command and "--no-build-isolation" not in command


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_wheel_uses_a_recent_installed_setuptools_offline():
    from importlib.metadata import version

    major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    assert (major, minor) >= (70, 1)  # the test extra brings it
    assert "--no-build-isolation" in _make_wheel_command(sys.executable)
