#!/usr/bin/env python3
"""The measurements behind charrnn.autoconfig's rule: train one size for a time budget with
the automatic schedule (warm-up, cosine to the budget's end), then score a held-out file.

    OPENBLAS_NUM_THREADS=1 python3 bench/auto_sweep.py TRAIN HELDOUT --time 90 \
        --size lstm:2x256 --size gru:2x256 --size lstm:1x128 [--dropout 0.1]

Each size trains in turn (interleave repeated calls so that every size sees the same load),
through charrnn.session.run_training exactly as `charrnn train TRAIN --time S` would, except
that the ladder of sizes is narrowed to the one given. One JSON line per size to stdout:
size, steps, chars/s, held-out nats/char (the latest checkpoint, as `charrnn score`), load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from charrnn import autoconfig  # noqa: E402
from charrnn.request import TrainRequest  # noqa: E402
from charrnn.scoring import score_text  # noqa: E402
from charrnn.session import run_training  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("heldout")
    ap.add_argument("--time", type=float, default=90.0)
    ap.add_argument("--size", action="append", required=True, help="cell:LxH")
    ap.add_argument("--dropout", type=float, default=None, help="instead of the rule's")
    ap.add_argument("--store", default=None)
    a = ap.parse_args()
    store = Path(a.store or tempfile.mkdtemp(prefix="auto_sweep"))
    text = Path(a.heldout).read_text(encoding="utf-8")
    for spec in a.size:
        cell, _, lh = spec.partition(":")
        layers, hidden = (int(v) for v in lh.split("x"))
        autoconfig.CELL = cell
        autoconfig.SIZES = ((layers, hidden),)
        autoconfig.SPEED.setdefault((layers, hidden), 10_000.0)
        if a.dropout is not None:
            autoconfig.DROPOUT_BY_EPOCHS = ((float("inf"), a.dropout),)
        load0 = os.getloadavg()[0]
        run = f"{cell}{layers}x{hidden}"
        res = run_training(
            TrainRequest(corpus=(a.train,), run=run, store=store, time_budget=a.time, fresh=True)
        )
        logprob, n = score_text(res.state.model, res.corpus.vocab, text)
        score = round(-logprob / n, 4)
        ts = res.state
        print(
            json.dumps(
                {
                    "size": spec,
                    "dropout": ts.model.cfg.dropout,
                    "steps": ts.step,
                    "chars_per_s": round(
                        ts.step * ts.train_cfg.batch_size * ts.train_cfg.seq_len / res.seconds
                    ),
                    "val_loss": res.summary()["best_val_loss"],
                    "heldout_nats_per_char": score,
                    "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
                    "time": time.strftime("%H:%M:%S"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
