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
from charrnn.cells import GATES

CELLS = tuple(GATES)
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
            "help": "Share of the connections between layers dropped while training, in [0, 1)."
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
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.vocab_size < 1 or self.hidden < 1 or self.layers < 1 or self.embedding < 0:
            raise ValueError("vocab_size, hidden and layers must be positive, embedding >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be tanh or relu, not {self.activation!r}")
        if self.peephole and self.cell != "lstm":
            raise ValueError("peephole connections exist only for the lstm cell")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype!r}")

    @property
    def state_size(self) -> int:
        """Arrays of state per layer: (a, c) for the LSTM, c (= a) for the GRU, a for the RNN."""
        return 2 if self.cell == "lstm" else 1

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in the order of the flat buffer."""
    V, H, G = cfg.vocab_size, cfg.hidden, GATES[cfg.cell]
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.embedding:
        shapes["embed"] = (V, cfg.embedding)
    for layer in range(cfg.layers):
        D = (cfg.embedding or V) if layer == 0 else H
        shapes[f"l{layer}.Wax"] = (G * H, D)
        shapes[f"l{layer}.Waa"] = (G * H, H)
        shapes[f"l{layer}.b"] = (G * H,)
        if cfg.peephole:
            shapes[f"l{layer}.p"] = (3, H)
    shapes["Wya"] = (V, H)
    shapes["by"] = (V,)
    return shapes


def gate_names(cell: str) -> tuple[str, ...]:
    """Row blocks of Wax/Waa/b in order, named as in the lectures (for reports)."""
    return {"rnn": ("a",), "gru": ("r", "u", "c"), "lstm": ("o", "u", "f", "c")}[cell]


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
        elif name.endswith(".p"):
            arr[...] = rng.uniform(-k, k, arr.shape)
        else:
            arr[...] = rng.uniform(-k, k, arr.shape)
    if cfg.cell == "lstm":
        for layer in range(cfg.layers):
            params[f"l{layer}.b"][2 * H : 3 * H] = cfg.forget_bias  # rows of Γf
    return params


class Cache:
    """What forward keeps for backward (explicit: backward depends on nothing else)."""

    def __init__(self) -> None:
        self.ids: np.ndarray | None = None  # (T, B) inputs
        self.layers: list[Any] = []  # per-layer cell caches
        self.inputs: list[np.ndarray | None] = []  # per-layer input X (T, D, B); None = one-hot
        self.inputs_f: list[np.ndarray | None] = []  # the same feature-major (D, T*B), or None
        self.masks: list[np.ndarray | None] = []  # per-layer dropout mask on its output
        self.top: np.ndarray | None = None  # (H, T*B) top activations, feature-major
        self.probs: np.ndarray | None = None  # (T*B, V) softmax


_SIGMOID_ROWS = {"rnn": 0, "gru": 2, "lstm": 3}  # leading gate blocks that are sigmoids
_MAX_WORKSPACES = 4  # (B, T) shapes whose scratch memory a model keeps


class CharRNN:
    """A character model: config plus parameters, with forward, backward and one-step generation."""

    def __init__(
        self, cfg: ModelConfig, params: Params | None = None, rng: np.random.Generator | None = None
    ) -> None:
        self.cfg = cfg
        if params is None:
            params = init_params(cfg, rng if rng is not None else np.random.default_rng(0))
        self.params = params
        self.dtype = np.dtype(cfg.dtype)
        self._workspaces: dict[tuple[int, int], cells.Workspace] = {}  # scratch, by (B, T)
        self._grads: Params | None = None  # loss_and_grads' output buffer

    def _workspace(self, B: int, T: int) -> cells.Workspace:
        """Scratch arrays for (B, T), kept so that training allocates nothing per step."""
        ws = self._workspaces.get((B, T))
        if ws is None:
            if len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[(B, T)] = cells.Workspace()
        return ws

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> np.ndarray:
        """Zero state, (L, S, H, B): S = 2 for the LSTM (a, c), 1 otherwise."""
        c = self.cfg
        return np.zeros((c.layers, c.state_size, c.hidden, batch), dtype=self.dtype)

    # ------------------------------------------------------------------ forward
    def _layer_input(
        self, layer: int, ids: np.ndarray, X: np.ndarray | None, ws: cells.Workspace
    ) -> np.ndarray:
        """xw = Wax x<t> + b for all T steps, (T, G*H, B), sigmoid rows halved for the cells."""
        p, dt = self.params, self.dtype
        Wax, b = p[f"l{layer}.Wax"], p[f"l{layer}.b"]
        GH, D = Wax.shape
        S = _SIGMOID_ROWS[self.cfg.cell] * self.cfg.hidden
        T, B = ids.shape
        xw = ws("xw", (T, GH, B), dt)
        if X is None:  # one-hot input: Wax x<t> is column ids[t, b] of Wax: a gather
            table = ws("xtable", (GH, D), dt)  # Wax with b added to every column
            np.add(Wax, b[:, None], out=table)
            table[:S] *= 0.5
            for t in range(T):
                np.take(table, ids[t], axis=1, out=xw[t])  # (GH, B)
        else:
            Wh = ws("Wxh", (GH, D), dt)
            np.copyto(Wh, Wax)
            Wh[:S] *= 0.5
            bh = ws("bh", (GH, 1), dt)
            np.copyto(bh[:, 0], b)
            bh[:S] *= 0.5
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

        x: (B, T) integer ids; state: (L, S, H, B) or None for zeros; rng: dropout
        (training) if given and cfg.dropout > 0. Returns (logits (T*B, V) in
        time-major row order, final state (L, S, H, B), cache).
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
        cache = Cache()
        cache.ids = ids
        final = np.empty_like(state)  # fresh: callers keep it across calls
        X: np.ndarray | None = None
        Xf: np.ndarray | None = None
        if cfg.embedding:
            X = ws("embedded", (T, cfg.embedding, B), dt)
            np.copyto(X, p["embed"][ids].transpose(0, 2, 1))  # (T, E, B)
        drop = rng is not None and cfg.dropout > 0
        for layer in range(cfg.layers):
            lw = ws.child(f"l{layer}")
            xw = self._layer_input(layer, ids, X, lw)
            Waa = p[f"l{layer}.Waa"]
            if cfg.cell == "lstm":
                peep = p[f"l{layer}.p"] if cfg.peephole else None
                A, lc = cells.lstm_forward(
                    xw, state[layer, 0], state[layer, 1], Waa, peep, ws=lw, halved=True
                )
                final[layer, 0], final[layer, 1] = A[-1], lc.cs[-1]
            elif cfg.cell == "gru":
                A, lc = cells.gru_forward(xw, state[layer, 0], Waa, ws=lw, halved=True)
                final[layer, 0] = A[-1]
            else:
                A, lc = cells.rnn_forward(xw, state[layer, 0], Waa, cfg.activation, ws=lw)
                final[layer, 0] = A[-1]
            cache.layers.append(lc)
            cache.inputs.append(X)
            cache.inputs_f.append(Xf)
            mask = None
            Af = lc.hsf[:, B:]  # (H, T*B) a<1>..a<T>, feature-major
            if drop:  # inverted dropout: scale at train time, nothing to do at test time
                keep = 1.0 - cfg.dropout
                mask = (rng.random(A.shape, dtype=dt) < keep).astype(dt)
                mask /= keep
                A = np.multiply(A, mask, out=lw("dropped", A.shape, dt))
                Af = cells.feature_major(A, lw("droppedf", (H, T * B), dt))
            cache.masks.append(mask)
            X, Xf = A, Af
        cache.top = Xf  # (H, T*B)
        logits = ws("logits", (T * B, cfg.vocab_size), dt)
        np.matmul(Xf.T, p["Wya"].T, out=logits)  # (T*B, H) @ (H, V)
        logits += p["by"]
        return logits, final, cache

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _log_softmax_nll(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-position -log p(y) and the softmax, stable (log-sum-exp); logits is overwritten."""
        logits -= logits.max(axis=1, keepdims=True)
        rows = np.arange(len(y))
        zy = logits[rows, y]  # taken before exp: exp(zy) may underflow to 0
        np.exp(logits, out=logits)  # logits now holds e = exp(z - max)
        s = logits.sum(axis=1)  # (N,)
        nll = np.log(s) - zy
        logits /= s[:, None]
        return nll, logits

    def loss(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None = None):
        """Mean cross-entropy in nats per character (no dropout, no gradients).

        Returns (mean_nats, final_state). See :meth:`nll` for per-position values.
        """
        nll, final = self.nll(x, y, state)
        return float(nll.mean()), final

    def nll(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None = None):
        """-log p(y<t> | x<≤t>) for every position, (B, T), and the final state."""
        B, T = x.shape
        logits, final, _ = self._forward(x, state, None, self._workspace(B, T))
        yt = np.ascontiguousarray(y.T).reshape(-1)
        z = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        nll = lse - z[np.arange(T * B), yt]
        return nll.reshape(T, B).T, final

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
        ws = self._workspace(B, T)
        logits, final, cache = self._forward(x, state, rng, ws)
        N = T * B
        yt = ws("targets", (N,), np.intp)
        np.copyto(yt.reshape(T, B), y.T)  # time-major like the logits
        rows = ws("rows", (N,), np.intp)
        rows[...] = np.arange(N)
        # softmax in place: logits becomes exp(z - max), then ŷ
        mx = ws("rowmax", (N, 1), self.dtype)
        np.max(logits, axis=1, keepdims=True, out=mx)
        logits -= mx
        zy = logits[rows, yt]  # taken before exp: exp(zy) may underflow to 0
        np.exp(logits, out=logits)
        s = ws("rowsum", (N,), self.dtype)
        np.sum(logits, axis=1, out=s)
        nll = np.log(s) - zy  # (N,)
        w = None  # (N,) 1 on real positions, 0 on padding (when a mask is given)
        if mask is not None:
            w = np.ascontiguousarray(mask.T, dtype=self.dtype).reshape(N)  # time-major
            N = max(int(mask.sum()), 1)
            nll *= w
        loss = float(np.sum(nll, dtype=np.float64) / N)
        # ∂loss/∂logits = (ŷ - onehot(y)) / N, in place
        np.reciprocal(s, out=s)
        s *= 1.0 / N
        if w is not None:
            s *= w
        logits *= s[:, None]
        dlogits = logits
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
        N = T * B
        np.matmul(dlogits.T, cache.top.T, out=grads["Wya"])  # (V, N) @ (N, H)
        np.sum(dlogits, axis=0, out=grads["by"])
        top = cfg.layers - 1
        dA = ws.child(f"l{top}")("dA", (T, H, B), dt)
        Wya = p["Wya"]
        # (T, H, B): T products (H, V) @ (V, B), straight into the cells' layout
        np.matmul(Wya.T, dlogits.reshape(T, B, V).transpose(0, 2, 1), out=dA)
        dstate = np.zeros((cfg.layers, cfg.state_size, H, B), dtype=dt)
        onehot = None
        for layer in range(top, -1, -1):
            lw = ws.child(f"l{layer}")
            mask = cache.masks[layer]
            if mask is not None:
                dA *= mask
            lc = cache.layers[layer]
            dWaa = grads[f"l{layer}.Waa"]
            if cfg.cell == "lstm":
                dZf, (da0, dc0), g = cells.lstm_backward(dA, lc, lw, dWaa)
                dstate[layer, 0], dstate[layer, 1] = da0, dc0
                if cfg.peephole:
                    grads[f"l{layer}.p"][...] = g["p"]
            elif cfg.cell == "gru":
                dZf, dc0, g = cells.gru_backward(dA, lc, lw, dWaa)
                dstate[layer, 0] = dc0
            else:
                dZf, da0, g = cells.rnn_backward(dA, lc, lw, dWaa)
                dstate[layer, 0] = da0
            GH = dZf.shape[0]
            np.sum(dZf, axis=1, out=grads[f"l{layer}.b"])
            X = cache.inputs[layer]
            Wax = p[f"l{layer}.Wax"]
            if X is None:  # one-hot input: Σ over positions of dz into column ids[t, b]
                onehot = self._onehot(ids, ws)
                np.matmul(dZf, onehot, out=grads[f"l{layer}.Wax"])  # (GH, N) @ (N, V)
                continue
            D = X.shape[1]
            Xf = cache.inputs_f[layer]
            if Xf is None:
                Xf = cells.feature_major(X, lw("Xf", (D, N), dt))
            np.matmul(dZf, Xf.T, out=grads[f"l{layer}.Wax"])  # (GH, N) @ (N, D)
            if layer > 0:
                WaxT = lw("WaxT", (D, GH), dt)
                np.copyto(WaxT, Wax.T)
                dA = ws.child(f"l{layer - 1}")("dA", (T, D, B), dt)
                # (T, D, B): T products (D, GH) @ (GH, B)
                np.matmul(WaxT, dZf.reshape(GH, T, B).transpose(1, 0, 2), out=dA)
            else:  # learned embedding: scatter dX into the rows of the ids
                onehot = self._onehot(ids, ws)
                dXf = np.matmul(Wax.T, dZf, out=lw("dXf", (D, N), dt))  # (E, N)
                np.matmul(onehot.T, dXf.T, out=grads["embed"])  # (V, N) @ (N, E)
        return dstate

    def _onehot(self, ids: np.ndarray, ws: cells.Workspace | None = None) -> np.ndarray:
        """(T*B, V) one-hot rows in time-major order: a product with it is a scatter-add."""
        flat = ids.reshape(-1)
        shape = (flat.size, self.cfg.vocab_size)
        oh = np.empty(shape, self.dtype) if ws is None else ws("onehot", shape, self.dtype)
        oh.fill(0)
        oh[np.arange(flat.size), flat] = 1.0
        return oh

    # ------------------------------------------------------------------ generation
    def step(self, ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed one character per stream. ids: (B,) ints; state: (L, S, H, B).

        Returns (logits (B, V), new state). The straightforward version: the
        sampler keeps a leaner loop for speed and is checked against this.
        """
        cfg, p = self.cfg, self.params
        new = np.empty_like(state)
        if cfg.embedding:
            x = p["embed"][ids].T  # (E, B)
        for layer in range(cfg.layers):
            Wax, Waa, b = p[f"l{layer}.Wax"], p[f"l{layer}.Waa"], p[f"l{layer}.b"]
            if layer == 0 and not cfg.embedding:
                xw = Wax[:, ids] + b[:, None]  # (GH, B) column gather
            else:
                xw = Wax @ x + b[:, None]
            if cfg.cell == "lstm":
                peep = p[f"l{layer}.p"] if cfg.peephole else None
                a, c = cells.lstm_step(xw, state[layer, 0], state[layer, 1], Waa, peep)
                new[layer, 0], new[layer, 1] = a, c
            elif cfg.cell == "gru":
                a = cells.gru_step(xw, state[layer, 0], Waa)
                new[layer, 0] = a
            else:
                a = cells.rnn_step(xw, state[layer, 0], Waa, cfg.activation)
                new[layer, 0] = a
            x = a
        logits = (p["Wya"] @ x).T + p["by"]  # (B, V)
        return logits, new
