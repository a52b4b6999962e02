"""A run's per-step record, in space that does not grow with the step count.

The trainer records every step; ``charrnn clip-stats`` reads the record back
out of a checkpoint. A cron job trains for weeks (a 2x256 LSTM does ~1M steps a
day), so the record must not grow with the step count, and it travels inside
every checkpoint, so that parameters and history can never disagree after a kill.

::

    steps 1 ............................................ n-W ........... n
          |<------------------ past ------------------->|<-- window -->|
          buckets: MAX_BUCKETS/2..MAX_BUCKETS, each      every step at
            first/last step, max (+ step), sum, counts   full resolution
            of finite, norm-clipped and skipped steps    (W..W+CHUNK steps)
          whole-past aggregates: count, sum, min, max of the norm, clipping
            counts and sums, per-group max (+ step)
          quantile sketches: log-binned counts of the global and per-group
            norms, linear-binned counts of each group's share of the norm²
    events (whole run, exact): every spike (step, norm, running median, top
          group, clip scale) and every non-finite or skipped step

When the window reaches ``WINDOW + CHUNK`` steps, its oldest ``CHUNK`` steps are
folded into the past. Buckets cover ``width`` consecutive steps; when there are
more than ``MAX_BUCKETS`` of them, neighbours merge pairwise and ``width``
doubles. Spikes are found as each step is recorded (the window always holds the
previous ``SPIKE_WINDOW`` steps), so none is ever lost to a merge.

What stays exact over the whole run: counts, means, min and max (with their
step) of the norms, everything about clipping, every spike and non-finite step.
What becomes approximate once steps leave the window: percentiles, which come
from the sketches (bins 10**(1/PER_DECADE) wide: within ~1.2% of the true
order statistic) and each group's share of the norm² (bins 1/SHARE_BINS wide).

Pure NumPy: nothing here prints, reads files or owns randomness.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPIKE_FACTOR = 10.0  # a spike: norm above this many times its running median ...
SPIKE_WINDOW = 50  # ... the median of the finite norms of the previous this many steps
WINDOW = 4096  # recent steps kept at full resolution
CHUNK = 1024  # steps folded into the past at once
MAX_BUCKETS = 512  # past buckets before neighbours merge pairwise
VAL_KEEP = 1024  # validation results kept (the most recent)
EVENTS_KEEP = 100_000  # spikes / non-finite steps kept; beyond that only counted
PER_DECADE = 100  # sketch bins per factor of 10
LOG_LO, LOG_HI = -12, 12  # sketch range: 1e-12 .. 1e12 (outside: the end bins)
SHARE_BINS = 1000  # share-of-norm² sketch bins over [0, 1]
NORM_BINS = (LOG_HI - LOG_LO) * PER_DECADE + 2  # + one bin below, one above the range
FORMAT = 2  # 1: every step in hist.* (before the window); 2: this layout


# --------------------------------------------------------------------------- sketches


def finite_or_none(x: Any) -> float | None:
    """A JSON-safe number: None for nan, inf and None (a missing statistic)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def norm_bin(v: np.ndarray) -> np.ndarray:
    """Sketch bin of each non-negative finite value: 0 holds v <= 1e-12 (and 0), bin i
    holds 10**(LOG_LO + (i-1)/PER_DECADE) < v <= 10**(LOG_LO + i/PER_DECADE)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore"):
        k = np.ceil((np.log10(v) - LOG_LO) * PER_DECADE)
    return np.clip(np.nan_to_num(k, neginf=0.0), 0, NORM_BINS - 1).astype(np.intp)


def norm_bin_value(i: np.ndarray) -> np.ndarray:
    """A representative of each bin: its geometric middle."""
    i = np.asarray(i, dtype=np.float64)
    return 10.0 ** (LOG_LO + (i - 0.5) / PER_DECADE)


def share_bin(v: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.asarray(v) * SHARE_BINS), 0, SHARE_BINS - 1).astype(np.intp)


def share_bin_value(i: np.ndarray) -> np.ndarray:
    return (np.asarray(i, dtype=np.float64) + 0.5) / SHARE_BINS


def running_median(x: np.ndarray, window: int, min_history: int = 1) -> np.ndarray:
    """(S,) median of the finite values among the previous ``window`` entries of ``x``
    (the entry itself excluded); nan where fewer than ``min_history`` are finite."""
    x = np.asarray(x, dtype=np.float64)
    S = x.shape[0]
    out = np.full(S, np.nan)
    if S == 0:
        return out
    window = max(1, min(window, S))  # a longer window than the series sees the same values
    padded = np.concatenate([np.full(window, np.nan), x])  # (W+S,)
    view = np.lib.stride_tricks.sliding_window_view(padded, window)[:S]  # (S, W) previous W
    for lo in range(0, S, 8192):  # bounded memory on long runs
        block = view[lo : lo + 8192]
        enough = np.isfinite(block).sum(axis=1) >= max(min_history, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows: nan, masked below
            med = np.nanmedian(block, axis=1)
        out[lo : lo + 8192] = np.where(enough, med, np.nan)
    return out


# --------------------------------------------------------------------------- the past


@dataclass
class Past:
    """Summaries of the steps that left the window (see the module docstring)."""

    n_groups: int
    n: int = 0  # steps summarized
    first: int = 0  # their first and last step number
    last: int = 0
    finite: int = 0  # steps with a finite gradient norm
    norm_sum: float = 0.0  # over finite steps
    norm_min: float = 0.0  # (meaningless while finite == 0)
    norm_max: float = 0.0
    norm_max_step: int = 0
    clipped: int = 0  # finite steps where norm clipping bit (scale < 1)
    scale_sum: float = 0.0  # over finite steps
    scale_clipped_sum: float = 0.0  # over clipped steps
    scale_min: float = 1.0
    vf_sum: float = 0.0  # fraction of entries value-clipped, summed over finite steps
    vf_steps: int = 0  # finite steps with at least one entry value-clipped
    vf_max: float = 0.0
    group_max: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,)
    group_max_step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G,)
    norm_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (NB,)
    group_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G, NB)
    share_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G, SB)
    width: int = 1  # steps per bucket
    # buckets, (K,) each: bucket k holds the past steps at positions [k*width, (k+1)*width)
    b_first: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    b_last: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    b_max: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 0 when no finite step
    b_max_step: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    b_sum: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the finite norms
    b_finite: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    b_clipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    b_bad: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # non-finite/skipped

    def __post_init__(self) -> None:
        G = self.n_groups
        if self.group_max.shape != (G,):
            self.group_max = np.zeros(G)
            self.group_max_step = np.zeros(G, np.int64)
        if self.norm_counts.shape != (NORM_BINS,):
            self.norm_counts = np.zeros(NORM_BINS, np.int64)
            self.group_counts = np.zeros((G, NORM_BINS), np.int64)
            self.share_counts = np.zeros((G, SHARE_BINS), np.int64)

    BUCKET_FIELDS = ("first", "last", "max", "max_step", "sum", "finite", "clipped", "bad")

    def fold(
        self,
        step: np.ndarray,
        grad_norm: np.ndarray,
        scale: np.ndarray,
        value_frac: np.ndarray,
        skipped: np.ndarray,
        group_norms: np.ndarray,
    ) -> None:
        """Add consecutive steps (the oldest of the window) to the summaries."""
        K = step.shape[0]
        if K == 0:
            return
        fin = np.isfinite(grad_norm)  # (K,)
        gn = grad_norm[fin]  # (F,)
        sc = scale[fin]
        vf = value_frac[fin]
        gg = group_norms[fin]  # (F, G)
        st = step[fin]
        if self.n == 0:
            self.first = int(step[0])
        self.last = int(step[-1])
        if gn.size:
            i = int(np.argmax(gn))
            if self.finite == 0 or gn[i] > self.norm_max:
                self.norm_max, self.norm_max_step = float(gn[i]), int(st[i])
            self.norm_min = float(gn.min()) if self.finite == 0 else min(self.norm_min, gn.min())
            self.finite += int(gn.size)
            self.norm_sum += float(gn.sum())
            clipped = sc < 1.0
            self.clipped += int(clipped.sum())
            self.scale_sum += float(sc.sum())
            self.scale_clipped_sum += float(sc[clipped].sum())
            self.scale_min = min(self.scale_min, float(sc.min()))
            self.vf_sum += float(vf.sum())
            self.vf_steps += int((vf > 0).sum())
            self.vf_max = max(self.vf_max, float(vf.max()))
            j = np.argmax(gg, axis=0)  # (G,) row of each group's largest norm
            top = gg[j, np.arange(gg.shape[1])]
            better = top > self.group_max
            self.group_max = np.where(better, top, self.group_max)
            self.group_max_step = np.where(better, st[j], self.group_max_step)
            G = self.n_groups
            self.norm_counts += np.bincount(norm_bin(gn), minlength=NORM_BINS)
            flat = norm_bin(gg) + np.arange(G) * NORM_BINS  # (F, G) bin in the flat (G, NB)
            self.group_counts += np.bincount(flat.ravel(), minlength=G * NORM_BINS).reshape(
                G, NORM_BINS
            )
            ok = gn > 0
            share = gg[ok] ** 2 / gn[ok, None] ** 2  # (F', G) share of the squared norm
            flat = share_bin(share) + np.arange(G) * SHARE_BINS
            self.share_counts += np.bincount(flat.ravel(), minlength=G * SHARE_BINS).reshape(
                G, SHARE_BINS
            )
        self._bucket(step, grad_norm, scale, skipped)
        self.n += K

    def _bucket(self, step, grad_norm, scale, skipped) -> None:
        pos = self.n + np.arange(step.shape[0])  # (K,) positions in the past
        kb = pos // self.width  # (K,) bucket of each step, ascending
        nb = int(kb[-1]) + 1
        old = self.b_first.shape[0]
        if nb > old:  # new (empty) buckets
            grow = nb - old
            self.b_first = np.concatenate([self.b_first, np.zeros(grow, np.int64)])
            self.b_last = np.concatenate([self.b_last, np.zeros(grow, np.int64)])
            self.b_max = np.concatenate([self.b_max, np.zeros(grow)])
            self.b_max_step = np.concatenate([self.b_max_step, np.zeros(grow, np.int64)])
            self.b_sum = np.concatenate([self.b_sum, np.zeros(grow)])
            for name in ("b_finite", "b_clipped", "b_bad"):
                setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, np.int64)]))
            self.b_first[old:] = step[np.searchsorted(kb, np.arange(old, nb))]
        fin = np.isfinite(grad_norm)
        filled = np.where(fin, grad_norm, -np.inf)
        starts = np.flatnonzero(np.r_[True, kb[1:] != kb[:-1]])  # first entry of each bucket
        ends = np.r_[starts[1:], kb.shape[0]]
        for b, s0, s1 in zip(kb[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            i = s0 + int(np.argmax(filled[s0:s1]))  # the largest finite norm of this piece
            if fin[i] and (self.b_finite[b] == 0 or filled[i] > self.b_max[b]):
                self.b_max[b] = filled[i]
                self.b_max_step[b] = step[i]
        self.b_last[kb] = step  # the last write per bucket wins: its last step
        np.add.at(self.b_sum, kb, np.where(fin, grad_norm, 0.0))
        np.add.at(self.b_finite, kb, fin)
        np.add.at(self.b_clipped, kb, fin & (scale < 1.0))
        np.add.at(self.b_bad, kb, ~fin | skipped)
        while self.b_first.shape[0] > MAX_BUCKETS:
            self._merge()

    def _merge(self) -> None:
        """Neighbouring buckets merge pairwise; buckets become twice as wide."""
        K = self.b_first.shape[0]
        pairs = (K + 1) // 2
        odd = K % 2

        def pad(a: np.ndarray) -> np.ndarray:  # (2*pairs,) with an empty last bucket if odd
            return np.concatenate([a, np.zeros(odd, a.dtype)]).reshape(pairs, 2)

        first, last = pad(self.b_first), pad(self.b_last)
        mx, ms = pad(self.b_max), pad(self.b_max_step)
        right = mx[:, 1] > mx[:, 0]
        self.b_first = first[:, 0]
        self.b_last = np.where(last[:, 1] > 0, last[:, 1], last[:, 0])
        self.b_max = np.where(right, mx[:, 1], mx[:, 0])
        self.b_max_step = np.where(right, ms[:, 1], ms[:, 0])
        for name in ("b_sum", "b_finite", "b_clipped", "b_bad"):
            setattr(self, name, pad(getattr(self, name)).sum(axis=1))
        self.width *= 2

    def buckets(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, "b_" + f) for f in self.BUCKET_FIELDS}

    # ----------------------------------------------------------------- serialization

    _INTS = ("n", "first", "last", "finite", "norm_max_step", "clipped", "vf_steps", "width")
    _FLOATS = (
        "norm_sum",
        "norm_min",
        "norm_max",
        "scale_sum",
        "scale_clipped_sum",
        "scale_min",
        "vf_sum",
        "vf_max",
    )

    def to_arrays(self) -> dict[str, np.ndarray]:
        G = self.n_groups
        dense = np.concatenate(
            [self.norm_counts, self.group_counts.ravel(), self.share_counts.ravel()]
        )
        nz = np.flatnonzero(dense)  # sparse: in practice a few hundred bins are used
        out = {
            "hist.past.ints": np.array([getattr(self, k) for k in self._INTS], dtype=np.int64),
            "hist.past.floats": np.array([getattr(self, k) for k in self._FLOATS], np.float64),
            "hist.past.group_max": self.group_max.astype(np.float64),
            "hist.past.group_max_step": self.group_max_step.astype(np.int64),
            "hist.sketch.layout": np.array(
                [PER_DECADE, LOG_LO, LOG_HI, SHARE_BINS, G], dtype=np.int64
            ),
            "hist.sketch.index": nz.astype(np.int64),
            "hist.sketch.count": dense[nz].astype(np.int64),
        }
        for f in self.BUCKET_FIELDS:
            out[f"hist.bucket.{f}"] = getattr(self, "b_" + f)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], n_groups: int) -> Past:
        layout = a["hist.sketch.layout"].tolist()
        if layout != [PER_DECADE, LOG_LO, LOG_HI, SHARE_BINS, n_groups]:
            raise ValueError(f"history sketch layout {layout} is not this version's")
        p = cls(n_groups)
        ints, floats = a["hist.past.ints"].tolist(), a["hist.past.floats"].tolist()
        if len(ints) != len(cls._INTS) or len(floats) != len(cls._FLOATS):
            raise ValueError("history summary has the wrong length")
        for k, v in zip(cls._INTS, ints, strict=True):
            setattr(p, k, int(v))
        for k, v in zip(cls._FLOATS, floats, strict=True):
            setattr(p, k, float(v))
        p.group_max = a["hist.past.group_max"].astype(np.float64).reshape(n_groups)
        p.group_max_step = a["hist.past.group_max_step"].astype(np.int64).reshape(n_groups)
        G = n_groups
        dense = np.zeros(NORM_BINS * (1 + G) + SHARE_BINS * G, np.int64)
        index, count = np.asarray(a["hist.sketch.index"]), np.asarray(a["hist.sketch.count"])
        if (
            index.shape != count.shape
            or index.ndim != 1
            or (index.size and (index.min() < 0 or index.max() >= dense.size))
            or (count.size and count.min() < 0)
        ):
            raise ValueError("history sketch indices or counts are out of range")
        dense[index.astype(np.intp)] = count
        p.norm_counts = dense[:NORM_BINS]
        p.group_counts = dense[NORM_BINS : NORM_BINS * (1 + G)].reshape(G, NORM_BINS)
        p.share_counts = dense[NORM_BINS * (1 + G) :].reshape(G, SHARE_BINS)
        for f in cls.BUCKET_FIELDS:
            setattr(p, "b_" + f, np.array(a[f"hist.bucket.{f}"]))
        if (
            p.width < 1
            or p.n < 0
            or any(getattr(p, "b_" + f).shape != (-(-p.n // p.width),) for f in cls.BUCKET_FIELDS)
        ):
            raise ValueError("history buckets do not match the summarized step count")
        return p


# --------------------------------------------------------------------------- the history


_WINDOW_FIELDS = ("step", "loss", "grad_norm", "scale", "value_frac", "lr", "skipped")


class History:
    """What every step did (global and per-group gradient norms, loss, lr, clipping),
    in bounded space: the last ``WINDOW`` steps in full, summaries before them, and
    every spike and non-finite step exactly. Travels inside every checkpoint."""

    def __init__(self, n_groups: int | None = None) -> None:
        self._n = 0  # steps in the window
        self._cap = WINDOW + CHUNK
        self._step = np.zeros(self._cap, np.int64)  # 1-based step number
        self._loss = np.zeros(self._cap)  # nats/char (nan if skipped)
        self._grad_norm = np.zeros(self._cap)  # global L2 norm before clipping (nan: non-finite)
        self._scale = np.zeros(self._cap)  # norm-clipping factor applied (1 = none)
        self._value_frac = np.zeros(self._cap)  # fraction of entries value-clipped
        self._lr = np.zeros(self._cap)
        self._skipped = np.zeros(self._cap, bool)  # non-finite: the update was not applied
        self._group_norms: np.ndarray | None = None  # (cap, G) per lecture-named group
        self.past: Past | None = None  # created with the group count
        # events over the whole run: spikes found as they are recorded, non-finite steps
        self.spike_step: list[int] = []
        self.spike_norm: list[float] = []
        self.spike_median: list[float] = []
        self.spike_group: list[int] = []  # index of the largest group at that step
        self.spike_scale: list[float] = []
        self.bad_steps: list[int] = []  # non-finite loss or gradient: update skipped
        self.events_dropped = 0  # beyond EVENTS_KEEP (counted, not kept)
        self.val_step: list[int] = []  # the most recent VAL_KEEP validation passes
        self.val_loss: list[float] = []  # nats/char on the validation split
        if n_groups is not None:
            self._alloc(n_groups)

    def _alloc(self, G: int) -> None:
        self._group_norms = np.zeros((self._cap, G))
        self.past = Past(G)

    # ----------------------------------------------------------------- window views

    def __len__(self) -> int:
        """Steps recorded over the whole run."""
        return self._n + (self.past.n if self.past is not None else 0)

    @property
    def step(self) -> np.ndarray:
        return self._step[: self._n]

    @property
    def loss(self) -> np.ndarray:
        return self._loss[: self._n]

    @property
    def grad_norm(self) -> np.ndarray:
        return self._grad_norm[: self._n]

    @property
    def scale(self) -> np.ndarray:
        return self._scale[: self._n]

    @property
    def value_frac(self) -> np.ndarray:
        return self._value_frac[: self._n]

    @property
    def lr(self) -> np.ndarray:
        return self._lr[: self._n]

    @property
    def skipped(self) -> np.ndarray:
        return self._skipped[: self._n]

    @property
    def group_norms(self) -> np.ndarray:
        """(n, G): the window's per-group norms (0 on non-finite steps)."""
        if self._group_norms is None:
            return np.zeros((0, 0))
        return self._group_norms[: self._n]

    @property
    def n_groups(self) -> int | None:
        return None if self._group_norms is None else self._group_norms.shape[1]

    # ----------------------------------------------------------------- recording

    def record(
        self,
        step: int,
        loss: float,
        grad_norm: float,
        scale: float,
        value_frac: float,
        lr: float,
        skipped: bool,
        group_norms: np.ndarray,
    ) -> None:
        """One training step (non-finite values as nan; group norms finite)."""
        if self._group_norms is None:
            self._alloc(int(group_norms.shape[0]))
        assert self._group_norms is not None
        if self._n == self._cap:
            self._fold(CHUNK)
        i = self._n
        prev = self._grad_norm[max(0, i - SPIKE_WINDOW) : i]
        # the median is at least the smallest finite norm (fmin skips nan): a norm within
        # SPIKE_FACTOR of that is no spike, and the median (~25 µs) is not needed
        if (
            math.isfinite(grad_norm)
            and prev.size
            and not grad_norm <= SPIKE_FACTOR * np.fmin.reduce(prev)
        ):
            prev = prev[np.isfinite(prev)]
            if prev.size:
                med = float(np.median(prev))
                if grad_norm > SPIKE_FACTOR * med:
                    self._spike(step, grad_norm, med, int(np.argmax(group_norms)), scale)
        if skipped or not math.isfinite(grad_norm):
            self._bad(step)
        self._step[i] = step
        self._loss[i] = loss
        self._grad_norm[i] = grad_norm
        self._scale[i] = scale
        self._value_frac[i] = value_frac
        self._lr[i] = lr
        self._skipped[i] = skipped
        self._group_norms[i] = group_norms
        self._n += 1

    def extend(self, arrays: dict[str, np.ndarray], group_norms: np.ndarray) -> None:
        """Many steps at once (``arrays`` keyed like :data:`_WINDOW_FIELDS`): what recording
        them one by one would give, used to convert old checkpoints that kept every step."""
        S = arrays["step"].shape[0]
        if S == 0:
            return
        if self._group_norms is None:
            self._alloc(int(group_norms.shape[1]))
        gn = np.asarray(arrays["grad_norm"], dtype=np.float64)
        context = self.grad_norm[-SPIKE_WINDOW:]
        med = running_median(np.concatenate([context, gn]), SPIKE_WINDOW)[context.shape[0] :]
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(np.isfinite(gn) & np.isfinite(med) & (gn > SPIKE_FACTOR * med))
        bad = np.flatnonzero(~np.isfinite(gn) | np.asarray(arrays["skipped"], bool))
        for i in hit.tolist():
            self._spike(
                int(arrays["step"][i]),
                float(gn[i]),
                float(med[i]),
                int(np.argmax(group_norms[i])),
                float(arrays["scale"][i]),
            )
        for i in bad.tolist():
            self._bad(int(arrays["step"][i]))
        lo = 0
        while lo < S:
            if self._n == self._cap:
                self._fold(CHUNK)
            k = min(S - lo, self._cap - self._n)
            sl, dst = slice(lo, lo + k), slice(self._n, self._n + k)
            for f in _WINDOW_FIELDS:
                getattr(self, "_" + f)[dst] = arrays[f][sl]
            assert self._group_norms is not None
            self._group_norms[dst] = group_norms[sl]
            self._n += k
            lo += k

    def _spike(self, step: int, norm: float, med: float, group: int, scale: float) -> None:
        if len(self.spike_step) >= EVENTS_KEEP:
            self.events_dropped += 1
            return
        self.spike_step.append(step)
        self.spike_norm.append(norm)
        self.spike_median.append(med)
        self.spike_group.append(group)
        self.spike_scale.append(scale)

    def _bad(self, step: int) -> None:
        if len(self.bad_steps) >= EVENTS_KEEP:
            self.events_dropped += 1
            return
        self.bad_steps.append(step)

    def _fold(self, k: int) -> None:
        """The window's oldest ``k`` steps go into the past summaries."""
        assert self.past is not None and self._group_norms is not None
        self.past.fold(
            self._step[:k],
            self._grad_norm[:k],
            self._scale[:k],
            self._value_frac[:k],
            self._skipped[:k],
            self._group_norms[:k],
        )
        n = self._n
        for f in _WINDOW_FIELDS:
            a = getattr(self, "_" + f)
            a[: n - k] = a[k:n]
        self._group_norms[: n - k] = self._group_norms[k:n]
        self._n = n - k

    def record_val(self, step: int, loss: float) -> None:
        self.val_step.append(step)
        self.val_loss.append(loss)
        if len(self.val_step) > VAL_KEEP:
            del self.val_step[0], self.val_loss[0]

    # ----------------------------------------------------------------- serialization

    def to_arrays(self, n_groups: int) -> dict[str, np.ndarray]:
        G = n_groups if self.n_groups is None else self.n_groups
        out = {f"hist.{f}": getattr(self, f).copy() for f in _WINDOW_FIELDS}
        out["hist.group_norms"] = (
            self.group_norms.copy() if self._group_norms is not None else np.zeros((0, G))
        )
        out["hist.format"] = np.array([FORMAT], np.int64)
        # non-finite steps are recorded as nan by design; the store refuses non-finite
        # floats, so they travel as a mask and are restored on load
        for key in ("hist.loss", "hist.grad_norm"):
            arr = out[key]
            bad = ~np.isfinite(arr)
            out[key + ".nonfinite"] = bad
            out[key] = np.where(bad, 0.0, arr)
        out.update((self.past or Past(G)).to_arrays())
        out["hist.spike.step"] = np.array(self.spike_step, np.int64)
        out["hist.spike.grad_norm"] = np.array(self.spike_norm, np.float64)
        out["hist.spike.median"] = np.array(self.spike_median, np.float64)
        out["hist.spike.group"] = np.array(self.spike_group, np.int64)
        out["hist.spike.scale"] = np.array(self.spike_scale, np.float64)
        out["hist.bad_steps"] = np.array(self.bad_steps, np.int64)
        out["hist.events_dropped"] = np.array([self.events_dropped], np.int64)
        out["val.step"] = np.array(self.val_step, np.int64)
        out["val.loss"] = np.array(self.val_loss, np.float64)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> History:
        """Back from :meth:`to_arrays`; a checkpoint of format 1 (every step kept) is
        converted: its steps are recorded again, so only the last window stays in full."""
        h = cls()
        if "hist.step" not in a:
            return h
        cols = {f: np.array(a[f"hist.{f}"]) for f in _WINDOW_FIELDS}
        for key in ("loss", "grad_norm"):
            cols[key] = cols[key].astype(np.float64)
            cols[key][a[f"hist.{key}.nonfinite"]] = np.nan
        cols["skipped"] = cols["skipped"].astype(bool)
        gnorms = np.asarray(a["hist.group_norms"], dtype=np.float64)
        n, G = cols["step"].shape[0], gnorms.shape[1]
        if gnorms.shape[0] != n or any(c.shape != (n,) for c in cols.values()):
            raise ValueError(f"history columns disagree in length (group norms {gnorms.shape})")
        h._alloc(G)
        if "hist.format" not in a:  # format 1: record every step again
            h.extend(cols, gnorms)
        else:
            if int(a["hist.format"][0]) != FORMAT:
                raise ValueError(f"history format {int(a['hist.format'][0])} is not {FORMAT}")
            if n > h._cap:
                raise ValueError(f"history window holds {n} steps, more than {h._cap}")
            for f in _WINDOW_FIELDS:
                getattr(h, "_" + f)[:n] = cols[f]
            assert h._group_norms is not None
            h._group_norms[:n] = gnorms
            h._n = n
            h.past = Past.from_arrays(a, G)
            h.spike_step = a["hist.spike.step"].tolist()
            h.spike_norm = a["hist.spike.grad_norm"].tolist()
            h.spike_median = a["hist.spike.median"].tolist()
            h.spike_group = a["hist.spike.group"].tolist()
            h.spike_scale = a["hist.spike.scale"].tolist()
            h.bad_steps = a["hist.bad_steps"].tolist()
            h.events_dropped = int(a["hist.events_dropped"][0])
        h.val_step = a["val.step"].tolist()[-VAL_KEEP:]
        h.val_loss = a["val.loss"].tolist()[-VAL_KEEP:]
        return h
