"""scoring: a text fed in pieces scores as the whole text does, lines included; a text
scored by lines totals its per-line scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.errors import VocabError
from charrnn.model import CharRNN, ModelConfig
from charrnn.scoring import (
    Known,
    lines_of,
    score_by_lines,
    score_line_stream,
    score_lines,
    score_stream,
    score_text,
)
from charrnn.tokenizer import Vocab

VOCAB = Vocab(tuple("\nabc"))
MODEL = CharRNN(
    ModelConfig(vocab_size=VOCAB.size, hidden=6, dtype="float64"), rng=np.random.default_rng(0)
)


def cuts(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="\nabc", max_size=700), points=st.lists(st.integers(0, 700)))
def test_pieces_score_as_the_whole_text(text, points):
    lp, n = score_text(MODEL, VOCAB, text)
    lp2, n2, n_read = score_stream(MODEL, VOCAB, cuts(text, points), Known(VOCAB, "t"))
    assert (n2, n_read) == (n, len(text))
    assert lp2 == pytest.approx(lp, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="\nab", max_size=200), points=st.lists(st.integers(0, 200)))
def test_lines_of_pieces_are_the_lines_of_the_text(text, points):
    want = text.split("\n")
    if want and want[-1] == "":
        want.pop()
    assert list(lines_of(cuts(text, points))) == want
    got = list(score_line_stream(MODEL, VOCAB, cuts(text, points), Known(VOCAB, "t")))
    assert [g[0] for g in got] == want
    assert [g[1:] for g in got] == score_lines(MODEL, VOCAB, want)


def test_unknown_characters_are_refused_or_dropped_and_counted():
    with pytest.raises(VocabError, match="t contains 1 character not in the model's vocabulary"):
        score_stream(MODEL, VOCAB, ["ab", "cz"], Known(VOCAB, "t"))
    known = Known(VOCAB, "t", skip=True)
    lp, n, n_read = score_stream(MODEL, VOCAB, ["abzz", "zc"], known)
    assert (known.dropped, n_read) == (3, 3)
    assert (lp, n) == score_text(MODEL, VOCAB, "abc")


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="\nabc", max_size=300), points=st.lists(st.integers(0, 300)))
def test_by_lines_totals_are_the_sums_of_the_per_line_scores(text, points):
    lines = list(lines_of([text]))
    rows = score_lines(MODEL, VOCAB, lines)
    lp, n, n_read, n_lines = score_by_lines(MODEL, VOCAB, cuts(text, points), Known(VOCAB, "t"))
    assert (n_lines, n_read) == (len(lines), len(text))
    assert n == sum(len(line) + 1 for line in lines)  # every line's end is scored
    assert lp == pytest.approx(sum(r[0] for r in rows), rel=1e-12, abs=1e-12)


def test_by_lines_starts_every_line_over_where_the_stream_carries_the_state():
    text = "abca\ncab\nbbac\n"
    lp, n, _, n_lines = score_by_lines(MODEL, VOCAB, [text], Known(VOCAB, "t"))
    alone = [score_text(MODEL, VOCAB, line + "\n") for line in ("abca", "cab", "bbac")]
    assert (n, n_lines) == (len(text), 3)
    assert lp == pytest.approx(sum(a[0] for a in alone), rel=1e-12)
    stream, n_stream = score_text(MODEL, VOCAB, text)  # the state carried across line ends
    assert n_stream == n and abs(stream - lp) > 1e-3
