"""One recurrent layer over T time steps: vanilla RNN, GRU and LSTM, forward and backward.

Layout, chosen for the lecture's orientation and for speed on a CPU:

* Activations are column vectors as in the lectures: a<t> has shape (H, B), one
  column per sequence in the batch. Sequences are time-major: (T, H, B).
* The input projection ``xw[t] = Wax x<t> + b`` for all T steps is computed by
  the caller (one gather or one matrix product for the whole sequence) and
  passed in as (T, G*H, B), G = number of gate blocks. Only the recurrent
  product ``Waa a<t-1>`` is done step by step. The lecture's
  ``Wa [a<t-1>, x<t>]`` is exactly ``Waa a<t-1> + Wax x<t>``.
* Gate blocks are stacked along rows, so each gate of one step is a contiguous
  (H, B) block: elementwise calls never see strided memory. Sigmoid gates come
  first so that one call activates all of them; the blocks that backward scales
  by dc<t> are adjacent so that one call serves them too:

    LSTM rows: [Γo, Γu, Γf, c~]   GRU rows: [Γr, Γu, c~]   RNN rows: [a]

* σ(z) = 0.5·tanh(z/2) + 0.5: the sigmoid rows of the weights and of ``xw`` are
  pre-halved so that a single tanh call activates every gate of a step.

``*_forward`` overwrites ``xw`` with the activated gates and returns
``(A, cache)``; ``*_backward(dA, cache)`` returns ``(dZ, d_state0, grads)``,
where ``dZ`` is the gradient with respect to the pre-activations (T, G*H, B),
which the caller turns into ``dWax``, ``db`` and the gradient of the input.

Pure NumPy: no I/O, no global randomness.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks per cell: rows of Wax/Waa are GATES*H


def outer_sum(dZ: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Σ_t dZ[t] @ X[t].T as one matrix product over all T·B columns.

    dZ: (T, G, B), X: (T, K, B) -> (G, K). Both are copied to feature-major
    (G, T·B) first: one large product runs near the machine's peak, T small ones
    do not.
    """
    T, G, B = dZ.shape
    dZf = dZ.transpose(1, 0, 2).reshape(G, T * B)  # (G, T*B) copy
    Xf = X.transpose(1, 0, 2).reshape(X.shape[1], T * B)  # (K, T*B) copy
    return dZf @ Xf.T  # (G, K)


# --------------------------------------------------------------------------- vanilla RNN


class RNNCache(NamedTuple):
    hs: np.ndarray  # (T+1, H, B) a<0-1>..a<T-1>: hs[0] is the initial state
    Waa: np.ndarray  # (H, H)
    activation: str


def rnn_forward(
    xw: np.ndarray, a0: np.ndarray, Waa: np.ndarray, activation: str = "tanh"
) -> tuple[np.ndarray, RNNCache]:
    """a<t> = g(Waa a<t-1> + Wax x<t> + ba), g = tanh or relu.

    xw: (T, H, B) input projections with bias; a0: (H, B). Returns A (T, H, B).
    """
    T, H, B = xw.shape
    hs = np.empty((T + 1, H, B), dtype=xw.dtype)
    hs[0] = a0
    for t in range(T):
        a = hs[t + 1]
        np.matmul(Waa, hs[t], out=a)  # (H, B) recurrent product
        a += xw[t]
        if activation == "tanh":
            np.tanh(a, out=a)
        else:
            np.maximum(a, 0, out=a)
    return hs[1:], RNNCache(hs, Waa, activation)


def rnn_backward(dA: np.ndarray, cache: RNNCache):
    """dA: (T, H, B) loss gradient w.r.t. each a<t> from above. Returns (dZ, da0, {"Waa"})."""
    hs, Waa, activation = cache
    T, H, B = dA.shape
    A = hs[1:]
    if activation == "tanh":
        D = 1 - A * A  # (T, H, B) tanh'(z) = 1 - a²
    else:
        D = (A > 0).astype(A.dtype)  # relu'(z)
    WaaT = np.ascontiguousarray(Waa.T)  # a contiguous copy beats a transposed view in matmul
    dZ = np.empty_like(dA)
    dnext = np.zeros((H, B), dtype=dA.dtype)  # gradient flowing into a<t> from step t+1
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], dnext, out=dz)
        dz *= D[t]
        np.matmul(WaaT, dz, out=dnext)
    return dZ, dnext, {"Waa": outer_sum(dZ, hs[:-1])}


def rnn_step(xw: np.ndarray, a: np.ndarray, Waa: np.ndarray, activation: str = "tanh"):
    """One generation step. xw: (H, B) projection of x<t> with bias; a: (H, B) -> a<t>."""
    z = Waa @ a + xw
    return np.tanh(z) if activation == "tanh" else np.maximum(z, 0)


# --------------------------------------------------------------------------- LSTM


class LSTMCache(NamedTuple):
    G: np.ndarray  # (T, 4H, B) activated gates, rows [Γo, Γu, Γf, c~]
    hs: np.ndarray  # (T+1, H, B) a<t-1>, hs[0] = a0
    cs: np.ndarray  # (T+1, H, B) c<t-1>, cs[0] = c0
    tcs: np.ndarray  # (T, H, B) tanh(c<t>)
    Waa: np.ndarray  # (4H, H)
    p: np.ndarray | None  # (3, H) peepholes for [Γo, Γu, Γf], or None


def lstm_forward(
    xw: np.ndarray, a0: np.ndarray, c0: np.ndarray, Waa: np.ndarray, p: np.ndarray | None = None
) -> tuple[np.ndarray, LSTMCache]:
    """The lecture's LSTM over T steps (xw is overwritten with the gate activations).

    c~<t> = tanh(Wc [a<t-1>, x<t>] + bc)
    Γu, Γf, Γo = σ(W· [a<t-1>, x<t>] + b·)        (+ p· * c<t-1> with peepholes)
    c<t> = Γu * c~<t> + Γf * c<t-1>
    a<t> = Γo * tanh(c<t>)

    xw: (T, 4H, B); a0, c0: (H, B); Waa: (4H, H); p: (3, H) or None.
    """
    T, G4, B = xw.shape
    H = G4 // 4
    S = 3 * H  # sigmoid rows
    dt = xw.dtype
    Wh = Waa.copy()
    Wh[:S] *= 0.5  # σ(z) = 0.5·tanh(z/2) + 0.5: halve sigmoid rows once per sequence
    xw[:, :S] *= 0.5
    ph = None if p is None else (0.5 * p)[:, :, None]  # (3, H, 1)
    hs = np.empty((T + 1, H, B), dtype=dt)
    cs = np.empty((T + 1, H, B), dtype=dt)
    tcs = np.empty((T, H, B), dtype=dt)
    hs[0] = a0
    cs[0] = c0
    rec = np.empty((G4, B), dtype=dt)  # recurrent product of one step
    tmp = np.empty((H, B), dtype=dt)
    ptmp = None if p is None else np.empty((3, H, B), dtype=dt)
    for t in range(T):
        g = xw[t]  # (4H, B) pre-activations, then gates
        np.matmul(Wh, hs[t], out=rec)
        g += rec
        if ph is not None:
            np.multiply(ph, cs[t], out=ptmp)  # (3, H, B) peepholes see c<t-1>
            g[:S] += ptmp.reshape(S, B)
        np.tanh(g, out=g)
        s = g[:S]
        s *= 0.5
        s += 0.5  # now Γo, Γu, Γf = σ(z)
        go, gu, gf, gc = g[:H], g[H : 2 * H], g[2 * H : S], g[S:]
        c = cs[t + 1]
        np.multiply(gu, gc, out=c)  # Γu * c~<t>
        np.multiply(gf, cs[t], out=tmp)  # Γf * c<t-1>
        c += tmp
        np.tanh(c, out=tcs[t])
        np.multiply(go, tcs[t], out=hs[t + 1])  # a<t> = Γo * tanh(c<t>)
    return hs[1:], LSTMCache(xw, hs, cs, tcs, Waa, p)


def lstm_backward(dA: np.ndarray, cache: LSTMCache):
    """dA: (T, H, B). Returns (dZ (T, 4H, B), (da0, dc0), {"Waa", and "p" with peepholes})."""
    G, hs, cs, tcs, Waa, p = cache
    T, H, B = dA.shape
    S = 3 * H
    dt = dA.dtype
    # every factor that does not depend on the recurrence, for all T at once
    sig = G[:, :S]  # (T, 3H, B) Γo, Γu, Γf
    dsig = sig * (1 - sig)  # σ'(z) = σ(1-σ)
    go, gu, gf, gc = G[:, :H], G[:, H : 2 * H], G[:, 2 * H : S], G[:, S:]
    cprev = cs[:-1]  # (T, H, B) c<t-1>
    Fo = tcs * dsig[:, :H]  # dz_o = da * tanh(c) * σ'
    K1 = go * (1 - tcs * tcs)  # dc += da * Γo * tanh'(c)
    Fufc = np.empty((T, 3, H, B), dtype=dt)  # dz_{u,f,c~} = dc * F
    np.multiply(gc, dsig[:, H : 2 * H], out=Fufc[:, 0])  # ∂c/∂Γu · σ'
    np.multiply(cprev, dsig[:, 2 * H : S], out=Fufc[:, 1])  # ∂c/∂Γf · σ'
    np.multiply(gu, 1 - gc * gc, out=Fufc[:, 2])  # ∂c/∂c~ · tanh'
    WaaT = np.ascontiguousarray(Waa.T)  # (H, 4H)
    p3 = None if p is None else p[:, :, None]  # (3, H, 1)

    dZ = np.empty((T, 4 * H, B), dtype=dt)
    da_next = np.zeros((H, B), dtype=dt)  # ∂L/∂a<t> through step t+1
    dc_next = np.zeros((H, B), dtype=dt)  # ∂L/∂c<t> through step t+1
    da = np.empty((H, B), dtype=dt)
    dc = np.empty((H, B), dtype=dt)
    ptmp = None if p is None else np.empty((3, H, B), dtype=dt)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], da_next, out=da)
        np.multiply(da, Fo[t], out=dz[:H])
        np.multiply(da, K1[t], out=dc)
        dc += dc_next  # (H, B) ∂L/∂c<t>
        np.multiply(dc, Fufc[t], out=dz[H:].reshape(3, H, B))
        np.multiply(dc, gf[t], out=dc_next)  # into c<t-1>
        if p3 is not None:
            np.multiply(p3, dz[:S].reshape(3, H, B), out=ptmp)
            dc_next += ptmp[0]
            dc_next += ptmp[1]
            dc_next += ptmp[2]
        np.matmul(WaaT, dz, out=da_next)  # into a<t-1>
    grads = {"Waa": outer_sum(dZ, hs[:-1])}
    if p is not None:
        # dp_k = Σ_t,b dz_k * c<t-1>
        grads["p"] = np.einsum("tkhb,thb->kh", dZ[:, :S].reshape(T, 3, H, B), cprev)
    return dZ, (da_next, dc_next), grads


def lstm_step(xw: np.ndarray, a: np.ndarray, c: np.ndarray, Waa: np.ndarray, p=None):
    """One generation step. xw: (4H, B) projection of x<t> with bias. Returns (a<t>, c<t>)."""
    H = a.shape[0]
    z = Waa @ a + xw  # (4H, B)
    if p is not None:
        z[: 3 * H] += (p[:, :, None] * c).reshape(3 * H, -1)
    s = 0.5 * np.tanh(0.5 * z[: 3 * H]) + 0.5
    go, gu, gf = s[:H], s[H : 2 * H], s[2 * H :]
    c = gu * np.tanh(z[3 * H :]) + gf * c
    return go * np.tanh(c), c


# --------------------------------------------------------------------------- GRU


class GRUCache(NamedTuple):
    G: np.ndarray  # (T, 3H, B) activated gates, rows [Γr, Γu, c~]
    cs: np.ndarray  # (T+1, H, B) c<t-1>, cs[0] = c0
    rcs: np.ndarray  # (T, H, B) Γr * c<t-1>
    Waa: np.ndarray  # (3H, H)


def gru_forward(xw: np.ndarray, c0: np.ndarray, Waa: np.ndarray) -> tuple[np.ndarray, GRUCache]:
    """The lecture's full GRU over T steps (xw is overwritten with the gate activations).

    Γr = σ(Wr [c<t-1>, x<t>] + br)       relevance
    Γu = σ(Wu [c<t-1>, x<t>] + bu)       update
    c~<t> = tanh(Wc [Γr * c<t-1>, x<t>] + bc)
    c<t> = Γu * c~<t> + (1 - Γu) * c<t-1>,   a<t> = c<t>

    xw: (T, 3H, B); c0: (H, B); Waa: (3H, H).
    """
    T, G3, B = xw.shape
    H = G3 // 3
    S = 2 * H
    dt = xw.dtype
    Wrs = 0.5 * Waa[:S]  # (2H, H) halved sigmoid rows
    Wc = np.ascontiguousarray(Waa[S:])  # (H, H)
    xw[:, :S] *= 0.5
    cs = np.empty((T + 1, H, B), dtype=dt)
    rcs = np.empty((T, H, B), dtype=dt)
    cs[0] = c0
    rec = np.empty((S, B), dtype=dt)
    tmp = np.empty((H, B), dtype=dt)
    for t in range(T):
        g = xw[t]
        gs, gc = g[:S], g[S:]
        np.matmul(Wrs, cs[t], out=rec)
        gs += rec
        np.tanh(gs, out=gs)
        gs *= 0.5
        gs += 0.5  # Γr, Γu
        gr, gu = gs[:H], gs[H:]
        np.multiply(gr, cs[t], out=rcs[t])  # Γr * c<t-1>
        np.matmul(Wc, rcs[t], out=tmp)
        gc += tmp
        np.tanh(gc, out=gc)  # c~<t>
        c = cs[t + 1]
        np.subtract(gc, cs[t], out=c)
        c *= gu
        c += cs[t]  # c<t-1> + Γu (c~ - c<t-1>)
    return cs[1:], GRUCache(xw, cs, rcs, Waa)


def gru_backward(dA: np.ndarray, cache: GRUCache):
    """dA: (T, H, B). Returns (dZ (T, 3H, B), dc0, {"Waa"})."""
    G, cs, rcs, Waa = cache
    T, H, B = dA.shape
    S = 2 * H
    dt = dA.dtype
    gr, gu, gc = G[:, :H], G[:, H:S], G[:, S:]
    cprev = cs[:-1]
    Fuc = np.empty((T, 2, H, B), dtype=dt)  # dz_{u,c~} = dc * F
    np.multiply(gc - cprev, gu * (1 - gu), out=Fuc[:, 0])  # ∂c/∂Γu · σ'
    np.multiply(gu, 1 - gc * gc, out=Fuc[:, 1])  # ∂c/∂c~ · tanh'
    Fr = cprev * gr * (1 - gr)  # dz_r = d(Γr c) * c<t-1> σ'
    one_minus_u = 1 - gu
    WsT = np.ascontiguousarray(Waa[:S].T)  # (H, 2H)
    WcT = np.ascontiguousarray(Waa[S:].T)  # (H, H)

    dZ = np.empty((T, 3 * H, B), dtype=dt)
    dnext = np.zeros((H, B), dtype=dt)
    dc = np.empty((H, B), dtype=dt)
    drc = np.empty((H, B), dtype=dt)
    tmp = np.empty((H, B), dtype=dt)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], dnext, out=dc)  # ∂L/∂c<t>
        np.multiply(dc, Fuc[t], out=dz[H:].reshape(2, H, B))
        np.matmul(WcT, dz[S:], out=drc)  # ∂L/∂(Γr * c<t-1>)
        np.multiply(drc, Fr[t], out=dz[:H])
        np.matmul(WsT, dz[:S], out=dnext)  # through the gates' recurrent product
        np.multiply(dc, one_minus_u[t], out=tmp)
        dnext += tmp  # through (1 - Γu) * c<t-1>
        np.multiply(drc, gr[t], out=tmp)
        dnext += tmp  # through Γr * c<t-1>
    dWaa = np.empty_like(Waa)
    dWaa[:S] = outer_sum(dZ[:, :S], cprev)
    dWaa[S:] = outer_sum(dZ[:, S:], rcs)
    return dZ, dnext, {"Waa": dWaa}


def gru_step(xw: np.ndarray, c: np.ndarray, Waa: np.ndarray) -> np.ndarray:
    """One generation step. xw: (3H, B). Returns c<t> (= a<t>)."""
    H = c.shape[0]
    s = 0.5 * np.tanh(0.5 * (Waa[: 2 * H] @ c + xw[: 2 * H])) + 0.5
    gr, gu = s[:H], s[H:]
    cc = np.tanh(Waa[2 * H :] @ (gr * c) + xw[2 * H :])
    return c + gu * (cc - c)
