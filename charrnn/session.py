"""A training session: everything ``charrnn train`` does, without the command line.

    from charrnn.request import TrainRequest
    from charrnn.session import run_training
    result = run_training(TrainRequest(corpus=("data/dinos.txt",), steps=200))
    result.return_code        # 0, or 130 / 143 when a signal stopped it (after saving)

The way through one session::

    TrainRequest ─ corpus, run name ─▶ lock the run ─▶ read the corpus (token cache)
        ─▶ resume the latest checkpoint (settings checked) or start fresh
        ─▶ trainer.train: a checkpoint at every evaluation, samples on a terminal
        ─▶ final save ─▶ TrainResult (status, summary, return code)

Settings are the config dataclasses themselves (ModelConfig, OptimConfig,
TrainConfig, CorpusOptions); ``explicit`` names the options the user set, which
is what resuming needs to know (an explicit --lr overrides the saved one; an
explicit --cell that differs from the saved run is refused). Domain errors are
raised, each with its exit code; progress and logs go through ``events`` (a
:class:`charrnn.console.Log` or anything with the same methods), never print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from charrnn import __version__, autoconfig
from charrnn.batches import (
    LineBatches,
    StreamBatches,
    eval_batches,
    fit_batch,
    line_split,
    make_batches,
    split_train_val,
)
from charrnn.console import plural
from charrnn.corpus import Corpus, check_paths, load_corpus, prune_token_cache
from charrnn.errors import (
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    CharrnnError,
    ConfigError,
    CorpusError,
    DivergedError,
)
from charrnn.history import finite_or_none
from charrnn.model import ModelConfig
from charrnn.optim import OptimConfig
from charrnn.reading import CorpusOptions
from charrnn.request import DEFAULT_STEPS, NAMES_LR, OPTIM_OPTION, UNBOUNDED, TrainRequest
from charrnn.store import Store, default_root
from charrnn.trainer import (
    NAMES_PATIENCE,
    EvalStats,
    SaveDue,
    StepStats,
    TrainConfig,
    TrainState,
    diverged_at_end,
    evals_since_best,
)
from charrnn.trainer import train as train_loop

# names mode's validation cadence, where the user set nothing (README "Names mode")
NAMES_EVAL_EVERY = 100  # validations at least this often...
NAMES_EVAL_SHARE = 0.1  # ...unless they would cost more than this share of training time

# model and data settings fixed at a run's start: explicitly different ones are refused
# on resume (eval_every may change; optimizer settings are taken over, see resumed_optim)
FIXED_TRAIN_FIELDS = ("batch_size", "seq_len", "val_fraction", "mode", "split_seed", "max_line")
FIXED_MODEL_FIELDS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("vocab_size", "dtype")
)


# --------------------------------------------------------------------------- the result


@dataclass
class TrainResult:
    """How a session ended; ``return_code`` is the process exit status it stands for."""

    run: str
    status: str  # "done", "interrupted", "time budget spent" or "stopped early"
    state: TrainState
    corpus: Corpus
    n_batches: int  # training batches per epoch
    seconds: float  # wall time of this invocation's training
    checkpoint: Path | None  # the last checkpoint written or resumed from
    signal: int | None = None  # the signal that stopped it
    log_lost: str | None = None  # why log lines stopped getting through (stderr gone), if so
    log_lost_at: int | None = None  # the step at which they stopped
    auto: dict[str, Any] | None = None  # the automatic configuration's choice and reason
    steps_trained: int = 0  # steps this invocation took (0: the run was already finished)

    @property
    def best_step(self) -> int | None:
        """The step of the best validation loss so far (the best checkpoint), if any."""
        return _best_step(self.state)

    @property
    def stop_reason(self) -> str:
        """Why the session ended, in words (the JSON's ``stop_reason``)."""
        ts = self.state
        if self.status == "stopped early":
            since = plural(evals_since_best(ts), "validation")
            reason = (
                f"no new best validation loss in the last {since} "
                f"(best at step {self.best_step}; --patience {ts.train_cfg.patience})"
            )
        else:
            reason = {
                "done": "reached the step target",
                "interrupted": "stopped by a signal",
                "time budget spent": "the --time budget was spent",
            }.get(self.status, self.status)
        finished = self.status in ("done", "stopped early") and not self.steps_trained
        return reason + ("; already so before this command, nothing to do" if finished else "")

    @property
    def return_code(self) -> int:
        if self.signal is None:
            return EXIT_OK
        return EXIT_SIGINT if self.signal == signal.SIGINT else EXIT_SIGTERM

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``charrnn train --json`` (snake_case, no nan)."""
        ts, h = self.state, self.state.history
        train_loss = next((x for x in reversed(h.loss) if math.isfinite(x)), math.nan)
        val = h.val_loss[-1] if h.val_loss else None
        return {
            "run": self.run,
            "status": self.status,
            "step": ts.step,
            "epoch": ts.step / self.n_batches,
            "train_loss": finite_or_none(train_loss),
            "val_loss": finite_or_none(val),
            "val_bits_per_char": finite_or_none(None if val is None else val / math.log(2)),
            "best_val_loss": finite_or_none(ts.best_val),
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
            "steps_trained": self.steps_trained,
            "seconds": self.seconds,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "logging": "ok" if self.log_lost is None else "lost",
            "log_lost_at_step": self.log_lost_at,
            "log_error": self.log_lost,
            "model": ts.model.cfg.to_json(),
            "optim": ts.optimizer.cfg.to_json(),
            "train": ts.train_cfg.to_json(),
            "auto": self.auto,
            "corpus": {
                "sources": list(self.corpus.sources),
                "n_chars": self.corpus.n_chars,
                "vocab_size": self.corpus.vocab.size,
                "is_lines": self.corpus.is_lines,
            },
        }


# --------------------------------------------------------------------------- events


class Bar(Protocol):
    bar: Any  # the live tqdm bar, or None when nothing is drawn

    def update(self, n: int = 1, **postfix: Any) -> None: ...
    def close(self) -> None: ...


class Events(Protocol):
    """Where a session reports progress: :class:`charrnn.console.Log` fits."""

    def info(self, msg: str) -> None: ...
    def warn(self, msg: str) -> None: ...
    def progress(self, total: int, initial: int, desc: str) -> Bar: ...
    def close_progress(self) -> None: ...


class Split(NamedTuple):
    """A corpus cut for training: prose, batches of the head and validation batches of the
    tail; names, batches of the training lines and the validation lines."""

    train: StreamBatches | LineBatches
    val: StreamBatches | LineBatches | None  # None when there is nothing to score
    n_train: int  # characters (prose) or lines (names)
    n_val: int
    val_hashes: np.ndarray | None = None  # names: hashes of the validation lines
    blank_lines: int = 0  # names: empty lines of the corpus (then empty names are names)


def split_batches(ids: np.ndarray, n_chars: int, cfg: TrainConfig, vocab: Any = None) -> Split:
    """Training and validation batches for ``cfg`` (validation shrinks to fit a short tail).

    Names mode (``cfg.names``; needs the ``vocab``) holds out a seeded sample of the
    distinct lines, see :func:`charrnn.batches.line_split`.
    """
    if cfg.names:
        from charrnn.sampler import line_hashes

        sp = line_split(
            ids,
            vocab.eos_id,
            cfg.batch_size,
            cfg.val_fraction,
            cfg.split_seed,
            cfg.seed,
            cfg.max_line,
        )
        val_lines = [
            vocab.decode(ids[sp.starts[i] : sp.starts[i] + sp.lengths[i]])
            for i in sp.val_index.tolist()
        ]
        n_val = 0 if sp.val is None else sp.val.n_lines
        blank = int((sp.lengths == 0).sum())
        return Split(sp.train, sp.val, sp.train.n_lines, n_val, line_hashes(val_lines), blank)
    n_train, n_val = split_train_val(n_chars, cfg.val_fraction)
    train = make_batches(ids, 0, n_train, cfg.batch_size, cfg.seq_len, cfg.seed)
    val = eval_batches(ids, n_train, n_chars, cfg.batch_size, cfg.seq_len)
    return Split(train, val, n_train, n_val)


def describe_split(split: Split, cfg: TrainConfig) -> str:
    """What is trained and validated on, for the log."""
    if isinstance(split.train, LineBatches):
        val = (
            f"validating on {plural(split.n_val, 'distinct held-out line')} "
            f"(--split-seed {cfg.split_seed})"
            if split.val is not None
            else f"no validation ({no_validation_reason(split, cfg)})"
        )
        return (
            f"on {plural(split.n_train, 'line')}, each from the start state "
            f"({plural(split.train.n_batches, 'batch', 'batches')} of "
            f"{plural(split.train.batch_size, 'line')} per epoch), {val}"
        )
    return (
        f"on {split.n_train:,} characters ({plural(split.train.n_batches, 'batch', 'batches')} of "
        f"{cfg.batch_size}x{cfg.seq_len} per epoch), "
        + (
            f"validating on {split.n_val:,}"
            if split.val is not None
            else f"no validation ({no_validation_reason(split, cfg)})"
        )
    )


def no_validation_reason(split: Split, cfg: TrainConfig) -> str:
    """Why a split has no validation, for the log: the user's --val-fraction 0, or a
    corpus too small to hold anything out (see split_lines and eval_batches)."""
    if cfg.val_fraction == 0:
        return "--val-fraction 0"
    if isinstance(split.train, LineBatches):  # split_lines holds out one of two or more
        return "one distinct line: nothing to hold out"
    return "the text is too short to hold out a validation tail"


def resolve_mode(cfg: TrainConfig, corpus: Corpus) -> str:
    """ "names" or "prose" for a fresh run: as asked, or (auto) from the corpus."""
    if cfg.mode != "auto":
        return cfg.mode
    return "names" if corpus.is_lines else "prose"


def names_eval_every(n_lines: int, val_fraction: float, batch_size: int) -> int:
    """Names mode's default validation cadence: every NAMES_EVAL_EVERY steps; on a tiny
    corpus every 3 epochs (at least 10 steps) so that the best model is not passed by;
    on a large one less often, so that a pass (forward only over the validation lines,
    about a third of the cost per character of a training step) takes at most
    NAMES_EVAL_SHARE of the time."""
    epoch = max(1, math.ceil((1 - val_fraction) * n_lines / batch_size))  # steps, about
    every = min(NAMES_EVAL_EVERY, max(10, 3 * epoch))
    affordable = val_fraction * n_lines / batch_size / 3 / NAMES_EVAL_SHARE  # steps
    return every if affordable <= every else int(math.ceil(affordable / 50)) * 50


# --------------------------------------------------------------------------- resuming


def resumed_optim(meta: dict[str, Any], given: OptimConfig, explicit: frozenset[str]):
    """The saved optimizer settings, with the ones set explicitly now taking over."""
    saved = OptimConfig.from_json(meta.get("optim", {}))
    if "optimizer" in explicit and given.name != saved.name:
        raise ConfigError(
            f"run '{meta.get('run')}' was trained with --optimizer {saved.name}; pass --fresh "
            "to start over with another optimizer, or --run NAME for a new run"
        )
    changes = {
        f.name: getattr(given, f.name)
        for f in dataclasses.fields(OptimConfig)
        if f.name != "name" and OPTIM_OPTION.get(f.name, f.name) in explicit
    }
    return dataclasses.replace(saved, **changes)


def _check_reading(run: Any, saved: Any, given: CorpusOptions) -> None:
    """The corpus must be read as the run read it: name the option that differs."""
    if not isinstance(saved, dict):
        return
    flags = {
        "lowercase": lambda v: "--lowercase" if v else "--keep-case",
        "newline": lambda v: f"--newline {v}",
        "encoding": lambda v: f"--encoding {v}",
    }
    for name, flag in flags.items():
        was, now = saved.get(name), getattr(given, name)
        if was is not None and was != now:
            raise ConfigError(
                f"run '{run}' was trained with {flag(was)}, this command reads the corpus "
                f"with {flag(now)}; pass {flag(was)} to resume it, --run NAME for a new run, "
                "or --fresh to start it over"
            )


def check_resume(meta: dict[str, Any], corpus: Corpus, request: TrainRequest) -> None:
    """Refuse to resume with a changed corpus or with explicitly different model options."""
    old = meta.get("corpus", {})
    _check_reading(meta.get("run"), old.get("options"), corpus.options)
    if old.get("sha256") != corpus.sha256 and not request.allow_changed_corpus:
        raise CorpusError(
            f"the corpus changed since run '{meta.get('run')}' was last saved; pass "
            "--allow-changed-corpus to resume on it, --fresh to start over, or --run NAME"
        )
    vocab = meta.get("vocab", {}).get("chars")
    if vocab is not None and list(vocab) != list(corpus.vocab.chars):
        raise CorpusError(
            "the corpus has a different character set than the saved run; "
            "pass --fresh to start over or --run NAME for a new run"
        )
    given = {
        **{name: getattr(request.model, name) for name in FIXED_MODEL_FIELDS},
        **{name: getattr(request.train, name) for name in FIXED_TRAIN_FIELDS},
    }
    saved = {**meta.get("model", {}), **meta.get("train", {})}
    for name, value in given.items():
        if name in request.explicit and name in saved and saved[name] != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"run '{meta.get('run')}' was trained with {flag} {saved[name]}; pass --fresh "
                "to start over with new settings, or --run NAME for a new run"
            )


# --------------------------------------------------------------------------- the session


def run_training(request: TrainRequest, events: Events | None = None) -> TrainResult:
    """Train as ``request`` says; raises CharrnnError subclasses (each with its exit code)."""
    if events is None:
        from charrnn.console import Log

        events = Log(quiet=True)
    from charrnn.schema import check  # every checkpoint read is checked field by field

    store = Store(request.store if request.store is not None else default_root(), schema=check)
    run = request.run_name
    run_dir = store.run_dir(run)
    check_paths(request.paths)  # a device or FIFO would hang while holding the lock

    def waiting(pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "another process"
        limit = f" (at most {request.wait:g}s)" if request.wait is not True else ""
        events.info(f"run '{run}' is locked by {who}; waiting for it to finish{limit}")

    created = not run_dir.exists()  # a train that fails before its first save removes it
    with store.lock(run, wait=request.wait, on_wait=waiting):
        try:
            return _session(request, events, store, run)
        except BaseException:
            if created:
                _forget(store, run)
            raise


def _forget(store: Store, run: str) -> None:
    """Remove the run directory this session created, if it holds nothing to keep: the
    token cache it wrote and the lock file go, files charrnn did not name stay. The store
    clears the cache only once it knows its lock is still on that directory: a directory
    moved away meanwhile leaves whatever now stands at the run's path alone."""

    def clear(run_dir: Path) -> None:
        prune_token_cache(run_dir / "cache", None)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "cache").rmdir()  # only when empty

    with contextlib.suppress(CharrnnError, OSError):
        store.forget(run, clear)


def _session(request: TrainRequest, events: Events, store: Store, run: str) -> TrainResult:
    """The session under the run's lock."""
    run_dir = store.run_dir(run)
    for p in store.clean_leftovers(run):
        events.info(f"removed leftover {p}")
    t0 = time.perf_counter()
    corpus = load_corpus(request.paths, request.corpus_options, cache_dir=run_dir / "cache")
    prune_token_cache(run_dir / "cache", corpus.sha256)
    # the corpus and "resuming" lines wait until training proceeds: a finished run says
    # only that it has nothing to do (one line, as cron's log wants); an error shows them
    held = _Held(events)
    look = "one item per line" if corpus.is_lines else "prose"
    asked = request.train.mode  # a --mode that overrides the look is said beside it
    if asked != "auto" and (asked == "names") != corpus.is_lines:
        look += f" by its shape (--mode {asked} given)"
    held.info(
        f"corpus {', '.join(corpus.sources)}: {corpus.n_chars:,} characters, "
        f"{corpus.vocab.size} distinct, {look} ({time.perf_counter() - t0:.1f}s)"
    )
    try:
        state, resumed_from, auto = _start_or_resume(store, run, corpus, request, held)
        split = split_batches(corpus.ids, corpus.n_chars, state.train_cfg, corpus.vocab)
        total = request.target_steps(split.train.n_batches, state.train_cfg.names)
    except BaseException:
        held.release()
        raise
    _fix_decay_end(state, total)
    if state.step >= total:
        events.info(f"run '{run}' already has {state.step} steps (target {total}); nothing to do")
        n_batches = split.train.n_batches
        return TrainResult(run, "done", state, corpus, n_batches, 0.0, resumed_from, auto=auto)
    if stopped_early(state):
        events.info(
            f"run '{run}' stopped early at step {state.step} (best at step "
            f"{_best_step(state)}, then {plural(evals_since_best(state), 'validation')} "
            "without a new best); nothing to do (--patience 0 trains on to the step target, "
            "a larger --patience waits longer for a new best)"
        )
        n_batches = split.train.n_batches
        return TrainResult(
            run, "stopped early", state, corpus, n_batches, 0.0, resumed_from, auto=auto
        )
    held.release()
    if request.fresh:  # the old run stays usable until the new one's first save
        retired = store.retire(run)
        if retired:
            events.info(
                f"--fresh: {plural(retired, 'checkpoint')} of run '{run}' set aside; "
                "they go once the new run saves its first"
            )
    saver = _Saver(store, run, state, corpus, request.keep, events, auto, split, resumed_from)
    result = _train(request, events, state, corpus, split, total, saver, resumed_from)
    result.auto = auto
    return result


class _Held:
    """Events whose info lines wait for :meth:`release` (dropped if it never comes);
    warnings go through at once."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)

    def warn(self, msg: str) -> None:
        self.events.warn(msg)

    def progress(self, total: int, initial: int, desc: str) -> Bar:
        return self.events.progress(total, initial, desc)

    def close_progress(self) -> None:
        self.events.close_progress()

    def release(self) -> None:
        for msg in self.lines:
            self.events.info(msg)
        self.lines.clear()


def stopped_early(state: TrainState) -> bool:
    """Whether the run has ended by early stopping under its (maybe new) patience: its
    last validation is at its last step and the patience has run out there. The run's
    validation history is in every checkpoint, so this holds across invocations; the
    same command then has nothing to do, and --patience 0 or a larger one trains on."""
    patience = state.train_cfg.patience or 0
    h = state.history
    return (
        patience > 0
        and bool(h.val_step)
        and h.val_step[-1] == state.step
        and evals_since_best(state) >= patience
    )


def _best_step(state: TrainState) -> int | None:
    h = state.history
    return h.val_step[int(np.argmin(h.val_loss))] if h.val_loss else None


def _start_or_resume(
    store: Store, run: str, corpus: Corpus, request: TrainRequest, events: Events
) -> tuple[TrainState, Path | None, dict[str, Any] | None]:
    """The run's latest checkpoint, checked against the request, or a fresh state
    (configured by charrnn.autoconfig where the user chose nothing)."""
    if not request.fresh and store.checkpoints(run):
        ck = store.latest(run, on_warning=events.warn)
        check_resume(ck.meta, corpus, request)
        optim = resumed_optim(ck.meta, request.optim, request.explicit)
        state = TrainState.from_checkpoint(ck.arrays, ck.meta, optim)
        changes: dict[str, Any] = {}
        if "eval_every" in request.explicit:
            changes["eval_every"] = request.train.eval_every
            changes["eval_seconds"] = request.train.eval_seconds
        for name in ("eval_max_batches", "patience"):
            if name in request.explicit:
                changes[name] = getattr(request.train, name)
        if state.train_cfg.mode == "auto":  # saved before names mode: it trained streams
            changes["mode"] = "prose"
        state.train_cfg = dataclasses.replace(state.train_cfg, **changes)
        events.info(f"resuming run '{run}' from step {state.step} ({ck.path.name})")
        return state, ck.path, ck.meta.get("auto")
    model = dataclasses.replace(request.model, vocab_size=corpus.vocab.size)
    model, train_cfg, optim, auto = fresh_settings(request, corpus, model, events)
    from charrnn import memory

    B, T = train_cfg.batch_size, train_cfg.seq_len
    if train_cfg.names:  # at most as many lines as there are, each up to max_line
        B, T = min(B, max(corpus.n_lines, 1)), train_cfg.max_line
    memory.require(
        memory.train_bytes(model, B, T, corpus.n_chars),
        f"a {model.layers}x{model.hidden} {model.cell} trained on batches of {B}x{T}",
        "use a smaller --hidden, --layers, --batch-size or --seq-len",
    )
    return TrainState.fresh(model, optim, train_cfg), None, auto


def fresh_settings(
    request: TrainRequest, corpus: Corpus, model: ModelConfig, events: Events
) -> tuple[ModelConfig, TrainConfig, OptimConfig, dict[str, Any]]:
    """A new run's configs: the mode resolved; names mode's defaults for what the user did
    not set; prose configured by charrnn.autoconfig (where the user chose nothing), then a
    batch that fits a short corpus. Also the automatic choice, for the checkpoint."""
    cfg, optim = request.train, request.optim
    given = request.explicit
    mode = resolve_mode(cfg, corpus)
    if mode == "names" and corpus.vocab.eos_id is None:
        raise CorpusError(
            f"names mode needs one item per line, and {', '.join(corpus.sources)} has no "
            "newline; use --mode prose"
        )
    facts = autoconfig.CorpusFacts(
        corpus.n_chars, corpus.vocab.size, mode == "names", corpus.n_lines
    )
    if mode == "names":  # autoconfig keeps the names-mode defaults: it only says so
        choice = autoconfig.choose(facts, autoconfig.Budget(), model, optim, cfg, given)
        cfg = dataclasses.replace(
            cfg,
            mode=mode,
            patience=NAMES_PATIENCE if cfg.patience is None else cfg.patience,
            eval_every=cfg.eval_every
            if "eval_every" in given
            else names_eval_every(corpus.n_lines, cfg.val_fraction, cfg.batch_size),
        )
        if "lr" not in given:
            optim = dataclasses.replace(optim, lr=NAMES_LR)
        return model, cfg, optim, choice.to_json()
    budget = autoconfig.Budget(request.steps, request.epochs, request.time_budget)
    choice = autoconfig.choose(
        facts,
        budget,
        model,
        optim,
        cfg,
        given,
        DEFAULT_STEPS,
        speed=_measured_speed if request.time_budget is not None else None,
    )
    if choice.applied:
        events.info(choice.reason)
    model, optim = choice.model, choice.optim
    cfg = dataclasses.replace(choice.train, mode=mode, patience=choice.train.patience or 0)
    n_train, _ = split_train_val(corpus.n_chars, cfg.val_fraction)
    B, T = fit_batch(n_train, cfg.batch_size, cfg.seq_len)
    if (cfg.batch_size, cfg.seq_len) != (B, T):
        events.info(
            f"the training text is short ({n_train:,} characters): training with "
            f"--batch-size {B} --seq-len {T} instead of {cfg.batch_size}x{cfg.seq_len}, "
            f"the most that fit one batch"
        )
        cfg = dataclasses.replace(cfg, batch_size=B, seq_len=T)
    return model, cfg, optim, choice.to_json()


def _measured_speed(cfg: ModelConfig, batch_size: int, seq_len: int) -> float:
    """Training chars/s of ``cfg`` on this machine now: one (B, T) step timed twice after
    one untimed (about three steps of each size autoconfig considers for a time budget)."""
    from charrnn.model import CharRNN

    rng = np.random.default_rng(0)
    model = CharRNN(cfg, rng=rng)
    x = rng.integers(0, cfg.vocab_size, (batch_size, seq_len + 1)).astype(np.int32)  # (B, T+1)
    xs, ys = x[:, :-1].copy(), x[:, 1:].copy()  # (B, T) each
    model.loss_and_grads(xs, ys, None, rng=rng)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        model.loss_and_grads(xs, ys, None, rng=rng)
        times.append(time.perf_counter() - t)
    return batch_size * seq_len / max(min(times), 1e-9)


def _fix_decay_end(state: TrainState, end: int) -> None:
    """A cosine schedule whose end is not known yet ends at the run's step target (none
    for a time budget: the session measures the speed first, see _HorizonMeter)."""
    cfg = state.optimizer.cfg
    if cfg.schedule == "cosine" and cfg.decay_steps == 0 and end < UNBOUNDED:
        state.optimizer.cfg = dataclasses.replace(cfg, decay_steps=max(end, cfg.warmup + 1))


class _HorizonMeter:
    """--time with a cosine schedule not yet fixed: time a few steps early in the run,
    then fix the step where the budget will be spent (saved with the optimizer's
    settings, so a resume decays the same way)."""

    def __init__(self, state: TrainState, budget: float | None, split: Split) -> None:
        cfg = state.optimizer.cfg
        self.state = state
        self.active = budget is not None and cfg.schedule == "cosine" and cfg.decay_steps == 0
        self.budget = budget or 0.0
        tc = state.train_cfg
        n_val = split.val.n_batches if split.val is not None else 0
        self.eval_share = autoconfig.eval_share(n_val, tc.eval_max_batches, tc.eval_every)
        self.t_start = time.perf_counter()
        self.first_step = state.step
        self.t0: float | None = None  # after the settling steps
        self.step0 = 0

    def __call__(self, events: Events, force: bool = False) -> None:
        if not self.active:
            return
        now, step = time.perf_counter(), self.state.step
        if self.t0 is None:
            if step - self.first_step >= autoconfig.SETTLE_STEPS:
                self.t0, self.step0 = now, step
            if not force:
                return
        t0 = self.t0 if self.t0 is not None else self.t_start
        step0 = self.step0 if self.t0 is not None else self.first_step
        done, secs = step - step0, now - t0
        if not force and done < autoconfig.MEASURE_STEPS and secs < autoconfig.MEASURE_SECONDS:
            return
        self.active = False
        per_step = secs / max(done, 1)
        left = self.budget - (now - self.t_start)
        end = autoconfig.decay_end(step, per_step, left, self.eval_share)
        cfg = self.state.optimizer.cfg
        self.state.optimizer.cfg = dataclasses.replace(cfg, decay_steps=max(end, cfg.warmup + 1))
        events.info(
            f"schedule: {per_step * 1e3:.0f} ms a step over steps {step0}-{step}, so the "
            f"learning rate decays until step {end} (fixed in the checkpoint)"
        )


class _Saver:
    """Writes the session's state as a checkpoint of the run, corpus facts included."""

    def __init__(
        self,
        store: Store,
        run: str,
        state: TrainState,
        corpus: Corpus,
        keep: int,
        events: Events,
        auto: dict[str, Any] | None = None,
        split: Split | None = None,
        resumed_from: Path | None = None,
    ):
        self.store, self.run, self.state, self.keep = store, run, state, keep
        self.resumed_from = resumed_from  # the checkpoint the session started from
        self.events = events  # for a prune that fails (the checkpoint itself is safe)
        self.auto = auto
        self.extra = _corpus_arrays(corpus, state.train_cfg.names)
        self.corpus_meta = _corpus_meta(corpus)
        if split is not None and split.val_hashes is not None:
            # which names are validation names (sample's origin), whether blank lines are names
            self.extra["corpus.val_hashes"] = split.val_hashes
            self.corpus_meta["blank_lines"] = split.blank_lines
        self.vocab = corpus.vocab.to_json()
        self.saved_step = state.step
        # the weights a checkpoint holds are known sane once validated, or once the loss of
        # a later step was sane (the first such step ran on them: steps whose loss was not
        # leave the weights alone); until then, a divergence discards it
        self.unconfirmed: list[Path] = []
        self.sane_seen = False  # whether a step of this session had a sane loss
        self.unchanged_sane = False  # the last step's loss was sane and its update skipped

    def step(self, ev: StepStats) -> None:
        """A step is done: a sane loss confirms the checkpoints written before it, and
        retention, held back while they were not, prunes to --keep. The session's first
        sane loss confirms the checkpoint it resumed from (the last of a run without
        validation or of an interrupted one was saved unconfirmed, beside --keep others).
        Retention counts from the confirmed checkpoint: one the store holds newer than the
        one resumed from is unreadable (latest() skipped it), and never makes it go."""
        if ev.loss_ok:
            vouched = self.unconfirmed[-1] if self.unconfirmed else None
            if vouched is None and not self.sane_seen:
                vouched = self.resumed_from
            self.unconfirmed.clear()
            if vouched is not None:
                self.store.settle(self.run, self.keep, vouched, self.events.warn)
            self.sane_seen = True
        self.unchanged_sane = ev.loss_ok and ev.skipped  # the weights it ran on, still

    def __call__(self, best: bool, validated: bool = False) -> Path:
        """Save the state now. One not yet known sane prunes nothing: with --keep 1 it
        would delete the last good checkpoint, and a divergence then removes this one."""
        arrays, meta = self._payload()
        confirmed = validated or self.unchanged_sane
        path = self.store.save(
            self.run,
            self.state.step,
            arrays,
            meta,
            best=best,
            keep=self.keep,
            on_warning=self.events.warn,
            confirmed=confirmed,
        )
        self.saved_step = self.state.step
        if confirmed:
            self.unconfirmed.clear()  # older ones were kept or pruned by retention
        else:
            self.unconfirmed.append(path)
        return path

    def _payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = self.state.to_checkpoint()
        arrays.update(self.extra)
        meta["corpus"] = self.corpus_meta
        meta["vocab"] = self.vocab
        meta["run"] = self.run
        meta["charrnn"] = __version__
        if self.auto is not None:
            meta["auto"] = self.auto
        return arrays, meta

    @property
    def unsaved(self) -> bool:
        return self.state.step != self.saved_step

    def diverged(self, e: DivergedError, events: Events) -> DivergedError:
        """Training diverged: the weights now are the broken ones (the update that broke
        them had a sane loss; the skipped steps since left them as they were). No checkpoint
        is written from them, and the ones this session wrote since the last update that
        had a sane loss go; the state is kept as RUN/diverged.npz for clip-stats. Returns
        the error saying where the run stays and what to do."""
        for path in self.unconfirmed:
            if self.store.discard(self.run, path):
                events.info(f"removed {path.name}: its weights diverged")
        self.unconfirmed.clear()
        removed = self._discard_broken_start()
        if removed is not None:
            events.info(
                f"removed {removed.name}: its weights diverge before any update, and no sane "
                "loss had confirmed them when it was saved"
            )
        try:
            arrays, meta = self._payload()
            path = self.store.save_diverged(self.run, self.state.step, arrays, meta)
            events.info(
                f"saved the diverged state as {path} (not a checkpoint): "
                f"`charrnn clip-stats {self.run}:diverged` shows what happened"
            )
        except CharrnnError as err:
            events.warn(f"diverged state not saved: {err}")
        what, advice = e.what or str(e), e.advice or "a lower learning rate"
        left = self.store.checkpoints(self.run)
        stay = Store.step_of(left[-1]) if left else None  # the step the run stays at
        if stay is None:
            then = f"the run has no checkpoint yet: train it again with {advice}"
        elif removed is not None:  # no update of this session ran: its settings are not why
            then = (
                f"its checkpoint at step {Store.step_of(removed)} was broken (it diverges "
                f"before any update) and is removed: the run stays at its previous checkpoint "
                f"(step {stay}): run the same command again to train on from step {stay}"
            )
        elif not self.sane_seen:  # no sane loss since it was loaded: it is broken itself
            then = (
                f"the run's checkpoint at step {stay} diverges before any update "
                "(its weights were broken when it was saved): start over with --fresh"
            )
        else:
            then = (
                f"the run stays at its last checkpoint (step {stay}): resume with "
                f"{advice}, or start over with --fresh"
            )
        return DivergedError(f"{what}; {then}", what=what, advice=advice)

    def _discard_broken_start(self) -> Path | None:
        """The checkpoint this session resumed from, removed if it is broken and was never
        vouched for: no step of the session had a sane loss on its weights, it is the run's
        newest, it was saved unconfirmed (the last of a run without validation or of an
        interrupted one, found sane by no later step; a file without the record counts as
        unconfirmed) and an older, readable checkpoint exists for the run to stay at.
        Without this, every re-run resumed from it and diverged again, and the advice left,
        --fresh, deleted the sane checkpoint kept beside it for exactly this case. best.npz's
        checkpoint is never removed (Store.discard refuses it). Returns the removed path."""
        path = self.resumed_from
        if self.sane_seen or path is None or path.parent != self.store.run_dir(self.run):
            return None  # (one of a --fresh start's .previous is the old run's, not to judge)
        left = self.store.checkpoints(self.run)
        if not left or left[-1] != path:
            return None
        try:
            if self.store.load(path).confirmed:
                return None
        except CharrnnError:
            return None
        for older in reversed(left[:-1]):
            try:
                self.store.load(older)
            except CharrnnError:
                continue
            return path if self.store.discard(self.run, path) else None
        return None


def _train(
    request: TrainRequest,
    events: Events,
    state: TrainState,
    corpus: Corpus,
    split: Split,
    total: int,
    save: _Saver,
    last_path: Path | None,
) -> TrainResult:
    """The loop around trainer.train: saves, progress, signals, the final save."""
    stop: list[Any] = [False, None]  # [stop requested, signal number]
    bar = events.progress(total if total < UNBOUNDED else 0, state.step, f"train {save.run}")
    _announce(events, state, split)
    samples = _sample_shower(request, state, corpus, events)
    horizon = _HorizonMeter(state, request.time_budget, split)
    t_start = time.perf_counter()
    progress = _Progress(events, bar, samples, state, no_validation_reason(split, state.train_cfg))
    early = False
    bad = 0  # steps in a row whose loss was not sane
    start_step = state.step
    with _stop_on_signals(stop):
        try:
            for ev in train_loop(
                state,
                split.train,
                split.val,
                total_steps=total,
                time_budget=request.time_budget,
                stop_flag=stop,
                save_every=request.save_every,
            ):
                progress.watch_log()
                if isinstance(ev, StepStats):
                    horizon(events)
                    progress.step(ev)
                    save.step(ev)
                    bad = 0 if ev.loss_ok else bad + 1
                    continue
                horizon(events, force=True)  # fixed before any checkpoint holds it
                validated = isinstance(ev, EvalStats) and math.isfinite(ev.val_loss)
                if bad and not validated:  # the last loss says these weights may be broken
                    events.info(
                        f"step {ev.step}: no checkpoint while the loss is not sane "
                        f"({plural(bad, 'step')} in a row)"
                    )
                elif isinstance(ev, SaveDue):
                    last_path = save(False)
                    events.info(f"step {ev.step}: saved {last_path.name}")
                else:
                    last_path = save(ev.improved, validated)
                    early = ev.early_stop
                    progress.evaluated(ev, last_path)
        except DivergedError as e:
            progress.close()
            raise save.diverged(e, events) from None
        except BaseException:  # a second Ctrl-C and the like: the last checkpoint stands
            progress.close()
            raise
        progress.close()
        elapsed = time.perf_counter() - t_start
        if save.unsaved and not bad:
            last_path = save(False)  # a signal now only sets the flag: the save completes
        elif save.unsaved:  # weights whose last loss was not sane: not saved, as in the loop,
            # and not "done" either: the same command would end the same way, every time
            ended = diverged_at_end(
                bad, state.step, state.model.cfg.vocab_size, state.optimizer.cfg
            )
            raise save.diverged(ended, events)
    if stop[0]:
        status = "interrupted"
    elif early:
        status = "stopped early"
    else:
        status = "done" if state.step >= total else "time budget spent"
    events.info(
        f"{status}: run '{save.run}' at step {state.step}"
        f"{f'/{total}' if total < UNBOUNDED else ''} in {elapsed:.1f}s"
        + (f", saved {last_path}" if last_path else "")
    )
    progress.watch_log()  # the last line may be the one that did not get through
    signum = stop[1] if stop[0] else None
    n_batches = split.train.n_batches
    result = TrainResult(
        save.run, status, state, corpus, n_batches, elapsed, last_path, signum, *progress.log
    )
    result.steps_trained = state.step - start_step
    return result


def _announce(events: Events, state: TrainState, split: Split) -> None:
    """The session's first log lines: the model, the data, lines cut to --max-line."""
    m, cfg = state.model.cfg, state.train_cfg
    events.info(f"training {m.cell} {m.layers}x{m.hidden} {describe_split(split, cfg)}")
    if isinstance(split.train, LineBatches) and split.train.n_capped:
        events.warn(
            f"{split.train.n_capped} line(s) longer than --max-line {cfg.max_line}: trained on "
            "their first characters only"
        )


class _Progress:
    """What a session shows while it trains: the bar, a line per validation, samples on a
    terminal, and the step at which log lines stopped getting through (stderr gone:
    training goes on, and the result says so)."""

    def __init__(
        self,
        events: Events,
        bar: Bar,
        samples: Callable[[int], None],
        state: TrainState,
        no_val: str,
    ) -> None:
        self.events, self.bar, self.samples, self.state = events, bar, samples, state
        self.no_val = no_val  # why there is no validation, when there is none
        self.chars_per_sec = 0.0  # of the last step
        # the bar's fields: loss of the last step, chars/s, and the last validation loss named
        # with the step it was measured at (so it never looks current when it is not)
        self.postfix: dict[str, str] = {}
        self.lost_at: int | None = None
        self.watch_log()

    @property
    def log(self) -> tuple[str | None, int | None]:
        """Why log lines stopped getting through, and from which step (None: they did not)."""
        return getattr(self.events, "lost", None), self.lost_at

    def watch_log(self) -> None:
        if self.lost_at is None and getattr(self.events, "lost", None) is not None:
            self.lost_at = self.state.step

    def step(self, ev: StepStats) -> None:
        self.chars_per_sec = ev.chars_per_sec
        if ev.skipped:
            why = (
                "update skipped (it would overflow the parameters)"
                if ev.loss_ok
                else "loss non-finite or far above uniform guessing, update skipped"
            )
            self.events.warn(f"step {ev.step}: {why}")
        self.postfix["loss"] = f"{ev.loss:.3f}"
        self.postfix["chars/s"] = f"{self.chars_per_sec / 1e3:.1f}k"
        self.bar.update(1, **self.postfix)
        if self.bar.bar is not None:
            self.samples(ev.step)

    def evaluated(self, ev: EvalStats, path: Path) -> None:
        self.events.info(_eval_line(ev, self.chars_per_sec, path, self.no_val))
        if math.isfinite(ev.val_loss):
            self.postfix = {k: v for k, v in self.postfix.items() if not k.startswith("val")}
            self.postfix[f"val@{ev.step}"] = f"{ev.val_loss:.3f}"
            self.bar.update(0, **self.postfix)  # shown now, not at the next step

    def close(self) -> None:
        self.bar.close()
        self.events.close_progress()


def _eval_line(ev: EvalStats, chars_per_sec: float, path: Path, no_val: str) -> str:
    """The log line of a validation pass (or of the checkpoint, without validation:
    ``no_val`` says why)."""
    speed = f"{chars_per_sec / 1e3:.1f}k chars/s"
    if not math.isfinite(ev.val_loss):
        return f"step {ev.step}: no validation ({no_val})  {speed}  saved {path.name}"
    return (
        f"step {ev.step}: val {ev.val_loss:.4f} nats/char ({ev.val_loss / math.log(2):.3f} bits)"
        f"{' best' if ev.improved else ''}  {speed}  saved {path.name}"
    )


def _sample_shower(
    request: TrainRequest, state: TrainState, corpus: Corpus, events: Events
) -> Callable[[int], None]:
    """Every ``sample_every`` steps, a few samples of the model so far (terminals only)."""
    rng: list[np.random.Generator] = []  # made on first use: no draw unless shown

    def show(step: int) -> None:
        if not request.sample_every or step % request.sample_every:
            return
        from charrnn.sampler import SampleOptions, Sampler

        if not rng:
            rng.append(np.random.default_rng(state.train_cfg.seed + 1))
        sampler = Sampler(state.model, corpus.vocab)
        if state.train_cfg.names:
            got = sampler.lines(3, 60, SampleOptions(0.8), rng[0])
            events.info("  samples: " + " | ".join(s.text for s in got))
        else:
            chunk = next(sampler.stream(120, SampleOptions(0.8), rng[0], chunk=120))
            events.info("  sample: " + "".join(chunk[0]).replace("\n", " / "))

    return show


@contextlib.contextmanager
def _stop_on_signals(stop: list[Any]) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the step, save, stop. Second: leave at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop[0]:
            raise KeyboardInterrupt
        stop[0] = True
        stop[1] = signum

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread (some test runners)
            old[s] = signal.signal(s, handler)
    try:
        yield
    finally:  # restored after the final save
        for s, h in old.items():
            signal.signal(s, h)


def _corpus_meta(corpus: Corpus) -> dict[str, Any]:
    return {
        "sources": list(corpus.sources),
        "sha256": corpus.sha256,
        "n_chars": corpus.n_chars,
        "n_lines": corpus.n_lines,
        "is_lines": corpus.is_lines,
        "options": corpus.options.to_json(),
    }


def _corpus_arrays(corpus: Corpus, names: bool = False) -> dict[str, Any]:
    """Hashes of the corpus's lines (names corpora), so `sample --novel` needs no corpus."""
    if not (names or corpus.is_lines) or corpus.n_chars > 50_000_000:
        return {}
    from charrnn.sampler import line_hashes

    return {"corpus.line_hashes": line_hashes(corpus.lines())}
