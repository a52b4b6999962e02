"""The matmul-only limit of a training step, and where charrnn's step spends its time.

The limit: every matrix product of one training step (forward and backward recurrent products,
the input-projection, weight-gradient and input-gradient products over all T·B columns, the
output layer), each timed alone at its real shape on this machine, float32. B·T divided by the
sum is a ceiling in chars/s that no implementation of the same math can pass (layer 0's one-hot
input projection is counted as the dense product PyTorch performs; charrnn gathers instead).

The profile splits one charrnn training step into phases: data (fetching the batch), forward
products and forward elementwise work (everything else in the forward pass: gathers, gate
activations, Python), backward products and backward elementwise work (including the softmax
and the loss), the optimizer (clipping and Adam), and the trainer's own bookkeeping. Products
are the ones charrnn performs, timed alone as above; elementwise = phase time - its products.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

clock = time.perf_counter  # bench/cpu_table.py sets time.process_time (CPU time, one thread)

# the per-step recurrent products of each cell: (rows, cols) of the weight blocks
# multiplied by a state (H, B); the GRU's candidate waits for Γr, so it has two
RECURRENT_BLOCKS = {"lstm": (4,), "gru": (2, 1), "rnn": (1,)}


@dataclass(frozen=True)
class Product:
    phase: str  # "forward" or "backward"
    what: str  # which product, e.g. "l0 recurrent"
    m: int  # an (m, k) @ (k, n) product ...
    k: int
    n: int
    count: int  # ... done this many times per training step
    charrnn: bool  # charrnn performs it as a product (layer 0's one-hot projection is a gather)

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


def step_products(cell: str, V: int, H: int, L: int, B: int, T: int) -> list[Product]:
    """Every matrix product of one training step, at its shape (float32, one-hot input)."""
    G = sum(RECURRENT_BLOCKS[cell])  # gate blocks
    N = T * B
    out: list[Product] = []
    for layer in range(L):
        D = V if layer == 0 else H
        out.append(Product("forward", f"l{layer} input projection", G * H, D, N, 1, layer > 0))
        for rows in RECURRENT_BLOCKS[cell]:
            out.append(Product("forward", f"l{layer} recurrent", rows * H, H, B, T, True))
    out.append(Product("forward", "output", N, H, V, 1, True))
    out.append(Product("backward", "dWya", V, N, H, 1, True))
    out.append(Product("backward", "dA (top)", H, V, N, 1, True))
    for layer in range(L - 1, -1, -1):
        D = V if layer == 0 else H
        for rows in RECURRENT_BLOCKS[cell][::-1]:
            out.append(Product("backward", f"l{layer} recurrent", H, rows * H, B, T, True))
        out.append(Product("backward", f"l{layer} dWaa", G * H, N, H, 1, True))
        out.append(Product("backward", f"l{layer} dWax", G * H, N, D, 1, True))
        if layer > 0:
            out.append(Product("backward", f"l{layer} dX", D, G * H, N, 1, True))
    return out


def time_product(p: Product, repeats: int) -> float:
    """Seconds per step of product ``p`` (float32): the best single call times ``p.count``.

    A ceiling is what the machine can do, so each call is timed alone and the fastest of
    ``repeats`` (times ``p.count``, at least 10) calls counts: a busy moment only slows one.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((p.m, p.k), dtype=np.float32)
    b = rng.standard_normal((p.k, p.n), dtype=np.float32)
    c = np.empty((p.m, p.n), dtype=np.float32)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(repeats * max(p.count, 10) if p.count > 1 else repeats):
        t = clock()
        np.matmul(a, b, out=c)
        best = min(best, clock() - t)
    return best * p.count


def measure_limit(cell: str, V: int, H: int, L: int, B: int, T: int, repeats: int = 5) -> dict:
    """The matmul-only limit of one training step, with every product's time."""
    products = step_products(cell, V, H, L, B, T)
    secs = [time_product(p, repeats) for p in products]
    total = sum(secs)
    return {
        "chars_per_s": B * T / total,
        "step_s": total,
        "gflops": sum(p.flops for p in products) / total / 1e9,
        "products": [{**asdict(p), "seconds": s} for p, s in zip(products, secs, strict=True)],
    }


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def profile_step(
    model: Any,
    batches: Any,
    optim_cfg: Any,
    limit: dict,
    train_step: Callable[[], object],
    repeats: int = 5,
) -> dict[str, float]:
    """Seconds per phase of one charrnn training step (see the module docstring).

    ``limit`` is :func:`measure_limit`'s result at the same shapes, ``train_step`` runs one
    whole trainer step; "other" is what the trainer adds to the phases. Every figure is the
    best of ``repeats`` tries, like the limit's, so that they add up on a busy machine.
    """
    from charrnn.optim import Optimizer, clip_gradients, segment_offsets

    x, y = batches.batch(0)
    B, T = x.shape
    state = model.initial_state(B)
    ws = model._workspace(B, T)
    fwd = _best_time(lambda: model._forward(x, state, None, ws), repeats)
    both = _best_time(lambda: model.loss_and_grads(x, y, state), repeats)
    data = _best_time(lambda: batches.batch(1 % batches.n_batches), repeats)
    flat = model.params.flat
    w, g, work = flat.copy(), np.empty_like(flat), np.empty_like(flat)
    offsets = segment_offsets([a.size for a in model.params.arrays.values()])
    opt = Optimizer(optim_cfg, flat.size, flat.dtype)
    grads = model.loss_and_grads(x, y, state)[1].flat

    def optimizer() -> None:
        np.copyto(g, grads)  # clipping and the step write into g; a copy costs ~1% of both
        clip_gradients(g, offsets, optim_cfg.clip_value, optim_cfg.clip_norm, work)
        opt.step(w, g, optim_cfg.lr)

    opt_s = _best_time(optimizer, repeats)
    prods = {"forward": 0.0, "backward": 0.0}
    for p in limit["products"]:
        if p["charrnn"]:
            prods[p["phase"]] += p["seconds"]
    phases = {
        "data": data,
        "forward products": prods["forward"],
        "forward elementwise": fwd - prods["forward"],
        "backward products": prods["backward"],
        "backward elementwise": both - fwd - prods["backward"],
        "optimizer": opt_s,
    }
    phases["other"] = _best_time(train_step, repeats) - sum(phases.values())
    return phases
