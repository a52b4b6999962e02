"""Generation as in the lectures: sample from the softmax, feed the character back in.

N samples run as one batch (the state has a column per sample), so ``-n 1000``
costs about as many NumPy calls as one sample. Randomness comes from the
``rng`` argument only: the same checkpoint, seed and options give the same text.

Pure NumPy: no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from charrnn.errors import VocabError
from charrnn.model import CharRNN
from charrnn.tokenizer import Vocab


@dataclass(frozen=True)
class SampleOptions:
    temperature: float = 1.0  # > 0 divides the logits; 0 = greedy (argmax)
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)

    def __post_init__(self) -> None:
        t = self.temperature
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, not {t}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top-k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ValueError(f"top-p must be in (0, 1], not {self.top_p}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def sampling_probs(logits: np.ndarray, opts: SampleOptions) -> np.ndarray:
    """(n, V) probabilities to draw from, after temperature, top-k and top-p."""
    t = opts.temperature if opts.temperature > 0 else 1.0
    z = logits.astype(np.float64) / t
    n, V = z.shape
    if opts.top_k is not None and opts.top_k < V:
        kth = np.partition(z, V - opts.top_k, axis=1)[:, V - opts.top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)  # ties at the k-th value are kept
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if opts.top_p is not None and opts.top_p < 1:
        order = np.argsort(-p, axis=1, kind="stable")
        sp = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(sp, axis=1) - sp  # mass strictly above each candidate
        keep_sorted = before < opts.top_p  # the first always survives
        keep = np.empty_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    return p


def choose(logits: np.ndarray, opts: SampleOptions, rng: np.random.Generator) -> np.ndarray:
    """One id per row: argmax at temperature 0, else a draw by inverse CDF."""
    if opts.temperature == 0:
        return logits.argmax(axis=1)
    p = sampling_probs(logits, opts)
    cdf = np.cumsum(p, axis=1)
    u = rng.random((p.shape[0], 1)) * cdf[:, -1:]
    ids = (cdf <= u).sum(axis=1)
    return np.minimum(ids, p.shape[1] - 1)


def line_hash(line: str) -> int:
    """A stable 63-bit hash of a line, to test novelty without keeping the corpus."""
    h = hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def line_hashes(lines: Iterable[str]) -> np.ndarray:
    """Sorted unique hashes of the training lines (stored in names-mode checkpoints)."""
    return np.unique(np.fromiter((line_hash(s) for s in lines), dtype=np.int64))


def is_known(line: str, hashes: np.ndarray) -> bool:
    h = line_hash(line)
    i = np.searchsorted(hashes, h)
    return bool(i < len(hashes) and hashes[i] == h)


@dataclass
class Sample:
    text: str  # the prime (echoed) followed by the generated characters, without the newline
    logprob: float  # log-probability of the generated characters under the model (nats)
    n_chars: int  # characters generated (the prime and final newline excluded)
    finished: bool  # ended at the newline (names mode) rather than at the length cap


class Sampler:
    """Batched generation from a model and its vocabulary."""

    def __init__(self, model: CharRNN, vocab: Vocab) -> None:
        self.model = model
        self.vocab = vocab
        self.eos = vocab.eos_id

    def encode_prime(self, prime: str) -> np.ndarray:
        unknown = self.vocab.unknown(prime)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:20])
            raise VocabError(f"--prime contains {len(unknown)} character(s) not in the model's "
                             f"vocabulary: {shown}", unknown=unknown)
        return self.vocab.encode(prime)

    def start(self, n: int, prime: str = "") -> tuple[np.ndarray, np.ndarray]:
        """State and logits after the start of a line and the prime, for n streams.

        The start is the newline (as after the previous line of the corpus); a
        vocabulary without one starts from the zero input, x<1> = 0, as in the
        assignment (the logits of the bias alone).
        """
        model = self.model
        state = model.initial_state(n)
        ids = self.encode_prime(prime)
        if self.eos is not None:
            ids = np.concatenate([[self.eos], ids]).astype(np.int64)
        if len(ids) == 0:
            return self._zero_input_step(n)
        for i in ids:
            logits, state = model.step(np.full(n, i, dtype=np.int64), state)
        return state, logits

    def _zero_input_step(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """One step with x<1> = 0 (only possible for one-hot input): the assignment's start."""
        model, p = self.model, self.model.params
        saved = p["l0.Wax"].copy() if not model.cfg.embedding else p["embed"].copy()
        try:
            (p["embed"] if model.cfg.embedding else p["l0.Wax"])[...] = 0.0
            logits, state = model.step(np.zeros(n, dtype=np.int64), model.initial_state(n))
        finally:
            (p["embed"] if model.cfg.embedding else p["l0.Wax"])[...] = saved
        return state, logits

    def lines(self, n: int, max_length: int, opts: SampleOptions, rng: np.random.Generator,
              prime: str = "") -> list[Sample]:
        """n samples that each end at the newline (or at max_length characters)."""
        state, logits = self.start(n, prime)
        out: list[list[int]] = [[] for _ in range(n)]
        logprob = np.zeros(n)
        finished = np.zeros(n, dtype=bool)
        active = np.arange(n)  # streams still generating; the state holds only these
        for _ in range(max_length):
            ids = choose(logits, opts, rng)
            lp = log_softmax(logits)[np.arange(len(ids)), ids]
            done = ids == self.eos if self.eos is not None else np.zeros(len(ids), dtype=bool)
            logprob[active] += lp
            for j in np.flatnonzero(~done):
                out[active[j]].append(int(ids[j]))
            finished[active[done]] = True
            if done.any():
                keep = ~done
                active = active[keep]
                if len(active) == 0:
                    break
                ids = ids[keep]
                state = np.ascontiguousarray(state[..., keep])
            logits, state = self.model.step(ids, state)
        return [Sample(prime + self.vocab.decode(np.array(o, dtype=np.int64)), float(logprob[i]),
                       len(out[i]), bool(finished[i])) for i, o in enumerate(out)]

    def stream(self, length: int, opts: SampleOptions, rng: np.random.Generator,
               prime: str = "", n: int = 1, chunk: int = 64) -> Iterator[list[str]]:
        """Prose: ``length`` characters for each of n streams, yielded in chunks as generated."""
        state, logits = self.start(n, prime)
        buf: list[np.ndarray] = []
        for i in range(length):
            ids = choose(logits, opts, rng)
            buf.append(ids)
            if len(buf) == chunk or i == length - 1:
                block = np.stack(buf, axis=1)  # (n, chunk)
                yield [self.vocab.decode(row) for row in block]
                buf = []
            if i < length - 1:
                logits, state = self.model.step(ids, state)
