"""Automatic configuration: the model and schedule for a corpus and a budget.

    choice = choose(CorpusFacts(n_chars, vocab_size, is_lines, n_lines),
                    Budget(seconds=300), model, optim, train, explicit)
    choice.model, choice.optim, choice.train   # the configs to train with
    choice.reason                              # one line: what was chosen and why

Pure: plain values in, frozen configs out (no I/O, no clock). It applies to prose
when the user set no model or optimiser option (a single one means "I am choosing"
and the given configs stand); the data options it touches (batch, sequence length,
validation share, patience) are taken only where the user did not set them. Names
corpora keep the names-mode defaults. The session stores the result in the
checkpoint, so a resume trains on with exactly these settings.

The rule (prose)::

    C = characters the budget will train on
          --steps N: N·B·T     --epochs X: X·training characters
          --time S:  S · chars/s of the size on this machine (SPEED, measured)
    size  = the largest of SIZES whose parameter count P has C ≥ CHARS_PER_PARAM·P
            (and P ≤ MAX_PARAMS_PER_CHAR · training characters)
    dropout = by the epochs E = C / training characters (DROPOUT_BY_EPOCHS), one layer
              or several (it drops each layer's outputs, the top layer's included)
    Adam at LR, a linear warm-up (WARMUP_FRACTION of the steps), then a half cosine
    down to LR_MIN·LR that ends when the budget does (for --time the session
    measures the speed early in the run and fixes the end step in the checkpoint)
    validation: VAL_CHARS characters at most (10% of a small corpus); patience
    PATIENCE validations

The constants come from measurements on the project's 2-core machine, described
in docs/autoconfig.md with the commands that made them (bench/auto_sweep.py,
bench/prose_ref.py). On tiny-shakespeare (first 90% trained, last 10% scored):

- loaded machine (load average 7-10, one BLAS thread), 90 s: GRU 2x256 2.31-2.60 against
  LSTM 2x256 3.33 at ~100-160 steps (the GRU learns faster per step); sizes tie between
  2.5 and 20 chars/parameter. 5 min: GRU 1x256 at 5.4 chars/parameter 2.010 against GRU
  1x128 at 35, 1.843. 15 min: GRU 2x256 at 3.5 chars/parameter 1.751 against GRU 1x256
  at 17, 1.808
- quiet machine, one BLAS thread, the steps 5 min allow (deterministic step budgets):
  GRU 2x256 at 7.1 chars/parameter (2270 steps) 1.595 against GRU 1x256 at 47 (5528
  steps) 1.650; PyTorch's 2x256 LSTM in the same 5 min 1.615
- C source, 5 min side by side with PyTorch (one core each): at 6 chars/parameter the 2x256
  measured just too slow, GRU 1x256 1.629 (stopped early) against PyTorch's 1.566; at 4,
  GRU 2x256 1.521 against 1.554 -> CHARS_PER_PARAM = 4 (the larger size won at 3.5-7.1
  chars/parameter in every comparison but one at load average 8-10)
- quiet machine, two threads, 5 min (3370 steps): GRU 2x256, this schedule, dropout
  0.1, 20,000 validation characters: 1.556 (50,000 and dropout 0.2: 1.660)
- a one-layer size gets the same dropout: GRU 1x256 over 10.8 epochs of C source (2750
  steps), dropout 0.2 against none: held out 1.591 against 1.650, validation 1.739 against
  1.772; over Russian man pages (3250 steps, 38 epochs planned): 1.594 against 1.574,
  validation 1.377 against 1.396
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from charrnn.batches import fit_batch
from charrnn.model import ModelConfig, param_shapes
from charrnn.optim import OptimConfig
from charrnn.trainer import TrainConfig

# model options (ModelConfig fields) and optimiser options (as the user names them):
# setting any of them turns the automatic choice off
MODEL_OPTIONS = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("vocab_size", "dtype")
)
OPTIM_OPTIONS = ("optimizer", "lr", "lr_decay", "lr_decay_every", "clip_norm", "clip_value")

CELL = "gru"  # measured: ahead of the LSTM at equal time and size (README)
SIZES = ((1, 128), (1, 256), (2, 256), (2, 384), (2, 512))  # (layers, hidden), smallest first
# training chars/s of a GRU of each size, B=32, T=64, on the quiet 2-core machine: used
# when the session does not measure (step and epoch budgets never need it)
SPEED = {
    (1, 128): 120_000.0,
    (1, 256): 50_000.0,
    (2, 256): 25_000.0,
    (2, 384): 12_000.0,
    (2, 512): 7_000.0,
}
CHARS_PER_PARAM = 4.0  # a size needs this many training characters per parameter (above)
MAX_PARAMS_PER_CHAR = 4.0  # and no more parameters than this per training character
DROPOUT_BY_EPOCHS = ((3.0, 0.0), (8.0, 0.1), (math.inf, 0.2))  # (epochs up to, dropout)
LR = 3e-3  # Adam's peak learning rate (the GRU's, measured)
LR_MIN = 0.1  # the cosine ends at LR_MIN·LR
WARMUP_FRACTION = 0.02  # of the estimated steps
WARMUP_MIN, WARMUP_MAX = 10, 200  # steps
BATCH, SEQ_LEN = 32, 64
# validation characters at most (the default 10% below 200k characters): enough to rank
# checkpoints, and little text kept from training. Measured: a GRU 2x256 trained 600 steps on
# the first 90% of tiny-shakespeare scored 1.817 nats/char on the last 10% when the 50,000
# characters before it were held out for validation, 1.766 when only 2,000 were
VAL_CHARS = 20_000
PATIENCE = 4  # validations without a new best before the run stops


@dataclass(frozen=True)
class CorpusFacts:
    """What the session knows about the corpus before training."""

    n_chars: int  # characters in the corpus
    vocab_size: int  # V
    is_lines: bool  # a names corpus: one item per line
    n_lines: int


@dataclass(frozen=True)
class Budget:
    """How long the run may train: one of them, or none (the default step count)."""

    steps: int | None = None
    epochs: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Choice:
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig
    applied: bool  # False: the given configs stand (names corpus, or the user chose)
    reason: str  # one line for stderr and --json

    def to_json(self) -> dict[str, object]:
        return {"applied": self.applied, "reason": self.reason}


def n_params(layers: int, hidden: int, vocab_size: int, cell: str = CELL) -> int:
    """Parameters of a one-hot input model of this size."""
    cfg = ModelConfig(vocab_size=vocab_size, cell=cell, hidden=hidden, layers=layers)
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def choose(
    facts: CorpusFacts,
    budget: Budget,
    model: ModelConfig,
    optim: OptimConfig,
    train: TrainConfig,
    explicit: frozenset[str] = frozenset(),
    default_steps: int = 1000,
    speed: Callable[[ModelConfig, int, int], float] | None = None,
) -> Choice:
    """The configs to train with; ``explicit`` names the options the user set.

    For a time budget, ``speed(model, B, T)`` gives a size's training chars/s (the
    session measures it on this machine, now); without it, the SPEED table. Sizes
    are tried smallest first and ``speed`` is not called beyond the first that fails.
    """
    if facts.is_lines:
        return Choice(model, optim, train, False, "names corpus: the names-mode defaults")
    chosen_by_user = sorted(o for o in (*MODEL_OPTIONS, *OPTIM_OPTIONS) if o in explicit)
    if chosen_by_user:
        flags = ", ".join("--" + o.replace("_", "-") for o in chosen_by_user)
        return Choice(model, optim, train, False, f"automatic choice off: you set {flags}")

    B = train.batch_size if "batch_size" in explicit else BATCH
    T = train.seq_len if "seq_len" in explicit else SEQ_LEN
    val_fraction = train.val_fraction
    if "val_fraction" not in explicit and facts.n_chars * val_fraction > VAL_CHARS:
        val_fraction = round(VAL_CHARS / facts.n_chars, 6)
    n_train = max(1, facts.n_chars - int(round(facts.n_chars * val_fraction)))
    # a short corpus trains on smaller batches (the session shrinks them the same way)
    B_fit, T_fit = fit_batch(n_train, B, T) if n_train >= 2 else (B, T)

    timed = budget.steps is None and budget.epochs is None and budget.seconds is not None
    speeds: dict[tuple[int, int], float] = {}

    def chars_for(size: tuple[int, int]) -> float:
        if budget.steps is not None:
            return budget.steps * B_fit * T_fit
        if budget.epochs is not None:
            return budget.epochs * n_train
        if budget.seconds is not None:
            if size not in speeds:
                cfg = dataclasses.replace(model, cell=CELL, layers=size[0], hidden=size[1])
                speeds[size] = speed(cfg, B, T) if speed is not None else SPEED[size]
            return budget.seconds * speeds[size]
        return default_steps * B_fit * T_fit

    size = SIZES[0]
    for cand in SIZES:
        P = n_params(*cand, facts.vocab_size)
        if MAX_PARAMS_PER_CHAR * n_train < P or chars_for(cand) < CHARS_PER_PARAM * P:
            break  # larger sizes need more still
        size = cand
    layers, hidden = size
    C = chars_for(size)
    epochs = C / n_train
    dropout = next(d for upto, d in DROPOUT_BY_EPOCHS if epochs <= upto)
    steps = max(1, int(C // (B_fit * T_fit)))
    warmup = min(WARMUP_MAX, max(WARMUP_MIN, round(WARMUP_FRACTION * steps)))
    warmup = min(warmup, max(0, steps // 4))  # a short run: warm-up never takes its bulk
    new_model = dataclasses.replace(model, cell=CELL, layers=layers, hidden=hidden, dropout=dropout)
    new_optim = dataclasses.replace(
        optim,
        name="adam",
        lr=LR,
        lr_decay=1.0,
        schedule="cosine",
        warmup=warmup,
        decay_steps=0,  # the session fixes it: the run's step target, or measured (--time)
        lr_min=LR_MIN,
    )
    patience = train.patience if "patience" in explicit else PATIENCE
    new_train = dataclasses.replace(
        train, batch_size=B, seq_len=T, val_fraction=val_fraction, patience=patience
    )
    P = n_params(layers, hidden, facts.vocab_size)
    how = (
        f"{budget.seconds:g} s at {chars_for(size) / budget.seconds / 1e3:.1f}k chars/s"
        f"{' (measured)' if speed is not None else ''}"
        if timed and budget.seconds
        else f"{steps} steps of {B_fit}x{T_fit}"
    )
    reason = (
        f"auto: {CELL} {layers}x{hidden} ({P / 1e6:.2f}M parameters), dropout {dropout:g}, "
        f"Adam {LR:g} with {warmup} warm-up steps and a cosine to the budget's end: "
        f"{how} ≈ {_count(C)} characters, {epochs:.1f} epochs of {n_train:,} "
        f"(set any model or optimiser option to choose yourself)"
    )
    return Choice(new_model, new_optim, new_train, True, reason)


def _count(n: float) -> str:
    """A character count for the reason line: 7.6M, 120k, 120."""
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,.0f}"


# a --time run measures its speed over MEASURE_STEPS steps (after SETTLE_STEPS that warm the
# caches up), or MEASURE_SECONDS if that comes first, then fixes the cosine's end step
SETTLE_STEPS = 3
MEASURE_STEPS = 40
MEASURE_SECONDS = 10.0


def decay_end(step: int, step_seconds: float, seconds_left: float, eval_share: float) -> int:
    """The step at which a time budget will be spent: ``step`` plus the steps that fit in
    ``seconds_left`` at ``step_seconds`` a step, validation taking ``eval_share`` of the time
    a step takes (its forward passes spread over ``eval_every`` steps)."""
    if step_seconds <= 0 or not math.isfinite(step_seconds):
        return step + 1
    return step + max(1, int(seconds_left / (step_seconds * (1.0 + eval_share))))


def eval_share(val_batches: int, eval_max_batches: int, eval_every: int) -> float:
    """Validation's cost per training step, in training steps: a validation batch is a
    forward pass, about a third of a training step."""
    return min(val_batches, eval_max_batches) / 3.0 / eval_every
