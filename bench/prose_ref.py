#!/usr/bin/env python3
"""charrnn's automatic configuration against a PyTorch 2×256 LSTM on a prose file, side by side.

    python3 bench/prose_ref.py TRAIN HELDOUT --time 300 [--threads 1] [--json out.json]

Both start at the same moment and run at the same time, so the machine's load hits both:

- charrnn: ``charrnn train TRAIN --time S`` with no model or optimiser option (a subprocess,
  its own store), then ``charrnn score HELDOUT`` on the latest checkpoint;
- PyTorch: bench/torch_ref.py's 2×256 nn.LSTM (one-hot input, Adam 2e-3, norm clip 5, hidden
  state carried, B=32, T=64) trained on all of TRAIN for S seconds of wall time (the PERF-NOTES
  reference), then HELDOUT scored as one stream from the zero state, every character.

HELDOUT characters missing from TRAIN's vocabulary are dropped for both (counted). One JSON
document to stdout: both losses in nats/char, steps, chars/s, load averages before and after.
PyTorch is a benchmark-only extra (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from charrnn.batches import make_batches  # noqa: E402
from charrnn.corpus import load_corpus  # noqa: E402


def torch_side(train: str, heldout: str, seconds: float, threads: int, seed: int) -> dict:
    import torch
    import torch.nn.functional as F
    import torch_ref

    torch.set_num_threads(threads)
    corpus = load_corpus([train])
    vocab = corpus.vocab
    batches = make_batches(np.asarray(corpus.ids), 0, corpus.n_chars, 32, 64)
    tr = torch_ref.TorchTrainer("lstm", vocab.size, 256, 2, 32, lr=2e-3, seed=seed)
    t0 = time.perf_counter()
    steps = 0
    while time.perf_counter() - t0 < seconds:
        k = steps % batches.n_batches
        if k == 0:
            tr.reset_state()
        x, y = batches.batch(k)
        tr.step(x, y)
        steps += 1
    train_s = time.perf_counter() - t0
    text = Path(heldout).read_text(encoding="utf-8")
    known = set(vocab.chars)
    kept = "".join(c for c in text if c in known)
    ids = vocab.encode(("\n" if "\n" in known else "") + kept).astype(np.int64)
    model = tr.model.eval()
    total, state = 0.0, None
    with torch.no_grad():
        for i in range(0, len(ids) - 1, 1024):
            x = torch.from_numpy(ids[i : i + 1024][:, None].copy())
            y = torch.from_numpy(ids[i + 1 : i + 1025].copy())
            x = x[: len(y)]
            logits, state = model(x, state)
            total += float(F.cross_entropy(logits, y, reduction="sum"))
    n = len(ids) - 1
    return {
        "steps": steps,
        "train_s": train_s,
        "chars_per_s": steps * 32 * 64 / train_s,
        "heldout_nats_per_char": total / n,
        "heldout_chars": n,
        "dropped_chars": len(text) - len(kept),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("heldout")
    ap.add_argument("--time", type=float, default=300.0, help="seconds of training each")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/torch threads for both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None, help="charrnn's store (default: a temp dir)")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if a.threads:
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(a.threads)
    store = a.store or tempfile.mkdtemp(prefix="prose_ref")
    run = "auto"
    load_before = os.getloadavg()
    cmd = [sys.executable, "-m", "charrnn", "train", a.train, "--store", store, "--run", run]
    cmd += ["--time", f"{a.time:g}s", "--json", "--fresh", "--seed", str(a.seed)]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    torch_res = torch_side(a.train, a.heldout, a.time, a.threads or 2, a.seed)
    out, err = child.communicate()
    if child.returncode != 0:
        sys.exit(f"charrnn train failed ({child.returncode}): {err.decode()[-2000:]}")
    trained = json.loads(out)
    score_cmd = [sys.executable, "-m", "charrnn", "score", a.heldout, "--store", store]
    score_cmd += ["--model", run, "--json", "--skip-unknown", "-q"]
    scored = json.loads(subprocess.run(score_cmd, env=env, capture_output=True, check=True).stdout)
    ts = trained["train"]
    print(
        json.dumps(
            {
                "train": a.train,
                "heldout": a.heldout,
                "time_s": a.time,
                "threads": a.threads,
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "charrnn": {
                    "command": " ".join(cmd[2:]),
                    "auto": trained["auto"],
                    "steps": trained["step"],
                    "chars_per_s": trained["step"]
                    * ts["batch_size"]
                    * ts["seq_len"]
                    / trained["seconds"],
                    "heldout_nats_per_char": scored["nats_per_char"],
                    "skipped_chars": scored.get("skipped_chars"),
                    "status": trained["status"],
                },
                "pytorch_2x256_lstm": torch_res,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
