"""The vocabulary: Unicode code points <-> integer ids, vectorized both ways.

A character here is one Unicode code point (what ``len(str)`` counts), so a
combining mark or an emoji is a character of its own. Ids follow code-point
order, which makes the vocabulary of a text unique and stable: the same
corpus always gives the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from charrnn.errors import CheckpointError, VocabError

# little-endian on purpose: these arrays are views of utf-32-le bytes
CODEPOINT_DTYPE = np.dtype("<u4")
MAX_CODEPOINT = 0x10FFFF
# how many unknown characters an error message spells out before "and N more"
_MAX_SHOWN = 20


def text_codepoints(text: str) -> np.ndarray:
    """The code points of ``text`` as a ``(N,)`` integer array, without a Python loop."""
    if text.isascii():
        # a quarter of the memory of utf-32 for the common case
        return np.frombuffer(text.encode("ascii"), np.uint8)
    # surrogatepass: a lone surrogate is still one code point, not an encode error
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), CODEPOINT_DTYPE)


def _id_dtype(size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id ``0 .. size-1``."""
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def unknown_message(unknown: tuple[str, ...], what: str = "text") -> str:
    """One line naming the characters a vocabulary lacks, at most ``_MAX_SHOWN`` of them."""
    n = len(unknown)
    shown = ", ".join(repr(c) for c in unknown[:_MAX_SHOWN])
    more = f", and {n - _MAX_SHOWN} more" if n > _MAX_SHOWN else ""
    noun = "character" if n == 1 else "characters"
    return f"{what} contains {n} {noun} not in the model's vocabulary: {shown}{more}"


@dataclass(frozen=True)
class Vocab:
    """The characters a model knows; id ``i`` is ``chars[i]``."""

    chars: tuple[str, ...]  # unique single code points, sorted by code point

    def __post_init__(self) -> None:
        chars = tuple(self.chars)
        problem = _chars_problem(chars)
        if problem is not None:
            raise ValueError(f"bad vocabulary: {problem}")
        object.__setattr__(self, "chars", chars)

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The vocabulary of the distinct characters of ``text``."""
        return cls.from_codepoints(text_codepoints(text))

    @classmethod
    def from_codepoints(cls, cps: np.ndarray) -> Vocab:
        """The vocabulary of the distinct code points in ``cps`` (duplicates are fine)."""
        cps = np.asarray(cps).ravel()
        if cps.size == 0:
            return cls(())
        if cps.dtype.kind not in "iu":
            raise TypeError(f"code points must be integers, not {cps.dtype}")
        if int(cps.min()) < 0 or int(cps.max()) > MAX_CODEPOINT:
            raise ValueError("code points must lie in 0 .. 0x10FFFF")
        return cls(tuple(map(chr, np.unique(cps).tolist())))

    @property
    def size(self) -> int:
        return len(self.chars)

    @cached_property
    def eos_id(self) -> int | None:
        """The id of ``"\\n"``: one-name-per-line corpora end each sample with it."""
        return self.index.get("\n")

    @property
    def dtype(self) -> np.dtype:
        """The smallest of uint8/uint16/uint32 that holds the largest id."""
        return _id_dtype(self.size)

    @cached_property
    def index(self) -> dict[str, int]:
        """Character -> id, for scalar lookups (one sampled character at a time)."""
        return {c: i for i, c in enumerate(self.chars)}

    @cached_property
    def codepoints(self) -> np.ndarray:
        """``(V,)`` code points in id order, so ``codepoints[ids]`` decodes."""
        arr = np.array([ord(c) for c in self.chars], dtype=CODEPOINT_DTYPE)
        arr.flags.writeable = False
        return arr

    @cached_property
    def _lut(self) -> np.ndarray:
        # code point -> id, -1 for unknown; the last slot is the sentinel that
        # np.take(mode="clip") sends every too-large code point to
        top = int(self.codepoints[-1]) + 1 if self.size else 0
        # int16 when it fits: the looked-up ids are the biggest buffer of an encode
        dtype = np.int16 if self.size <= np.iinfo(np.int16).max else np.int32
        lut = np.full(top + 1, -1, dtype=dtype)
        lut[self.codepoints] = np.arange(self.size, dtype=dtype)
        return lut

    def encode(self, text: str) -> np.ndarray:
        """``(N,)`` ids of ``text``; raises VocabError naming any unknown characters."""
        return self.encode_codepoints(text_codepoints(text))

    def encode_codepoints(self, cps: np.ndarray) -> np.ndarray:
        """``(N,)`` ids (dtype ``self.dtype``) of an integer array of code points."""
        cps = np.asarray(cps).ravel()
        if cps.dtype.kind not in "iu":
            raise TypeError(f"code points must be integers, not {cps.dtype}")
        if cps.size == 0:
            return np.empty(0, dtype=self.dtype)
        if cps.dtype.kind == "i" and int(cps.min()) < 0:
            raise ValueError("code points must be non-negative")
        # a table lookup: about 8x faster than searchsorted on a sorted vocabulary
        ids = np.take(self._lut, cps, mode="clip")  # (N,) int16/32, -1 where unknown
        bad = ids < 0
        if bad.any():
            unknown = self._chars_of(np.unique(cps[bad]))
            raise VocabError(unknown_message(unknown), unknown=unknown)
        return ids.astype(self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of any integer array or list of ids."""
        arr = np.asarray(ids).ravel()
        if arr.size == 0:
            return ""
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, not {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"id {bad} is outside the vocabulary of {self.size} characters")
        cps = self.codepoints[arr]  # (N,) little-endian code points
        return cps.tobytes().decode("utf-32-le", "surrogatepass")

    def unknown(self, text: str) -> tuple[str, ...]:
        """The distinct characters of ``text`` not in the vocabulary, in code-point order."""
        cps = text_codepoints(text)  # (N,)
        bad = np.sort(cps[np.take(self._lut, cps, mode="clip") < 0])  # (N',) unknown ones
        if bad.size == 0:
            return ()
        # not np.unique: numpy 2 imports numpy.ma for it, a sixth of `charrnn sample`'s start
        first = np.concatenate(([True], bad[1:] != bad[:-1]))  # (N',) first of each run
        return self._chars_of(bad[first])

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form; ``json`` escapes newlines and any code point losslessly."""
        return {"chars": list(self.chars)}

    @classmethod
    def from_json(cls, d: Any) -> Vocab:
        """The inverse of :meth:`to_json`, validated: a checkpoint may be corrupt."""
        if not isinstance(d, Mapping) or "chars" not in d:
            raise CheckpointError("vocabulary in checkpoint is malformed: no 'chars' list")
        chars = d["chars"]
        if not isinstance(chars, list):
            kind = type(chars).__name__
            raise CheckpointError(f"vocabulary in checkpoint is malformed: 'chars' is a {kind}")
        problem = _chars_problem(chars)
        if problem is not None:
            raise CheckpointError(f"vocabulary in checkpoint is malformed: {problem}")
        return cls(tuple(chars))

    @staticmethod
    def _chars_of(cps: np.ndarray) -> tuple[str, ...]:
        return tuple(map(chr, cps.tolist()))


def _chars_problem(chars: Iterable[Any]) -> str | None:
    """Why ``chars`` is not a sorted tuple of unique single characters, or None."""
    prev = -1
    for i, c in enumerate(chars):
        if not isinstance(c, str) or len(c) != 1:
            return f"entry {i} is {c!r}, not a single character"
        if ord(c) <= prev:
            if ord(c) == prev:
                return f"{c!r} appears twice"
            return f"entry {i} ({c!r}) is out of code-point order"
        prev = ord(c)
    return None
