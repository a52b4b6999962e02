"""Issue 15's table in CPU time on one thread: limit, charrnn, PyTorch, fractions, profile.

    PYTHONPATH=. python3 bench/cpu_table.py [--configs a,b] [--cells lstm,gru] > table.md

``make bench`` measures wall-clock time with every thread, which is the right figure on a
quiet machine. On a machine shared with other work, wall-clock figures and 2-thread OpenBLAS
stall; this script runs every engine on one thread (OpenBLAS, oneDNN/MKL) and counts the
process's CPU time, keeping the best of several tries, so that the ratios it prints (charrnn /
limit, PyTorch / limit, charrnn / PyTorch) survive a busy neighbour. Absolute figures are
one-thread figures: roughly half of ``make bench``'s for the products.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import limit  # noqa: E402

CONFIGS = {"a": (1, 128, 32, 64), "b": (2, 256, 32, 64), "c": (2, 512, 64, 100)}  # L, H, B, T


def best(fn, tries: int) -> float:
    fn()
    out = float("inf")
    for _ in range(tries):
        t = time.process_time()
        fn()
        out = min(out, time.process_time() - t)
    return out


@click.command()
@click.option("--configs", default="a,b,c", show_default=True)
@click.option("--cells", default="lstm,gru,rnn", show_default=True)
@click.option("--tries", default=5, show_default=True, help="Best of this many, per figure.")
def main(configs: str, cells: str, tries: int) -> None:
    import torch
    import torch_ref

    from charrnn.batches import make_batches
    from charrnn.corpus import load_corpus
    from charrnn.optim import OptimConfig
    from charrnn.sampler import SampleOptions, Sampler
    from charrnn.trainer import TrainConfig, TrainState, train

    torch.set_num_threads(1)
    limit.clock = time.process_time  # the profile's phases in CPU time too
    corpus = load_corpus(HERE.parent / "data" / "tinyshakespeare.txt")
    V, ids = corpus.vocab.size, corpus.ids
    rows, profiles, samples = [], [], []
    for name in configs.split(","):
        L, H, B, T = CONFIGS[name]
        data = make_batches(ids, 0, len(ids) * 9 // 10, B, T)  # as bench.py's Data does
        x, y = data.batch(0)
        for cell in cells.split(","):
            from charrnn.model import ModelConfig

            mcfg = ModelConfig(vocab_size=V, cell=cell, hidden=H, layers=L)
            ts = TrainState.fresh(
                mcfg, OptimConfig(), TrainConfig(batch_size=B, seq_len=T, eval_every=2**62)
            )

            def charrnn_step(ts=ts, data=data):
                for _ in train(ts, data, None, total_steps=ts.step + 1):
                    pass

            tt = torch_ref.TorchTrainer(cell, V, H, L, B)
            lim = limit.measure_limit(cell, V, H, L, B, T, tries)
            c_s = best(charrnn_step, tries)
            p_s = best(lambda tt=tt, x=x, y=y: tt.step(x, y), tries)
            prof = limit.profile_step(ts.model, data, ts.optimizer.cfg, lim, charrnn_step, tries)
            rows.append((cell, name, lim["step_s"], c_s, p_s))
            profiles.append((cell, name, prof))
            smp = Sampler(ts.model, corpus.vocab)
            tm = torch_ref.TorchCharModel(cell, V, H, L).eval()
            gen = torch.Generator().manual_seed(0)
            for batch, length in ((1, 100), (256, 10)):
                rng = np.random.default_rng(0)

                def ours(smp=smp, rng=rng, batch=batch, length=length):
                    for _ in smp.stream(length, SampleOptions(1.0), rng, n=batch):
                        pass

                def theirs(tm=tm, gen=gen, batch=batch, length=length):
                    torch_ref.sample(tm, 0, length, batch, gen)

                samples.append(
                    (
                        cell,
                        name,
                        batch,
                        batch * length / best(ours, tries),
                        batch * length / best(theirs, tries),
                    )
                )
    click.echo(
        "| cell | config | limit chars/s | charrnn | PyTorch | charrnn / limit | "
        "PyTorch / limit | charrnn / PyTorch |"
    )
    click.echo("|---|---|---|---|---|---|---|---|")
    for cell, name, lim_s, c_s, p_s in rows:
        L, H, B, T = CONFIGS[name]
        n = B * T
        click.echo(
            f"| {cell} | ({name}) | {n / lim_s:,.0f} | {n / c_s:,.0f} | {n / p_s:,.0f} | "
            f"{lim_s / c_s:.0%} | {lim_s / p_s:.0%} | {p_s / c_s:.2f}× |"
        )
    phases = list(profiles[0][2])
    click.echo("\n| cell | config | step ms | " + " | ".join(phases) + " |")
    click.echo("|---|---|---|" + "---|" * len(phases))
    for cell, name, prof in profiles:
        step = sum(prof.values())
        cells_ = " | ".join(f"{1e3 * prof[p]:.1f} ({prof[p] / step:.0%})" for p in phases)
        click.echo(f"| {cell} | ({name}) | {1e3 * step:.1f} | {cells_} |")
    click.echo("\n| cell | config | batch | charrnn chars/s | PyTorch chars/s | ratio |")
    click.echo("|---|---|---|---|---|---|")
    for cell, name, batch, c, p in samples:
        click.echo(f"| {cell} | ({name}) | {batch} | {c:,.0f} | {p:,.0f} | {c / p:.2f}× |")


if __name__ == "__main__":
    main()
