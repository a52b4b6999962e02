"""Token ids -> (B, T) inputs and targets for truncated backpropagation through time.

The split ``ids[start:stop]`` is cut into B equal streams laid side by side,
one per batch row. Batch k holds steps ``k*T .. k*T+T-1`` of every stream, so
row b of batch k+1 continues row b of batch k and the hidden state can be
carried from one batch to the next. Numpy only, no copies beyond one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from charrnn.errors import CorpusError


def split_train_val(n: int, val_fraction: float) -> tuple[int, int]:
    """(n_train, n_val) for ``n`` characters; validation is the tail ``val_fraction``."""
    if n < 0:
        raise ValueError(f"n must be non-negative, not {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    n_val = int(round(n * val_fraction))
    return n - n_val, n_val


def min_train_chars(batch_size: int, seq_len: int) -> int:
    """The fewest training characters that give one batch: B streams of T+1."""
    return batch_size * (seq_len + 1)


def fit_batch(n: int, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(B, T) for ``n`` training characters: the given ones if one batch fits, else fewer
    streams, then (one stream) shorter steps. CorpusError below 2 characters."""
    if n >= min_train_chars(batch_size, seq_len):
        return batch_size, seq_len
    if n < 2:
        raise CorpusError(f"the training split has {n} character(s); it needs at least 2")
    if n >= seq_len + 1:
        return n // (seq_len + 1), seq_len
    return 1, n - 1


class Batch(NamedTuple):
    """What one training step reads, from either batch source (``for_step``)."""

    x: np.ndarray  # (B, T) int32 inputs
    y: np.ndarray  # (B, T) int32 targets, y[b, j] the character after x[b, j]
    mask: np.ndarray | None  # (B, T) bool real positions (names), or None: all are real
    carry: bool  # the hidden state flows on from this batch to the next (streams)
    epoch_start: bool  # the first batch of an epoch: a carried state starts over from zero

    @property
    def n_chars(self) -> int:
        """Targets that count, padding excluded."""
        return self.x.size if self.mask is None else int(self.mask.sum())


@dataclass(frozen=True, eq=False)
class StreamBatches:
    """B parallel streams over ``ids[start:stop]``, served T steps at a time.

    Stream b covers ``ids[start + b*L : start + (b+1)*L]`` with ``L = (stop-start) // B``;
    the ``(stop-start) % B`` characters at the end, and each stream's last
    ``(L-1) % T`` inputs, are not used at offset 0. ``batch(k, offset)`` shifts every
    stream right by ``offset`` (at most ``max_offset``): a training run draws one per
    epoch from ``seed`` (:func:`epoch_offset`; :meth:`for_step` serves the run's steps),
    so over epochs every character is a target (but the first of each stream when the
    split divides into B streams exactly).
    """

    ids: np.ndarray  # (N,) the whole token array (may be a memmap); never copied whole
    start: int  # first index of this split
    stop: int  # one past the last index
    batch_size: int  # B, parallel streams
    seq_len: int  # T, steps per batch (the truncation length)
    split: str = "training"  # what the split is called in error messages
    seed: int = 0  # the epoch offsets of for_step (the run's --seed)
    _grid: np.ndarray = field(init=False, repr=False)  # (B, T+1) offsets of batch 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.seq_len < 1:
            raise ValueError("batch_size and seq_len must be at least 1")
        if not 0 <= self.start <= self.stop <= self.ids.shape[0]:
            raise ValueError(
                f"split [{self.start}, {self.stop}) is outside ids of length {self.ids.shape[0]}"
            )
        n = self.stop - self.start
        need = min_train_chars(self.batch_size, self.seq_len)
        if n < need:
            raise CorpusError(
                f"the {self.split} split has {n} characters; --batch-size {self.batch_size} "
                f"--seq-len {self.seq_len} needs at least {need}; "
                "use a smaller --batch-size or --seq-len"
            )
        B, T, L = self.batch_size, self.seq_len, self.stream_len
        rows = np.arange(B, dtype=np.int64)[:, None] * L  # (B, 1) stream starts
        cols = np.arange(T + 1, dtype=np.int64)[None, :]  # (1, T+1) steps, one extra for y
        grid = self.start + rows + cols  # (B, T+1) absolute indices of batch 0
        grid.flags.writeable = False
        object.__setattr__(self, "_grid", grid)

    @property
    def stream_len(self) -> int:
        """L, the characters in each stream."""
        return (self.stop - self.start) // self.batch_size

    @property
    def n_batches(self) -> int:
        """Batches per epoch; each input needs its next character as a target."""
        return (self.stream_len - 1) // self.seq_len

    @property
    def max_offset(self) -> int:
        """The largest shift of the grid that keeps the last stream inside the split."""
        used = self.n_batches * self.seq_len + 1  # characters one stream reads an epoch
        return (self.stop - self.start) - (self.batch_size - 1) * self.stream_len - used

    def __len__(self) -> int:
        return self.n_batches

    def batch(self, k: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of batch ``k``, each (B, T) int32; ``y[b, j]`` is the character after ``x[b, j]``.

        Row b of batch k+1 continues row b of batch k, so carry the hidden state; keep
        ``offset`` (0 .. max_offset) the same for a whole epoch.
        """
        if not 0 <= k < self.n_batches:
            raise IndexError(f"batch {k} out of range: there are {self.n_batches}")
        if not 0 <= offset <= self.max_offset:
            raise IndexError(f"offset {offset} out of range 0..{self.max_offset}")
        window = self.ids[self._grid + (k * self.seq_len + offset)]  # (B, T+1) one gather
        x = np.ascontiguousarray(window[:, :-1], dtype=np.int32)  # (B, T)
        y = np.ascontiguousarray(window[:, 1:], dtype=np.int32)  # (B, T) shifted by one
        return x, y

    def for_step(self, step: int) -> Batch:
        """The batch of training step ``step`` (counted over the run): batch ``step % n``
        of epoch ``step // n``, shifted by that epoch's :func:`epoch_offset` (from
        ``seed``). The state is carried; it starts over from zero with every epoch."""
        k, epoch = step % self.n_batches, step // self.n_batches
        x, y = self.batch(k, epoch_offset(self.seed, epoch, self.max_offset))
        return Batch(x, y, None, carry=True, epoch_start=k == 0)


def epoch_offset(seed: int, epoch: int, max_offset: int) -> int:
    """The grid shift of a training epoch: 0 for the first, then seeded draws in
    0..max_offset, a pure function of (seed, epoch) so that a resumed run reads the same."""
    if epoch == 0 or max_offset <= 0:
        return 0
    return int(np.random.default_rng([seed, epoch]).integers(0, max_offset + 1))


def make_batches(
    ids: np.ndarray, start: int, stop: int, batch_size: int, seq_len: int, seed: int = 0
) -> StreamBatches:
    """Training batches over ``ids[start:stop]``, epochs shifted by offsets drawn from
    ``seed``; CorpusError when the split is too short for one batch."""
    return StreamBatches(ids, start, stop, batch_size, seq_len, seed=seed)


def eval_batches(
    ids: np.ndarray, start: int, stop: int, batch_size: int, seq_len: int
) -> StreamBatches | None:
    """Validation batches that fit a short split: fewer streams, then shorter steps.

    None when the split has fewer than 2 characters (no input with a target).
    """
    n = stop - start
    if n < 2:
        return None
    B = min(batch_size, n // (seq_len + 1))
    T = seq_len
    if B < 1:
        B, T = 1, n - 1  # one stream, one batch as long as the split allows
    return StreamBatches(ids, start, stop, B, T, split="validation")


# --------------------------------------------------------------------------- names mode
#
# A names corpus is a list of lines; each line is one example that starts where the
# sampler starts (the zero state fed the newline) and ends by predicting the newline:
#
#     x = [EOS, c1, ..., cn]      y = [c1, ..., cn, EOS]
#
# Lines of similar length are batched together and padded on the right; a (B, T)
# mask marks the real positions, so padding adds nothing to the loss or gradients.

MAX_LINE_STEPS = 256  # default cap on targets per line: a longer line trains on its head
POOL_BATCHES = 32  # lines are sorted by length within pools of this many batches
CHUNK_BATCHES = 32  # batches built together: one set of NumPy calls serves this many steps


def line_spans(ids: np.ndarray, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of every line of ``ids``, newline excluded, each (n_lines,) int64.

    A final line without a newline counts; an empty corpus has no lines.
    """
    ends = np.flatnonzero(ids == eos).astype(np.int64)  # (n_newlines,)
    n = int(ids.shape[0])
    if n and (len(ends) == 0 or ends[-1] != n - 1):
        ends = np.append(ends, n)  # the last line has no newline
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends
    return starts, ends - starts


def split_lines(
    ids: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    val_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) line indices: a seeded random sample of the distinct non-empty lines.

    Validation holds ``round(val_fraction * distinct)`` distinct lines (at least 1 when
    val_fraction > 0 and there are two, never all), each once; training holds every
    line, duplicates included, whose text is not a validation line, so no name is on
    both sides. The sample depends only on the text of the distinct lines and
    ``seed``, not on their order in the file or on the training seed.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    keys = [
        ids[s : s + n].tobytes() for s, n in zip(starts.tolist(), lengths.tolist(), strict=True)
    ]
    distinct = sorted({k for k, n in zip(keys, lengths.tolist(), strict=True) if n > 0})
    n_val = int(round(len(distinct) * val_fraction))
    if val_fraction > 0 and len(distinct) >= 2:
        n_val = min(max(n_val, 1), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))
    val_keys = {distinct[i] for i in order[:n_val].tolist()}
    first: dict[bytes, int] = {}
    train = []
    for i, k in enumerate(keys):
        if k in val_keys:
            first.setdefault(k, i)
        else:
            train.append(i)
    val = sorted(first.values())
    return np.array(train, dtype=np.int64), np.array(val, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class LineBatches:
    """Batches of whole lines for names mode: (x, y, mask), each (B, T), padded on the right.

    Line i is ``ids[starts[i] : starts[i] + lengths[i]]``. Every epoch visits every
    line once, in an order drawn from ``seed`` and the epoch number (so batch k is a
    function of k alone and a resumed run reads what it would have read); within
    pools of POOL_BATCHES batches the lines are sorted by length, so padding stays
    small. ``shuffle=False`` keeps the file order sorted by length (validation).
    A line of ``max_steps`` characters or more is trained on its first ``max_steps``
    characters as targets: its tail and its newline are not (counted in n_capped).
    """

    ids: np.ndarray  # (N,) the whole token array (may be a memmap)
    starts: np.ndarray  # (n,) first index of each line
    lengths: np.ndarray  # (n,) characters of each line, newline excluded
    eos: int  # the newline's id: the first input and the last target of every line
    batch_size: int  # B, lines per batch (the last batch of a pool holds the rest)
    seed: int = 0  # the epoch order
    shuffle: bool = True
    max_steps: int = MAX_LINE_STEPS  # T cap: a line is at most this many targets
    _steps: np.ndarray = field(init=False, repr=False)  # (n,) targets per line, capped
    _n_batches: int = field(init=False, repr=False)  # per epoch (read every step)
    _cache: dict = field(init=False, repr=False, default_factory=dict)  # epoch -> plan
    _built: dict = field(init=False, repr=False, default_factory=dict)  # chunk -> batches

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch_size and max_steps must be at least 1")
        if len(self.starts) != len(self.lengths):
            raise ValueError("starts and lengths differ in length")
        if len(self.starts) == 0:
            raise CorpusError("names mode needs at least one training line")
        steps = np.minimum(np.asarray(self.lengths, dtype=np.int64) + 1, self.max_steps)
        steps.flags.writeable = False
        object.__setattr__(self, "_steps", steps)
        object.__setattr__(self, "_n_batches", sum(-(-p // self.batch_size) for p in self.pools))

    @property
    def n_lines(self) -> int:
        return len(self.starts)

    @property
    def n_capped(self) -> int:
        """Lines longer than the cap: their newline (and tail) are not targets."""
        return int((np.asarray(self.lengths) + 1 > self.max_steps).sum())

    @property
    def n_chars(self) -> int:
        """Targets per epoch: every character of every line plus its newline (capped)."""
        return int(self._steps.sum())

    @property
    def pools(self) -> list[int]:
        """Lines in each pool of an epoch (the same every epoch)."""
        pool = self.batch_size * POOL_BATCHES
        n = self.n_lines
        return [min(pool, n - i) for i in range(0, n, pool)]

    @property
    def n_batches(self) -> int:
        """Batches per epoch."""
        return self._n_batches

    def __len__(self) -> int:
        return self.n_batches

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """The line indices of every batch of ``epoch``, in the order they are served."""
        plan = self._cache.get(epoch)
        if plan is not None:
            return plan
        n = self.n_lines
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(n)  # (n,) this epoch's order
        else:
            rng = None
            perm = np.argsort(self._steps, kind="stable")
        plan = []
        i = 0
        for p in self.pools:
            chunk = perm[i : i + p]
            i += p
            chunk = chunk[np.argsort(self._steps[chunk], kind="stable")]  # similar lengths
            plan.extend(chunk[i : i + self.batch_size] for i in range(0, p, self.batch_size))
        if rng is not None:
            plan = [plan[j] for j in rng.permutation(len(plan))]  # no short-to-long drift
        self._cache.clear()  # one epoch at a time: bounded memory
        self._cache[epoch] = plan
        return plan

    def lines_of(self, k: int) -> np.ndarray:
        """Indices of the lines in batch ``k`` (k counts on across epochs)."""
        if k < 0:
            raise IndexError(f"batch {k} out of range")
        return self._plan(k // self.n_batches)[k % self.n_batches]

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, mask) of batch ``k``: x, y (B, T) int32, mask (B, T) bool, read only.

        Row b is one line, ``x = [EOS, c1..cn]`` and ``y = [c1..cn, EOS]``, padded on
        the right (mask False) to the longest line of the batch. No state is carried.
        """
        if k < 0:
            raise IndexError(f"batch {k} out of range")
        epoch, i = divmod(k, self.n_batches)
        key = (epoch, i // CHUNK_BATCHES)
        built = self._built.get(key)
        if built is None:
            first = key[1] * CHUNK_BATCHES
            built = self._build(self._plan(epoch)[first : first + CHUNK_BATCHES])
            self._built.clear()  # one chunk at a time: bounded memory
            self._built[key] = built
        return built[i % CHUNK_BATCHES]

    def _build(self, plan: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The (x, y, mask) of several batches at once, ``plan`` holding each one's lines.

        Batch k is a (B_k, T_k + 1) block of one flat token array, its rows
        ``[EOS, c1..cn, EOS, pad..]`` (the pad is EOS too); x and y are the block
        without its last and its first column. A few calls over all the blocks cost
        about what the same calls over one batch cost, and a step then reads views.
        """
        rows = np.concatenate(plan)  # (R,) the lines, batch after batch
        steps = self._steps[rows]  # (R,) targets per line
        B = np.array([len(p) for p in plan])  # (K,) lines per batch
        T = np.maximum.reduceat(steps, np.cumsum(B) - B)  # (K,) the longest line of each
        width = np.repeat(T + 1, B)  # (R,) row widths: T_k + 1 in batch k
        begin = np.cumsum(width) - width  # (R,) where each row starts in the flat array
        j = np.arange(int(width.sum())) - np.repeat(begin, width)  # position in its row
        used = np.minimum(self.lengths[rows], steps)  # (R,) characters read (capped)
        src = np.repeat(self.starts[rows] - 1, width) + j  # the ids index of position j ≥ 1
        np.clip(src, 0, self.ids.shape[0] - 1, out=src)  # (j = 0 and padding: EOS below)
        line = (j > 0) & (j <= np.repeat(used, width))  # positions holding a character
        tokens = np.where(line, self.ids[src], self.eos).astype(np.int32)
        real = j < np.repeat(steps, width)  # input j (and target j) is a real position
        tokens.flags.writeable = real.flags.writeable = False
        out = []
        at = 0
        for b, t in zip(B.tolist(), T.tolist(), strict=True):
            block = slice(at, at + b * (t + 1))
            at = block.stop
            full = tokens[block].reshape(b, t + 1)
            out.append((full[:, :-1], full[:, 1:], real[block].reshape(b, t + 1)[:, :-1]))
        return out

    def for_step(self, step: int) -> Batch:
        """The batch of training step ``step``: batch ``step`` of the run, in the epoch
        order drawn from ``seed``. Every line starts from the zero state: nothing is
        carried."""
        x, y, mask = self.batch(step)
        return Batch(x, y, mask, carry=False, epoch_start=step % self.n_batches == 0)


EVAL_LINES = 256  # lines per validation batch (no gradients: larger batches are cheaper)


class LineSplit(NamedTuple):
    """A names corpus cut for training: batches of the training lines, the validation lines."""

    train: LineBatches
    val: LineBatches | None  # None without validation lines
    val_index: np.ndarray  # (m,) line numbers of the validation lines (one per distinct name)
    starts: np.ndarray  # (n_lines,) every line of the corpus
    lengths: np.ndarray  # (n_lines,)


def line_split(
    ids: np.ndarray,
    eos: int,
    batch_size: int,
    val_fraction: float,
    split_seed: int,
    seed: int,
    max_steps: int = MAX_LINE_STEPS,
) -> LineSplit:
    """Names mode: validation = a seeded sample of the distinct lines (``split_seed``),
    training = the other lines in batches of ``min(batch_size, lines)`` drawn in an order
    from ``seed``. CorpusError when no line is left for training."""
    starts, lengths = line_spans(ids, eos)
    tr, va = split_lines(ids, starts, lengths, val_fraction, split_seed)
    if not (lengths[tr] > 0).any():
        raise CorpusError("names mode needs at least one non-empty line to train on")
    B = min(batch_size, len(tr))
    train = LineBatches(ids, starts[tr], lengths[tr], eos, B, seed, max_steps=max_steps)
    val = None
    if len(va):
        val = LineBatches(
            ids, starts[va], lengths[va], eos, EVAL_LINES, shuffle=False, max_steps=max_steps
        )
    return LineSplit(train, val, va, starts, lengths)
