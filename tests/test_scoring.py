"""scoring: a text fed in pieces scores as the whole text does, lines included."""

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
