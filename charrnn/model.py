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
from dataclasses import dataclass
from typing import Any

import numpy as np

from charrnn import cells
from charrnn.cells import GATES

CELLS = tuple(GATES)


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # V: number of distinct characters
    cell: str = "lstm"  # "rnn" (vanilla), "gru" or "lstm"
    hidden: int = 128  # H: units per layer
    layers: int = 1  # L: stacked recurrent layers
    embedding: int = 0  # E: learned input embedding size; 0 = one-hot input (the lectures)
    dropout: float = 0.0  # drop rate on the non-recurrent connections, training only
    peephole: bool = False  # lstm only: gates also see c<t-1>
    activation: str = "tanh"  # rnn only: "tanh" or "relu"
    dtype: str = "float32"  # float64 for gradient checks

    def __post_init__(self) -> None:
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.vocab_size < 1 or self.hidden < 1 or self.layers < 1 or self.embedding < 0:
            raise ValueError("vocab_size, hidden and layers must be positive, embedding >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.activation not in ("tanh", "relu"):
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


def init_params(cfg: ModelConfig, rng: np.random.Generator) -> Params:
    """Uniform(±1/√H) weights, zero biases, forget-gate bias 1 (remember by default)."""
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
            params[f"l{layer}.b"][2 * H : 3 * H] = 1.0  # rows of Γf
    return params


class Cache:
    """What forward keeps for backward (explicit: backward depends on nothing else)."""

    def __init__(self) -> None:
        self.ids: np.ndarray | None = None  # (T, B) inputs
        self.layers: list[Any] = []  # per-layer cell caches
        self.inputs: list[np.ndarray | None] = []  # per-layer input X (T, D, B); None = one-hot
        self.masks: list[np.ndarray | None] = []  # per-layer dropout mask on its output
        self.top: np.ndarray | None = None  # (T*B, H) top activations, batch-major rows
        self.probs: np.ndarray | None = None  # (T*B, V) softmax


class CharRNN:
    """A character model: config plus parameters, with forward, backward and one-step generation."""

    def __init__(self, cfg: ModelConfig, params: Params | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.cfg = cfg
        if params is None:
            params = init_params(cfg, rng if rng is not None else np.random.default_rng(0))
        self.params = params
        self.dtype = np.dtype(cfg.dtype)

    # ------------------------------------------------------------------ state
    def initial_state(self, batch: int) -> np.ndarray:
        """Zero state, (L, S, H, B): S = 2 for the LSTM (a, c), 1 otherwise."""
        c = self.cfg
        return np.zeros((c.layers, c.state_size, c.hidden, batch), dtype=self.dtype)

    # ------------------------------------------------------------------ forward
    def _layer_input(self, layer: int, ids: np.ndarray, X: np.ndarray | None) -> np.ndarray:
        """xw = Wax x<t> + b for all T steps: (T, G*H, B)."""
        p = self.params
        Wax, b = p[f"l{layer}.Wax"], p[f"l{layer}.b"]
        if X is None:  # one-hot input: a column gather of Wax, done as a row gather of Waxᵀ
            xw = Wax.T[ids]  # (T, B, GH)
            xw = np.ascontiguousarray(xw.transpose(0, 2, 1))  # (T, GH, B)
        else:
            xw = np.matmul(Wax, X)  # (T, GH, B)
        xw += b[:, None]
        return xw

    def forward(self, x: np.ndarray, state: np.ndarray | None = None, *,
                rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, Cache]:
        """Run the model over a batch of sequences.

        x: (B, T) integer ids; state: (L, S, H, B) or None for zeros; rng: dropout
        (training) if given and cfg.dropout > 0. Returns (logits (T*B, V) in
        time-major row order, final state (L, S, H, B), cache).
        """
        cfg, p = self.cfg, self.params
        B, T = x.shape
        ids = np.ascontiguousarray(x.T)  # (T, B) time-major
        if state is None:
            state = self.initial_state(B)
        cache = Cache()
        cache.ids = ids
        final = np.empty_like(state)
        X: np.ndarray | None = None
        if cfg.embedding:
            X = np.ascontiguousarray(p["embed"][ids].transpose(0, 2, 1))  # (T, E, B)
        drop = rng is not None and cfg.dropout > 0
        for layer in range(cfg.layers):
            xw = self._layer_input(layer, ids, X)
            Waa = p[f"l{layer}.Waa"]
            if cfg.cell == "lstm":
                peep = p[f"l{layer}.p"] if cfg.peephole else None
                A, lc = cells.lstm_forward(xw, state[layer, 0], state[layer, 1], Waa, peep)
                final[layer, 0], final[layer, 1] = A[-1], lc.cs[-1]
            elif cfg.cell == "gru":
                A, lc = cells.gru_forward(xw, state[layer, 0], Waa)
                final[layer, 0] = A[-1]
            else:
                A, lc = cells.rnn_forward(xw, state[layer, 0], Waa, cfg.activation)
                final[layer, 0] = A[-1]
            cache.layers.append(lc)
            cache.inputs.append(X)
            mask = None
            if drop:  # inverted dropout: scale at train time, nothing to do at test time
                keep = 1.0 - cfg.dropout
                mask = (rng.random(A.shape, dtype=self.dtype) < keep).astype(self.dtype)
                mask /= keep
                A = A * mask
            cache.masks.append(mask)
            X = A
        top = np.ascontiguousarray(X.transpose(0, 2, 1)).reshape(T * B, cfg.hidden)  # (T*B, H)
        cache.top = top
        logits = top @ p["Wya"].T  # (T*B, V)
        logits += p["by"]
        return logits, final, cache

    # ------------------------------------------------------------------ loss
    @staticmethod
    def _log_softmax_nll(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-position -log p(y) and the softmax, stable (log-sum-exp); logits is overwritten."""
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)  # logits now holds e = exp(z - max)
        s = logits.sum(axis=1)  # (N,)
        rows = np.arange(len(y))
        nll = np.log(s) - np.log(logits[rows, y])
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
        logits, final, _ = self.forward(x, state)
        B, T = x.shape
        yt = np.ascontiguousarray(y.T).reshape(-1)
        z = logits - logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        nll = lse - z[np.arange(T * B), yt]
        return nll.reshape(T, B).T, final

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, state: np.ndarray | None = None, *,
                       rng: np.random.Generator | None = None):
        """Forward, softmax cross-entropy and backpropagation through time.

        x, y: (B, T) integer ids (y is x shifted by one). The loss is the mean over
        all B·T positions of -log ŷ<t>[y<t>] (the lectures' sum over time, divided
        by the number of characters). Returns (loss, grads: Params, final_state,
        d_state0) where d_state0 is ∂loss/∂state, shaped like state.
        """
        logits, final, cache = self.forward(x, state, rng=rng)
        yt = np.ascontiguousarray(y.T).reshape(-1)  # (T*B,) time-major like the logits
        nll, probs = self._log_softmax_nll(logits, yt)
        loss = float(nll.mean())
        dlogits = probs  # ∂loss/∂logits = (ŷ - onehot(y)) / N, in place
        dlogits[np.arange(len(yt)), yt] -= 1.0
        dlogits /= len(yt)
        grads, dstate = self.backward(dlogits, cache)
        return loss, grads, final, dstate

    # ------------------------------------------------------------------ backward
    def backward(self, dlogits: np.ndarray, cache: Cache) -> tuple[Params, np.ndarray]:
        """Gradients of every parameter and of the initial state, given ∂loss/∂logits."""
        cfg, p = self.cfg, self.params
        grads = p.zeros_like()
        ids = cache.ids
        T, B = ids.shape
        H = cfg.hidden
        grads["Wya"][...] = dlogits.T @ cache.top  # (V, H)
        grads["by"][...] = dlogits.sum(axis=0)
        dtop = dlogits @ p["Wya"]  # (T*B, H)
        dA = np.ascontiguousarray(dtop.reshape(T, B, H).transpose(0, 2, 1))  # (T, H, B)
        dstate = np.zeros((cfg.layers, cfg.state_size, H, B), dtype=self.dtype)
        onehot = None
        for layer in range(cfg.layers - 1, -1, -1):
            mask = cache.masks[layer]
            if mask is not None:
                dA *= mask
            lc = cache.layers[layer]
            if cfg.cell == "lstm":
                dZ, (da0, dc0), g = cells.lstm_backward(dA, lc)
                dstate[layer, 0], dstate[layer, 1] = da0, dc0
                if cfg.peephole:
                    grads[f"l{layer}.p"][...] = g["p"]
            elif cfg.cell == "gru":
                dZ, dc0, g = cells.gru_backward(dA, lc)
                dstate[layer, 0] = dc0
            else:
                dZ, da0, g = cells.rnn_backward(dA, lc)
                dstate[layer, 0] = da0
            grads[f"l{layer}.Waa"][...] = g["Waa"]
            grads[f"l{layer}.b"][...] = dZ.sum(axis=(0, 2))
            X = cache.inputs[layer]
            Wax = p[f"l{layer}.Wax"]
            if X is None:  # one-hot input: Σ over positions of dz into column ids[t, b]
                onehot = self._onehot(ids)
                GH = dZ.shape[1]
                dZf = dZ.transpose(1, 0, 2).reshape(GH, T * B)  # (GH, T*B)
                grads[f"l{layer}.Wax"][...] = dZf @ onehot  # (GH, V)
            else:
                grads[f"l{layer}.Wax"][...] = cells.outer_sum(dZ, X)
                dX = np.matmul(np.ascontiguousarray(Wax.T), dZ)  # (T, D, B)
                if layer > 0:
                    dA = dX
                else:  # learned embedding: scatter dX into the rows of the ids
                    onehot = self._onehot(ids)
                    dXb = dX.transpose(0, 2, 1).reshape(T * B, cfg.embedding)  # (T*B, E)
                    grads["embed"][...] = onehot.T @ dXb
        return grads, dstate

    def _onehot(self, ids: np.ndarray) -> np.ndarray:
        """(T*B, V) one-hot rows in time-major order: a product with it is a scatter-add."""
        flat = ids.reshape(-1)
        oh = np.zeros((flat.size, self.cfg.vocab_size), dtype=self.dtype)
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
