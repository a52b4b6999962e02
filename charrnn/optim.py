"""Gradient clipping and optimizers over one flat parameter buffer.

Every parameter is a view into one contiguous array (see ``model.Params``), so
an optimizer step or a clipping pass is a handful of NumPy calls, whatever the
number of parameter arrays. Pure NumPy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

OPTIMIZERS = ("sgd", "adam", "adagrad", "rmsprop")
SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class OptimConfig:
    name: str = field(  # sgd (the assignment), adam, adagrad (min-char-rnn), rmsprop (char-rnn)
        default="adam", metadata={"help": "How the weights are updated."}
    )
    lr: float = field(default=2e-3, metadata={"help": "Learning rate, greater than 0."})
    lr_decay: float = field(  # multiply the learning rate by this ...
        default=1.0,
        metadata={
            "help": "Multiply the learning rate by this every --lr-decay-every steps, "
            "in (0, 1]; 1 keeps it constant."
        },
    )
    lr_decay_every: int = field(  # ... every this many steps (1.0 = constant rate)
        default=1000, metadata={"help": "Steps between learning-rate decays, 1 or more."}
    )
    schedule: str = "step"  # step: lr_decay every lr_decay_every steps; cosine: see lr_at
    warmup: int = 0  # steps of linear warm-up to lr at the start of the run (0: none)
    decay_steps: int = 0  # cosine: the step where the decay ends (the budget's); 0: not known yet
    lr_min: float = 0.1  # cosine: the final learning rate, as a fraction of lr
    beta1: float = 0.9  # adam: first-moment decay
    beta2: float = 0.999  # adam: second-moment decay
    alpha: float = 0.95  # rmsprop: squared-gradient decay (char-rnn's decay_rate)
    eps: float = 1e-8  # adam/adagrad/rmsprop: added to the denominator
    clip_value: float | None = field(  # clamp each gradient entry to ±clip_value (assignment: 5)
        default=None,
        metadata={"help": "Clamp every gradient entry to ±this (the course uses 5); none: off."},
    )
    clip_norm: float | None = field(  # rescale the gradient when its global L2 norm exceeds this
        default=5.0,
        metadata={
            "help": "Scale the gradient down when its overall size (L2 norm) "
            "exceeds this; none: off."
        },
    )

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.name!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr (learning rate) must be a positive number, not {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1], not {self.lr_decay}")
        if self.lr_decay_every < 1:
            raise ValueError("lr_decay_every must be at least 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}"
            )
        if self.warmup < 0 or self.decay_steps < 0:
            raise ValueError("warmup and decay_steps must be 0 or more")
        if not 0 <= self.lr_min <= 1:
            raise ValueError(f"lr_min must be in [0, 1], not {self.lr_min}")
        for name in ("clip_value", "clip_norm"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, not {v}")

    def lr_at(self, step: int) -> float:
        """Learning rate for the step numbered ``step`` (0-based): a pure function, so resumable.

        A linear warm-up over the first ``warmup`` steps, then either the step decay or
        (``schedule="cosine"``) a half cosine from lr at the warm-up's end down to
        ``lr * lr_min`` at ``decay_steps``, held there after it; while ``decay_steps`` is
        0 (a time budget not measured yet) the cosine stays at its start, lr.
        """
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        lr = self.lr * self.lr_decay ** (step // self.lr_decay_every)
        if self.schedule == "cosine" and self.decay_steps > self.warmup:
            done = min(1.0, (step - self.warmup) / (self.decay_steps - self.warmup))
            lr *= self.lr_min + (1 - self.lr_min) * 0.5 * (1 + math.cos(math.pi * done))
        return lr

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OptimConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ClipResult(NamedTuple):
    norm: float  # global L2 norm before any clipping
    param_norms: np.ndarray  # (P,) L2 norm of each parameter array before clipping
    value_fraction: float  # fraction of entries clamped by value clipping (0 without it)
    scale: float  # factor norm clipping applied (1.0 when it did not bite)
    finite: bool  # False if any gradient entry was NaN or inf (nothing was clipped then)
    # (N,) g*g of the gradient as it leaves clipping, when clipping did not change it (the
    # workspace: a step given it may consume it); None when it did
    squares: np.ndarray | None = None


def segment_offsets(sizes: list[int]) -> np.ndarray:
    """Start offset of each parameter in the flat buffer (for np.add.reduceat)."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)


def clip_gradients(
    g: np.ndarray,
    offsets: np.ndarray,
    clip_value: float | None,
    clip_norm: float | None,
    work: np.ndarray | None = None,
) -> ClipResult:
    """Measure, then clip, the flat gradient ``g`` in place.

    Value clipping first (each entry to ±clip_value, as in the assignment), then
    norm clipping of the result (g *= clip_norm / ‖g‖ when ‖g‖ > clip_norm).
    The reported norms are the raw, pre-clip ones; the squares measured on the way are
    handed on when g leaves unchanged, for an optimizer step to reuse.
    """
    sq = np.multiply(g, g, out=work)  # (N,) squared entries
    param_sq = np.add.reduceat(sq, offsets) if len(offsets) else np.zeros(0, g.dtype)
    total = float(param_sq.sum(dtype=np.float64))
    param_norms = np.sqrt(param_sq.astype(np.float64))
    if not math.isfinite(total):
        return ClipResult(total, param_norms, 0.0, 1.0, False)
    norm = math.sqrt(total)
    value_fraction = 0.0
    if clip_value is not None:
        over = np.count_nonzero(np.abs(g, out=sq) > clip_value)
        value_fraction = over / g.size if g.size else 0.0
        if over:
            np.clip(g, -clip_value, clip_value, out=g)
    scale = 1.0
    if clip_norm is not None:
        now = norm if clip_value is None or value_fraction == 0 else float(np.linalg.norm(g))
        if now > clip_norm:
            scale = clip_norm / now
            g *= scale
    intact = clip_value is None and scale == 1.0  # (value clipping overwrites sq with |g|)
    return ClipResult(norm, param_norms, value_fraction, scale, True, sq if intact else None)


def _within(a: np.ndarray, limit: float | None) -> bool:
    """Every entry of ``a`` finite and, with a limit, within ±limit (a nan fails).

    One dot product decides almost always: Σa² is non-finite if an entry is, and bounds
    every a²; the float32 dot's rounding (under 1% here) is covered by a 10x margin. Only
    an undecided sum (huge entries) pays for the exact min and max.
    """
    if a.size == 0:
        return True
    sq = float(np.dot(a, a))
    if math.isfinite(sq) and (limit is None or sq <= 0.1 * limit * limit):
        return True
    if limit is None:
        return bool(np.isfinite(a).all())
    return -limit <= float(a.min()) and float(a.max()) <= limit


class Optimizer:
    """One of sgd / adam / adagrad / rmsprop, updating a flat parameter buffer in place.

    A step is computed before it is committed: the new optimizer state goes into spare
    buffers that trade places with ``state``'s arrays (the dict itself stays the same
    object) once the step is taken, so :meth:`try_step` can refuse an update that
    overflows without copying anything beforehand.
    """

    def __init__(self, cfg: OptimConfig, size: int, dtype) -> None:
        self._tmp = np.empty(size, dtype)  # the update's scratch
        self.cfg = cfg  # (and the rules' constants, see the setter)
        self.t = 0  # steps applied
        self.state: dict[str, np.ndarray] = {}
        if cfg.name == "adam":
            self.state = {"m": np.zeros(size, dtype), "v": np.zeros(size, dtype)}
        elif cfg.name in ("adagrad", "rmsprop"):
            self.state = {"cache": np.zeros(size, dtype)}
        # (N,) each: the state a proposed step would leave
        self._next = {k: np.empty_like(a) for k, a in self.state.items()}

    @property
    def cfg(self) -> OptimConfig:
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: OptimConfig) -> None:
        """A new config (the session sets one when a time budget fixes the decay's end)
        brings its own constants."""
        self._cfg = cfg
        self._k = {  # the rules' constants as 0-d operands
            "1-beta1": self._scalar(1 - cfg.beta1),
            "1-beta2": self._scalar(1 - cfg.beta2),
            "1-alpha": self._scalar(1 - cfg.alpha),
            "eps": self._scalar(cfg.eps),
        }

    def step(
        self, w: np.ndarray, g: np.ndarray, lr: float, squares: np.ndarray | None = None
    ) -> None:
        """w -= update(g); g is used as scratch and left undefined. ``squares``, if given,
        must hold g*g (``ClipResult.squares``): it saves computing them again."""
        w -= self._propose(g, lr, squares)
        self._commit()

    def try_step(
        self,
        w: np.ndarray,
        g: np.ndarray,
        lr: float,
        limit: float,
        squares: np.ndarray | None = None,
    ) -> bool:
        """:meth:`step`, taken only if it leaves every weight finite and within ±limit
        and the state finite; otherwise ``w``, ``state`` and ``t`` stay exactly as they
        were and the answer is False. g is used as scratch and left undefined."""
        with np.errstate(all="ignore"):  # overflow is expected here, and judged below
            u = self._propose(g, lr, squares)
            np.subtract(w, u, out=u)  # (N,) the new weights, not yet committed
            if not (_within(u, limit) and self._next_finite()):
                return False
        np.copyto(w, u)
        self._commit()
        return True

    def squares_buffer(self) -> np.ndarray:
        """(N,) where a caller may square g (clip_gradients' ``work``): handed back as
        ``squares``, it is consumed in place, one buffer fewer for the step to read."""
        for k in ("v", "cache"):
            if k in self._next:
                return self._next[k]
        return self._tmp

    def _propose(self, g: np.ndarray, lr: float, squares: np.ndarray | None) -> np.ndarray:
        """The update of step t+1 (in g or a scratch buffer) and the state after it (in
        ``_next``); nothing is committed."""
        c, tmp, t, k = self.cfg, self._tmp, self.t + 1, self._k
        if c.name == "sgd":
            g *= self._scalar(lr)
            return g
        g2 = squares if squares is not None else np.multiply(g, g, out=tmp)  # (N,) g²
        if c.name == "adam":
            # written straight into the next state and then into g, which touches fewer
            # buffers than a scratch would; the same operations as v += (1-β2)(g² - v)
            m, v = self.state["m"], self.state["v"]
            m_next, v_next = self._next["m"], self._next["v"]
            np.subtract(g2, v, out=v_next)
            v_next *= k["1-beta2"]
            v_next += v  # v = β2 v + (1-β2) g²
            np.subtract(g, m, out=m_next)
            m_next *= k["1-beta1"]
            m_next += m  # m = β1 m + (1-β1) g
            lr_t = lr * math.sqrt(1 - c.beta2**t) / (1 - c.beta1**t)
            np.sqrt(v_next, out=g)
            g += self._scalar(c.eps * math.sqrt(1 - c.beta2**t))  # eps, bias-corrected scale
            np.divide(m_next, g, out=g)
            g *= self._scalar(lr_t)
            return g
        cache, cache_next = self.state["cache"], self._next["cache"]
        if c.name == "rmsprop":
            np.subtract(g2, cache, out=tmp)
            tmp *= k["1-alpha"]
            g2 = tmp
        np.add(cache, g2, out=cache_next)  # adagrad: Σ g²; rmsprop: running mean of g²
        np.sqrt(cache_next, out=tmp)
        tmp += k["eps"]
        np.divide(g, tmp, out=tmp)
        tmp *= self._scalar(lr)
        return tmp

    def _scalar(self, x: float) -> np.ndarray:
        # a 0-d array of the buffers' dtype: the same value as a Python float operand
        # would give, but cheaper in an in-place ufunc (see cells._ONE)
        return np.array(x, dtype=self._tmp.dtype)

    def _next_finite(self) -> bool:
        if self.cfg.name == "adam":
            # Σ m·v is non-finite when any entry of m or v is (inf·0 is nan): one pass for both
            m, v = self._next["m"], self._next["v"]
            if math.isfinite(float(np.dot(m, v))):
                return True
        return all(_within(a, None) for a in self._next.values())

    def _commit(self) -> None:
        self.t += 1
        for k in self.state:  # swap arrays, keep the dicts: holders of ``state`` see the new ones
            self.state[k], self._next[k] = self._next[k], self.state[k]
