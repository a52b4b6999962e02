"""How likely a text is under a model: the other half of a language model.

"Given any sentence, its job is to tell you the probability of that sentence":
log P(text) = Σ_t log ŷ<t>[x<t+1>], computed in chunks with the state carried,
or for many lines at once as one padded batch. Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from charrnn.model import CharRNN
from charrnn.tokenizer import Vocab


def _context(vocab: Vocab) -> list[int]:
    """What precedes the text: the newline (start of a line) when the vocabulary has one."""
    return [vocab.eos_id] if vocab.eos_id is not None else []


def score_text(model: CharRNN, vocab: Vocab, text: str, chunk: int = 256) -> tuple[float, int]:
    """(log-probability in nats, characters scored) of ``text`` as one stream.

    With a newline in the vocabulary the text is read as starting a line, so
    every character is scored; otherwise the first character is context only.
    """
    ids = np.concatenate(
        [np.array(_context(vocab), dtype=np.int64), vocab.encode(text).astype(np.int64)]
    )
    n = len(ids) - 1
    if n <= 0:
        return 0.0, 0
    state = model.initial_state(1)
    total = 0.0
    for i in range(0, n, chunk):
        x = ids[i : i + chunk][None, :]
        y = ids[i + 1 : i + chunk + 1][None, :]
        x = x[:, : y.shape[1]]
        nll, state = model.nll(x, y, state)
        total += float(nll.sum(dtype=np.float64))
    return -total, n


def score_lines(
    model: CharRNN, vocab: Vocab, lines: list[str], batch: int = 512
) -> list[tuple[float, int]]:
    """(log-probability, characters scored) of each line on its own, end of line included.

    Each line starts from the zero state fed the newline, as a name does in
    sampling, and its final newline is scored too: a plausible *complete* name.
    Lines run as one padded batch; padding is masked out of the sums.
    """
    eos = vocab.eos_id
    out: list[tuple[float, int]] = []
    for s in range(0, len(lines), batch):
        group = lines[s : s + batch]
        seqs = []
        for line in group:
            ids = vocab.encode(line).astype(np.int64).tolist()
            seqs.append(_context(vocab) + ids + ([eos] if eos is not None else []))
        T = max(len(q) for q in seqs) - 1
        if T <= 0:
            out.extend((0.0, 0) for _ in group)
            continue
        B = len(seqs)
        full = np.zeros((B, T + 1), dtype=np.int64)
        mask = np.zeros((B, T), dtype=bool)
        for b, q in enumerate(seqs):
            full[b, : len(q)] = q
            mask[b, : len(q) - 1] = True
        nll, _ = model.nll(full[:, :-1], full[:, 1:])
        lp = -(nll * mask).sum(axis=1, dtype=np.float64)
        out.extend((float(lp[b]), int(mask[b].sum())) for b in range(B))
    return out
