"""The README's quick start runs the tests the way CI does (scripts/readme.py checks the same)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_readme_script():
    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_start_runs_the_tests_as_ci_does():
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    load_readme_script().check_quick_start(readme)


def test_a_quick_start_out_of_step_with_ci_is_caught():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    drifted = readme.replace("pip install -q -e '.[test]'", "pip install -e '.[test]'")
    assert drifted != readme
    with pytest.raises(SystemExit, match="quick start"):
        load_readme_script().check_quick_start(drifted.splitlines())


def test_console_blocks_are_parsed_with_setup_and_continuations():
    script = load_readme_script()
    lines = [
        "text",
        "<!-- setup: touch x -->",
        "```console",
        "$ charrnn train \\",
        "    --steps 20",
        "old output",
        "$ charrnn runs",
        "```",
    ]
    (block,) = script.parse("README.md", lines)
    assert block.setup == ["touch x"]
    assert block.commands == ["charrnn train \\\n    --steps 20", "charrnn runs"]
    block.output = ["new output\n", ""]
    out = script.rewrite(lines, [block])
    assert out[3:8] == [
        "$ charrnn train \\",
        "    --steps 20",
        "new output",
        "$ charrnn runs",
        "```",
    ]
    assert out[8].startswith(script.NOTE_PREFIX)


def test_a_python_block_and_its_text_block_are_a_program_and_its_output():
    script = load_readme_script()
    lines = ["```python", "print(1 + 1)", "```", "", "```text", "3", "```"]
    (block,) = script.parse("docs/api.md", lines)
    assert block.python and (block.start, block.end) == (4, 6)
    assert block.commands == ["python3 - <<'CHARRNN_README_PY'\nprint(1 + 1)\nCHARRNN_README_PY"]
    block.output = ["2\n"]
    out = script.rewrite(lines, [block])
    assert out[:7] == ["```python", "print(1 + 1)", "```", "", "```text", "2", "```"]
