"""Reading MediaWiki XML dumps: their pages, streamed.

- A plain dump (.xml, .xml.gz, .xml.bz2) is one XML stream, read with the
  standard library's iterparse (finished pages are cleared, so memory stays
  bounded however large the dump).  A .bz2 is decompressed by ``lbzip2`` or
  ``pbzip2`` in a pipe where one is installed (both decompress on every
  core), else by the standard library in this process.
- A multistream dump (``X-multistream.xml.bz2``, Wikimedia's
  pages-articles-multistream) is a header stream (<siteinfo>), bz2 streams
  of about 100 pages each, and a footer; its index (``X-multistream-index
  .txt.bz2``, one ``offset:page_id:title`` line a page) gives each stream's
  byte offset.  The index is read line by line and grouped into streams
  (:func:`iter_streams`); each stream is read and decompressed on its own
  (:func:`read_stream`), so worker processes can do it in parallel and a
  sample reads only the streams that hold sampled pages.
"""
from __future__ import annotations

import bz2
import gzip
import html
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterator

from ..errors import QrnnLmError
from .textio import _BZ2_MAGIC, _GZIP_MAGIC
from .wiki_markup import _is_redirect

#: Parallel bzip2 decompressors tried, in order, for a plain .bz2 dump
#: (empty: always the standard library).
BZIP2_TOOLS = ("lbzip2", "pbzip2")
#: Namespaces whose local names are links to drop (files, categories, media).
DROP_NAMESPACE_KEYS = ("6", "14", "-2")
_NAMESPACE = re.compile(r'<namespace\b[^>]*?\bkey="(-?\d+)"[^>]*?(?:/>|>([^<]*)</namespace>)')


@dataclass
class Page:
    """One <page> of a dump."""
    id: int | None
    ns: str | None
    title: str
    redirect: bool
    text: str | None

    @property
    def is_article(self) -> bool:
        """Main namespace, not a redirect, with text."""
        return (self.ns in (None, "0") and not self.redirect and self.text is not None
                and not _is_redirect(self.text))


def page_of(elem) -> Page:
    """The fields of a parsed <page> element (namespaced tags or not)."""
    pid = ns = text = None
    title, redirect = "", False
    for child in elem.iter():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "ns":
            ns = (child.text or "").strip()
        elif tag == "id" and pid is None:   # the page's id comes before its revision's
            s = (child.text or "").strip()
            pid = int(s) if s.isdigit() else None
        elif tag == "title":
            title = child.text or ""
        elif tag == "redirect":
            redirect = True
        elif tag == "text":
            text = child.text or ""
    return Page(pid, ns, title, redirect, text)


def _bzip2_tool() -> str | None:
    for name in BZIP2_TOOLS:
        exe = shutil.which(name)
        if exe:
            return exe
    return None


class DumpReader:
    """The decompressed bytes of a plain dump file (``read(n)``), with how
    many were read (``xml_bytes``) and the fraction of the file consumed
    (``fraction()``), for progress lines."""

    def __init__(self, path: str):
        self.path, self.proc, self.xml_bytes = path, None, 0
        try:
            self.raw = open(path, "rb", buffering=0)  # unbuffered: a child may read it
            magic = self.raw.read(10)
            os.lseek(self.raw.fileno(), 0, os.SEEK_SET)
            self.size = max(1, os.fstat(self.raw.fileno()).st_size)
        except OSError as e:
            raise QrnnLmError(f"cannot read {path} ({e.strerror or e}).") from None
        tool = _bzip2_tool() if path.endswith(".bz2") or _BZ2_MAGIC.match(magic) else None
        if tool:
            # the child shares the file's offset with us: fraction() sees its reads
            self.proc = subprocess.Popen([tool, "-dc"], stdin=self.raw, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            self.f = self.proc.stdout
        elif path.endswith(".bz2") or _BZ2_MAGIC.match(magic):
            self.f = bz2.BZ2File(self.raw)
        elif path.endswith(".gz") or magic.startswith(_GZIP_MAGIC):
            self.f = gzip.GzipFile(fileobj=self.raw)
        else:
            self.f = self.raw

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.xml_bytes += len(b)
        return b

    def fraction(self) -> float:
        try:
            return min(1.0, os.lseek(self.raw.fileno(), 0, os.SEEK_CUR) / self.size)
        except OSError:
            return 0.0

    def tool_failure(self) -> str | None:
        """The decompressor's complaint once it has exited with an error, else None."""
        if self.proc is None:
            return None
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None
        if rc == 0:
            return None
        err = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        return err[-1] if err else f"{os.path.basename(self.proc.args[0])} exited with {rc}"

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()
        elif self.f is not self.raw:
            self.f.close()
        self.raw.close()


def iter_pages(reader: DumpReader, namespaces: dict | None = None) -> Iterator[Page]:
    """Every page of a plain dump, in order.  ``namespaces`` (a dict), if
    given, receives {key: local name} of the dump's namespaces (from
    <siteinfo>, before the first page)."""
    path = reader.path
    try:
        root = None
        for event, elem in ET.iterparse(reader, events=("start", "end")):
            if root is None:
                root = elem
            if event != "end":
                continue
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "namespace":
                if namespaces is not None and elem.text:
                    namespaces[elem.get("key")] = elem.text.strip()
            elif tag == "page":
                page = page_of(elem)
                root.clear()  # the point of iterparse: drop finished pages
                yield page
        failure = reader.tool_failure()
    except ET.ParseError as e:
        failure = reader.tool_failure()
        if failure is None:
            raise QrnnLmError(f"{path} is not a readable MediaWiki XML dump ({e}).") from None
    except (OSError, EOFError) as e:
        raise QrnnLmError(f"cannot read {path} ({e}); is the download complete?") from None
    if failure is not None:
        raise QrnnLmError(f"{path} is truncated or damaged and cannot be decompressed "
                          f"({failure}); download it again.")


# --------------------------------------------------------------------------
# multistream dumps
# --------------------------------------------------------------------------

def find_index(path: str) -> str | None:
    """The multistream index beside ``path`` (``X-multistream.xml.bz2`` ->
    ``X-multistream-index.txt.bz2`` or ``.txt``), or None."""
    if not path.endswith("-multistream.xml.bz2"):
        return None
    stem = path[:-len(".xml.bz2")]
    for candidate in (stem + "-index.txt.bz2", stem + "-index.txt"):
        if os.path.isfile(candidate):
            return candidate
    return None


@dataclass
class Stream:
    """One bz2 stream of a multistream dump: its byte offset and length
    (None: to the stream's own end) and its pages' (id, title) from the index."""
    offset: int
    length: int | None = None
    entries: list = field(default_factory=list)


def _bad_index(index: str, what: str) -> QrnnLmError:
    return QrnnLmError(f"{index} is not a multistream index ({what}); give the "
                       "pages-articles-multistream-index.txt.bz2 of the dump with --wiki-index.")


def iter_streams(index: str, dump_size: int) -> Iterator[Stream]:
    """The streams of a multistream dump in file order, read from its
    ``index`` line by line (one stream's entries in memory at a time)."""
    cur = None
    try:
        with (bz2.open if index.endswith(".bz2") else open)(index, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                off, c1, rest = line.rstrip("\n").partition(":")
                pid, c2, title = rest.partition(":")
                if not (c1 and c2 and off.isdigit() and pid.isdigit()):
                    if not line.strip():
                        continue
                    raise _bad_index(index, f"line {n} is not offset:page_id:title")
                off = int(off)
                if cur is None or off != cur.offset:
                    if cur is not None:
                        if off < cur.offset:
                            raise _bad_index(index, f"the offsets of line {n} go backwards")
                        cur.length = off - cur.offset
                        yield cur
                    if off >= dump_size:
                        raise _bad_index(index, f"line {n} points past the end of the dump")
                    cur = Stream(off)
                cur.entries.append((int(pid), title))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise QrnnLmError(f"cannot read the index {index} ({e}); is the download "
                          "complete?") from None
    if cur is None:
        raise _bad_index(index, "it is empty")
    yield cur


def read_stream(path: str, offset: int, length: int | None) -> bytes:
    """The decompressed bytes of the bz2 stream at ``offset`` of ``path``."""
    d = bz2.BZ2Decompressor()
    out = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            left = length
            while not d.eof and left != 0:
                buf = f.read(1 << 20 if left is None else min(1 << 20, left))
                if not buf:
                    break
                if left is not None:
                    left -= len(buf)
                out.append(d.decompress(buf))
    except (OSError, EOFError) as e:
        raise QrnnLmError(f"{path}: the bz2 stream at byte {offset} cannot be decompressed "
                          f"({e}); is the index the one of this dump, and the download "
                          "complete?") from None
    if not d.eof:
        raise QrnnLmError(f"{path}: the bz2 stream at byte {offset} is truncated; is the index "
                          "the one of this dump, and the download complete?")
    return b"".join(out)


def stream_pages(data: bytes, path: str, offset: int) -> list[Page]:
    """The pages of one decompressed stream (anything before the first
    <page> -- the header, when it shares the stream -- or after the last is
    ignored)."""
    start, end = data.find(b"<page>"), data.rfind(b"</page>")
    if start < 0 or end < 0:
        return []
    try:
        root = ET.fromstring(b"<pages>" + data[start:end + 7] + b"</pages>")
    except ET.ParseError as e:
        raise QrnnLmError(f"{path}: the stream at byte {offset} is not MediaWiki XML ({e}); "
                          "is the index the one of this dump?") from None
    return [page_of(e) for e in root if e.tag.rsplit("}", 1)[-1] == "page"]


def header_namespaces(path: str, first_offset: int) -> dict:
    """{key: local name} of the namespaces in a multistream dump's header."""
    data = read_stream(path, 0, first_offset or None)
    head = data[:data.find(b"<page>")] if b"<page>" in data else data
    text = head.decode("utf-8", "replace")
    if "<mediawiki" not in text:
        raise QrnnLmError(f"{path} does not start with a MediaWiki XML header; is it a "
                          "pages-articles-multistream dump?")
    return {m.group(1): html.unescape(m.group(2) or "").strip()
            for m in _NAMESPACE.finditer(text)}


def in_main_namespace(title: str, prefixes: set) -> bool:
    """Whether ``title`` names a page of the main namespace (its prefix before
    ":", if any, is not one of the dump's namespace names)."""
    prefix, colon, _ = title.partition(":")
    return not colon or prefix not in prefixes
