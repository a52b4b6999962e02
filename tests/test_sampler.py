"""The sampler's pieces without the command line: filters, draws, the generation kernel."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.sampler import SampleOptions, choose, sampling_probs


def test_top_k_never_leaves_the_top_k():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5000, 30)) * 3
    ids = choose(logits, SampleOptions(1.5, top_k=4), rng)
    top4 = np.argsort(-logits, axis=1)[:, :4]
    assert all(i in row for i, row in zip(ids, top4, strict=True))
    assert len(np.unique(ids)) > 4  # different rows, different winners


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    p = sampling_probs(logits, SampleOptions(1.0, top_p=0.75))
    np.testing.assert_allclose(p, [[0.5 / 0.8, 0.3 / 0.8, 0, 0]])
    p = sampling_probs(logits, SampleOptions(1.0, top_p=0.85))
    assert np.count_nonzero(p) == 3


def test_sampling_follows_the_softmax():
    rng = np.random.default_rng(1)
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20000))
    ids = choose(logits, SampleOptions(1.0), rng)
    freq = np.bincount(ids, minlength=3) / len(ids)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.015)


@pytest.mark.parametrize("B, T", [(1, 1.0), (2, 0.7), (64, 1.3), (200, 0.9)])
def test_drawer_follows_the_tempered_softmax(B, T):
    """Gumbel-max (small batches) and inverse CDF (large) both sample softmax(logits / T)."""
    from charrnn.sampler import Drawer

    assert (B > Drawer.GUMBEL_MAX_BATCH) == (B == 200)  # both ways are tested

    logits = np.log(np.array([0.6, 0.25, 0.1, 0.05]))[:, None].repeat(B, axis=1)
    want = np.exp(logits[:, 0] / T) / np.exp(logits[:, 0] / T).sum()
    drawer = Drawer(SampleOptions(T), np.random.default_rng(3))
    n = max(1, 40000 // B)
    ids = np.concatenate([drawer(logits)[0] for _ in range(n)])
    freq = np.bincount(ids, minlength=4) / len(ids)
    np.testing.assert_allclose(freq, want, atol=0.012)


@pytest.mark.parametrize(
    "kw",
    [
        dict(cell="rnn"),
        dict(cell="rnn", activation="relu", layers=3),  # stacked [Wax | Waa] above layer 0
        dict(cell="gru", layers=2),
        dict(cell="lstm", layers=2),
        dict(cell="lstm", peephole=True, embedding=5),
    ],
    ids=["rnn", "rnn-relu-3", "gru-2", "lstm-2", "lstm-peep-emb"],
)
# one stream indexes the table, a few gather its rows, 16 or more its columns
@pytest.mark.parametrize("B", [1, 3, 20])
def test_generation_kernel_equals_model_step(kw, B):
    """The sampler's lean kernel computes exactly CharRNN.step (float64, 1e-12)."""
    from charrnn.model import CharRNN, ModelConfig, init_params
    from charrnn.sampler import Kernel

    cfg = ModelConfig(vocab_size=11, hidden=6, dtype="float64", **kw)
    rng = np.random.default_rng(0)
    params = init_params(cfg, rng)
    params.flat[...] = rng.uniform(-0.9, 0.9, params.flat.shape)
    model = CharRNN(cfg, params)
    kernel = Kernel(model)
    assert (B < Kernel.COLUMN_GATHER_BATCH) == (B < 20)
    ref_state = model.initial_state(B)
    state = kernel.initial_state(B)
    for _ in range(6):
        ids = rng.integers(0, 11, B)
        ref_logits, ref_state = model.step(ids, ref_state)
        logits = kernel.step(ids, state)
        np.testing.assert_allclose(logits.T, ref_logits, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state, ref_state, rtol=0, atol=1e-12)


def test_inverse_cdf_draws_equal_a_naive_loop_and_buffers_carry_nothing_over():
    """The large-batch draw (buffers kept between steps) picks, column by column, the first
    id whose cumulative probability passes the uniform draw, as a plain loop does."""
    from charrnn.sampler import Drawer

    V, T = 7, 0.8
    drawer = Drawer(SampleOptions(T), np.random.default_rng(5))
    mirror = np.random.default_rng(5)  # the same uniforms, drawn by the loop below
    rng = np.random.default_rng(6)
    big = Drawer.GUMBEL_MAX_BATCH + 40
    for B in (big, big, big - 23, big):  # a batch that shrinks rebuilds the buffers
        logits = rng.normal(size=(V, B)).astype(np.float32) * 3
        out = np.full(B, -1, dtype=np.int64)
        ids, _ = drawer(logits, out=out)
        assert ids is out
        u = mirror.random(B)
        for b in range(B):
            p = np.exp(logits[:, b] / T - (logits[:, b] / T).max())
            cdf = np.cumsum(p / p.sum())
            assert ids[b] == min(int((cdf <= u[b] * cdf[-1]).sum()), V - 1)


def test_a_stacking_kernel_refuses_a_state_it_cannot_view():
    """The stacked operand [x; a<t-1>] is a view of the state; a strided state would make it
    a copy that the step's writes never reach."""
    from charrnn.model import CharRNN, ModelConfig
    from charrnn.sampler import Kernel

    kernel = Kernel(CharRNN(ModelConfig(vocab_size=5, cell="rnn", hidden=4, layers=2)))
    state = kernel.initial_state(6)
    kernel.step(np.zeros(6, dtype=np.int64), state)  # contiguous: fine
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel.step(np.zeros(3, dtype=np.int64), state[..., ::2])
