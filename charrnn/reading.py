"""How a corpus's bytes become characters: CorpusOptions (encoding, newline policy,
lowercase), part of the corpus hash and of every checkpoint.

Kept apart from corpus.py's reader so that what only needs the options (the command
line's option group, reading a checkpoint's metadata, `charrnn sample` normalizing a
--prime) does not load the reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from charrnn.errors import CheckpointError

NEWLINES = ("lf", "keep")  # the newline policies


@dataclass(frozen=True)
class CorpusOptions:
    """How bytes become characters; part of the corpus hash and of every checkpoint."""

    encoding: str = field(  # input encoding; utf-8 strips a leading BOM
        default="utf-8", metadata={"help": "Corpus encoding (a leading UTF-8 BOM is dropped)."}
    )
    newline: str = field(  # "lf": CRLF and lone CR become LF; "keep": left as they are
        default="lf",
        metadata={"help": "lf: CRLF and lone CR become LF; keep: leave line endings as they are."},
    )
    lowercase: bool = field(  # the assignment's dinosaur model is lowercase (27 characters)
        default=False, metadata={"help": "Lowercase the corpus (27 characters for the dinosaurs)."}
    )

    def __post_init__(self) -> None:
        if self.newline not in NEWLINES:
            raise ValueError(f"newline must be one of {NEWLINES}, not {self.newline!r}")

    def to_json(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "newline": self.newline, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, d: Any) -> CorpusOptions:
        """The inverse of :meth:`to_json`; a malformed one raises CheckpointError."""
        if not isinstance(d, Mapping):
            raise CheckpointError("corpus options in checkpoint are malformed: not an object")
        default = cls()
        encoding = d.get("encoding", default.encoding)
        newline = d.get("newline", default.newline)
        lowercase = d.get("lowercase", default.lowercase)
        if not isinstance(encoding, str) or not encoding:
            raise CheckpointError("corpus options in checkpoint are malformed: bad 'encoding'")
        if newline not in NEWLINES:
            raise CheckpointError("corpus options in checkpoint are malformed: bad 'newline'")
        if not isinstance(lowercase, bool):
            raise CheckpointError("corpus options in checkpoint are malformed: bad 'lowercase'")
        return cls(encoding=encoding, newline=newline, lowercase=lowercase)

    def normalize(self, text: str) -> str:
        """Apply the newline and lowercase options to a whole text (a prime, a text to score)."""
        if self.newline == "lf" and "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return self._lower(text)

    def _lower(self, text: str) -> str:
        # capital sigma goes to plain sigma first: str.lower picks the final form
        # from the neighbouring characters, which a chunk boundary could cut off
        if self.lowercase:
            return text.replace("\u03a3", "\u03c3").lower()
        return text
