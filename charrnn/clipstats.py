"""What gradient clipping did: statistics of pre-clip gradient norms (numbers only).

Two sources feed the same statistics:

* a run's recorded history (:meth:`Series.from_checkpoint`): the trainer keeps, for
  every step, the pre-clip global L2 norm, the norm-clipping factor it applied, the
  fraction of entries value clipping clamped, and the norm of every lecture-named
  parameter group (``l0.Wf``, ``l0.bf``, ``Wya``, ...);
* a probe (:func:`probe`): gradients of a checkpoint on N consecutive batches of a
  corpus, computed without updating anything. Because the raw gradient is at hand,
  a probe also measures value clipping exactly, per group and at any threshold,
  including how far it turns the gradient (cosine between clipped and raw).

:func:`summarize` turns a :class:`Series` into the plain dict that ``charrnn
clip-stats --json`` prints; ``charrnn/clipreport.py`` draws the same dict for a
person. Pure NumPy: nothing here prints, reads files or owns randomness.

JSON schema (``charrnn clip-stats --json``), one document, snake_case keys; every
key is always present (``null`` where it does not apply):

``schema``
    ``"charrnn.clip-stats/1"``.
``mode``
    ``"history"`` (the run's recorded steps) or ``"probe"`` (fresh gradients).
``run``, ``checkpoint``, ``step``
    run name, checkpoint path and the training step it was saved at.
``config``
    ``{cell, layers, hidden, optimizer, lr, clip_norm, clip_value, batch_size,
    seq_len, mode}``: how the run was trained (``clip_*`` null when off; ``mode``
    ``"names"``, whose batches are ``batch_size`` whole lines and ``seq_len`` does not
    apply, or ``"prose"``, batches of ``batch_size`` streams of ``seq_len``).
``steps``
    ``{count, first, last, finite, nonfinite}``: the steps measured (in probe mode
    the "steps" are batches numbered 1..N); ``finite`` counts steps with a finite
    gradient, ``nonfinite`` steps whose loss or gradient was not (update skipped).
``grad_norm``
    percentiles of the pre-clip global L2 norm over finite steps:
    ``{min, p50, p90, p95, p99, max, mean, max_step}`` (null without finite steps).
``clipping``
    ``{norm: {threshold, clipped_steps, fraction_clipped, mean_scale,
    mean_scale_when_clipped, min_scale}, value: {threshold, fraction_entries,
    steps_with_clamping, fraction_steps, max_fraction_entries}}`` over finite steps.
    ``scale`` is the factor norm clipping multiplied the gradient by (1 = did not
    bite); ``fraction_entries`` is the mean fraction of entries clamped per step.
``groups``
    one row per lecture-named parameter group, in buffer order: ``{name, p50, p90,
    p99, max, max_step, share_p50, fraction_over_threshold, fraction_entries}``.
    ``share_p50`` is the median share of the squared global norm in that group;
    ``fraction_over_threshold`` the fraction of steps where that group's norm *alone*
    exceeded ``group_threshold``; ``fraction_entries`` (probe mode only, else null)
    the exact fraction of the group's entries above each threshold of
    ``probe.value_thresholds``, in the same order.
``group_threshold``
    ``{value, source}``: the norm threshold the groups are compared with, the run's
    ``clip_norm`` (source ``"clip_norm"``) or else the suggestion (``"suggested"``).
``events``
    ``{factor, window, exploding, spike_count, spikes: [{step, grad_norm,
    running_median, ratio, top_group, scale}], nonfinite_steps: [int]}``. A spike is a
    step whose norm exceeds ``factor`` times the median of the finite norms of the
    previous ``window`` steps (``ratio``: null when that median is 0; ``top_group``:
    the group with the largest norm at that step; ``scale``: the factor norm clipping
    applied to it, 1 = none);
    ``nonfinite_steps`` are the steps whose loss or gradient was nan/inf (the trainer
    skipped their update); ``exploding`` is true when either list is non-empty. Lists
    are complete (the terminal view shortens them).
``suggestion``
    ``{verdict, clip_norm, percentile, fraction_clipped, reason, needed, basis,
    measured}``: one recommendation, by one rule in both modes (:func:`suggest`).
    Clipping is needed when the norm spiked (see ``events``) or went non-finite; in
    probe mode the checkpoint's recorded history counts too, so a healthy run gets
    the same advice from both views. ``verdict`` is ``"exploding"`` (needed:
    ``clip_norm`` is the ``percentile`` of the norms that did not spike),
    ``"not_needed"`` (``clip_norm`` is a safety net, twice the largest norm, that
    would not have bitten; ``percentile`` null) or ``"no_data"`` (``clip_norm`` null);
    ``"clip"`` (a wide spread without spikes) is no longer given. ``needed``: true,
    false, or null without data. ``basis``: ``"history"`` or ``"probe"``, the
    measurements the threshold comes from (the history when it has the evidence).
    ``fraction_clipped``: the fraction of this document's steps (batches) above
    ``clip_norm``. ``measured``: what each view measured, the history first,
    ``[{source, count, spike_count, nonfinite}]``; ``reason`` says it in words.
``history``
    ``{steps_in_full, steps_summarized, exact_from_step, percentiles, spikes,
    events_dropped}``: how much of the series is known step by step. A run's history
    keeps its last few thousand steps in full and summarizes the earlier ones
    (:mod:`charrnn.history`); once it does (``steps_summarized`` > 0), percentiles,
    shares and ``fraction_over_threshold`` are read off sketches, within about 1.2%
    (``percentiles: "approximate"``), while counts, means, min, max, the clipping
    figures, every spike and every non-finite step stay exact. ``spikes`` is
    ``"filtered"`` when ``--spike-factor``/``--window`` differ from the rule the
    trainer recorded spikes with (10x / 50): the summarized steps then show the
    recorded spikes that pass the new factor. A probe is always exact.
``probe``
    null in history mode; in probe mode ``{corpus, batching, batches, batch_size,
    seq_len, loss_mean, parameters, norm_thresholds: [{threshold, labels,
    fraction_clipped, mean_scale, cosine}], value_thresholds: [{threshold, labels,
    fraction_entries, fraction_batches, cosine_mean, cosine_min}]}``. ``batching`` is
    how training reads the corpus: ``"lines"`` for a names-mode run (batches of
    ``batch_size`` training lines, each from the start state, padding masked out, in
    the run's epoch order and without its validation lines; ``seq_len`` null) or
    ``"streams"`` (``batch_size`` streams of ``seq_len``, the state carried).
    ``loss_mean`` is nats per character over the probed characters. Norm clipping multiplies
    the gradient by a positive number, so its cosine with the raw gradient is exactly 1;
    value clipping clamps entries one by one and turns it (cosine below 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charrnn.history import (
    SHARE_BINS,
    SPIKE_FACTOR,
    SPIKE_WINDOW,
    History,
    Past,
    finite_or_none,
    norm_bin,
    norm_bin_value,
    running_median,
    share_bin,
    share_bin_value,
)

SCHEMA = "charrnn.clip-stats/1"
ASSIGNMENT_CLIP = 5.0  # the assignment clips every gradient entry to ±5
SUGGEST_PERCENTILE = 90.0  # suggested clip_norm: this percentile of non-spike norms
TOP_LEVEL_KEYS = (
    "schema",
    "mode",
    "run",
    "checkpoint",
    "step",
    "config",
    "steps",
    "grad_norm",
    "clipping",
    "groups",
    "group_threshold",
    "events",
    "suggestion",
    "history",
    "probe",
)


# --------------------------------------------------------------------------- the series


@dataclass(frozen=True, eq=False)
class Recorded:
    """Events the trainer found as it recorded each step, over the whole run."""

    spike_step: np.ndarray  # (K,) int64
    spike_norm: np.ndarray  # (K,) pre-clip global norm of the spike
    spike_median: np.ndarray  # (K,) running median it was compared with
    spike_group: np.ndarray  # (K,) int64 index of the largest group at that step
    spike_scale: np.ndarray  # (K,) norm-clipping factor applied to it
    bad_steps: np.ndarray  # (N,) int64 non-finite or skipped steps
    dropped: int  # events beyond the history's cap: counted, not kept
    factor: float = SPIKE_FACTOR  # the spike rule they were found with
    window: int = SPIKE_WINDOW


@dataclass(frozen=True, eq=False)
class Series:
    """Per-step gradient measurements, from a run's history or from a probe.

    The arrays hold the steps known one by one: every step of a probe or of a short
    run, the recent window of a long one. ``past`` then summarizes the steps before
    ``step[0]`` (see :mod:`charrnn.history`) and ``recorded`` holds every spike and
    non-finite step of the run.
    """

    step: np.ndarray  # (S,) int64, 1-based step (probe: batch number)
    grad_norm: np.ndarray  # (S,) pre-clip global L2 norm; nan where non-finite
    scale: np.ndarray  # (S,) norm-clipping factor applied (1 = did not bite)
    value_frac: np.ndarray  # (S,) fraction of entries clamped by value clipping
    skipped: np.ndarray  # (S,) bool, non-finite: the update was not applied
    group_norms: np.ndarray  # (S, G) pre-clip L2 norm per group; nan where non-finite
    groups: tuple[str, ...]  # (G,) lecture names: l0.Wf, l0.bf, ..., Wya, by
    loss: np.ndarray  # (S,) nats/char, nan where non-finite
    past: Past | None = None  # summaries of the steps before step[0] (long runs)
    recorded: Recorded | None = None  # the run's events as recorded (history only)

    def __post_init__(self) -> None:
        S = self.step.shape[0]
        for name in ("grad_norm", "scale", "value_frac", "skipped", "loss"):
            if getattr(self, name).shape != (S,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({S},)")
        if self.group_norms.shape != (S, len(self.groups)):
            raise ValueError(
                f"group_norms has shape {self.group_norms.shape}, "
                f"expected ({S}, {len(self.groups)})"
            )
        if self.past is not None and self.past.n_groups != len(self.groups):
            raise ValueError(
                f"the summaries have {self.past.n_groups} groups, not {len(self.groups)}"
            )

    @property
    def finite(self) -> np.ndarray:
        """(S,) bool: steps whose gradient was finite (clipping applied to them)."""
        return np.isfinite(self.grad_norm)

    @property
    def n_past(self) -> int:
        """Steps known only through the summaries."""
        return self.past.n if self.past is not None else 0

    @property
    def count(self) -> int:
        """Steps of the whole series."""
        return self.n_past + self.step.shape[0]

    @property
    def first_step(self) -> int | None:
        if self.n_past:
            assert self.past is not None
            return self.past.first
        return int(self.step[0]) if self.step.shape[0] else None

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], groups: Sequence[str]) -> Series:
        """The recorded history of a checkpoint's arrays (``hist.*``); empty if there is none."""
        return cls.from_history(History.from_arrays(arrays), groups)

    @classmethod
    def from_history(cls, h: History, groups: Sequence[str]) -> Series:
        S, G = h.step.shape[0], len(groups)
        gn = h.grad_norm.astype(np.float64)
        group_norms = h.group_norms.astype(np.float64) if S else np.zeros((0, G))
        if group_norms.shape != (S, G):
            raise ValueError(f"hist.group_norms has shape {group_norms.shape}, expected {(S, G)}")
        group_norms[~np.isfinite(gn)] = np.nan  # stored as 0 on non-finite steps
        past = h.past if h.past is not None and h.past.n else None
        return cls(
            step=h.step.astype(np.int64),
            grad_norm=gn,
            scale=h.scale.astype(np.float64),
            value_frac=h.value_frac.astype(np.float64),
            skipped=h.skipped.astype(bool),
            group_norms=group_norms,
            groups=tuple(groups),
            loss=h.loss.astype(np.float64),
            past=past,
            recorded=Recorded(
                spike_step=np.array(h.spike_step, np.int64),
                spike_norm=np.array(h.spike_norm, np.float64),
                spike_median=np.array(h.spike_median, np.float64),
                spike_group=np.array(h.spike_group, np.int64),
                spike_scale=np.array(h.spike_scale, np.float64),
                bad_steps=np.array(h.bad_steps, np.int64),
                dropped=h.events_dropped,
            ),
        )


@dataclass(frozen=True, eq=False)
class Dist:
    """The finite values of one quantity over a series: some known one by one, the
    others (a long run's past) as sketch counts with their exact count, sum, min and
    max. With no sketch every statistic is exact (numpy's linear percentiles); with
    one, percentiles and fractions over a threshold are read off the bins."""

    exact: np.ndarray  # (N,) finite values known one by one
    counts: np.ndarray | None = None  # (bins,) sketch of the other values
    n: int = 0  # how many values the sketch holds, their sum, min and max
    total: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    share: bool = False  # linear [0, 1] bins (shares), else log bins (norms)

    @property
    def size(self) -> int:
        return int(self.exact.size) + self.n

    @property
    def approximate(self) -> bool:
        return self.n > 0

    def _bin(self, v: np.ndarray) -> np.ndarray:
        return share_bin(v) if self.share else norm_bin(v)

    def _value(self, i: np.ndarray) -> np.ndarray:
        return share_bin_value(i) if self.share else norm_bin_value(i)

    def min(self) -> float:
        parts = ([float(self.exact.min())] if self.exact.size else []) + (
            [self.lo] if self.n else []
        )
        return min(parts) if parts else math.nan

    def max(self) -> float:
        parts = ([float(self.exact.max())] if self.exact.size else []) + (
            [self.hi] if self.n else []
        )
        return max(parts) if parts else math.nan

    def mean(self) -> float:
        if self.size == 0:
            return math.nan
        return (float(self.exact.sum()) + self.total) / self.size

    def percentile(self, qs: Sequence[float]) -> list[float]:
        if self.size == 0:
            return [math.nan] * len(qs)
        if not self.approximate:
            return [float(v) for v in np.percentile(self.exact, qs)]
        assert self.counts is not None
        counts = self.counts + np.bincount(self._bin(self.exact), minlength=self.counts.shape[0])
        cum = np.cumsum(counts)  # (bins,)
        k = np.floor(np.asarray(qs, dtype=np.float64) / 100 * (self.size - 1))  # sorted rank
        i = np.searchsorted(cum, k, side="right")  # bin holding that rank
        return [float(v) for v in np.clip(self._value(i), self.min(), self.max())]

    def fraction_over(self, threshold: float) -> float:
        """Fraction of the values above ``threshold`` (sketched values: those in bins
        above it, and the share of its own bin that lies above it)."""
        if self.size == 0:
            return math.nan
        over = float((self.exact > threshold).sum())
        if self.n and self.hi > threshold:
            assert self.counts is not None
            b = int(self._bin(np.array([threshold]))[0])
            over += float(self.counts[b + 1 :].sum())
            # the threshold's own bin: the part above it, values spread evenly in the bin
            # (in log10 for norms)
            lo_edge, hi_edge = self._value(np.array([b - 0.5, b + 0.5]))
            if self.share:
                part = (hi_edge - threshold) / (hi_edge - lo_edge)
            else:
                part = math.log(hi_edge / threshold) / math.log(hi_edge / lo_edge)
            over += float(self.counts[b]) * min(max(part, 0.0), 1.0)
        return over / self.size

    def summary(self) -> dict[str, float | None]:
        """The keys of :func:`percentiles`."""
        if self.size == 0:
            return dict.fromkeys(("min", "p50", "p90", "p95", "p99", "max", "mean"))
        q = self.percentile([50, 90, 95, 99])
        return {
            "min": self.min(),
            "p50": q[0],
            "p90": q[1],
            "p95": q[2],
            "p99": q[3],
            "max": self.max(),
            "mean": self.mean(),
        }


def norm_dist(s: Series) -> Dist:
    """The finite pre-clip global norms of the whole series."""
    v = s.grad_norm[s.finite]
    p = s.past
    if p is None or p.finite == 0:
        return Dist(v)
    return Dist(v, p.norm_counts, p.finite, p.norm_sum, p.norm_min, p.norm_max)


def group_dist(s: Series, j: int) -> Dist:
    v = s.group_norms[s.finite, j]
    p = s.past
    if p is None or p.finite == 0:
        return Dist(v)
    c = p.group_counts[j]
    # the group's past min is not kept: the lowest non-empty bin's lower edge stands in
    lo = float(norm_bin_value(np.flatnonzero(c)[0] - 0.5)) if c.any() else 0.0
    return Dist(
        v,
        c,
        int(c.sum()),
        float((c * norm_bin_value(np.arange(c.size))).sum()),
        lo,
        float(p.group_max[j]),
    )


def share_dist(s: Series, j: int) -> Dist:
    """Each step's share of the squared global norm in group ``j``."""
    fin = s.finite
    total = s.grad_norm[fin]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, s.group_norms[fin, j] ** 2 / total**2, np.nan)
    share = share[np.isfinite(share)]
    p = s.past
    if p is None or p.finite == 0:
        return Dist(share, share=True)
    c = p.share_counts[j]
    nz = np.flatnonzero(c)
    if nz.size == 0:
        return Dist(share, share=True)
    return Dist(
        share,
        c,
        int(c.sum()),
        float((c * share_bin_value(np.arange(c.size))).sum()),
        float(nz[0]) / SHARE_BINS,
        float(nz[-1] + 1) / SHARE_BINS,
        share=True,
    )


# --------------------------------------------------------------------------- small pieces


def percentiles(x: np.ndarray) -> dict[str, float | None]:
    """min, p50, p90, p95, p99, max and mean of the finite values of ``x`` (numpy's
    default linear interpolation); all None when there is none."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    keys = ("min", "p50", "p90", "p95", "p99", "max", "mean")
    if v.size == 0:
        return dict.fromkeys(keys)
    q = np.percentile(v, [50, 90, 95, 99])
    return {
        "min": float(v.min()),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p95": float(q[2]),
        "p99": float(q[3]),
        "max": float(v.max()),
        "mean": float(v.mean()),
    }


def _units(word: str) -> str:
    return word + ("es" if word.endswith("ch") else "s")


def round_sig(x: float, digits: int = 2) -> float:
    """``x`` to ``digits`` significant figures (a threshold a person can type)."""
    return float(f"{x:.{digits}g}")


def find_spikes(
    step: np.ndarray, norm: np.ndarray, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Exploding-gradient events: (indices, running medians) of the steps whose finite
    norm exceeds ``factor`` × the median of the previous ``window`` finite norms."""
    med = running_median(norm, window)
    with np.errstate(invalid="ignore"):
        hit = np.isfinite(norm) & np.isfinite(med) & (norm > factor * med)
    idx = np.flatnonzero(hit)
    return idx, med[idx]


def bucket_max(
    step: np.ndarray, norm: np.ndarray, columns: int, bad: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Steps grouped into at most ``columns`` consecutive buckets for a chart.

    Returns ``first``/``last`` step of each bucket, ``max`` (the largest finite norm,
    nan if none) and ``nonfinite`` (bool: the bucket holds a non-finite norm, or a
    step flagged in the (S,) mask ``bad``, e.g. skipped steps).
    """
    S = norm.shape[0]
    n = max(0, min(columns, S))
    edges = np.linspace(0, S, n + 1).round().astype(np.intp)  # (n+1,) bucket bounds
    starts = edges[:-1]
    finite = np.isfinite(norm)
    flagged = ~finite if bad is None else ~finite | bad
    filled = np.where(finite, norm, -np.inf)
    mx = np.maximum.reduceat(filled, starts) if n else np.zeros(0)
    bad = np.add.reduceat(flagged.astype(np.intp), starts) > 0 if n else np.zeros(0, bool)
    return {
        "first": step[starts],
        "last": step[edges[1:] - 1],
        "max": np.where(np.isfinite(mx), mx, np.nan),
        "nonfinite": bad,
    }


def columns(s: Series, n: int) -> dict[str, np.ndarray]:
    """:func:`bucket_max` of the whole series in at most ``n`` columns: the past's
    buckets and the steps known one by one, grouped by their position in the run."""
    p = s.past
    if p is None:
        return bucket_max(s.step, s.grad_norm, n, s.skipped)
    S = s.step.shape[0]
    K = p.b_first.shape[0]
    # segments: the past's buckets, then one per step of the window
    start = np.concatenate([np.arange(K) * p.width, p.n + np.arange(S)])  # (K+S,) position
    first = np.concatenate([p.b_first, s.step])
    last = np.concatenate([p.b_last, s.step])
    mx = np.concatenate([np.where(p.b_finite > 0, p.b_max, np.nan), s.grad_norm])
    bad = np.concatenate([p.b_bad > 0, ~s.finite | s.skipped])
    cols = max(1, min(n, s.count))
    edges = np.linspace(0, s.count, cols + 1)
    col = np.searchsorted(edges, start, side="right") - 1  # (K+S,) column of each segment
    used, starts = np.unique(col, return_index=True)  # segments are in column order
    filled = np.where(np.isfinite(mx), mx, -np.inf)
    top = np.maximum.reduceat(filled, starts)
    ends = np.r_[starts[1:], col.shape[0]] - 1
    return {
        "first": first[starts],
        "last": last[ends],
        "max": np.where(np.isfinite(top), top, np.nan),
        "nonfinite": np.add.reduceat(bad.astype(np.intp), starts) > 0,
    }


# --------------------------------------------------------------------------- the summary


def clipping_summary(s: Series, clip_norm: float | None, clip_value: float | None) -> dict:
    """How often each clipping mode bit, and by how much, over the finite steps (exact
    over the whole run: the summaries keep these counts and sums)."""
    fin = s.finite
    scale = s.scale[fin]
    clipped = scale < 1.0
    vf = s.value_frac[fin]
    p = s.past if s.past is not None else Past(len(s.groups))
    n = int(fin.sum()) + p.finite
    k = int(clipped.sum()) + p.clipped
    kv = int((vf > 0).sum()) + p.vf_steps
    mins = [float(scale.min())] if scale.size else []
    maxes = [float(vf.max())] if vf.size else []
    if p.finite:
        mins.append(p.scale_min)
        maxes.append(p.vf_max)
    return {
        "norm": {
            "threshold": clip_norm,
            "clipped_steps": k,
            "fraction_clipped": k / n if n else None,
            "mean_scale": finite_or_none((scale.sum() + p.scale_sum) / n) if n else None,
            "mean_scale_when_clipped": (
                finite_or_none((scale[clipped].sum() + p.scale_clipped_sum) / k) if k else None
            ),
            "min_scale": finite_or_none(min(mins)) if n else None,
        },
        "value": {
            "threshold": clip_value,
            "fraction_entries": finite_or_none((vf.sum() + p.vf_sum) / n) if n else None,
            "steps_with_clamping": kv,
            "fraction_steps": kv / n if n else None,
            "max_fraction_entries": finite_or_none(max(maxes)) if n else None,
        },
    }


@dataclass(frozen=True, eq=False)
class Evidence:
    """What one view measured, as far as the advice needs it: the recorded history's
    training steps, or a probe's fresh gradients at the checkpoint."""

    source: str  # "history" (recorded training steps) or "probe" (fresh gradients)
    count: int  # steps (probe: batches) measured, finite or not
    norms: Dist  # their finite pre-clip global norms
    healthy: Dist  # the finite norms of the steps that were not spikes
    spikes: int  # steps whose norm jumped above the spike rule
    nonfinite: int  # steps whose loss or gradient was nan/inf

    @property
    def unit(self) -> str:
        return "batch" if self.source == "probe" else "step"

    @property
    def exploded(self) -> bool:
        """The one rule both views share: clipping is needed when the norm spiked far
        above its typical level or went non-finite."""
        return self.spikes > 0 or self.nonfinite > 0

    def what(self) -> str:
        """What was measured, in words."""
        if self.source == "probe":
            n = f"{self.count} {self.unit if self.count == 1 else _units(self.unit)}"
            return f"this probe (fresh gradients of the checkpoint on {n})"
        n = f"{self.count} training {'step' if self.count == 1 else 'steps'}"
        return f"the recorded history ({n})"

    def found(self) -> str:
        """What it showed: '2 spikes and 1 non-finite step', or 'no spike and no ...'."""
        if not self.exploded:
            return f"no spike and no non-finite {self.unit}"
        parts = []
        if self.spikes:
            parts.append(f"{self.spikes} spike{'s' if self.spikes != 1 else ''}")
        if self.nonfinite:
            n = self.nonfinite
            parts.append(f"{n} non-finite {self.unit if n == 1 else _units(self.unit)}")
        return " and ".join(parts)


def evidence(s: Series, events: dict, spike: np.ndarray, source: str) -> Evidence:
    """The :class:`Evidence` of series ``s`` given its :func:`events_summary` and the
    (S,) spike mask of the steps known one by one."""
    norms = norm_dist(s)
    # the healthy norms: without the spikes (those of the past leave the sketch's bins)
    healthy = Dist(s.grad_norm[s.finite & ~spike])
    if norms.approximate:
        assert norms.counts is not None
        past_spikes = (
            np.array(
                [e["grad_norm"] for e in events["spikes"] if e["step"] < s.step[0]],
                dtype=np.float64,
            )
            if s.step.shape[0]
            else np.array([e["grad_norm"] for e in events["spikes"]])
        )
        counts = norms.counts - np.bincount(norm_bin(past_spikes), minlength=norms.counts.shape[0])
        healthy = Dist(
            healthy.exact,
            np.maximum(counts, 0),
            norms.n - past_spikes.size,
            norms.total - float(past_spikes.sum()),
            norms.lo,
            norms.hi,
        )
    return Evidence(
        source=source,
        count=s.count,
        norms=norms,
        healthy=healthy,
        spikes=int(events["spike_count"]),
        nonfinite=len(events["nonfinite_steps"]),
    )


def measure(
    s: Series, source: str, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW
) -> Evidence:
    """The :class:`Evidence` of ``s`` under the spike rule ``factor`` x ``window``."""
    events, spike = events_summary(s, factor, window)
    return evidence(s, events, spike, source)


def suggest(
    view: Evidence,
    history: Evidence | None = None,
    *,
    configured: float | None = None,
    configured_fraction: float | None = None,
    percentile: float = SUGGEST_PERCENTILE,
) -> dict:
    """One recommendation from what was measured, the same rule in both views.

    ``view``: this report's measurements; ``history``: in a probe, the checkpoint's
    recorded history (None without one). Clipping is needed when any of them shows a
    spike or a non-finite step (:attr:`Evidence.exploded`). The threshold comes from
    the recorded history when it has the evidence (what training saw, over many
    steps), else from the probe: when clipping is needed, the ``percentile`` of the
    healthy norms (it cuts spikes to the size of an ordinary large step and leaves
    typical ones alone); when it is not, a safety net (twice the largest norm) that
    would not have bitten on any of them. ``configured``: the run's --clip-norm, said whether it bit
    (``configured_fraction``: the recorded fraction, else measured on ``view``).
    """
    views = [e for e in (history, view) if e is not None]  # the history's word first
    measured = [
        {"source": e.source, "count": e.count, "spike_count": e.spikes, "nonfinite": e.nonfinite}
        for e in views
    ]
    usable = [e for e in views if e.healthy.size and e.norms.max() > 0.0]
    needed = any(e.exploded for e in views)
    basis = next((e for e in usable if e.exploded or not needed), None)
    basis = basis or (usable[0] if usable else None)
    if basis is None:
        why = (
            "every gradient was zero"
            if any(e.healthy.size for e in views)
            else "no finite gradient norm was recorded"
        )
        return {
            "verdict": "no_data",
            "clip_norm": None,
            "percentile": None,
            "fraction_clipped": None,
            "reason": why,
            "needed": None,
            "basis": None,
            "measured": measured,
        }
    shown = "; ".join(f"{e.what()} shows {e.found()}" for e in views)
    if len(views) == 2 and not needed:
        shown = f"{views[1].what()} shows {views[1].found()}, nor does {views[0].what()}"
    of = "the training steps" if basis.source == "history" else "the probed batches"
    unit = basis.unit
    if needed:
        value = round_sig(float(basis.healthy.percentile([percentile])[0]))
        p50 = basis.healthy.percentile([50])[0]
        used: float | None = percentile
        reason = (
            f"clipping is needed: {shown}; --clip-norm {value:g} is the p{percentile:g} of "
            f"{of} that did not spike: it cuts spikes down to the size of an ordinary "
            f"large {unit} and leaves the typical {unit} (median {p50:.3g}) untouched"
        )
    else:
        value = round_sig(2 * basis.norms.max())
        used = None
        reason = (
            f"clipping is not needed: {shown}; --clip-norm {value:g} (twice the largest "
            f"norm of {of}) is a safety net that would not have bitten on any of them"
        )
    if configured is not None:
        mx = view.norms.max()
        frac = (
            view.norms.fraction_over(configured)
            if configured_fraction is None
            else configured_fraction
        )  # recorded: value clipping may have acted first
        units = _units(view.unit)
        if frac == 0:
            why = (
                f"largest norm {mx:.3g}"
                if mx <= configured
                else "value clipping had already shrunk the gradient below it"
            )
            reason += f"; the run's --clip-norm {configured:g} never bit on these {units} ({why})"
        else:
            reason += f"; the run's --clip-norm {configured:g} clipped {frac:.1%} of these {units}"
    return {
        "verdict": "exploding" if needed else "not_needed",
        "clip_norm": value,
        "percentile": used,
        "fraction_clipped": finite_or_none(view.norms.fraction_over(value)),
        "reason": reason,
        "needed": needed,
        "basis": basis.source,
        "measured": measured,
    }


def group_table(
    s: Series, threshold: float | None, fraction_entries: np.ndarray | None = None
) -> list[dict]:
    """Per-group norm percentiles, share of the squared norm, and how often the group's
    norm alone exceeded ``threshold``. ``fraction_entries``: (G, K) probe-only exact
    fractions of each group's entries above each value threshold."""
    fin = s.finite
    step = s.step[fin]
    rows = []
    for j, name in enumerate(s.groups):
        col = s.group_norms[fin, j]
        d = group_dist(s, j)
        p50, p90, p99 = d.percentile([50, 90, 99])
        max_step = int(step[np.argmax(col)]) if col.size else None
        if s.past is not None and s.past.finite and (not col.size or d.max() > col.max()):
            max_step = int(s.past.group_max_step[j])
        share = share_dist(s, j)
        rows.append(
            {
                "name": name,
                "p50": finite_or_none(p50),
                "p90": finite_or_none(p90),
                "p99": finite_or_none(p99),
                "max": finite_or_none(d.max()),
                "max_step": max_step,
                "share_p50": finite_or_none(share.percentile([50])[0]) if share.size else None,
                "fraction_over_threshold": (
                    d.fraction_over(threshold) if threshold is not None and d.size else None
                ),
                "fraction_entries": (
                    None if fraction_entries is None else [float(x) for x in fraction_entries[j]]
                ),
            }
        )
    return rows


def events_summary(
    s: Series, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW
) -> tuple[dict, np.ndarray]:
    """Spikes and non-finite steps; also returns the (S,) spike mask of the steps known
    one by one.

    A series with a past takes the events its history recorded. They were found with
    the default rule; another ``factor`` or ``window`` is applied exactly to the steps
    known one by one, and to the recorded spikes of the past as a filter (a higher
    factor keeps those whose ratio exceeds it; the past cannot show more spikes than
    the default rule found there).
    """
    S = s.step.shape[0]
    mask = np.zeros(S, dtype=bool)
    rec = s.recorded if s.past is not None else None  # a short series recomputes all
    rows: list[tuple[int, float, float, str | None, float]] = []  # step, norm, median, group, scale
    default = rec is not None and factor == rec.factor and window == rec.window
    if rec is not None:
        keep = np.ones(rec.spike_step.shape[0], bool)
        if not default:  # the window is recomputed with the asked rule; the past is filtered
            if S:
                keep &= rec.spike_step < s.step[0]
            keep &= rec.spike_norm > factor * rec.spike_median
        for i in np.flatnonzero(keep).tolist():
            g = int(rec.spike_group[i])
            top = s.groups[g] if 0 <= g < len(s.groups) else None
            rows.append(
                (
                    int(rec.spike_step[i]),
                    float(rec.spike_norm[i]),
                    float(rec.spike_median[i]),
                    top,
                    float(rec.spike_scale[i]),
                )
            )
        nonfinite = rec.bad_steps.tolist()
        if default:
            mask = np.isin(s.step, rec.spike_step)
    else:
        nonfinite = s.step[~s.finite | s.skipped].tolist()
    if not default:
        idx, med = find_spikes(s.step, s.grad_norm, factor, window)
        mask[idx] = True
        for i, m in zip(idx.tolist(), med.tolist(), strict=True):
            rows.append(
                (int(s.step[i]), float(s.grad_norm[i]), float(m), _top(s, i), float(s.scale[i]))
            )
        rows.sort(key=lambda r: r[0])
    spikes = [
        {
            "step": st,
            "grad_norm": gn,
            "running_median": m,
            "ratio": gn / m if m > 0 else None,  # a zero median: every earlier norm was 0
            "top_group": top,
            "scale": sc,
        }
        for st, gn, m, top, sc in rows
    ]
    doc = {
        "factor": float(factor),
        "window": int(window),
        "exploding": bool(spikes or nonfinite),
        "spike_count": len(spikes),
        "spikes": spikes,
        "nonfinite_steps": nonfinite,
    }
    return doc, mask


def _top(s: Series, i: int) -> str | None:
    """The group with the largest norm at window entry ``i``."""
    row = s.group_norms[i]
    return s.groups[int(np.nanargmax(row))] if np.isfinite(row).any() else None


def resolution(s: Series, factor: float, window: int) -> dict:
    """What is exact in the summary of ``s`` (the ``history`` key of the JSON document)."""
    n_past = s.n_past
    rec = s.recorded
    rule_kept = factor == SPIKE_FACTOR and window == SPIKE_WINDOW
    return {
        "steps_in_full": int(s.step.shape[0]),
        "steps_summarized": n_past,
        "exact_from_step": int(s.step[0]) if n_past and s.step.shape[0] else s.first_step,
        "percentiles": "approximate" if n_past else "exact",
        "spikes": "exact" if not n_past or rule_kept else "filtered",
        "events_dropped": rec.dropped if rec is not None else 0,
    }


def summarize(
    s: Series,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    *,
    factor: float = SPIKE_FACTOR,
    window: int = SPIKE_WINDOW,
    unit: str = "step",
    history: Evidence | None = None,
) -> dict:
    """The statistics part of the JSON document (see the module docstring).

    ``clip_norm``/``clip_value``: the run's configured thresholds (None when off);
    ``unit``: what one entry of the series is called ("step": a run's recorded
    history, "batch": a probe); ``history``: in a probe, the :class:`Evidence` of the
    checkpoint's recorded history, which the advice weighs too.
    """
    events, spike = events_summary(s, factor, window)
    n_nonfinite = len(events["nonfinite_steps"])
    clipping = clipping_summary(s, clip_norm, clip_value)
    seen = evidence(s, events, spike, "probe" if unit == "batch" else "history")
    norms = seen.norms
    sug = suggest(
        seen,
        history,
        configured=clip_norm,
        configured_fraction=clipping["norm"]["fraction_clipped"],
    )
    gn: dict[str, Any] = {k: finite_or_none(v) for k, v in norms.summary().items()}
    fin = s.finite
    max_step = int(s.step[np.nanargmax(s.grad_norm)]) if fin.any() else None
    if s.past is not None and s.past.finite and (not fin.any() or s.past.norm_max >= norms.max()):
        max_step = s.past.norm_max_step
    gn["max_step"] = max_step
    thr: float | None = clip_norm if clip_norm is not None else sug["clip_norm"]
    source = "clip_norm" if clip_norm is not None else ("suggested" if thr is not None else None)
    gthr = {"value": thr, "source": source}
    S = s.count
    return {
        "steps": {
            "count": S,
            "first": s.first_step,
            "last": int(s.step[-1]) if s.step.shape[0] else (s.past.last if s.past else None),
            "finite": int(fin.sum()) + (s.past.finite if s.past is not None else 0),
            "nonfinite": n_nonfinite,
        },
        "grad_norm": gn,
        "clipping": clipping,
        "groups": group_table(s, thr),
        "group_threshold": gthr,
        "events": events,
        "suggestion": sug,
        "history": resolution(s, factor, window),
    }


# --------------------------------------------------------------------------- probing


def value_edges(extra: Iterable[float | None] = ()) -> np.ndarray:
    """Value thresholds measured exactly by a probe: 1, 2, 5 × 10^k for k in -15..6,
    plus ``extra`` (the run's --clip-value). Sorted, unique, float64."""
    nice = [float(f"{m}e{k}") for k in range(-15, 7) for m in (1, 2, 5)]  # 2e-3, not 0.0020000001
    more = [float(x) for x in extra if x is not None]
    return np.unique(np.array(nice + more, dtype=np.float64))


def entry_histogram(
    g: np.ndarray, entry_group: np.ndarray, n_groups: int, edges: np.ndarray
) -> np.ndarray:
    """(3, G, K+1) count, Σ|g| and Σg² of the entries of each group in each bin of |g|.

    Bin 0 holds |g| ≤ edges[0], bin k holds edges[k-1] < |g| ≤ edges[k], bin K holds
    |g| > edges[-1]; so the entries that value clipping at ``edges[j]`` clamps are
    exactly bins j+1..K, and every quantity below is exact at an edge.
    """
    a = np.abs(g).astype(np.float64)  # (N,)
    b = np.searchsorted(edges, a, side="left")  # (N,) bin of each entry
    K1 = edges.shape[0] + 1
    idx = entry_group * K1 + b  # (N,) flat (group, bin)
    n = n_groups * K1
    out = np.empty((3, n_groups, K1))
    out[0] = np.bincount(idx, minlength=n).reshape(n_groups, K1)
    out[1] = np.bincount(idx, weights=a, minlength=n).reshape(n_groups, K1)
    out[2] = np.bincount(idx, weights=a * a, minlength=n).reshape(n_groups, K1)
    return out


def value_clip_effect(hist: np.ndarray, edges: np.ndarray, j: int) -> tuple[float, float, float]:
    """Value clipping at ``edges[j]`` of the gradient summarized by ``hist`` (3, G, K+1):
    (fraction of entries clamped, cosine(clipped, raw), L2 norm after clamping)."""
    v = float(edges[j])
    count, s_abs, s_sq = hist.sum(axis=1)  # (K+1,) each, over groups
    n = count.sum()
    over = count[j + 1 :].sum()
    sq_under = s_sq[: j + 1].sum()
    raw_sq = s_sq.sum()
    dot = sq_under + v * s_abs[j + 1 :].sum()  # g · clip(g): clamped entries give v|g|
    clipped_sq = sq_under + v * v * over  # ‖clip(g)‖²
    cos = dot / math.sqrt(raw_sq * clipped_sq) if raw_sq > 0 else 1.0
    return (float(over / n) if n else 0.0, min(float(cos), 1.0), math.sqrt(clipped_sq))


@dataclass(frozen=True, eq=False)
class Probe:
    """What a probe measured: a Series plus the per-batch entry histograms."""

    series: Series  # the same per-step statistics as a run's history
    hist: np.ndarray  # (N, 3, G, K+1) entry histograms of the finite batches (zeros otherwise)
    edges: np.ndarray  # (K,) value thresholds the histograms measure exactly
    n_params: int  # entries in the gradient
    chars: np.ndarray  # (N,) characters each batch's loss is the mean over (padding excluded)

    @property
    def loss_mean(self) -> float | None:
        """Nats per character over the batches with a finite loss (each character once)."""
        ok = np.isfinite(self.series.loss)
        if not ok.any():
            return None
        return finite_or_none((self.series.loss[ok] * self.chars[ok]).sum() / self.chars[ok].sum())


def probe(
    model, batches, n_batches: int, clip_norm: float | None, clip_value: float | None
) -> Probe:
    """Gradients of ``model`` on the first ``n_batches`` of ``batches`` as training reads
    them (``batches.for_step``: streams with the state carried from zero, or names-mode
    lines each from the start state with padding masked out), no dropout, nothing
    updated, with what the run's clipping would have done."""
    from charrnn.trainer import norm_groups

    sizes, groups, seg_group = norm_groups(model.cfg)
    entry_group = np.repeat(seg_group, sizes)  # (N,) group of each entry of the flat buffer
    G = len(groups)
    edges = value_edges([clip_value])
    jv = int(np.searchsorted(edges, clip_value)) if clip_value is not None else None
    n = min(n_batches, batches.n_batches)
    state = model.initial_state(batches.batch_size)
    hist = np.zeros((n, 3, G, edges.shape[0] + 1))
    norms = np.full(n, np.nan)
    gnorms = np.full((n, G), np.nan)
    scale = np.ones(n)
    vfrac = np.zeros(n)
    loss = np.full(n, np.nan)
    chars = np.zeros(n, dtype=np.int64)
    for k in range(n):
        b = batches.for_step(k)  # k < n_batches: the first epoch, as training starts it
        chars[k] = b.n_chars
        lk, grads, final, _ = model.loss_and_grads(
            b.x, b.y, state if b.carry else None, mask=b.mask
        )
        g = np.array(grads.flat, dtype=np.float64)  # (N,) copy: the buffer may be reused
        finite_g = bool(np.isfinite(g).all())
        if b.carry:
            state = final
            if not (math.isfinite(lk) and finite_g):
                state = model.initial_state(batches.batch_size)  # as the trainer does after a skip
        if not finite_g:
            continue
        loss[k] = lk
        h = entry_histogram(g, entry_group, G, edges)
        hist[k] = h
        gnorms[k] = np.sqrt(h[2].sum(axis=1))
        norms[k] = math.sqrt(h[2].sum())
        now = norms[k]
        if jv is not None:
            vfrac[k], _, now = value_clip_effect(h, edges, jv)
        if clip_norm is not None and now > clip_norm:
            scale[k] = clip_norm / now
    s = Series(
        step=np.arange(1, n + 1, dtype=np.int64),
        grad_norm=norms,
        scale=scale,
        value_frac=vfrac,
        skipped=~np.isfinite(norms) | ~np.isfinite(loss),
        group_norms=gnorms,
        groups=tuple(groups),
        loss=loss,
    )
    return Probe(s, hist, edges, int(entry_group.shape[0]), chars)


def _merge(rows: list[tuple[float, str]]) -> list[tuple[float, list[str]]]:
    """Thresholds sorted ascending, duplicates merged with all their labels."""
    out: dict[float, list[str]] = {}
    for v, label in rows:
        out.setdefault(float(v), [])
        if label not in out[float(v)]:
            out[float(v)].append(label)
    return sorted(out.items())


def probe_tables(
    p: Probe,
    clip_norm: float | None,
    clip_value: float | None,
    suggested: float | None,
    suggested_label: str = "suggested",
) -> tuple[dict, np.ndarray]:
    """The probe's threshold tables and the (G, K) per-group clamped fractions.

    Norm thresholds: 0.5x, 1x and 2x the median batch norm, the run's --clip-norm,
    the assignment's 5 and the suggestion. Value thresholds: the run's --clip-value,
    the assignment's 5, and the smallest measured values that clamp at most 10%, 1%
    and 0.1% of entries (pooled over batches).
    """
    s = p.series
    fin = s.finite
    norms = s.grad_norm[fin]
    norm_rows: list[tuple[float, str]] = []
    if norms.size:
        med = float(np.median(norms))
        norm_rows += [(0.5 * med, "0.5x median"), (med, "median"), (2 * med, "2x median")]
    if clip_norm is not None:
        norm_rows.append((clip_norm, "run --clip-norm"))
    norm_rows.append((ASSIGNMENT_CLIP, "assignment"))
    if suggested is not None:
        norm_rows.append((suggested, suggested_label))
    norm_table = []
    for c, labels in _merge(norm_rows):
        sc = np.minimum(1.0, c / np.where(norms > 0, norms, np.inf)) if norms.size else norms
        norm_table.append(
            {
                "threshold": c,
                "labels": labels,
                "fraction_clipped": float(np.mean(norms > c)) if norms.size else None,
                "mean_scale": finite_or_none(sc.mean()) if norms.size else None,
                "cosine": 1.0,
            }
        )

    hist = p.hist[fin]  # (F, 3, G, K+1)
    pooled = hist.sum(axis=0)  # (3, G, K+1)
    counts = pooled[0].sum(axis=0)  # (K+1,)
    total = counts.sum()
    over = total - np.cumsum(counts)[:-1]  # (K,) entries above each edge
    value_rows: list[tuple[float, str]] = []
    if clip_value is not None:
        value_rows.append((clip_value, "run --clip-value"))
    value_rows.append((ASSIGNMENT_CLIP, "assignment"))
    if total:
        for q, label in ((0.1, "clamps <=10%"), (0.01, "clamps <=1%"), (0.001, "clamps <=0.1%")):
            ok = over <= q * total
            j = int(np.argmax(ok))  # smallest edge clamping at most q
            if ok[j] and over[j] > 0:  # an edge that clamps nothing teaches nothing
                value_rows.append((float(p.edges[j]), label))
    value_table = []
    per_group = np.zeros((len(s.groups), 0))
    cols = []
    for v, labels in _merge(value_rows):
        j = int(np.searchsorted(p.edges, v))
        effects = [value_clip_effect(h, p.edges, j) for h in hist]
        fr = np.array([e[0] for e in effects])
        cos = np.array([e[1] for e in effects])
        value_table.append(
            {
                "threshold": v,
                "labels": labels,
                "fraction_entries": float(over[j] / total) if total else None,
                "fraction_batches": float(np.mean(fr > 0)) if fr.size else None,
                "cosine_mean": finite_or_none(cos.mean()) if cos.size else None,
                "cosine_min": finite_or_none(cos.min()) if cos.size else None,
            }
        )
        g_count = pooled[0]  # (G, K+1)
        g_total = g_count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols.append(np.where(g_total > 0, g_count[:, j + 1 :].sum(axis=1) / g_total, 0.0))
    if cols:
        per_group = np.stack(cols, axis=1)  # (G, K)
    return {"norm_thresholds": norm_table, "value_thresholds": value_table}, per_group


def summarize_probe(
    p: Probe,
    clip_norm: float | None,
    clip_value: float | None,
    *,
    factor: float = SPIKE_FACTOR,
    window: int = SPIKE_WINDOW,
    history: Series | None = None,
) -> dict:
    """:func:`summarize` of a probe, with the threshold tables (``probe`` key, partly
    filled: the caller adds corpus, sizes and loss) and exact per-group fractions.
    ``history``: the checkpoint's recorded history (None or empty: none), so that the
    advice is the one the history view gives, plus what the probe found."""
    recorded = (
        measure(history, "history", factor, window)
        if history is not None and history.count
        else None
    )
    doc = summarize(
        p.series,
        clip_norm,
        clip_value,
        factor=factor,
        window=window,
        unit="batch",
        history=recorded,
    )
    sug = doc["suggestion"]
    label = "safety net" if sug["needed"] is False else "suggested"
    tables, per_group = probe_tables(p, clip_norm, clip_value, sug["clip_norm"], label)
    for row, fr in zip(doc["groups"], per_group, strict=True):
        row["fraction_entries"] = [float(x) for x in fr]
    doc["probe"] = {
        "batches": int(p.series.step.shape[0]),
        "loss_mean": p.loss_mean,
        "parameters": p.n_params,
        **tables,
    }
    return doc
