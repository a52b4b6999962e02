"""The model core is proven, not assumed.

* every backward pass against float64 central finite differences, on every
  parameter and on the initial state;
* the vectorized forward against a naive per-step loop written straight from
  the lecture equations (concatenated [a<t-1>, x<t>], explicit one-hot x<t>,
  σ(z) = 1 / (1 + e^-z), one gate at a time);
* every cell overfits a short repeated string.
"""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import cells
from charrnn.model import CharRNN, ModelConfig, init_params, param_shapes
from charrnn.optim import OptimConfig, Optimizer, clip_gradients, segment_offsets

B, T, V, H = 2, 3, 5, 4

VARIANTS = [
    dict(cell="rnn"),
    dict(cell="rnn", activation="relu"),
    dict(cell="gru"),
    dict(cell="lstm"),
    dict(cell="lstm", peephole=True),
]
IDS = [
    "rnn-tanh",
    "rnn-relu",
    "gru",
    "lstm",
    "lstm-peephole",
]


def _model(layers: int, seed: int = 0, **kw) -> CharRNN:
    cfg = ModelConfig(vocab_size=V, hidden=H, layers=layers, dtype="float64", **kw)
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    # larger than the init so every nonlinearity is exercised away from zero
    params.flat[...] = rng.uniform(-0.8, 0.8, params.flat.shape)
    return CharRNN(cfg, params)


def _batch(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, V, (B, T))
    y = rng.integers(0, V, (B, T))
    return x, y


def _rel_error(num: np.ndarray, ana: np.ndarray) -> float:
    """max |num - ana| / max(|num|, |ana|) over one array: the maximum relative error."""
    scale = max(np.abs(num).max(), np.abs(ana).max(), 1e-12)
    return float(np.abs(num - ana).max() / scale)


def _gradcheck(model: CharRNN, dropout_seed: int | None = None) -> dict[str, float]:
    """Relative error of every analytic gradient (and ∂loss/∂state0) against central differences."""
    x, y = _batch()
    rng0 = np.random.default_rng(3)
    state = rng0.uniform(-0.5, 0.5, model.initial_state(B).shape)

    def rng():
        return None if dropout_seed is None else np.random.default_rng(dropout_seed)

    _, grads, _, dstate = model.loss_and_grads(x, y, state, rng=rng())
    grads = grads.copy()  # loss_and_grads reuses its gradient buffer on the next call
    eps = 1e-5

    def f() -> float:
        return model.loss_and_grads(x, y, state, rng=rng())[0]

    def numeric(arr: np.ndarray) -> np.ndarray:
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            lp = f()
            arr[i] = old - eps
            lm = f()
            arr[i] = old
            num[i] = (lp - lm) / (2 * eps)
        return num

    errors = {name: _rel_error(numeric(arr), grads[name]) for name, arr in model.params.items()}
    errors["state0"] = _rel_error(numeric(state), dstate)
    return errors


def assert_gradients_match(model: CharRNN, dropout_seed: int | None = None) -> None:
    """The gradient check: every parameter and the initial state, relative error below 1e-6."""
    errors = _gradcheck(model, dropout_seed)
    assert len(errors) == len(param_shapes(model.cfg)) + 1
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < 1e-6, f"{worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_gradient_check(kw, layers):
    assert_gradients_match(_model(layers, **kw))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_check_embedding_and_dropout(cell):
    model = _model(2, cell=cell, embedding=3, dropout=0.3)
    assert "embed" in model.params
    assert_gradients_match(model, dropout_seed=7)


@pytest.mark.parametrize(
    "name, factor", [("l0.Waa", 1.01), ("l0.Wax", 0.99), ("by", 1.001), ("state0", 1.01)]
)
def test_gradient_check_detects_a_wrong_gradient(name, factor):
    """The check itself can fail: a returned gradient scaled by ~1% must fail it."""
    model = _model(1, cell="lstm")
    real = model.loss_and_grads

    def wrong(*args, **kw):
        loss, grads, final, dstate = real(*args, **kw)
        if name == "state0":
            dstate = dstate * factor
        else:
            grad = grads[name]
            grad *= factor
        return loss, grads, final, dstate

    model.loss_and_grads = wrong  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match=name):
        assert_gradients_match(model)


# --------------------------------------------------------------------------- naive loop


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# the parameter layout (gate blocks stacked along rows, top to bottom), written here
# independently of cells.CELLS so that the comparison also checks the registry
GATE_ROWS = {"rnn": ("a",), "gru": ("r", "u", "c"), "lstm": ("o", "u", "f", "c")}


def naive_forward(model: CharRNN, x: np.ndarray, state: np.ndarray):
    """Logits (B, T, V) and final state, one step and one gate at a time, from the lectures."""
    cfg, p = model.cfg, model.params
    Hn, G = cfg.hidden, GATE_ROWS[cfg.cell]
    Bn, Tn = x.shape
    st = state.copy()
    logits = np.zeros((Bn, Tn, cfg.vocab_size))

    def block(name, layer, gate):  # Wa = [Waa | Wax] and ba of one gate, as in the lectures
        k = G.index(gate)
        rows = slice(k * Hn, (k + 1) * Hn)
        Wa = np.hstack([p[f"l{layer}.Waa"][rows], p[f"l{layer}.Wax"][rows]])
        return Wa, p[f"l{layer}.b"][rows][:, None]

    for t in range(Tn):
        if cfg.embedding:
            inp = p["embed"][x[:, t]].T  # (E, B)
        else:
            inp = np.zeros((cfg.vocab_size, Bn))
            inp[x[:, t], np.arange(Bn)] = 1.0  # explicit one-hot x<t>
        for layer in range(cfg.layers):
            if cfg.cell == "rnn":
                a_prev = st[layer, 0]
                Wa, ba = block("Wa", layer, "a")
                z = Wa @ np.vstack([a_prev, inp]) + ba
                a = np.tanh(z) if cfg.activation == "tanh" else np.maximum(z, 0)
                st[layer, 0] = a
            elif cfg.cell == "gru":
                c_prev = st[layer, 0]
                Wu, bu = block("Wu", layer, "u")
                Wr, br = block("Wr", layer, "r")
                Wc, bc = block("Wc", layer, "c")
                gu = sigmoid(Wu @ np.vstack([c_prev, inp]) + bu)
                gr = sigmoid(Wr @ np.vstack([c_prev, inp]) + br)
                cc = np.tanh(Wc @ np.vstack([gr * c_prev, inp]) + bc)
                c = gu * cc + (1 - gu) * c_prev
                st[layer, 0] = a = c
            else:
                a_prev, c_prev = st[layer, 0], st[layer, 1]
                concat = np.vstack([a_prev, inp])
                Wc, bc = block("Wc", layer, "c")
                Wu, bu = block("Wu", layer, "u")
                Wf, bf = block("Wf", layer, "f")
                Wo, bo = block("Wo", layer, "o")
                zu, zf, zo = Wu @ concat + bu, Wf @ concat + bf, Wo @ concat + bo
                if cfg.peephole:
                    pk = p[f"l{layer}.p"]  # rows o, u, f
                    zo = zo + pk[0][:, None] * c_prev
                    zu = zu + pk[1][:, None] * c_prev
                    zf = zf + pk[2][:, None] * c_prev
                cc = np.tanh(Wc @ concat + bc)
                gu, gf, go = sigmoid(zu), sigmoid(zf), sigmoid(zo)
                c = gu * cc + gf * c_prev
                a = go * np.tanh(c)
                st[layer, 0], st[layer, 1] = a, c
            inp = a
        logits[:, t] = (p["Wya"] @ inp + p["by"][:, None]).T
    return logits, st


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("kw", [*VARIANTS, dict(cell="lstm", embedding=3)], ids=[*IDS, "lstm-emb"])
def test_vectorized_forward_equals_naive_loop(kw, layers):
    model = _model(layers, **kw)
    rng = np.random.default_rng(5)
    Bn, Tn = 3, 7
    x = rng.integers(0, V, (Bn, Tn))
    state = rng.uniform(-0.5, 0.5, model.initial_state(Bn).shape)
    logits, final, _ = model.forward(x, state.copy())
    ref_logits, ref_final = naive_forward(model, x, state)
    got = logits.reshape(Tn, Bn, V).transpose(1, 0, 2)
    np.testing.assert_allclose(got, ref_logits, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final, ref_final, rtol=0, atol=1e-10)
    # the one-step generation path agrees too
    st = state.copy()
    for t in range(Tn):
        step_logits, st = model.step(x[:, t], st)
        np.testing.assert_allclose(step_logits, ref_logits[:, t], rtol=0, atol=1e-10)
    np.testing.assert_allclose(st, ref_final, rtol=0, atol=1e-10)


def test_loss_is_mean_cross_entropy():
    model = _model(2, cell="gru")
    x, y = _batch()
    loss, _ = model.loss(x, y)
    logits, _ = naive_forward(model, x, model.initial_state(B))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.mean(np.take_along_axis(logp, y[..., None], -1))
    assert loss == pytest.approx(ref, abs=1e-12)
    assert model.loss_and_grads(x, y)[0] == pytest.approx(ref, abs=1e-12)


def test_state_is_carried():
    """Two halves with the state carried give the same loss as the whole."""
    model = _model(2, cell="lstm")
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, 8))
    y = rng.integers(0, V, (B, 8))
    whole = model.nll(x, y)[0]
    first, st = model.nll(x[:, :4], y[:, :4])
    second, _ = model.nll(x[:, 4:], y[:, 4:], st)
    np.testing.assert_allclose(np.hstack([first, second]), whole, atol=1e-12)


# --------------------------------------------------------------------------- overfitting


@pytest.mark.parametrize(
    "kw",
    [
        dict(cell="rnn"),
        dict(cell="gru"),
        dict(cell="lstm"),
        dict(cell="lstm", peephole=True, layers=2),
    ],
    ids=["rnn", "gru", "lstm", "lstm-peephole-2layers"],
)
def test_each_cell_overfits_a_repeated_string(kw):
    text = "hello world\n" * 40
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    kw = {"layers": 1, **kw}
    cfg = ModelConfig(vocab_size=len(chars), hidden=32, **kw)
    model = CharRNN(cfg, rng=np.random.default_rng(0))
    opt_cfg = OptimConfig(name="adam", lr=1e-2, clip_norm=5.0)
    opt = Optimizer(opt_cfg, model.params.flat.size, model.dtype)
    offsets = segment_offsets([a.size for a in model.params.arrays.values()])
    Bn, Tn = 4, 24
    L = (len(ids) - 1) // Bn
    starts = np.arange(Bn)[:, None] * L
    state = model.initial_state(Bn)
    loss = np.inf
    for step in range(400):
        k = step % ((L - 1) // Tn)
        if k == 0:
            state = model.initial_state(Bn)
        pos = starts + k * Tn + np.arange(Tn + 1)
        x, y = ids[pos[:, :-1]], ids[pos[:, 1:]]
        loss, grads, state, _ = model.loss_and_grads(x, y, state)
        clip_gradients(grads.flat, offsets, None, opt_cfg.clip_norm)
        opt.step(model.params.flat, grads.flat, opt_cfg.lr)
        if loss < 0.05:
            break
    assert loss < 0.05, f"{kw}: loss {loss:.3f} after {step + 1} steps"


# --------------------------------------------------------------------------- reused buffers


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_reused_workspace_gives_the_same_results(cell):
    """loss_and_grads reuses scratch and gradient buffers: results must not depend on history."""
    model = _model(2, cell=cell)
    x, y = _batch()
    state = np.random.default_rng(3).uniform(-0.5, 0.5, model.initial_state(B).shape)
    loss1, grads1, final1, dstate1 = model.loss_and_grads(x, y, state)
    kept = grads1.copy()
    # a call with other shapes and other data in between
    rng = np.random.default_rng(9)
    model.loss_and_grads(rng.integers(0, V, (B + 1, T + 2)), rng.integers(0, V, (B + 1, T + 2)))
    model.loss_and_grads(y, x, state)
    loss2, grads2, final2, dstate2 = model.loss_and_grads(x, y, state)
    assert grads2 is grads1  # documented: the same buffer, overwritten
    assert loss2 == loss1
    np.testing.assert_array_equal(grads2.flat, kept.flat)
    np.testing.assert_array_equal(final2, final1)
    np.testing.assert_array_equal(dstate2, dstate1)
    assert final2 is not final1 and dstate2 is not dstate1  # fresh: callers keep states
    # the public forward/backward pair (fresh buffers) agrees with loss_and_grads
    logits, final, cache = model.forward(x, state)
    N = B * T
    yt = y.T.reshape(-1)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(N), yt] -= 1.0
    grads, dstate = model.backward(probs / N, cache)
    np.testing.assert_allclose(grads.flat, kept.flat, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dstate, dstate1, rtol=0, atol=1e-12)


def test_workspace_reuses_one_buffer_for_every_shape():
    """A smaller shape gets the front of the buffer a larger one made, contiguous;
    a larger shape or another dtype gets new memory."""
    ws = cells.Workspace()
    big = ws("x", (4, 6, 5), np.float32)
    small = ws("x", (3, 6, 5), np.float32)
    assert small.shape == (3, 6, 5) and small.flags.c_contiguous
    assert np.shares_memory(small, big)
    assert ws("x", (3, 6, 5), np.float32) is small  # the same shape: the same array
    assert not np.shares_memory(ws("x", (5, 6, 5), np.float32), big)
    assert ws("x", (2, 2), np.float64).dtype == np.float64
    assert not np.shares_memory(ws("y", (3, 6, 5), np.float32), big)  # another name


def test_workspace_keeps_a_view_per_shape_until_its_buffer_grows():
    """Names mode alternates shapes step after step: each shape's view is made once; a
    larger shape replaces the buffer, and no view of the old buffer is handed out again."""
    ws = cells.Workspace()
    a = ws("x", (4, 3), np.float32)
    b = ws("x", (2, 3), np.float32)
    assert ws("x", (4, 3), np.float32) is a and ws("x", (2, 3), np.float32) is b
    grown = ws("x", (9, 3), np.float32)
    for shape in [(4, 3), (2, 3)]:
        again = ws("x", shape, np.float32)
        assert again is not a and again is not b and np.shares_memory(again, grown)
    assert ws("x", (4, 3), np.float64).dtype == np.float64  # another dtype: new memory
    assert ws("x", (2, 3), np.float64).dtype == np.float64


@pytest.mark.parametrize("shape", [(1, 1), (8, 3), (512, 128), (1000, 300), (2048, 512)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transposed_copy_is_the_transpose(shape, dtype):
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    out = np.empty(shape[::-1], dtype)
    assert cells.transposed(W, out) is out
    np.testing.assert_array_equal(out, W.T)
    top = W[: shape[0] // 2 + 1]  # a block of rows, as the GRU transposes its gates
    np.testing.assert_array_equal(cells.transposed(top, np.empty(top.shape[::-1], dtype)), top.T)


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_forward_does_not_modify_its_inputs(cell):
    """A notebook user calls a cell's forward twice on the same arrays and gets one answer."""
    model = _model(1, cell=cell, peephole=cell == "lstm")
    rng = np.random.default_rng(4)
    Tn, Bn, n_gates = 5, 3, len(GATE_ROWS[cell])
    xw = rng.uniform(-1, 1, (Tn, n_gates * H, Bn))
    state0 = rng.uniform(-0.5, 0.5, (model.cfg.state_size, H, Bn))
    lw = model.layer_weights(0)
    before = [xw.copy(), state0.copy(), lw.Waa.copy()]
    forward = cells.CELLS[cell].forward
    A1 = forward(xw, state0, lw)[0].copy()  # a fresh workspace each call
    A2 = forward(xw, state0, lw)[0]
    np.testing.assert_array_equal(A1, A2)
    for kept, now in zip(before, [xw, state0, lw.Waa], strict=True):
        np.testing.assert_array_equal(kept, now)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_saturated_gates_are_exact_and_silent(cell):
    """σ(z) = 1/(1 + e^-z) from one exp: for z far below -88, e^-z overflows float32 to inf
    and σ is exactly 0. Forward, CharRNN.step and the sampler say nothing about it (an
    overflow warning is an error here, so dropping their np.errstate fails this test)."""
    import warnings

    from charrnn.sampler import SampleOptions, Sampler
    from charrnn.tokenizer import Vocab

    cfg = ModelConfig(vocab_size=V, cell=cell, hidden=H, layers=2, dtype="float32")
    model = CharRNN(cfg, rng=np.random.default_rng(0))
    sig_rows = model.cell.sigmoid_rows(H)
    for layer in range(cfg.layers):
        model.params[f"l{layer}.b"][:sig_rows] = -1000.0  # every sigmoid gate shut
    x = np.random.default_rng(1).integers(0, V, (B, T))
    state = np.random.default_rng(2).uniform(-0.5, 0.5, model.initial_state(B).shape)
    state = state.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, final, cache = model.forward(x, state)
        _, stepped = model.step(x[:, 0], state)
        sampler = Sampler(model, Vocab.from_text("abcd\n"))
        chunks = list(sampler.stream(5, SampleOptions(), np.random.default_rng(0), chunk=2))
    for lc in cache.layers:  # the sigmoid gates of every step are exactly 0
        assert not lc.gates[:, :sig_rows].any()
    # GRU: Γu = 0 keeps c<t-1>; LSTM: Γu = Γf = 0 empties the memory cell, Γo = 0 zeroes a<t>
    expected = state if cell == "gru" else np.zeros_like(state)
    np.testing.assert_array_equal(final, expected)
    np.testing.assert_array_equal(stepped, expected)
    assert [len(chunk[0]) for chunk in chunks] == [2, 2, 1]  # chunks of the 5 characters
