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
    model: CharRNN, vocab: Vocab, lines: list[str], max_chars: int = 1 << 16
) -> list[tuple[float, int]]:
    """(log-probability, characters scored) of each line on its own, end of line included.

    Each line starts from the zero state fed the newline, as a name does in
    sampling, and its final newline is scored too: a plausible *complete* name.
    Lines of similar length run together as one padded batch of at most
    ``max_chars`` positions (bounded memory); padding is masked out of the sums.
    """
    eos = vocab.eos_id
    ctx = _context(vocab)
    seqs = [
        ctx + vocab.encode(line).astype(np.int64).tolist() + ([eos] if eos is not None else [])
        for line in lines
    ]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(lines)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    i = 0
    while i < len(order):
        j = i + 1  # grow the group while the padded batch stays under max_chars
        while j < len(order) and (j - i + 1) * (len(seqs[order[j]]) - 1) <= max_chars:
            j += 1
        group = order[i:j]
        steps = len(seqs[group[-1]]) - 1
        i = j
        if steps <= 0:
            continue
        if len(group) == 1 and steps > max_chars:  # one very long line: as a stream
            lp, n = score_text(model, vocab, lines[group[0]] + ("\n" if eos is not None else ""))
            out[group[0]] = (lp, n)
            continue
        full = np.zeros((len(group), steps + 1), dtype=np.int64)
        mask = np.zeros((len(group), steps), dtype=bool)
        for b, k in enumerate(group):
            q = seqs[k]
            full[b, : len(q)] = q
            mask[b, : len(q) - 1] = True
        nll, _ = model.nll(full[:, :-1], full[:, 1:])
        lp = -(nll * mask).sum(axis=1, dtype=np.float64)
        for b, k in enumerate(group):
            out[k] = (float(lp[b]), int(mask[b].sum()))
    return out
