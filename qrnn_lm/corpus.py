"""Corpus readers: plain text, Wikipedia XML dumps, and the ``debian-ja`` corpus.

All readers stream: they yield one normalised paragraph (line) at a time and
never hold a file in memory.  Normalisation (:class:`TextNormalizer`):

- invalid UTF-8 is replaced by U+FFFD and counted (one warning per file with
  the count); a file that is mostly not UTF-8 (or holds NUL bytes) is an error;
- Unicode NFKC (switchable), runs of whitespace collapsed to one space, the
  line stripped; empty lines are skipped;
- lines longer than ``max_line_chars`` are split, preferably after a sentence
  end (``。．！？.!?``) or at a space near the limit.
"""
from __future__ import annotations

import bz2
import gzip
import os
import re
import unicodedata
import warnings
from typing import Iterable, Iterator

from .errors import QrnnLmError

_WS = re.compile(r"\s+")
_SENTENCE_END = "。．！？!?.）」』"


class TextNormalizer:
    """Per-line normalisation; the same object is used for every split."""

    def __init__(self, nfkc: bool = True, max_line_chars: int = 4000):
        if max_line_chars < 16:
            raise QrnnLmError("--max-line-chars must be at least 16.")
        self.nfkc = nfkc
        self.max_line_chars = max_line_chars

    def to_dict(self) -> dict:
        return {"nfkc": self.nfkc, "max_line_chars": self.max_line_chars}

    @classmethod
    def from_dict(cls, d: dict) -> "TextNormalizer":
        return cls(nfkc=d.get("nfkc", True), max_line_chars=d.get("max_line_chars", 4000))

    def normalize(self, text: str) -> str:
        """One line of text -> normalised line (may be empty)."""
        if self.nfkc:
            text = unicodedata.normalize("NFKC", text)
        return _WS.sub(" ", text).strip()

    def split_long(self, line: str) -> Iterator[str]:
        limit = self.max_line_chars
        while len(line) > limit:
            window = line[limit // 2:limit]
            cut = max(window.rfind(c) for c in _SENTENCE_END)
            if cut < 0:
                cut = window.rfind(" ")
            cut = limit if cut < 0 else limit // 2 + cut + 1
            head, line = line[:cut].strip(), line[cut:].strip()
            if head:
                yield head
        if line:
            yield line

    def lines(self, raw_lines: Iterable[str]) -> Iterator[str]:
        """Normalise, drop empty lines, split long ones."""
        for raw in raw_lines:
            line = self.normalize(raw)
            if line:
                yield from self.split_long(line)


def _open_binary(path: str):
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _decode_lines(path: str, stats: dict | None = None) -> Iterator[str]:
    """Yield decoded lines of ``path``; invalid UTF-8 replaced and counted.

    Raises QrnnLmError for binary files (NUL bytes, or more than 10% of the
    first 64 KiB not decodable).
    """
    bad = 0
    nbytes = 0
    replacement = "\ufffd"
    try:
        f = _open_binary(path)
        head = f.peek(8192)[:8192] if hasattr(f, "peek") else b""
    except OSError as e:
        raise QrnnLmError(f"cannot read {path}: {e.strerror or e}.") from e
    with f:
        if b"\0" in head:
            raise QrnnLmError(f"{path} looks like a binary file (it contains NUL bytes); "
                              "give a UTF-8 text file.")
        checked = False
        for raw in f:
            nbytes += len(raw)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                # U+FFFD may also occur legitimately (bytes EF BF BD).
                bad += line.count(replacement) - raw.count(b"\xef\xbf\xbd")
            if not checked and nbytes >= 65536:
                checked = True
                if bad > 0.1 * nbytes / 3:
                    raise QrnnLmError(f"{path} does not look like UTF-8 text ({bad} invalid "
                                      f"byte sequences in the first {nbytes} bytes); "
                                      "convert it to UTF-8 first.")
            yield line
    if not checked and nbytes and bad > max(8, 0.1 * nbytes / 3):
        raise QrnnLmError(f"{path} does not look like UTF-8 text ({bad} invalid byte "
                          f"sequences in {nbytes} bytes); convert it to UTF-8 first.")
    if bad:
        warnings.warn(f"{path}: replaced {bad} invalid UTF-8 byte sequence(s) with U+FFFD.",
                      stacklevel=2)
    if stats is not None:
        stats["invalid_utf8"] = stats.get("invalid_utf8", 0) + bad
        stats["bytes"] = stats.get("bytes", 0) + nbytes


def read_text(path: str, normalizer: TextNormalizer | None = None,
              stats: dict | None = None) -> Iterator[str]:
    """Stream the normalised, non-empty lines of a text file (.txt, .gz, .bz2).

    Raises QrnnLmError if the file is missing, binary, or has no text at all
    (the last only once the stream is exhausted).  ``stats`` (a dict) receives
    ``invalid_utf8``, ``bytes`` and ``lines``.
    """
    if not os.path.isfile(path):
        raise QrnnLmError(f"corpus file {path} does not exist.")
    normalizer = normalizer or TextNormalizer()
    n = 0
    for line in normalizer.lines(_decode_lines(path, stats)):
        n += 1
        yield line
    if stats is not None:
        stats["lines"] = stats.get("lines", 0) + n
    if n == 0:
        raise QrnnLmError(f"corpus file {path} contains no text; give a UTF-8 text "
                          "file with one paragraph per line.")
