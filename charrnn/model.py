"""The character language model: a stack of recurrent layers and a softmax output.

    x<t> (one-hot) -> layer 1 -> ... -> layer L -> ŷ<t> = softmax(Wya a<t> + by)

Parameters carry the lecture's names: for layer l, ``l{l}.Wax`` (G·H, D),
``l{l}.Waa`` (G·H, H) and ``l{l}.b`` (G·H,) hold the gate blocks stacked along
rows (see :mod:`charrnn.cells` for the order), ``l{l}.p`` (3, H) the LSTM
peepholes; ``Wya`` (V, H) and ``by`` (V,) the output. With the default one-hot
input, layer 0's ``Wax`` is (G·H, V) and x<t> is never built: its product with
a one-hot vector is a column gather. All parameters are views into one flat
buffer, so optimizers and clipping work on one array.

Pure NumPy: no I/O, no global randomness (dropout takes an ``rng``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from charrnn import cells

CELLS = tuple(cells.CELLS)  # the cells' names (option choices)
ACTIVATIONS = ("tanh", "relu")  # the vanilla RNN's choices


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # V: number of distinct characters
    cell: str = field(
        default="lstm", metadata={"help": "Recurrent cell: vanilla RNN, GRU or LSTM."}
    )
    hidden: int = field(default=128, metadata={"help": "Hidden units per layer (H), 1 or more."})
    layers: int = field(default=1, metadata={"help": "Recurrent layers stacked (L), 1 or more."})
    embedding: int = field(  # E: learned input embedding size; 0 = one-hot input (the lectures)
        default=0,
        metadata={"help": "Size of a learned character embedding (E); 0 feeds one-hot characters."},
    )
    dropout: float = field(  # drop rate on the non-recurrent connections, training only
        default=0.0,
        metadata={
            "help": "Share of each layer's outputs (to the layer above or to the output layer) "
            "dropped while training, in [0, 1)."
        },
    )
    peephole: bool = field(  # lstm only: gates also see c<t-1>
        default=False,
        metadata={"help": "LSTM only: the gates also look at the memory cell (peepholes)."},
    )
    activation: str = field(  # rnn only: "tanh" or "relu"
        default="tanh", metadata={"help": "Vanilla RNN only: the hidden activation."}
    )
    forget_bias: float = field(  # lstm only: initial bias of Γf (1 = remember at the start)
        default=1.0,
        metadata={
            "help": "LSTM only: starting bias of the forget gate; 1 remembers at first, "
            "0 learns faster early on."
        },
    )
    dtype: str = "float32"  # float64 for gradient checks

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.vocab_size < 1 or self.hidden < 1 or self.layers < 1 or self.embedding < 0:
            raise ValueError("vocab_size, hidden and layers must be positive, embedding >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be tanh or relu, not {self.activation!r}")
        if self.peephole and not cells.CELLS[self.cell].peephole:
            with_peepholes = ", ".join(c.name for c in cells.CELLS.values() if c.peephole)
            raise ValueError(f"peephole connections exist only for the {with_peepholes} cell")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype!r}")

    @property
    def state_size(self) -> int:
        """Arrays of state per layer: (a, c) for the LSTM, c (= a) for the GRU, a for the RNN."""
        return len(cells.CELLS[self.cell].states)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in the order of the flat buffer."""
    V, H, n_gates = cfg.vocab_size, cfg.hidden, len(cells.CELLS[cfg.cell].gates)
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.embedding:
        shapes["embed"] = (V, cfg.embedding)
    for layer in range(cfg.layers):
        D = (cfg.embedding or V) if layer == 0 else H
        shapes[f"l{layer}.Wax"] = (n_gates * H, D)
        shapes[f"l{layer}.Waa"] = (n_gates * H, H)
        shapes[f"l{layer}.b"] = (n_gates * H,)
        if cfg.peephole:
            shapes[f"l{layer}.p"] = (3, H)
    shapes["Wya"] = (V, H)
    shapes["by"] = (V,)
    return shapes


def gate_names(cell: str) -> tuple[str, ...]:
    """Row blocks of Wax/Waa/b in order, named as in the lectures (for reports)."""
    return cells.CELLS[cell].gates


class Params:
    """Named parameter arrays that are views into one flat, contiguous buffer."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype, flat: np.ndarray | None = None):
        self.shapes = dict(shapes)
        total = sum(int(np.prod(s)) for s in shapes.values())
        self.flat = np.zeros(total, dtype=dtype) if flat is None else flat
        if self.flat.shape != (total,):
            raise ValueError(f"flat buffer has {self.flat.size} values, expected {total}")
        self.arrays: dict[str, np.ndarray] = {}
        i = 0
        for name, shape in shapes.items():
            n = int(np.prod(shape))
            self.arrays[name] = self.flat[i : i + n].reshape(shape)
            i += n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def items(self):
        return self.arrays.items()

    def zeros_like(self) -> Params:
        return Params(self.shapes, self.flat.dtype)

    def copy(self) -> Params:
        return Params(self.shapes, self.flat.dtype, self.flat.copy())

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, arrays, prefix: str = "param.") -> Params:
        """The parameters of ``cfg`` copied from named arrays (e.g. a checkpoint's).

        Raises KeyError for a missing array and ValueError for a wrong shape.
        """
        shapes = param_shapes(cfg)
        params = cls(shapes, cfg.dtype)
        for name, shape in shapes.items():
            arr = arrays[prefix + name]
            if arr.shape != shape:
                raise ValueError(f"parameter {name} has shape {arr.shape}, expected {shape}")
            params[name][...] = arr
        return params


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> Params:
    """Uniform(±1/√H) weights, zero biases; LSTM forget-gate bias cfg.forget_bias (default 1:
    remember by default)."""
    params = Params(param_shapes(cfg), cfg.dtype)
    H = cfg.hidden
    k = 1.0 / np.sqrt(H)
    for name, arr in params.items():
        if name == "embed":
            arr[...] = rng.standard_normal(arr.shape) * 0.1
        elif name.endswith((".b", "by")):
            arr[...] = 0.0
        else:  # weights and peepholes
            arr[...] = rng.uniform(-k, k, arr.shape)
    gates = cells.CELLS[cfg.cell].gates
    if "f" in gates:  # the LSTM's forget gate
        rows = slice(gates.index("f") * H, (gates.index("f") + 1) * H)
        for layer in range(cfg.layers):
            params[f"l{layer}.b"][rows] = cfg.forget_bias
    return params


def shifted_exp(z: np.ndarray, axis: int = -1, out: np.ndarray | None = None):
    """exp(z - max(z)) along ``axis`` (into ``out``, which may be z), and the max (kept
    dims): softmax before its normalisation, which never overflows. A draw that scales its
    uniform by the column's total (the sampler's inverse CDF) needs no more."""
    mx = np.max(z, axis=axis, keepdims=True)
    out = np.subtract(z, mx, out=out)
    np.exp(out, out=out)
    return out, mx


def softmax(z: np.ndarray, axis: int = -1, out: np.ndarray | None = None):
    """exp(z) normalised along ``axis`` (into ``out``, which may be z), and log Σ exp(z).

    The one softmax of charrnn: training, scoring and sampling all call it (or its
    numerator, :func:`shifted_exp`). Stable: exp sees z - max(z). The second result, the
    log-normaliser (log-sum-exp, the shape of z without ``axis``), turns a logit into a
    log-probability: log ŷ_i = z_i - lse.
    """
    out, mx = shifted_exp(z, axis, out)
    total = np.sum(out, axis=axis, keepdims=True)
    out /= total
    lse = np.log(total)
    lse += mx
    return out, np.squeeze(lse, axis=axis)


@dataclass
class Cache:
    """What forward keeps for backward (explicit: backward depends on nothing else)."""

    ids: np.ndarray  # (T, B) inputs, time-major
    layers: list[Any]  # per-layer cell caches (cells.LSTMCache, ...)
    inputs: list[np.ndarray | None]  # per-layer input X (T, D, B); None = one-hot ids
    inputs_cols: list[np.ndarray | None]  # the same as columns (D, T·B), or None
    masks: list[np.ndarray | None]  # per-layer dropout mask on its output
    top: np.ndarray  # (H, T·B) top activations as columns


class CharRNN:
    """A character model: config plus parameters, with forward, backward and one-step generation."""

    def __init__(
        self, cfg: ModelConfig, params: Params | None = None, rng: np.random.Generator | None = None
    ) -> None:
        self.cfg = cfg
        self.cell = cells.CELLS[cfg.cell]
        if params is None:
            params = init_params(cfg, rng if rng is not None else np.random.default_rng(0))
        self.params = params
        self.dtype = np.dtype(cfg.dtype)
        self._ws = cells.Workspace()  # scratch of loss_and_grads and nll, for every (B, T)
        self._grads: Params | None = None  # loss_and_grads' output buffer

    def layer_weights(self, layer: int) -> cells.LayerWeights:
        """Layer ``layer``'s recurrent weights and options, as the cells take them."""
        p, cfg = self.params, self.cfg
        peep = p[f"l{layer}.p"] if cfg.peephole else None
        return cells.LayerWeights(p[f"l{layer}.Waa"], peep, cfg.activation)

    # ------------------------------------------------------------------ state
    def state_shape(self, batch: int) -> tuple[int, int, int, int]:
        """(L, n_states, H, B): n_states = 2 for the LSTM (a, c), 1 otherwise."""
        c = self.cfg
        return (c.layers, c.state_size, c.hidden, batch)

    def initial_state(self, batch: int) -> np.ndarray:
        """Zero state, :meth:`state_shape`."""
        return np.zeros(self.state_shape(batch), dtype=self.dtype)

    # ------------------------------------------------------------------ forward
    def _layer_input(
        self, layer: int, ids: np.ndarray, X: np.ndarray | None, ws: cells.Workspace
    ) -> np.ndarray:
        """xw = Wax x<t> + b for all T steps, (T, n_gates·H, B), sigmoid rows negated."""
        p, dt = self.params, self.dtype
        Wax, b = p[f"l{layer}.Wax"], p[f"l{layer}.b"]
        GH, D = Wax.shape
        sig_rows = self.cell.sigmoid_rows(self.cfg.hidden)
        T, B = ids.shape
        xw = ws("xw", (T, GH, B), dt)
        if X is None:  # one-hot input: Wax x<t> is column ids[t, b] of Wax: a gather
            table = ws("xtable", (GH, D), dt)  # Wax with b added to every column
            np.add(Wax, b[:, None], out=table)
            cells.negate_sigmoid_rows(table, sig_rows, out=table)
            for t in range(T):
                np.take(table, ids[t], axis=1, out=xw[t])  # (GH, B)
        else:
            Wh = cells.negate_sigmoid_rows(Wax, sig_rows, out=ws("Wxh", (GH, D), dt))
            bh = ws("bh", (GH, 1), dt)
            cells.negate_sigmoid_rows(b[:, None], sig_rows, out=bh)
            np.matmul(Wh, X, out=xw)  # (T, GH, B): T products, each like a recurrent one
            xw += bh
        return xw

    def forward(
        self,
        x: np.ndarray,
        state: np.ndarray | None = None,
        *,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, Cache]:
        """Run the model over a batch of sequences.

        x: (B, T) integer ids; state: (L, n_states, H, B) or None for zeros; rng:
        dropout (training) if given and cfg.dropout > 0. Returns (logits (T·B, V)
        in time-major row order, final state (L, n_states, H, B), cache).
        """
        return self._forward(x, state, rng, cells.Workspace())

    def _forward(
        self,
        x: np.ndarray,
        state: np.ndarray | None,
        rng: np.random.Generator | None,
        ws: cells.Workspace,
    ) -> tuple[np.ndarray, np.ndarray, Cache]:
        """forward, with scratch arrays (and the returned logits and cache) from ``ws``."""
        cfg, p, dt = self.cfg, self.params, self.dtype
        B, T = x.shape
        H = cfg.hidden
        ids = ws("ids", (T, B), np.intp)
        np.copyto(ids, x.T)  # (T, B) time-major
        if state is None:
            state = self.initial_state(B)
        cache = Cache(ids, [], [], [], [], top=np.empty(0, dt))
        final = np.empty_like(state)  # fresh: callers keep it across calls
        X: np.ndarray | None = None
        X_cols: np.ndarray | None = None
        if cfg.embedding:
            X = ws("embedded", (T, cfg.embedding, B), dt)
            np.copyto(X, p["embed"][ids].transpose(0, 2, 1))  # (T, E, B)
        for layer in range(cfg.layers):
            lws = ws.child(f"l{layer}")
            xw = self._layer_input(layer, ids, X, lws)
            A, lc = self.cell.forward(xw, state[layer], self.layer_weights(layer), lws)
            final[layer] = lc.states[-1]
            cache.layers.append(lc)
            cache.inputs.append(X)
            cache.inputs_cols.append(X_cols)
            mask = None
            A_cols = lc.a_cols[:, B:]  # (H, T·B) a<1>..a<T> as columns
            if rng is not None and cfg.dropout > 0:  # inverted dropout: scaled at train time
                keep = 1.0 - cfg.dropout
                mask = (rng.random(A.shape, dtype=dt) < keep).astype(dt)
                mask /= keep
                A = np.multiply(A, mask, out=lws("dropped", A.shape, dt))
                A_cols = cells.feature_major(A, lws("dropped_cols", (H, T * B), dt))
            cache.masks.append(mask)
            X, X_cols = A, A_cols
        assert X_cols is not None  # cfg.layers >= 1
        cache.top = X_cols  # (H, T·B)
        logits = ws("logits", (T * B, cfg.vocab_size), dt)
        np.matmul(X_cols.T, p["Wya"].T, out=logits)  # (T·B, H) @ (H, V)
        logits += p["by"]
        return logits, final, cache

    # ------------------------------------------------------------------ loss
    def loss(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None = None):
        """Mean cross-entropy in nats per character (no dropout, no gradients).

        Returns (mean_nats, final_state). See :meth:`nll` for per-position values.
        """
        nll, final = self.nll(x, y, state)
        return float(nll.mean()), final

    def nll(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None = None):
        """-log p(y<t> | x<≤t>) for every position, (B, T), and the final state."""
        B, T = x.shape
        logits, final, _ = self._forward(x, state, None, self._ws)
        yt = np.ascontiguousarray(y.T).reshape(-1)
        z_y = logits[np.arange(T * B), yt]  # taken before softmax overwrites the logits
        _, lse = softmax(logits, axis=1, out=logits)
        return (lse - z_y).reshape(T, B).T, final

    def loss_and_grads(
        self,
        x: np.ndarray,
        y: np.ndarray,
        state: np.ndarray | None = None,
        *,
        rng: np.random.Generator | None = None,
        mask: np.ndarray | None = None,
    ):
        """Forward, softmax cross-entropy and backpropagation through time.

        x, y: (B, T) integer ids (y is x shifted by one). The loss is the mean over
        all B·T positions of -log ŷ<t>[y<t>] (the lectures' sum over time, divided
        by the number of characters). ``mask`` (B, T) bool marks the real positions
        of padded lines: the mean is then over those only and padding adds nothing
        to the loss or the gradients. Returns (loss, grads: Params, final_state,
        d_state0) where d_state0 is ∂loss/∂state, shaped like state.

        For speed, ``grads`` is the same Params object on every call, overwritten
        by the next call of loss_and_grads: use it (clip, step) before calling
        again, or keep ``grads.copy()``. final_state and d_state0 are fresh.
        """
        B, T = x.shape
        ws = self._ws
        logits, final, cache = self._forward(x, state, rng, ws)
        N = T * B
        yt = ws("targets", (N,), np.intp)
        np.copyto(yt.reshape(T, B), y.T)  # time-major like the logits
        rows = ws("rows", (N,), np.intp)
        rows[...] = np.arange(N)
        z_y = logits[rows, yt]  # taken before softmax overwrites the logits
        probs, lse = softmax(logits, axis=1, out=logits)  # (N, V) ŷ, in place
        nll = lse - z_y  # (N,)
        w = None  # (N,) 1 on real positions, 0 on padding (when a mask is given)
        if mask is not None:
            w = np.ascontiguousarray(mask.T, dtype=self.dtype).reshape(N)  # time-major
            N = max(int(mask.sum()), 1)
            nll *= w
        loss = float(np.sum(nll, dtype=np.float64) / N)
        # ∂loss/∂logits = (ŷ - onehot(y)) / N on the real positions, in place
        dlogits = probs
        if w is None:
            dlogits *= 1.0 / N
        else:
            dlogits *= (w / N)[:, None]
        dlogits[rows, yt] -= 1.0 / N if w is None else w / N
        if self._grads is None:
            self._grads = self.params.zeros_like()
        dstate = self._backward(dlogits, cache, self._grads, ws)
        return loss, self._grads, final, dstate

    # ------------------------------------------------------------------ backward
    def backward(self, dlogits: np.ndarray, cache: Cache) -> tuple[Params, np.ndarray]:
        """Gradients of every parameter and of the initial state, given ∂loss/∂logits."""
        grads = self.params.zeros_like()
        dstate = self._backward(dlogits, cache, grads, cells.Workspace())
        return grads, dstate

    def _backward(
        self, dlogits: np.ndarray, cache: Cache, grads: Params, ws: cells.Workspace
    ) -> np.ndarray:
        """Backward into ``grads`` (all entries overwritten), scratch from ``ws``."""
        cfg, p, dt = self.cfg, self.params, self.dtype
        ids = cache.ids
        T, B = ids.shape
        H, V = cfg.hidden, cfg.vocab_size
        np.matmul(dlogits.T, cache.top.T, out=grads["Wya"])  # (V, T·B) @ (T·B, H)
        np.sum(dlogits, axis=0, out=grads["by"])
        top = cfg.layers - 1
        dA = ws.child(f"l{top}")("dA", (T, H, B), dt)
        # (T, H, B): T products (H, V) @ (V, B), straight into the cells' layout
        np.matmul(p["Wya"].T, dlogits.reshape(T, B, V).transpose(0, 2, 1), out=dA)
        dstate = np.zeros((cfg.layers, cfg.state_size, H, B), dtype=dt)
        for layer in range(top, -1, -1):
            lws = ws.child(f"l{layer}")
            mask = cache.masks[layer]
            if mask is not None:
                dA *= mask
            dWaa = grads[f"l{layer}.Waa"]
            dZ_cols, dstate[layer], g = self.cell.backward(dA, cache.layers[layer], lws, dWaa)
            for name, grad in g.items():  # Waa (already in place) and the peepholes
                if grad is not dWaa:
                    grads[f"l{layer}.{name}"][...] = grad
            np.sum(dZ_cols, axis=1, out=grads[f"l{layer}.b"])
            dA = self._input_backward(layer, dZ_cols, cache, grads, ws)
        return dstate

    def _input_backward(
        self, layer: int, dZ_cols: np.ndarray, cache: Cache, grads: Params, ws: cells.Workspace
    ) -> np.ndarray:
        """∂L/∂Wax of ``layer`` (and of the embedding), and ∂L/∂A of the layer below, (T, D, B)."""
        p, dt = self.params, self.dtype
        T, B = cache.ids.shape
        N = T * B
        lws = ws.child(f"l{layer}")
        X = cache.inputs[layer]
        Wax = p[f"l{layer}.Wax"]
        GH, D = Wax.shape
        if X is None:  # one-hot input: Σ over positions of dz into column ids[t, b]
            onehot = self._onehot(cache.ids, ws)
            np.matmul(dZ_cols, onehot, out=grads[f"l{layer}.Wax"])  # (GH, N) @ (N, V)
            return dZ_cols  # no layer below
        X_cols = cache.inputs_cols[layer]
        if X_cols is None:
            X_cols = cells.feature_major(X, lws("X_cols", (D, N), dt))
        np.matmul(dZ_cols, X_cols.T, out=grads[f"l{layer}.Wax"])  # (GH, N) @ (N, D)
        if layer == 0:  # learned embedding: scatter dX into the rows of the ids
            onehot = self._onehot(cache.ids, ws)
            dX_cols = np.matmul(Wax.T, dZ_cols, out=lws("dX_cols", (D, N), dt))  # (E, N)
            np.matmul(onehot.T, dX_cols.T, out=grads["embed"])  # (V, N) @ (N, E)
            return dX_cols
        WaxT = cells.transposed(Wax, lws("WaxT", (D, GH), dt))
        dA = ws.child(f"l{layer - 1}")("dA", (T, D, B), dt)
        # (T, D, B): T products (D, GH) @ (GH, B)
        np.matmul(WaxT, dZ_cols.reshape(GH, T, B).transpose(1, 0, 2), out=dA)
        return dA

    def _onehot(self, ids: np.ndarray, ws: cells.Workspace) -> np.ndarray:
        """(T·B, V) one-hot rows in time-major order: a product with it is a scatter-add."""
        flat = ids.reshape(-1)
        oh = ws("onehot", (flat.size, self.cfg.vocab_size), self.dtype)
        oh.fill(0)
        oh[np.arange(flat.size), flat] = 1.0
        return oh

    # ------------------------------------------------------------------ generation
    def step(self, ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed one character per stream. ids: (B,) ints; state: (L, n_states, H, B).

        Returns (logits (B, V), new state); ``state`` is left as it was. The
        sampler's :class:`~charrnn.sampler.Kernel` runs the same cell step on
        buffers it keeps, and is checked against this.
        """
        cfg, p, dt = self.cfg, self.params, self.dtype
        H, B = cfg.hidden, len(ids)
        sig_rows = self.cell.sigmoid_rows(H)
        new = np.empty_like(state)
        x = p["embed"][ids].T if cfg.embedding else None  # (E, B)
        for layer in range(cfg.layers):
            Wax, b = p[f"l{layer}.Wax"], p[f"l{layer}.b"]
            # (GH, B) Wax x<t> + b; layer 0's one-hot input makes it a column gather
            xw = Wax[:, ids] + b[:, None] if x is None else Wax @ x + b[:, None]
            cells.negate_sigmoid_rows(xw, sig_rows, out=xw)
            GH = xw.shape[0]
            g, keep, work = np.empty((GH, B), dt), np.empty((H, B), dt), np.empty((GH, B), dt)
            w = self.cell.step_weights(self.layer_weights(layer))
            with np.errstate(over="ignore"):  # e^-z = inf is exact: σ(z) = 0
                self.cell.step(xw, state[layer], new[layer], w, g, keep, work)
            x = new[layer, 0]
        logits = (p["Wya"] @ x).T + p["by"]  # (B, V)
        return logits, new
