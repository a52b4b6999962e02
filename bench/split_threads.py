"""Would two Python threads, each running the recurrence over half of the batch, beat one?

    python3 bench/split_threads.py [--configs a,b,c] [--cells lstm,gru,rnn]

NumPy runs every elementwise ufunc on one thread; only the matrix products use OpenBLAS's
threads. The rows of a batch are independent sequences, so the recurrence of a layer (its T
steps forward and backward, where the elementwise work is) can run as two halves of the batch
on two Python threads: NumPy releases the GIL inside ufunc loops and BLAS calls. This script
times one layer's forward and backward over T steps (``Cell.forward`` + the cell's backward,
the part of a training step that cannot be one large product) four ways, each in a fresh
process so that OpenBLAS's thread count is set before it loads:

  one thread, BLAS 2 threads      what charrnn does on this machine's two cores
  one thread, BLAS 1 thread
  two threads over halves, BLAS 1 each thread does half the batch, products single-threaded
  two threads over halves, BLAS 2

and prints the time of each (one layer's T steps forward and backward), the best of several
repeats, and the speed-up of the best split over charrnn's way. (Measured 2026-11-29 on a
quiet machine: the split is slower at (a) and gains at most 13% at (b) and (c); see
bench/README.md.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import click

CONFIGS = {"a": (128, 32, 64), "b": (256, 32, 64), "c": (512, 64, 100)}  # H, B, T
WAYS = (  # (label, BLAS threads, Python threads)
    ("one thread, BLAS 2", 2, 1),
    ("one thread, BLAS 1", 1, 1),
    ("two threads over halves, BLAS 1", 1, 2),
    ("two threads over halves, BLAS 2", 2, 2),
)


def measure(cell_name: str, H: int, B: int, T: int, threads: int, repeats: int) -> float:
    """Seconds per forward + backward of one layer over T steps, the batch split in
    ``threads`` parts each run by its own Python thread (best of ``repeats``)."""
    import numpy as np

    from charrnn import cells

    cell = cells.CELLS[cell_name]
    rng = np.random.default_rng(0)
    GH, S = len(cell.gates) * H, len(cell.states)
    lw = cells.LayerWeights((rng.standard_normal((GH, H)) * 0.1).astype(np.float32))
    parts = []
    for _ in range(threads):
        b = B // threads
        xw = rng.standard_normal((T, GH, b)).astype(np.float32)
        parts.append((xw, np.zeros((S, H, b), np.float32), cells.Workspace()))

    def one(part) -> None:
        xw, state0, ws = part
        A, cache = cell.forward(xw, state0, lw, ws)
        cell.backward(np.ones_like(A), cache, ws)

    def step() -> None:
        workers = [threading.Thread(target=one, args=(p,)) for p in parts[1:]]
        for w in workers:
            w.start()
        one(parts[0])
        for w in workers:
            w.join()

    step()
    n = max(1, int(0.3 / max(_time(step), 1e-6)))  # ~0.3 s per repeat
    return min(_time(step, n) for _ in range(repeats))


def _time(fn, n: int = 1) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _child(spec: str) -> None:
    args = json.loads(spec)
    print(json.dumps(measure(**args)))


def _run(cell: str, cfg: str, blas: int, threads: int, repeats: int) -> float:
    H, B, T = CONFIGS[cfg]
    spec = json.dumps(dict(cell_name=cell, H=H, B=B, T=T, threads=threads, repeats=repeats))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas), "OMP_NUM_THREADS": str(blas)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec], env=env, check=True, capture_output=True
    )
    return float(out.stdout)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--configs",
    default="a,b,c",
    show_default=True,
    help="a: H=128, B=32, T=64; b: H=256, B=32, T=64; c: H=512, B=64, T=100.",
)
@click.option("--cells", "cell_names", default="lstm,gru,rnn", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--child", hidden=True)
def main(configs: str, cell_names: str, repeats: int, child: str | None) -> None:
    """Time one layer's recurrence on one thread against two threads over batch halves."""
    if child:
        return _child(child)
    print(f"{'cell':5s} {'cfg':3s} " + " ".join(f"{w[0]:>33s}" for w in WAYS) + "  speed-up")
    for cfg in configs.split(","):
        for cell in cell_names.split(","):
            ms = [_run(cell, cfg, blas, thr, repeats) * 1e3 for _, blas, thr in WAYS]
            best_split = min(ms[2], ms[3])
            print(
                f"{cell:5s} ({cfg}) "
                + " ".join(f"{m:30.2f} ms" for m in ms)
                + f"  {ms[0] / best_split:8.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
