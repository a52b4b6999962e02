"""TrainRequest: what ``charrnn train`` is asked to do, as plain values.

    from charrnn.request import TrainRequest
    from charrnn.session import run_training
    result = run_training(TrainRequest(corpus=("data/dinos.txt",), steps=200))

Its fields and the defaults they document are the train command's options (their
help is written here, beside the field). This module holds no training: the command
line imports it to build its options, and ``charrnn sample`` or ``--help`` never
load the session (charrnn.session) that carries the request out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import InputMissingError
from charrnn.model import ModelConfig
from charrnn.optim import OptimConfig
from charrnn.reading import CorpusOptions
from charrnn.store import is_run_name, run_name_from
from charrnn.trainer import Every, TrainConfig

REPO_DATA = Path(__file__).resolve().parent.parent / "data"  # data/ in a source checkout
DEFAULT_STEPS = 1000  # when neither steps, epochs nor a time budget is given
# names mode, where the user set nothing (README "Names mode" shows the measurements):
# early stopping usually ends the run first
NAMES_STEPS = 5000  # the step target
NAMES_LR = 5e-3  # Adam's learning rate: per-name batches are short, small and many
UNBOUNDED = 2**62  # "no step target": the time budget or a signal ends the run

# OptimConfig's fields as the user names them (its ``name`` is the --optimizer option)
OPTIM_OPTION = {"name": "optimizer"}


def _no_model() -> ModelConfig:
    return ModelConfig(vocab_size=1)  # the real vocab_size comes from the corpus


@dataclass(frozen=True)
class TrainRequest:
    """What to train and how; the plain-value form of ``charrnn train``'s options."""

    corpus: tuple[str, ...] = ()  # files or "-" (stdin), read in order; () = bundled dinos
    run: str | None = field(
        default=None, metadata={"help": "Run name in the store. [default: the corpus file's name]"}
    )
    store: Path | None = None  # checkpoint store; None = $CHARRNN_STORE or ./checkpoints
    model: ModelConfig = field(default_factory=_no_model)  # vocab_size: set from the corpus
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reading: CorpusOptions = field(default_factory=CorpusOptions)
    steps: int | None = field(
        default=None,
        metadata={
            "help": "Total steps for the run (re-running after a kill finishes the same job). "
            f"[default: {DEFAULT_STEPS}, names mode {NAMES_STEPS} (usually ended by --patience), "
            "unless --epochs or --time is given]"
        },
    )
    epochs: float | None = field(
        default=None, metadata={"help": "Total epochs for the run, instead of --steps."}
    )
    time_budget: float | None = field(  # seconds for this invocation
        default=None,
        metadata={
            "help": "Time budget for this invocation (90s, 10m, 1h); saves and exits 0 when spent."
        },
    )
    keep: int = field(
        default=3,
        metadata={
            "help": "Checkpoints kept per run (plus the best by validation loss; one more "
            "while the newest is not yet confirmed sane by a later step)."
        },
    )
    fresh: bool = field(
        default=False, metadata={"help": "Start the run over instead of resuming it."}
    )
    allow_changed_corpus: bool = field(
        default=False,
        metadata={"help": "Resume even though the corpus changed since the last checkpoint."},
    )
    wait: float | bool = field(
        default=False,
        metadata={
            "help": "Wait for a run locked by another process (one line names its pid): "
            "as long as it takes, or at most DURATION (90s, 10m), then exit 75."
        },
    )
    save_every: Every | None = field(
        default=None,
        metadata={
            "help": "Also checkpoint every N steps or on a clock (10m, 1h), apart from "
            "validation; --keep and the best checkpoint work as ever. [default: only at "
            "validation]"
        },
    )
    sample_every: int = field(
        default=500,
        metadata={"help": "On a terminal, show a few samples every this many steps (0: never)."},
    )
    explicit: frozenset[str] = frozenset()  # option names the user set (not defaults)

    def __post_init__(self) -> None:
        if self.corpus.count("-") > 1:
            raise ValueError("stdin ('-') can be read only once")
        if self.run is not None and not is_run_name(self.run):
            raise ValueError(
                f"run {self.run!r}: use letters, digits, '.', '_' and '-' (not starting with '.')"
            )
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both: each sets how long training lasts")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, not {self.steps}")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ValueError(f"epochs must be a positive number, not {self.epochs}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be positive, not {self.time_budget}")
        if self.keep < 1:
            raise ValueError(f"keep must be at least 1, not {self.keep}")
        if self.sample_every < 0:
            raise ValueError(f"sample_every must be 0 or more, not {self.sample_every}")

    @property
    def paths(self) -> list[str]:
        """The corpus files to read: the given ones, or the bundled dinosaur names."""
        return list(self.corpus) or [bundled_corpus()]

    @property
    def run_name(self) -> str:
        """--run, else the first file's name ('stdin' for -)."""
        if self.run is not None:
            return self.run
        first = self.paths[0]
        return "stdin" if first == "-" else run_name_from(Path(first).stem)

    @property
    def corpus_options(self) -> CorpusOptions:
        """How to read the corpus; the bundled names are lowercased unless told otherwise
        (the assignment's 27-character model)."""
        if not self.corpus and "lowercase" not in self.explicit:
            return dataclasses.replace(self.reading, lowercase=True)
        return self.reading

    def target_steps(self, n_batches: int, names: bool = False) -> int:
        """The run's total steps: --steps, else --epochs, else the time budget decides."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, round(self.epochs * n_batches))
        if self.time_budget is not None:
            return UNBOUNDED
        return NAMES_STEPS if names else DEFAULT_STEPS


def bundled_corpus(name: str = "dinos.txt") -> str:
    """A corpus shipped with charrnn: inside the installed package (charrnn/data in the
    wheel), or the repository's data/ when running from a source checkout."""
    from importlib import resources  # only training without a CORPUS needs it

    try:
        path = Path(str(resources.files("charrnn.data") / name))
    except ModuleNotFoundError:  # a source checkout: data/ sits beside the package
        path = REPO_DATA / name
    if not path.is_file():
        raise InputMissingError(
            f"the bundled {name} is missing from this installation (reinstall charrnn, "
            "or pass a text file: charrnn train CORPUS)"
        )
    return str(path)
