"""Cold start: each command imports what it uses, nothing more (names, never timings).

`charrnn sample -n 1` has a start-up budget (bench/bench.py's "Cold start"). The command
line builds the train command's options from light modules (charrnn.request) and imports
the training session, autoconfig, rich and tqdm only inside the commands that use them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the modules only `charrnn train` (session, autoconfig), drawing (rich, tqdm) or the
# benchmark (torch) load
TRAINING = {"charrnn.session", "charrnn.autoconfig"}
DRAWING = {"rich", "tqdm"}
NEVER = TRAINING | DRAWING | {"torch"}
# sampling and --help also go without the corpus reader (CorpusOptions is in
# charrnn.reading) and numpy.ma, which numpy 2 imports for np.unique (about 20 ms)
NEVER_SAMPLING = NEVER | {"charrnn.corpus", "numpy.ma"}

RUN = """
import sys
out = sys.argv.pop(1)
try:
    {code}
finally:
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
"""


def loaded(tmp_path: Path, code: str, *args: str) -> set[str]:
    """The modules (top-level packages and their submodules) in sys.modules after
    ``code`` ran in a fresh interpreter; ``args`` are its sys.argv[1:]."""
    out = tmp_path / "modules.txt"
    p = subprocess.run(
        [sys.executable, "-c", RUN.format(code=code), str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.exists(), p.stderr
    names = set(out.read_text().split("\n"))
    assert "click" in names, p.stderr  # the check sees real imports
    return names | {n.split(".")[0] for n in names}


def main_code() -> str:
    return "from charrnn.cli import main; main(sys.argv[1:])"


def test_importing_the_command_line_loads_no_training_or_drawing(tmp_path):
    names = loaded(tmp_path, "import charrnn.cli")
    assert "charrnn.cli" in names and "charrnn.request" in names
    assert not names & NEVER_SAMPLING, sorted(names & NEVER_SAMPLING)


def test_the_check_sees_a_module_the_command_line_would_pull_in(tmp_path):
    # the same check fails when the session comes back at import time
    names = loaded(tmp_path, "import charrnn.cli, charrnn.session")
    assert names >= TRAINING | {"charrnn.corpus"}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["sample", "--help"],
        ["sample", "dinos", "-n", "3", "--seed", "1"],
        ["sample", "prose", "--length", "20", "--seed", "1", "--prime", "th"],
        ["score", str(ROOT / "data" / "dinos.txt"), "--model", "dinos", "--per-line"],
        ["clip-stats", "dinos", "--json"],
        ["runs"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_commands_load_no_training_or_drawing(tmp_path, trained_store, args):
    names = loaded(tmp_path, main_code(), *args, *_store(args, trained_store))
    never = NEVER_SAMPLING if args[0] == "sample" or "--help" in args else NEVER
    assert not names & never, sorted(names & never)


def test_clip_stats_report_draws_without_the_session(tmp_path, trained_store):
    names = loaded(tmp_path, main_code(), "clip-stats", "dinos", "--store", str(trained_store))
    assert "rich" in names  # its report is a rich table
    assert not names & TRAINING, sorted(names & TRAINING)


def test_train_loads_the_session(tmp_path):
    store = tmp_path / "store"
    names = loaded(tmp_path, main_code(), "train", "--steps", "1", "-q", "--store", str(store))
    assert names >= TRAINING  # the check can fail: train does use them


def _store(args: list[str], store: Path) -> list[str]:
    return [] if "--help" in args else ["--store", str(store)]
