"""The training loop, silent: truncated BPTT over B parallel streams (prose), or
batches of whole lines from the start state (names mode).

The trainer yields statistics; the caller (the CLI) decides what to show and
when to checkpoint. Everything needed to resume exactly lives in
:class:`TrainState` and round-trips through :meth:`TrainState.to_checkpoint`
and :meth:`TrainState.from_checkpoint` (plain arrays plus JSON: no pickle).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from charrnn.batches import MAX_LINE_STEPS, Batch, LineBatches, StreamBatches
from charrnn.errors import CheckpointError, DivergedError
from charrnn.history import History
from charrnn.model import CharRNN, ModelConfig, Params, gate_names, param_shapes
from charrnn.optim import ClipResult, OptimConfig, Optimizer, clip_gradients, segment_offsets

MODES = ("auto", "names", "prose")
NAMES_PATIENCE = 5  # names mode's default patience (README "Names mode": how it was measured)

# a training loss this many times uniform guessing's log(V) is divergence, not noise
DIVERGED_FACTOR = 3.0
# no trained model has parameters this large; an update that would make one is not taken
PARAM_LIMIT = 1e15


def diverged(loss: float, vocab_size: int) -> bool:
    """Whether a loss (nats/char) says training has diverged: non-finite, or far above
    the log(V) of guessing uniformly among V characters."""
    return not loss <= DIVERGED_FACTOR * math.log(max(vocab_size, 2))


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = field(  # B: parallel streams
        default=32,
        metadata={
            "help": "Text streams (prose) or lines (names mode) trained side by side (B), "
            "1 or more."
        },
    )
    seq_len: int = field(  # T: steps of truncated backpropagation through time
        default=64,
        metadata={
            "help": "Prose mode: characters per stream per step, how far back gradients flow "
            "(T, truncated backpropagation through time), 1 or more."
        },
    )
    val_fraction: float = field(  # tail of the corpus held out for validation
        default=0.1,
        metadata={
            "help": "Share held out for validation, in [0, 1): the end of a prose corpus; in "
            "names mode a seeded random sample of the distinct lines."
        },
    )
    eval_every: int = field(  # steps between validation passes (each followed by a checkpoint)
        default=250,
        metadata={
            "help": "Steps between validation passes; each is followed by a checkpoint. "
            "[default: 250; names mode: 100, or less often on a large corpus so that validation "
            "takes at most a tenth of the time]"
        },
    )
    eval_seconds: float | None = None  # validate every this many seconds instead of eval_every
    eval_max_batches: int = field(  # cap on validation per pass (bounded time on big corpora)
        default=50,
        metadata={
            "help": "Cap on each validation pass: this many batches of the split (names: "
            "as many characters, spread over the split), so big corpora validate in bounded time."
        },
    )
    max_nonfinite: int = 5  # consecutive non-finite steps before training stops
    seed: int = field(  # initial parameters, dropout masks
        default=0, metadata={"help": "Seed for the initial weights and dropout."}
    )
    mode: str = field(  # "names" | "prose" once a run starts ("auto" is resolved from the corpus)
        default="auto",
        metadata={
            "help": "names: each line is one example, trained from the start state the sampler "
            "uses; prose: truncated BPTT over streams; auto: names for one-item-per-line corpora."
        },
    )
    split_seed: int = field(  # names mode: which distinct lines are validation (not --seed)
        default=0,
        metadata={
            "help": "Names mode: seed of the random sample of distinct lines held out for "
            "validation (independent of --seed)."
        },
    )
    patience: int | None = field(  # validations without a new best before stopping; 0 never
        default=None,
        metadata={
            "help": "Stop after this many validations without a new best (0: never). "
            f"[default: {NAMES_PATIENCE} in names mode, 0 in prose mode]"
        },
    )
    max_line: int = field(  # names mode: cap on the targets of one line
        default=MAX_LINE_STEPS,
        metadata={
            "help": "Names mode: a line longer than this trains on its first this many "
            "characters (its newline is then not a target); the count is reported."
        },
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("batch size and sequence length must be positive")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        if self.eval_every < 1 or self.eval_max_batches < 1 or self.max_nonfinite < 1:
            raise ValueError("eval_every, eval_max_batches and max_nonfinite must be positive")
        if self.eval_seconds is not None and not self.eval_seconds > 0:
            raise ValueError(f"eval_seconds must be positive, not {self.eval_seconds}")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"patience must be >= 0, not {self.patience}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.max_line < 1:
            raise ValueError(f"max_line must be at least 1, not {self.max_line}")

    @property
    def names(self) -> bool:
        """Names mode (each line one example); valid once the mode is resolved."""
        return self.mode == "names"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_DURATION_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration: 90, 90s, 10m, 1h30m, 1.5h, 2d (ValueError otherwise)."""
    t = str(text).strip().lower()
    pos, total = 0, 0.0
    while pos < len(t):
        m = _DURATION_PART.match(t, pos)
        if not m:
            raise ValueError(f"{text!r} is not a duration (examples: 90s, 10m, 1h30m)")
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2)]
        pos = m.end()
    if not t or total <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return total


@dataclass(frozen=True)
class Every:
    """A cadence: every ``steps`` steps of the run, or every ``seconds`` of training."""

    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("a cadence is a number of steps or a duration, not both")
        if (self.steps is not None and self.steps < 1) or (
            self.seconds is not None and not self.seconds > 0
        ):
            raise ValueError("a cadence must be positive")

    @classmethod
    def parse(cls, text: str) -> Every:
        """``"500"``: every 500 steps; ``"10m"``, ``"90s"``, ``"1h30m"``: on a clock."""
        t = str(text).strip().lower()
        if t.isdigit():
            return cls(steps=int(t))
        return cls(seconds=parse_duration(t))

    def due(self, step: int, since: float) -> bool:
        """Whether it is time, at ``step``, ``since`` seconds after the last time."""
        if self.steps is not None:
            return step % self.steps == 0
        assert self.seconds is not None
        return since >= self.seconds

    def __str__(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:g}s"


def norm_groups(cfg: ModelConfig) -> tuple[list[int], list[str], np.ndarray]:
    """Segments of the flat buffer and the lecture-named groups they add up to.

    Gate blocks of Wax and Waa are contiguous rows, so each is one segment; a
    gate's Wax and Waa segments form the lecture's W· = [Waa· | Wax·] (e.g.
    ``l0.Wf``), its bias rows ``l0.bf``. Returns (segment sizes, group names,
    group index of each segment).
    """
    sizes: list[int] = []
    seg_group: list[int] = []
    names: list[str] = []

    def group(name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    gates = gate_names(cfg.cell)
    for pname, shape in param_shapes(cfg).items():
        n = int(np.prod(shape))
        layer, _, kind = pname.rpartition(".")
        if kind in ("Wax", "Waa", "b"):
            per = n // len(gates)
            for g in gates:
                sizes.append(per)
                seg_group.append(group(f"{layer}.{'b' if kind == 'b' else 'W'}{g}"))
        else:
            sizes.append(n)
            seg_group.append(group(pname))
    return sizes, names, np.array(seg_group, dtype=np.intp)


@dataclass
class StepStats:
    step: int  # steps done in the run, this one included
    loss: float  # nats/char on this batch (nan when skipped)
    grad_norm: float  # pre-clip global norm
    scale: float  # norm-clipping factor (1 = did not bite)
    value_frac: float  # fraction of entries value-clipped
    lr: float
    skipped: bool  # non-finite: update not applied
    epoch: float  # fractional epochs done
    chars_per_sec: float  # over this invocation so far
    # the loss was finite and sane: the weights it was computed with are not broken (an
    # update can still be skipped, when it would overflow)
    loss_ok: bool = True


@dataclass
class SaveDue:
    """The caller's cue to checkpoint now (``save_every``), apart from validation."""

    step: int


@dataclass
class EvalStats:
    step: int
    val_loss: float  # nats/char
    improved: bool  # best so far: the caller saves it as the best checkpoint
    early_stop: bool = False  # patience ran out: this was the last validation of the run


class TrainState:
    """Everything that makes resuming bit-identical to never having stopped."""

    def __init__(
        self,
        model: CharRNN,
        optimizer: Optimizer,
        train_cfg: TrainConfig,
        rng: np.random.Generator,
        hidden: np.ndarray,
        step: int = 0,
        history: History | None = None,
        best_val: float = math.inf,
        elapsed: float = 0.0,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.train_cfg = train_cfg
        self.rng = rng  # dropout masks
        self.hidden = hidden  # (L, S, H, B) carried from batch to batch
        self.step = step
        self.history = history or History()
        self.best_val = best_val
        self.elapsed = elapsed  # training seconds over all invocations

    @classmethod
    def fresh(
        cls, model_cfg: ModelConfig, optim_cfg: OptimConfig, train_cfg: TrainConfig
    ) -> TrainState:
        rng = np.random.default_rng(train_cfg.seed)
        model = CharRNN(model_cfg, rng=rng)
        opt = Optimizer(optim_cfg, model.params.flat.size, model.dtype)
        return cls(model, opt, train_cfg, rng, model.initial_state(train_cfg.batch_size))

    def to_checkpoint(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta) for the store: parameters, optimizer, RNG and history."""
        m, opt = self.model, self.optimizer
        arrays: dict[str, np.ndarray] = {f"param.{k}": v for k, v in m.params.items()}
        arrays.update({f"opt.{k}": v for k, v in opt.state.items()})
        arrays["train.hidden"] = self.hidden
        _, groups, _ = norm_groups(m.cfg)
        arrays.update(self.history.to_arrays(len(groups)))
        meta = {
            "model": m.cfg.to_json(),
            "optim": opt.cfg.to_json(),
            "train": self.train_cfg.to_json(),
            "optimizer_t": opt.t,
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "elapsed": self.elapsed,
            "norm_groups": groups,
        }
        return arrays, meta

    @classmethod
    def from_checkpoint(
        cls,
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
        optim_cfg: OptimConfig | None = None,
    ) -> TrainState:
        """Rebuild from a checkpoint; ``optim_cfg`` may change the learning rate or clipping."""
        try:
            model_cfg = ModelConfig.from_json(meta["model"])
            saved_optim = OptimConfig.from_json(meta["optim"])
            train_cfg = TrainConfig.from_json(meta["train"])
            model = CharRNN(model_cfg, Params.from_arrays(model_cfg, arrays))
            ocfg = optim_cfg or saved_optim
            if ocfg.name != saved_optim.name:
                raise CheckpointError(
                    f"run was trained with --optimizer {saved_optim.name}; "
                    "pass --fresh to start over with another optimizer"
                )
            opt = Optimizer(ocfg, model.params.flat.size, model.dtype)
            for k in opt.state:
                opt.state[k][...] = arrays[f"opt.{k}"]
            opt.t = int(meta["optimizer_t"])
            rng = np.random.default_rng()
            rng.bit_generator.state = meta["rng"]
            hidden = arrays["train.hidden"].astype(model.dtype)
            best = meta.get("best_val")
            return cls(
                model,
                opt,
                train_cfg,
                rng,
                hidden,
                int(meta["step"]),
                History.from_arrays(arrays),
                math.inf if best is None else float(best),
                float(meta.get("elapsed", 0.0)),
            )
        except KeyError as e:
            raise CheckpointError(f"checkpoint lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint metadata is malformed: {e}") from None


def evaluate(
    model: CharRNN,
    batches: StreamBatches | LineBatches | None,
    max_batches: int,
    max_chars: int | None = None,
) -> float:
    """Mean nats/char over (up to max_batches of) a split, state carried from zero.

    Lines (names mode) are scored each from the start state, newline included: the
    per-name loss of ``score --per-line``, as total nats over total characters; all
    of them, or, when they hold more than ``max_chars`` characters, batches spread
    evenly over the split (it is sorted by length) holding about that many.
    """
    if batches is None:
        return math.nan
    if isinstance(batches, LineBatches):
        total, count = 0.0, 0
        for k in _spread(batches.n_batches, batches.n_chars, max_chars):
            x, y, mask = batches.batch(k)
            nll, _ = model.nll(x, y)  # (B, T) from the zero state
            total += float(nll[mask].sum(dtype=np.float64))
            count += int(mask.sum())
        return total / count if count else math.nan
    state = model.initial_state(batches.batch_size)
    total, count = 0.0, 0
    for k in range(min(batches.n_batches, max_batches)):
        x, y = batches.batch(k)
        nll, state = model.nll(x, y, state)
        total += float(nll.sum(dtype=np.float64))
        count += nll.size
    return total / count if count else math.nan


def train(
    ts: TrainState,
    batches: StreamBatches | LineBatches,
    val: StreamBatches | LineBatches | None,
    *,
    total_steps: int,
    time_budget: float | None = None,
    stop_flag: list[bool] | None = None,
    save_every: Every | None = None,
) -> Iterator[StepStats | EvalStats | SaveDue]:
    """Train until ``total_steps`` steps are done in the run, the time budget runs
    out, or ``stop_flag[0]`` becomes true (set by a signal handler).

    Yields StepStats after every step and EvalStats after every validation pass
    (every ``eval_every`` steps, or every ``eval_seconds`` of training, and at the
    end); the caller checkpoints after each. With ``save_every``, SaveDue says when
    to checkpoint between validations (the clock restarts at every checkpoint). The
    data position is a function
    of the step number, so a resumed run reads exactly the batches it would have.
    With LineBatches (names mode) every batch starts from the zero state and the
    loss is masked to the real characters. With ``patience`` set, the run ends after
    that many validations without a new best (the last EvalStats says early_stop).
    """
    cfg, opt = ts.train_cfg, ts.optimizer
    n_batches = batches.n_batches  # per epoch
    update = _Update(ts.model, opt)
    clock = _Clock(cfg, save_every)
    bad_in_a_row = 0
    last_eval = ts.step if ts.history.val_step and ts.history.val_step[-1] == ts.step else None
    while ts.step < total_steps and not _stopped(stop_flag) and not clock.spent(time_budget):
        batch = batches.for_step(ts.step)
        if batch.epoch_start:
            ts.hidden[...] = 0.0  # a new epoch: every stream starts over
        lr = opt.cfg.lr_at(ts.step)
        done = update(batch, ts.hidden if batch.carry else None, lr, ts.rng)
        if done.skipped:
            bad_in_a_row += 1
            ts.hidden[...] = 0.0  # a non-finite state must not poison the next batch
        else:
            bad_in_a_row = 0
            if batch.carry:
                ts.hidden[...] = done.hidden
        ts.step += 1
        ts.elapsed += clock.tick(batch.n_chars)
        yield _record(ts, done, lr, ts.step / n_batches, clock.chars_per_sec)
        if bad_in_a_row >= cfg.max_nonfinite:
            raise _diverged_steps(bad_in_a_row, ts.step, ts.model.cfg.vocab_size, opt.cfg)
        if clock.eval_due(ts.step) or ts.step == total_steps:
            ev = _evaluate(ts, val)
            yield ev
            last_eval = ts.step
            clock.restart(evaluated=True)
            if ev.early_stop:
                return
        elif clock.save_due(ts.step):
            yield SaveDue(ts.step)
            clock.restart(evaluated=False)
    if last_eval != ts.step and ts.step > 0 and not _stopped(stop_flag):
        yield _evaluate(ts, val)


def _stopped(stop_flag: list[bool] | None) -> bool:
    return bool(stop_flag and stop_flag[0])


class _Done(NamedTuple):
    """What one update did."""

    loss: float  # nats/char on the batch (maybe non-finite)
    clip: ClipResult  # pre-clip norms and what clipping did
    group_norms: np.ndarray  # (groups,) pre-clip norm of each lecture-named group, 0 if not finite
    hidden: np.ndarray  # (L, S, H, B) the state after the batch
    skipped: bool  # non-finite, diverged or overflowing: the parameters are unchanged
    loss_ok: bool  # the loss was finite and sane (the update may still have overflowed)


class _Update:
    """One optimizer step with its safety net. Clipping squares the gradient into one of
    the optimizer's own buffers, which the step then uses as g²; a non-finite or diverged
    loss skips the update, and an update that would overflow is not taken, so the
    parameters always stay the last sane ones."""

    def __init__(self, model: CharRNN, opt: Optimizer) -> None:
        self.model, self.opt = model, opt
        sizes, groups, self.seg_group = norm_groups(model.cfg)
        self.n_groups = len(groups)
        self.offsets = segment_offsets(sizes)

    def __call__(
        self, batch: Batch, state: np.ndarray | None, lr: float, rng: np.random.Generator
    ) -> _Done:
        model, opt, flat = self.model, self.opt, self.model.params.flat
        with np.errstate(all="ignore"):  # non-finite values are detected below, not warned about
            loss, grads, hidden, _ = model.loss_and_grads(
                batch.x, batch.y, state, rng=rng, mask=batch.mask
            )
            clip = clip_gradients(
                grads.flat,
                self.offsets,
                opt.cfg.clip_value,
                opt.cfg.clip_norm,
                opt.squares_buffer(),
            )
        loss_ok = not diverged(loss, model.cfg.vocab_size)
        skipped = not clip.finite or not loss_ok
        # an update that would overflow is not taken: the state stays the last sane one
        skipped = skipped or not opt.try_step(flat, grads.flat, lr, PARAM_LIMIT, clip.squares)
        group_norms = np.sqrt(
            np.bincount(self.seg_group, weights=clip.param_norms**2, minlength=self.n_groups)
        )
        finite_norms = np.where(np.isfinite(group_norms), group_norms, 0.0)
        # the squares' buffer is now the optimizer's state (or its next scratch): not handed on
        return _Done(loss, clip._replace(squares=None), finite_norms, hidden, skipped, loss_ok)


def _record(ts: TrainState, done: _Done, lr: float, epoch: float, speed: float) -> StepStats:
    """Write a finished step into the history; its statistics for the caller."""
    clip, h = done.clip, ts.history
    h.record(
        ts.step,
        done.loss if not done.skipped else math.nan,
        clip.norm if clip.finite else math.nan,
        clip.scale,
        clip.value_fraction,
        lr,
        done.skipped,
        done.group_norms,
    )
    return StepStats(
        ts.step,
        float(h.loss[-1]),
        float(h.grad_norm[-1]),
        clip.scale,
        clip.value_fraction,
        lr,
        done.skipped,
        epoch,
        speed,
        done.loss_ok,
    )


def _diverged_steps(steps: int, step: int, vocab_size: int, cfg: OptimConfig) -> DivergedError:
    return _diverged(
        f"training diverged: for {steps} steps in a row (to step {step}) the "
        f"loss was {_not_sane(vocab_size)}, or an update overflowed",
        cfg,
    )


def diverged_at_end(steps: int, step: int, vocab_size: int, cfg: OptimConfig) -> DivergedError:
    """A run that ended (step target, --time, a signal) after ``steps`` steps in a row whose
    loss was not sane: fewer than max_nonfinite, but its weights may be broken all the same,
    and a re-run of the same command would end the same way. It ends as a divergence."""
    return _diverged(
        f"training diverged: the run ended at step {step} with the loss of its last "
        f"{steps} step{'s' if steps != 1 else ''} {_not_sane(vocab_size)}",
        cfg,
    )


def _not_sane(vocab_size: int) -> str:
    limit = DIVERGED_FACTOR * math.log(max(vocab_size, 2))
    return (
        f"non-finite or above {DIVERGED_FACTOR:g}x log(V) = {limit:.2f} nats/char "
        "(uniform guessing)"
    )


def _diverged(what: str, cfg: OptimConfig) -> DivergedError:
    advice = divergence_advice(cfg)
    return DivergedError(f"{what}; train with {advice}", what=what, advice=advice)


def divergence_advice(cfg: OptimConfig) -> str:
    """What to change after a divergence: norm clipping when it is off, else a concrete
    lower learning rate (a tenth of the run's)."""
    lower = f"a lower learning rate (--lr {cfg.lr / 10:g})"
    return lower if cfg.clip_norm is not None else f"--clip-norm 5 or {lower}"


class _Clock:
    """This invocation's clocks: the training time each step adds, the throughput, and
    when validation (every ``eval_every`` steps or ``eval_seconds``) and a checkpoint
    (``save_every``) are due. Time spent by the caller between steps counts too."""

    def __init__(self, cfg: TrainConfig, save_every: Every | None) -> None:
        self.cfg, self.save_every = cfg, save_every
        self.start = self.last = time.perf_counter()  # this invocation; the last step's end
        self.evaluated = self.saved = self.start  # the last validation, the last checkpoint
        self.chars = 0  # targets trained on, padding excluded

    def spent(self, budget: float | None) -> bool:
        return budget is not None and time.perf_counter() - self.start >= budget

    def tick(self, n_chars: int) -> float:
        """A step ended now: the seconds since the last one ended (or the start)."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.chars += n_chars
        return seconds

    @property
    def chars_per_sec(self) -> float:
        return self.chars / max(self.last - self.start, 1e-9)

    def eval_due(self, step: int) -> bool:
        if self.cfg.eval_seconds is not None:
            return self.last - self.evaluated >= self.cfg.eval_seconds
        return step % self.cfg.eval_every == 0

    def save_due(self, step: int) -> bool:
        return self.save_every is not None and self.save_every.due(step, self.last - self.saved)

    def restart(self, evaluated: bool) -> None:
        """A checkpoint was written (after a validation, if ``evaluated``)."""
        now = time.perf_counter()
        self.saved = now
        if evaluated:
            self.evaluated = now


def _spread(n_batches: int, n_chars: int, max_chars: int | None) -> list[int]:
    """All batch indices, or about ``max_chars / n_chars`` of them evenly spaced."""
    if max_chars is None or n_chars <= max_chars or n_batches <= 1:
        return list(range(n_batches))
    k = max(1, math.ceil(n_batches * max_chars / n_chars))
    return np.unique(np.linspace(0, n_batches - 1, k).round().astype(np.intp)).tolist()


def _evaluate(ts: TrainState, val: StreamBatches | LineBatches | None) -> EvalStats:
    cfg = ts.train_cfg
    budget = cfg.eval_max_batches * cfg.batch_size * cfg.seq_len  # what streams score at most
    loss = evaluate(ts.model, val, cfg.eval_max_batches, budget)
    improved = math.isfinite(loss) and loss < ts.best_val
    if improved:
        ts.best_val = loss
    if math.isfinite(loss):  # no validation split: nothing to record
        ts.history.record_val(ts.step, loss)
    if val is not None and diverged(loss, ts.model.cfg.vocab_size):  # never a best checkpoint
        raise _diverged(
            f"training diverged: validation loss {loss:.4g} nats/char at step {ts.step} is "
            f"above {DIVERGED_FACTOR:g}x log(V) (uniform guessing)",
            ts.optimizer.cfg,
        )
    patience = ts.train_cfg.patience or 0
    return EvalStats(ts.step, loss, improved, patience > 0 and evals_since_best(ts) >= patience)


def evals_since_best(ts: TrainState) -> int:
    """Validations since the best one (0 when the latest is the best): patience's count,
    read from the history so that a resumed run counts on exactly. The history keeps
    the last VAL_KEEP results: a best older than those counts as VAL_KEEP ago."""
    v = ts.history.val_loss
    if not v:
        return 0
    if min(v) > ts.best_val:
        return len(v)
    return len(v) - 1 - int(np.argmin(v))
