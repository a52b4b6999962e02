"""Where names mode's throughput goes, against prose mode (issue 10's 0.85x line).

    python3 bench/names_gap.py [--rounds 10] [--threads 1]

Names mode trains a batch of B whole lines (each from the start state, padded on the right
to the batch's longest line); prose mode trains B streams of T=64 steps. The model work of
one time step is the same in both; what differs is (1) padding: the positions after a short
line's end are computed and masked out, and (2) the work that every step pays once whatever
its length (the optimizer's passes over the parameters, clipping, the batch, the
bookkeeping, the weight copies the cells take), which names mode pays every ~13 steps of
time where prose pays it every 64.

This script runs charrnn's own trainer (the 1x128 LSTM of bench.py's names section, B=32,
data/dinos.txt) on four batch sources, interleaved in one process, timed in CPU seconds
(so that another process on the machine disturbs the figures less; use --threads 1 for CPU
time to mean work):

  names, dinos          the real thing: lines of 4..26 characters, batches of similar lengths
  names, uniform        lines of one length (the dinos batches' mean T), letters drawn at
                        random: no padding at all
  prose, dinos          B=32 streams of T=64
  names, uniform, T=k   lines of k-1 characters for several k: step time = F + c*T gives
                        the per-step cost F that does not depend on the length

and prints chars/s (padding excluded), each names source against prose (medians of
paired rounds), the dinos batches' fill (real positions / positions computed), and F and c.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
DINOS = ROOT / "data" / "dinos.txt"
FIT_T = (4, 8, 16, 32, 64)  # line lengths (+1) of the F + c*T fit


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class _Engine:
    """charrnn's trainer on one batch source, with its own model and optimizer."""

    def __init__(self, batches, vocab_size: int, mode: str, hidden: int, batch: int) -> None:
        from charrnn.model import ModelConfig
        from charrnn.optim import OptimConfig
        from charrnn.trainer import TrainConfig, TrainState

        self.batches = batches
        tcfg = TrainConfig(batch_size=batch, seq_len=64, mode=mode, eval_every=2**62, patience=0)
        mcfg = ModelConfig(vocab_size=vocab_size, cell="lstm", hidden=hidden, layers=1)
        self.ts = TrainState.fresh(mcfg, OptimConfig(lr=2e-3, clip_norm=5.0), tcfg)

    def run(self, n: int) -> tuple[float, float]:
        """n steps: (chars/s, padding excluded; CPU seconds per step)."""
        from charrnn.trainer import train

        ts = self.ts
        chars = sum(self.batches.for_step(k).n_chars for k in range(ts.step, ts.step + n))
        t = time.process_time()
        for _ in train(ts, self.batches, None, total_steps=ts.step + n):
            pass
        secs = time.process_time() - t
        return chars / secs, secs / n


def _uniform_lines(T: int, n_lines: int, letters, eos: int, rng):
    """LineBatches source of n_lines lines of T-1 random letters each (so T steps each)."""
    import numpy as np

    from charrnn.batches import LineBatches, line_spans

    ids = np.empty(n_lines * T, np.int32)
    ids.reshape(n_lines, T)[:, :-1] = rng.choice(letters, (n_lines, T - 1))
    ids.reshape(n_lines, T)[:, -1] = eos
    starts, lengths = line_spans(ids, eos)
    return LineBatches(ids, starts, lengths, eos, 32, seed=0)


def measure(rounds: int, hidden: int = 128, steps_per_round: int = 176, corpus_path=DINOS):
    """The figures of the module docstring, as a dict."""
    import numpy as np

    from charrnn.corpus import load_corpus
    from charrnn.reading import CorpusOptions
    from charrnn.session import split_batches
    from charrnn.trainer import TrainConfig

    B = 32
    corpus = load_corpus(corpus_path, CorpusOptions())
    V, eos = corpus.vocab.size, corpus.vocab.eos_id
    split = {
        mode: split_batches(
            corpus.ids,
            len(corpus.ids),
            TrainConfig(batch_size=B, seq_len=64, mode=mode, eval_every=2**62, patience=0),
            corpus.vocab,
        ).train
        for mode in ("names", "prose")
    }
    names = split["names"]
    real = padded = 0
    for k in range(names.n_batches):
        b = names.for_step(k)
        real += b.n_chars
        padded += b.x.size
    rows = sum(len(names.lines_of(k)) for k in range(names.n_batches))
    mean_T = max(2, round(padded / rows))  # the dinos batches' T, averaged over their lines
    rng = np.random.default_rng(0)
    letters = np.array([i for i in range(V) if i != eos])
    sources = {
        "names, dinos": (names, "names"),
        f"names, uniform T={mean_T}": (_uniform_lines(mean_T, 44 * B, letters, eos, rng), "names"),
        "prose, dinos": (split["prose"], "prose"),
    }
    for T in FIT_T:
        sources[f"fit T={T}"] = (_uniform_lines(T, 8 * B, letters, eos, rng), "names")
    engines = {k: _Engine(src, V, mode, hidden, B) for k, (src, mode) in sources.items()}
    per_step = {"names": steps_per_round, "prose": max(2, steps_per_round * 13 // 64)}
    for e in engines.values():
        e.run(3)  # warm: workspaces allocated, caches filled
    res: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
    for _ in range(rounds):
        for k, e in engines.items():
            mode = sources[k][1]
            n = per_step[mode] if not k.startswith("fit") else max(2, steps_per_round * 13 // 64)
            res[k].append(e.run(n))
    prose = [c for c, _ in res["prose, dinos"]]
    out: dict = {"fill": real / padded, "mean_T": mean_T, "rows": {}}
    for k, xs in res.items():
        cps = [c for c, _ in xs]
        out["rows"][k] = {
            "chars_per_s": _median(cps),
            "step_s": _median([s for _, s in xs]),
            "vs_prose": _median([a / b for a, b in zip(cps, prose, strict=True)])
            if not k.startswith("prose")
            else 1.0,
        }
    Ts = np.array(FIT_T, float)
    secs = np.array([out["rows"][f"fit T={T}"]["step_s"] for T in FIT_T])
    c, F = np.polyfit(Ts, secs, 1)
    out["fit"] = {"F_s": float(F), "c_s": float(c)}
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rounds", type=click.IntRange(1), default=10, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="OpenBLAS threads (set before NumPy loads). [default: OpenBLAS's own choice]",
)
def main(rounds: int, threads: int | None) -> None:
    """Names-mode throughput against prose: padding and the per-step cost, measured."""
    if threads is not None and os.environ.get("OPENBLAS_NUM_THREADS") != str(threads):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
        os.execve(sys.executable, [sys.executable, __file__, "--rounds", str(rounds)], env)
    r = measure(rounds)
    print(f"{'source':22s} {'chars/s':>9s} {'ms/step':>8s} {'vs prose':>9s}")
    for k, row in r["rows"].items():
        print(
            f"{k:22s} {row['chars_per_s'] / 1e3:8.1f}k {row['step_s'] * 1e3:8.2f} "
            f"{row['vs_prose']:8.3f}x"
        )
    F, c = r["fit"]["F_s"], r["fit"]["c_s"]
    T = r["mean_T"]
    print(
        f"dinos names batches: fill {r['fill']:.3f} (padding {1 - r['fill']:.1%} of the "
        f"positions), mean T {T}"
    )
    print(
        f"names step = F + c*T with F = {F * 1e6:.0f} us, c = {c * 1e6:.1f} us per step of "
        f"time: at T = {T} the per-step cost F is {F / (F + c * T):.1%} of a step"
    )


if __name__ == "__main__":
    main()
