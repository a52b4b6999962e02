"""The matmul-only limits of a training step and of a sampled character, and where charrnn's
training step spends its time.

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

The sampling limit: the products one generated character needs for B streams, at their shapes,
each timed alone (float32, the best of many calls): per layer the recurrent product(s)
(GH×H)@(H×B) and, above layer 0, the input product (GH×H)@(H×B), or the one stacked product
[Wax | Waa]@[x; a<t-1>] (GH×2H)@(2H×B) where the sampler's kernel stacks them; layer 0's input
is the gather of B columns of the (GH, V+1) table the kernel gathers from (a view at B = 1); and
the output product Wya (V×H)@(H×B). B divided by the sum is a ceiling in chars/s for sampling
with the same products. At B = 1 every product is a matrix-vector product that reads each
weight once, so the limit is also a bandwidth: weight bytes per character / product time.
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
    gather: bool = False  # not a product: n columns of an (m, k) table, copied (sampling)

    @property
    def flops(self) -> int:
        return 0 if self.gather else 2 * self.m * self.k * self.n * self.count

    @property
    def weight_bytes(self) -> int:
        """float32 bytes of the weights read per call: the whole (m, k) matrix, or for a
        gather the n columns it copies."""
        return 4 * self.m * (self.n if self.gather else self.k)


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


def sample_products(cell: str, V: int, H: int, L: int, B: int, stacked: bool) -> list[Product]:
    """The products (and layer 0's gather) of one sampled character for B streams, in the
    order of the sampler's kernel step, at their shapes (float32).

    ``stacked``: above layer 0 the kernel multiplies [Wax | Waa] by [x<t>; a<t-1>] in one
    product (``charrnn.cells.Cell.stacks_input``: only for a cell with one recurrent block).
    """
    blocks = RECURRENT_BLOCKS[cell]
    G = sum(blocks)
    if stacked and len(blocks) != 1:
        raise ValueError(f"{cell}: a cell with {len(blocks)} recurrent products cannot stack")
    out = [Product("sample", "l0 input gather", G * H, V + 1, B, 1, True, gather=True)]
    for layer in range(L):
        if layer and stacked:
            out.append(Product("sample", f"l{layer} [Wax | Waa]", G * H, 2 * H, B, 1, True))
            continue
        if layer:
            out.append(Product("sample", f"l{layer} input", G * H, H, B, 1, True))
        for rows in blocks:
            out.append(Product("sample", f"l{layer} recurrent", rows * H, H, B, 1, True))
    out.append(Product("sample", "output", V, H, B, 1, True))
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
    # np.dot: the same BLAS call as np.matmul, cheaper to make (the step's per-step
    # products use it), so the ceiling is the higher of the two
    np.dot(a, b, out=c)
    best = math.inf
    for _ in range(repeats * max(p.count, 10) if p.count > 1 else repeats):
        t = clock()
        np.dot(a, b, out=c)
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


def time_sample_product(p: Product, repeats: int, budget_s: float = 0.05) -> float:
    """Seconds of one call of ``p``: the best of about ``budget_s`` of calls (at least
    ``repeats`` and 10, at most 2000). Many calls, because a single one is easily doubled: a
    microsecond product by a timer tick, a 2-thread product by a neighbour holding one core for
    a time slice (~12 ms seen here). Each is timed as the kernel calls it: a product as
    np.dot(W, x, out=...), a gather as a view of one column at B = 1, else take(mode="clip")
    into a buffer."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((p.m, p.k), dtype=np.float32)
    c = np.empty((p.m, p.n), dtype=np.float32)
    if p.gather and p.n == 1:
        cols = a.T[:, :, None].copy()  # (k, m, 1): [i] is one column, a view

        def call() -> object:
            return cols[3 % p.k]

    elif p.gather:
        ids = rng.integers(0, p.k, p.n)

        def call() -> object:
            return np.take(a, ids, axis=1, out=c, mode="clip")

    else:
        b = rng.standard_normal((p.k, p.n), dtype=np.float32)

        def call() -> object:  # np.dot as the kernel calls it: matmul's BLAS call, ~0.5 µs less
            return np.dot(a, b, out=c)

    t = clock()
    call()
    first = clock() - t
    calls = int(min(2000, max(repeats, 10, budget_s / max(first, 1e-7))))
    return _best_time(call, calls)


def time_sample_products(
    products: list[Product], repeats: int, best: list[float] | None = None
) -> list[float]:
    """Seconds of each product (:func:`time_sample_product`), or of each the better of this
    try and ``best``, an earlier one's: a limit measured before and after the engines' rounds
    is not set by one busy moment."""
    secs = [time_sample_product(p, repeats) for p in products]
    return secs if best is None else [min(a, b) for a, b in zip(secs, best, strict=True)]


def sample_limit_figures(products: list[Product], secs: list[float], B: int) -> dict:
    """chars/s, GFLOP/s and weight bandwidth of a step whose products take ``secs``."""
    total = sum(secs)
    weight_bytes = sum(p.weight_bytes for p in products)
    return {
        "chars_per_s": B / total,
        "step_s": total,
        "flops_per_step": sum(p.flops for p in products),
        "gflops": sum(p.flops for p in products) / total / 1e9,
        "weight_bytes_per_step": weight_bytes,  # every weight once, and the gathered columns
        "weight_bytes_per_char": weight_bytes / B,
        "weight_gbps": weight_bytes / total / 1e9,  # at B = 1: the bandwidth the limit implies
        "products": [{**asdict(p), "seconds": s} for p, s in zip(products, secs, strict=True)],
    }


def against_limit(
    chars_per_s: dict[str, float], limit: dict, target: float | None, reference: str = "pytorch"
) -> dict:
    """Each engine's fraction of the limit and the weight bandwidth its speed implies, and
    what ``target`` × the reference's speed needs as a fraction of the limit: above 1, no
    implementation of these products reaches the target ("beyond the limit")."""
    out: dict = {
        name: {
            "limit_fraction": cps / limit["chars_per_s"],
            "weight_gbps": cps * limit["weight_bytes_per_char"] / 1e9,
        }
        for name, cps in chars_per_s.items()
    }
    if target is not None and reference in chars_per_s:
        needed = target * chars_per_s[reference]
        out["target_chars_per_s"] = needed
        out["target_limit_fraction"] = needed / limit["chars_per_s"]
        out["target_weight_gbps"] = needed * limit["weight_bytes_per_char"] / 1e9
        out["beyond_limit"] = needed > limit["chars_per_s"]
    return out


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
    ws = model._ws
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
