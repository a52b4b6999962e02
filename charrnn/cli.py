"""The charrnn command line: parse options, call the library, map errors to exit codes.

stdout carries only the product (samples, scores, reports, JSON); progress,
logs and warnings go to stderr. This is the only module that knows about the
terminal and the process exit status.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from charrnn import __version__
from charrnn.console import plural
from charrnn.errors import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_IO,
    EXIT_SIGINT,
    CharrnnError,
    CorpusError,
    TooFewSamplesError,
)
from charrnn.history import finite_or_none
from charrnn.model import ACTIVATIONS, ModelConfig
from charrnn.model import CELLS as CELLS  # the cell registry's names (cells.py once it lands)
from charrnn.optim import OPTIMIZERS, OptimConfig
from charrnn.reading import NEWLINES, CorpusOptions
from charrnn.request import NAMES_LR, OPTIM_OPTION, TrainRequest
from charrnn.sampler import SampleOptions
from charrnn.store import Store, default_root
from charrnn.trainer import MODES, Every, TrainConfig, parse_duration

F = TypeVar("F", bound=Callable[..., Any])


ENV_HELP = (
    "Every option can also be set in the environment as CHARRNN_<COMMAND>_<OPTION> "
    "(e.g. CHARRNN_TRAIN_STEPS=500); the store is CHARRNN_STORE for every command."
)


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())
    return f"{ENV_HELP}\n\n\b\nExit codes:\n{codes}"


# --------------------------------------------------------------------------- shared options


def store_option(f):
    return click.option(
        "--store",
        "store_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CHARRNN_STORE",
        show_envvar=True,
        default=None,
        help="Checkpoint store directory. [default: ./checkpoints]",
    )(f)


def json_option(f):
    return click.option(
        "--json", "json", is_flag=True, help="Write one JSON document (or JSON lines) to stdout."
    )(f)


def quiet_option(f):
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="No progress or log lines on stderr (warnings and errors still show).",
    )(f)


class Whole(click.IntRange):
    """A whole number of at least ``min``, refused in plain words: "'abc' is not a valid
    integer.", "must be at least 1, not 0" (click.IntRange says "not a valid integer
    range", "0 is not in the range x>=1")."""

    name = "integer"

    def __init__(self, min: int = 0) -> None:
        super().__init__(min)  # --help shows the range: [x>=1]

    def convert(self, value, param, ctx):
        x = click.types.IntParamType.convert(self, value, param, ctx)
        if x < self.min:  # click would say "0 is not in the range x>=1."
            self.fail(f"must be at least {self.min}, not {x}", param, ctx)
        return x


def seed_option(default: int | None, help: str):
    return click.option(
        "--seed",
        type=Whole(0),  # numpy seeds are non-negative
        metavar="N",
        default=default,
        show_default=default is not None,
        help=help,
    )


def count_option(
    *decls: str, default: int | None, help: str, least: int = 1, **kw: Any
) -> Callable[[F], F]:
    """An option taking a whole number N of at least ``least`` (a count or a length);
    its default is shown in --help unless it is None (the help then says what it is)."""
    return click.option(
        *decls,
        type=Whole(least),
        metavar="N",
        default=default,
        show_default=default is not None,
        help=help,
        **kw,
    )


def open_store(path: Path | None) -> Store:
    from charrnn.schema import check

    return Store(path if path is not None else default_root(), schema=check)


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, allow_nan=False))


# --------------------------------------------------------------------------- option types


class Duration(click.ParamType):
    """A time budget: 90, 90s, 10m, 1h30m, 1.5h."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Cadence(click.ParamType):
    """How often: N steps (a bare number) or a duration on the clock (90s, 10m, 1h)."""

    name = "cadence"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, Every):
            return value
        try:
            return Every(steps=value) if isinstance(value, int) else Every.parse(value)
        except ValueError as e:
            self.fail(
                f"{value!r}: {e} (a number of steps, or a duration: 90s, 10m, 1h)", param, ctx
            )


class WaitFor(click.ParamType):
    """--wait alone: as long as it takes (True); --wait DURATION: that many seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, (bool, float)):
            return value
        text = str(value).strip().lower()
        if text in ("forever", "true", "yes", "on"):
            return True
        if text in ("false", "no", "off", "0", ""):
            return False
        try:
            return parse_duration(text)
        except ValueError:
            hint = ""
            if value == "-" or Path(value).exists():  # a CORPUS taken for the duration
                hint = "; put --wait after CORPUS, or write --wait=DURATION"
            self.fail(f"{value!r} is not a duration (examples: 90s, 10m){hint}", param, ctx)


class Encoding(click.ParamType):
    """A text encoding Python knows (the corpus reader's rule: utf-8, latin-1, cp1252...)."""

    name = "encoding"

    def convert(self, value, param, ctx):
        if value == CorpusOptions().encoding:
            return value
        from charrnn.corpus import lookup_codec  # train reads the corpus anyway

        try:
            lookup_codec(value)
        except CorpusError as e:
            self.fail(f"{e}; e.g. utf-8, latin-1, cp1252, utf-16", param, ctx)
        return value


class FiniteFloat(click.ParamType):
    """A float that rejects nan and inf (click's FLOAT accepts them)."""

    name = "float"

    def __init__(self, min: float | None = None, min_open: bool = False) -> None:
        self.min, self.min_open = min, min_open

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None and (x < self.min or (self.min_open and x == self.min)):
            op = ">" if self.min_open else ">="
            self.fail(f"{value} must be {op} {self.min}", param, ctx)
        return x


class OptionalFloat(click.ParamType):
    """A positive number, or none/off/0 for "not at all" (clipping thresholds: a threshold
    of 0 would zero every gradient, so 0 means off, as in PyTorch Lightning and Hugging
    Face's trainers); a negative number is refused."""

    name = "float"
    OFF = " 0 means off too."  # said in --help

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        text = str(value).strip().lower()
        if text in ("none", "off"):
            return None
        try:
            x = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number (or 'none')", param, ctx)
        if x == 0:
            return None
        if not (x > 0 and math.isfinite(x)):
            self.fail(
                f"{value} is not a positive finite number (none or 0: no clipping)", param, ctx
            )
        return x


MODEL_HELP = (
    "RUN (its best checkpoint if it has one, else its latest), RUN:best, RUN:latest, "
    "RUN:STEP or a checkpoint file. "
    "[default: the run trained most recently]"
)


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion for RUN: the store's run names, then RUN:best, RUN:latest, RUN:STEP."""
    from click.shell_completion import CompletionItem

    try:
        store = open_store(ctx.params.get("store_dir"))
        if ":" in incomplete:
            run = incomplete.partition(":")[0]
            steps = [str(store.step_of(p)) for p in store.checkpoints(run)]
            names = [f"{run}:{x}" for x in ("best", "latest", *steps)]
        else:
            names = [r.name for r in store.runs()]
    except (CharrnnError, OSError):
        return []
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


# --------------------------------------------------------------------------- the group


@click.group(
    context_settings={"auto_envvar_prefix": "CHARRNN", "help_option_names": ["-h", "--help"]},
    epilog=_epilog(),
)
@click.version_option(__version__, prog_name="charrnn")
def cli() -> None:
    """Character-level RNN, GRU and LSTM language models in NumPy.

    \b
    charrnn train data/dinos.txt        learn a model of a text file
    charrnn sample -n 10                new names from the latest run's best model
    charrnn score names.txt --per-line  how likely each line is
    charrnn clip-stats                  what gradient clipping did
    """


# --------------------------------------------------------------------------- options from configs

INT = {"type": int, "metavar": "N"}
NUMBER = {"type": FiniteFloat(), "metavar": "X"}
CLIP = {"type": OptionalFloat(), "metavar": "X|none", "extra_help": OptionalFloat.OFF}
SEED = {"type": Whole(0), "metavar": "N"}  # numpy seeds are non-negative
POSITIVE = {"type": Whole(1), "metavar": "N"}  # refused by click, naming the option
# a field's option type, from its annotation, unless the option says otherwise
BY_ANNOTATION = {"int": INT, "int | None": INT, "float": NUMBER, "float | None": NUMBER}


def choice(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    return {"type": click.Choice(values)}


def field_option(
    cls: type,
    name: str,
    *decls: str,
    param: str | None = None,
    extra_help: str = "",
    **kw: Any,
) -> Callable[[F], F]:
    """A click option for the dataclass field ``cls.name``: its default and help come from
    the field (the help from ``metadata["help"]``), so they are written down only once;
    a number's type and metavar follow the field's annotation (BY_ANNOTATION)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if "type" not in kw:
        kw = {**BY_ANNOTATION.get(str(f.type), {}), **kw}
    default: Any = f.default
    if default is dataclasses.MISSING:
        default = cast(Callable[[], Any], f.default_factory)()
    param = param or name
    flag = "--" + param.replace("_", "-")
    help = f.metadata["help"] + extra_help
    # a help that states its default itself ("[default: 250; names mode: 100]") gets no second
    kw.setdefault("show_default", default not in (None, False) and "[default:" not in help)
    if isinstance(default, bool) and "type" not in kw and not decls:
        kw.setdefault("is_flag", True)
    return click.option(
        *(decls or (flag,)),
        param,
        default=default,
        help=help,
        **kw,
    )


def config_options(
    cls: type,
    dest: str,
    names: str,
    specs: dict[str, dict[str, Any]] | None = None,
    *,
    rename: dict[str, str] | None = None,
    fixed: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """An option group: one option per field in ``names`` (space-separated, in --help's
    order; ``specs`` adds click options to some), handed to the command as one ``cls``
    instance named ``dest``. The dataclass's own checks are the only checks; their
    ValueError becomes a usage error naming the flags."""
    specs = {name: (specs or {}).get(name, {}) for name in names.split()}
    params = {name: (rename or {}).get(name, name) for name in specs}
    flags = {name: "--" + p.replace("_", "-") for name, p in params.items()}
    options = [
        field_option(cls, name, *kw.get("decls", ()), param=params[name], **_without(kw, "decls"))
        for name, kw in specs.items()
    ]

    def decorate(command: F) -> F:
        # a generic wrapper: click calls it with every option; this group's become one object
        @functools.wraps(command)
        def with_config(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(p) for name, p in params.items()}
            try:
                kwargs[dest] = cls(**(fixed or {}), **values)
            except ValueError as e:
                raise usage_error(e, flags) from None
            return command(*args, **kwargs)

        wrapped: Any = with_config
        for option in reversed(options):
            wrapped = option(wrapped)
        return cast(F, wrapped)

    return decorate


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def usage_error(e: ValueError, flags: dict[str, str]) -> click.UsageError:
    """A dataclass's ValueError as a usage error naming the options it mentions."""
    msg = str(e)
    named = [
        flag
        for name, flag in flags.items()
        if re.search(rf"\b({name}|{name.replace('_', '-')})\b", msg)
    ]
    if named:
        return click.BadParameter(msg, param_hint=named)
    return click.UsageError(msg)


model_options = config_options(
    ModelConfig,
    "model",
    "cell layers hidden embedding dropout peephole activation forget_bias",
    {
        "cell": choice(CELLS),
        "activation": choice(ACTIVATIONS),
        "layers": POSITIVE,
        "hidden": POSITIVE,
        "embedding": {"type": Whole(0), "metavar": "N"},
    },
    fixed={"vocab_size": 1},  # the session takes the vocabulary size from the corpus
)
data_options = config_options(
    TrainConfig,
    "data",
    "mode batch_size seq_len val_fraction eval_max_batches patience split_seed max_line seed",
    {
        "mode": choice(MODES),
        "split_seed": SEED,
        "seed": SEED,
        "batch_size": POSITIVE,
        "seq_len": POSITIVE,
    },
)
optim_options = config_options(
    OptimConfig,
    "optim",
    "name lr lr_decay lr_decay_every clip_norm clip_value",
    {
        "name": choice(OPTIMIZERS),
        "lr": {"extra_help": f" Names mode: {NAMES_LR:g} unless set."},
        "clip_norm": CLIP,
        "clip_value": CLIP,
    },
    rename=OPTIM_OPTION,
)
reading_options = config_options(
    CorpusOptions,
    "reading",
    "encoding lowercase newline",
    {
        "lowercase": {
            "decls": ("--lowercase/--keep-case",),
            "show_default": False,
            "extra_help": " [default: lowercase for the bundled dinosaur names when no CORPUS "
            "is given, else keep case]",
        },
        "newline": choice(NEWLINES),
        "encoding": {"type": Encoding(), "metavar": "NAME"},
    },
)
sample_options = config_options(
    SampleOptions,
    "opts",
    "temperature top_k top_p",
    {
        "temperature": {"decls": ("-t", "--temperature")},
        "top_k": {"metavar": "K"},
        "top_p": {"metavar": "P"},
    },
)


def request_option(name: str, *decls: str, **kw: Any) -> Callable[[F], F]:
    """An option for a TrainRequest field (default and help from the field)."""
    return field_option(TrainRequest, name, *decls, **kw)


# TrainRequest fields as flags, for its usage errors
REQUEST_FLAGS = {
    "run": "--run",
    "steps": "--steps",
    "epochs": "--epochs",
    "time_budget": "--time",
    "keep": "--keep",
    "sample_every": "--sample-every",
}


def explicit_options(ctx: click.Context) -> frozenset[str]:
    """The options the user set (command line or environment), not left at their default."""
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(name for name in ctx.params if ctx.get_parameter_source(name) in given)


# --------------------------------------------------------------------------- train


@cli.command(epilog=_epilog())
@click.argument("corpus", nargs=-1, type=str)
@request_option(
    "run", type=str, metavar="NAME", envvar="CHARRNN_TRAIN_RUN", shell_complete=complete_model
)
@store_option
@model_options
@data_options
@optim_options
@request_option("steps")
@request_option("epochs")
@request_option("time_budget", "--time", type=Duration(), envvar="CHARRNN_TRAIN_TIME")
@field_option(
    TrainConfig,
    "eval_every",
    type=Cadence(),
    metavar="N|DURATION",
    extra_help=" A duration (10m, 1h) validates on the clock instead.",
)
@request_option("save_every", type=Cadence(), metavar="N|DURATION")
@request_option("keep")
@reading_options
@request_option("fresh")
@request_option("allow_changed_corpus")
@request_option("wait", type=WaitFor(), is_flag=False, flag_value="forever", metavar="[DURATION]")
@request_option("sample_every")
@json_option
@quiet_option
@click.pass_context
def train(
    ctx: click.Context,
    corpus: tuple[str, ...],
    run: str | None,
    store_dir: Path | None,
    model: ModelConfig,
    data: TrainConfig,
    optim: OptimConfig,
    steps: int | None,
    epochs: float | None,
    time_budget: float | None,
    eval_every: Every,
    save_every: Every | None,
    keep: int,
    reading: CorpusOptions,
    fresh: bool,
    allow_changed_corpus: bool,
    wait: float | bool,
    sample_every: int,
    json: bool,
    quiet: bool,
) -> None:
    """Learn a character model of CORPUS (files or -, read in order).

    With no CORPUS, trains on the bundled list of dinosaur names, lowercased
    (--keep-case keeps capitals). The run is named after the first file
    (--run to choose). Running the same command again resumes the run from its
    latest checkpoint; --steps and --epochs are totals for the run, so a killed
    cron job simply finishes. Ctrl-C or SIGTERM saves a checkpoint first, then
    exits 130 / 143.

    \b
    Examples:
      charrnn train                              the bundled dinosaur names
      charrnn train names.txt --steps 2000       your own list, one name a line
      charrnn train play.txt --cell gru --layers 2 --hidden 256 --time 10m
      charrnn train names.txt --steps 4000       (again) go on to step 4000
    """
    from charrnn.console import Log
    from charrnn.session import run_training

    data = dataclasses.replace(  # validation on a step count or on the clock
        data,
        eval_every=eval_every.steps or data.eval_every,
        eval_seconds=eval_every.seconds,
    )
    try:
        request = TrainRequest(
            corpus=corpus,
            run=run,
            store=store_dir,
            model=model,
            optim=optim,
            train=data,
            reading=reading,
            steps=steps,
            epochs=epochs,
            time_budget=time_budget,
            keep=keep,
            fresh=fresh,
            allow_changed_corpus=allow_changed_corpus,
            wait=wait,
            save_every=save_every,
            sample_every=sample_every,
            explicit=explicit_options(ctx),
        )
    except ValueError as e:
        raise usage_error(e, REQUEST_FLAGS) from None
    result = run_training(request, Log(quiet))
    if json:
        _emit_json(result.summary())
    if result.return_code:
        ctx.exit(result.return_code)


# --------------------------------------------------------------------------- loading a model


def which_checkpoint(f):
    """--best / --latest: which checkpoint of a run (default: its best, if it has one),
    handed to the command as ``which`` ("best", "latest" or None). Both on the command
    line is a usage error; one set in the environment yields to the other given on it."""

    @functools.wraps(f)
    def with_which(*args: Any, best: bool, latest: bool, **kwargs: Any) -> Any:
        if best and latest:
            source = click.get_current_context().get_parameter_source
            typed = {n for n in ("best", "latest") if source(n) == ParameterSource.COMMANDLINE}
            if len(typed) != 1:  # both typed, or both set in the environment
                raise click.UsageError(
                    f"{_given_as('best', '--best')} and {_given_as('latest', '--latest')} "
                    f"exclude each other: {'unset' if not typed else 'give'} one"
                )
            best, latest = "best" in typed, "latest" in typed
        kwargs["which"] = "best" if best else "latest" if latest else None
        return f(*args, **kwargs)

    wrapped: Any = click.option(
        "--latest",
        is_flag=True,
        help="Use the run's latest checkpoint, not its best by validation loss.",
    )(with_which)
    return click.option(
        "--best",
        is_flag=True,
        help="Use the run's best checkpoint by validation loss (the default when it has one); "
        "fail if it has none.",
    )(wrapped)


def _load_for_inference(
    store_dir: Path | None,
    spec: str | None,
    which: str | None,
    log,
    default: str = "best",
    announce: bool = False,
    allow_diverged: bool = False,
):
    """(checkpoint, model, vocab) from a run name, a path, or the latest run.

    A run (named, or the latest) gives its best checkpoint when it has one (a run with
    validation), else its latest; ``which`` ("best" / "latest", from --best / --latest)
    forces one, ``default="latest"`` makes the latest the default. The choice of a best
    checkpoint is said once on stderr, and with ``announce`` the run "the latest" is, where
    the output itself would not say which run it is. A file or RUN:STEP is used as given;
    RUN:diverged (broken weights, a record) only with ``allow_diverged`` (clip-stats).
    """
    from charrnn.model import CharRNN, ModelConfig, Params, param_shapes
    from charrnn.store import validate_arrays
    from charrnn.tokenizer import Vocab

    store = open_store(store_dir)
    checkpoint = _pick_checkpoint(store, spec, which, log, default, announce, allow_diverged)
    meta = checkpoint.meta
    try:
        cfg = ModelConfig.from_json(meta["model"])
        vocab = Vocab.from_json(meta["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        from charrnn.errors import CheckpointError

        raise CheckpointError(
            f"{checkpoint.path}: checkpoint metadata is malformed ({e})"
        ) from None
    expected = {f"param.{k}": (v, cfg.dtype) for k, v in param_shapes(cfg).items()}
    validate_arrays(checkpoint.path, checkpoint.arrays, expected)  # one-line errors naming the file
    params = Params.from_arrays(cfg, checkpoint.arrays)
    if vocab.size != cfg.vocab_size:
        from charrnn.errors import CheckpointError

        raise CheckpointError(
            f"{checkpoint.path}: vocabulary has {vocab.size} characters, "
            f"model expects {cfg.vocab_size}"
        )
    return checkpoint, CharRNN(cfg, params), vocab


def _pick_checkpoint(
    store: Store,
    spec: str | None,
    which: str | None,
    log,
    default: str = "best",
    announce: bool = False,
    allow_diverged: bool = False,
):
    """The checkpoint a command uses: see :func:`_load_for_inference`."""
    as_given = spec is not None and (
        ":" in spec or Path(spec).expanduser().is_file() or spec.endswith(".npz") or "/" in spec
    )
    if as_given:
        if which is not None:
            raise click.UsageError(
                f"{_given_as(which, '--' + which)} takes a run name, not {spec!r}"
            )
        return store.resolve(spec, on_warning=log.warn, allow_diverged=allow_diverged)
    run = spec if spec is not None else store.latest_run()
    if run is None:
        return store.resolve(None, on_warning=log.warn)  # says there are no runs
    who = f"using run '{run}'" + (", the most recently trained" if spec is None else "")
    if which == "best":
        return store.resolve(f"{run}:best", on_warning=log.warn)
    info = next((r for r in store.runs() if r.name == run), None)
    if (which or default) == "latest" or info is None or not info.has_best:
        if spec is None and announce:  # no silent switch: say which run "the latest" is
            log.info(f"{who} (name one: RUN)")
        return store.resolve(run, on_warning=log.warn)
    try:
        best = store.resolve(f"{run}:best", on_warning=log.warn)
    except CharrnnError as e:
        log.warn(f"{e}; using the latest checkpoint")
        return store.resolve(run, on_warning=log.warn)
    val = best.meta.get("best_val")
    log.info(
        f"{who}: its best checkpoint, step {best.step}"
        + (f" (validation {val:.4f} nats/char)" if isinstance(val, float) else "")
        + (
            f"; --latest for step {info.latest_step}"
            if info.latest_step != best.step
            else ", also its latest"
        )
    )
    return best


# --------------------------------------------------------------------------- sample

PROSE_LENGTH = 500  # characters per prose sample
MAX_NAME_LENGTH = 100  # characters at most per name (a name that reaches it is cut)


@cli.command(epilog=_epilog())
@click.argument("spec", required=False, metavar="[RUN]", shell_complete=complete_model)
@store_option
@count_option(
    "-n",
    "--num",
    "n",
    default=None,
    envvar="CHARRNN_SAMPLE_NUM",
    help="Number of samples. [default: 10 names, or 1 text]",
)
@count_option(
    "--length",
    default=None,
    help=f"Prose mode: characters to generate per sample. [default: {PROSE_LENGTH}]",
)
@count_option(
    "--max-length",
    default=None,
    help=f"Names mode: cap on characters per name. [default: {MAX_NAME_LENGTH}]",
)
@sample_options
@click.option(
    "--prime",
    type=str,
    default="",
    help="Condition on this prefix; it is echoed at the start of every sample.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="auto",
    show_default=True,
    help="names: each sample ends at the newline; prose: --length characters. "
    "auto follows the training corpus.",
)
@click.option(
    "--novel",
    is_flag=True,
    help="Names mode: only names that are neither training nor validation lines.",
)
@click.option("--unique", is_flag=True, help="Names mode: no name twice in the output.")
@count_option(
    "--min-length",
    least=0,
    default=None,
    help="Names mode: only names of at least N characters (the prime included). "
    "[default: 1, so empty draws are drawn again; 0 if the corpus has blank lines]",
)
@which_checkpoint
@seed_option(
    None, "Seed: the same checkpoint, seed and options give the same text. [default: random]"
)
@json_option
@quiet_option
def sample(
    spec: str | None,
    store_dir: Path | None,
    n: int | None,
    length: int | None,
    max_length: int | None,
    opts: SampleOptions,
    prime: str,
    mode: str,
    novel: bool,
    unique: bool,
    min_length: int | None,
    which: str | None,
    seed: int | None,
    json: bool,
    quiet: bool,
) -> None:
    """Generate text from a trained model.

    RUN picks the model: a run name (its best checkpoint by validation loss if
    it has one, else its latest; --latest for the latest), RUN:best,
    RUN:latest, RUN:STEP (the checkpoint saved at that step, e.g. dinos:500) or
    a checkpoint file. Without RUN, the most recently trained run is used; the
    choice is named on stderr. Names (one per line) end at the newline: exactly
    -n of them, never empty (unless the corpus has blank lines); if --novel,
    --unique or --min-length let fewer through within 50n+1000 draws, those
    found are printed and the exit code is 4. Prose streams --length
    characters as they are generated. stdout carries only the samples.

    \b
    Examples:
      charrnn sample -n 20                       20 names from the latest run
      charrnn sample dinos -t 0.7 --unique       safer names, no repeats
      charrnn sample shakespeare --length 300 --prime "ROMEO:"
      charrnn sample dinos -n 1000 --novel > new-names.txt
    """
    import numpy as np

    from charrnn.console import Log
    from charrnn.errors import VocabError
    from charrnn.sampler import NameFilter, Sampler

    log = Log(quiet)
    checkpoint, model, vocab = _load_for_inference(store_dir, spec, which, log, announce=True)
    trained_on = checkpoint.meta.get("corpus", {})
    trained_as = checkpoint.meta.get("train", {}).get("mode")
    names = mode == "names" or (
        mode == "auto" and (trained_as == "names" or bool(trained_on.get("is_lines")))
    )
    if names and vocab.eos_id is None:
        raise CorpusError("names mode needs a newline in the vocabulary; use --mode prose")
    # the prime is read like the corpus was (e.g. lowercased for a --lowercase model)
    reading = CorpusOptions.from_json(trained_on.get("options", {}))
    typed, prime = prime, reading.normalize(prime)
    # fail early, before any output, naming the characters as they were typed
    unknown = [c for c in dict.fromkeys(typed) if vocab.unknown(reading.normalize(c))]
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:20])
        raise VocabError(
            f"--prime has {plural(len(unknown), 'character')} not in the model's vocabulary: "
            f"{shown}; use characters of the training text",
            unknown=tuple(unknown),
        )
    sampler = Sampler(model, vocab)
    rng = np.random.default_rng(seed)
    # an option of the other mode is refused, not ignored (given on the command line or
    # in the environment alike)
    if not names:
        given = [
            _given_as(name, "--" + name.replace("_", "-"))
            for name, on in (
                ("novel", novel),
                ("unique", unique),
                ("min_length", min_length is not None),
                ("max_length", max_length is not None),
            )
            if on
        ]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise click.UsageError(
                f"{_and(given)} {verb} to names mode only; prose mode writes --length characters"
            )
        _write_prose(sampler, n or 1, length or PROSE_LENGTH, opts, rng, prime, json)
        return
    if length is not None:
        raise click.UsageError(
            f"{_given_as('length', '--length')} applies to prose mode only; "
            "names end at the newline (--max-length caps them)"
        )
    max_length = max_length or MAX_NAME_LENGTH
    filt = NameFilter(
        min_length=min_length if min_length is not None else _default_min_length(checkpoint),
        novel=novel,
        unique=unique,
    )
    known = _known_lines(checkpoint)
    if novel and known is None:
        raise CorpusError(
            f"{checkpoint.path} holds no list of training lines; --novel needs a names corpus"
        )
    _write_names(sampler, n or 10, max_length, opts, rng, prime, filt, known, json, log)


def _and(flags: list[str]) -> str:
    """'--a', '--a and --b', '--a, --b and --c'."""
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"


def _write_prose(sampler, count: int, length: int, opts, rng, prime: str, json: bool) -> None:
    """``count`` texts of ``length`` characters; a single one streams as it is generated.
    JSON lines carry the fields of names mode: ``logprob`` (nats, of the generated
    characters after the prime) and ``finished`` (always true: prose ends at --length)."""
    out = sys.stdout
    if count == 1 and not json:
        out.write(prime)
        for chunk in sampler.stream(length, opts, rng, prime=prime, n=1):
            out.write(chunk[0])
            out.flush()
        out.write("\n")
        out.flush()
        return
    group = max(1, min(1024, (1 << 24) // length))  # bounded memory for any -n
    for start in range(0, count, group):
        k = min(group, count - start)
        parts: list[list[str]] = [[prime] for _ in range(k)]
        for chunk in sampler.stream(length, opts, rng, prime=prime, n=k):
            for part, c in zip(parts, chunk, strict=True):
                part.append(c)
        for part in parts:
            text = "".join(part)
            if json:
                doc = {"text": text, "n_chars": len(text) - len(prime)}
                doc["logprob"] = _generated_logprob(sampler, prime, text[len(prime) :])
                doc["finished"] = True
                _emit_json(doc)
            else:
                out.write(text + "\n\n")
        out.flush()


def _generated_logprob(sampler, prime: str, generated: str) -> float | None:
    """log P(generated | start of a line, prime) under the model, as names mode reports it;
    None when the vocabulary has no newline (the start is then not a character to score)."""
    from charrnn.scoring import score_text

    if sampler.vocab.eos_id is None:
        return None
    with_prime, _ = score_text(sampler.model, sampler.vocab, prime + generated)
    prime_only, _ = score_text(sampler.model, sampler.vocab, prime)
    return with_prime - prime_only


def _write_names(
    sampler, count: int, max_length: int, opts, rng, prime: str, filt, known, json: bool, log
) -> None:
    """Exactly ``count`` names that pass ``filt``, one per line (``--json``: with their
    origin); fewer, then TooFewSamplesError, if the draw budget runs out first."""
    from charrnn import memory
    from charrnn.sampler import draw_names

    out = sys.stdout
    group = max(1, min(4096, (1 << 24) // max_length))  # samples per batch: bounded memory
    memory.require(16 * max_length * min(group, count), f"--max-length {max_length}", "lower it")
    got = draw_names(
        sampler,
        count,
        max_length,
        opts,
        rng,
        prime=prime,
        filt=filt,
        known=known,
        logprob=json,
        group=group,
    )
    for s, origin in zip(got.samples, got.origins, strict=True):
        if json:
            _emit_json(
                {
                    "text": s.text,
                    "logprob": s.logprob,
                    "n_chars": s.n_chars,
                    "finished": s.finished,
                    "origin": origin,
                }
            )
        else:
            out.write(s.text + "\n")
    out.flush()
    dropped = {k: v for k, v in got.rejected.items() if v}
    if dropped and (filt.novel or filt.unique or filt.min_length > 1):
        why = ", ".join(f"{v} {_REJECTED[k]}" for k, v in dropped.items())
        log.info(f"drew {got.draws} names for {len(got.samples)}: dropped {why}")
    if not got.complete:
        raise TooFewSamplesError(
            f"only {len(got.samples)} of {count} names passed the filters in {got.draws} draws "
            "(printed); relax --novel/--unique/--min-length or raise --temperature"
        )


_REJECTED = {"short": "too short", "known": "train/val names", "repeat": "repeats"}


def _known_lines(checkpoint):
    """The corpus's lines and validation lines of a names checkpoint (None if it has none)."""
    import numpy as np

    from charrnn.sampler import KnownLines

    lines = checkpoint.arrays.get("corpus.line_hashes")
    if lines is None:
        return None
    val = checkpoint.arrays.get("corpus.val_hashes", np.zeros(0, dtype=np.int64))
    return KnownLines(lines, val)


def _default_min_length(checkpoint) -> int:
    """Names are non-empty unless the corpus itself has blank lines (then they are names too)."""
    return 0 if checkpoint.meta.get("corpus", {}).get("blank_lines") else 1


# --------------------------------------------------------------------------- score


@cli.command(epilog=_epilog())
@click.argument("file", type=str)
@click.option(
    "--model",
    "spec",
    type=str,
    default=None,
    metavar="RUN",
    envvar="CHARRNN_SCORE_MODEL",
    shell_complete=complete_model,
    help="Model to score with: " + MODEL_HELP,
)
@store_option
@click.option(
    "--per-line",
    is_flag=True,
    help="Score each line on its own (from the start of a line, newline included).",
)
@click.option(
    "--lines/--stream",
    "by_lines",
    default=None,
    envvar="CHARRNN_SCORE_LINES",  # named after the flag, not the parameter
    help="How the totals are scored. --lines: each line on its own from the start state, "
    "end of line included (the totals of --per-line); --stream: the file as one text, the "
    "state carried across line ends. [default: --lines for a model trained in names mode, "
    "--stream for prose]",
)
@click.option(
    "--skip-unknown",
    is_flag=True,
    help="Drop characters the model does not know (counted) instead of failing.",
)
@which_checkpoint
@json_option
@quiet_option
def score(
    file: str,
    spec: str | None,
    store_dir: Path | None,
    per_line: bool,
    by_lines: bool | None,
    skip_unknown: bool,
    which: str | None,
    json: bool,
    quiet: bool,
) -> None:
    """How likely FILE (or - for stdin) is under a model.

    Prints the log-probability, nats and bits per character and perplexity.
    A model trained in names mode scores FILE as it was trained: each line on
    its own from the start state, end of line included, so the totals are the
    sums of --per-line's rows (said once on stderr; --stream scores the file as
    one text, the state carried across line ends). A prose model scores the
    file as one stream (--lines: line by line). With --per-line, one row per
    line (log-probability, nats per character, the line): rank candidate names
    by plausibility. --model takes a model as `charrnn sample` does: RUN,
    RUN:best, RUN:latest, RUN:STEP or a file.

    \b
    Examples:
      charrnn score names.txt                    bits per character of a file
      charrnn score names.txt --per-line | sort -n   least likely lines first
      echo Tyrannosaurus | charrnn score - --model dinos:best --json
    """
    import numpy as np

    from charrnn.console import Log
    from charrnn.corpus import check_paths, read_text
    from charrnn.scoring import Known, score_by_lines, score_line_stream, score_stream

    log = Log(quiet)
    if per_line and by_lines is False:
        raise click.UsageError(
            f"{_given_as('per_line', '--per-line')} scores lines one by one; "
            + _undo("by_lines", "--stream")
        )
    check_paths([file])  # a missing file or a device fails before the model is chosen
    checkpoint, model, vocab = _load_for_inference(store_dir, spec, which, log)
    reading = CorpusOptions.from_json(checkpoint.meta.get("corpus", {}).get("options", {}))
    # read like the training corpus was, a chunk at a time: bounded memory for any size
    pieces = read_text(file, reading, chunk_bytes=1 << 20, model_encoding=True)
    known = Known(vocab, file, skip_unknown)
    if per_line:
        rows = 0
        for line, lp, n in score_line_stream(model, vocab, pieces, known):
            rows += 1
            if json:
                nats = -lp / n if n else None
                _emit_json(
                    {
                        "line": line,
                        "logprob": lp,
                        "n_chars": n,
                        "nats_per_char": nats,
                        "bits_per_char": None if nats is None else nats / math.log(2),
                    }
                )
            else:
                click.echo(f"{lp:10.3f}  {-lp / n if n else 0.0:6.3f}  {line}")
        if known.dropped:
            log.warn(f"dropped {plural(known.dropped, 'character')} not in the vocabulary")
        if not rows:  # as without --per-line: an empty input is an error, not silence
            raise CorpusError(f"{file} has nothing to score")
        return
    chosen = by_lines is None
    if chosen:  # as the model was trained
        by_lines = _trained_on_lines(checkpoint)
    if by_lines and vocab.eos_id is None:
        raise click.UsageError(
            f"{_given_as('by_lines', '--lines')} needs a newline in the model's vocabulary; "
            "use --stream"
        )
    n_lines = None
    if by_lines:
        lp, n, n_read, n_lines = score_by_lines(model, vocab, pieces, known)
    else:
        lp, n, n_read = score_stream(model, vocab, pieces, known)
    skipped = known.dropped
    if skipped:
        log.warn(f"dropped {plural(skipped, 'character')} not in the vocabulary")
    if not n_read:
        raise CorpusError(f"{file} has nothing to score")
    if n == 0:  # no newline in the vocabulary: the first character is context only
        raise CorpusError(f"{file} is too short to score: it needs at least 2 characters")
    if chosen and by_lines:  # no silent switch: the stream score is one option away
        log.info(
            "scored each line on its own from the start state, end of line included, "
            "as the names model was trained (--stream: the file as one stream)"
        )
    nats = -lp / n
    doc = {
        "file": file,
        "checkpoint": str(checkpoint.path),
        "scored_as": "lines" if by_lines else "stream",
        "n_lines": n_lines,
        "n_chars": n,
        "logprob": lp,
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
        "perplexity": float(np.exp(nats)),
        "skipped_chars": skipped,
    }
    if json:
        _emit_json(doc)
        return
    if by_lines:
        click.echo(f"lines           {n_lines:,}")
    click.echo(f"characters      {n:,}")
    click.echo(f"log-probability {lp:,.2f} nats")
    click.echo(f"nats/char       {nats:.4f}")
    click.echo(f"bits/char       {nats / math.log(2):.4f}")
    click.echo(f"perplexity      {math.exp(nats):.3f}")


def _trained_on_lines(checkpoint) -> bool:
    """Whether the checkpoint's run trained in names mode (each line from the start state),
    as its training config records; older runs ("auto" from before names mode) streamed."""
    return _trained_config(checkpoint).names


def _trained_config(checkpoint) -> TrainConfig:
    """The run's data settings as the checkpoint records them (names or prose mode,
    batches, validation split)."""
    from charrnn.errors import CheckpointError

    try:
        return TrainConfig.from_json(checkpoint.meta.get("train") or {})
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{checkpoint.path}: checkpoint metadata is malformed ({e})"
        ) from None


# --------------------------------------------------------------------------- clip-stats


@cli.command("clip-stats", epilog=_epilog())
@click.argument("run", required=False, metavar="[RUN]", shell_complete=complete_model)
@store_option
@which_checkpoint
@click.option(
    "--probe",
    "probe_paths",
    envvar="CHARRNN_CLIP_STATS_PROBE",
    multiple=True,
    metavar="CORPUS",
    help="Measure fresh gradients of the checkpoint on CORPUS instead of reading the "
    "recorded history; nothing is updated. Repeat for several files; - is stdin.",
)
@count_option(
    "--batches",
    default=20,
    help="With --probe: batches to measure (prose: consecutive streams, the state carried "
    "across; a names-mode run: its training lines, each from the start state).",
)
@count_option(
    "--batch-size",
    default=None,
    help="With --probe: streams (prose) or lines (names mode) per batch. [default: the run's]",
)
@count_option(
    "--seq-len",
    default=None,
    help="With --probe, prose runs: characters per stream per batch (names-mode batches "
    "are whole lines). [default: the run's]",
)
@click.option(
    "--spike-factor",
    type=FiniteFloat(1.0, min_open=True),
    metavar="X",
    default=10.0,
    show_default=True,
    help="A spike (exploding gradient: clipping is needed) is a step whose norm exceeds "
    "this many times (more than 1) the median of the previous --window steps.",
)
@count_option(
    "--window",
    default=50,
    help="How many previous steps the running median of a spike looks at.",
)
@json_option
@quiet_option
@click.pass_context
def clip_stats(
    ctx: click.Context,
    run: str | None,
    store_dir: Path | None,
    which: str | None,
    probe_paths: tuple[str, ...],
    batches: int,
    batch_size: int | None,
    seq_len: int | None,
    spike_factor: float,
    window: int,
    json: bool,
    quiet: bool,
) -> None:
    """What gradient clipping did during a run, or would do now.

    Reads the pre-clip gradient norms recorded at every training step of RUN
    (a run name, RUN:STEP or a checkpoint file; default: the latest run) and
    shows their percentiles and a chart against the clipping threshold, how
    often norm and value clipping bit and by how much, per-parameter-group
    norms, exploding-gradient spikes and non-finite steps, and whether clipping
    is needed (only if the norm spiked or went non-finite) with a --clip-norm.
    --probe CORPUS computes fresh gradients of the checkpoint on a few batches
    instead, cut as training cuts them (a names-mode run: batches of whole
    training lines, each from the start state; prose: streams, the state
    carried), and adds what clipping at other thresholds would do, including
    how far value clipping turns the gradient; its advice weighs the
    checkpoint's recorded history too, by the same rule. The probe uses the
    run's best checkpoint if it has one (--latest: its latest).

    \b
    Examples:
      charrnn clip-stats                         the latest run's record
      charrnn clip-stats dinos --json            the same, as one JSON document
      charrnn clip-stats dinos --probe data/dinos.txt   fresh gradients (best model)
      COLUMNS=120 charrnn clip-stats dinos | less
    """
    from charrnn import clipstats
    from charrnn.console import Log, rich_console
    from charrnn.trainer import norm_groups

    log = Log(quiet)
    if not probe_paths:
        for name in ("batches", "batch_size", "seq_len"):
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} applies only with --probe")
    # the recorded history: the latest checkpoint holds all of it; a probe: the best model
    default = "best" if probe_paths else "latest"
    # RUN:diverged is allowed here: clip-stats reads what happened, not the weights
    checkpoint, model, vocab = _load_for_inference(
        store_dir, run, which, log, default, allow_diverged=True
    )
    meta = checkpoint.meta
    optim = meta.get("optim") or {}
    train_meta = meta.get("train") or {}
    clip_norm, clip_value = optim.get("clip_norm"), optim.get("clip_value")
    _, groups, _ = norm_groups(model.cfg)
    spikes = {"factor": spike_factor, "window": window}
    trained = _trained_config(checkpoint)
    if probe_paths:
        if trained.names and ctx.get_parameter_source("seq_len") == ParameterSource.COMMANDLINE:
            raise click.UsageError(
                "--seq-len applies to prose runs; a names-mode run's batches are whole lines"
            )
        batch_size = batch_size or trained.batch_size
        seq_len = seq_len or trained.seq_len
        probe_batches = _clip_probe_batches(
            probe_paths, meta, trained, vocab, batch_size, seq_len, log
        )
        recorded = _history_series(checkpoint, groups)  # the advice weighs it too
        series, stats = _probe_stats(
            model, probe_paths, probe_batches, batches, clip_norm, clip_value, spikes, log, recorded
        )
    else:
        series, stats = _history_stats(checkpoint, groups, clip_norm, clip_value, spikes)
    cfg = model.cfg
    doc = {
        "schema": clipstats.SCHEMA,
        "mode": "probe" if probe_paths else "history",
        "run": meta.get("run", checkpoint.run),
        "checkpoint": str(checkpoint.path),
        "step": checkpoint.step,
        "config": {
            "cell": cfg.cell,
            "layers": cfg.layers,
            "hidden": cfg.hidden,
            "optimizer": optim.get("name"),
            "lr": optim.get("lr"),
            "clip_norm": clip_norm,
            "clip_value": clip_value,
            "batch_size": train_meta.get("batch_size"),
            "seq_len": train_meta.get("seq_len"),
            "mode": "names" if trained.names else "prose",
        },
        **stats,
    }
    if json:
        _emit_json(doc)
        return
    from charrnn.clipreport import render

    render(doc, series, rich_console())


def _probe_stats(
    model, paths, probe_batches, batches, clip_norm, clip_value, spikes, log, recorded
):
    """(series, stats) of fresh gradients on up to ``batches`` probe batches;
    ``recorded``: the checkpoint's history series, weighed by the advice."""
    from charrnn import clipstats
    from charrnn.batches import LineBatches

    n = min(batches, probe_batches.n_batches)
    lines = isinstance(probe_batches, LineBatches)
    B = probe_batches.batch_size
    shape = plural(B, "line") if lines else f"{B}x{probe_batches.seq_len}"
    if n < batches:
        more = "smaller --batch-size or --seq-len give more"
        if lines:
            more = "its validation lines held out, as in training"
            more += "; a smaller --batch-size gives more" if B > 1 else ""
        log.info(
            f"the corpus holds only {plural(n, 'batch', 'batches')} of {shape}; "
            f"probing {'it' if n == 1 else 'those'} ({more})"
        )
    how = " (names mode: each line from the start state)" if lines else ""
    log.info(
        f"probing {', '.join(p if p != '-' else 'stdin' for p in paths)}: "
        f"{plural(n, 'batch', 'batches')} of {shape}{how}, gradients only"
    )
    measured = clipstats.probe(model, probe_batches, n, clip_norm, clip_value)
    stats = clipstats.summarize_probe(measured, clip_norm, clip_value, **spikes, history=recorded)
    stats["probe"] = {
        "corpus": list(paths),
        "batching": "lines" if lines else "streams",
        "batch_size": B,
        "seq_len": None if lines else probe_batches.seq_len,
        **stats["probe"],
    }
    return measured.series, stats


def _history_series(checkpoint, groups):
    """The gradient norms recorded while training (empty if the checkpoint has none)."""
    from charrnn import clipstats
    from charrnn.errors import CheckpointError

    try:
        return clipstats.Series.from_arrays(checkpoint.arrays, groups)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{checkpoint.path}: training history is malformed ({e})") from None


def _history_stats(checkpoint, groups, clip_norm, clip_value, spikes):
    """(series, stats) of the gradient norms recorded while training."""
    from charrnn import clipstats
    from charrnn.errors import CheckpointError

    series = _history_series(checkpoint, groups)
    if series.step.shape[0] == 0:
        raise CheckpointError(
            f"{checkpoint.path} holds no training history; "
            "measure fresh gradients with --probe CORPUS"
        )
    stats = clipstats.summarize(series, clip_norm, clip_value, **spikes)
    stats["probe"] = None
    return series, stats


def _clip_probe_batches(
    paths: tuple[str, ...], meta: dict, trained: TrainConfig, vocab, B: int, T: int, log
):
    """Batches of the probe corpus in the model's ids, cut as the run's training cuts its
    corpus: a names-mode run's are batches of B whole lines (its validation lines held
    out, its epoch order: on the training corpus, batch k is what training step k+1
    read); prose, B streams of T (smaller ones if the corpus is short)."""
    from charrnn.batches import eval_batches, line_split, make_batches, min_train_chars
    from charrnn.corpus import load_corpus
    from charrnn.errors import VocabError
    from charrnn.tokenizer import unknown_message

    if list(paths).count("-") > 1:
        raise click.UsageError("stdin ('-') can be read only once")
    corpus = load_corpus(
        list(paths), CorpusOptions.from_json(meta.get("corpus", {}).get("options", {}))
    )
    unknown = tuple(c for c in corpus.vocab.chars if c not in vocab.index)
    if unknown:
        raise VocabError(
            unknown_message(unknown, ", ".join(paths))
            + "; probe with text like the training corpus",
            unknown=unknown,
        )
    lut = vocab.encode_codepoints(corpus.vocab.codepoints)  # (V',) model id of each corpus id
    ids = lut[corpus.ids]  # (N,) the corpus in the model's ids (the model's dtype, as trained)
    n = ids.shape[0]
    if trained.names:
        if vocab.eos_id is None:
            raise CorpusError("names mode needs a newline in the model's vocabulary")
        cfg = trained
        return line_split(
            ids, vocab.eos_id, B, cfg.val_fraction, cfg.split_seed, cfg.seed, cfg.max_line
        ).train
    if n < min_train_chars(B, T):
        shrunk = eval_batches(ids, 0, n, B, T)  # fewer streams, then shorter ones
        if shrunk is None:
            raise CorpusError(f"{', '.join(paths)} is too short to probe")
        log.info(
            f"the corpus has {n:,} characters, too few for batches of {B}x{T}; "
            f"probing with {shrunk.batch_size}x{shrunk.seq_len}"
        )
        return shrunk
    return make_batches(ids, 0, n, B, T)


# --------------------------------------------------------------------------- runs


@cli.command(epilog=_epilog())
@store_option
@json_option
def runs(store_dir: Path | None, json: bool) -> None:
    """List the runs in the store, most recently trained last.

    \b
    Examples:
      charrnn runs
      charrnn runs --json
      CHARRNN_STORE=/data/models charrnn runs
    """
    store = open_store(store_dir)
    rows = [_run_row(store, info) for info in store.runs()]
    if json:
        _emit_json(rows)
        return
    if not rows:
        click.echo(f"no runs in {store.root}; train one with: charrnn train CORPUS", err=True)
        return
    table = [("RUN", "STEP", "CKPTS", "MODEL", "BEST VAL", "UPDATED")]
    for row in rows:
        when = datetime.fromisoformat(row["updated"]).astimezone().strftime("%Y-%m-%d %H:%M")
        best = row["best_val_loss"]
        table.append(
            (
                row["run"],
                str(row["latest_step"]),
                str(row["checkpoints"]),
                row["model"] or "?",
                "-" if best is None else f"{best:.4f}",
                when,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def _run_row(store: Store, info: Any) -> dict[str, Any]:
    """One run for `charrnn runs`: its size, model and best validation loss (nats/char)."""
    model, best = None, None
    try:
        meta = store.latest(info.name).meta
        cfg = meta.get("model", {})
        model = f"{cfg['cell']} {cfg['layers']}x{cfg['hidden']}"
        best = finite_or_none(meta.get("best_val"))
    except (CharrnnError, KeyError, TypeError):
        pass  # listed all the same; `charrnn sample RUN` says what is wrong with it
    return {
        "run": info.name,
        "latest_step": info.latest_step,
        "checkpoints": info.n_checkpoints,
        "model": model,
        "best_val_loss": best,
        "updated": datetime.fromtimestamp(info.updated, tz=timezone.utc).isoformat(),
        "has_best": info.has_best,
    }


# --------------------------------------------------------------------------- entry point


COMPLETE_VAR = "_CHARRNN_COMPLETE"  # eval "$(_CHARRNN_COMPLETE=bash_source charrnn)"


def error_line(message: str, hint: str | None = None) -> str:
    """Every error the user sees: one line, one prefix, and what to do next."""
    text = " ".join(message.split())
    if hint:  # click ends its sentences with a period ("Missing argument 'FILE'.")
        text = re.sub(r"(?<!\.)\.$", "", text) + f" ({hint})"
    return f"charrnn: error: {text}"


def usage_line(e: click.UsageError, argv: list[str]) -> str:
    """A click usage error as one line: the option (and the variable it came from), the
    problem, and where the help is."""
    ctx, param = e.ctx, getattr(e, "param", None)
    command = ctx.command_path if ctx is not None else _command_of(argv)
    if isinstance(e, click.MissingParameter):  # its message is empty: click words it itself
        message = e.format_message()
    elif isinstance(e, click.BadParameter) and ctx is not None and param is not None:
        # a type's refusal: its option, from its own parameter
        message = f"{_as_given(_flag_of(param), ctx, argv, param)}: {e.message}"
    elif isinstance(e, click.BadParameter) and e.param_hint is not None:
        # a config's check (usage_error): the flags its message mentions
        hints = [e.param_hint] if isinstance(e.param_hint, str) else list(e.param_hint)
        flags = " / ".join(_as_given(h, ctx, argv) if ctx else h for h in hints)
        message = f"{flags}: {e.message}"
    else:
        message = e.format_message()
    return error_line(message, f"see '{command} --help'")


def _flag_of(param: click.Parameter) -> str:
    return param.opts[-1] if isinstance(param, click.Option) else param.human_readable_name


def _as_given(
    flag: str, ctx: click.Context, argv: list[str], param: click.Parameter | None = None
) -> str:
    """An option as an error's prefix names it: "--top-p" if typed (or not an option),
    "CHARRNN_SAMPLE_TOP_P (--top-p)" if its value came from the environment."""
    if param is None:
        param = next((p for p in ctx.command.params if flag in (*p.opts, *p.secondary_opts)), None)
    if param is None:
        return flag
    # a value that converted has its source recorded; one that failed its type, not yet
    source = ctx.get_parameter_source(param.name or "")
    if source is None:
        from_env = _from_environment(param, ctx, argv)
    else:
        from_env = source == ParameterSource.ENVIRONMENT
    return f"{_envvar_of(param, ctx)} ({flag})" if from_env else flag


def _command_of(argv: list[str]) -> str:
    """The command an error without a context came from (click's parser gives none for
    "Option '--prime' requires an argument"): the group takes no values, so the first
    word that is not an option names the subcommand."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return f"charrnn {word}" if word in cli.commands else "charrnn"


def _from_environment(param: click.Parameter, ctx: click.Context, argv: list[str]) -> bool:
    """Whether the bad value came from the environment (the command line did not give it)."""
    if not isinstance(param, click.Option) or param.resolve_envvar_value(ctx) is None:
        return False
    flags = (*param.opts, *param.secondary_opts)
    return not any(a == f or a.startswith(f + "=") for a in argv for f in flags)


def _envvar_of(param: click.Parameter, ctx: click.Context) -> str:
    """The variable the value came from: the option's own (CHARRNN_SAMPLE_NUM for --num),
    else the one named after its parameter (CHARRNN_SAMPLE_N), which click reads too."""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    names.append(f"{ctx.auto_envvar_prefix}_{(param.name or '').upper()}")
    return next((str(n) for n in names if os.environ.get(n)), str(names[0]))


def _given_as(name: str, flag: str) -> str:
    """An option as a refusal names it: its flag if typed, the variable and the flag
    ("CHARRNN_SAMPLE_LENGTH (--length)") if it came from the environment."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return flag
    return _as_given(flag, ctx, [], next(p for p in ctx.command.params if p.name == name))


def _undo(name: str, flag: str) -> str:
    """How to take an option back: "drop --stream" if typed, "unset CHARRNN_SCORE_LINES"
    if it came from the environment."""
    given = _given_as(name, flag)
    return f"drop {flag}" if given == flag else f"unset {given.split()[0]}"


def _next_step(e: CharrnnError) -> str | None:
    """A next step for errors whose message cannot know the command line."""
    from charrnn.errors import StoreIOError

    if isinstance(e, StoreIOError):
        return "choose another store with --store DIR or CHARRNN_STORE=DIR"
    return None


def _stdout_fails(e: OSError) -> bool:
    """Whether a bare OSError is stdout's: a write that found no room (disk full, quota,
    file too large). The core's own writes and every file it opens raise StoreIOError or
    name their file; a write to stdout names none."""
    return e.filename is None and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a documented exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if os.environ.get(COMPLETE_VAR):  # shell completion: the script, or the candidates
        from click.shell_completion import shell_complete

        sys.exit(shell_complete(cli, {}, "charrnn", COMPLETE_VAR, os.environ[COMPLETE_VAR]))
    try:
        # make_context + invoke rather than cli.main: click's main turns EPIPE into exit 1
        with cli.make_context("charrnn", args) as ctx:
            rv = cli.invoke(ctx)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("charrnn: interrupted", err=True)
        code = EXIT_SIGINT
    except click.exceptions.NoArgsIsHelpError as e:  # bare `charrnn`: the help, exit 2
        click.echo(e.ctx.get_help() if e.ctx else "", err=True)
        code = e.exit_code
    except click.UsageError as e:
        click.echo(usage_line(e, args), err=True)
        code = e.exit_code
    except click.ClickException as e:
        click.echo(error_line(e.format_message()), err=True)
        code = e.exit_code
    except CharrnnError as e:
        click.echo(error_line(str(e), _next_step(e)), err=True)
        code = e.exit_code
    except KeyboardInterrupt:
        click.echo("charrnn: interrupted", err=True)
        code = EXIT_SIGINT
    except BrokenPipeError:
        # the reader went away (e.g. `charrnn sample | head`): not an error
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        code = 0
    except UnicodeEncodeError as e:  # e.g. PYTHONIOENCODING=ascii and a CJK model
        enc = getattr(sys.stdout, "encoding", None) or e.encoding
        click.echo(
            f"charrnn: error: standard output's encoding ({enc}) cannot write "
            f"{e.object[e.start]!r}; set PYTHONIOENCODING=utf-8 or use a UTF-8 locale",
            err=True,
        )
        code = EXIT_IO
    except OSError as e:  # e.g. writing the samples to a full disk
        where = "cannot write to stdout: " if _stdout_fails(e) else ""
        click.echo(error_line(where + str(e.strerror or e)), err=True)
        code = EXIT_IO
    except MemoryError:
        click.echo(
            error_line("out of memory", "try a smaller --hidden, --batch-size or -n"), err=True
        )
        code = EXIT_ERROR
    except Exception as e:  # a bug: one line, the traceback only on request
        if os.environ.get("CHARRNN_DEBUG"):
            raise
        click.echo(
            f"charrnn: internal error: {type(e).__name__}: {e} "
            "(set CHARRNN_DEBUG=1 for the traceback)",
            err=True,
        )
        code = EXIT_ERROR
    sys.exit(code)
