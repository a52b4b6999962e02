"""The charrnn command line: parse options, call the library, map errors to exit codes.

stdout carries only the product (samples, scores, reports, JSON); progress,
logs and warnings go to stderr. This is the only module that knows about the
terminal and the process exit status.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from charrnn import __version__
from charrnn.errors import (
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_IO,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    CharrnnError,
    CorpusError,
    DivergedError,
    InputMissingError,
)

BUNDLED = (
    Path(__file__).resolve().parent.parent / "data"
)  # the repository's data/ (editable install)


def _default_corpus() -> str:
    """The bundled dinosaur names: beside the package, or in ./data of the current directory."""
    for p in (BUNDLED / "dinos.txt", Path("data") / "dinos.txt"):
        if p.is_file():
            return str(p)
    raise InputMissingError(
        "no CORPUS given and the bundled data/dinos.txt is not here "
        "(run from the charrnn repository, or pass a text file)"
    )


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


def seed_option(default: int | None, help: str):
    return click.option(
        "--seed", type=int, default=default, show_default=default is not None, help=help
    )


def _store(path: Path | None):
    from charrnn.store import Store, default_root

    return Store(path if path is not None else default_root())


def _emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, ensure_ascii=False, allow_nan=False))


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


# --------------------------------------------------------------------------- option types


class Duration(click.ParamType):
    """A time budget: 90, 90s, 10m, 1h30m, 1.5h."""

    name = "duration"
    _part = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
    _unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        pos, total = 0, 0.0
        while pos < len(text):
            m = self._part.match(text, pos)
            if not m:
                self.fail(f"{value!r} is not a duration (examples: 90s, 10m, 1h30m)", param, ctx)
            total += float(m.group(1)) * self._unit[m.group(2)]
            pos = m.end()
        if not text or total <= 0:
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return total


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
    charrnn sample -n 10                new names from the latest model
    charrnn score names.txt --per-line  how likely each line is
    charrnn clip-stats                  what gradient clipping did
    """


# --------------------------------------------------------------------------- train


def _parse_clip(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    if str(value).lower() in ("0", "none", "off"):
        return None
    try:
        x = float(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a number (or 'none')", param_hint=name
        ) from None
    if not (math.isfinite(x) and x > 0):
        raise click.BadParameter(
            f"{value!r} must be a positive number (or 'none')", param_hint=name
        )
    return x


MODEL_OPTIONS = (
    "cell",
    "layers",
    "hidden",
    "embedding",
    "dropout",
    "peephole",
    "activation",
    "forget_bias",
)
DATA_OPTIONS = ("batch_size", "seq_len", "val_fraction")


@cli.command(epilog=_epilog())
@click.argument("corpus", nargs=-1, type=str)
@click.option(
    "--run",
    "run_name",
    type=str,
    default=None,
    envvar="CHARRNN_TRAIN_RUN",
    help="Run name in the store. [default: the first corpus file's stem]",
)
@store_option
@click.option(
    "--cell",
    type=click.Choice(["rnn", "gru", "lstm"]),
    default="lstm",
    show_default=True,
    help="Recurrent cell: vanilla RNN, GRU or LSTM.",
)
@click.option(
    "--layers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Stacked recurrent layers (a deep RNN).",
)
@click.option(
    "--hidden",
    type=click.IntRange(1, 8192),
    default=128,
    show_default=True,
    help="Hidden units per layer.",
)
@click.option(
    "--embedding",
    type=click.IntRange(0, 8192),
    default=0,
    show_default=True,
    help="Learned input embedding size; 0 feeds one-hot characters as in the lectures.",
)
@click.option(
    "--dropout",
    type=FiniteFloat(0.0),
    default=0.0,
    show_default=True,
    help="Dropout on the non-recurrent connections during training, in [0, 1).",
)
@click.option("--peephole", is_flag=True, help="LSTM: the gates also see c<t-1>.")
@click.option(
    "--activation",
    type=click.Choice(["tanh", "relu"]),
    default="tanh",
    show_default=True,
    help="Vanilla RNN activation.",
)
@click.option(
    "--forget-bias",
    type=FiniteFloat(),
    default=1.0,
    show_default=True,
    help="LSTM: initial bias of the forget gate (1 remembers by default; 0 learns faster early).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Parallel streams B per batch.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Truncated backpropagation-through-time length T.",
)
@click.option(
    "--val-fraction",
    type=FiniteFloat(0.0),
    default=0.1,
    show_default=True,
    help="Tail fraction of the corpus held out for validation.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam", "sgd", "adagrad", "rmsprop"]),
    default="adam",
    show_default=True,
    help="Optimizer.",
)
@click.option(
    "--lr",
    type=FiniteFloat(0.0, min_open=True),
    default=2e-3,
    show_default=True,
    help="Learning rate.",
)
@click.option(
    "--lr-decay",
    type=FiniteFloat(0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Multiply the learning rate by this every --lr-decay-every steps.",
)
@click.option(
    "--lr-decay-every",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Steps between learning-rate decays.",
)
@click.option(
    "--clip-norm",
    type=str,
    default="5",
    show_default=True,
    help="Rescale gradients whose global L2 norm exceeds this ('none' to disable).",
)
@click.option(
    "--clip-value",
    type=str,
    default=None,
    help="Clamp every gradient entry to ±this (the assignment uses 5). [default: none]",
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=None,
    help="Total steps for the run (re-running after a kill finishes the same job). "
    "[default: 1000 unless --epochs or --time is given]",
)
@click.option(
    "--epochs",
    type=FiniteFloat(0.0, min_open=True),
    default=None,
    help="Total epochs for the run, instead of --steps.",
)
@click.option(
    "--time",
    "time_budget",
    type=Duration(),
    default=None,
    envvar="CHARRNN_TRAIN_TIME",
    help="Time budget for this invocation (90s, 10m, 1h); saves and exits 0 when spent.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(1),
    default=250,
    show_default=True,
    help="Steps between validation passes; each is followed by a checkpoint.",
)
@click.option(
    "--keep",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Checkpoints kept per run (plus the best by validation loss).",
)
@click.option(
    "--encoding",
    type=str,
    default="utf-8",
    show_default=True,
    help="Corpus encoding (a leading UTF-8 BOM is dropped).",
)
@click.option(
    "--lowercase/--keep-case",
    default=None,
    help="Lowercase the corpus, as the assignment's 27-character dinosaur model does. "
    "[default: lowercase for the bundled dinosaur names when no CORPUS is given, else keep case]",
)
@click.option(
    "--newline",
    type=click.Choice(["lf", "keep"]),
    default="lf",
    show_default=True,
    help="lf: CRLF and lone CR become LF; keep: leave line endings as they are.",
)
@click.option("--fresh", is_flag=True, help="Start the run over instead of resuming it.")
@click.option(
    "--allow-changed-corpus",
    is_flag=True,
    help="Resume even though the corpus changed since the last checkpoint.",
)
@click.option("--wait", is_flag=True, help="Wait for a run locked by another process.")
@click.option(
    "--sample-every",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="On a terminal, show a few samples every this many steps (0: never).",
)
@seed_option(0, "Seed for the initial parameters and dropout.")
@json_option
@quiet_option
@click.pass_context
def train(
    ctx: click.Context,
    corpus: tuple[str, ...],
    run_name: str | None,
    store: Path | None,
    **opts: Any,
) -> None:
    """Learn a character model of CORPUS (files or -, read in order).

    With no CORPUS, trains the assignment's model: the bundled data/dinos.txt,
    lowercased (--keep-case to keep capitals). Running the same
    command again resumes the run from its latest checkpoint; --steps and
    --epochs are totals for the run, so a killed cron job simply finishes.
    Ctrl-C or SIGTERM saves a checkpoint first, then exits 130 / 143.
    """
    from charrnn.batches import eval_batches, make_batches, split_train_val
    from charrnn.console import Log
    from charrnn.corpus import CorpusOptions, load_corpus
    from charrnn.model import ModelConfig
    from charrnn.optim import OptimConfig
    from charrnn.trainer import EvalStats, TrainConfig, TrainState
    from charrnn.trainer import train as train_loop

    log = Log(opts["quiet"])
    paths = list(corpus) or [_default_corpus()]
    if opts["lowercase"] is None:  # the bundled default is the assignment's lowercase corpus
        opts["lowercase"] = not corpus
    if paths.count("-") > 1:
        raise click.UsageError("stdin ('-') can be read only once")
    if run_name is None:
        run_name = "stdin" if paths[0] == "-" else _run_name_from(Path(paths[0]).stem)
    elif not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", run_name):
        raise click.BadParameter(
            "use letters, digits, '.', '_' and '-' (not starting with '.')", param_hint="--run"
        )
    if opts["dropout"] >= 1:
        raise click.BadParameter("must be < 1", param_hint="--dropout")
    if opts["val_fraction"] >= 1:
        raise click.BadParameter("must be < 1", param_hint="--val-fraction")
    if opts["lr_decay"] > 1:
        raise click.BadParameter("must be <= 1", param_hint="--lr-decay")
    if opts["peephole"] and opts["cell"] != "lstm":
        raise click.BadParameter("peepholes exist only for --cell lstm", param_hint="--peephole")
    clip_norm = _parse_clip(opts["clip_norm"], "--clip-norm")
    clip_value = _parse_clip(opts["clip_value"], "--clip-value")
    optim_cfg = OptimConfig(
        name=opts["optimizer"],
        lr=opts["lr"],
        lr_decay=opts["lr_decay"],
        lr_decay_every=opts["lr_decay_every"],
        clip_norm=clip_norm,
        clip_value=clip_value,
    )
    copts = CorpusOptions(
        encoding=opts["encoding"], newline=opts["newline"], lowercase=opts["lowercase"]
    )
    st = _store(store)
    run_dir = st.run_dir(run_name)  # validates the name

    with st.lock(run_name, wait=opts["wait"]):
        for p in st.clean_leftovers(run_name):
            log.info(f"removed leftover {p}")
        t0 = time.perf_counter()
        cp = load_corpus(paths, copts, cache_dir=run_dir / "cache")
        _prune_token_cache(run_dir / "cache", cp.sha256)
        log.info(
            f"corpus {', '.join(cp.sources)}: {cp.n_chars:,} characters, "
            f"{cp.vocab.size} distinct, {'one item per line' if cp.is_lines else 'prose'} "
            f"({time.perf_counter() - t0:.1f}s)"
        )

        ts = None
        resumed_from = None
        if opts["fresh"]:
            pass  # the old checkpoints go once the new run is known to start (below)
        elif st.checkpoints(run_name):
            ck = st.latest(run_name, on_warning=log.warn)
            _check_resume(ctx, ck.meta, cp, opts)
            ts = TrainState.from_checkpoint(
                ck.arrays, ck.meta, _resumed_optim(ctx, ck.meta, optim_cfg)
            )
            log.info(f"resuming run '{run_name}' from step {ts.step} ({ck.path.name})")
            resumed_from = ck.path
        if ts is None:
            model_cfg = ModelConfig(
                vocab_size=cp.vocab.size,
                cell=opts["cell"],
                hidden=opts["hidden"],
                layers=opts["layers"],
                embedding=opts["embedding"],
                dropout=opts["dropout"],
                peephole=opts["peephole"],
                activation=opts["activation"],
                forget_bias=opts["forget_bias"],
            )
            train_cfg = TrainConfig(
                batch_size=opts["batch_size"],
                seq_len=opts["seq_len"],
                val_fraction=opts["val_fraction"],
                eval_every=opts["eval_every"],
                seed=opts["seed"],
            )
            ts = TrainState.fresh(model_cfg, optim_cfg, train_cfg)
        elif _explicit(ctx, "eval_every"):
            import dataclasses

            ts.train_cfg = dataclasses.replace(ts.train_cfg, eval_every=opts["eval_every"])
        tc = ts.train_cfg

        n_train, n_val = split_train_val(cp.n_chars, tc.val_fraction)
        batches = make_batches(cp.ids, 0, n_train, tc.batch_size, tc.seq_len)
        val = eval_batches(cp.ids, n_train, cp.n_chars, tc.batch_size, tc.seq_len)

        if opts["steps"] is not None:
            total = opts["steps"]
        elif opts["epochs"] is not None:
            total = max(1, round(opts["epochs"] * batches.n_batches))
        elif opts["time_budget"] is not None:
            total = 2**62  # the time budget decides
        else:
            total = 1000
        if ts.step >= total:
            log.info(
                f"run '{run_name}' already has {ts.step} steps (target {total}); nothing to do"
            )
            _train_summary(opts, run_name, ts, resumed_from, batches, 0.0, "done", cp)
            return
        if opts["fresh"]:  # the new settings and corpus are valid: now the old run may go
            removed = _remove_checkpoints(st, run_name)
            if removed:
                log.info(f"--fresh: removed {removed} checkpoint(s) of run '{run_name}'")
        extra = _corpus_arrays(cp)
        corpus_meta = _corpus_meta(cp)

        def save(best: bool) -> Path:
            arrays, meta = ts.to_checkpoint()
            arrays.update(extra)
            meta["corpus"] = corpus_meta
            meta["vocab"] = cp.vocab.to_json()
            meta["run"] = run_name
            meta["charrnn"] = __version__
            return st.save(run_name, ts.step, arrays, meta, best=best, keep=opts["keep"])

        stop: list[Any] = [False, None]
        handlers = _install_stop_handlers(stop)
        sampler_rng = None
        from charrnn.sampler import SampleOptions, Sampler

        bar = log.progress(total if total < 2**62 else 0, ts.step, f"train {run_name}")
        log.info(
            f"training {ts.model.cfg.cell} {ts.model.cfg.layers}x{ts.model.cfg.hidden} "
            f"on {n_train:,} characters ({batches.n_batches} batches of "
            f"{tc.batch_size}x{tc.seq_len} per epoch), validating on {n_val:,}"
        )
        t_start = time.perf_counter()
        saved_step = ts.step
        last_path = resumed_from
        status = "done"
        last_val = math.nan
        cps = 0.0
        try:
            for ev in train_loop(
                ts, batches, val, total_steps=total, time_budget=opts["time_budget"], stop_flag=stop
            ):
                if isinstance(ev, EvalStats):
                    last_val = ev.val_loss
                    last_path = save(ev.improved)
                    saved_step = ts.step
                    msg = (
                        f"step {ev.step}: val {ev.val_loss:.4f} nats/char "
                        f"({ev.val_loss / math.log(2):.3f} bits)"
                        f"{' best' if ev.improved else ''}  {cps / 1e3:.1f}k chars/s  "
                        f"saved {last_path.name}"
                    )
                    log.info(msg)
                    continue
                cps = ev.chars_per_sec
                if ev.skipped:
                    log.warn(f"step {ev.step}: non-finite loss or gradient, update skipped")
                post = {"loss": f"{ev.loss:.3f}", "cps": f"{cps / 1e3:.1f}k"}
                if math.isfinite(last_val):
                    post["val"] = f"{last_val:.3f}"
                bar.update(1, **post)
                if (
                    bar.bar is not None
                    and opts["sample_every"]
                    and ev.step % opts["sample_every"] == 0
                ):
                    import numpy as np

                    if sampler_rng is None:
                        sampler_rng = np.random.default_rng(opts["seed"] + 1)
                    smp = Sampler(ts.model, cp.vocab)
                    if cp.is_lines:
                        got = smp.lines(3, 60, SampleOptions(0.8), sampler_rng)
                        log.info("  samples: " + " | ".join(s.text for s in got))
                    else:
                        text = "".join(
                            next(smp.stream(120, SampleOptions(0.8), sampler_rng, chunk=120))[0]
                        )
                        log.info("  sample: " + text.replace("\n", " / "))
        except KeyboardInterrupt:  # a second Ctrl-C: leave now; the last checkpoint stands
            bar.close()
            log.close_progress()
            _restore_handlers(handlers)
            raise
        except DivergedError:
            # skipped steps never touched the parameters: save them (finite, or the store
            # refuses) so that clip-stats can show what happened, then exit 3
            bar.close()
            log.close_progress()
            if ts.step != saved_step:
                try:
                    path = save(False)
                    log.info(f"saved {path} for `charrnn clip-stats {run_name}`")
                except CharrnnError as e:
                    log.warn(f"not saved: {e}")
            _restore_handlers(handlers)
            raise
        except BaseException:
            _restore_handlers(handlers)
            raise
        bar.close()
        log.close_progress()
        elapsed = time.perf_counter() - t_start
        if stop[0]:
            status = "interrupted"
        elif ts.step < total:
            status = "time budget spent"
        if ts.step != saved_step:
            last_path = save(False)  # a signal now only sets the flag: the save completes
        _restore_handlers(handlers)
        log.info(
            f"{status}: run '{run_name}' at step {ts.step}"
            f"{f'/{total}' if total < 2**62 else ''} in {elapsed:.1f}s"
            + (f", saved {last_path}" if last_path else "")
        )
        _train_summary(opts, run_name, ts, last_path, batches, elapsed, status, cp)
        if stop[0]:
            sys.exit(EXIT_SIGINT if stop[1] == signal.SIGINT else EXIT_SIGTERM)


def _prune_token_cache(cache: Path, sha: str) -> None:
    """Drop token caches of older corpus versions and temp files of killed loads (under the
    run's lock, so no other writer is at work here)."""
    keep = f"tokens-{sha[:20]}"
    if cache.is_dir():
        for p in cache.iterdir():
            if p.is_file() and not p.name.startswith(keep):
                p.unlink(missing_ok=True)


def _run_name_from(stem: str) -> str:
    """A valid run name from a file stem: 'my names' -> 'my-names'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "corpus"


def _remove_checkpoints(st, run: str) -> int:
    """--fresh: the run's checkpoints go (under the lock) so step numbers start over."""
    paths = st.checkpoints(run)
    best = st.run_dir(run) / "best.npz"
    for p in [*paths, best]:
        p.unlink(missing_ok=True)
    return len(paths)


def _corpus_meta(cp) -> dict[str, Any]:
    return {
        "sources": list(cp.sources),
        "sha256": cp.sha256,
        "n_chars": cp.n_chars,
        "n_lines": cp.n_lines,
        "is_lines": cp.is_lines,
        "options": cp.options.to_json(),
    }


def _corpus_arrays(cp) -> dict[str, Any]:
    """Hashes of the training lines (names corpora), so `sample --novel` needs no corpus."""
    if not cp.is_lines or cp.n_chars > 50_000_000:
        return {}
    from charrnn.sampler import line_hashes

    return {"corpus.line_hashes": line_hashes(cp.lines())}


def _explicit(ctx: click.Context, name: str) -> bool:
    """Whether the user set this option (command line or environment), not its default."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (
        ParameterSource.COMMANDLINE,
        ParameterSource.ENVIRONMENT,
    )


OPTIM_OPTIONS = {
    "lr": "lr",
    "lr_decay": "lr_decay",
    "lr_decay_every": "lr_decay_every",
    "clip_norm": "clip_norm",
    "clip_value": "clip_value",
}


def _resumed_optim(ctx: click.Context, meta: dict, given):
    """The saved optimizer settings, with the ones given explicitly now taking over."""
    import dataclasses

    from charrnn.optim import OptimConfig

    saved = OptimConfig.from_json(meta.get("optim", {}))
    if _explicit(ctx, "optimizer") and given.name != saved.name:
        raise click.UsageError(
            f"run '{meta.get('run')}' was trained with --optimizer {saved.name}; pass --fresh "
            "to start over with another optimizer, or --run NAME for a new run"
        )
    changes = {
        field: getattr(given, field) for opt, field in OPTIM_OPTIONS.items() if _explicit(ctx, opt)
    }
    return dataclasses.replace(saved, **changes)


def _check_resume(ctx: click.Context, meta: dict, cp, opts: dict) -> None:
    """Refuse to resume with a changed corpus or with explicitly different model options."""
    old = meta.get("corpus", {})
    if old.get("sha256") != cp.sha256 and not opts["allow_changed_corpus"]:
        raise CorpusError(
            f"the corpus changed since run '{meta.get('run')}' was last saved; pass "
            "--allow-changed-corpus to resume on it, --fresh to start over, or --run NAME"
        )
    vocab = meta.get("vocab", {}).get("chars")
    if vocab is not None and list(vocab) != list(cp.vocab.chars):
        raise CorpusError(
            "the corpus has a different character set than the saved run; "
            "pass --fresh to start over or --run NAME for a new run"
        )
    saved = {**meta.get("model", {}), **meta.get("train", {})}
    for name in (*MODEL_OPTIONS, *DATA_OPTIONS):
        if _explicit(ctx, name) and name in saved and saved[name] != opts[name]:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(
                f"run '{meta.get('run')}' was trained with {flag} {saved[name]}; pass --fresh "
                "to start over with new settings, or --run NAME for a new run"
            )


def _train_summary(opts, run, ts, path, batches, elapsed, status, cp) -> None:
    if not opts["json"]:
        return
    h = ts.history
    train_loss = next((x for x in reversed(h.loss) if math.isfinite(x)), math.nan)
    doc = {
        "run": run,
        "status": status,
        "step": ts.step,
        "epoch": ts.step / batches.n_batches,
        "train_loss": _finite(train_loss),
        "val_loss": _finite(h.val_loss[-1]) if h.val_loss else None,
        "val_bits_per_char": _finite(h.val_loss[-1] / math.log(2)) if h.val_loss else None,
        "best_val_loss": _finite(ts.best_val),
        "seconds": elapsed,
        "checkpoint": str(path) if path else None,
        "model": ts.model.cfg.to_json(),
        "corpus": {
            "sources": list(cp.sources),
            "n_chars": cp.n_chars,
            "vocab_size": cp.vocab.size,
            "is_lines": cp.is_lines,
        },
    }
    _emit_json(doc)


def _install_stop_handlers(stop: list[Any]):
    """First SIGINT/SIGTERM: finish the step, save, exit 130/143. Second: leave at once."""

    def handler(signum, frame):
        if stop[0]:
            raise KeyboardInterrupt
        stop[0] = True
        stop[1] = signum

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread (some test runners)
            old[s] = signal.signal(s, handler)
    return old


def _restore_handlers(old) -> None:
    for s, h in old.items():
        signal.signal(s, h)


# --------------------------------------------------------------------------- loading a model


def _load_for_inference(store: Path | None, spec: str | None, best: bool, log):
    """(checkpoint, model, vocab) from a run name, a path, or the latest run."""
    from charrnn.model import CharRNN, ModelConfig, Params, param_shapes
    from charrnn.store import validate_arrays
    from charrnn.tokenizer import Vocab

    st = _store(store)
    if best:
        if spec is not None and Path(spec).is_file():
            raise click.UsageError("--best takes a run name, not a checkpoint file")
        run = spec if spec is not None else st.latest_run()
        ck = st.resolve(f"{run}:best" if run else None, on_warning=log.warn)
    else:
        ck = st.resolve(spec, on_warning=log.warn)
    meta = ck.meta
    try:
        cfg = ModelConfig.from_json(meta["model"])
        vocab = Vocab.from_json(meta["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        from charrnn.errors import CheckpointError

        raise CheckpointError(f"{ck.path}: checkpoint metadata is malformed ({e})") from None
    expected = {f"param.{k}": (v, cfg.dtype) for k, v in param_shapes(cfg).items()}
    validate_arrays(ck.path, ck.arrays, expected)  # one-line errors naming the file
    params = Params.from_arrays(cfg, ck.arrays)
    if vocab.size != cfg.vocab_size:
        from charrnn.errors import CheckpointError

        raise CheckpointError(
            f"{ck.path}: vocabulary has {vocab.size} characters, model expects {cfg.vocab_size}"
        )
    return ck, CharRNN(cfg, params), vocab


# --------------------------------------------------------------------------- sample


@cli.command(epilog=_epilog())
@click.argument("checkpoint", required=False, metavar="[RUN|CHECKPOINT]")
@store_option
@click.option(
    "-n",
    "--num",
    "n",
    type=click.IntRange(1),
    default=None,
    envvar="CHARRNN_SAMPLE_NUM",
    help="Number of samples. [default: 10 names, or 1 text]",
)
@click.option(
    "--length",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="Prose mode: characters to generate per sample.",
)
@click.option(
    "--max-length",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Names mode: cap on characters per name.",
)
@click.option(
    "-t",
    "--temperature",
    type=FiniteFloat(0.0),
    default=1.0,
    show_default=True,
    help="Softmax temperature; 0 = greedy (always the most likely character).",
)
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=None,
    help="Sample only among the k most likely characters.",
)
@click.option(
    "--top-p",
    type=FiniteFloat(0.0, min_open=True),
    default=None,
    help="Sample only among the most likely characters whose probability adds up to p.",
)
@click.option(
    "--prime",
    type=str,
    default="",
    help="Condition on this prefix; it is echoed at the start of every sample.",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "names", "prose"]),
    default="auto",
    show_default=True,
    help="names: each sample ends at the newline; prose: --length characters. "
    "auto follows the training corpus.",
)
@click.option(
    "--novel",
    is_flag=True,
    help="Names mode: only samples that are not lines of the training corpus.",
)
@click.option("--best", is_flag=True, help="Use the run's best checkpoint instead of its latest.")
@seed_option(
    None, "Seed: the same checkpoint, seed and options give the same text. [default: random]"
)
@json_option
@quiet_option
def sample(
    checkpoint: str | None,
    store: Path | None,
    n: int | None,
    length: int,
    max_length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    prime: str,
    mode: str,
    novel: bool,
    best: bool,
    seed: int | None,
    json: bool,
    quiet: bool,
) -> None:
    """Generate text from a trained model.

    With no argument, uses the latest checkpoint of the most recently trained
    run. Names (one per line) end at the newline; prose streams --length
    characters as they are generated. stdout carries only the samples.
    """
    import numpy as np

    from charrnn.console import Log
    from charrnn.sampler import SampleOptions, Sampler, is_known

    log = Log(quiet)
    if top_p is not None and top_p > 1:
        raise click.BadParameter("must be in (0, 1]", param_hint="--top-p")
    opts = SampleOptions(temperature, top_k, top_p)
    ck, model, vocab = _load_for_inference(store, checkpoint, best, log)
    names = mode == "names" or (mode == "auto" and bool(ck.meta.get("corpus", {}).get("is_lines")))
    if names and vocab.eos_id is None:
        raise CorpusError("names mode needs a newline in the vocabulary; use --mode prose")
    from charrnn.corpus import CorpusOptions

    # the prime is read like the corpus was (e.g. lowercased for a --lowercase model)
    prime = CorpusOptions.from_json(ck.meta.get("corpus", {}).get("options", {})).normalize(prime)
    smp = Sampler(model, vocab)
    smp.encode_prime(prime)  # fail early, before any output
    rng = np.random.default_rng(seed)
    out = sys.stdout

    if not names:
        count = n or 1
        if novel:
            raise click.UsageError("--novel applies to names mode only")
        if count == 1 and not json:
            out.write(prime)
            for chunk in smp.stream(length, opts, rng, prime=prime, n=1):
                out.write(chunk[0])
                out.flush()
            out.write("\n")
            out.flush()
            return
        group = max(1, min(1024, (1 << 24) // length))  # bounded memory for any -n
        for start in range(0, count, group):
            k = min(group, count - start)
            parts: list[list[str]] = [[prime] for _ in range(k)]
            for chunk in smp.stream(length, opts, rng, prime=prime, n=k):
                for p, c in zip(parts, chunk, strict=True):
                    p.append(c)
            for p in parts:
                t = "".join(p)
                if json:
                    _emit_json({"text": t, "n_chars": len(t) - len(prime)})
                else:
                    out.write(t + "\n\n")
            out.flush()
        return

    count = n or 10
    hashes = ck.arrays.get("corpus.line_hashes") if novel else None
    if novel and hashes is None:
        raise CorpusError(
            f"{ck.path} holds no list of training lines; --novel needs a names corpus"
        )
    done, rejected, attempts = 0, 0, 0
    group = max(1, min(4096, (1 << 24) // max_length))  # samples per batch: bounded memory
    while done < count:
        want = min(count - done, group)
        batch = smp.lines(
            want if not novel else max(want * 2, 16), max_length, opts, rng, prime, logprob=json
        )
        attempts += len(batch)
        for s in batch:
            if novel and is_known(s.text, hashes):
                rejected += 1
                continue
            if json:
                _emit_json(
                    {
                        "text": s.text,
                        "logprob": s.logprob,
                        "n_chars": s.n_chars,
                        "finished": s.finished,
                    }
                )
            else:
                out.write(s.text + "\n")
            done += 1
            if done == count:
                break
        if novel and attempts >= 50 * count + 1000 and done < count:
            log.warn(
                f"only {done} novel samples after {attempts} tries; "
                "the model mostly repeats its training lines (try a higher --temperature)"
            )
            break
    out.flush()
    if novel:
        log.info(f"--novel: rejected {rejected} sample(s) that were training lines")


# --------------------------------------------------------------------------- score


@cli.command(epilog=_epilog())
@click.argument("file", type=str)
@click.option(
    "--model",
    "checkpoint",
    type=str,
    default=None,
    metavar="RUN|CHECKPOINT",
    envvar="CHARRNN_SCORE_MODEL",
    help="Model to score with. [default: the latest checkpoint of the latest run]",
)
@store_option
@click.option(
    "--per-line",
    is_flag=True,
    help="Score each line on its own (from the start of a line, newline included).",
)
@click.option(
    "--skip-unknown",
    is_flag=True,
    help="Drop characters the model does not know (counted) instead of failing.",
)
@click.option("--best", is_flag=True, help="Use the run's best checkpoint instead of its latest.")
@json_option
@quiet_option
def score(
    file: str,
    checkpoint: str | None,
    store: Path | None,
    per_line: bool,
    skip_unknown: bool,
    best: bool,
    json: bool,
    quiet: bool,
) -> None:
    """How likely FILE (or - for stdin) is under a model.

    Prints the log-probability, nats and bits per character and perplexity.
    With --per-line, one row per line: rank candidate names by plausibility.
    """
    import numpy as np

    from charrnn.console import Log
    from charrnn.corpus import CorpusOptions
    from charrnn.errors import VocabError
    from charrnn.scoring import score_lines, score_text
    from charrnn.tokenizer import unknown_message

    log = Log(quiet)
    ck, model, vocab = _load_for_inference(store, checkpoint, best, log)
    copts = CorpusOptions.from_json(ck.meta.get("corpus", {}).get("options", {}))
    raw = _read_input(file)
    try:
        text = raw.decode(copts.encoding)
    except UnicodeDecodeError as e:
        raise CorpusError(f"{file}: invalid {copts.encoding} at byte {e.start}") from None
    except LookupError:
        raise CorpusError(f"unknown encoding {copts.encoding!r} in the checkpoint") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    text = copts.normalize(text)
    unknown = vocab.unknown(text)
    skipped = 0
    if unknown:
        if not skip_unknown:
            raise VocabError(
                unknown_message(unknown, file) + " (pass --skip-unknown to drop them)",
                unknown=unknown,
            )
        bad = set(unknown)
        skipped = sum(1 for c in text if c in bad)
        text = "".join(c for c in text if c not in bad)
        log.warn(f"dropped {skipped} character(s) not in the vocabulary")
    if per_line:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        rows = score_lines(model, vocab, lines)
        if json:
            for line, (lp, n) in zip(lines, rows, strict=True):
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
            return
        for line, (lp, n) in zip(lines, rows, strict=True):
            click.echo(f"{lp:10.3f}  {-lp / n if n else 0.0:6.3f}  {line}")
        return
    if not text:
        raise CorpusError(f"{file} has nothing to score")
    lp, n = score_text(model, vocab, text)
    if n == 0:  # no newline in the vocabulary: the first character is context only
        raise CorpusError(f"{file} is too short to score: it needs at least 2 characters")
    nats = -lp / n
    doc = {
        "file": file,
        "checkpoint": str(ck.path),
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
    click.echo(f"characters      {n:,}")
    click.echo(f"log-probability {lp:,.2f} nats")
    click.echo(f"nats/char       {nats:.4f}")
    click.echo(f"bits/char       {nats / math.log(2):.4f}")
    click.echo(f"perplexity      {math.exp(nats):.3f}")


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    p = Path(name)
    if p.is_dir():
        raise InputMissingError(f"{name} is a directory, not a text file")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputMissingError(f"file not found: {name}") from None
    except OSError as e:
        raise InputMissingError(f"cannot read {name}: {e.strerror}") from None


# --------------------------------------------------------------------------- clip-stats


@cli.command("clip-stats", epilog=_epilog())
@click.argument("run", required=False, metavar="[RUN|CHECKPOINT]")
@store_option
@click.option("--best", is_flag=True, help="Use the run's best checkpoint instead of its latest.")
@click.option(
    "--probe",
    "probe_paths",
    envvar="CHARRNN_CLIP_STATS_PROBE",
    multiple=True,
    metavar="CORPUS",
    help="Measure fresh gradients of the checkpoint on CORPUS instead of reading the "
    "recorded history; nothing is updated. Repeat for several files; - is stdin.",
)
@click.option(
    "--batches",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="With --probe: consecutive batches to measure, the state carried across.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="With --probe: streams per batch. [default: the run's]",
)
@click.option(
    "--seq-len",
    type=click.IntRange(1),
    default=None,
    help="With --probe: characters per stream per batch. [default: the run's]",
)
@click.option(
    "--spike-factor",
    type=FiniteFloat(1.0, min_open=True),
    default=10.0,
    show_default=True,
    help="A spike (exploding gradient) is a step whose norm exceeds this many times "
    "the median of the previous --window steps.",
)
@click.option(
    "--window",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="How many previous steps the running median of a spike looks at.",
)
@json_option
@quiet_option
@click.pass_context
def clip_stats(
    ctx: click.Context,
    run: str | None,
    store: Path | None,
    best: bool,
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
    norms, exploding-gradient spikes and non-finite steps, and a suggested
    --clip-norm with its reason. --probe CORPUS computes fresh gradients of
    the checkpoint on a few batches instead and adds what clipping at other
    thresholds would do, including how far value clipping turns the gradient.
    """
    from click.core import ParameterSource

    from charrnn import clipstats
    from charrnn.console import Log, rich_console
    from charrnn.errors import CheckpointError
    from charrnn.trainer import norm_groups

    log = Log(quiet)
    if not probe_paths:
        for name in ("batches", "batch_size", "seq_len"):
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} applies only with --probe")
    ck, model, vocab = _load_for_inference(store, run, best, log)
    meta = ck.meta
    optim = meta.get("optim") or {}
    train_meta = meta.get("train") or {}
    clip_norm, clip_value = optim.get("clip_norm"), optim.get("clip_value")
    _, groups, _ = norm_groups(model.cfg)
    if probe_paths:
        sb = _clip_probe_batches(
            probe_paths,
            meta,
            vocab,
            batch_size or int(train_meta.get("batch_size", 32)),
            seq_len or int(train_meta.get("seq_len", 64)),
            log,
        )
        n = min(batches, sb.n_batches)
        if n < batches:
            log.info(
                f"the corpus holds only {n} batch(es) of {sb.batch_size}x{sb.seq_len}; "
                "probing those (smaller --batch-size or --seq-len give more)"
            )
        log.info(
            f"probing {', '.join(p if p != '-' else 'stdin' for p in probe_paths)}: "
            f"{n} batch(es) of "
            f"{sb.batch_size}x{sb.seq_len}, gradients only"
        )
        pr = clipstats.probe(model, sb, n, clip_norm, clip_value)
        series = pr.series
        stats = clipstats.summarize_probe(
            pr, clip_norm, clip_value, factor=spike_factor, window=window
        )
        stats["probe"] = {
            "corpus": list(probe_paths),
            "batch_size": sb.batch_size,
            "seq_len": sb.seq_len,
            **stats["probe"],
        }
    else:
        try:
            series = clipstats.Series.from_arrays(ck.arrays, groups)
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{ck.path}: training history is malformed ({e})") from None
        if series.step.shape[0] == 0:
            raise CheckpointError(
                f"{ck.path} holds no training history; measure fresh gradients with --probe CORPUS"
            )
        stats = clipstats.summarize(
            series, clip_norm, clip_value, factor=spike_factor, window=window
        )
        stats["probe"] = None
    cfg = model.cfg
    doc = {
        "schema": clipstats.SCHEMA,
        "mode": "probe" if probe_paths else "history",
        "run": meta.get("run", ck.run),
        "checkpoint": str(ck.path),
        "step": ck.step,
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
        },
        **stats,
    }
    if json:
        _emit_json(doc)
        return
    from charrnn.clipreport import render

    render(doc, series, rich_console())


def _clip_probe_batches(paths: tuple[str, ...], meta: dict, vocab, B: int, T: int, log):
    """Batches of the probe corpus in the model's ids; smaller ones if the corpus is short."""
    from charrnn.batches import make_batches, min_train_chars
    from charrnn.corpus import CorpusOptions, load_corpus
    from charrnn.errors import VocabError
    from charrnn.tokenizer import unknown_message

    if list(paths).count("-") > 1:
        raise click.UsageError("stdin ('-') can be read only once")
    cp = load_corpus(
        list(paths), CorpusOptions.from_json(meta.get("corpus", {}).get("options", {}))
    )
    unknown = tuple(c for c in cp.vocab.chars if c not in vocab.index)
    if unknown:
        raise VocabError(
            unknown_message(unknown, ", ".join(paths))
            + "; probe with text like the training corpus",
            unknown=unknown,
        )
    lut = vocab.encode_codepoints(cp.vocab.codepoints)  # (V',) model id of each corpus id
    ids = lut[cp.ids]  # (N,) the corpus in the model's ids
    n = ids.shape[0]
    if n < min_train_chars(B, T):
        B2 = min(B, n // (T + 1))
        B2, T2 = (B2, T) if B2 >= 1 else (1, n - 1)
        log.info(
            f"the corpus has {n:,} characters, too few for batches of {B}x{T}; "
            f"probing with {B2}x{T2}"
        )
        B, T = B2, T2
    return make_batches(ids, 0, n, B, T)


# --------------------------------------------------------------------------- runs


@cli.command(epilog=_epilog())
@store_option
@json_option
def runs(store: Path | None, json: bool) -> None:
    """List the runs in the store, most recently trained last."""
    st = _store(store)
    infos = st.runs()
    if json:
        _emit_json(
            [
                {
                    "run": r.name,
                    "latest_step": r.latest_step,
                    "checkpoints": r.n_checkpoints,
                    "updated": r.updated,
                    "has_best": r.has_best,
                }
                for r in infos
            ]
        )
        return
    if not infos:
        click.echo(f"no runs in {st.root}", err=True)
        return
    for r in infos:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.updated))
        click.echo(f"{r.name}\tstep {r.latest_step}\t{r.n_checkpoints} checkpoint(s)\t{when}")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure becomes one line on stderr and a documented exit code."""
    try:
        # make_context + invoke rather than cli.main: click's main turns EPIPE into exit 1
        args = sys.argv[1:] if argv is None else list(argv)
        with cli.make_context("charrnn", args) as ctx:
            rv = cli.invoke(ctx)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        click.echo("charrnn: interrupted", err=True)
        code = EXIT_SIGINT
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except CharrnnError as e:
        click.echo(f"charrnn: error: {e}", err=True)
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
    except OSError as e:  # e.g. writing the samples to a full disk
        click.echo(f"charrnn: error: {e.strerror or e}", err=True)
        code = EXIT_IO
    except MemoryError:
        click.echo("charrnn: error: out of memory", err=True)
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
