#!/usr/bin/env python3
"""Where sampling time goes, call by call: what is left when a sampling target is not met.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python3 bench/sample_profile.py [--configs a,b,c]

Batch 1: every NumPy call of one generated character (the sampler's Kernel.step with the cell's
step function, the output layer and the Gumbel-max draw), each timed alone on the kernel's own
buffers, against the whole character timed in Sampler.stream; the difference is Python (slicing,
attribute lookups, function calls). Batch 256: one step of the kernel and one draw against the
matrix products of that step timed alone at their shapes (what no implementation of the same
math can skip); the rest is elementwise work (gathers, adds, activations) and Python.

CPU time of this process, best of several tries, so a busy neighbour cannot inflate it; run it
on one thread to compare with bench/cpu_table.py's one-thread PyTorch figures.
"""

from __future__ import annotations

import time
import timeit
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"a": (1, 128), "b": (2, 256), "c": (2, 512)}  # L, H
CLOCK = time.process_time


def best_us(fn, number: int, repeat: int = 7) -> float:
    """Microseconds per call of fn, best of ``repeat`` runs of ``number`` calls (CPU time)."""
    return min(timeit.repeat(fn, number=number, repeat=repeat, timer=CLOCK)) / number * 1e6


def step_calls(cell: str, H: int, k, layer: int):
    """(name, fn, count) for each NumPy call of one step of ``layer`` at batch 1, on views
    made beforehand (the step makes its own slices: their cost is in the Python remainder)."""
    g, keep, work = k.buf
    w = k.weights[layer]
    xw = k.table0_col[3]
    a = np.zeros((H, 1), dtype=k.dtype)
    stacked = layer > 0 and k.stacked
    one = np.array(1, dtype=k.dtype)  # as cells.sigmoid_of_negated adds and divides
    operand = np.zeros((2 * H, 1), dtype=k.dtype) if stacked else a
    out = []
    if layer and not stacked:
        out.append(("input product Wax a_below", lambda: np.dot(k.Wx[0], a, out=k.xw), 1))
        out.append(("+= bias", lambda: k.xw.__iadd__(k.bx[0]), 1))
    rows, cols = w.Wh.shape
    if cell == "rnn":
        what = "[Wax | Waa] [x; a<t-1>]" if stacked else "Waa a<t-1>"
        out.append((f"product {what} ({rows}×{cols})", lambda: np.dot(w.Wh, operand, out=g), 1))
        out.append(("g += xw", lambda: g.__iadd__(xw), 1))
        out.append(("tanh", lambda: np.tanh(g, out=a), 1))
    elif cell == "gru":
        gs, gr, ct = g[: 2 * H], g[:H], g[2 * H :]  # [Γr, Γu] pre-activations, Γr, c~
        xs, xc = xw[: 2 * H], xw[2 * H :]
        Wru, Wc, step = w.Wh[: 2 * H], w.Wh[2 * H :], work[:H]
        out += [
            (f"product Wr,Wu c<t-1> ({2 * H}×{H})", lambda: np.dot(Wru, a, out=gs), 1),
            ("gs += xw (2H)", lambda: gs.__iadd__(xs), 1),
            ("exp (2H)", lambda: np.exp(xs, out=work[: 2 * H]), 1),  # of steady values: no inf
            ("+= 1, 1 / (2H): σ = 1/(1 + e^-z)", lambda: gs.__iadd__(one), 2),
            ("Γr * c<t-1>", lambda: np.multiply(gr, a, out=keep), 1),
            (f"product Wc (Γr*c<t-1>) ({H}×{H})", lambda: np.dot(Wc, keep, out=ct), 1),
            ("c~ += xw", lambda: ct.__iadd__(xc), 1),
            ("tanh (H)", lambda: np.tanh(ct, out=ct), 1),
            ("c~ - c<t-1>, *= Γu, + c<t-1>", lambda: np.subtract(ct, a, out=step), 3),
        ]
    else:
        g3, go, gf, ct = g[: 3 * H], g[:H], g[2 * H : 3 * H], g[3 * H :]  # σ rows, Γo, Γf, c~
        c, gf_c = np.zeros((H, 1), dtype=k.dtype), work[:H]
        out += [
            (f"product Waa a<t-1> ({4 * H}×{H})", lambda: np.dot(w.Wh, a, out=g), 1),
            ("g += xw (4H)", lambda: g.__iadd__(xw), 1),
            ("exp (3H)", lambda: np.exp(xw[: 3 * H], out=work[: 3 * H]), 1),  # steady values
            ("+= 1, 1 / (3H): σ = 1/(1 + e^-z)", lambda: g3.__iadd__(one), 2),
            ("tanh (H): c~", lambda: np.tanh(ct, out=ct), 1),
            ("Γf * c<t-1>, Γu * c~", lambda: np.multiply(gf, c, out=gf_c), 2),
            ("c += Γf c<t-1>", lambda: c.__iadd__(gf_c), 1),
            ("tanh(c)", lambda: np.tanh(c, out=keep), 1),
            ("a = Γo * tanh(c)", lambda: np.multiply(go, keep, out=a), 1),
        ]
    return out


def batch1(cell: str, cfg: str, vocab, smp) -> None:
    from charrnn.sampler import SampleOptions

    L, H = CONFIGS[cfg]
    k = smp.kernel
    state = k.initial_state(1)
    k.step(np.array([3]), state)
    ids = np.array([3])
    calls = [("gather: table0_col[id]", lambda: k.table0_col[ids[0]], 1)]
    for layer in range(L):
        calls += [(f"L{layer} {n}", f, c) for n, f, c in step_calls(cell, H, k, layer)]
    a = np.zeros((H, 1), dtype=k.dtype)
    noise = np.zeros((vocab.size, 1), dtype=k.dtype)
    out = np.empty(1, dtype=np.int64)
    rng = np.random.default_rng(0)

    def block():
        e = rng.standard_exponential(size=(64, vocab.size, 1))
        np.log(e, out=e)
        e *= -1.0
        return e.astype(k.dtype)

    calls += [
        (f"output product Wya a ({vocab.size}×{H})", lambda: np.dot(k.Wy, a, out=k.logits), 1),
        ("logits += by", lambda: k.logits.__iadd__(k.by), 1),
        ("draw: noise += logits", lambda: noise.__iadd__(k.logits), 1),
        ("draw: argmax(out=)", lambda: noise.argmax(axis=0, out=out), 1),
        ("draw: Gumbel block of 64 steps, per step", block, 1 / 64),
    ]
    timed = [(name, best_us(fn, 20000), n) for name, fn, n in calls]
    n_calls = sum(n for _, _, n in timed if n >= 1)
    total = sum(us * n for _, us, n in timed)
    srng = np.random.default_rng(0)

    def whole():
        for _ in smp.stream(2000, SampleOptions(1.0), srng, n=1):
            pass

    char = best_us(whole, 1, 5) / 2000
    click.echo(
        f"\n{cell} ({cfg}) {L}×{H}, batch 1: {char:.2f} µs per character "
        f"({1e3 / char:.1f}k chars/s); {n_calls} NumPy calls timed alone: {total:.2f} µs; "
        f"Python (slices, lookups, calls): {char - total:.2f} µs"
    )
    for name, us, n in timed:
        times = f" × {n:g} = {us * n:6.2f}" if n != 1 else ""
        click.echo(f"  {name:52} {us:7.2f} µs{times}")


def batch256(cell: str, cfg: str, vocab, smp, B: int = 256) -> None:
    from charrnn.sampler import Drawer, SampleOptions

    L, H = CONFIGS[cfg]
    k = smp.kernel
    state = k.initial_state(B)
    ids = np.random.default_rng(0).integers(0, vocab.size, B)
    logits = k.step(ids, state).copy()
    drawer = Drawer(SampleOptions(1.0), np.random.default_rng(0))
    n = {"a": 100, "b": 20, "c": 6}[cfg]
    step = best_us(lambda: k.step(ids, state), n, 5)
    draw = best_us(lambda: drawer(logits), n, 5)
    f32 = k.dtype
    G = len(k.cell.gates)
    rng = np.random.default_rng(1)

    def product(rows: int, cols: int) -> float:
        W = rng.random((rows, cols), dtype=np.float32).astype(f32)
        X = rng.random((cols, B), dtype=np.float32).astype(f32)
        out = np.empty((rows, B), dtype=f32)
        return best_us(lambda: np.matmul(W, X, out=out), n, 5)

    shapes = [(G * H, H)]  # layer 0: Waa a<t-1> (its input is a gather)
    for _ in range(1, L):
        shapes += [(G * H, 2 * H)] if k.stacked else [(G * H, H), (G * H, H)]
    shapes.append((vocab.size, H))
    prods = sum(product(r, c) for r, c in shapes)
    two = 2 * product(G * H, H) if L > 1 else 0.0
    one = product(G * H, 2 * H) if L > 1 else 0.0
    rest = step + draw - prods
    stacked = (
        f"; layer 1 as two products {two:.0f} µs, stacked [Wax | Waa] {one:.0f} µs" if L > 1 else ""
    )
    click.echo(
        f"{cell} ({cfg}) batch {B}: step {step:.0f} µs + draw {draw:.0f} µs = "
        f"{B / (step + draw) * 1e6 / 1e3:.1f}k chars/s; products alone {prods:.0f} µs "
        f"({100 * prods / (step + draw):.0f}%, limit {B / prods * 1e6 / 1e3:.1f}k chars/s); "
        f"the rest {rest:.0f} µs{stacked}"
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--configs", default="a,b,c", show_default=True)
@click.option("--cells", default="rnn,gru,lstm", show_default=True)
@click.option("--batches", default="1,256", show_default=True)
def main(configs: str, cells: str, batches: str) -> None:
    """Per-call profile of sampling at batch 1 and products against the rest at batch 256."""
    from charrnn.model import CharRNN, ModelConfig
    from charrnn.sampler import Sampler
    from charrnn.tokenizer import Vocab

    vocab = Vocab.from_text((ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8"))
    for batch in batches.split(","):
        for cfg in configs.split(","):
            L, H = CONFIGS[cfg]
            for cell in cells.split(","):
                mcfg = ModelConfig(vocab_size=vocab.size, cell=cell, hidden=H, layers=L)
                smp = Sampler(CharRNN(mcfg, rng=np.random.default_rng(0)), vocab)
                (batch1 if batch == "1" else batch256)(cell, cfg, vocab, smp)


if __name__ == "__main__":
    main()
