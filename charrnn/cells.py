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
where ``dZ`` is the gradient with respect to the pre-activations, feature-major
(G*H, T*B) (column t*B + b), which the caller turns into ``dWax``, ``db`` and
the gradient of the input with single large matrix products. The cache also
holds ``hsf``, the layer's activations a<0-1>..a<T> feature-major (H, (T+1)*B),
for the same reason.

Every function takes an optional :class:`Workspace`: with the model's
long-lived one the hot path allocates nothing, and the returned arrays (A, dZ,
the caches) are overwritten by the next call with the same workspace.

Pure NumPy: no I/O, no global randomness.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks per cell: rows of Wax/Waa are GATES*H


class Workspace:
    """Scratch arrays by name, reused by every later call with the same shapes.

    The model keeps one per (B, T) so that training allocates nothing in its hot
    path (fresh large arrays cost page faults on every call). A throwaway
    ``Workspace()`` gives ordinary allocate-per-call behaviour.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}
        self._children: dict[str, Workspace] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array called ``name``: the same one as last time if the shape fits."""
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._bufs[name] = np.empty(shape, dtype=dtype)
        return buf

    def child(self, name: str) -> Workspace:
        """A separate namespace (one per layer)."""
        ws = self._children.get(name)
        if ws is None:
            ws = self._children[name] = Workspace()
        return ws


def feature_major(X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(T, K, B) -> (K, T*B) copy, column t*B + b = X[t, :, b].

    Sums over time and batch then become one large matrix product, which runs
    near the machine's peak where T small ones do not.
    """
    T, K, B = X.shape
    if out is None:
        out = np.empty((K, T * B), dtype=X.dtype)
    np.copyto(out.reshape(K, T, B), X.transpose(1, 0, 2))
    return out


def outer_sum(dZ: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Σ_t dZ[t] @ X[t].T as one matrix product over all T·B columns.

    dZ: (T, G, B), X: (T, K, B) -> (G, K).
    """
    return feature_major(dZ) @ feature_major(X).T  # (G, T*B) @ (T*B, K)


# --------------------------------------------------------------------------- vanilla RNN


class RNNCache(NamedTuple):
    hs: np.ndarray  # (T+1, H, B) a<0-1>..a<T-1>: hs[0] is the initial state
    hsf: np.ndarray  # (H, (T+1)*B) the same, feature-major
    Waa: np.ndarray  # (H, H)
    activation: str


def rnn_forward(
    xw: np.ndarray,
    a0: np.ndarray,
    Waa: np.ndarray,
    activation: str = "tanh",
    ws: Workspace | None = None,
) -> tuple[np.ndarray, RNNCache]:
    """a<t> = g(Waa a<t-1> + Wax x<t> + ba), g = tanh or relu.

    xw: (T, H, B) input projections with bias; a0: (H, B). Returns A (T, H, B).
    """
    ws = Workspace() if ws is None else ws
    T, H, B = xw.shape
    dt = xw.dtype
    hs = ws("hs", (T + 1, H, B), dt)
    hs[0] = a0
    for t in range(T):
        a = hs[t + 1]
        np.matmul(Waa, hs[t], out=a)  # (H, B) recurrent product
        a += xw[t]
        if activation == "tanh":
            np.tanh(a, out=a)
        else:
            np.maximum(a, 0, out=a)
    hsf = feature_major(hs, ws("hsf", (H, (T + 1) * B), dt))
    return hs[1:], RNNCache(hs, hsf, Waa, activation)


def rnn_backward(
    dA: np.ndarray, cache: RNNCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
):
    """dA: (T, H, B) loss gradient w.r.t. each a<t> from above.

    Returns (dZ (H, T*B), da0, {"Waa"}); ∂L/∂Waa goes into ``dWaa`` if given.
    """
    ws = Workspace() if ws is None else ws
    hs, hsf, Waa, activation = cache
    T, H, B = dA.shape
    dt = dA.dtype
    A = hs[1:]
    D = ws("D", (T, H, B), dt)
    if activation == "tanh":
        np.multiply(A, A, out=D)
        np.subtract(1, D, out=D)  # tanh'(z) = 1 - a²
    else:
        np.sign(A, out=D)  # relu'(z): a >= 0, so sign(a) is 0 or 1
    WaaT = ws("WaaT", (H, H), dt)
    np.copyto(WaaT, Waa.T)  # a contiguous copy beats a transposed view in matmul
    dZ = ws("dZ", (T, H, B), dt)
    dnext = ws("dnext", (H, B), dt)  # gradient flowing into a<t> from step t+1
    dnext.fill(0)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], dnext, out=dz)
        dz *= D[t]
        np.matmul(WaaT, dz, out=dnext)
    dZf = feature_major(dZ, ws("dZf", (H, T * B), dt))
    dWaa = np.matmul(dZf, hsf[:, : T * B].T, out=dWaa)  # Σ_t dz<t> a<t-1>ᵀ
    return dZf, dnext, {"Waa": dWaa}


def rnn_step(xw: np.ndarray, a: np.ndarray, Waa: np.ndarray, activation: str = "tanh"):
    """One generation step. xw: (H, B) projection of x<t> with bias; a: (H, B) -> a<t>."""
    z = Waa @ a + xw
    return np.tanh(z) if activation == "tanh" else np.maximum(z, 0)


# --------------------------------------------------------------------------- LSTM


class LSTMCache(NamedTuple):
    G: np.ndarray  # (T, 4H, B) activated gates, rows [Γo, Γu, Γf, c~]
    hs: np.ndarray  # (T+1, H, B) a<t-1>, hs[0] = a0
    hsf: np.ndarray  # (H, (T+1)*B) the same, feature-major
    cs: np.ndarray  # (T+1, H, B) c<t-1>, cs[0] = c0
    tcs: np.ndarray  # (T, H, B) tanh(c<t>)
    Waa: np.ndarray  # (4H, H)
    p: np.ndarray | None  # (3, H) peepholes for [Γo, Γu, Γf], or None


def lstm_forward(
    xw: np.ndarray,
    a0: np.ndarray,
    c0: np.ndarray,
    Waa: np.ndarray,
    p: np.ndarray | None = None,
    ws: Workspace | None = None,
    halved: bool = False,
) -> tuple[np.ndarray, LSTMCache]:
    """The lecture's LSTM over T steps (xw is overwritten with the gate activations).

    c~<t> = tanh(Wc [a<t-1>, x<t>] + bc)
    Γu, Γf, Γo = σ(W· [a<t-1>, x<t>] + b·)        (+ p· * c<t-1> with peepholes)
    c<t> = Γu * c~<t> + Γf * c<t-1>
    a<t> = Γo * tanh(c<t>)

    xw: (T, 4H, B); a0, c0: (H, B); Waa: (4H, H); p: (3, H) or None.
    halved: the caller already halved xw's sigmoid rows (σ(z) = 0.5·tanh(z/2) + 0.5).
    """
    ws = Workspace() if ws is None else ws
    T, G4, B = xw.shape
    H = G4 // 4
    S = 3 * H  # sigmoid rows
    dt = xw.dtype
    Wh = ws("Wh", Waa.shape, dt)
    np.multiply(Waa[:S], 0.5, out=Wh[:S])  # σ(z) = 0.5·tanh(z/2) + 0.5: halve sigmoid rows
    Wh[S:] = Waa[S:]
    if not halved:
        xw[:, :S] *= 0.5
    ph = None if p is None else (0.5 * p)[:, :, None]  # (3, H, 1)
    hs = ws("hs", (T + 1, H, B), dt)
    cs = ws("cs", (T + 1, H, B), dt)
    tcs = ws("tcs", (T, H, B), dt)
    hs[0] = a0
    cs[0] = c0
    rec = ws("rec", (G4, B), dt)  # recurrent product of one step
    tmp = ws("tmp", (H, B), dt)
    ptmp = None if p is None else ws("ptmp", (3, H, B), dt)
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
    hsf = feature_major(hs, ws("hsf", (H, (T + 1) * B), dt))
    return hs[1:], LSTMCache(xw, hs, hsf, cs, tcs, Waa, p)


def lstm_backward(
    dA: np.ndarray, cache: LSTMCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
):
    """dA: (T, H, B). Returns (dZ (4H, T*B), (da0, dc0), {"Waa", and "p" with peepholes}).

    ∂L/∂Waa goes into ``dWaa`` if given.
    """
    ws = Workspace() if ws is None else ws
    G, hs, hsf, cs, tcs, Waa, p = cache
    T, H, B = dA.shape
    S = 3 * H
    dt = dA.dtype
    # every factor that does not depend on the recurrence, for all T at once
    sig = G[:, :S]  # (T, 3H, B) Γo, Γu, Γf
    dsig = ws("dsig", (T, S, B), dt)
    np.subtract(1, sig, out=dsig)
    dsig *= sig  # σ'(z) = σ(1-σ)
    go, gu, gf, gc = G[:, :H], G[:, H : 2 * H], G[:, 2 * H : S], G[:, S:]
    cprev = cs[:-1]  # (T, H, B) c<t-1>
    Fo = ws("Fo", (T, H, B), dt)
    np.multiply(tcs, dsig[:, :H], out=Fo)  # dz_o = da * tanh(c) * σ'
    K1 = ws("K1", (T, H, B), dt)
    np.multiply(tcs, tcs, out=K1)
    np.subtract(1, K1, out=K1)
    K1 *= go  # dc += da * Γo * tanh'(c)
    Fufc = ws("Fufc", (T, 3, H, B), dt)  # dz_{u,f,c~} = dc * F
    np.multiply(gc, dsig[:, H : 2 * H], out=Fufc[:, 0])  # ∂c/∂Γu · σ'
    np.multiply(cprev, dsig[:, 2 * H : S], out=Fufc[:, 1])  # ∂c/∂Γf · σ'
    tc = Fufc[:, 2]
    np.multiply(gc, gc, out=tc)
    np.subtract(1, tc, out=tc)
    tc *= gu  # ∂c/∂c~ · tanh'
    WaaT = ws("WaaT", (H, 4 * H), dt)
    np.copyto(WaaT, Waa.T)  # a contiguous copy beats a transposed view in matmul
    p3 = None if p is None else p[:, :, None]  # (3, H, 1)

    dZ = ws("dZ", (T, 4 * H, B), dt)
    da_next = ws("da_next", (H, B), dt)  # ∂L/∂a<t> through step t+1
    dc_next = ws("dc_next", (H, B), dt)  # ∂L/∂c<t> through step t+1
    da_next.fill(0)
    dc_next.fill(0)
    da = ws("da", (H, B), dt)
    dc = ws("dc", (H, B), dt)
    ptmp = None if p is None else ws("ptmp", (3, H, B), dt)
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
    grads = {}
    if p is not None:
        # dp_k = Σ_t,b dz_k * c<t-1>
        grads["p"] = np.einsum("tkhb,thb->kh", dZ[:, :S].reshape(T, 3, H, B), cprev)
    dZf = feature_major(dZ, ws("dZf", (4 * H, T * B), dt))
    grads["Waa"] = np.matmul(dZf, hsf[:, : T * B].T, out=dWaa)  # Σ_t dz<t> a<t-1>ᵀ
    return dZf, (da_next, dc_next), grads


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
    hsf: np.ndarray  # (H, (T+1)*B) the same, feature-major
    rcs: np.ndarray  # (T, H, B) Γr * c<t-1>
    Waa: np.ndarray  # (3H, H)


def gru_forward(
    xw: np.ndarray,
    c0: np.ndarray,
    Waa: np.ndarray,
    ws: Workspace | None = None,
    halved: bool = False,
) -> tuple[np.ndarray, GRUCache]:
    """The lecture's full GRU over T steps (xw is overwritten with the gate activations).

    Γr = σ(Wr [c<t-1>, x<t>] + br)       relevance
    Γu = σ(Wu [c<t-1>, x<t>] + bu)       update
    c~<t> = tanh(Wc [Γr * c<t-1>, x<t>] + bc)
    c<t> = Γu * c~<t> + (1 - Γu) * c<t-1>,   a<t> = c<t>

    xw: (T, 3H, B); c0: (H, B); Waa: (3H, H).
    halved: the caller already halved xw's sigmoid rows (σ(z) = 0.5·tanh(z/2) + 0.5).
    """
    ws = Workspace() if ws is None else ws
    T, G3, B = xw.shape
    H = G3 // 3
    S = 2 * H
    dt = xw.dtype
    Wrs = ws("Wrs", (S, H), dt)
    np.multiply(Waa[:S], 0.5, out=Wrs)  # (2H, H) halved sigmoid rows
    Wc = ws("Wc", (H, H), dt)
    np.copyto(Wc, Waa[S:])
    if not halved:
        xw[:, :S] *= 0.5
    cs = ws("hs", (T + 1, H, B), dt)
    rcs = ws("rcs", (T, H, B), dt)
    cs[0] = c0
    rec = ws("rec", (S, B), dt)
    tmp = ws("tmp", (H, B), dt)
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
    hsf = feature_major(cs, ws("hsf", (H, (T + 1) * B), dt))
    return cs[1:], GRUCache(xw, cs, hsf, rcs, Waa)


def gru_backward(
    dA: np.ndarray, cache: GRUCache, ws: Workspace | None = None, dWaa: np.ndarray | None = None
):
    """dA: (T, H, B). Returns (dZ (3H, T*B), dc0, {"Waa"}); ∂L/∂Waa goes into ``dWaa`` if given."""
    ws = Workspace() if ws is None else ws
    G, cs, hsf, rcs, Waa = cache
    T, H, B = dA.shape
    S = 2 * H
    dt = dA.dtype
    gr, gu, gc = G[:, :H], G[:, H:S], G[:, S:]
    cprev = cs[:-1]
    Fuc = ws("Fuc", (T, 2, H, B), dt)  # dz_{u,c~} = dc * F
    fu, fc = Fuc[:, 0], Fuc[:, 1]
    K = ws("K", (T, 2, H, B), dt)  # [1 - Γu, Γr]: what dc and d(Γr c) pass straight to c<t-1>
    one_minus_u = K[:, 0]
    np.subtract(1, gu, out=one_minus_u)
    K[:, 1] = gr
    np.subtract(gc, cprev, out=fu)
    fu *= gu
    fu *= one_minus_u  # ∂c/∂Γu · σ' = (c~ - c<t-1>) Γu (1 - Γu)
    np.multiply(gc, gc, out=fc)
    np.subtract(1, fc, out=fc)
    fc *= gu  # ∂c/∂c~ · tanh'
    Fr = ws("Fr", (T, H, B), dt)  # dz_r = d(Γr c) * c<t-1> σ'
    np.subtract(1, gr, out=Fr)
    Fr *= gr
    Fr *= cprev
    WsT = ws("WsT", (H, S), dt)
    np.copyto(WsT, Waa[:S].T)  # (H, 2H)
    WcT = ws("WcT", (H, H), dt)
    np.copyto(WcT, Waa[S:].T)  # (H, H)

    dZ = ws("dZ", (T, 3 * H, B), dt)
    dnext = ws("dnext", (H, B), dt)
    dnext.fill(0)
    dcr = ws("dcr", (2, H, B), dt)  # [∂L/∂c<t>, ∂L/∂(Γr * c<t-1>)]
    dc, drc = dcr[0], dcr[1]
    tmp = ws("tmp2", (2, H, B), dt)
    for t in range(T - 1, -1, -1):
        dz = dZ[t]
        np.add(dA[t], dnext, out=dc)  # ∂L/∂c<t>
        np.multiply(dc, Fuc[t], out=dz[H:].reshape(2, H, B))
        np.matmul(WcT, dz[S:], out=drc)  # ∂L/∂(Γr * c<t-1>)
        np.multiply(drc, Fr[t], out=dz[:H])
        np.matmul(WsT, dz[:S], out=dnext)  # through the gates' recurrent product
        np.multiply(dcr, K[t], out=tmp)
        dnext += tmp[0]  # through (1 - Γu) * c<t-1>
        dnext += tmp[1]  # through Γr * c<t-1>
    dZf = feature_major(dZ, ws("dZf", (3 * H, T * B), dt))
    rcsf = feature_major(rcs, ws("rcsf", (H, T * B), dt))
    if dWaa is None:
        dWaa = np.empty_like(Waa)
    np.matmul(dZf[:S], hsf[:, : T * B].T, out=dWaa[:S])  # Σ_t dz_{r,u}<t> c<t-1>ᵀ
    np.matmul(dZf[S:], rcsf.T, out=dWaa[S:])  # Σ_t dz_c~<t> (Γr * c<t-1>)ᵀ
    return dZf, dnext, {"Waa": dWaa}


def gru_step(xw: np.ndarray, c: np.ndarray, Waa: np.ndarray) -> np.ndarray:
    """One generation step. xw: (3H, B). Returns c<t> (= a<t>)."""
    H = c.shape[0]
    s = 0.5 * np.tanh(0.5 * (Waa[: 2 * H] @ c + xw[: 2 * H])) + 0.5
    gr, gu = s[:H], s[H:]
    cc = np.tanh(Waa[2 * H :] @ (gr * c) + xw[2 * H :])
    return c + gu * (cc - c)
