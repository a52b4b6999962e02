"""`charrnn clip-stats`: statistics checked on gradients whose answers are known, then
the command on real runs (a normal one, an exploding one, a probe), its JSON schema,
and its stdout/stderr/colour contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from charrnn import clipstats as cs
from charrnn.batches import line_split, make_batches
from charrnn.model import CharRNN, ModelConfig, init_params
from charrnn.optim import clip_gradients, segment_offsets
from charrnn.scoring import score_lines
from charrnn.store import Store
from charrnn.tokenizer import Vocab
from charrnn.trainer import History, norm_groups

ROOT = Path(__file__).resolve().parent.parent
DINOS = str(ROOT / "data" / "dinos.txt")


def series(norm, scale=None, value_frac=None, skipped=None, group_norms=None, groups=("a",)):
    norm = np.asarray(norm, dtype=np.float64)
    S = norm.shape[0]
    gn = (
        np.asarray(group_norms, dtype=np.float64)
        if group_norms is not None
        else norm[:, None] * np.ones((1, len(groups)))
    )
    return cs.Series(
        step=np.arange(1, S + 1, dtype=np.int64),
        grad_norm=norm,
        scale=np.ones(S) if scale is None else np.asarray(scale, dtype=np.float64),
        value_frac=(
            np.zeros(S) if value_frac is None else np.asarray(value_frac, dtype=np.float64)
        ),
        skipped=(~np.isfinite(norm) if skipped is None else np.asarray(skipped, dtype=bool)),
        group_norms=gn,
        groups=tuple(groups),
        loss=np.ones(S),
    )


# --------------------------------------------------------------------------- pure numbers


def test_percentiles_of_a_known_ramp_ignore_nonfinite():
    x = np.concatenate([np.arange(1.0, 102.0), [np.nan, np.inf]])  # 1..101, then junk
    p = cs.percentiles(x)
    assert p == {
        "min": 1.0,
        "p50": 51.0,
        "p90": 91.0,
        "p95": 96.0,
        "p99": 100.0,
        "max": 101.0,
        "mean": 51.0,
    }
    assert cs.percentiles(np.array([np.nan]))["p50"] is None


def test_clipping_summary_counts_exactly_over_finite_steps():
    s = series(
        [1.0, 8.0, 2.0, 20.0, np.nan], scale=[1, 0.5, 1, 0.25, 1], value_frac=[0, 0.1, 0, 0.3, 0]
    )
    c = cs.clipping_summary(s, clip_norm=4.0, clip_value=5.0)
    assert c["norm"] == {
        "threshold": 4.0,
        "clipped_steps": 2,
        "fraction_clipped": 0.5,
        "mean_scale": 0.6875,
        "mean_scale_when_clipped": 0.375,
        "min_scale": 0.25,
    }
    assert c["value"] == {
        "threshold": 5.0,
        "fraction_entries": pytest.approx(0.1),
        "steps_with_clamping": 2,
        "fraction_steps": 0.5,
        "max_fraction_entries": 0.3,
    }
    never = cs.clipping_summary(series([1.0, 2.0]), None, None)
    assert never["norm"]["fraction_clipped"] == 0.0
    assert never["norm"]["mean_scale_when_clipped"] is None


def test_running_median_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    x = rng.lognormal(size=300)
    x[[5, 17, 18, 200]] = np.nan
    got = cs.running_median(x, window=7)
    for i in range(300):
        prev = x[max(0, i - 7) : i]
        prev = prev[np.isfinite(prev)]
        want = np.median(prev) if prev.size else np.nan
        assert (np.isnan(got[i]) and np.isnan(want)) or got[i] == want, i


def test_spikes_on_a_synthetic_series():
    norm = np.ones(100)
    norm[59] = 50.0  # step 60: 50x its running median of 1
    norm[69] = np.nan  # step 70: non-finite, listed apart, never a spike
    norm[79] = 9.9  # step 80: just under 10x
    norm[89] = 10.5  # step 90: just over
    s = series(norm, group_norms=np.stack([norm * 0.6, norm * 0.8], axis=1), groups=("Wax", "Wya"))
    ev, mask = cs.events_summary(s, factor=10, window=50)
    assert [e["step"] for e in ev["spikes"]] == [60, 90]
    assert ev["spikes"][0] == {
        "step": 60,
        "grad_norm": 50.0,
        "running_median": 1.0,
        "ratio": 50.0,
        "top_group": "Wya",
        "scale": 1.0,
    }
    assert ev["nonfinite_steps"] == [70]
    assert ev["exploding"] is True and ev["spike_count"] == 2
    assert mask.sum() == 2 and mask[59] and mask[89]
    calm, _ = cs.events_summary(series(np.linspace(1, 3, 100)))
    assert calm["exploding"] is False and calm["spikes"] == [] and calm["nonfinite_steps"] == []


def test_skipped_step_with_a_finite_norm_still_counts_as_nonfinite():
    s = series([1.0, 1.1, 0.9, 1.0], skipped=[False, False, True, False])
    ev, _ = cs.events_summary(s)
    assert ev["nonfinite_steps"] == [3] and ev["exploding"]


def evidence_of(norm, source="history", spikes_at=(), skipped=None):
    """The Evidence of a series of norms, with spikes marked by hand at ``spikes_at``."""
    s = series(norm, skipped=skipped)
    spike = np.zeros(s.step.shape[0], bool)
    spike[list(spikes_at)] = True
    ev, _ = cs.events_summary(s)
    ev = {**ev, "spike_count": int(spike.sum())}
    return cs.evidence(s, ev, spike, source)


def test_suggestion_logic():
    squares = np.arange(1.0, 101.0) ** 2  # wide (p99 is 3.8x the median) but no spike
    sug = cs.suggest(evidence_of(squares))
    assert sug["verdict"] == "not_needed" and sug["needed"] is False  # spread is not a spike
    assert sug["clip_norm"] == 20000.0 and sug["percentile"] is None  # twice the max
    assert sug["fraction_clipped"] == 0.0 and "not needed" in sug["reason"]
    assert "the recorded history (100 training steps) shows no spike" in sug["reason"]
    assert sug["basis"] == "history"
    assert sug["measured"] == [
        {"source": "history", "count": 100, "spike_count": 0, "nonfinite": 0}
    ]

    spiky = np.linspace(1.0, 1.5, 100)
    spiky[50] = 1e6
    skipped = np.arange(100) == 70  # a skipped step counts as non-finite
    sug = cs.suggest(evidence_of(spiky, spikes_at=[50], skipped=skipped))
    assert sug["verdict"] == "exploding" and sug["needed"] is True and sug["percentile"] == 90
    # the p90 of the steps that did not spike: computed without the 1e6
    assert sug["clip_norm"] == cs.round_sig(np.percentile(np.delete(spiky, 50), 90))
    assert "1 spike and 1 non-finite step" in sug["reason"]
    assert "clipping is needed" in sug["reason"]

    squares[[40, 80]] = [1e9, 1e9]  # two spikes: the threshold from the rest
    sug = cs.suggest(evidence_of(squares, spikes_at=[40, 80]))
    assert sug["clip_norm"] == cs.round_sig(np.percentile(np.delete(squares, [40, 80]), 90))

    assert cs.suggest(evidence_of(np.array([np.nan])))["verdict"] == "no_data"
    assert cs.suggest(evidence_of(np.zeros(5)))["reason"] == "every gradient was zero"
    calm = evidence_of(np.linspace(1.0, 4.0, 100))
    said = cs.suggest(calm, configured=5.0)["reason"]
    assert "--clip-norm 5 never bit on these steps (largest norm 4)" in said
    said = cs.suggest(calm, configured=2.5)["reason"]
    assert "--clip-norm 2.5 clipped 50.0% of these steps" in said


def test_a_probe_weighs_the_recorded_history_by_the_same_rule():
    calm = np.linspace(1.0, 1.2, 20)
    probe = evidence_of(calm, "probe")
    history = evidence_of(np.linspace(0.5, 3.0, 300), "history")
    # both calm: not needed, and the safety net is the history's (what training saw)
    both = cs.suggest(probe, history)
    alone = cs.suggest(history)
    assert both["needed"] is alone["needed"] is False
    assert both["clip_norm"] == alone["clip_norm"] == 6.0 and both["basis"] == "history"
    assert both["reason"].startswith(
        "clipping is not needed: this probe (fresh gradients of the checkpoint on 20 "
        "batches) shows no spike and no non-finite batch, nor does the recorded history "
        "(300 training steps)"
    )
    assert [m["source"] for m in both["measured"]] == ["history", "probe"]
    # the history spiked, these batches did not: still needed, the history's threshold
    spiky = np.linspace(0.5, 3.0, 300)
    spiky[200] = 500.0
    history = evidence_of(spiky, "history", spikes_at=[200])
    both, alone = cs.suggest(probe, history), cs.suggest(history)
    assert both["needed"] is alone["needed"] is True
    assert both["clip_norm"] == alone["clip_norm"] and both["basis"] == "history"
    assert "shows 1 spike; this probe" in both["reason"]
    # only the probe found a spike: needed, from the probe's own healthy batches
    jump = calm.copy()
    jump[10] = 100.0
    sug = cs.suggest(evidence_of(jump, "probe", spikes_at=[10]), evidence_of(calm))
    assert sug["needed"] is True and sug["basis"] == "probe"
    assert sug["clip_norm"] == cs.round_sig(np.percentile(calm[np.arange(20) != 10], 90))
    # a probe without a history decides alone
    assert cs.suggest(probe)["basis"] == "probe" and cs.suggest(probe)["clip_norm"] == 2.4


def test_bucket_max_keeps_every_step_and_flags_nonfinite():
    norm = np.array([1.0, 5.0, 2.0, 3.0, np.nan, 4.0, 0.5, 7.0, 1.0, 2.0])
    b = cs.bucket_max(np.arange(1, 11), norm, 3)  # buckets: steps 1-3, 4-7, 8-10
    assert b["first"].tolist() == [1, 4, 8] and b["last"].tolist() == [3, 7, 10]
    assert b["max"].tolist() == [5.0, 4.0, 7.0]
    assert b["nonfinite"].tolist() == [False, True, False]
    assert cs.bucket_max(np.arange(1, 4), norm[:3], 100)["max"].tolist() == [1.0, 5.0, 2.0]


def test_value_clipping_cosine_and_fractions_on_a_hand_made_vector():
    g = np.array([3.0, -4.0, 0.5, 10.0])  # clamped at 5: [3, -4, 0.5, 5]
    groups = np.array([0, 0, 1, 1])
    edges = cs.value_edges()
    h = cs.entry_histogram(g, groups, 2, edges)
    j = int(np.searchsorted(edges, 5.0))
    assert edges[j] == 5.0
    frac, cos, norm_after = cs.value_clip_effect(h, edges, j)
    assert frac == 0.25
    assert cos == pytest.approx(75.25 / math.sqrt(125.25 * 50.25), rel=1e-14)
    assert norm_after == pytest.approx(math.sqrt(50.25), rel=1e-14)
    # per group, exactly: group 0 keeps both entries, group 1 loses one of two
    over = h[0][:, j + 1 :].sum(axis=1) / h[0].sum(axis=1)
    assert over.tolist() == [0.0, 0.5]
    # nothing clamped: the direction is untouched
    top = int(np.searchsorted(edges, 20.0))
    assert cs.value_clip_effect(h, edges, top)[:2] == (0.0, 1.0)


def test_value_clipping_effect_matches_np_clip_at_every_edge():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(5000) * np.exp(rng.uniform(-8, 2, 5000))  # heavy tails
    edges = cs.value_edges()
    h = cs.entry_histogram(g, np.zeros(g.size, np.intp), 1, edges)
    for j in range(10, len(edges), 3):
        c = np.clip(g, -edges[j], edges[j])
        frac, cos, norm_after = cs.value_clip_effect(h, edges, j)
        assert frac == np.count_nonzero(np.abs(g) > edges[j]) / g.size
        want = g @ c / (np.linalg.norm(g) * np.linalg.norm(c))
        assert cos == pytest.approx(want, rel=1e-12)
        assert norm_after == pytest.approx(np.linalg.norm(c), rel=1e-12)


def test_probe_measures_what_the_trainer_would_have_clipped():
    cfg = ModelConfig(vocab_size=7, hidden=5, cell="gru", dtype="float64")
    rng = np.random.default_rng(3)
    params = init_params(cfg, rng)
    params.flat[...] = rng.uniform(-2, 2, params.flat.shape)  # big weights, big gradients
    model = CharRNN(cfg, params)
    ids = rng.integers(0, 7, 400).astype(np.uint8)
    batches = make_batches(ids, 0, 400, 4, 8)
    clip_norm, clip_value = 0.05, 0.01
    p = cs.probe(model, batches, 3, clip_norm, clip_value)
    sizes, groups, seg_group = norm_groups(cfg)
    offsets = segment_offsets(sizes)
    state = model.initial_state(4)
    for k in range(3):
        x, y = batches.batch(k)
        _, grads, state, _ = model.loss_and_grads(x, y, state)
        g = grads.flat.copy()
        segs = np.split(g, np.cumsum(sizes)[:-1])
        group_sq = np.bincount(seg_group, weights=[float(s @ s) for s in segs])
        assert p.series.grad_norm[k] == pytest.approx(np.linalg.norm(g), rel=1e-12)
        np.testing.assert_allclose(p.series.group_norms[k], np.sqrt(group_sq), rtol=1e-12)
        clip = clip_gradients(g, offsets, clip_value, clip_norm)  # what training does
        assert p.series.value_frac[k] == clip.value_fraction
        assert p.series.scale[k] == pytest.approx(clip.scale, rel=1e-12)
    assert p.series.scale.min() < 1 and p.series.value_frac.max() > 0  # both modes bit

    doc = cs.summarize_probe(p, clip_norm, clip_value)
    rows = {r["threshold"]: r for r in doc["probe"]["value_thresholds"]}
    assert "run --clip-value" in rows[clip_value]["labels"]
    assert rows[clip_value]["cosine_min"] < 1.0
    assert all(r["cosine"] == 1.0 for r in doc["probe"]["norm_thresholds"])
    assert [len(r["fraction_entries"]) for r in doc["groups"]] == [len(rows)] * len(groups)


def test_a_probe_of_line_batches_starts_every_line_over_and_masks_the_padding():
    vocab = Vocab(tuple("\nabc"))
    cfg = ModelConfig(vocab_size=vocab.size, hidden=5, cell="lstm", dtype="float64")
    rng = np.random.default_rng(4)
    model = CharRNN(cfg, init_params(cfg, rng))
    lines = ["".join(rng.choice(list("abc"), rng.integers(1, 40))) for _ in range(30)]
    ids = vocab.encode("\n".join(lines) + "\n")
    batches = line_split(ids, vocab.eos_id, 6, 0.0, 0, seed=1).train
    p = cs.probe(model, batches, 4, None, None)
    total, chars = 0.0, 0
    for k in range(4):
        x, y, mask = batches.batch(k)
        assert not mask.all()  # lines of different lengths: padding to mask out
        _, grads, _, _ = model.loss_and_grads(x, y, None, mask=mask)  # from the start state
        assert p.series.grad_norm[k] == pytest.approx(np.linalg.norm(grads.flat), rel=1e-12)
        _, unmasked, _, _ = model.loss_and_grads(x, y, None)
        assert p.series.grad_norm[k] != pytest.approx(np.linalg.norm(unmasked.flat), rel=1e-3)
        # the loss is the batch's lines scored one by one, end of line included
        rows = score_lines(model, vocab, [lines[i] for i in batches.lines_of(k)])
        total -= sum(r[0] for r in rows)
        chars += sum(r[1] for r in rows)
        assert p.chars[k] == sum(r[1] for r in rows)
    assert p.loss_mean == pytest.approx(total / chars, rel=1e-12)


def test_series_round_trips_through_the_recorded_history():
    h = History()
    for i, (gn, skipped) in enumerate([(1.0, False), (math.nan, True), (3.0, False)]):
        h.record(
            i + 1,
            math.nan if skipped else 2.0,
            gn,
            1.0,
            0.0,
            0.1,
            skipped,
            np.array([gn * 0.6, gn * 0.8]) if not skipped else np.zeros(2),
        )
    s = cs.Series.from_arrays(h.to_arrays(2), ["Wax", "Wya"])
    assert s.step.tolist() == [1, 2, 3]
    assert np.isnan(s.grad_norm[1]) and np.isnan(s.group_norms[1]).all()
    assert s.group_norms[2].tolist() == pytest.approx([1.8, 2.4])
    assert cs.Series.from_arrays({}, ["Wax"]).step.shape == (0,)


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def store(tmp_path_factory, invoke) -> Path:
    root = tmp_path_factory.mktemp("store")
    r = invoke(
        [
            "train",
            DINOS,
            "--store",
            str(root),
            "--steps",
            "60",
            "--eval-every",
            "30",
            "--hidden",
            "16",
            "-q",
        ]
    )
    assert r.exit_code == 0, r.stderr
    # a vanilla RNN with adam at lr 10 and no clipping: the gradient norm spikes, then the
    # loss goes non-finite and training stops as diverged (exit 3), its state kept as BOOM
    # (at lr 1 whether it diverges within 60 steps depended on the BLAS thread count)
    boom = ["train", DINOS, "--store", str(root), "--run", "boom", "--mode", "prose",
            "--cell", "rnn", "--hidden", "16", "--lr", "10", "--clip-norm", "none",
            "--steps", "60", "--eval-every", "30", "-q"]  # fmt: skip
    r = invoke(boom)
    assert r.exit_code == 3 and "training diverged" in r.stderr, r.stderr
    return root


BOOM = "boom:diverged"  # the record of the run that diverged (not a checkpoint)


@pytest.fixture(scope="module")
def clip_json(invoke):
    """``clip_json(store, *args)``: the JSON document of ``charrnn clip-stats``."""

    def run(store: Path, *args: str) -> dict:
        r = invoke(["clip-stats", "--store", str(store), "--json", *args])
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    return run


def test_history_json_agrees_with_the_recorded_history(clip_json, store):
    doc = clip_json(store, "dinos")
    ck = Store(store).latest("dinos")
    gn = ck.arrays["hist.grad_norm"]
    scale = ck.arrays["hist.scale"]
    assert doc["mode"] == "history" and doc["run"] == "dinos" and doc["step"] == 60
    assert doc["steps"] == {"count": 60, "first": 1, "last": 60, "finite": 60, "nonfinite": 0}
    assert doc["grad_norm"]["p50"] == np.median(gn)
    assert doc["grad_norm"]["p99"] == np.percentile(gn, 99)
    assert doc["grad_norm"]["max"] == gn.max()
    assert doc["grad_norm"]["max_step"] == int(np.argmax(gn)) + 1
    assert doc["config"]["clip_norm"] == 5.0 and doc["config"]["clip_value"] is None
    assert doc["clipping"]["norm"]["fraction_clipped"] == np.mean(scale < 1)
    assert [g["name"] for g in doc["groups"]] == ck.meta["norm_groups"]
    wc = ck.meta["norm_groups"].index("l0.Wc")
    assert doc["groups"][wc]["p50"] == np.median(ck.arrays["hist.group_norms"][:, wc])
    assert doc["events"]["exploding"] is False  # a normal run is not flagged
    assert doc["suggestion"]["clip_norm"] > 0 and doc["suggestion"]["reason"]
    assert doc["probe"] is None


def test_exploding_run_is_flagged_loudly(invoke, clip_json, store):
    doc = clip_json(store, BOOM)
    ev = doc["events"]
    assert ev["exploding"] is True and ev["spike_count"] >= 1
    gn = Store(store).resolve(BOOM, allow_diverged=True).arrays["hist.grad_norm"]
    for s in ev["spikes"]:
        assert s["grad_norm"] == gn[s["step"] - 1] and s["ratio"] > 10
    assert doc["suggestion"]["verdict"] == "exploding"
    r = invoke(["clip-stats", "--store", str(store), BOOM])
    assert r.exit_code == 0 and "EXPLODING GRADIENTS" in r.stdout
    assert "no norm clipping was on" in r.stdout


def test_one_advice_from_both_views_of_a_healthy_run(invoke, clip_json, store):
    # the history view reads the 60 recorded steps, the probe fresh gradients at the best
    # checkpoint: one rule, so one verdict (the old code said "clip at p90" vs "not needed")
    history = clip_json(store, "dinos")["suggestion"]
    probe = clip_json(store, "dinos", "--probe", DINOS, "-q")["suggestion"]
    assert history["verdict"] == probe["verdict"] == "not_needed"
    assert history["needed"] is probe["needed"] is False
    assert history["basis"] == probe["basis"] == "history"
    # each says what it measured
    assert history["reason"].startswith(
        "clipping is not needed: the recorded history (60 training steps) shows no spike"
    )
    assert (
        "this probe (fresh gradients of the checkpoint on 20 batches) shows no spike"
        in (probe["reason"])
    )
    assert "nor does the recorded history (" in probe["reason"]
    assert [m["source"] for m in probe["measured"]] == ["history", "probe"]
    for args in ([], ["--probe", DINOS, "-q"]):
        r = invoke(["clip-stats", "--store", str(store), "dinos", *args])
        assert r.exit_code == 0, r.stderr
        text = " ".join(r.stdout.split())
        assert "Clipping advice not needed; safety net --clip-norm" in text
        assert "suggested" not in text  # no threshold is offered as advice


def test_both_views_agree_that_a_run_that_spiked_needs_clipping(invoke, clip_json, store):
    history = clip_json(store, BOOM)
    probe = clip_json(store, BOOM, "--probe", DINOS, "-q")
    assert history["events"]["spike_count"] >= 1  # what the history measured
    # the old code: "exploding" from the history, "clip" at the probe batches' own p90
    assert [d["suggestion"]["verdict"] for d in (history, probe)] == ["exploding"] * 2
    for doc in (history, probe):
        s = doc["suggestion"]
        assert s["needed"] is True and s["percentile"] == 90
        assert s["basis"] == "history" and s["reason"].startswith("clipping is needed: ")
    # the same numbers when both views read the same checkpoint's history
    latest = probe["suggestion"]  # the probe read the same record's history
    assert latest["clip_norm"] == history["suggestion"]["clip_norm"]
    r = invoke(["clip-stats", "--store", str(store), BOOM, "--probe", DINOS, "-q"])
    assert r.exit_code == 0 and "needed: --clip-norm" in r.stdout


def test_probe_json(clip_json, store):
    doc = clip_json(store, "dinos", "--probe", DINOS, "--batches", "4", "-q")
    p = doc["probe"]
    assert doc["mode"] == "probe" and p["corpus"] == [DINOS] and p["batches"] == 4
    assert doc["config"]["mode"] == "names" and p["batching"] == "lines"
    assert (p["batch_size"], p["seq_len"]) == (32, None) and doc["steps"]["count"] == 4
    assert p["loss_mean"] > 0 and p["parameters"] > 0
    assert all(r["cosine"] == 1.0 for r in p["norm_thresholds"])
    labels = [lab for r in p["norm_thresholds"] for lab in r["labels"]]
    assert {"median", "run --clip-norm", "assignment", "safety net"} <= set(labels)
    vals = p["value_thresholds"]
    assert any("assignment" in r["labels"] for r in vals)
    for r in vals:
        assert 0 <= r["cosine_min"] <= r["cosine_mean"] <= 1
        if r["fraction_entries"] == 0:
            assert r["cosine_min"] == 1.0
    assert min(r["cosine_min"] for r in vals) < 1  # some threshold turns the gradient
    fr = [r["fraction_entries"] for r in vals]
    assert fr == sorted(fr, reverse=True)  # a higher threshold never clamps more
    assert all(len(g["fraction_entries"]) == len(vals) for g in doc["groups"])


def test_a_names_probe_reads_the_batches_training_read(invoke, clip_json, store):
    # dinos.txt was trained in names mode: the probe's batch k is training step k+1's
    # batch (its lines, each from the start state, validation lines held out), not
    # streams of 32x64 with the state carried across names
    from charrnn.cli import _clip_probe_batches
    from charrnn.console import Log
    from charrnn.corpus import load_corpus
    from charrnn.reading import CorpusOptions
    from charrnn.session import split_batches
    from charrnn.tokenizer import Vocab
    from charrnn.trainer import TrainConfig

    ck = Store(store).resolve("dinos:best")
    trained = TrainConfig.from_json(ck.meta["train"])
    vocab = Vocab.from_json(ck.meta["vocab"])
    corpus = load_corpus([DINOS], CorpusOptions.from_json(ck.meta["corpus"]["options"]))
    want = split_batches(corpus.ids, corpus.n_chars, trained, corpus.vocab).train
    got = _clip_probe_batches((DINOS,), ck.meta, trained, vocab, 32, 64, Log(True))
    assert got.n_batches == want.n_batches > 20
    for k in range(want.n_batches):
        for a, b in zip(got.for_step(k), want.for_step(k), strict=True):
            np.testing.assert_array_equal(a, b)
    doc = clip_json(store, "dinos", "--probe", DINOS, "--batches", "3", "-q")
    assert doc["probe"]["batching"] == "lines" and doc["steps"]["count"] == 3
    r = invoke(["clip-stats", "--store", str(store), "dinos", "--probe", DINOS, "--batches", "3"])
    assert r.exit_code == 0, r.stderr
    header = " ".join(r.stdout.split())
    assert "batches of 32 lines" in header and "32x64" not in header
    assert (
        "probe of " in header and ": 3 batches of 32 lines as names-mode training reads" in header
    )
    assert "(names mode: each line from the start state)" in r.stderr
    # --seq-len means nothing to a names run's probe: said, not ignored
    r = invoke(["clip-stats", "--store", str(store), "dinos", "--probe", DINOS, "--seq-len", "8"])
    assert r.exit_code == 2 and "--seq-len applies to prose runs" in r.stderr


def test_a_prose_probe_still_reads_streams(clip_json, store):
    doc = clip_json(store, BOOM, "--probe", DINOS, "--batches", "3", "-q")
    assert doc["config"]["mode"] == "prose" and doc["probe"]["batching"] == "streams"
    assert (doc["probe"]["batch_size"], doc["probe"]["seq_len"]) == (32, 64)


def test_probe_of_a_short_corpus_falls_back_to_smaller_batches(clip_json, store, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("aardonyx\nabelisaurus\nacanthopholis\n")
    doc = clip_json(store, "dinos", "--probe", str(short))
    assert doc["probe"]["batches"] >= 1 and doc["probe"]["batch_size"] < 32
    doc = clip_json(store, BOOM, "--probe", str(short))  # prose: fewer, shorter streams
    assert doc["probe"]["batches"] >= 1 and doc["probe"]["batch_size"] < 32


def test_a_one_batch_probe_reads_as_one(invoke, store, tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("aardonyx\nabelisaurus\n")  # names: one line to train on, one held out
    r = invoke(["clip-stats", "--store", str(store), "dinos", "--probe", str(tiny)])
    assert r.exit_code == 0, r.stderr
    assert "holds only 1 batch of 1 line; probing it (" in r.stderr
    axis = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("batch 1")]
    assert axis == ["batch 1"]  # not "batch 1 ... 1"
    r = invoke(["clip-stats", "--store", str(store), BOOM, "--probe", str(tiny)])
    assert r.exit_code == 0, r.stderr  # prose: 21 characters, one batch of 1x20
    assert "holds only 1 batch of 1x20; probing it (" in r.stderr
    axis = [line.strip() for line in r.stdout.splitlines() if line.strip().startswith("batch 1")]
    assert axis == ["batch 1"]  # not "batch 1 ... 1"


def test_probe_with_unknown_characters_is_a_data_error(invoke, store, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Tyrannosaurus REX 42\n")
    r = invoke(["clip-stats", "--store", str(store), "dinos", "--probe", str(bad)])
    assert r.exit_code == 65
    assert "not in the model's vocabulary" in r.stderr and r.stdout == ""
    said, error = r.stderr.strip().splitlines()  # the probe's checkpoint (best), the error
    assert "its best checkpoint, step" in said and "vocabulary" in error


def test_probe_options_without_probe_are_usage_errors(invoke, store):
    r = invoke(["clip-stats", "--store", str(store), "--batches", "3"])
    assert r.exit_code == 2 and "--probe" in r.stderr


def test_missing_run_is_exit_66(invoke, store):
    r = invoke(["clip-stats", "--store", str(store), "nosuchrun"])
    assert r.exit_code == 66 and "nosuchrun" in r.stderr


def test_json_schema_is_stable(clip_json, store):
    for doc in (
        clip_json(store, "dinos"),
        clip_json(store, BOOM),
        clip_json(store, "dinos", "--probe", DINOS, "--batches", "2", "-q"),
        clip_json(store, BOOM, "--probe", DINOS, "--batches", "2", "-q"),
    ):
        assert tuple(doc) == cs.TOP_LEVEL_KEYS
        assert tuple(doc) == (
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
        assert doc["schema"] == "charrnn.clip-stats/1"
        assert doc["history"]["percentiles"] == "exact"  # short runs are known step by step
        assert doc["history"]["steps_summarized"] == 0
        assert set(doc["config"]) == {
            "cell",
            "layers",
            "hidden",
            "optimizer",
            "lr",
            "clip_norm",
            "clip_value",
            "batch_size",
            "seq_len",
            "mode",
        }
        assert set(doc["steps"]) == {"count", "first", "last", "finite", "nonfinite"}
        assert set(doc["grad_norm"]) == {
            "min",
            "p50",
            "p90",
            "p95",
            "p99",
            "max",
            "mean",
            "max_step",
        }
        assert set(doc["clipping"]) == {"norm", "value"}
        assert set(doc["clipping"]["norm"]) == {
            "threshold",
            "clipped_steps",
            "fraction_clipped",
            "mean_scale",
            "mean_scale_when_clipped",
            "min_scale",
        }
        assert set(doc["clipping"]["value"]) == {
            "threshold",
            "fraction_entries",
            "steps_with_clamping",
            "fraction_steps",
            "max_fraction_entries",
        }
        for g in doc["groups"]:
            assert set(g) == {
                "name",
                "p50",
                "p90",
                "p99",
                "max",
                "max_step",
                "share_p50",
                "fraction_over_threshold",
                "fraction_entries",
            }
        assert set(doc["group_threshold"]) == {"value", "source"}
        assert set(doc["events"]) == {
            "factor",
            "window",
            "exploding",
            "spike_count",
            "spikes",
            "nonfinite_steps",
        }
        for s in doc["events"]["spikes"]:
            assert set(s) == {"step", "grad_norm", "running_median", "ratio", "top_group", "scale"}
        assert set(doc["suggestion"]) == {
            "verdict",
            "clip_norm",
            "percentile",
            "fraction_clipped",
            "reason",
            "needed",
            "basis",
            "measured",
        }
        for m in doc["suggestion"]["measured"]:
            assert set(m) == {"source", "count", "spike_count", "nonfinite"}
        if doc["probe"] is not None:
            p = doc["probe"]
            assert set(p) == {
                "corpus",
                "batching",
                "batch_size",
                "seq_len",
                "batches",
                "loss_mean",
                "parameters",
                "norm_thresholds",
                "value_thresholds",
            }
            for r in p["norm_thresholds"]:
                assert set(r) == {"threshold", "labels", "fraction_clipped", "mean_scale", "cosine"}
            for r in p["value_thresholds"]:
                assert set(r) == {
                    "threshold",
                    "labels",
                    "fraction_entries",
                    "fraction_batches",
                    "cosine_mean",
                    "cosine_min",
                }


def test_human_report_on_stdout_and_nothing_on_stderr(invoke, store):
    r = invoke(["clip-stats", "--store", str(store), BOOM])  # the run that exploded
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    for needle in (
        "Pre-clip global gradient norm",
        "How often clipping bit",
        "Per parameter group",
        "l0.Wa",
        "Wya",
        "Exploding-gradient events",
        "Clipping advice",
        "--clip-norm",
    ):
        assert needle in r.stdout
    assert "\x1b" not in r.stdout  # not a terminal: plain text


def test_probe_logs_go_to_stderr_only(invoke, store):
    r = invoke(["clip-stats", "--store", str(store), "dinos", "--probe", DINOS, "--batches", "2"])
    assert r.exit_code == 0, r.stderr
    assert "probing" in r.stderr and "probing" not in r.stdout
    assert "Value clipping at a few thresholds" in r.stdout and "cos mean" in r.stdout


@pytest.mark.parametrize("args", [["dinos"], ["dinos", "--probe", DINOS, "-q"], [BOOM]])
def test_a_narrow_columns_is_honoured_legend_included(invoke, store, args):
    # the chart's legend used to be printed unwrapped: 74 characters in a 60-column pipe
    r = invoke(["clip-stats", "--store", str(store), *args], env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.stderr
    assert max(len(line) for line in r.stdout.splitlines()) <= 60
    assert "the largest pre-clip norm in each column" in " ".join(r.stdout.split())


@pytest.mark.parametrize(
    "env, colored",
    [
        ({"FORCE_COLOR": "1"}, True),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        ({"FORCE_COLOR": "1", "TERM": "dumb"}, False),
    ],
)
def test_no_color_means_no_escape_codes(invoke, store, env, colored):
    r = invoke(["clip-stats", "--store", str(store), BOOM], env=env)
    assert r.exit_code == 0, r.stderr
    assert ("\x1b[" in r.stdout) is colored


def test_env_vars_set_options(invoke, store):
    r = invoke(
        ["clip-stats", "--store", str(store), BOOM, "--json"],
        env={"CHARRNN_CLIP_STATS_SPIKE_FACTOR": "1e12"},
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["events"]["factor"] == 1e12


def test_help_documents_every_option_and_the_exit_codes(invoke):
    r = invoke(["clip-stats", "--help"])
    assert r.exit_code == 0
    for opt in (
        "--store",
        "--best",
        "--probe",
        "--batches",
        "--batch-size",
        "--seq-len",
        "--spike-factor",
        "--window",
        "--json",
        "--quiet",
    ):
        assert opt in r.stdout
    assert "Exit codes" in r.stdout and "65" in r.stdout
    from charrnn.cli import cli

    cmd = cli.commands["clip-stats"]
    assert all(p.help for p in cmd.params if p.param_type_name == "option")
