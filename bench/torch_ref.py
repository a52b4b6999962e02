"""The PyTorch reference for the benchmark: the same character model, trained and sampled as
a PyTorch user would write it. Benchmark-only: charrnn never imports this (or torch).

    ids (T, B) -> F.one_hot (T, B, V) -> nn.LSTM / nn.GRU / nn.RNN (time-major) -> nn.Linear(H, V)

One-hot input is the closest equivalent of charrnn's default (no learned embedding: layer 0's
Wax multiplies a one-hot vector, which charrnn does as a column gather). ``nn.Embedding(V, 4H)``
would be a gather too, but nn.LSTM cannot take pre-projected gates, so it would give up the
fused cell; ``F.one_hot`` feeds the fused kernels at the cost of one small (T·B, V) @ (V, G·H)
product per layer-0 pass, which is counted in the FLOP model anyway.

Training step: cross-entropy (mean over B·T), backward, ``clip_grad_norm_(5.0)``, Adam(2e-3),
hidden state detached and carried between batches (truncated BPTT), exactly like charrnn's trainer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLIP_NORM = 5.0


class TorchCharModel(nn.Module):
    """Time-major char model: (T, B) ids -> (T*B, V) logits, like charrnn's forward."""

    def __init__(self, cell: str, vocab: int, hidden: int, layers: int) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.cell, self.vocab, self.hidden, self.layers = cell, vocab, hidden, layers
        self.rnn = rnn(vocab, hidden, num_layers=layers)  # batch_first=False: (T, B, V)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state=None):
        T, B = x.shape
        oh = F.one_hot(x, self.vocab).to(torch.float32)  # (T, B, V)
        A, state = self.rnn(oh, state)  # (T, B, H)
        return self.out(A.reshape(T * B, self.hidden)), state  # (T*B, V) time-major rows

    def zero_state(self, batch: int):
        z = torch.zeros(self.layers, batch, self.hidden)
        return (z, z.clone()) if self.cell == "lstm" else z


def detach(state):
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def to_time_major(a: np.ndarray) -> torch.Tensor:
    """(B, T) int ids from charrnn's batches -> (T, B) int64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(a.T, dtype=np.int64))


def copy_from_charrnn(tm: TorchCharModel, params) -> bool:
    """Load charrnn's parameters into the torch model where the two cells are the same math.

    LSTM: charrnn's gate rows are [Γo, Γu, Γf, c~], PyTorch's [i, f, g, o] = [Γu, Γf, c~, Γo].
    RNN: identical. GRU: not the same cell (the lecture GRU applies Γr before the recurrent
    product, PyTorch's after it), so it keeps PyTorch's own initialisation; returns False then.
    PyTorch has two biases per layer (b_ih, b_hh): b_ih takes charrnn's b, b_hh is zeroed and
    frozen (a second trainable bias would get the same gradient and move twice as fast under Adam).
    """
    if tm.cell == "gru":
        return False
    H = tm.hidden

    def order(w: np.ndarray) -> np.ndarray:
        if tm.cell != "lstm":
            return w
        o, u, f, c = (w[k * H : (k + 1) * H] for k in range(4))
        return np.concatenate([u, f, c, o])

    with torch.no_grad():
        for layer in range(tm.layers):
            getattr(tm.rnn, f"weight_ih_l{layer}").copy_(
                torch.from_numpy(order(np.asarray(params[f"l{layer}.Wax"])))
            )
            getattr(tm.rnn, f"weight_hh_l{layer}").copy_(
                torch.from_numpy(order(np.asarray(params[f"l{layer}.Waa"])))
            )
            getattr(tm.rnn, f"bias_ih_l{layer}").copy_(
                torch.from_numpy(order(np.asarray(params[f"l{layer}.b"])))
            )
            b_hh = getattr(tm.rnn, f"bias_hh_l{layer}")
            b_hh.zero_()
            b_hh.requires_grad_(False)  # one bias per layer, as in charrnn: same math, same Adam
        tm.out.weight.copy_(torch.from_numpy(np.asarray(params["Wya"])))
        tm.out.bias.copy_(torch.from_numpy(np.asarray(params["by"])))
    return True


class TorchTrainer:
    """One engine of the benchmark: model, Adam, carried hidden state, one step at a time."""

    def __init__(
        self,
        cell: str,
        vocab: int,
        hidden: int,
        layers: int,
        batch: int,
        lr: float = 2e-3,
        seed: int = 0,
        charrnn_params=None,
    ) -> None:
        torch.manual_seed(seed)
        self.model = TorchCharModel(cell, vocab, hidden, layers)
        self.same_init = (
            copy_from_charrnn(self.model, charrnn_params) if charrnn_params is not None else False
        )
        # fused=True is PyTorch's fastest Adam on CPU (one kernel over all tensors); the
        # arithmetic is the same as charrnn's (eps added to the bias-corrected sqrt(v))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=lr, **adam_options())
        self.batch = batch
        self.state = self.model.zero_state(batch)

    def reset_state(self) -> None:
        self.state = self.model.zero_state(self.batch)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on charrnn's (B, T) batch; returns the loss (nats/char)."""
        xt, yt = to_time_major(x), to_time_major(y).reshape(-1)
        self.opt.zero_grad(set_to_none=True)
        logits, state = self.model(xt, detach(self.state))
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
        self.opt.step()
        self.state = detach(state)
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, batches) -> float:
        """Mean nats/char over every batch of a split, state carried from zero (as charrnn's)."""
        state = self.model.zero_state(batches.batch_size)
        total, count = 0.0, 0
        for k in range(batches.n_batches):
            x, y = batches.batch(k)
            logits, state = self.model(to_time_major(x), state)
            nll = F.cross_entropy(logits, to_time_major(y).reshape(-1), reduction="sum")
            total += float(nll)
            count += x.size
        return total / count


def adam_options() -> dict[str, bool]:
    """{"fused": True} where this PyTorch has a fused CPU Adam (2.4 and later), else {}."""
    try:
        torch.optim.Adam([nn.Parameter(torch.zeros(1))], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}


@torch.inference_mode()
def sample(
    model: TorchCharModel, start_id: int, length: int, n: int, generator: torch.Generator
) -> np.ndarray:
    """n streams of ``length`` characters: step one character, softmax, multinomial, feed back.

    Starts from the newline like charrnn's sampler. Returns (n, length) ids (decoded by the
    caller, as charrnn's stream decodes its chunks).
    """
    x = torch.full((1, n), start_id, dtype=torch.int64)  # (1, n): one time step
    state = None
    out = torch.empty((length, n), dtype=torch.int64)
    for i in range(length):
        logits, state = model(x, state)  # (n, V)
        probs = torch.softmax(logits, dim=-1)
        ids = torch.multinomial(probs, 1, generator=generator)  # (n, 1)
        out[i] = ids[:, 0]
        x = ids.T
    return out.T.numpy()


def matmul_gflops(n: int, repeats: int) -> list[float]:
    """GFLOP/s of an n³ float32 torch.mm, one figure per repeat (after one warm-up)."""
    import time

    a = torch.rand(n, n)
    b = torch.rand(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        out.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return out
