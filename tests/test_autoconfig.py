"""Automatic configuration, the budget-fitting schedule and per-epoch stream offsets."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn import autoconfig
from charrnn.autoconfig import Budget, CorpusFacts, choose, decay_end, n_params
from charrnn.batches import StreamBatches, epoch_offset
from charrnn.model import CharRNN, ModelConfig
from charrnn.optim import OptimConfig
from charrnn.request import TrainRequest
from charrnn.session import run_training
from charrnn.store import Store
from charrnn.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PROSE = ROOT / "data" / "tinyshakespeare.txt"
BOOK = CorpusFacts(n_chars=1_000_000, vocab_size=65, is_lines=False, n_lines=36_000)
DEFAULTS = (ModelConfig(vocab_size=65), OptimConfig(), TrainConfig())


def pick(facts: CorpusFacts, budget: Budget, explicit: frozenset[str] = frozenset(), **given):
    model, optim, train = DEFAULTS
    if given:
        train = dataclasses.replace(train, **given)
    return choose(facts, budget, model, optim, train, explicit)


# --------------------------------------------------------------------------- the rule


def test_names_corpora_keep_the_names_defaults():
    names = CorpusFacts(20_000, 27, True, 1536)
    c = pick(names, Budget(seconds=300))
    assert not c.applied and "names" in c.reason
    assert (c.model, c.optim, c.train) == DEFAULTS


@pytest.mark.parametrize("option", ["hidden", "cell", "dropout", "lr", "optimizer", "clip_norm"])
def test_any_model_or_optimiser_option_turns_it_off(option):
    c = pick(BOOK, Budget(seconds=300), frozenset({option}))
    assert not c.applied and "--" + option.replace("_", "-") in c.reason
    assert (c.model, c.optim, c.train) == DEFAULTS


def test_prose_gets_a_cosine_schedule_and_a_size_that_grows_with_the_budget():
    sizes = []
    for seconds in (10, 60, 300, 900, 3600, 36_000):
        c = pick(BOOK, Budget(seconds=seconds))
        assert c.applied and c.reason.startswith("auto: ")
        assert c.optim.schedule == "cosine" and c.optim.decay_steps == 0  # fixed by the session
        assert 0 < c.optim.warmup <= autoconfig.WARMUP_MAX
        sizes.append(n_params(c.model.layers, c.model.hidden, 65, c.model.cell))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert (
        pick(BOOK, Budget(seconds=10)).model.layers,
        pick(BOOK, Budget(seconds=10)).model.hidden,
    ) == autoconfig.SIZES[0]


def test_a_small_corpus_does_not_get_a_model_many_times_its_size():
    tiny = CorpusFacts(30_000, 60, False, 800)
    c = pick(tiny, Budget(seconds=36_000))
    P = n_params(c.model.layers, c.model.hidden, 60, c.model.cell)
    assert autoconfig.MAX_PARAMS_PER_CHAR * tiny.n_chars >= P
    assert c.model.dropout > 0  # many epochs: regularised, one layer or several


def test_a_short_corpus_counts_its_epochs_in_the_batches_it_will_train_on():
    short = CorpusFacts(28, 14, False, 1)  # 25 training characters: one batch of 1x24
    c = pick(short, Budget(steps=5))
    assert "5 steps of 1x24" in c.reason and "4.8 epochs of 25" in c.reason
    assert "≈ 120 characters" in c.reason


def test_user_data_options_win_and_the_validation_share_shrinks_for_big_corpora():
    c = pick(BOOK, Budget(steps=500), frozenset({"batch_size"}), batch_size=8)
    assert c.applied and c.train.batch_size == 8 and c.train.seq_len == autoconfig.SEQ_LEN
    assert c.train.val_fraction * BOOK.n_chars == pytest.approx(autoconfig.VAL_CHARS)
    kept = pick(BOOK, Budget(steps=500), frozenset({"val_fraction"}), val_fraction=0.2)
    assert kept.train.val_fraction == 0.2
    small = pick(CorpusFacts(100_000, 60, False, 900), Budget(steps=500))
    assert small.train.val_fraction == TrainConfig().val_fraction


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers, hidden", [(1, 7), (2, 16), (3, 5)])
def test_parameter_count_is_the_models(cell, layers, hidden):
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=hidden))
    assert n_params(layers, hidden, 11, cell) == model.params.flat.size


# --------------------------------------------------------------------------- the schedule


def test_warm_up_then_cosine_to_the_end_then_held():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup=10, decay_steps=110, lr_min=0.1)
    assert [cfg.lr_at(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(60) == pytest.approx(0.55)  # half-way: the mean of lr and lr·lr_min
    assert cfg.lr_at(110) == pytest.approx(0.1) and cfg.lr_at(10_000) == pytest.approx(0.1)
    lrs = [cfg.lr_at(s) for s in range(10, 200)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    unknown = dataclasses.replace(cfg, decay_steps=0)  # a time budget not measured yet
    assert unknown.lr_at(500) == 1.0


def test_the_default_schedule_is_unchanged():
    cfg = OptimConfig(lr=0.5, lr_decay=0.5, lr_decay_every=10)
    assert [cfg.lr_at(s) for s in (0, 9, 10, 25)] == [0.5, 0.5, 0.25, 0.125]


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="linear")
    with pytest.raises(ValueError, match="lr_min"):
        OptimConfig(lr_min=1.5)


def test_decay_end_counts_the_steps_that_fit_the_time_left():
    assert decay_end(100, 0.5, 50.0, 0.0) == 200
    assert decay_end(100, 0.5, 50.0, 0.25) == 180  # validation takes a fifth of the time
    assert decay_end(7, 0.0, 50.0, 0.0) == 8 and decay_end(7, 1.0, -3.0, 0.0) == 8


# --------------------------------------------------------------------------- offsets


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    B=st.integers(1, 6),
    T=st.integers(1, 12),
)
def test_offsets_over_epochs_make_every_character_a_target(n, B, T):
    if n < B * (T + 1):
        return
    ids = np.arange(n)
    sb = StreamBatches(ids, 0, n, B, T)
    assert sb.max_offset >= 0
    targets = np.zeros(n, bool)
    for o in range(sb.max_offset + 1):
        for k in range(sb.n_batches):
            x, y = sb.batch(k, o)
            assert np.array_equal(y, x + 1)  # targets still shifted by one
            targets[y.ravel()] = True
        if o < sb.max_offset:
            continue
        with pytest.raises(IndexError):
            sb.batch(0, o + 1)
    # every character is a target but the first (no predecessor) and, when the split
    # divides into B streams exactly, the first of each stream (no room to shift into it)
    never = {0} | ({b * sb.stream_len for b in range(B)} if n % B == 0 else set())
    assert set(np.flatnonzero(~targets).tolist()) <= never


def test_epoch_offsets_are_seeded_and_in_range():
    offs = [epoch_offset(3, e, 40) for e in range(200)]
    assert offs[0] == 0 and offs == [epoch_offset(3, e, 40) for e in range(200)]
    assert min(offs) >= 0 and max(offs) <= 40 and len(set(offs)) > 20
    assert offs != [epoch_offset(4, e, 40) for e in range(200)]
    assert epoch_offset(3, 5, 0) == 0


# --------------------------------------------------------------------------- the session


def _prose(tmp_path: Path, n: int = 30_000) -> str:
    p = tmp_path / "prose.txt"
    p.write_text(PROSE.read_text(encoding="utf-8")[:n], encoding="utf-8")
    return str(p)


def small(corpus: str, store: Path, **kw) -> TrainRequest:
    # batch and sequence length set (data options): the model and schedule stay automatic
    return TrainRequest(
        corpus=(corpus,),
        store=store,
        train=TrainConfig(batch_size=4, seq_len=16, eval_every=6),
        explicit=frozenset({"batch_size", "seq_len", "eval_every"}),
        **kw,
    )


def test_session_applies_stores_and_resumes_the_choice_bit_identically(tmp_path):
    corpus = _prose(tmp_path)
    straight = run_training(small(corpus, tmp_path / "a", steps=20))
    auto = straight.summary()["auto"]
    assert auto["applied"] and auto["reason"].startswith(f"auto: {autoconfig.CELL} ")
    optim = straight.summary()["optim"]
    assert optim["schedule"] == "cosine" and optim["decay_steps"] == 20

    class StopAt:  # a SIGINT at the first validation: save, stop, resume later
        def __init__(self) -> None:
            self.sent = False

        def info(self, msg: str) -> None:
            if msg.startswith("step 6:") and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

        def warn(self, msg: str) -> None:
            pass

        def progress(self, total, initial, desc):
            from charrnn.console import Log

            return Log(quiet=True).progress(total, initial, desc)

        def close_progress(self) -> None:
            pass

    first = run_training(small(corpus, tmp_path / "b", steps=20), StopAt())
    assert first.return_code == 130 and first.state.step < 20
    ck = Store(tmp_path / "b").latest("prose")
    assert ck.meta["auto"] == auto and ck.meta["optim"]["decay_steps"] == 20
    resumed = run_training(small(corpus, tmp_path / "b", steps=20))
    assert resumed.state.step == 20 and resumed.summary()["auto"] == auto
    a = straight.state.model.params.flat
    b = resumed.state.model.params.flat
    assert np.array_equal(a, b)


def test_a_time_budget_fixes_the_decay_end_in_the_checkpoint(tmp_path):
    corpus = _prose(tmp_path)
    r = run_training(small(corpus, tmp_path, time_budget=2.0))
    ck = Store(tmp_path).latest("prose")
    optim = ck.meta["optim"]
    assert optim["schedule"] == "cosine"
    assert optim["decay_steps"] > optim["warmup"]
    assert r.summary()["optim"]["decay_steps"] == optim["decay_steps"]
    assert math.isfinite(r.summary()["val_loss"])


def test_an_explicit_model_option_trains_as_told(tmp_path):
    corpus = _prose(tmp_path)
    req = dataclasses.replace(
        small(corpus, tmp_path, steps=3),
        model=ModelConfig(vocab_size=1, hidden=8),
        explicit=frozenset({"hidden", "batch_size", "seq_len", "eval_every"}),
    )
    r = run_training(req)
    assert not r.summary()["auto"]["applied"]
    assert r.summary()["model"]["hidden"] == 8 and r.summary()["optim"]["schedule"] == "step"


def test_a_measured_speed_decides_the_size_for_a_time_budget():
    calls: list[tuple[int, int]] = []

    def speed(cfg: ModelConfig, B: int, T: int) -> float:
        calls.append((cfg.layers, cfg.hidden))
        return rate[(cfg.layers, cfg.hidden)]

    P = {s: n_params(*s, 65) for s in autoconfig.SIZES}
    # fast enough for the second size only: it is chosen, the third is asked, the fourth not
    rate = {s: autoconfig.CHARS_PER_PARAM * P[autoconfig.SIZES[1]] / 100 for s in P}
    c = choose(BOOK, Budget(seconds=100), *DEFAULTS, speed=speed)
    assert (c.model.layers, c.model.hidden) == autoconfig.SIZES[1]
    assert calls == list(autoconfig.SIZES[:3]) and "(measured)" in c.reason
    calls.clear()
    slow = choose(BOOK, Budget(seconds=1), *DEFAULTS, speed=speed)
    assert (slow.model.layers, slow.model.hidden) == autoconfig.SIZES[0]
    assert calls == list(autoconfig.SIZES[:1])  # the smallest, even when too slow
    calls.clear()
    choose(BOOK, Budget(steps=100), *DEFAULTS, speed=speed)  # a step budget needs no speed
    assert calls == []
