"""Optimizers: the update rules against naive formulas, and the guarantee that an update
which would overflow changes nothing at all (weights, optimizer state, step count)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.batches import Batch
from charrnn.model import CharRNN, ModelConfig
from charrnn.optim import (
    OPTIMIZERS,
    OptimConfig,
    Optimizer,
    _within,
    clip_gradients,
    segment_offsets,
)
from charrnn.trainer import PARAM_LIMIT, _Update, norm_groups

N = 50


def _grads(seed: int, n: int = N, dtype=np.float32) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(6)]


def _snapshot(w: np.ndarray, opt: Optimizer) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    return w.copy(), {k: a.copy() for k, a in opt.state.items()}, opt.t


def _assert_same(w: np.ndarray, opt: Optimizer, snap) -> None:
    w0, state0, t0 = snap
    assert w.tobytes() == w0.tobytes()
    assert opt.t == t0
    assert opt.state.keys() == state0.keys()
    for k, a in opt.state.items():
        assert a.tobytes() == state0[k].tobytes(), k


def test_adam_against_the_naive_formula_in_float64():
    c = OptimConfig(name="adam", lr=1e-2)
    opt = Optimizer(c, N, np.float64)
    w = np.random.default_rng(1).standard_normal(N)
    ref, m, v = w.copy(), np.zeros(N), np.zeros(N)
    for t, g in enumerate(_grads(2, dtype=np.float64), start=1):
        m = c.beta1 * m + (1 - c.beta1) * g
        v = c.beta2 * v + (1 - c.beta2) * g * g
        m_hat, v_hat = m / (1 - c.beta1**t), v / (1 - c.beta2**t)
        ref -= c.lr * m_hat / (np.sqrt(v_hat) + c.eps)
        opt.step(w, g.copy(), c.lr)
        np.testing.assert_allclose(w, ref, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(opt.state["m"], m, rtol=1e-12)
        np.testing.assert_allclose(opt.state["v"], v, rtol=1e-12)
    assert opt.t == 6


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop"])
def test_the_other_rules_against_their_naive_formulas_in_float64(name):
    c = OptimConfig(name=name, lr=1e-2)
    opt = Optimizer(c, N, np.float64)
    w = np.random.default_rng(1).standard_normal(N)
    ref, cache = w.copy(), np.zeros(N)
    for g in _grads(2, dtype=np.float64):
        if name == "sgd":
            ref -= c.lr * g
        else:
            cache = cache + g * g if name == "adagrad" else c.alpha * cache + (1 - c.alpha) * g * g
            ref -= c.lr * g / (np.sqrt(cache) + c.eps)
        opt.step(w, g.copy(), c.lr)
        np.testing.assert_allclose(w, ref, rtol=1e-12, atol=1e-15)
        if name != "sgd":
            np.testing.assert_allclose(opt.state["cache"], cache, rtol=1e-12)


@pytest.mark.parametrize("given_squares", [False, True])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_checked_step_is_bit_identical_to_a_plain_step(name, given_squares):
    """try_step commits exactly what step computes, with or without clipping's g²."""
    c = OptimConfig(name=name, lr=1e-2)
    a, b = Optimizer(c, N, np.float32), Optimizer(c, N, np.float32)
    wa = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    wb = wa.copy()
    for g in _grads(10):
        a.step(wa, g.copy(), c.lr)
        squares = None
        if given_squares:
            squares = b.squares_buffer()  # consumed in place: one of the step's own buffers
            np.multiply(g, g, out=squares)
        assert b.try_step(wb, g.copy(), c.lr, PARAM_LIMIT, squares)
        assert wa.tobytes() == wb.tobytes() and a.t == b.t
        for k in a.state:
            assert a.state[k].tobytes() == b.state[k].tobytes()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_holders_see_the_current_arrays(name):
    """The state's arrays trade places with spares on every step: whoever holds the
    ``state`` dict (the checkpoint writer) must see the new values, not the old ones."""
    c = OptimConfig(name=name)
    opt = Optimizer(c, N, np.float32)
    held = opt.state
    w = np.zeros(N, np.float32)
    for g in _grads(4)[:3]:
        opt.try_step(w, g.copy(), c.lr, PARAM_LIMIT)
    assert opt.state is held
    if name != "sgd":
        assert all(np.abs(a).max() > 0 for a in held.values())  # updated, not the zeros


def _warmed(name: str, dtype=np.float32) -> tuple[Optimizer, np.ndarray]:
    """An optimizer and weights after three ordinary steps (non-trivial state, t = 3)."""
    c = OptimConfig(name=name, lr=1e-2)
    opt = Optimizer(c, N, dtype)
    w = np.random.default_rng(5).standard_normal(N).astype(dtype)
    for g in _grads(6, dtype=dtype)[:3]:
        assert opt.try_step(w, g.copy(), c.lr, PARAM_LIMIT)
    return opt, w


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_update_beyond_the_limit_changes_nothing(name):
    opt, w = _warmed(name)
    twin, w_twin = _warmed(name)  # never sees the refused update
    snap = _snapshot(w, opt)
    g = _grads(7)[0]
    # a learning rate that carries the weights far beyond the limit (but stays finite)
    assert not opt.try_step(w, g.copy(), 1e20 if name != "sgd" else 1e17, PARAM_LIMIT)
    _assert_same(w, opt, snap)
    # and the next step is exactly the step the run would have taken without it
    g = _grads(8)[0]
    assert opt.try_step(w, g.copy(), 1e-2, PARAM_LIMIT)
    assert twin.try_step(w_twin, g.copy(), 1e-2, PARAM_LIMIT)
    _assert_same(w, opt, _snapshot(w_twin, twin))


@pytest.mark.parametrize("name", ["adam", "adagrad", "rmsprop"])
def test_an_update_that_overflows_the_state_changes_nothing(name):
    """A finite gradient whose square overflows float32 makes v (or the cache) inf while
    the weights barely move (g / sqrt(inf) = 0): the state alone must refuse the step."""
    opt, w = _warmed(name)
    snap = _snapshot(w, opt)
    g = np.zeros(N, np.float32)
    g[7] = 3e19  # finite, g² = inf in float32
    assert not opt.try_step(w, g, 1e-2, PARAM_LIMIT)
    _assert_same(w, opt, snap)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_nan_gradient_is_refused_and_changes_nothing(name):
    opt, w = _warmed(name)
    snap = _snapshot(w, opt)
    g = _grads(9)[0]
    g[3] = np.nan
    assert not opt.try_step(w, g, 1e-2, PARAM_LIMIT)
    _assert_same(w, opt, snap)


def test_weights_near_the_limit_are_still_accepted():
    """The dot-product shortcut only accepts; weights whose Σw² exceeds it are judged
    exactly by their min and max, so a weight just inside the limit is kept."""
    opt = Optimizer(OptimConfig(name="sgd"), N, np.float32)
    w = np.zeros(N, np.float32)
    w[:4] = 0.99 * PARAM_LIMIT  # Σw² ≈ 3.9e30, far beyond the shortcut's 1e29
    g = np.zeros(N, np.float32)
    assert opt.try_step(w, g.copy(), 1e-3, PARAM_LIMIT)
    g[0] = -0.02 * PARAM_LIMIT / 1e-3  # w[0] -> 1.01 limit
    assert not opt.try_step(w, g, 1e-3, PARAM_LIMIT)
    assert w[0] == np.float32(0.99 * PARAM_LIMIT) and opt.t == 1


_special = st.sampled_from([0.0, 1.0, -1.0, 1e15, -1e15, 1.0001e15, 3e19, np.inf, -np.inf, np.nan])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.floats(-2e15, 2e15), st.floats(-10, 10), _special), max_size=40),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from([PARAM_LIMIT, None]),
)
def test_within_equals_the_naive_check(values, dtype, limit):
    a = np.array(values, dtype=dtype)
    naive = all(math.isfinite(x) and (limit is None or -limit <= x <= limit) for x in a.tolist())
    with np.errstate(over="ignore"):  # the dot of huge entries overflows: that is handled
        assert _within(a, limit) == naive


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_the_trainer_skips_an_overflowing_update_and_keeps_everything(name):
    cfg = ModelConfig(vocab_size=5, cell="lstm", hidden=8, layers=1)
    model = CharRNN(cfg, rng=np.random.default_rng(0))
    opt = Optimizer(OptimConfig(name=name, clip_norm=None), model.params.flat.size, model.dtype)
    update = _Update(model, opt)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, (3, 4))
    batch = Batch(x, np.roll(x, -1, axis=1), np.ones((3, 4), bool), carry=False, epoch_start=False)
    for _ in range(2):
        assert not update(batch, None, 1e-2, rng).skipped
    snap = _snapshot(model.params.flat, opt)
    done = update(batch, None, 1e30, rng)
    assert done.skipped and math.isfinite(done.loss)
    _assert_same(model.params.flat, opt, snap)
    assert not update(batch, None, 1e-2, rng).skipped and opt.t == 3


@pytest.mark.parametrize(
    ("clip_value", "clip_norm", "kept"),
    [(None, None, True), (None, 1e6, True), (None, 0.5, False), (10.0, None, False)],
)
def test_clipping_hands_on_its_squares_only_while_g_is_unchanged(clip_value, clip_norm, kept):
    g = _grads(11)[0]
    g0 = g.copy()
    offsets = segment_offsets([20, 30])
    clip = clip_gradients(g, offsets, clip_value, clip_norm, np.empty_like(g))
    if kept:
        assert clip.scale == 1.0 and g.tobytes() == g0.tobytes()
        assert clip.squares is not None and clip.squares.tobytes() == (g0 * g0).tobytes()
    else:
        assert clip.squares is None


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    ("clip_value", "clip_norm"), [(None, None), (None, 1e-3), (1e-3, None), (1e-3, 1e-4)]
)
def test_the_trainer_step_is_clipping_then_a_plain_step(name, clip_value, clip_norm):
    """The trainer hands clipping's squares to the step only when they are the clipped
    gradient's: its result is the plain clip-then-step, bit for bit (fails if stale
    squares, e.g. of the gradient before clipping, reach the step)."""
    cfg = ModelConfig(vocab_size=5, cell="gru", hidden=6)
    oc = OptimConfig(name=name, clip_value=clip_value, clip_norm=clip_norm)
    a, b = (CharRNN(cfg, rng=np.random.default_rng(0)) for _ in range(2))
    opt_a, opt_b = (Optimizer(oc, a.params.flat.size, a.dtype) for _ in range(2))
    update, offsets = _Update(a, opt_a), segment_offsets(norm_groups(cfg)[0])
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.integers(0, 5, (3, 4))
        y = np.roll(x, -1, axis=1)
        assert not update(Batch(x, y, None, False, False), None, 1e-2, rng).skipped
        _, g, _, _ = b.loss_and_grads(x, y)
        clip_gradients(g.flat, offsets, clip_value, clip_norm)
        opt_b.step(b.params.flat, g.flat, 1e-2)
        assert a.params.flat.tobytes() == b.params.flat.tobytes()
        assert all(opt_a.state[k].tobytes() == opt_b.state[k].tobytes() for k in opt_a.state)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_a_new_config_brings_its_constants(name):
    """The session replaces a running optimizer's config; the step must use the new one."""
    old = OptimConfig(name=name)
    new = dataclasses.replace(old, beta1=0.5, beta2=0.9, alpha=0.5, eps=1e-3)
    a, b = Optimizer(old, N, np.float64), Optimizer(new, N, np.float64)
    a.cfg = new
    wa = np.random.default_rng(1).standard_normal(N)
    wb = wa.copy()
    for g in _grads(2, dtype=np.float64):
        a.step(wa, g.copy(), 1e-2)
        b.step(wb, g.copy(), 1e-2)
    assert wa.tobytes() == wb.tobytes()
