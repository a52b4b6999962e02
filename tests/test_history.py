"""The bounded training history: its footprint stays flat in the step count, what it
keeps exactly is exact (checked against the full per-step arrays), its percentiles
are within the sketch's resolution, it round-trips through checkpoints (resuming
equals never stopping), old checkpoints that kept every step convert on load, and
`charrnn clip-stats` reads a long history with every spike in it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import clipstats as cs
from charrnn import history as hm
from charrnn.history import History
from charrnn.store import Store
from charrnn.trainer import TrainState

ROOT = Path(__file__).resolve().parent.parent
DINOS = str(ROOT / "data" / "dinos.txt")
BIN = 10 ** (1 / hm.PER_DECADE)  # ratio of a norm bin's edges


@pytest.fixture
def small(monkeypatch):
    """Small window and bucket counts, so that long-run behaviour shows in a few
    thousand steps (the constants are read at run time)."""
    monkeypatch.setattr(hm, "WINDOW", 64)
    monkeypatch.setattr(hm, "CHUNK", 16)
    monkeypatch.setattr(hm, "MAX_BUCKETS", 8)


def synthetic(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A run's per-step columns: lognormal norms, spikes, non-finite and skipped steps."""
    rng = np.random.default_rng(seed)
    g = rng.lognormal(0.0, 0.3, n)  # (S,)
    g[rng.choice(np.arange(100, n), size=max(1, n // 700), replace=False)] *= 40  # spikes
    g[rng.choice(n, size=max(1, n // 1500), replace=False)] = np.nan
    fin = np.isfinite(g)
    skipped = ~fin
    skipped[rng.choice(n, size=2, replace=False)] = True
    scale = np.where(fin, np.minimum(1.0, 1.5 / np.where(fin, g, 1.0)), 1.0)
    value_frac = np.where(rng.random(n) < 0.1, rng.random(n) * 0.01, 0.0)
    mix = rng.random(n)[:, None]  # (S, 1) how the squared norm splits between 2 groups
    groups = np.where(fin[:, None], g[:, None] * np.sqrt(np.hstack([mix, 1 - mix])), 0.0)
    return {
        "step": np.arange(1, n + 1, dtype=np.int64),
        "loss": np.where(skipped, np.nan, 2.0),
        "grad_norm": g,
        "scale": scale,
        "value_frac": value_frac,
        "lr": np.full(n, 1e-3),
        "skipped": skipped,
        "group_norms": groups,
    }


def recorded(cols: dict[str, np.ndarray]) -> History:
    h = History()
    for i in range(cols["step"].shape[0]):
        h.record(
            int(cols["step"][i]),
            float(cols["loss"][i]),
            float(cols["grad_norm"][i]),
            float(cols["scale"][i]),
            float(cols["value_frac"][i]),
            float(cols["lr"][i]),
            bool(cols["skipped"][i]),
            cols["group_norms"][i],
        )
    return h


def full_series(cols: dict[str, np.ndarray]) -> cs.Series:
    fin = np.isfinite(cols["grad_norm"])
    return cs.Series(
        step=cols["step"],
        grad_norm=cols["grad_norm"],
        scale=cols["scale"],
        value_frac=cols["value_frac"],
        skipped=cols["skipped"],
        group_norms=np.where(fin[:, None], cols["group_norms"], np.nan),
        groups=("a", "b"),
        loss=cols["loss"],
    )


def nbytes(a: dict[str, np.ndarray]) -> int:
    return sum(v.nbytes for v in a.values())


# --------------------------------------------------------------------------- footprint


def test_the_footprint_is_flat_in_the_step_count(small):
    cols = synthetic(12_000)
    h = History()
    G = 2
    # a bound from the constants alone: window, buckets, dense sketch (as index + count
    # pairs), the past's scalars, validation results; then 40 bytes a spike, 8 a bad step
    per_step = 6 * 8 + 3 + 8 * G
    bound = (
        (hm.WINDOW + hm.CHUNK) * per_step
        + hm.MAX_BUCKETS * 8 * 8
        + 16 * (hm.NORM_BINS * (1 + G) + hm.SHARE_BINS * G)
        + 1024
        + hm.VAL_KEEP * 16
    )
    for i in range(12_000):
        h.record(*(cols[k][i] for k in hm._WINDOW_FIELDS[:7]), cols["group_norms"][i])
        if i + 1 in (1_200, 12_000):
            events = 40 * len(h.spike_step) + 8 * len(h.bad_steps)
            assert nbytes(h.to_arrays(G)) - events <= bound
    assert len(h) == 12_000 and h.step.shape[0] <= hm.WINDOW + hm.CHUNK
    assert hm.MAX_BUCKETS // 2 <= h.past.b_first.shape[0] <= hm.MAX_BUCKETS
    assert h.past.width == 2 ** int(np.ceil(np.log2(h.past.n / hm.MAX_BUCKETS)))


def test_events_are_kept_only_up_to_their_cap(small, monkeypatch):
    monkeypatch.setattr(hm, "EVENTS_KEEP", 3)
    cols = synthetic(6_000)
    h = recorded(cols)
    assert len(h.spike_step) == 3 and len(h.bad_steps) == 3 and h.events_dropped > 0


def test_validation_results_are_bounded(monkeypatch):
    monkeypatch.setattr(hm, "VAL_KEEP", 5)
    h = History()
    for k in range(1, 13):
        h.record_val(10 * k, 1.0 / k)
    assert h.val_step == [80, 90, 100, 110, 120] and h.val_loss[-1] == 1 / 12


# --------------------------------------------------------------------------- what is exact


def test_buckets_equal_a_naive_loop_over_the_past(small):
    cols = synthetic(5_000, seed=3)
    h = recorded(cols)
    p = h.past
    g, fin = cols["grad_norm"], np.isfinite(cols["grad_norm"])
    assert p.n + h.step.shape[0] == 5_000 and h.step[0] == p.n + 1
    for k in range(p.b_first.shape[0]):
        lo, hi = k * p.width, min((k + 1) * p.width, p.n)  # positions = step - 1
        f = fin[lo:hi]
        assert (p.b_first[k], p.b_last[k]) == (lo + 1, hi)
        assert p.b_finite[k] == f.sum()
        assert p.b_bad[k] == (~f | cols["skipped"][lo:hi]).sum()
        assert p.b_clipped[k] == (f & (cols["scale"][lo:hi] < 1)).sum()
        assert p.b_sum[k] == pytest.approx(g[lo:hi][f].sum(), rel=1e-12)
        if f.any():
            assert p.b_max[k] == np.nanmax(g[lo:hi])
            assert p.b_max_step[k] == lo + 1 + np.nanargmax(g[lo:hi])


def test_summary_of_a_long_history_agrees_with_the_full_arrays(small):
    cols = synthetic(6_000, seed=1)
    h = recorded(cols)
    assert h.past.n > 5_000  # most steps are summarized
    s, full = cs.Series.from_history(h, ["a", "b"]), full_series(cols)
    a, b = cs.summarize(s, 1.5, 5.0), cs.summarize(full, 1.5, 5.0)
    # exact over the whole run: counts, clipping, min/max/mean, every event
    assert a["steps"] == b["steps"]
    assert a["events"] == b["events"] and a["events"]["spike_count"] >= 8
    assert a["events"]["nonfinite_steps"] == b["events"]["nonfinite_steps"] != []
    for mode in ("norm", "value"):
        assert a["clipping"][mode] == pytest.approx(b["clipping"][mode], rel=1e-12)
    for k in ("min", "max", "max_step"):
        assert a["grad_norm"][k] == b["grad_norm"][k]
    assert a["grad_norm"]["mean"] == pytest.approx(b["grad_norm"]["mean"], rel=1e-12)
    # approximate: percentiles within the sketch's bins, as the document says
    for k in ("p50", "p90", "p95", "p99"):
        assert a["grad_norm"][k] == pytest.approx(b["grad_norm"][k], rel=BIN - 1)
    for ra, rb in zip(a["groups"], b["groups"], strict=True):
        assert (ra["max"], ra["max_step"]) == (rb["max"], rb["max_step"])
        for k in ("p50", "p90", "p99"):
            assert ra[k] == pytest.approx(rb[k], rel=BIN - 1)
        assert ra["share_p50"] == pytest.approx(rb["share_p50"], abs=2 / hm.SHARE_BINS)
        assert ra["fraction_over_threshold"] == pytest.approx(
            rb["fraction_over_threshold"], abs=0.01
        )
    assert a["suggestion"]["clip_norm"] == b["suggestion"]["clip_norm"]
    assert a["history"]["percentiles"] == "approximate" and b["history"]["percentiles"] == "exact"
    assert a["history"]["steps_summarized"] == h.past.n


def test_another_spike_rule_filters_the_past_and_recomputes_the_window(small):
    cols = synthetic(3_000, seed=2)
    s, full = cs.Series.from_history(recorded(cols), ["a", "b"]), full_series(cols)
    a, _ = cs.events_summary(s, factor=30, window=50)
    b, _ = cs.events_summary(full, factor=30, window=50)
    assert [e["step"] for e in a["spikes"]] == [e["step"] for e in b["spikes"]]
    assert cs.resolution(s, 30, 50)["spikes"] == "filtered"


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(1e-9, 1e9, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    st.sampled_from([0, 10, 50, 90, 99, 100]),
)
def test_sketch_percentiles_lie_within_one_bin_of_the_order_statistic(values, q):
    v = np.array(values)
    counts = np.bincount(hm.norm_bin(v), minlength=hm.NORM_BINS)
    d = cs.Dist(np.zeros(0), counts, v.size, float(v.sum()), float(v.min()), float(v.max()))
    got = d.percentile([q])[0]
    want = np.sort(v)[int(np.floor(q / 100 * (v.size - 1)))]
    assert want / BIN <= got <= want * BIN


def test_a_dist_without_sketch_is_numpy_exactly():
    v = np.random.default_rng(0).lognormal(size=101)
    d = cs.Dist(v)
    assert d.percentile([50, 90, 99]) == [float(x) for x in np.percentile(v, [50, 90, 99])]
    assert d.fraction_over(1.0) == float(np.mean(v > 1.0)) and not d.approximate


# --------------------------------------------------------------------------- round trips


def test_resuming_from_a_checkpoint_equals_never_stopping(small):
    cols = synthetic(3_000, seed=4)
    whole = recorded(cols)
    first = {k: v[:1_777] for k, v in cols.items()}
    h = History.from_arrays(recorded(first).to_arrays(2))  # a checkpoint at step 1777
    for i in range(1_777, 3_000):
        h.record(*(cols[k][i] for k in hm._WINDOW_FIELDS[:7]), cols["group_norms"][i])
    a, b = h.to_arrays(2), whole.to_arrays(2)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_old_checkpoints_with_every_step_convert_on_load(small):
    cols = synthetic(2_500, seed=5)
    fin = np.isfinite(cols["grad_norm"])
    old = {f"hist.{k}": cols[k] for k in hm._WINDOW_FIELDS}  # format 1: every step
    old["hist.loss"] = np.where(np.isfinite(cols["loss"]), cols["loss"], 0.0)
    old["hist.loss.nonfinite"] = ~np.isfinite(cols["loss"])
    old["hist.grad_norm"] = np.where(fin, cols["grad_norm"], 0.0)
    old["hist.grad_norm.nonfinite"] = ~fin
    old["hist.group_norms"] = cols["group_norms"]
    old["val.step"] = np.array([1000, 2000])
    old["val.loss"] = np.array([1.5, 1.2])
    h = History.from_arrays(old)
    a, b = h.to_arrays(2), recorded(cols).to_arrays(2)
    for k in b:
        if not k.startswith("val."):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert h.val_step == [1000, 2000] and len(h) == 2_500


@pytest.mark.parametrize(
    ("key", "change", "match"),
    [
        ("hist.sketch.layout", lambda v: v + 1, "layout"),
        ("hist.sketch.index", lambda v: v + 10**9, "out of range"),
        ("hist.sketch.count", lambda v: -v, "out of range"),
        ("hist.bucket.max", lambda v: v[:-1], "buckets"),
        ("hist.past.ints", lambda v: v[:-1], "wrong length"),
    ],
)
def test_a_damaged_summary_is_one_clear_error(small, key, change, match):
    a = recorded(synthetic(500)).to_arrays(2)
    a[key] = change(a[key])
    with pytest.raises(ValueError, match=match):
        History.from_arrays(a)


# --------------------------------------------------------------------------- the command


class _Main:
    name = "charrnn"

    def main(self, args, prog_name=None, standalone_mode=True, **extra):
        from charrnn.cli import main

        main(list(args))


def invoke(args: list[str]):
    return CliRunner().invoke(_Main(), args, catch_exceptions=False)  # type: ignore[arg-type]


def test_clip_stats_reads_a_long_history_with_every_spike(tmp_path, small):
    r = invoke(["train", DINOS, "--store", str(tmp_path), "--steps", "20", "--hidden", "8",
                "--eval-every", "20", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    st = Store(tmp_path)
    ck = st.latest("dinos")
    ts = TrainState.from_checkpoint(ck.arrays, ck.meta)
    G = ts.history.n_groups
    cols = synthetic(4_000, seed=6)
    cols["group_norms"] = np.repeat(cols["group_norms"][:, :1], G, axis=1) / math.sqrt(G)
    ts.history = recorded(cols)
    ts.step = 4_000
    arrays, meta = ts.to_checkpoint()
    arrays.update({k: v for k, v in ck.arrays.items() if k.startswith("corpus.")})
    meta.update({k: ck.meta[k] for k in ("corpus", "vocab", "run")})
    st.save("dinos", 4_000, arrays, meta, keep=3)
    r = invoke(["clip-stats", "--store", str(tmp_path), "dinos", "--json"])
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    want, _ = cs.events_summary(full_series({**cols, "group_norms": cols["group_norms"][:, :2]}))
    assert [e["step"] for e in doc["events"]["spikes"]] == [e["step"] for e in want["spikes"]]
    assert doc["events"]["nonfinite_steps"] == want["nonfinite_steps"]
    assert doc["steps"]["count"] == 4_000 and doc["history"]["steps_summarized"] > 3_900
    r = invoke(["clip-stats", "--store", str(tmp_path), "dinos"])
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "summarized: percentiles are approximate" in text
    assert "EXPLODING GRADIENTS" in text and "recorded history: steps 1..4000" in text


def test_a_spike_over_a_zero_median_has_no_ratio_and_the_json_stays_finite():
    norm = np.zeros(60)
    norm[55] = 3.0  # every earlier gradient was exactly zero
    s = full_series(
        {
            "step": np.arange(1, 61),
            "grad_norm": norm,
            "scale": np.ones(60),
            "value_frac": np.zeros(60),
            "skipped": np.zeros(60, bool),
            "group_norms": np.stack([norm, norm * 0], axis=1),
            "loss": np.ones(60),
        }
    )
    doc = cs.summarize(s)
    assert doc["events"]["spikes"][0]["step"] == 56
    assert doc["events"]["spikes"][0]["ratio"] is None
    json.dumps(doc, allow_nan=False)


def test_spikes_recorded_step_by_step_equal_the_rule_over_the_whole_series():
    # norms that drift down and up by 100x (so "within 10x of the window's smallest"
    # and "within 10x of its median" disagree often), spikes, nan, and a zero norm
    rng = np.random.default_rng(3)
    n = 3000
    g = np.exp(np.cumsum(rng.normal(0, 0.3, n)) * 0.1) * rng.lognormal(0.0, 1.0, n)
    g[rng.choice(n, 30, replace=False)] *= 30.0
    g[rng.choice(n, 10, replace=False)] = np.nan
    g[5] = 0.0
    cols = {**synthetic(n), "grad_norm": g}
    h = recorded(cols)
    idx, _ = cs.find_spikes(cols["step"], g)
    assert len(idx) > 20
    assert h.spike_step == cols["step"][idx].tolist()
