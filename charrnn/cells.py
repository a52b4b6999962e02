"""The recurrent cells, each defined once: vanilla RNN, GRU and LSTM.

Every cell is one section of this file (its step and its backward) plus one
row of the registry :data:`CELLS` at the bottom, which tells the rest of
charrnn everything it needs to know: the gate blocks in order, how many of them
are sigmoid gates, the state arrays each layer carries, and the two functions.
Nothing outside this file branches on the cell's name.

Layout, chosen for the lecture's orientation and for speed on a CPU:

* Activations are column vectors as in the lectures: a<t> has shape (H, B), one
  column per sequence in the batch. Sequences are time-major: (T, H, B). A
  layer's state is (n_states, H, B): [a, c] for the LSTM, [c] for the GRU
  (where a = c), [a] for the vanilla RNN.
* The input projection ``xw[t] = Wax x<t> + b`` for all T steps is computed by
  the caller (one gather or one matrix product for the whole sequence) and
  passed in as (T, n_gates·H, B). Only the recurrent product ``Waa a<t-1>`` is
  done step by step: the lecture's ``Wa [a<t-1>, x<t>]`` is exactly
  ``Waa a<t-1> + Wax x<t>``.
* Gate blocks are stacked along rows, so each gate of one step is a contiguous
  (H, B) block: elementwise calls never see strided memory. Sigmoid gates come
  first so that one tanh call activates every gate of a step:

    LSTM rows: [Γo, Γu, Γf, c~]   GRU rows: [Γr, Γu, c~]   RNN rows: [a]

* σ(z) = 1/(1 + e^-z), the lecture's form, with one exp per step: the sigmoid
  rows of the weights and of ``xw`` arrive negated (:func:`negate_sigmoid_rows`,
  the one place that negates them), so the step's product and add give -z and
  :func:`sigmoid_of_negated` needs no extra call to flip the sign. (On this
  project's machine NumPy's float32 exp runs about twice as fast as its tanh,
  so exp, +1 and a reciprocal beat the former 0.5·tanh(z/2) + 0.5.)

``<cell>_step`` advances one step in place on buffers it is given: it is the
body of the forward loop (:meth:`Cell.forward`, the same for every cell) and
the step of sampling. ``Cell.forward`` reads ``xw`` (never writes it) and
returns ``(A, cache)``; ``<cell>_backward(dA, cache)`` returns
``(dZ, d_state0, grads)``, where ``dZ``
is the gradient with respect to the pre-activations with time and batch
flattened into columns, (n_gates·H, T·B), column t·B + b, which the caller turns
into ``dWax``, ``db`` and the gradient of the input with single large matrix
products. The cache's ``a_cols`` holds a<0>..a<T> the same way, (H, (T+1)·B),
for the same reason.

The products of one step (forward and backward) are ``np.dot`` into a contiguous
buffer: the same BLAS call as ``np.matmul`` with the same result, about 0.5 µs
cheaper to call, which is 2-3% of a one-stream character per product.

Every function takes an optional :class:`Workspace`: with the model's
long-lived one the hot path allocates nothing, and the returned arrays (A, dZ,
the caches) are overwritten by the next call with the same workspace.

Pure NumPy: no I/O, no global randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

Array = np.ndarray


class Workspace:
    """Scratch arrays by name, reused by every later call.

    Each name keeps one flat buffer and hands out its first ``prod(shape)`` entries
    as a contiguous array of the shape asked for: a call with a smaller shape reuses
    the buffer, a larger one replaces it. So one workspace serves batches of every
    shape (names mode pads each batch to its own longest line) and the hot path
    allocates nothing once the largest shape has been seen (fresh large arrays cost
    page faults and cold caches on every call). A throwaway ``Workspace()`` gives
    ordinary allocate-per-call behaviour.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}  # name -> flat buffer
        # (name, shape) -> the view of name's buffer handed out for that shape: names mode
        # asks for a new T almost every step, and a view made once is cheaper than a reshape
        self._views: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        self._children: dict[str, Workspace] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised array called ``name``: the memory of the last call if it fits."""
        view = self._views.get((name, shape))
        if view is not None and view.dtype == dtype:
            return view
        n = math.prod(shape)
        buf = self._bufs.get(name)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(n, dtype=dtype)
            for key in [k for k in self._views if k[0] == name]:  # views of the old buffer
                del self._views[key]
        view = self._views[(name, shape)] = buf[:n].reshape(shape)
        return view

    def child(self, name: str) -> Workspace:
        """A separate namespace (one per layer)."""
        ws = self._children.get(name)
        if ws is None:
            ws = self._children[name] = Workspace()
        return ws


def feature_major(X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(T, K, B) -> (K, T·B) copy, column t·B + b = X[t, :, b].

    Sums over time and batch then become one large matrix product, which runs
    near the machine's peak where T small ones do not.
    """
    T, K, B = X.shape
    if out is None:
        out = np.empty((K, T * B), dtype=X.dtype)
    np.concatenate(X, axis=1, out=out)  # T blocks (K, B) side by side: ~40% faster than copyto
    return out


_BLOCK_BYTES = 32 * 1024  # a typical L1 data cache of one core (this project's machine's)


def transposed(W: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Wᵀ as a contiguous copy in ``out``: what a backward product multiplies by.

    A product from a contiguous copy runs faster than from a transposed view, but
    ``np.copyto(out, W.T)`` reads W a column at a time and misses the cache on every
    element: 4.6 ms for a (2048, 512) float32 matrix. Copying blocks of W's rows
    that fit the L1 cache takes 0.9 ms there, and 39 against 82 µs at (512, 128).
    """
    rows = max(1, _BLOCK_BYTES // max(1, W.shape[1] * W.itemsize))
    for i in range(0, W.shape[0], rows):
        np.copyto(out[:, i : i + rows], W[i : i + rows].T)
    return out


# --------------------------------------------------------------------------- σ from one exp


def negate_sigmoid_rows(W: np.ndarray, rows: int, out: np.ndarray | None = None) -> np.ndarray:
    """W with its first ``rows`` rows negated (into ``out``, which may be W).

    Pre-activations of sigmoid gates must arrive negated at :func:`sigmoid_of_negated`;
    every weight, bias or projection that feeds them goes through here, and
    nothing else negates anything.
    """
    if out is None:
        out = W.copy()
    elif out is not W:
        np.copyto(out, W)
    np.negative(out[:rows], out=out[:rows])
    return out


# 1 as a 0-d array of each float type: an in-place op with a Python number converts it on
# every call (1.0 µs against 0.55 on a (384, 1) block, which is what one-stream sampling sees)
_ONE = {np.dtype(t): np.array(1, dtype=t) for t in (np.float32, np.float64)}


def sigmoid_of_negated(s: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^-z) in place, on a block that holds -z (negated rows, see above).

    A very negative z makes e^-z overflow to inf and σ exactly 0, as it should: callers
    run the step loop inside ``np.errstate(over="ignore")`` (one per loop, since entering
    it costs as much as a small call). In float32 over z in [-30, 30] the result is within
    8.9e-8 (absolute) and 2.3e-7 (relative) of σ in float64; the former 0.5·tanh(z/2) + 0.5
    was within 6.0e-8 absolute but cancelled to 0 in the far negative tail (relative 13).
    """
    np.exp(s, out=s)  # e^-z
    one = _ONE.get(s.dtype, 1)
    s += one
    return np.divide(one, s, out=s)  # (a divide by a 0-d one beats np.reciprocal here)


class LayerWeights(NamedTuple):
    """One layer's recurrent parameters and options, as the model stores them."""

    Waa: np.ndarray  # (n_gates·H, H) recurrent weights, gate blocks stacked along rows
    p: np.ndarray | None = None  # (3, H) LSTM peepholes for [Γo, Γu, Γf], or None
    activation: str = "tanh"  # vanilla RNN: "tanh" or "relu"


class StepWeights(NamedTuple):
    """The same, ready for a step function: sigmoid rows negated."""

    Wh: np.ndarray  # (n_gates·H, H) Waa with the sigmoid rows negated
    ph: np.ndarray | None  # (3, H, 1) peepholes negated, or None
    activation: str


def step_weights(lw: LayerWeights, sigmoid_rows: int, ws: Workspace | None = None) -> StepWeights:
    """Negate what feeds the sigmoid gates, once per forward pass (or once for sampling)."""
    Wh = negate_sigmoid_rows(
        lw.Waa, sigmoid_rows, None if ws is None else ws("Wh", lw.Waa.shape, lw.Waa.dtype)
    )
    ph = None if lw.p is None else negate_sigmoid_rows(lw.p, len(lw.p))[:, :, None]
    return StepWeights(Wh, ph, lw.activation)


# --------------------------------------------------------------------------- a cell


class CellCache(NamedTuple):
    """What a cell's forward pass keeps for its backward pass (in workspace buffers)."""

    gates: np.ndarray  # (T, n_gates·H, B) the activated gates of every step
    states: np.ndarray  # (T+1, n_states, H, B) the state at t = 0..T; states[0] is the initial
    keep: np.ndarray  # (T, H, B) what the step kept: LSTM tanh(c<t>), GRU Γr * c<t-1>
    a_cols: np.ndarray  # (H, (T+1)·B) a<0>..a<T>, time and batch flattened into columns
    lw: LayerWeights


@dataclass(frozen=True)
class Cell:
    """Everything the rest of charrnn knows about a cell: one row of :data:`CELLS`."""

    name: str
    gates: tuple[str, ...]  # row blocks of Wax, Waa and b, top to bottom, as in the lectures
    sigmoid_gates: int  # the first this many blocks are sigmoid gates (fed negated)
    states: tuple[str, ...]  # state arrays of one layer, in the order of state[layer]
    peephole: bool  # accepts peephole connections (LayerWeights.p)
    step: Callable[..., None]  # (xw, prev, new, StepWeights, g, keep, work), in place
    backward: Callable[..., tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]
    # the step reads prev only as the operand of its one product Waa a<t-1>, so a caller
    # may pass prev = [x<t>; a<t-1>] and Wh = [Wax | Waa] (and xw = b): one product
    stacks_input: bool = False

    def sigmoid_rows(self, H: int) -> int:
        """Rows of Wax, Waa and b (and of xw) that feed sigmoid gates."""
        return self.sigmoid_gates * H

    def step_weights(self, lw: LayerWeights, ws: Workspace | None = None) -> StepWeights:
        return step_weights(lw, self.sigmoid_rows(lw.Waa.shape[1]), ws)

    def forward(
        self, xw: np.ndarray, state0: np.ndarray, lw: LayerWeights, ws: Workspace | None = None
    ) -> tuple[np.ndarray, CellCache]:
        """The cell over T steps: its step function in a loop, each step writing the next state.

        xw: (T, n_gates·H, B) Wax x<t> + b for every step, sigmoid rows negated (read
        only); state0: (n_states, H, B). Returns A = a<1>..a<T> (T, H, B) and the
        cache; cache.states[-1] is the final state.
        """
        ws = Workspace() if ws is None else ws
        T, GH, B = xw.shape
        H = state0.shape[1]
        dt = xw.dtype
        w = self.step_weights(lw, ws)
        gates = ws("gates", (T, GH, B), dt)
        states = ws("states", (T + 1, *state0.shape), dt)
        keep = ws("keep", (T, H, B), dt)
        work = ws("work", (GH, B), dt)
        states[0] = state0
        step = self.step
        # iterating arrays yields their (.., H, B) slices at C speed: cheaper than indexing
        steps = zip(xw, states[:-1], states[1:], gates, keep, strict=True)
        with np.errstate(over="ignore"):  # e^-z = inf is exact: σ(z) = 0 (sigmoid_of_negated)
            for xw_t, prev, new, g, kept in steps:
                step(xw_t, prev, new, w, g, kept, work)
        a_cols = feature_major(states[:, 0], ws("a_cols", (H, (T + 1) * B), dt))
        return states[1:, 0], CellCache(gates, states, keep, a_cols, lw)


# --------------------------------------------------------------------------- vanilla RNN


def rnn_step(
    xw: Array, prev: Array, new: Array, w: StepWeights, g: Array, keep: Array, work: Array
) -> None:
    """One step of the vanilla RNN, in place:

    a<t> = g(Waa a<t-1> + Wax x<t> + ba),   g = tanh or relu

    xw   (H, B)     Wax x<t> + ba (read only)
    prev (1, H, B)  [a<t-1>];  new (1, H, B) out: [a<t>], may be ``prev`` itself
    g    (H, B)     out: the pre-activation z<t>   (keep, work: unused)
    """
    np.dot(w.Wh, prev[0], out=g)  # Waa a<t-1>
    g += xw  # z<t> = Waa a<t-1> + Wax x<t> + ba
    if w.activation == "tanh":
        np.tanh(g, out=new[0])  # a<t> = tanh(z<t>)
    else:
        np.maximum(g, 0, out=new[0])  # a<t> = relu(z<t>)


def rnn_backward(
    dA: np.ndarray, cache: CellCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """dA: (T, H, B) loss gradient w.r.t. each a<t> from above.

    Returns (dZ (H, T·B), d_state0 (1, H, B), {"Waa"}); ∂L/∂Waa goes into ``dWaa`` if given.
    """
    ws = Workspace() if ws is None else ws
    _, states, _, a_cols, lw = cache
    T, H, B = dA.shape
    dt = dA.dtype
    A = states[1:, 0]  # (T, H, B) a<1>..a<T>
    dz_per_da = ws("dz_per_da", (T, H, B), dt)  # g'(z<t>), written with a<t>
    if lw.activation == "tanh":
        np.multiply(A, A, out=dz_per_da)
        np.subtract(1, dz_per_da, out=dz_per_da)  # tanh'(z) = 1 - a²
    else:
        np.sign(A, out=dz_per_da)  # relu'(z): a >= 0, so sign(a) is 0 or 1
    WaaT = transposed(lw.Waa, ws("WaaT", (H, H), dt))
    dZ = ws("dZ", (T, H, B), dt)
    d_state0 = ws("d_state0", (1, H, B), dt)
    da_next = d_state0[0]  # ∂L/∂a<t> through step t+1; after the loop, ∂L/∂a<0>
    da_next.fill(0)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], da_next, out=dz)  # ∂L/∂a<t>
        dz *= dz_per_da[t]  # ∂L/∂z<t>
        np.dot(WaaT, dz, out=da_next)  # into a<t-1>
    dZ_cols = feature_major(dZ, ws("dZ_cols", (H, T * B), dt))
    dWaa = np.matmul(dZ_cols, a_cols[:, : T * B].T, out=dWaa)  # Σ_t dz<t> a<t-1>ᵀ
    return dZ_cols, d_state0, {"Waa": dWaa}


# --------------------------------------------------------------------------- GRU


def gru_step(
    xw: Array, prev: Array, new: Array, w: StepWeights, g: Array, keep: Array, work: Array
) -> None:
    """One step of the lecture's full GRU, in place (a<t> = c<t>):

    Γr = σ(Wr [c<t-1>, x<t>] + br)       relevance
    Γu = σ(Wu [c<t-1>, x<t>] + bu)       update
    c~<t> = tanh(Wc [Γr * c<t-1>, x<t>] + bc)
    c<t> = Γu * c~<t> + (1 - Γu) * c<t-1>

    xw   (3H, B)    Wax x<t> + b, sigmoid rows negated (read only)
    prev (1, H, B)  [c<t-1>];  new (1, H, B) out: [c<t>], may be ``prev`` itself
    g    (3H, B)    out: the gates [Γr, Γu, c~<t>]
    keep (H, B)     out: Γr * c<t-1>, for backward
    work (≥H, B)    scratch
    """
    H = keep.shape[0]
    c_prev, c = prev[0], new[0]
    gs = g[: 2 * H]
    np.dot(w.Wh[: 2 * H], c_prev, out=gs)  # Wr c<t-1>, Wu c<t-1> (negated)
    gs += xw[: 2 * H]
    sigmoid_of_negated(gs)  # Γr = σ(Wr [c<t-1>, x<t>] + br), Γu likewise
    gr, gu, c_tilde = g[:H], g[H : 2 * H], g[2 * H :]
    np.multiply(gr, c_prev, out=keep)  # Γr * c<t-1>
    np.dot(w.Wh[2 * H :], keep, out=c_tilde)  # Wc [Γr * c<t-1>]
    c_tilde += xw[2 * H :]
    np.tanh(c_tilde, out=c_tilde)  # c~<t> = tanh(Wc [Γr * c<t-1>, x<t>] + bc)
    step = work[:H]
    np.subtract(c_tilde, c_prev, out=step)
    step *= gu
    np.add(c_prev, step, out=c)  # c<t> = Γu * c~<t> + (1 - Γu) * c<t-1>


def gru_backward(
    dA: np.ndarray, cache: CellCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """dA: (T, H, B). Returns (dZ (3H, T·B), d_state0 (1, H, B), {"Waa"}).

    ∂L/∂Waa goes into ``dWaa`` if given.
    """
    ws = Workspace() if ws is None else ws
    gates, states, gr_c, a_cols, lw = cache
    T, H, B = dA.shape
    dt = dA.dtype
    gr, gu, c_tilde = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
    c_prev = states[:-1, 0]  # (T, H, B) c<t-1>
    # every factor that does not depend on the recurrence, for all T at once
    dz_per_dc = ws("dz_per_dc", (T, 2, H, B), dt)  # [∂z_u, ∂z_c~] per unit of ∂L/∂c<t>
    dzu, dzc = dz_per_dc[:, 0], dz_per_dc[:, 1]
    passed = ws("passed", (T, 2, H, B), dt)  # [1 - Γu, Γr]: what passes straight to c<t-1>
    one_minus_gu = passed[:, 0]
    np.subtract(1, gu, out=one_minus_gu)
    passed[:, 1] = gr
    np.subtract(c_tilde, c_prev, out=dzu)
    dzu *= gu
    dzu *= one_minus_gu  # ∂c/∂Γu · σ' = (c~ - c<t-1>) Γu (1 - Γu)
    np.multiply(c_tilde, c_tilde, out=dzc)
    np.subtract(1, dzc, out=dzc)
    dzc *= gu  # ∂c/∂c~ · tanh' = Γu (1 - c~²)
    dzr_per_drc = ws("dzr_per_drc", (T, H, B), dt)  # ∂z_r per unit of ∂L/∂(Γr * c<t-1>)
    np.subtract(1, gr, out=dzr_per_drc)
    dzr_per_drc *= gr
    dzr_per_drc *= c_prev  # c<t-1> σ'
    Wru_T = transposed(lw.Waa[: 2 * H], ws("Wru_T", (H, 2 * H), dt))
    Wc_T = transposed(lw.Waa[2 * H :], ws("Wc_T", (H, H), dt))

    dZ = ws("dZ", (T, 3 * H, B), dt)
    d_state0 = ws("d_state0", (1, H, B), dt)
    dc_next = d_state0[0]  # ∂L/∂c<t> through step t+1; after the loop, ∂L/∂c<0>
    dc_next.fill(0)
    dc_drc = ws("dc_drc", (2, H, B), dt)  # [∂L/∂c<t>, ∂L/∂(Γr * c<t-1>)]
    dc, drc = dc_drc[0], dc_drc[1]
    through = ws("through", (2, H, B), dt)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], dc_next, out=dc)  # ∂L/∂c<t>
        np.multiply(dc, dz_per_dc[t], out=dz[H:].reshape(2, H, B))  # ∂L/∂z_u, ∂L/∂z_c~
        np.dot(Wc_T, dz[2 * H :], out=drc)  # ∂L/∂(Γr * c<t-1>)
        np.multiply(drc, dzr_per_drc[t], out=dz[:H])  # ∂L/∂z_r
        np.dot(Wru_T, dz[: 2 * H], out=dc_next)  # into c<t-1> through Γr's and Γu's product
        np.multiply(dc_drc, passed[t], out=through)
        dc_next += through[0]  # through (1 - Γu) * c<t-1>
        dc_next += through[1]  # through Γr * c<t-1>
    dZ_cols = feature_major(dZ, ws("dZ_cols", (3 * H, T * B), dt))
    gr_c_cols = feature_major(gr_c, ws("gr_c_cols", (H, T * B), dt))
    if dWaa is None:
        dWaa = np.empty_like(lw.Waa)
    np.matmul(dZ_cols[: 2 * H], a_cols[:, : T * B].T, out=dWaa[: 2 * H])  # Σ_t dz_{r,u} c<t-1>ᵀ
    np.matmul(dZ_cols[2 * H :], gr_c_cols.T, out=dWaa[2 * H :])  # Σ_t dz_c~ (Γr * c<t-1>)ᵀ
    return dZ_cols, d_state0, {"Waa": dWaa}


# --------------------------------------------------------------------------- LSTM


def lstm_step(
    xw: Array, prev: Array, new: Array, w: StepWeights, g: Array, keep: Array, work: Array
) -> None:
    """One step of the lecture's LSTM, in place:

    c~<t> = tanh(Wc [a<t-1>, x<t>] + bc)
    Γu, Γf, Γo = σ(W· [a<t-1>, x<t>] + b·)        (+ p· * c<t-1> with peepholes)
    c<t> = Γu * c~<t> + Γf * c<t-1>
    a<t> = Γo * tanh(c<t>)

    xw   (4H, B)    Wax x<t> + b, sigmoid rows negated (read only)
    prev (2, H, B)  [a<t-1>, c<t-1>];  new (2, H, B) out: [a<t>, c<t>], may be ``prev`` itself
    g    (4H, B)    out: the gates [Γo, Γu, Γf, c~<t>]
    keep (H, B)     out: tanh(c<t>), for backward
    work (≥3H, B)   scratch
    """
    H = keep.shape[0]
    a_prev, c_prev = prev[0], prev[1]
    a, c = new[0], new[1]
    np.dot(w.Wh, a_prev, out=g)  # Waa a<t-1>
    g += xw  # z = Wa [a<t-1>, x<t>] + b
    if w.ph is not None:  # peepholes: Γo, Γu, Γf also see c<t-1>
        peep = work[: 3 * H]
        np.multiply(w.ph, c_prev, out=peep.reshape(3, H, -1))
        g[: 3 * H] += peep
    go, gu, gf, c_tilde = g[:H], g[H : 2 * H], g[2 * H : 3 * H], g[3 * H :]
    sigmoid_of_negated(g[: 3 * H])  # Γo, Γu, Γf = σ(z·)
    np.tanh(c_tilde, out=c_tilde)  # c~<t> = tanh(z_c)
    gf_c = work[:H]
    np.multiply(gf, c_prev, out=gf_c)  # Γf * c<t-1>
    np.multiply(gu, c_tilde, out=c)  # Γu * c~<t>
    c += gf_c  # c<t> = Γu * c~<t> + Γf * c<t-1>
    np.tanh(c, out=keep)
    np.multiply(go, keep, out=a)  # a<t> = Γo * tanh(c<t>)


def lstm_backward(
    dA: np.ndarray, cache: CellCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """dA: (T, H, B). Returns (dZ (4H, T·B), d_state0 (2, H, B), {"Waa", and "p" with
    peepholes}); ∂L/∂Waa goes into ``dWaa`` if given.
    """
    ws = Workspace() if ws is None else ws
    gates, states, tanh_c, a_cols, lw = cache
    T, H, B = dA.shape
    dt = dA.dtype
    # every factor that does not depend on the recurrence, for all T at once
    sig = gates[:, : 3 * H]  # (T, 3H, B) Γo, Γu, Γf
    dsig = ws("dsig", (T, 3 * H, B), dt)
    np.subtract(1, sig, out=dsig)
    dsig *= sig  # σ'(z) = σ(1-σ)
    go, gu, gf, c_tilde = (
        gates[:, :H],
        gates[:, H : 2 * H],
        gates[:, 2 * H : 3 * H],
        gates[:, 3 * H :],
    )
    c_prev = states[:-1, 1]  # (T, H, B) c<t-1>
    dzo_per_da = ws("dzo_per_da", (T, H, B), dt)
    np.multiply(tanh_c, dsig[:, :H], out=dzo_per_da)  # ∂z_o = ∂a · tanh(c) · σ'
    dc_per_da = ws("dc_per_da", (T, H, B), dt)
    np.multiply(tanh_c, tanh_c, out=dc_per_da)
    np.subtract(1, dc_per_da, out=dc_per_da)
    dc_per_da *= go  # ∂c += ∂a · Γo · tanh'(c)
    dz_per_dc = ws("dz_per_dc", (T, 3, H, B), dt)  # [∂z_u, ∂z_f, ∂z_c~] per unit of ∂L/∂c<t>
    np.multiply(c_tilde, dsig[:, H : 2 * H], out=dz_per_dc[:, 0])  # ∂c/∂Γu · σ'
    np.multiply(c_prev, dsig[:, 2 * H :], out=dz_per_dc[:, 1])  # ∂c/∂Γf · σ'
    dzc = dz_per_dc[:, 2]
    np.multiply(c_tilde, c_tilde, out=dzc)
    np.subtract(1, dzc, out=dzc)
    dzc *= gu  # ∂c/∂c~ · tanh'
    WaaT = transposed(lw.Waa, ws("WaaT", (H, 4 * H), dt))
    p3 = None if lw.p is None else lw.p[:, :, None]  # (3, H, 1)

    dZ = ws("dZ", (T, 4 * H, B), dt)
    d_state0 = ws("d_state0", (2, H, B), dt)
    da_next, dc_next = d_state0[0], d_state0[1]  # ∂L/∂a<t>, ∂L/∂c<t> through step t+1
    d_state0.fill(0)
    da = ws("da", (H, B), dt)
    dc = ws("dc", (H, B), dt)
    peep = ws("peep", (3, H, B), dt)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], da_next, out=da)  # ∂L/∂a<t>
        np.multiply(da, dzo_per_da[t], out=dz[:H])  # ∂L/∂z_o
        np.multiply(da, dc_per_da[t], out=dc)
        dc += dc_next  # (H, B) ∂L/∂c<t>
        np.multiply(dc, dz_per_dc[t], out=dz[H:].reshape(3, H, B))  # ∂L/∂z_u, z_f, z_c~
        np.multiply(dc, gf[t], out=dc_next)  # into c<t-1> through Γf * c<t-1>
        if p3 is not None:  # and through the peepholes
            np.multiply(p3, dz[: 3 * H].reshape(3, H, B), out=peep)
            dc_next += peep[0]
            dc_next += peep[1]
            dc_next += peep[2]
        np.dot(WaaT, dz, out=da_next)  # into a<t-1>
    grads = {}
    if p3 is not None:  # dp_k = Σ_t,b dz_k * c<t-1>
        grads["p"] = np.einsum("tkhb,thb->kh", dZ[:, : 3 * H].reshape(T, 3, H, B), c_prev)
    dZ_cols = feature_major(dZ, ws("dZ_cols", (4 * H, T * B), dt))
    grads["Waa"] = np.matmul(dZ_cols, a_cols[:, : T * B].T, out=dWaa)  # Σ_t dz<t> a<t-1>ᵀ
    return dZ_cols, d_state0, grads


# --------------------------------------------------------------------------- the registry


RNN = Cell("rnn", ("a",), 0, ("a",), False, rnn_step, rnn_backward, stacks_input=True)
GRU = Cell("gru", ("r", "u", "c"), 2, ("c",), False, gru_step, gru_backward)
LSTM = Cell("lstm", ("o", "u", "f", "c"), 3, ("a", "c"), True, lstm_step, lstm_backward)

CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNN, GRU, LSTM)}
