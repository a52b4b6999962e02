"""The bounded history at 10k and 1M steps: checkpoint size, save time, RSS, clip-stats.

    PYTHONPATH=. python3 bench/history_1m.py [--steps 1000000] [--store /tmp/hist1m]

Records synthetic steps through the History API (the trainer's own path, without the
model's arithmetic) into the TrainState of a 2-layer LSTM (18 norm groups, as a
2x256 run has), saves a real checkpoint through the store at each checkpoint count,
and times `charrnn clip-stats` on the last one in a fresh process. Prints one
Markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from charrnn.model import ModelConfig
from charrnn.optim import OptimConfig
from charrnn.store import Store
from charrnn.tokenizer import Vocab
from charrnn.trainer import TrainConfig, TrainState, norm_groups


def rss_mb() -> float:
    """Resident set size now (not the peak), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/charrnn-hist1m"))
    ap.add_argument("--saves", type=int, default=21, help="saves timed at each checkpoint")
    args = ap.parse_args()
    marks = sorted({10_000, 100_000, args.steps})
    vocab = Vocab.from_text("abcdefghijklmnopqrstuvwxyz\n")
    cfg = ModelConfig(vocab_size=vocab.size, cell="lstm", layers=2, hidden=8)
    ts = TrainState.fresh(cfg, OptimConfig(), TrainConfig())
    _, groups, _ = norm_groups(cfg)
    G = len(groups)
    rng = np.random.default_rng(0)
    st = Store(args.store)
    rows = []
    t0 = time.perf_counter()
    step = 0
    for mark in marks:
        while step < mark:  # in chunks, so that the synthetic data itself stays small
            n = min(10_000, mark - step)
            g = rng.lognormal(0.0, 0.3, n) * np.exp(-np.arange(step, step + n) / 4e5)  # decay
            g[rng.random(n) < 2e-4] *= 30  # spikes
            g[rng.random(n) < 2e-5] = np.nan  # non-finite steps
            share = rng.dirichlet(np.ones(G), n)  # (n, G) how the squared norm splits
            for i in range(n):
                gi = float(g[i])
                fin = math.isfinite(gi)
                step += 1
                ts.history.record(
                    step,
                    2.0 if fin else math.nan,
                    gi,
                    min(1.0, 5.0 / gi) if fin else 1.0,
                    0.0,
                    2e-3,
                    not fin,
                    gi * np.sqrt(share[i]) if fin else np.zeros(G),
                )
        ts.step = step
        arrays, meta = ts.to_checkpoint()
        meta.update({"vocab": vocab.to_json(), "run": "hist", "corpus": {}})
        path = st.save("hist", step, arrays, meta, keep=len(marks))
        rows.append(
            {
                "steps": step,
                "size": path.stat().st_size,
                "rss": rss_mb(),
                "spikes": len(ts.history.spike_step),
                "ck": (arrays, meta),
                "save": [],
            }
        )
        print(f"... {step} steps recorded in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    # save times, interleaved over the checkpoints so that a busy machine slows all alike
    for _ in range(args.saves):
        for r in rows:
            arrays, meta = r["ck"]
            a = time.perf_counter()
            st.save("hist-timing", r["steps"], arrays, meta, keep=1)
            r["save"].append(time.perf_counter() - a)
    for r in rows:
        r["save"] = statistics.median(r["save"])
    st.save("hist", rows[-1]["steps"], *rows[-1]["ck"], keep=1)  # clip-stats reads the last
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "charrnn", "clip-stats", "--store", str(args.store), "hist"]
    clip = {}
    for mode, extra in (("report", []), ("json", ["--json"])):
        a = time.perf_counter()
        subprocess.run(cmd + extra, env=env, check=True, stdout=subprocess.DEVNULL)
        clip[mode] = time.perf_counter() - a
    print(f"| steps | checkpoint bytes | save (median of {args.saves}) | RSS now | spikes kept |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['steps']:,} | {r['size']:,} | {r['save'] * 1e3:.1f} ms | {r['rss']:.0f} MB "
            f"| {r['spikes']} |"
        )
    first, last = rows[0], rows[-1]
    print(
        f"\n{last['steps']:,} vs {first['steps']:,} steps: "
        f"size x{last['size'] / first['size']:.2f}, "
        f"save time x{last['save'] / first['save']:.2f}, RSS x{last['rss'] / first['rss']:.2f}; "
        f"clip-stats on the last checkpoint: {clip['report']:.2f}s (report), "
        f"{clip['json']:.2f}s (--json), each a fresh process"
    )


if __name__ == "__main__":
    main()
