"""Reading corpus text: decoding, normalising, deterministic splits.

All readers stream: they yield one normalised paragraph (line) at a time and
never hold a file in memory.  Normalisation (:class:`TextNormalizer`):

- gzip and bzip2 are decompressed (a truncated or damaged archive is an
  error); UTF-8 (with or without a byte-order mark) and UTF-16/UTF-32 (with
  a mark, or recognised from their NUL bytes) are decoded;
- invalid UTF-8 is replaced by U+FFFD and counted (one warning per file with
  the count); a file that is mostly not UTF-8 (or holds other NUL bytes) is an
  error;
- Unicode NFKC (switchable), runs of whitespace collapsed to one space, the
  line stripped; empty lines are skipped;
- lines longer than ``max_line_chars`` are split, preferably after a sentence
  end (``。．！？.!?``) or at a space near the limit.

Extracted corpora (Wikipedia, debian-ja) are split into train/valid/test by
a hash of each document's name (:func:`split_of`) and written with
:class:`SplitWriter`.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import os
import re
import unicodedata
import warnings
import zlib
from typing import Iterable, Iterator

from ..errors import QrnnLmError

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


_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
# Byte-order marks, longest first (the UTF-32-LE mark begins with the UTF-16-LE one).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


def check_input_file(path: str, what: str = "corpus file") -> None:
    """QrnnLmError unless ``path`` is an existing regular file (a directory
    and a missing path get different sentences)."""
    if os.path.isdir(path):
        raise QrnnLmError(f"{what} {path} is a directory; give a text file (one paragraph a "
                          "line) inside it instead.")
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise QrnnLmError(f"{what} {path} is not a regular file; give a text file.")
        raise QrnnLmError(f"{what} {path} does not exist.")


def open_binary(path: str):
    """Open ``path`` for reading bytes, decompressing gzip and bzip2 (by
    extension or by their magic bytes)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(10)
    except OSError as e:
        raise QrnnLmError(f"cannot read {path} ({e.strerror or e}).") from None
    if path.endswith(".bz2") or _BZ2_MAGIC.match(magic):
        return bz2.open(path, "rb")
    if path.endswith(".gz") or magic.startswith(_GZIP_MAGIC):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _damaged(path: str, e: BaseException, f=None) -> QrnnLmError:
    """The sentence for a file that cannot be read to its end."""
    detail = str(e) or type(e).__name__
    if f is not None and not isinstance(f, (gzip.GzipFile, bz2.BZ2File)):
        return QrnnLmError(f"cannot read {path} ({detail}).")
    return QrnnLmError(f"{path} is truncated or damaged and cannot be decompressed ({detail}); "
                       "download or compress it again.")


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16/32 without a byte-order mark, told apart by where the NUL bytes
    sit (UTF-32: the top byte of every unit; UTF-16: the high byte of ASCII),
    provided the strict decoding is text (no NUL, almost no control or
    unassigned characters).  None otherwise."""
    n4 = len(head) // 4 * 4
    zero = [0, 0, 0, 0]
    for i in range(n4):
        if head[i] == 0:
            zero[i % 4] += 1
    units = n4 // 4
    candidates = []
    if units and zero[3] == units:
        candidates.append("utf-32-le")
    elif units and zero[0] == units:
        candidates.append("utf-32-be")
    candidates.append("utf-16-le" if zero[1] + zero[3] > zero[0] + zero[2] else "utf-16-be")
    for enc in candidates:
        try:
            text = codecs.getincrementaldecoder(enc)("strict").decode(head[:n4], final=False)
        except UnicodeDecodeError:
            continue
        if not text or "\0" in text:
            continue
        odd = sum(1 for c in text if unicodedata.category(c)[0] == "C" and c not in "\n\r\t")
        if odd <= 0.01 * len(text):
            return enc
    return None


def _sniff_encoding(head: bytes) -> tuple[str, int]:
    """(encoding, length of its byte-order mark) of a text file's first bytes."""
    for bom, enc in _BOMS:
        if head.startswith(bom):
            return enc, len(bom)
    if b"\0" in head:
        enc = _wide_encoding(head)
        if enc is not None:
            return enc, 0
        return "binary", 0
    return "utf-8", 0


def _decode_lines(path: str, stats: dict | None = None) -> Iterator[str]:
    """Yield decoded lines of ``path``; invalid UTF-8 replaced and counted.

    UTF-8 (with or without a byte-order mark) and UTF-16/UTF-32 (with a
    byte-order mark, or recognised from their NUL bytes) are decoded; gzip and
    bzip2 files are decompressed.  Raises QrnnLmError for binary files (NUL
    bytes that are not UTF-16/32, or more than 10% of the first 64 KiB not
    decodable) and for truncated or damaged compressed files.
    """
    bad = 0
    nbytes = 0
    checked = False
    replacement = "\ufffd"
    f = open_binary(path)
    try:
        head = f.peek(8192)[:8192] if hasattr(f, "peek") else b""
    except (OSError, EOFError, zlib.error) as e:
        f.close()
        raise _damaged(path, e, f) from None
    encoding, bom = _sniff_encoding(head)
    if encoding == "binary":
        f.close()
        raise QrnnLmError(f"{path} looks like a binary file (it contains NUL bytes); "
                          "give a UTF-8 text file.")
    try:
        with f:
            f.read(bom)
            if encoding == "utf-8":
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
                            raise QrnnLmError(f"{path} does not look like UTF-8 text ({bad} "
                                              f"invalid byte sequences in the first {nbytes} "
                                              "bytes); convert it to UTF-8 first.")
                    yield line
            else:
                text = io.TextIOWrapper(f, encoding=encoding, errors="replace", newline=None)
                for line in text:
                    nbytes += len(line.encode("utf-8", "surrogatepass"))
                    bad += line.count(replacement)
                    yield line
    except (OSError, EOFError, zlib.error) as e:
        raise _damaged(path, e, f) from None
    if not checked and nbytes and bad > max(8, 0.1 * nbytes / 3) and encoding == "utf-8":
        raise QrnnLmError(f"{path} does not look like UTF-8 text ({bad} invalid byte "
                          f"sequences in {nbytes} bytes); convert it to UTF-8 first.")
    if bad:
        what = "UTF-8" if encoding == "utf-8" else encoding.upper()
        warnings.warn(f"{path}: replaced {bad} invalid {what} byte sequence(s) with U+FFFD.",
                      stacklevel=2)
    if stats is not None:
        stats["invalid_utf8"] = stats.get("invalid_utf8", 0) + bad
        stats["bytes"] = stats.get("bytes", 0) + nbytes
        if encoding != "utf-8" or bom:
            stats["encoding"] = encoding + ("-sig" if encoding == "utf-8" else "")


def read_lines(path: str, stats: dict | None = None, what: str = "file") -> Iterator[str]:
    """The decoded lines of a text file as :func:`read_text` reads it (gzip and
    bzip2 decompressed, UTF-8/16/32 decoded, binary refused), without
    normalisation and without the line ends."""
    check_input_file(path, what)
    for line in _decode_lines(path, stats):
        yield line.rstrip("\r\n")


def read_text(path: str, normalizer: TextNormalizer | None = None,
              stats: dict | None = None) -> Iterator[str]:
    """Stream the normalised, non-empty lines of a text file (.txt, .gz, .bz2).

    Raises QrnnLmError if the file is missing, binary, damaged, or has no text
    at all (the last only once the stream is exhausted).  ``stats`` (a dict)
    receives ``invalid_utf8``, ``bytes`` and ``lines``.
    """
    check_input_file(path)
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


# --------------------------------------------------------------------------
# Deterministic splits
# --------------------------------------------------------------------------

def split_of(key: str, valid_fraction: float, test_fraction: float) -> str:
    """``train``/``valid``/``test`` from a hash of ``key`` (stable across runs
    and machines, unlike Python's ``hash``)."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    if h < test_fraction:
        return "test"
    if h < test_fraction + valid_fraction:
        return "valid"
    return "train"


def heldout_fraction(heldout: float | None, default: float) -> float:
    """``--heldout`` (the fraction of documents for valid and for test each),
    checked; ``default`` when not given."""
    if heldout is None:
        return default
    if not 0 <= heldout < 0.5:
        raise QrnnLmError("--heldout must be in [0, 0.5).")
    return heldout


class SplitWriter:
    """Writes lines to ``{out_dir}/{split}.txt``."""

    def __init__(self, out_dir: str):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.files = {}
        self.lines = dict.fromkeys(("train", "valid", "test"), 0)

    def write(self, split: str, lines: Iterable[str]) -> None:
        f = self.files.get(split)
        if f is None:
            f = self.files[split] = open(os.path.join(self.out_dir, f"{split}.txt"), "w",
                                         encoding="utf-8")
        for line in lines:
            f.write(line + "\n")
            self.lines[split] += 1

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        return {s: os.path.join(self.out_dir, f"{s}.txt") for s in self.files}
