from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.batches import (
    CHUNK_BATCHES,
    POOL_BATCHES,
    LineBatches,
    StreamBatches,
    epoch_offset,
    eval_batches,
    fit_batch,
    line_spans,
    make_batches,
    min_train_chars,
    split_train_val,
)
from charrnn.errors import CorpusError


def test_split_train_val_takes_the_tail():
    assert split_train_val(1000, 0.1) == (900, 100)
    assert split_train_val(1000, 0.0) == (1000, 0)
    assert split_train_val(19909, 0.05) == (19909 - 995, 995)
    assert split_train_val(0, 0.5) == (0, 0)


@given(st.integers(0, 10**9), st.floats(0.0, 0.999))
def test_split_train_val_adds_up(n, frac):
    n_train, n_val = split_train_val(n, frac)
    assert n_train + n_val == n
    assert n_val == int(round(n * frac))
    assert n_train >= 0


@pytest.mark.parametrize("frac", [-0.1, 1.0, 1.5])
def test_split_train_val_rejects_bad_fraction(frac):
    with pytest.raises(ValueError):
        split_train_val(100, frac)


def test_min_train_chars():
    assert min_train_chars(32, 64) == 2080
    assert min_train_chars(1, 1) == 2


def _check_tiling(sb: StreamBatches, ids: np.ndarray) -> None:
    """Every batch against a naive per-stream reference."""
    B, T, L, nb = sb.batch_size, sb.seq_len, sb.stream_len, sb.n_batches
    assert (sb.stop - sb.start) // B == L
    assert nb == (L - 1) // T
    assert nb >= 1
    batches = [sb.batch(k) for k in range(nb)]
    for x, y in batches:
        for a in (x, y):
            assert a.shape == (B, T)
            assert a.dtype == np.int32
            assert a.flags.c_contiguous
            assert type(a) is np.ndarray  # not a memmap view
    xs = np.concatenate([x for x, _ in batches], axis=1)  # (B, nb*T)
    ys = np.concatenate([y for _, y in batches], axis=1)  # (B, nb*T)
    for b in range(B):
        stream = ids[sb.start + b * L : sb.start + (b + 1) * L].astype(np.int32)
        # inputs tile the stream's first nb*T characters exactly once, in order
        np.testing.assert_array_equal(xs[b], stream[: nb * T])
        # targets are the same stream shifted by one
        np.testing.assert_array_equal(ys[b], stream[1 : nb * T + 1])
    # within a batch y is x shifted, and the last target is the next batch's first input
    for k, (x, y) in enumerate(batches):
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        if k + 1 < nb:
            np.testing.assert_array_equal(y[:, -1], batches[k + 1][0][:, 0])


@given(
    n=st.integers(2, 400),
    B=st.integers(1, 8),
    T=st.integers(1, 20),
    pad=st.integers(0, 5),
    data=st.data(),
)
def test_batches_tile_streams_with_targets_shifted(n, B, T, pad, data):
    start = data.draw(st.integers(0, pad))
    # distinct values so a wrong offset cannot match by accident
    ids = np.arange(n + pad, dtype=np.uint16)
    stop = start + n
    if n < min_train_chars(B, T):
        with pytest.raises(CorpusError):
            make_batches(ids, start, stop, B, T)
        return
    _check_tiling(make_batches(ids, start, stop, B, T), ids)


def test_batches_on_a_memmap(tmp_path):
    path = tmp_path / "tokens.u8"
    rng = np.random.default_rng(0)
    rng.integers(0, 256, size=5000, dtype=np.uint8).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r", shape=(5000,))
    sb = StreamBatches(ids, 100, 4900, batch_size=7, seq_len=13)
    _check_tiling(sb, np.fromfile(path, dtype=np.uint8))
    assert len(sb) == sb.n_batches


def test_exactly_the_minimum_gives_one_batch():
    ids = np.arange(2080, dtype=np.uint16)
    sb = make_batches(ids, 0, 2080, 32, 64)
    assert sb.n_batches == 1
    with pytest.raises(IndexError):
        sb.batch(1)
    with pytest.raises(IndexError):
        sb.batch(-1)


def test_too_short_says_how_many_are_needed():
    ids = np.zeros(500, dtype=np.uint8)
    with pytest.raises(CorpusError) as info:
        make_batches(ids, 0, 120, 32, 64)
    assert str(info.value) == (
        "the training split has 120 characters; --batch-size 32 --seq-len 64 needs at least "
        "2080; use a smaller --batch-size or --seq-len"
    )


def test_bad_arguments_are_programming_errors():
    ids = np.zeros(100, dtype=np.uint8)
    with pytest.raises(ValueError):
        make_batches(ids, 0, 101, 1, 1)
    with pytest.raises(ValueError):
        make_batches(ids, 0, 100, 0, 1)
    with pytest.raises(ValueError):
        make_batches(ids, 50, 40, 1, 1)


def test_eval_batches_keeps_full_size_when_it_fits():
    ids = np.arange(10_000, dtype=np.uint16)
    sb = eval_batches(ids, 1000, 10_000, 32, 64)
    assert (sb.batch_size, sb.seq_len) == (32, 64)


def test_eval_batches_shrinks_streams_then_steps():
    ids = np.arange(1000, dtype=np.uint16)
    # 200 characters: 3 streams of 65 fit, not 32
    sb = eval_batches(ids, 800, 1000, 32, 64)
    assert (sb.batch_size, sb.seq_len) == (3, 64)
    _check_tiling(sb, ids)
    # 40 characters: not even one stream of 65, so one stream of 40 with T = 39
    sb = eval_batches(ids, 960, 1000, 32, 64)
    assert (sb.batch_size, sb.seq_len) == (1, 39)
    assert sb.n_batches == 1
    _check_tiling(sb, ids)


def test_eval_batches_none_below_two_characters():
    ids = np.arange(10, dtype=np.uint8)
    assert eval_batches(ids, 10, 10, 4, 4) is None
    assert eval_batches(ids, 9, 10, 4, 4) is None
    sb = eval_batches(ids, 8, 10, 4, 4)
    assert (sb.batch_size, sb.seq_len, sb.n_batches) == (1, 1, 1)
    x, y = sb.batch(0)
    assert x.tolist() == [[8]] and y.tolist() == [[9]]


@given(n=st.integers(0, 300), B=st.integers(1, 64), T=st.integers(1, 100))
def test_eval_batches_always_yields_a_batch_from_two_characters(n, B, T):
    ids = np.arange(n, dtype=np.uint16)
    sb = eval_batches(ids, 0, n, B, T)
    if n < 2:
        assert sb is None
        return
    assert sb.n_batches >= 1
    assert sb.batch_size <= B and sb.seq_len <= T
    _check_tiling(sb, ids)


def test_fit_batch_shrinks_the_batch_then_the_steps():
    assert fit_batch(2080, 32, 64) == (32, 64)  # fits: unchanged
    assert fit_batch(2079, 32, 64) == (31, 64)  # fewer streams first
    assert fit_batch(650, 32, 64) == (10, 64)
    assert fit_batch(64, 32, 64) == (1, 63)  # then one shorter stream
    assert fit_batch(2, 32, 64) == (1, 1)
    for n in (2, 3, 64, 65, 100, 2079, 5000):
        B, T = fit_batch(n, 32, 64)
        assert n >= B * (T + 1) and 1 <= B <= 32 and 1 <= T <= 64
        StreamBatches(np.zeros(n, dtype=np.int32), 0, n, B, T)  # one batch at least
    with pytest.raises(CorpusError):
        fit_batch(1, 32, 64)


def test_stream_for_step_walks_epochs_with_seeded_offsets():
    ids = np.arange(1000, dtype=np.int32)
    sb = make_batches(ids, 0, 1000, 4, 7, seed=3)
    n = sb.n_batches
    assert sb.max_offset > 0
    for step in range(3 * n + 2):  # a naive reading of the epoch rule, batch by batch
        k, epoch = step % n, step // n
        x, y = sb.batch(k, epoch_offset(3, epoch, sb.max_offset))
        got = sb.for_step(step)
        assert np.array_equal(got.x, x) and np.array_equal(got.y, y)
        assert got.mask is None and got.carry and got.epoch_start == (k == 0)
        assert got.n_chars == 4 * 7
    offsets = {int(sb.for_step(e * n).x[0, 0]) for e in range(1, 30)}
    assert len(offsets) > 1  # later epochs are shifted, by draws from the seed
    other = make_batches(ids, 0, 1000, 4, 7, seed=4)
    assert any(
        not np.array_equal(other.for_step(e * n).x, sb.for_step(e * n).x) for e in range(1, 30)
    )


def test_line_for_step_is_the_step_s_batch_without_carry():
    rng = np.random.default_rng(0)
    lines = [rng.integers(1, 9, rng.integers(0, 12)) for _ in range(300)]
    ids = np.concatenate([np.append(line, 0) for line in lines]).astype(np.int32)
    starts, lengths = line_spans(ids, 0)
    lb = LineBatches(ids, starts, lengths, eos=0, batch_size=4, seed=2)
    pool = 4 * POOL_BATCHES
    assert lb.n_batches == sum(-(-min(pool, 300 - i) // 4) for i in range(0, 300, pool))
    for step in range(2 * lb.n_batches + 3):
        x, y, mask = lb.batch(step)
        got = lb.for_step(step)
        assert np.array_equal(got.x, x) and np.array_equal(got.y, y)
        assert got.mask is not None and np.array_equal(got.mask, mask)
        assert not got.carry and got.epoch_start == (step % lb.n_batches == 0)
        assert got.n_chars == int(mask.sum())  # padding excluded


def _naive_line_batch(lb: LineBatches, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch k written out line by line: x = [EOS, c1..cn], y = [c1..cn, EOS], capped at
    max_steps targets and padded on the right with EOS."""
    rows = lb.lines_of(k)
    lines = [lb.ids[lb.starts[i] : lb.starts[i] + lb.lengths[i]].tolist() for i in rows]
    seqs = [([lb.eos, *line, lb.eos])[: lb.max_steps + 1] for line in lines]
    T = max(len(s) for s in seqs) - 1
    full = np.full((len(rows), T + 1), lb.eos, np.int32)
    mask = np.zeros((len(rows), T), bool)
    for b, s in enumerate(seqs):
        full[b, : len(s)] = s
        mask[b, : len(s) - 1] = True
    return full[:, :-1], full[:, 1:], mask


def test_line_batches_equal_a_line_by_line_construction():
    # the batches are built many at a time: across chunks and epochs, in any order of
    # access, each equals its lines written out one by one (capped, empty and unended lines)
    rng = np.random.default_rng(1)
    lines = [rng.integers(1, 9, rng.integers(0, 30)) for _ in range(700)]
    ids = np.concatenate([np.append(line, 0) for line in lines])[:-1].astype(np.int32)
    starts, lengths = line_spans(ids, 0)
    lb = LineBatches(ids, starts, lengths, eos=0, batch_size=5, seed=3, max_steps=17)
    assert lb.n_capped > 0 and lb.n_batches > 2 * CHUNK_BATCHES
    steps = np.arange(3 * lb.n_batches)
    for k in [*rng.permutation(steps)[:150].tolist(), *range(lb.n_batches + 5)]:
        x, y, mask = lb.batch(k)
        want = _naive_line_batch(lb, k)
        for got, w in zip((x, y, mask), want, strict=True):
            assert got.dtype == w.dtype and np.array_equal(got, w)
            assert not got.flags.writeable  # views of a shared build: read only


def test_line_batches_are_full_but_the_last_of_each_pool():
    # a batch of B - 1 or B - 2 lines costs a step about as much as a full one: every batch
    # holds B lines but the last of each pool, which holds the rest
    lengths = np.full(2 * 4 * POOL_BATCHES + 10, 3)  # the last pool: 10 lines
    starts = np.arange(len(lengths)) * 4
    ids = np.ones(int(starts[-1]) + 4, np.int32)
    ids[3::4] = 0
    lb = LineBatches(ids, starts, lengths, eos=0, batch_size=4, seed=1)
    sizes = [len(lb.lines_of(k)) for k in range(lb.n_batches)]
    assert sorted(sizes) == [2] + [4] * (len(sizes) - 1) and sum(sizes) == len(lengths)
