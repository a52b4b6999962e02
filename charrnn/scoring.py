"""How likely a text is under a model: the other half of a language model.

"Given any sentence, its job is to tell you the probability of that sentence":
log P(text) = Σ_t log ŷ<t>[x<t+1>], computed in chunks with the state carried
(a stream: what a prose model trains on), or line by line, each line from the
start state with its end of line (what a names model trains on), many lines at
once as one padded batch. Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from charrnn.errors import VocabError
from charrnn.model import CharRNN
from charrnn.tokenizer import Vocab, unknown_message

# characters of complete lines gathered before a padded batch is scored (--per-line)
LINE_BATCH_CHARS = 1 << 20


def _context(vocab: Vocab) -> list[int]:
    """What precedes the text: the newline (start of a line) when the vocabulary has one."""
    return [vocab.eos_id] if vocab.eos_id is not None else []


class StreamScore:
    """log P of a text fed in pieces of any size, the state carried: the same sum as
    scoring it whole, in memory bounded by the largest piece."""

    def __init__(self, model: CharRNN, vocab: Vocab, chunk: int = 256) -> None:
        self.model, self.chunk = model, chunk
        self.state = model.initial_state(1)
        self.pending = np.array(_context(vocab), dtype=np.int64)  # (0|1,) next input
        self.logprob = 0.0  # nats
        self.n = 0  # characters scored

    def feed(self, ids: np.ndarray) -> None:
        ids = np.concatenate([self.pending, ids.astype(np.int64)])  # (N+1,)
        n = len(ids) - 1
        for i in range(0, n, self.chunk):
            x = ids[i : i + self.chunk][None, :]  # (1, T)
            y = ids[i + 1 : i + self.chunk + 1][None, :]  # (1, T') targets, T' <= T
            x = x[:, : y.shape[1]]
            nll, self.state = self.model.nll(x, y, self.state)
            self.logprob -= float(nll.sum(dtype=np.float64))
        self.n += max(n, 0)
        self.pending = ids[-1:]


def score_text(model: CharRNN, vocab: Vocab, text: str, chunk: int = 256) -> tuple[float, int]:
    """(log-probability in nats, characters scored) of ``text`` as one stream.

    With a newline in the vocabulary the text is read as starting a line, so
    every character is scored; otherwise the first character is context only.
    """
    scorer = StreamScore(model, vocab, chunk)
    scorer.feed(vocab.encode(text))
    return scorer.logprob, scorer.n


@dataclass
class Known:
    """Filters text pieces to the vocabulary: refuses unknown characters, or drops and
    counts them (``skip``)."""

    vocab: Vocab
    what: str  # the text's name, for messages
    skip: bool = False
    dropped: int = 0  # characters dropped so far
    kept: int = 0  # characters let through so far

    def __call__(self, text: str) -> str:
        unknown = self.vocab.unknown(text)
        if not unknown:
            self.kept += len(text)
            return text
        if not self.skip:
            raise VocabError(
                unknown_message(unknown, self.what) + " (pass --skip-unknown to drop them)",
                unknown=unknown,
            )
        kept = text.translate(dict.fromkeys(map(ord, unknown)))
        self.dropped += len(text) - len(kept)
        self.kept += len(kept)
        return kept


def score_stream(
    model: CharRNN, vocab: Vocab, pieces: Iterable[str], known: Known
) -> tuple[float, int, int]:
    """(log-probability, characters scored, characters read) of a text given in pieces,
    as one stream: the state carried across line ends."""
    scorer = StreamScore(model, vocab)
    before = known.kept
    for piece in pieces:
        scorer.feed(vocab.encode(known(piece)))
    return scorer.logprob, scorer.n, known.kept - before


def score_by_lines(
    model: CharRNN, vocab: Vocab, pieces: Iterable[str], known: Known
) -> tuple[float, int, int, int]:
    """(log-probability, characters scored, characters read, lines) of a text given in
    pieces, each line scored on its own from the start state, end of line included:
    the sums of :func:`score_line_stream`'s rows, in their order, so the totals are
    exactly what the per-line scores add up to."""
    before = known.kept
    logprob, n, n_lines = 0.0, 0, 0
    for _, lp, k in score_line_stream(model, vocab, pieces, known):
        logprob += lp
        n += k
        n_lines += 1
    return logprob, n, known.kept - before, n_lines


def lines_of(pieces: Iterable[str]) -> Iterator[str]:
    """The lines of a text given in pieces, without their newlines; a final empty
    line (after a last newline) is not one."""
    held: list[str] = []  # the start of a line split across pieces
    for piece in pieces:
        parts = piece.split("\n")
        if len(parts) > 1:
            yield "".join([*held, parts[0]])
            held = []
            yield from parts[1:-1]
        if parts[-1]:
            held.append(parts[-1])
    if held:
        yield "".join(held)


def score_line_stream(
    model: CharRNN, vocab: Vocab, pieces: Iterable[str], known: Known
) -> Iterator[tuple[str, float, int]]:
    """(line, log-probability, characters scored) of every line, in order, scored in
    padded batches of about LINE_BATCH_CHARS: memory bounded by that and the longest line."""
    batch: list[str] = []
    size = 0
    for line in lines_of(known(p) for p in pieces):
        batch.append(line)
        size += len(line) + 1
        if size >= LINE_BATCH_CHARS:
            yield from _scored(model, vocab, batch)
            batch, size = [], 0
    yield from _scored(model, vocab, batch)


def _scored(model: CharRNN, vocab: Vocab, lines: list[str]) -> Iterator[tuple[str, float, int]]:
    for line, (lp, n) in zip(lines, score_lines(model, vocab, lines), strict=True):
        yield line, lp, n


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
