"""Token ids -> (B, T) inputs and targets for truncated backpropagation through time.

The split ``ids[start:stop]`` is cut into B equal streams laid side by side,
one per batch row. Batch k holds steps ``k*T .. k*T+T-1`` of every stream, so
row b of batch k+1 continues row b of batch k and the hidden state can be
carried from one batch to the next. Numpy only, no copies beyond one batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True, eq=False)
class StreamBatches:
    """B parallel streams over ``ids[start:stop]``, served T steps at a time.

    Stream b covers ``ids[start + b*L : start + (b+1)*L]`` with ``L = (stop-start) // B``;
    the ``(stop-start) % B`` characters at the end, and each stream's last
    ``(L-1) % T`` inputs, are not used this epoch.
    """

    ids: np.ndarray  # (N,) the whole token array (may be a memmap); never copied whole
    start: int  # first index of this split
    stop: int  # one past the last index
    batch_size: int  # B, parallel streams
    seq_len: int  # T, steps per batch (the truncation length)
    split: str = "training"  # what the split is called in error messages
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

    def __len__(self) -> int:
        return self.n_batches

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of batch ``k``, each (B, T) int32; ``y[b, j]`` is the character after ``x[b, j]``.

        Row b of batch k+1 continues row b of batch k, so carry the hidden state.
        """
        if not 0 <= k < self.n_batches:
            raise IndexError(f"batch {k} out of range: there are {self.n_batches}")
        window = self.ids[self._grid + k * self.seq_len]  # (B, T+1) one gather
        x = np.ascontiguousarray(window[:, :-1], dtype=np.int32)  # (B, T)
        y = np.ascontiguousarray(window[:, 1:], dtype=np.int32)  # (B, T) shifted by one
        return x, y


def make_batches(
    ids: np.ndarray, start: int, stop: int, batch_size: int, seq_len: int
) -> StreamBatches:
    """Training batches over ``ids[start:stop]``; CorpusError when it is too short for one."""
    return StreamBatches(ids, start, stop, batch_size, seq_len)


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
