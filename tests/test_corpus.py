from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.corpus import Corpus, load_corpus
from charrnn.errors import CheckpointError, CorpusError, InputMissingError, StoreIOError
from charrnn.reading import CorpusOptions
from charrnn.tokenizer import Vocab

ROOT = Path(__file__).resolve().parent.parent
DINOS = ROOT / "data" / "dinos.txt"
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def text_of(c: Corpus) -> str:
    return c.vocab.decode(c.ids)


# the bundled corpora


def test_dinos():
    c = load_corpus([DINOS])
    assert c.vocab.size == 53
    assert c.n_chars == 19_909
    assert c.n_bytes == 19_909
    assert c.n_lines == 1_536  # the last line has no newline and still counts
    assert c.is_lines
    assert c.ids.dtype == np.uint8
    assert c.ids.shape == (19_909,)
    assert text_of(c) == DINOS.read_text(encoding="utf-8")
    assert c.sources == (str(DINOS),)
    assert "Zuul" in c.lines()
    assert "" not in c.lines()


def test_dinos_lowercase_is_the_assignments_27_characters():
    c = load_corpus([DINOS], CorpusOptions(lowercase=True))
    assert c.vocab.size == 27
    assert c.vocab.chars == ("\n", *"abcdefghijklmnopqrstuvwxyz")
    assert c.vocab.eos_id == 0
    assert c.n_chars == 19_909
    assert c.is_lines


def test_tinyshakespeare_is_prose():
    c = load_corpus([SHAKESPEARE])
    assert c.vocab.size == 65
    assert c.n_chars == 1_115_394
    assert not c.is_lines


def test_ids_are_read_only():
    c = load_corpus([DINOS])
    with pytest.raises(ValueError):
        c.ids[0] = 1


def test_a_single_path_is_not_split_into_letters():
    assert load_corpus(DINOS).n_chars == 19_909
    assert load_corpus(str(DINOS)).n_chars == 19_909


# is_lines heuristic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n".join(f"name{i}" for i in range(50)), True),
        ("\n".join(f"name{i}" for i in range(5)), False),  # too few lines to tell
        ("\n".join("x" * 60 for _ in range(50)), False),  # long lines
        ("\n".join(("abc" if i % 4 else "") for i in range(50)), False),  # blank lines: verse
        ("\n".join("abc" if i % 10 else "y" * 200 for i in range(100)), False),  # p95 > 80
        ("word " * 1000, False),  # no newline at all
    ],
)
def test_is_lines_heuristic(tmp_path, text, expected):
    c = load_corpus([write(tmp_path / "t.txt", text.encode())])
    assert c.is_lines is expected


def test_is_lines_on_a_memmap_across_scan_slices(tmp_path, monkeypatch):
    import charrnn.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "_SCAN_IDS", 7)  # lines straddle the slices
    c = load_corpus([DINOS], cache_dir=tmp_path)
    assert isinstance(c.ids, np.memmap)
    assert c.is_lines
    text = "\n".join("abc" if i % 10 else "y" * 200 for i in range(100))
    assert not load_corpus([write(tmp_path / "t.txt", text.encode())]).is_lines


# several sources and stdin


def test_several_files_are_concatenated_in_order(tmp_path):
    a = write(tmp_path / "a.txt", b"abc\n")
    b = write(tmp_path / "b.txt", "d\u00e9f".encode())
    c = load_corpus([a, b])
    assert text_of(c) == "abc\nd\u00e9f"
    assert c.sources == (str(a), str(b))
    assert c.n_bytes == 4 + 4
    assert c.n_lines == 2
    assert text_of(load_corpus([b, a])) == "d\u00e9fabc\n"


def test_stdin(tmp_path):
    c = load_corpus(["-"], stdin=io.BytesIO("hello\nw\u00f6rld\n".encode()))
    assert text_of(c) == "hello\nw\u00f6rld\n"
    assert c.sources == ("-",)
    assert c.n_lines == 2


def test_stdin_between_files_and_spooled_to_disk(tmp_path):
    a = write(tmp_path / "a.txt", b"first\n")
    body = ("line \u00e9\r\n" * 500).encode()
    # chunk_bytes smaller than stdin forces the spool onto disk, in the cache dir
    c = load_corpus(
        [a, "-", a], stdin=io.BytesIO(body), cache_dir=tmp_path / "cache", chunk_bytes=64
    )
    assert text_of(c) == "first\n" + "line \u00e9\n" * 500 + "first\n"
    assert c.sources == (str(a), "-", str(a))


def test_stdin_only_once():
    with pytest.raises(CorpusError, match="only once"):
        load_corpus(["-", "-"], stdin=io.BytesIO(b"ab"))


def test_no_sources():
    with pytest.raises(CorpusError, match="no corpus"):
        load_corpus([])


# encodings and newlines


def test_utf8_bom_is_stripped(tmp_path):
    c = load_corpus([write(tmp_path / "b.txt", b"\xef\xbb\xbfab\n")])
    assert text_of(c) == "ab\n"
    assert c.n_bytes == 6
    assert "\ufeff" not in c.vocab.chars


def test_utf8_bom_with_one_byte_chunks(tmp_path):
    c = load_corpus([write(tmp_path / "b.txt", b"\xef\xbb\xbfab")], chunk_bytes=1)
    assert text_of(c) == "ab"


def test_crlf_and_lone_cr_become_lf(tmp_path):
    path = write(tmp_path / "w.txt", b"a\r\nb\rc\n\r\r\nd\r")
    c = load_corpus([path])
    assert text_of(c) == "a\nb\nc\n\n\nd\n"
    assert c.n_lines == 6
    assert "\r" not in c.vocab.chars


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5])
def test_crlf_split_across_chunks(tmp_path, chunk):
    # with 4-byte first chunks "ab\r\n" ends exactly on "\r" in several of these
    path = write(tmp_path / "w.txt", b"abc\r\nde\r\r\nf\r")
    assert text_of(load_corpus([path], chunk_bytes=chunk)) == "abc\nde\n\nf\n"


def test_newline_keep(tmp_path):
    path = write(tmp_path / "w.txt", b"a\r\nb\rc\n")
    c = load_corpus([path], CorpusOptions(newline="keep"), chunk_bytes=2)
    assert text_of(c) == "a\r\nb\rc\n"
    assert "\r" in c.vocab.chars


def test_latin1_encoding(tmp_path):
    path = write(tmp_path / "l.txt", "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="invalid UTF-8"):
        load_corpus([path])
    c = load_corpus([path], CorpusOptions(encoding="latin-1"))
    assert text_of(c) == "caf\u00e9\n"


def test_utf16_when_asked(tmp_path):
    path = write(tmp_path / "u.txt", "h\u00e9llo\r\nw\n".encode("utf-16"))
    c = load_corpus([path], CorpusOptions(encoding="utf-16"), chunk_bytes=3)
    assert text_of(c) == "h\u00e9llo\nw\n"


def test_lowercase_does_not_depend_on_chunking(tmp_path):
    # str.lower turns a capital sigma into a final one only at a word end
    greek = "\u039f\u0394\u03a3\u03a3\u0395\u03a5\u03a3 \u0399\u03a3"  # ΟΔΣΣΕΥΣ ΙΣ
    path = write(tmp_path / "g.txt", greek.encode())
    opts = CorpusOptions(lowercase=True)
    whole = text_of(load_corpus([path], opts))
    for chunk in range(1, 8):
        assert text_of(load_corpus([path], opts, chunk_bytes=chunk)) == whole
    assert "\u03a3" not in whole


# errors: each a domain exception with a one-line message


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(InputMissingError) as info:
        load_corpus([tmp_path / "nope.txt"])
    assert one_line(info.value) == f"file not found: {tmp_path / 'nope.txt'}"


def test_missing_second_file_fails(tmp_path):
    a = write(tmp_path / "a.txt", b"abc")
    with pytest.raises(InputMissingError, match="not found"):
        load_corpus([a, tmp_path / "nope.txt"])


def test_directory(tmp_path):
    with pytest.raises(InputMissingError) as info:
        load_corpus([tmp_path])
    assert one_line(info.value) == f"{tmp_path} is a directory, not a text file"


def test_unreadable(tmp_path, monkeypatch):
    import charrnn.corpus as corpus_mod

    path = write(tmp_path / "secret.txt", b"abc")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # chmod 000 does not stop root, so make open itself refuse
    monkeypatch.setattr(corpus_mod.os, "open", denied)
    with pytest.raises(InputMissingError) as info:
        load_corpus([path])
    assert one_line(info.value) == f"cannot read {path}: permission denied"


def test_read_error_names_the_os_reason(tmp_path, monkeypatch):
    import charrnn.corpus as corpus_mod

    path = write(tmp_path / "flaky.txt", b"abc")

    class Flaky(io.BytesIO):
        def read(self, *args):
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(corpus_mod.os, "fdopen", lambda *a, **k: Flaky())
    with pytest.raises(InputMissingError, match=f"cannot read {path}: Input/output error"):
        load_corpus([path])


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_empty(tmp_path, data):
    path = write(tmp_path / "e.txt", data)
    with pytest.raises(CorpusError) as info:
        load_corpus([path])
    assert one_line(info.value) == f"{path} is empty: a corpus needs at least 2 characters"


def test_one_character_is_too_few(tmp_path):
    path = write(tmp_path / "one.txt", "\u00e9".encode())
    with pytest.raises(CorpusError, match="has only 1 character: a corpus needs at least 2"):
        load_corpus([path])


def test_empty_files_together_name_all(tmp_path):
    a, b = write(tmp_path / "a.txt", b""), write(tmp_path / "b.txt", b"")
    with pytest.raises(CorpusError, match=r"^the corpus \(.*a\.txt, .*b\.txt\) is empty"):
        load_corpus([a, b])


def test_invalid_utf8_names_byte_and_line(tmp_path):
    path = write(tmp_path / "bad.txt", b"ok\nfine\nnot \xff ok\n")
    with pytest.raises(CorpusError) as info:
        load_corpus([path])
    assert one_line(info.value) == (
        f"{path}: invalid UTF-8 at byte 12 (line 3), counting bytes from 0 and lines from 1; "
        "if the file is in another encoding, "
        "pass --encoding (e.g. --encoding latin-1)"
    )


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_invalid_utf8_offset_does_not_depend_on_chunks(tmp_path, chunk):
    # a truncated 3-byte sequence that a chunk boundary may split, after a BOM
    data = b"\xef\xbb\xbf" + "\u00e9\n\u4e2d".encode() + b"\xe4\xb8" + b"xyz"
    path = write(tmp_path / "bad.txt", data)
    with pytest.raises(CorpusError, match=r"invalid UTF-8 at byte 9 \(line 2\)"):
        load_corpus([path], chunk_bytes=chunk)


def test_truncated_sequence_at_end_of_file(tmp_path):
    path = write(tmp_path / "cut.txt", "ab\u4e2d".encode()[:-1])
    with pytest.raises(CorpusError, match="invalid UTF-8 at byte 2 "):
        load_corpus([path], chunk_bytes=2)


@pytest.mark.parametrize(
    ("data", "which"),
    [
        ("hello\nworld\n".encode("utf-16"), "UTF-16"),  # with a BOM
        ("hello\nworld\n".encode("utf-16-le"), "UTF-16"),  # NULs in the odd column
        ("hello\nworld\n".encode("utf-16-be"), "UTF-16"),  # NULs in the even column
        ("hello\nworld\n".encode("utf-32"), "UTF-32"),
        ("hello\nworld\n".encode("utf-32-le"), "UTF-32"),
    ],
)
def test_utf16_and_utf32_are_recognised(tmp_path, data, which):
    path = write(tmp_path / "wide.txt", data)
    with pytest.raises(CorpusError) as info:
        load_corpus([path])
    enc = which.lower()
    assert one_line(info.value) == f"{path} looks like {which} text; pass --encoding {enc}"


def test_nul_bytes_look_binary(tmp_path):
    path = write(tmp_path / "bin.dat", b"some text\nand then\x00 a nul")
    with pytest.raises(CorpusError) as info:
        load_corpus([path], chunk_bytes=4)
    assert one_line(info.value) == (
        f"{path} contains NUL bytes at byte 18: it looks binary, not text"
    )


def test_nul_in_another_encoding(tmp_path):
    path = write(tmp_path / "bin.dat", b"abc\x00")
    with pytest.raises(CorpusError, match="NUL characters at character 3"):
        load_corpus([path], CorpusOptions(encoding="latin-1"))


def test_unknown_encoding(tmp_path):
    path = write(tmp_path / "a.txt", b"abc")
    with pytest.raises(CorpusError) as info:
        load_corpus([path], CorpusOptions(encoding="foo"))
    assert one_line(info.value) == "unknown encoding 'foo'"
    with pytest.raises(CorpusError, match="not a text encoding"):
        load_corpus([path], CorpusOptions(encoding="base64"))


def test_bad_newline_option():
    with pytest.raises(ValueError):
        CorpusOptions(newline="crlf")


# the hash


def test_sha_changes_with_any_byte_and_with_options(tmp_path):
    path = write(tmp_path / "a.txt", b"abc\ndef\n")
    base = load_corpus([path]).sha256
    assert load_corpus([path]).sha256 == base  # deterministic
    assert load_corpus([path], CorpusOptions(lowercase=True)).sha256 != base
    assert load_corpus([path], CorpusOptions(newline="keep")).sha256 != base
    assert load_corpus([path], CorpusOptions(encoding="latin-1")).sha256 != base
    write(path, b"abc\ndeg\n")
    assert load_corpus([path]).sha256 != base
    # where the file boundaries fall matters too
    a, b = write(tmp_path / "x", b"abc\n"), write(tmp_path / "y", b"def\n")
    c, d = write(tmp_path / "z", b"abc\nd"), write(tmp_path / "w", b"ef\n")
    assert load_corpus([a, b]).sha256 != load_corpus([c, d]).sha256


# the token cache


def test_cache_is_reused_as_a_read_only_memmap(tmp_path):
    cache = tmp_path / "cache"
    first = load_corpus([DINOS], cache_dir=cache)
    assert isinstance(first.ids, np.memmap)
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"tokens-{first.sha256[:20]}.json", f"tokens-{first.sha256[:20]}.u8"]
    second = load_corpus([DINOS], cache_dir=cache)
    assert isinstance(second.ids, np.memmap)
    assert second.ids.dtype == first.ids.dtype
    np.testing.assert_array_equal(second.ids, load_corpus([DINOS]).ids)
    assert second.vocab == first.vocab
    assert (second.sha256, second.n_chars, second.n_bytes, second.n_lines) == (
        first.sha256,
        first.n_chars,
        first.n_bytes,
        first.n_lines,
    )
    with pytest.raises(ValueError):
        second.ids[0] = 0


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    import charrnn.corpus as corpus_mod

    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    load_corpus([path], cache_dir=tmp_path / "c")

    def boom(*args, **kwargs):
        raise AssertionError("decoded on a cache hit")

    monkeypatch.setattr(corpus_mod, "_scan", boom)
    assert text_of(load_corpus([path], cache_dir=tmp_path / "c")) == "hello\nworld\n"


def test_changed_file_invalidates_the_cache(tmp_path):
    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    cache = tmp_path / "c"
    old = load_corpus([path], cache_dir=cache)
    write(path, b"hello\nthere\n")
    new = load_corpus([path], cache_dir=cache)
    assert new.sha256 != old.sha256
    assert text_of(new) == "hello\nthere\n"
    # and changed options, with the same bytes
    low = load_corpus([path], CorpusOptions(lowercase=True), cache_dir=cache)
    assert low.sha256 != new.sha256


def test_torn_cache_is_rebuilt(tmp_path):
    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    cache = tmp_path / "c"
    c = load_corpus([path], cache_dir=cache)
    tokens = cache / f"tokens-{c.sha256[:20]}.u8"
    meta = cache / f"tokens-{c.sha256[:20]}.json"
    tokens.write_bytes(b"\x00\x01")  # truncated
    assert text_of(load_corpus([path], cache_dir=cache)) == "hello\nworld\n"
    meta.write_text("{not json")
    assert text_of(load_corpus([path], cache_dir=cache)) == "hello\nworld\n"
    assert json.loads(meta.read_text())["n_chars"] == 12
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp files


@pytest.mark.parametrize("use_cache", [False, True])
def test_file_changed_between_passes(tmp_path, monkeypatch, use_cache):
    import charrnn.corpus as corpus_mod

    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    real_scan = corpus_mod._scan

    def scan_then_edit(*args, **kwargs):
        scan = real_scan(*args, **kwargs)
        write(path, b"hello\nWORLD\n")  # as if another process wrote between the passes
        return scan

    monkeypatch.setattr(corpus_mod, "_scan", scan_then_edit)
    cache = tmp_path / "c" if use_cache else None
    with pytest.raises(CorpusError, match=f"^{path} changed while it was being read"):
        load_corpus([path], cache_dir=cache)
    if use_cache:
        assert [p.name for p in cache.iterdir()] == []  # no token file, torn or whole


def test_unwritable_cache_dir(tmp_path):
    blocker = write(tmp_path / "file", b"x")  # a file where the directory should be
    with pytest.raises(StoreIOError, match="cache directory"):
        load_corpus([DINOS], cache_dir=blocker / "sub")


def test_stdin_with_cache(tmp_path):
    cache = tmp_path / "c"
    a = load_corpus(["-"], stdin=io.BytesIO(b"ab\ncd\n"), cache_dir=cache)
    b = load_corpus(["-"], stdin=io.BytesIO(b"ab\ncd\n"), cache_dir=cache)
    assert a.sha256 == b.sha256
    assert text_of(b) == "ab\ncd\n"


# options travel in checkpoints


def test_options_json_round_trip():
    opts = CorpusOptions(encoding="latin-1", newline="keep", lowercase=True)
    assert CorpusOptions.from_json(json.loads(json.dumps(opts.to_json()))) == opts
    assert CorpusOptions.from_json({}) == CorpusOptions()


@pytest.mark.parametrize(
    "bad", [None, [], {"newline": "crlf"}, {"lowercase": "yes"}, {"encoding": 3}]
)
def test_options_from_json_rejects_garbage(bad):
    with pytest.raises(CheckpointError, match="corpus options in checkpoint are malformed"):
        CorpusOptions.from_json(bad)


def test_normalize_matches_loading(tmp_path):
    opts = CorpusOptions(lowercase=True)
    raw = "AB\r\nC\rD\u03a3"
    path = write(tmp_path / "n.txt", raw.encode())
    assert opts.normalize(raw) == text_of(load_corpus([path], opts))


# chunked loading equals loading in one chunk


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("chunks")


# ascii, newlines, 2-, 3- and 4-byte utf-8, capital sigma, a combining mark
PIECES = [*"abZ \n\r", "\r\n", *"\u00e9\u4e2d\U0001f600\u03a3\u0301"]


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.lists(st.sampled_from(PIECES), max_size=30), min_size=1, max_size=3),
    chunk=st.integers(1, 9),
    bom=st.booleans(),
    newline=st.sampled_from(["lf", "keep"]),
    lowercase=st.booleans(),
)
def test_chunked_loading_equals_one_chunk(scratch, parts, chunk, bom, newline, lowercase):
    texts = ["".join(p) for p in parts]
    paths = []
    for i, t in enumerate(texts):
        data = ("\ufeff" if bom and i == 0 else "") + t
        paths.append(write(scratch / f"f{i}.txt", data.encode()))
    opts = CorpusOptions(newline=newline, lowercase=lowercase)
    # the reference: each file decoded whole, then normalized
    expected = "".join(opts.normalize(t) for t in texts)
    if len(expected) < 2:
        with pytest.raises(CorpusError):
            load_corpus(paths, opts, chunk_bytes=chunk)
        return
    whole = load_corpus(paths, opts, chunk_bytes=1 << 20)
    chunked = load_corpus(paths, opts, chunk_bytes=chunk)
    assert text_of(whole) == expected
    assert chunked.vocab == whole.vocab == Vocab.from_text(expected)
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    assert chunked.sha256 == whole.sha256
    n_lines = expected.count("\n") + (not expected.endswith("\n"))
    assert chunked.n_lines == whole.n_lines == n_lines
    assert chunked.n_bytes == sum(p.stat().st_size for p in paths)


@settings(max_examples=60, deadline=None)
@given(
    good=st.lists(st.sampled_from(PIECES), max_size=20).map("".join),
    junk=st.binary(min_size=1, max_size=4),
    tail=st.lists(st.sampled_from(PIECES), max_size=5).map("".join),
    chunk=st.integers(1, 7),
)
def test_decode_error_offset_matches_python(good, junk, tail, chunk):
    data = b"x" + good.encode() + junk + tail.encode()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        expected = e.start
    else:
        return  # the junk happened to be valid
    if b"\x00" in data[: expected + 1]:
        return  # reported as binary instead
    line = data[:expected].count(b"\n") + 1
    with pytest.raises(
        CorpusError,
        match=rf"invalid UTF-8 at byte {expected} \(line {line}\), counting bytes from 0",
    ):
        load_corpus(["-"], stdin=io.BytesIO(data), chunk_bytes=chunk)


# bounded memory


# ru_maxrss survives exec, so a child would report pytest's own peak; VmHWM is
# per address space and writing "5" to clear_refs resets it to the current RSS
RSS_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from charrnn.corpus import load_corpus

    path, cache = Path(sys.argv[1]), Path(sys.argv[2])

    def status_kib(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    def growth(**kwargs):  # KiB the peak RSS rose during one load
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status_kib("VmRSS")
        c = load_corpus([path], chunk_bytes=4 << 20, **kwargs)
        assert c.n_chars == path.stat().st_size and c.vocab.size == 27 and c.n_lines == 1
        assert int(c.ids[-1]) == c.vocab.index["z"]
        return status_kib("VmHWM") - base, c

    miss, c = growth(cache_dir=cache)
    assert isinstance(c.ids, np.memmap)
    hit, c = growth(cache_dir=cache)
    assert isinstance(c.ids, np.memmap)
    del c
    # the control: ids held in memory must show up, or this measures nothing
    control, c = growth()
    print(miss, hit, control)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc peak-RSS reset"
)
def test_big_single_line_file_loads_in_bounded_memory(tmp_path):
    size = 64 << 20
    path = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxy ", np.uint8)
    with open(path, "wb") as f:
        for _ in range(size // (8 << 20)):
            f.write(letters[rng.integers(0, letters.size, 8 << 20)].tobytes())
    with open(path, "ab") as f:
        f.seek(size - 1)
        f.truncate()
        f.write(b"z")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    miss, hit, control = (int(v) * 1024 for v in out.stdout.split())
    # the ids are as big as the file, so holding them in RAM would show here
    assert miss < 0.5 * size, out.stdout
    assert hit < 0.5 * size, out.stdout
    assert control > 0.9 * size, out.stdout


# only charrnn's own files are ever removed from a token cache directory


def test_prune_token_cache_removes_only_what_charrnn_named(tmp_path):
    from charrnn.corpus import prune_token_cache

    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    cache = tmp_path / "c"
    c = load_corpus([path], cache_dir=cache)
    current = sorted(p.name for p in cache.iterdir())
    old = ["tokens-0123456789abcdef0123.u8", "tokens-0123456789abcdef0123.json"]
    dead = ".tokens-0123456789abcdef0123.u16.tmp-999999999-0a0b0c0d"  # no such pid
    live = f".tokens-0123456789abcdef0123.u16.tmp-{os.getppid()}-0a0b0c0d"  # a live writer
    legacy = ".tokens-0123456789abcdef0123.json.999999999.tmp"
    foreign = ["notes.txt", "tokens-notes.txt", "tokens-0123456789abcdef0123.u8.bak", "x.tmp"]
    for name in [*old, dead, live, legacy, *foreign]:
        write(cache / name, b"x")
    (cache / "tokens-fedcba9876543210fedc.u8").symlink_to(tmp_path / "a.txt")
    (cache / "sub").mkdir()
    removed = prune_token_cache(cache, c.sha256)
    assert sorted(p.name for p in removed) == sorted([*old, dead, legacy])
    left = sorted(p.name for p in cache.iterdir())
    assert left == sorted([*current, live, *foreign, "tokens-fedcba9876543210fedc.u8", "sub"])
    assert (tmp_path / "a.txt").read_bytes() == b"hello\nworld\n"
    assert prune_token_cache(tmp_path / "missing", c.sha256) == []


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
def test_non_regular_files_are_refused_without_reading(tmp_path, kind):
    import socket

    from charrnn.corpus import check_paths

    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        what = "a FIFO"
    elif kind == "device":
        path, what = Path("/dev/zero"), "a device"
    else:
        path = tmp_path / "sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        what = "a socket"
    msg = f"^{path} is {what}, not a regular file; .* or pipe it in as -"
    with pytest.raises(CorpusError, match=msg):
        check_paths([DINOS, path])
    with pytest.raises(CorpusError, match=msg):  # load_corpus refuses before opening anything
        load_corpus([DINOS, path])
    check_paths([DINOS, "-"])  # stdin and plain files pass


def test_a_path_swapped_for_a_fifo_after_the_check_does_not_hang(tmp_path, monkeypatch):
    import charrnn.corpus as corpus_mod

    path = write(tmp_path / "a.txt", b"hello\nworld\n")
    real = corpus_mod._scan

    def swap_then_scan(sources, *args, **kwargs):
        path.unlink()
        os.mkfifo(path)  # no writer: a blocking open would hang forever
        return real(sources, *args, **kwargs)

    monkeypatch.setattr(corpus_mod, "_scan", swap_then_scan)
    with pytest.raises(CorpusError, match="is a FIFO, not a regular file"):
        load_corpus([path])
