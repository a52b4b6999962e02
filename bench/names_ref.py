"""The per-name PyTorch reference for names mode (benchmark-only: charrnn never imports torch).

Each name is one example from a zero state fed the newline, as charrnn's names mode and its
sampler do: input [EOS, c1..cn], targets [c1..cn, EOS]; padded batches of B names (shuffled
every epoch, right-padded), the loss masked to the real characters; one-hot input, nn.LSTM /
nn.GRU, nn.Linear; Adam, gradient norm clipped at 5. Validation holds out the same distinct
lines as charrnn (charrnn.batches.split_lines with split seed 0, on the same file), the best
parameters by validation are kept, and the held-out TEST file is scored per name at the end.

    python bench/names_ref.py TRAIN.txt TEST.txt --time 60 [--cell lstm] [--hidden 128]
        [--lr 2e-3] [--batch 32] [--eval-every 100] [--threads 1] [--json]

Prints one line (or a JSON document): steps, best validation step and loss, test nats/char.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # charrnn for the split only

from charrnn.batches import line_spans, split_lines  # noqa: E402
from charrnn.corpus import load_corpus  # noqa: E402
from charrnn.reading import CorpusOptions  # noqa: E402


class NamesModel(nn.Module):
    """(B, T) ids -> (B, T, V) logits from a zero state."""

    def __init__(self, cell: str, vocab: int, hidden: int) -> None:
        super().__init__()
        self.vocab = vocab
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.rnn = rnn(vocab, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        A, _ = self.rnn(F.one_hot(x, self.vocab).to(torch.float32))  # (B, T, H)
        return self.out(A)  # (B, T, V)


def padded(seqs: list[list[int]], eos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, mask) for a list of [EOS, c1..cn, EOS] sequences, right-padded."""
    T = max(len(q) for q in seqs) - 1
    x = torch.full((len(seqs), T), eos, dtype=torch.long)
    y = torch.full((len(seqs), T), eos, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for b, q in enumerate(seqs):
        n = len(q) - 1
        x[b, :n] = torch.tensor(q[:-1])
        y[b, :n] = torch.tensor(q[1:])
        mask[b, :n] = True
    return x, y, mask


@torch.no_grad()
def per_name_loss(model: NamesModel, seqs: list[list[int]], eos: int, batch: int = 256) -> float:
    """Total nats over total characters (newline included), each name from the start state."""
    total, count = 0.0, 0
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for i in range(0, len(order), batch):
        x, y, mask = padded([seqs[j] for j in order[i : i + batch]], eos)
        nll = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")  # (B, T)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train")
    ap.add_argument("test")
    ap.add_argument("--time", type=float, default=60.0, help="training seconds")
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    cp = load_corpus([a.train], CorpusOptions())
    vocab, ids, eos = cp.vocab, np.asarray(cp.ids), cp.vocab.eos_id
    starts, lengths = line_spans(ids, eos)
    tr, va = split_lines(ids, starts, lengths, a.val_fraction, 0)

    def seq(i: int) -> list[int]:
        return [eos, *ids[starts[i] : starts[i] + lengths[i]].tolist(), eos]

    train = [seq(i) for i in tr]
    val = [seq(i) for i in va]
    test_lines = [s for s in Path(a.test).read_text().split("\n") if s]
    test = [[eos, *vocab.encode(s).tolist(), eos] for s in test_lines]

    model = NamesModel(a.cell, vocab.size, a.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    rng = np.random.default_rng(a.seed)
    best = (math.inf, 0, None)
    step, chars = 0, 0
    t0 = time.perf_counter()
    train_time = 0.0
    while True:
        perm = rng.permutation(len(train))
        for i in range(0, len(perm), a.batch):
            ts = time.perf_counter()
            x, y, mask = padded([train[j] for j in perm[i : i + a.batch]], eos)
            nll = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")
            loss = nll[mask].mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            chars += int(mask.sum())
            train_time += time.perf_counter() - ts
            if step % a.eval_every == 0:
                v = per_name_loss(model, val, eos)
                if v < best[0]:
                    best = (v, step, {k: t.clone() for k, t in model.state_dict().items()})
            spent = time.perf_counter() - t0
            if spent >= a.time or (a.steps is not None and step >= a.steps):
                break
        else:
            continue
        break
    v = per_name_loss(model, val, eos)
    if v < best[0]:
        best = (v, step, None)
    else:
        model.load_state_dict(best[2])
    test_loss = per_name_loss(model, test, eos)
    doc = {
        "cell": a.cell,
        "hidden": a.hidden,
        "lr": a.lr,
        "batch": a.batch,
        "steps": step,
        "seconds": time.perf_counter() - t0,
        "train_chars_per_sec": chars / max(train_time, 1e-9),
        "best_step": best[1],
        "best_val": best[0],
        "test_nats_per_char": test_loss,
        "n_train_lines": len(train),
        "n_val_lines": len(val),
        "n_test_lines": len(test),
    }
    if a.json:
        print(json.dumps(doc))
    else:
        print(
            f"torch {a.cell} {a.hidden} lr {a.lr} B {a.batch}: {step} steps in "
            f"{doc['seconds']:.0f}s ({doc['train_chars_per_sec'] / 1e3:.0f}k chars/s), best val "
            f"{best[0]:.4f} at step {best[1]}, test {test_loss:.4f} nats/char"
        )


if __name__ == "__main__":
    main()
