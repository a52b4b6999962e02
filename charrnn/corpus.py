"""Read a corpus (files or stdin) into token ids, in bounded memory.

The text is never held as one Python string. Two streaming passes read each
source in chunks: pass 1 hashes, validates and decodes, collecting the set of
characters and the counts; pass 2 decodes again and encodes chunk by chunk
into the id array. With a ``cache_dir`` the ids go to a token file that later
loads of the same bytes and options map read-only after a hash-only pass,
instead of decoding and encoding again.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from charrnn.atomic import atomic_write, dead_temp, remove_files, temp_pattern
from charrnn.errors import (
    CheckpointError,
    CorpusError,
    InputMissingError,
    StoreIOError,
    VocabError,
)
from charrnn.reading import CorpusOptions
from charrnn.tokenizer import MAX_CODEPOINT, Vocab, text_codepoints

# the fewest characters that give one (input, target) pair
MIN_CHARS = 2
# bumped whenever the meaning of the ids for the same bytes could change
_HASH_TAG = b"charrnn-corpus-v1\0"
_CACHE_FORMAT = 1
# decoded text is turned into code points this many characters at a time, so a
# 16 MiB chunk never becomes one 64 MiB utf-32 buffer
_SLICE_CHARS = 1 << 18
# ids scanned at a time when measuring line lengths of a possibly mapped array
_SCAN_IDS = 1 << 24
_UTF8_NAMES = ("utf-8", "utf-8-sig")
_BOMS_UTF32 = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
_BOMS_UTF16 = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# names mode heuristic: short lines, few long ones, few blank ones
_LINES_MIN = 10
_LINES_MEAN_MAX = 40
_LINES_LONG = 80
_LINES_LONG_FRACTION = 0.05
_LINES_EMPTY_FRACTION = 0.05


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token ids of a whole corpus, with what it takes to reproduce and describe them."""

    ids: np.ndarray  # (N,) token ids, vocab.dtype; read-only, may be an np.memmap
    vocab: Vocab  # the distinct characters of the text
    sha256: str  # hex digest of the raw input bytes of all sources, plus the options
    n_chars: int  # characters after decoding and normalization
    n_bytes: int  # raw input bytes, BOMs included
    n_lines: int  # lines; a final line without "\n" counts
    sources: tuple[str, ...]  # paths as given ("-" for stdin)
    options: CorpusOptions  # how the bytes were read

    @cached_property
    def is_lines(self) -> bool:
        """True for one-item-per-line corpora (names mode), False for prose.

        Short lines alone do not decide it: verse and plays have short lines
        too, but unlike name lists they have blank lines between speeches.
        """
        eos = self.vocab.eos_id
        if eos is None or self.n_lines < _LINES_MIN:
            return False
        n_newlines = self.n_lines - int(self.ids[-1] != eos)
        if (self.n_chars - n_newlines) / self.n_lines > _LINES_MEAN_MAX:
            return False  # the mean alone rules it out without a scan
        n_empty, n_long = _line_stats(self.ids, eos, _LINES_LONG)
        return (
            n_long <= _LINES_LONG_FRACTION * self.n_lines
            and n_empty <= _LINES_EMPTY_FRACTION * self.n_lines
        )

    def lines(self) -> set[str]:
        """The distinct non-empty lines, to reject samples copied from the corpus."""
        return {line for line in self.vocab.decode(self.ids).split("\n") if line}


def _line_stats(ids: np.ndarray, eos: int, long: int) -> tuple[int, int]:
    """(empty lines, lines longer than ``long``) of ``ids``, scanned in slices."""
    n_empty = n_long = 0
    carry = 0  # length of the line still open at the slice start
    for s in range(0, ids.shape[0], _SCAN_IDS):
        part = np.asarray(ids[s : s + _SCAN_IDS])
        nl = np.flatnonzero(part == eos)  # (K,) newline positions in this slice
        if nl.size == 0:
            carry += part.size
            continue
        lengths = np.diff(nl, prepend=-1) - 1  # (K,) lengths of the lines they close
        lengths[0] += carry
        n_empty += int(np.count_nonzero(lengths == 0))
        n_long += int(np.count_nonzero(lengths > long))
        carry = part.size - int(nl[-1]) - 1
    if carry > long:
        n_long += 1  # the final line without a newline
    return n_empty, n_long


@dataclass(frozen=True)
class _Source:
    name: str  # as given; "-" is stdin
    open: Callable[[], contextlib.AbstractContextManager[IO[bytes]]]
    model_encoding: str | None = None  # set when a model decides the encoding (score)

    @property
    def label(self) -> str:
        return "standard input" if self.name == "-" else self.name

    def advice(self, encoding: str) -> str:
        """What to do about text that looks like ``encoding``."""
        if self.model_encoding is None:
            return f"pass --encoding {encoding}"
        return (
            f"the model reads {self.model_encoding}: convert it first "
            f"(e.g. iconv -f {encoding} -t {self.model_encoding})"
        )


@dataclass
class _Scan:
    """What pass 1 learns."""

    seen: np.ndarray  # (0x110000,) bool, which code points occur
    digests: list[bytes]  # sha256 of each source's raw bytes
    n_chars: int = 0
    n_bytes: int = 0
    n_newlines: int = 0
    last: str = ""  # the final character, to count a last line without "\n"


def load_corpus(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    options: CorpusOptions = CorpusOptions(),  # noqa: B008 (frozen, so a shared default is safe)
    *,
    cache_dir: Path | None = None,
    stdin: BinaryIO | None = None,
    chunk_bytes: int = 16 << 20,
) -> Corpus:
    """Read ``paths`` (``"-"`` for stdin) in order into token ids.

    Raises InputMissingError for files that cannot be opened, CorpusError for
    content that is not usable text, StoreIOError when the cache cannot be written.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not a sequence of one-letter paths
    names = tuple(os.fspath(p) for p in paths)
    if not names:
        raise CorpusError("no corpus given: name at least one file, or - for stdin")
    if names.count("-") > 1:
        raise CorpusError("standard input (-) can be read only once")
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    codec = lookup_codec(options.encoding)
    cache = Path(cache_dir) if cache_dir is not None else None

    with contextlib.ExitStack() as stack:
        sources = [
            _stdin_source(stdin, cache, chunk_bytes, stack) if n == "-" else _file_source(n)
            for n in names
        ]
        if cache is not None:
            # a hash-only pass first: on a hit nothing is decoded at all
            digests, n_bytes = _hash_sources(sources, chunk_bytes)
            sha = _corpus_sha(codec, options, digests)
            hit = _read_cache(cache, sha)
            if hit is not None:
                ids, vocab, n_chars, n_lines = hit
                return Corpus(ids, vocab, sha, n_chars, n_bytes, n_lines, names, options)

        scan = _scan(sources, options, codec, chunk_bytes)
        sha = _corpus_sha(codec, options, scan.digests)
        if scan.n_chars < MIN_CHARS:
            what = "is empty" if scan.n_chars == 0 else "has only 1 character"
            raise CorpusError(
                f"{_describe(sources)} {what}: a corpus needs at least {MIN_CHARS} characters"
            )
        vocab = Vocab.from_codepoints(np.flatnonzero(scan.seen))
        n_lines = scan.n_newlines + int(scan.last != "\n")

        if cache is None:
            ids = np.empty(scan.n_chars, dtype=vocab.dtype)
            pos = 0
            for piece in _encode(sources, options, codec, chunk_bytes, vocab, scan):
                ids[pos : pos + piece.size] = piece
                pos += piece.size
            ids.flags.writeable = False
        else:
            ids = _write_cache(
                cache, sha, vocab, scan, n_lines, sources, options, codec, chunk_bytes
            )
        return Corpus(ids, vocab, sha, scan.n_chars, scan.n_bytes, n_lines, names, options)


def lookup_codec(encoding: str) -> codecs.CodecInfo:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CorpusError(f"unknown encoding {encoding!r}") from None
    # base64, rot13 and friends are codecs but do not turn bytes into text
    if not getattr(info, "_is_text_encoding", True):
        raise CorpusError(f"{encoding!r} is not a text encoding")
    return info


def _describe(sources: Sequence[_Source]) -> str:
    if len(sources) == 1:
        return sources[0].label
    return "the corpus (" + ", ".join(s.label for s in sources) + ")"


def read_text(
    name: str,
    options: CorpusOptions,
    *,
    stdin: BinaryIO | None = None,
    chunk_bytes: int = 16 << 20,
    model_encoding: bool = False,
) -> Iterator[str]:
    """The decoded, normalized text of one file (or ``"-"``), a chunk at a time, in one
    pass and bounded memory: what ``score`` reads, checked exactly as a corpus is.

    ``model_encoding``: the encoding is the model's, not the user's choice, so errors
    advise converting the text rather than passing --encoding.
    """
    codec = lookup_codec(options.encoding)
    if name == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        source = _Source("-", lambda: contextlib.nullcontext(stream))  # type: ignore[arg-type]
    else:
        source = _file_source(name)
    if model_encoding:
        source = dataclasses.replace(source, model_encoding=codec.name)
    yield from _texts(source, options, codec, chunk_bytes, _CountingHash())


def check_paths(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse, before anything else happens, what :func:`load_corpus` would refuse
    without reading: a missing file, a directory, a device, a FIFO or a socket
    (``/dev/zero`` would never end, a FIFO would block). ``"-"`` is stdin."""
    for p in paths:
        name = os.fspath(p)
        if name != "-":
            _check_regular(name, _stat(name))


def _stat(name: str) -> os.stat_result:
    try:
        return os.stat(name)
    except OSError as e:
        raise _unreadable(name, e) from None


def _unreadable(name: str, e: OSError) -> InputMissingError:
    """The one-line error for a corpus file that cannot be looked at or opened."""
    if isinstance(e, FileNotFoundError):
        return InputMissingError(f"file not found: {name}")
    if isinstance(e, IsADirectoryError):
        return InputMissingError(f"{name} is a directory, not a text file")
    if isinstance(e, PermissionError):
        return InputMissingError(f"cannot read {name}: permission denied")
    return InputMissingError(f"cannot read {name}: {e.strerror or e}")


def _check_regular(name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputMissingError(f"{name} is a directory, not a text file")
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise CorpusError(
            f"{name} is {kind}, not a regular file; save the text to a file, "
            "or pipe it in as - (standard input)"
        )


def _file_source(name: str) -> _Source:
    def opener() -> contextlib.AbstractContextManager[IO[bytes]]:
        try:
            # O_NONBLOCK: a path swapped for a FIFO since check_paths must not hang the open
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise _unreadable(name, e) from None
        try:
            _check_regular(name, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb")

    # fail on a missing file before spending a pass on the files before it
    _check_regular(name, _stat(name))
    return _Source(name, opener)


def _stdin_source(
    stdin: BinaryIO | None, cache: Path | None, chunk_bytes: int, stack: contextlib.ExitStack
) -> _Source:
    """Spool stdin so it can be read twice: in memory while small, else a temp file."""
    stream = stdin if stdin is not None else sys.stdin.buffer
    spool_dir = None
    if cache is not None:
        _mkdir(cache)
        spool_dir = str(cache)
    spool = stack.enter_context(  # closed (and deleted) when load_corpus returns
        tempfile.SpooledTemporaryFile(max_size=chunk_bytes, mode="w+b", dir=spool_dir)  # noqa: SIM115
    )
    while True:
        block = _read(stream, chunk_bytes, "standard input")
        if not block:
            break
        if not isinstance(block, bytes):
            raise TypeError("stdin must be a binary stream (sys.stdin.buffer)")
        try:
            spool.write(block)
        except OSError as e:
            raise StoreIOError(f"cannot spool standard input to a temporary file: {e}") from None

    def opener() -> contextlib.AbstractContextManager[IO[bytes]]:
        spool.seek(0)
        return contextlib.nullcontext(spool)  # type: ignore[arg-type]

    return _Source("-", opener)


def _read(f: IO[bytes] | BinaryIO, size: int, label: str) -> bytes:
    """Up to ``size`` bytes of ``f``; a read error is InputMissingError naming ``label``."""
    try:
        return f.read(size)
    except OSError as e:
        raise InputMissingError(f"cannot read {label}: {e.strerror or e}") from None


def _chunks(source: _Source, chunk_bytes: int) -> Iterator[bytes]:
    """The raw bytes of one source; the first chunk holds at least 4 bytes, for BOMs."""
    with source.open() as f:
        size = max(chunk_bytes, 4)
        while True:
            raw = _read(f, size, source.label)
            if not raw:
                return
            yield raw
            del raw  # one chunk alive at a time, not two while the next is read
            size = chunk_bytes


def _hash_sources(sources: Sequence[_Source], chunk_bytes: int) -> tuple[list[bytes], int]:
    digests, n_bytes = [], 0
    for src in sources:
        h = hashlib.sha256()
        for raw in _chunks(src, chunk_bytes):
            h.update(raw)
            n_bytes += len(raw)
            del raw
        digests.append(h.digest())
    return digests, n_bytes


def _corpus_sha(codec: codecs.CodecInfo, options: CorpusOptions, digests: list[bytes]) -> str:
    # per-file digests, not one stream: each file is decoded on its own, so
    # where the boundaries fall can change the text
    h = hashlib.sha256(_HASH_TAG)
    opts = {"encoding": codec.name, "newline": options.newline, "lowercase": options.lowercase}
    h.update(json.dumps(opts, sort_keys=True).encode())
    for d in digests:
        h.update(d)
    return h.hexdigest()


def _texts(
    source: _Source,
    options: CorpusOptions,
    codec: codecs.CodecInfo,
    chunk_bytes: int,
    digest: _CountingHash,
) -> Iterator[str]:
    """Decoded, validated, normalized text of one source, chunk by chunk.

    ``digest`` is fed every raw byte on the way. Each source is decoded on its
    own, so each may start with a BOM and errors give offsets within it.
    """
    utf8 = codec.name in _UTF8_NAMES
    # byte offsets and line numbers are only meaningful where "\n" is one byte
    try:
        ascii_compatible = "\n".encode(codec.name) == b"\n"
    except UnicodeError:
        ascii_compatible = False
    decoder = codecs.getincrementaldecoder("utf-8" if utf8 else codec.name)(errors="strict")
    offset = 0  # raw bytes of this source before the current chunk
    newlines_before = 0  # raw b"\n" before the current chunk, for error line numbers
    chars_before = 0  # decoded characters before the current chunk
    held_cr = False  # a "\r" at a chunk end may be the first half of "\r\n"
    first = True
    for raw, final in _with_final(_chunks(source, chunk_bytes)):
        digest.update(raw)
        skip = 0
        if first and utf8:
            _check_bom(source, raw)
            if raw.startswith(codecs.BOM_UTF8):
                skip = len(codecs.BOM_UTF8)
        # a NUL is reported only once the bytes before it decode: the first problem wins
        nul = raw.find(b"\0", skip) if utf8 else -1
        pending = decoder.getstate()[0]
        held = len(pending) if isinstance(pending, bytes) else 0
        try:
            data = raw[skip:nul] if nul >= 0 else raw[skip:] if skip else raw
            text = decoder.decode(data, final or nul >= 0)
        except UnicodeDecodeError as e:
            at = skip - held + e.start  # where the bad bytes start, relative to raw
            line = None
            if ascii_compatible:
                line = newlines_before + raw[: max(at, 0)].count(b"\n") + 1
            raise _decode_error(source, codec, offset + at, line, e.reason) from None
        except UnicodeError as e:  # e.g. utf-16 without a BOM: no byte offset to give
            hint = "pass the file's real --encoding"
            if codec.name in ("utf-16", "utf-32") and source.model_encoding is None:
                hint = (
                    f"if it is {codec.name} without a BOM, pass --encoding {codec.name}-le "
                    f"or {codec.name}-be; else {hint}"
                )
            elif source.model_encoding is not None:
                hint = f"the model reads {codec.name}: convert the text to it first"
            raise CorpusError(
                f"{source.label}: cannot decode as {codec.name} ({e}); {hint}"
            ) from None
        if nul >= 0:
            raise _nul_error(source, raw, offset, nul)
        if not utf8 and "\0" in text:
            at = chars_before + text.index("\0")
            raise CorpusError(
                f"{source.label} contains NUL characters at character {at}: "
                "it looks binary, not text"
            )
        offset += len(raw)
        if ascii_compatible:
            newlines_before += raw.count(b"\n")
        chars_before += len(text)
        first = False
        if options.newline == "lf":
            if held_cr:
                text = "\r" + text
            held_cr = not final and text.endswith("\r")
            if held_cr:
                text = text[:-1]
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
        text = options._lower(text)
        if text:
            yield text
        del raw, text  # free this chunk before the next is read


def _with_final(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, bool]]:
    """Each chunk with whether it is the last; an empty final chunk flushes the decoder."""
    for raw in chunks:
        yield raw, False
        del raw
    yield b"", True


def _check_bom(source: _Source, head: bytes) -> None:
    # utf-32 first: its little-endian BOM starts with the utf-16 one
    if head.startswith(_BOMS_UTF32):
        raise CorpusError(f"{source.label} looks like UTF-32 text; {source.advice('utf-32')}")
    if head.startswith(_BOMS_UTF16):
        raise CorpusError(f"{source.label} looks like UTF-16 text; {source.advice('utf-16')}")


def _nul_error(source: _Source, raw: bytes, offset: int, at: int) -> CorpusError:
    """UTF-16/32 text of mostly ASCII has NULs in a fixed column; anything else is binary."""
    start = max(0, at - 2048)
    window = np.frombuffer(raw[start : start + 4096], np.uint8)
    pos = np.flatnonzero(window == 0) + offset + start  # (K,) absolute NUL offsets
    if window.size >= 8:
        nul_fraction = pos.size / window.size
        nonzero = np.flatnonzero(window != 0) + offset + start
        if nul_fraction >= 0.5 and nonzero.size and _dominant(nonzero % 4) >= 0.9:
            return CorpusError(f"{source.label} looks like UTF-32 text; {source.advice('utf-32')}")
        if nul_fraction >= 0.25 and _dominant(pos % 2) >= 0.9:
            return CorpusError(f"{source.label} looks like UTF-16 text; {source.advice('utf-16')}")
    return CorpusError(
        f"{source.label} contains NUL bytes at byte {offset + at}: it looks binary, not text"
    )


def _dominant(residues: np.ndarray) -> float:
    """The share of the most common value in a small non-negative int array."""
    return float(np.bincount(residues).max() / residues.size)


def _decode_error(
    source: _Source, codec: codecs.CodecInfo, at: int, line: int | None, reason: str
) -> CorpusError:
    where = f"byte {at}" + (f" (line {line})" if line is not None else "")
    # say how each is counted: byte offsets from 0 (as hexdump and cmp do), lines from 1
    where += ", counting bytes from 0" + (" and lines from 1" if line is not None else "")
    if source.model_encoding is not None:
        return CorpusError(
            f"{source.label}: cannot decode as {codec.name} at {where} ({reason}); "
            f"the model reads {source.model_encoding}: convert the text to it first"
        )
    if codec.name in _UTF8_NAMES:
        return CorpusError(
            f"{source.label}: invalid UTF-8 at {where}; if the file is in another encoding, "
            "pass --encoding (e.g. --encoding latin-1)"
        )
    return CorpusError(
        f"{source.label}: cannot decode as {codec.name} at {where} ({reason}); "
        "pass the file's real --encoding"
    )


def _slices(text: str) -> Iterator[np.ndarray]:
    """Code points of ``text``, ``_SLICE_CHARS`` at a time."""
    if len(text) <= _SLICE_CHARS:
        yield text_codepoints(text)
        return
    for i in range(0, len(text), _SLICE_CHARS):
        yield text_codepoints(text[i : i + _SLICE_CHARS])


def _scan(
    sources: Sequence[_Source], options: CorpusOptions, codec: codecs.CodecInfo, chunk_bytes: int
) -> _Scan:
    """Pass 1: hash, validate, count, and collect the characters."""
    scan = _Scan(seen=np.zeros(MAX_CODEPOINT + 1, dtype=bool), digests=[])
    for src in sources:
        h = _CountingHash()
        for text in _texts(src, options, codec, chunk_bytes, h):
            for cps in _slices(text):
                scan.seen[cps] = True
            scan.n_chars += len(text)
            scan.n_newlines += text.count("\n")
            scan.last = text[-1]
            del text  # not alive while the next chunk is read
        scan.digests.append(h.digest())
        scan.n_bytes += h.n_bytes
    return scan


def _encode(
    sources: Sequence[_Source],
    options: CorpusOptions,
    codec: codecs.CodecInfo,
    chunk_bytes: int,
    vocab: Vocab,
    scan: _Scan,
) -> Iterator[np.ndarray]:
    """Pass 2: the ids, a slice at a time; checks the sources did not change since pass 1."""
    n_chars = 0
    for src, expected in zip(sources, scan.digests, strict=True):
        h = _CountingHash()
        try:
            for text in _texts(src, options, codec, chunk_bytes, h):
                for cps in _slices(text):
                    ids = vocab.encode_codepoints(cps)  # (n,) vocab.dtype
                    n_chars += ids.size
                    if n_chars > scan.n_chars:
                        raise _changed(src)
                    yield ids
                del text  # not alive while the next chunk is read
        except VocabError:
            raise _changed(src) from None
        if h.digest() != expected:
            raise _changed(src)
    if n_chars != scan.n_chars:
        raise _changed(sources[-1])


def _changed(source: _Source) -> CorpusError:
    return CorpusError(f"{source.label} changed while it was being read; run the command again")


class _CountingHash:
    """sha256 that also counts the bytes fed to it."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.n_bytes = 0

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.n_bytes += len(data)

    def digest(self) -> bytes:
        return self._h.digest()


# the token cache: tokens-<sha>.<u8|u16|u32> and its JSON sidecar tokens-<sha>.json

_CACHE_NAME = r"tokens-[0-9a-f]{20}\.(?:u8|u16|u32|json)"
_CACHE_RE = re.compile(_CACHE_NAME)
_CACHE_TMP_RE = temp_pattern(_CACHE_NAME)
_CACHE_TMP_OLD_RE = re.compile(rf"\.{_CACHE_NAME}\.(\d+)\.tmp")  # charrnn <= 0.1 temp names


def _cache_stem(sha: str) -> str:
    return f"tokens-{sha[:20]}"


def _cache_paths(cache: Path, sha: str, dtype: np.dtype) -> tuple[Path, Path]:
    stem = _cache_stem(sha)
    return cache / f"{stem}.u{dtype.itemsize * 8}", cache / f"{stem}.json"


def prune_token_cache(cache: Path, sha: str | None) -> list[Path]:
    """Remove token caches of other corpus versions (``sha`` None: of every version) and
    temp files of killed loads; return what was removed. Only files charrnn names this
    way are touched: anything else in the directory (notes, symlinks, subdirectories) is
    left alone. Call it under the run's lock, so that no other writer is at work here.
    """
    keep = _cache_stem(sha) + "." if sha is not None else None

    def ours(entry: os.DirEntry[str]) -> bool:
        name = entry.name
        other = keep is None or not name.startswith(keep)
        stale = (_CACHE_RE.fullmatch(name) is not None and other) or (
            dead_temp(name, _CACHE_TMP_RE) or dead_temp(name, _CACHE_TMP_OLD_RE)
        )
        return stale and entry.is_file(follow_symlinks=False)

    return remove_files(cache, ours, "old token cache")


def _read_cache(cache: Path, sha: str) -> tuple[np.ndarray, Vocab, int, int] | None:
    """(ids, vocab, n_chars, n_lines) from a complete cache entry, or None on any doubt."""
    _, meta_path = _cache_paths(cache, sha, np.dtype(np.uint8))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != _CACHE_FORMAT or meta.get("sha256") != sha:
            return None
        vocab = Vocab.from_json(meta["vocab"])
        n_chars, n_lines = int(meta["n_chars"]), int(meta["n_lines"])
        tokens_path, _ = _cache_paths(cache, sha, vocab.dtype)
        if n_chars < MIN_CHARS or tokens_path.stat().st_size != n_chars * vocab.dtype.itemsize:
            return None
        ids = np.memmap(tokens_path, dtype=vocab.dtype, mode="r", shape=(n_chars,))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, CheckpointError):
        return None  # missing, torn or foreign: rebuild it
    return ids, vocab, n_chars, n_lines


def _write_cache(
    cache: Path,
    sha: str,
    vocab: Vocab,
    scan: _Scan,
    n_lines: int,
    sources: Sequence[_Source],
    options: CorpusOptions,
    codec: codecs.CodecInfo,
    chunk_bytes: int,
) -> np.ndarray:
    """Encode into the token file, then map it read-only.

    Plain writes, not a writable memmap: dirty mapped pages would count as our memory.
    """
    _mkdir(cache)
    tokens_path, meta_path = _cache_paths(cache, sha, vocab.dtype)

    def write_tokens(f: IO[bytes]) -> None:
        for ids in _encode(sources, options, codec, chunk_bytes, vocab, scan):
            f.write(ids.data)  # a slice at a time, no copy

    meta = {
        "format": _CACHE_FORMAT,
        "sha256": sha,
        "dtype": vocab.dtype.name,
        "n_chars": scan.n_chars,
        "n_bytes": scan.n_bytes,
        "n_lines": n_lines,
        "sources": [s.name for s in sources],
        "options": options.to_json(),
        "vocab": vocab.to_json(),
    }
    # the tokens first: a sidecar only ever points at a complete token file
    atomic_write(tokens_path, write_tokens, "the token cache")
    atomic_write(
        meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()), "the token cache"
    )
    return np.memmap(tokens_path, dtype=vocab.dtype, mode="r", shape=(scan.n_chars,))


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreIOError(f"cannot create the cache directory {path}: {e.strerror or e}") from None
