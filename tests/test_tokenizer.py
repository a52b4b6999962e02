from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charrnn.errors import CheckpointError, VocabError
from charrnn.tokenizer import Vocab

# letters, newline, tab, a combining acute, CJK and emoji (beyond the BMP)
SPECIAL = ["\n", "\t", "\r", " ", "\u0301", "\u00e9", "\u4e2d", "\U0001f600", "\U0010ffff"]


def test_from_text_sorts_by_code_point_and_dedupes():
    v = Vocab.from_text("banana\n")
    assert v.chars == ("\n", "a", "b", "n")
    assert v.size == 4
    assert v.eos_id == 0


def test_eos_id_is_none_without_newline():
    assert Vocab.from_text("abc").eos_id is None
    assert Vocab.from_text("c\nab").eos_id == 0
    assert Vocab.from_text(" \n").eos_id == 0  # "\n" (10) sorts before " " (32)


def test_from_codepoints_accepts_duplicates_and_any_int_dtype():
    v = Vocab.from_codepoints(np.array([98, 97, 98, 0x1F600], dtype=np.uint32))
    assert v.chars == ("a", "b", "\U0001f600")
    assert Vocab.from_codepoints(np.array([99, 97], dtype=np.int64)).chars == ("a", "c")
    assert Vocab.from_codepoints(np.array([], dtype=np.uint32)).size == 0
    with pytest.raises(ValueError):
        Vocab.from_codepoints(np.array([0x110000]))


@pytest.mark.parametrize(
    ("size", "dtype"),
    [
        (1, np.uint8),
        (255, np.uint8),
        (256, np.uint8),
        (257, np.uint16),
        (65535, np.uint16),
        (65536, np.uint16),
        (65537, np.uint32),
    ],
)
def test_dtype_holds_the_largest_id(size, dtype):
    v = Vocab.from_codepoints(np.arange(size, dtype=np.uint32))
    assert v.size == size
    assert v.dtype == np.dtype(dtype)
    ids = v.encode_codepoints(np.array([0, size - 1], dtype=np.uint32))
    assert ids.dtype == dtype
    assert ids.tolist() == [0, size - 1]  # the largest id did not wrap


def test_encode_gives_ids_in_vocab_dtype():
    v = Vocab.from_text("hello\n")
    ids = v.encode("hole\n")
    assert ids.dtype == np.uint8
    assert [v.chars[i] for i in ids] == list("hole\n")


@given(st.data())
def test_decode_encode_round_trip(data):
    alphabet = data.draw(
        st.lists(st.one_of(st.characters(), st.sampled_from(SPECIAL)), min_size=1, unique=True)
    )
    v = Vocab.from_text("".join(alphabet))
    text = data.draw(st.text(alphabet=st.sampled_from(alphabet)))
    ids = v.encode(text)
    assert ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert v.decode(ids.tolist()) == text  # plain lists too
    assert v.decode(ids.astype(np.int64)) == text


@given(st.text())
def test_from_text_vocab_encodes_its_own_text(text):
    v = Vocab.from_text(text)
    assert v.chars == tuple(sorted(set(text)))
    assert v.unknown(text) == ()
    assert v.decode(v.encode(text)) == text


def test_decode_accepts_2d_and_empty():
    v = Vocab.from_text("ab")
    assert v.decode(np.array([[0, 1], [1, 0]])) == "abba"
    assert v.decode([]) == ""
    assert v.decode(np.array([], dtype=np.uint8)) == ""


def test_decode_rejects_ids_outside_the_vocab():
    v = Vocab.from_text("ab")
    with pytest.raises(ValueError, match="id 2"):
        v.decode([0, 2])
    with pytest.raises(ValueError, match="id -1"):
        v.decode([-1])


def test_unknown_characters_are_listed():
    v = Vocab.from_text("abc\n")
    with pytest.raises(VocabError) as info:
        v.encode("a\t\u00e9b\u00e9")
    err = info.value
    assert err.unknown == ("\t", "\u00e9")
    msg = str(err)
    assert "\n" not in msg
    assert msg == ("text contains 2 characters not in the model's vocabulary: '\\t', '\u00e9'")
    assert v.unknown("a\t\u00e9b\u00e9") == ("\t", "\u00e9")
    assert v.unknown("cab") == ()


@given(st.text(alphabet=st.sampled_from(["a", "b", "\n", *SPECIAL]), max_size=40), st.text())
def test_unknown_is_the_sorted_set_of_missing_characters(known, text):
    v = Vocab.from_text(known)
    assert v.unknown(text) == tuple(sorted(set(text) - set(known)))  # a naive reference


def test_one_unknown_character_is_singular():
    with pytest.raises(VocabError, match="1 character not in .*: '\U0001f600'$"):
        Vocab.from_text("a").encode("a\U0001f600")


def test_unknown_message_stays_one_line():
    with pytest.raises(VocabError) as info:
        Vocab.from_text("a").encode("\u2028\r\x85")
    assert len(str(info.value).splitlines()) == 1


def test_unknown_list_is_capped():
    v = Vocab.from_text("a")
    text = "".join(chr(c) for c in range(0x400, 0x400 + 25))
    with pytest.raises(VocabError) as info:
        v.encode(text)
    assert len(info.value.unknown) == 25
    msg = str(info.value)
    assert msg.startswith("text contains 25 characters")
    assert msg.endswith(", and 5 more")
    assert repr(chr(0x400 + 19)) in msg
    assert repr(chr(0x400 + 20)) not in msg


def test_unknown_above_largest_code_point_and_below_smallest():
    v = Vocab.from_text("mn")
    assert v.unknown("a\U0010ffffm") == ("a", "\U0010ffff")
    with pytest.raises(VocabError):
        v.encode_codepoints(np.array([0x10FFFF], dtype=np.uint32))


def test_empty_vocab_knows_nothing():
    v = Vocab.from_text("")
    assert v.size == 0
    assert v.encode("").size == 0
    assert v.unknown("x") == ("x",)


@given(st.lists(st.characters(), unique=True))
def test_json_round_trip(chars):
    v = Vocab(tuple(sorted(chars)))
    assert Vocab.from_json(json.loads(json.dumps(v.to_json()))) == v


def test_json_keeps_newline_and_non_bmp():
    v = Vocab.from_text("a\n\U0001f600\u0301")
    text = json.dumps(v.to_json())
    assert Vocab.from_json(json.loads(text)).chars == v.chars


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "abc",
        {},
        {"chars": "abc"},
        {"chars": ["a", "bc"]},
        {"chars": ["a", ""]},
        {"chars": ["a", 1]},
        {"chars": ["b", "a"]},
        {"chars": ["a", "a"]},
        {"chars": None},
    ],
)
def test_from_json_rejects_garbage(bad):
    with pytest.raises(CheckpointError, match="^vocabulary in checkpoint is malformed: "):
        Vocab.from_json(bad)


def test_constructor_rejects_unsorted():
    with pytest.raises(ValueError):
        Vocab(("b", "a"))


def test_vocab_is_hashable_and_compares_by_chars():
    a, b = Vocab.from_text("xy"), Vocab(("x", "y"))
    _ = a.encode("xy")  # cached tables must not affect equality
    assert a == b
    assert hash(a) == hash(b)
