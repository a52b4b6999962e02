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
from dataclasses import dataclass, field

import numpy as np

from charrnn.cells import negate_sigmoid_rows
from charrnn.errors import VocabError
from charrnn.model import CharRNN, shifted_exp, softmax
from charrnn.tokenizer import Vocab


@dataclass(frozen=True)
class SampleOptions:
    temperature: float = field(  # > 0 divides the logits; 0 = greedy (argmax)
        default=1.0,
        metadata={
            "help": "How adventurous: below 1 safer, above 1 wilder, 0 always the most "
            "likely character (greedy); 0 or more."
        },
    )
    top_k: int | None = field(  # keep only the k most likely characters
        default=None,
        metadata={
            "help": "Draw only among the K most likely characters, 1 or more. [default: all]"
        },
    )
    top_p: float | None = field(  # keep the smallest set whose probability reaches p (nucleus)
        default=None,
        metadata={
            "help": "Draw only among the most likely characters that together reach "
            "probability P (nucleus sampling), in (0, 1]. [default: all]"
        },
    )

    def __post_init__(self) -> None:
        t = self.temperature
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, not {t}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top-k must be at least 1, not {self.top_k}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ValueError(f"top-p must be in (0, 1], not {self.top_p}")


def sampling_probs(logits: np.ndarray, opts: SampleOptions) -> np.ndarray:
    """(n, V) probabilities to draw from, after temperature, top-k and top-p."""
    t = opts.temperature if opts.temperature > 0 else 1.0
    z = logits.astype(np.float64) / t
    n, V = z.shape
    if opts.top_k is not None and opts.top_k < V:
        kth = np.partition(z, V - opts.top_k, axis=1)[:, V - opts.top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)  # ties at the k-th value are kept
    p, _ = softmax(z, axis=1, out=z)
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


class Kernel:
    """A lean one-step generator: the model's cell step on buffers kept between characters.

    Built once from the parameters: the input projection of every character
    (Wax x + b for one-hot x, or through the embedding) becomes a lookup table
    with the sigmoid rows negated, the recurrent weights are negated once, and all
    work buffers are preallocated for a batch of B streams. Each character then
    runs the cell's own step function (the body of its forward loop) in place on
    the state: :meth:`CharRNN.step` computes the same (checked in the tests).
    """

    COLUMN_GATHER_BATCH = 16  # from this many streams on, gather columns of the table

    def __init__(self, model: CharRNN) -> None:
        cfg, p = model.cfg, model.params
        self.cfg, self.cell = cfg, model.cell
        self.dtype = dt = model.dtype
        H = cfg.hidden
        self.H = H
        sig_rows = self.cell.sigmoid_rows(H)
        # layer 0: one row per character, (V+1, GH), negated, bias included; the extra
        # last row is the zero input x<1> = 0 (the bias alone), id zero_id = V
        W0 = p["l0.Wax"] if not cfg.embedding else p["l0.Wax"] @ p["embed"].T  # (GH, V)
        W0 = np.hstack([W0, np.zeros((W0.shape[0], 1), dtype=dt)]) + p["l0.b"][:, None]
        self.table0_cols = negate_sigmoid_rows(W0, sig_rows)  # (GH, V+1): a column per id
        self.table0 = np.ascontiguousarray(self.table0_cols.T)  # (V+1, GH): a row per id
        self.table0_col = self.table0[:, :, None]  # (V+1, GH, 1): [id] is one column, a view
        self.zero_id = cfg.vocab_size
        self.weights = [self.cell.step_weights(model.layer_weights(i)) for i in range(cfg.layers)]
        self.Wx = [negate_sigmoid_rows(p[f"l{i}.Wax"], sig_rows) for i in range(1, cfg.layers)]
        self.bx = [
            negate_sigmoid_rows(p[f"l{i}.b"][:, None], sig_rows) for i in range(1, cfg.layers)
        ]
        # above layer 0, a cell that reads its previous state only through the recurrent
        # product gets one product [Wax | Waa] @ [x<t>; a<t-1>] (the state's layers lie one
        # above the other, so the stacked operand is a view): one call fewer and no add of
        # two (GH, B) products
        self.stacked = self.cell.stacks_input
        if self.stacked:
            for i in range(1, cfg.layers):
                w = self.weights[i]
                self.weights[i] = w._replace(Wh=np.hstack([self.Wx[i - 1], w.Wh]))  # (GH, 2H)
        self.Wy = np.ascontiguousarray(p["Wya"])  # (V, H)
        self.by = p["by"][:, None].copy()  # (V, 1)
        self.batch = 0
        self._state: np.ndarray | None = None  # the state array the views below belong to

    def _buffers(self, state: np.ndarray) -> None:
        """Work buffers for the batch of ``state`` and its per-layer views (both rebuilt only
        when the state array changes: a Python-level indexing costs as much as a small call)."""
        if state is self._state:
            return
        batch = state.shape[-1]
        if batch != self.batch:
            dt, H, GH = self.dtype, self.H, self.table0.shape[1]
            self.batch = batch
            self.xw = np.empty((GH, batch), dtype=dt)  # Wax x<t> + b, sigmoid rows negated
            self.buf = (
                np.empty((GH, batch), dtype=dt),  # g: the gates
                np.empty((H, batch), dtype=dt),  # keep: what training keeps for backward
                np.empty((GH, batch), dtype=dt),  # work: scratch
            )
            self.logits = np.empty((self.cfg.vocab_size, batch), dtype=dt)
        self._state = state
        # (prev, new) per layer, each a tuple of (H, B) views; a stacked layer's prev is
        # ([x<t>; a<t-1>],) (2H, B), the layer below's new state and its own
        self._layers = [(tuple(s), tuple(s)) for s in state]
        if self.stacked:
            if not state.flags.c_contiguous:  # reshape would copy: the operand would go stale
                raise ValueError("the kernel steps a C-contiguous state (L, n_states, H, B)")
            for layer in range(1, len(state)):
                below_and_prev = state[layer - 1 : layer + 1, 0].reshape(1, 2 * self.H, batch)
                self._layers[layer] = (tuple(below_and_prev), self._layers[layer][1])

    def initial_state(self, batch: int) -> np.ndarray:
        c = self.cfg
        return np.zeros((c.layers, c.state_size, c.hidden, batch), dtype=self.dtype)

    def step(self, ids: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Advance ``state`` (L, n_states, H, B) in place by one character per stream; return
        the logits (V, B) (a buffer reused by the next call).

        Call it inside ``np.errstate(over="ignore")``, as :class:`Sampler` does once per
        run of steps: a saturated gate's e^-z overflows to inf, which gives exactly σ = 0
        but would warn (entering errstate here would cost 1.2 µs of a 25 µs character).
        """
        self._buffers(state)
        step, weights, buf, layers = self.cell.step, self.weights, self.buf, self._layers
        # (GH, B) layer 0's input projections: one gather. One stream indexes a view (0.15
        # µs against 1.4 for a fancy gather); rows of the table are cheapest for a few
        # streams; for many, the transposed view would make the step's add walk memory
        # across rows (327 µs against 164 for a column gather, GH=512, B=256), and take's
        # default mode="raise" buffers its out= (118 µs against 88 with "clip"; the ids are
        # the sampler's own, always in range)
        B = len(ids)
        if B == 1:
            xw = self.table0_col[ids[0]]
        elif B < self.COLUMN_GATHER_BATCH:
            xw = self.table0[ids].T
        else:
            xw = np.take(self.table0_cols, ids, axis=1, out=self.xw, mode="clip")
        for layer, (prev, new) in enumerate(layers):
            if layer and self.stacked:
                xw = self.bx[layer - 1]  # (GH, 1) the product has the input's share
            elif layer:
                xw = np.dot(self.Wx[layer - 1], layers[layer - 1][1][0], out=self.xw)
                xw += self.bx[layer - 1]
            step(xw, prev, new, weights[layer], *buf)  # the state in place
        np.dot(self.Wy, layers[-1][1][0], out=self.logits)
        self.logits += self.by
        return self.logits


@dataclass
class Sample:
    text: str  # the prime (echoed) followed by the generated characters, without the newline
    logprob: float  # log-probability of the generated characters under the model (nats)
    n_chars: int  # characters generated (the prime and final newline excluded)
    finished: bool  # ended at the newline (names mode) rather than at the length cap


class Drawer:
    """Draws one id per column of the logits (V, B), step after step.

    Plain sampling uses the Gumbel-max trick for small batches:
    argmax(logits + T·G), G ~ Gumbel(0, 1), is a draw from softmax(logits / T), and
    the noise for 64 steps comes from one call, so a step costs two NumPy calls
    instead of a softmax and a cumulative sum. Large batches (where generating the
    noise costs more than the softmax) draw by inverse CDF. Temperature 0 is argmax;
    top-k / top-p go through :func:`sampling_probs`.
    """

    # above this, the inverse CDF is cheaper than the noise: per step, V=27: 7 against 32 µs
    # at B=16, 42 against 50 at B=128, 80 against 68 at B=256; V=65 crosses at B≈160, V=165
    # above 256 (one thread; bench/README.md, "Results of 2026-11-29, session 5's final main")
    GUMBEL_MAX_BATCH = 128
    BLOCK = 64  # steps of noise drawn at once
    TRIANGLE_MAX_V = 512  # vocabularies up to this size sum the CDF with one product

    def __init__(self, opts: SampleOptions, rng: np.random.Generator) -> None:
        self.opts, self.rng = opts, rng
        self.plain = opts.top_k is None and opts.top_p is None and opts.temperature > 0
        self.noise: np.ndarray | None = None
        self.i = 0
        self.triangle: np.ndarray | None = None  # (V, V) lower triangle of ones
        self.shape: tuple[object, ...] = ()  # (V, B, dtype) the buffers below were made for
        self.z = np.empty(0)  # (V, B) exp(logits / T - each column's max)
        self.p64 = np.empty(0)  # (V, B) the same in float64: the unnormalised softmax
        self.cdf = np.empty(0)  # (V, B) running sums of p64 down each column
        self.u = np.empty(0)  # (B,) the uniform draws, scaled by each column's total
        self.below = np.empty(0, dtype=bool)  # (V, B) cdf <= u

    def _gumbel(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """T·G in the logits' dtype, G ~ Gumbel(0, 1) = -log E, E ~ Exp(1).

        From float64 draws (a float32 exponential can be exactly 0), stored in the
        logits' dtype so that the per-step add does not mix types (1.5 µs against 0.5
        for V=65, B=1); -log E costs half of Generator.gumbel (42 µs against 84 for 64
        steps of V=65).
        """
        e = self.rng.standard_exponential(size=shape)
        np.log(e, out=e)
        e *= -self.opts.temperature
        return e.astype(dtype)

    def _inverse_cdf(self, logits: np.ndarray, out: np.ndarray) -> np.ndarray:
        """One id per column of logits (V, B) by inverse CDF, into ``out`` (B,).

        In preallocated buffers: a large batch would otherwise allocate ~8 arrays of
        (V, B) per character. np.cumsum along the first axis walks memory badly (215 µs
        for V=65, B=256, where a product with a lower triangle of ones takes ~60 µs).
        """
        V, B = logits.shape
        if self.shape != (V, B, logits.dtype):
            self.shape = (V, B, logits.dtype)
            self.z = np.empty((V, B), dtype=logits.dtype)
            self.p64, self.cdf = np.empty((V, B)), np.empty((V, B))
            self.u, self.below = np.empty(B), np.empty((V, B), dtype=bool)
            self.triangle = np.tril(np.ones((V, V))) if V <= self.TRIANGLE_MAX_V else None
        # softmax(logits / T) without its normalisation: the uniform is scaled by each
        # column's total instead, so the division and the log-normaliser are not needed
        z, _ = shifted_exp(np.divide(logits, self.opts.temperature, out=self.z), 0, self.z)
        p = self.p64
        np.copyto(p, z)  # summed in float64: rare ids keep their share of the total
        if self.triangle is not None:
            cdf = np.matmul(self.triangle, p, out=self.cdf)
        else:
            cdf = np.cumsum(p, axis=0, out=self.cdf)
        u = self.rng.random(out=self.u)
        u *= cdf[-1]
        np.less_equal(cdf, u, out=self.below)
        np.sum(self.below, axis=0, out=out)
        return np.minimum(out, V - 1, out=out)

    def __call__(
        self, logits: np.ndarray, want_logprob: bool = False, out: np.ndarray | None = None
    ):
        """(ids (B,), log-probabilities (B,) under the model at temperature 1, or None).

        The ids go into ``out`` (B,) int64 when given (it is then the first result).
        """
        opts = self.opts
        V, B = logits.shape
        if out is None:
            out = np.empty(B, dtype=np.int64)
        if opts.temperature == 0:
            ids = logits.argmax(axis=0, out=out)
        elif self.plain and B <= self.GUMBEL_MAX_BATCH:
            noise = self.noise
            if noise is None or self.i == self.BLOCK or noise.shape[2] != B:
                self.noise = noise = self._gumbel((self.BLOCK, V, B), logits.dtype)
                self.i = 0
            g = noise[self.i]
            g += logits
            ids = g.argmax(axis=0, out=out)
            self.i += 1
        elif self.plain:
            ids = self._inverse_cdf(logits, out)
        else:
            out[...] = choose(logits.T, opts, self.rng)
            ids = out
        lp = None
        if want_logprob:
            _, lse = softmax(logits, axis=0)
            lp = logits[ids, np.arange(B)] - lse
        return ids, lp


class Sampler:
    """Batched generation from a model and its vocabulary."""

    def __init__(self, model: CharRNN, vocab: Vocab) -> None:
        self.model = model
        self.vocab = vocab
        self.eos = vocab.eos_id
        self.kernel = Kernel(model)

    def encode_prime(self, prime: str) -> np.ndarray:
        unknown = self.vocab.unknown(prime)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:20])
            raise VocabError(
                f"--prime contains {len(unknown)} character(s) not in the model's "
                f"vocabulary: {shown}",
                unknown=unknown,
            )
        return self.vocab.encode(prime)

    def start(self, n: int, prime: str = "") -> tuple[np.ndarray, np.ndarray]:
        """State (L, S, H, n) and logits (V, n) after the start of a line and the prime.

        The start is the newline (as after the previous line of the corpus); a
        vocabulary without one starts from the zero input, x<1> = 0, as in the
        assignment (the bias alone).
        """
        k = self.kernel
        state = k.initial_state(n)
        first = self.eos if self.eos is not None else k.zero_id
        with np.errstate(over="ignore"):  # see Kernel.step
            logits = k.step(np.full(n, first), state)
            for i in self.encode_prime(prime):
                logits = k.step(np.full(n, i), state)
        return state, logits

    def lines(
        self,
        n: int,
        max_length: int,
        opts: SampleOptions,
        rng: np.random.Generator,
        prime: str = "",
        logprob: bool = True,
    ) -> list[Sample]:
        """n samples that each end at the newline (or at max_length characters).

        ``logprob=False`` skips the log-probabilities (reported as nan), a little faster.
        """
        state, logits = self.start(n, prime)
        drawer = Drawer(opts, rng)
        want = logprob
        out = np.zeros((n, max_length), dtype=np.int64)
        length = np.full(n, max_length)
        total = np.zeros(n) if want else np.full(n, np.nan)  # log-probability of each sample
        finished = np.zeros(n, dtype=bool)
        active = np.arange(n)  # streams still generating; the state holds only these
        eos = -1 if self.eos is None else self.eos
        with np.errstate(over="ignore"):  # see Kernel.step
            for t in range(max_length):
                ids, lp = drawer(logits, want_logprob=want)
                out[active, t] = ids
                if want:
                    total[active] += lp
                done = ids == eos
                if done.any():
                    length[active[done]] = t
                    finished[active[done]] = True
                    keep = ~done
                    active = active[keep]
                    if len(active) == 0:
                        break
                    ids = ids[keep]
                    state = np.ascontiguousarray(state[..., keep])
                if t < max_length - 1:
                    logits = self.kernel.step(ids, state)
        decode = self.vocab.decode
        return [
            Sample(
                prime + decode(out[i, : length[i]]),
                float(total[i]),
                int(length[i]),
                bool(finished[i]),
            )
            for i in range(n)
        ]

    def stream(
        self,
        length: int,
        opts: SampleOptions,
        rng: np.random.Generator,
        prime: str = "",
        n: int = 1,
        chunk: int = 64,
    ) -> Iterator[list[str]]:
        """Prose: ``length`` characters for each of n streams, yielded in chunks as generated."""
        state, logits = self.start(n, prime)
        drawer = Drawer(opts, rng)
        buf = np.empty((min(chunk, length), n), dtype=np.int64)  # a row per step
        done = 0
        while done < length:
            rows = buf[: length - done]  # this chunk's steps
            # once per chunk (see Kernel.step), never across a yield: it would leak to the caller
            with np.errstate(over="ignore"):
                for row in rows:
                    ids, _ = drawer(logits, out=row)
                    done += 1
                    if done < length:
                        logits = self.kernel.step(ids, state)
            yield [self.vocab.decode(col) for col in rows.T]


# --------------------------------------------------------------------------- names: filters
#
# The sampling contract of names mode: exactly n names that pass the filters, each tagged
# with where it comes from (makemore's categories), drawn in batches until n are found
# or a bounded number of draws is spent.

ORIGINS = ("train", "val", "new")


@dataclass(frozen=True)
class KnownLines:
    """Hashes of the corpus's lines (sorted, unique) and of its validation lines."""

    lines: np.ndarray  # (n,) int64 every non-empty line of the corpus (train and validation)
    val: np.ndarray  # (m,) int64 the validation lines (empty when the run had none)

    def origin(self, line: str) -> str:
        """ "val" for a validation line, "train" for another corpus line, else "new"."""
        if is_known(line, self.val):
            return "val"
        return "train" if is_known(line, self.lines) else "new"


@dataclass(frozen=True)
class NameFilter:
    min_length: int = 1  # fewest characters; 1 redraws empty names (0: a corpus with blank lines)
    novel: bool = False  # only names that are neither training nor validation lines
    unique: bool = False  # no name twice in the output

    def __post_init__(self) -> None:
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0, not {self.min_length}")


@dataclass
class NameDraws:
    """What :func:`draw_names` found: the names in draw order and why others were dropped."""

    samples: list[Sample]  # the names kept, at most n
    origins: list[str | None]  # "train" | "val" | "new" for each; None without KnownLines
    draws: int  # names generated, kept or not
    rejected: dict[str, int]  # reason ("short", "known", "repeat") -> names dropped
    complete: bool  # n names found within the budget


def max_draws(n: int) -> int:
    """The draw budget for n names: generous enough that only a filter that the model can
    hardly meet runs out, bounded so that `sample` always ends."""
    return 50 * n + 1000


def draw_names(
    sampler: Sampler,
    n: int,
    max_length: int,
    opts: SampleOptions,
    rng: np.random.Generator,
    *,
    prime: str = "",
    filt: NameFilter = NameFilter(),
    known: KnownLines | None = None,
    logprob: bool = True,
    budget: int | None = None,
    group: int = 4096,
) -> NameDraws:
    """Draw names in batches of at most ``group`` until ``n`` pass ``filt`` or ``budget``
    draws (default :func:`max_draws`) are spent. ``known`` is needed for novel names and
    origin tags. The text checked is the whole name, prime included."""
    if filt.novel and known is None:
        raise ValueError("novel names need the corpus's known lines")
    budget = max_draws(n) if budget is None else budget
    kept: list[Sample] = []
    origins: list[str | None] = []
    seen: set[str] = set()
    rejected = {"short": 0, "known": 0, "repeat": 0}
    draws = 0
    while len(kept) < n and draws < budget:
        missing = n - len(kept)
        # draw a little more than missing once filters have bitten (fewer rounds)
        ask = missing if draws == 0 else min(group, max(16, 2 * missing))
        ask = min(ask, group, budget - draws)
        for s in sampler.lines(ask, max_length, opts, rng, prime, logprob=logprob):
            draws += 1
            if len(s.text) < filt.min_length:
                rejected["short"] += 1
                continue
            where = known.origin(s.text) if known is not None else None
            if filt.novel and where != "new":
                rejected["known"] += 1
                continue
            if filt.unique:
                if s.text in seen:
                    rejected["repeat"] += 1
                    continue
                seen.add(s.text)
            kept.append(s)
            origins.append(where)
            if len(kept) == n:
                break
    return NameDraws(kept, origins, draws, rejected, len(kept) == n)
