"""charrnn's training and sampling speed in CPU time, for A/B comparisons on a busy machine.

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=TREE python3 bench/cpu_probe.py > figures.json

On a machine shared with other work, wall-clock figures swing by 2× and more (and OpenBLAS's
threads stall when a core is taken away). This probe runs one thread and counts the process's
CPU time, which a busy neighbour cannot inflate by taking the core away, and keeps the best of
several tries. It measures the trainer's hot path (loss_and_grads, norm clipping, the Adam step)
on tiny-shakespeare batches and Sampler.stream at batch 1 and 256, for configs (a), (b), (c).
Use it through ``bench/ab.py --probe``; ratios between trees are what it is for.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"a": (1, 128, 32, 64), "b": (2, 256, 32, 64), "c": (2, 512, 64, 100)}  # L, H, B, T


def best_cpu_seconds(fn, tries: int) -> float:
    fn()
    best = float("inf")
    for _ in range(tries):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    from charrnn.model import CharRNN, ModelConfig
    from charrnn.optim import OptimConfig, Optimizer, clip_gradients, segment_offsets
    from charrnn.sampler import SampleOptions, Sampler
    from charrnn.tokenizer import Vocab

    text = (ROOT / "data" / "tinyshakespeare.txt").read_text()
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text[:200_000])
    configs = sys.argv[1].split(",") if len(sys.argv) > 1 else list(CONFIGS)
    cells = ("lstm", "gru", "rnn")
    out: dict[str, float] = {}
    for name in configs:
        L, H, B, T = CONFIGS[name]
        tries = {"a": 10, "b": 6, "c": 5}[name]
        for cell in cells:
            model = CharRNN(
                ModelConfig(vocab_size=vocab.size, cell=cell, hidden=H, layers=L),
                rng=np.random.default_rng(0),
            )
            span = (len(ids) - 1) // B
            pos = np.arange(B)[:, None] * span + np.arange(T + 1)
            x, y = ids[pos[:, :-1]], ids[pos[:, 1:]]
            opt_cfg = OptimConfig()
            opt = Optimizer(opt_cfg, model.params.flat.size, model.dtype)
            offsets = segment_offsets([a.size for a in model.params.arrays.values()])
            work = np.empty_like(model.params.flat)
            state = model.initial_state(B)

            def train_step(
                model=model,
                x=x,
                y=y,
                state=state,
                opt=opt,
                offsets=offsets,
                work=work,
                opt_cfg=opt_cfg,
            ):
                _, grads, _, _ = model.loss_and_grads(x, y, state)
                clip_gradients(grads.flat, offsets, None, opt_cfg.clip_norm, work)
                opt.step(model.params.flat, grads.flat, opt_cfg.lr)

            out[f"train {cell} ({name})"] = B * T / best_cpu_seconds(train_step, tries)
            smp = Sampler(model, vocab)
            for batch, length in ((1, 200), (256, 20 if name != "c" else 5)):
                rng = np.random.default_rng(0)

                def sample(smp=smp, rng=rng, batch=batch, length=length):
                    for _ in smp.stream(length, SampleOptions(1.0), rng, n=batch):
                        pass

                secs = best_cpu_seconds(sample, tries)
                out[f"sample {cell} ({name}) B={batch}"] = batch * length / secs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
