"""The ``debian-ja`` corpus: Japanese documentation shipped by Debian.

The installed packages' HTML pages, man pages (roff) and text files, found
through dpkg's file lists, rendered to paragraphs and split by document.
"""
from __future__ import annotations

import gzip
import os
import re

from ..errors import QrnnLmError
from .textio import SplitWriter, TextNormalizer, heldout_fraction, split_of

DEBIAN_JA_PACKAGES = ("manpages-ja", "manpages-ja-dev", "debian-reference-ja",
                      "developers-reference-ja", "debian-policy-ja", "maint-guide-ja",
                      "aptitude-doc-ja", "debian-faq-ja", "debian-edu-doc-ja")
_JA_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")


class _HTMLText:
    """Paragraph text of an HTML page (script/style dropped, block tags end a
    paragraph, <pre> kept line by line)."""

    BLOCK = {"p", "div", "li", "dt", "dd", "td", "th", "tr", "h1", "h2", "h3", "h4",
             "h5", "h6", "br", "pre", "table", "ul", "ol", "dl", "title", "blockquote",
             "section", "article", "header", "footer", "hr", "caption", "figcaption"}

    @classmethod
    def paragraphs(cls, html_text: str) -> list[str]:
        from html.parser import HTMLParser
        out, cur, skip, pre = [], [], [0], [0]

        def flush():
            s = "".join(cur)
            cur.clear()
            out.extend(s.split("\n") if pre[0] else [s])

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                if tag in ("script", "style"):
                    skip[0] += 1
                elif tag in cls.BLOCK:
                    flush()
                    if tag == "pre":
                        pre[0] += 1

            def handle_endtag(self, tag):
                if tag in ("script", "style"):
                    skip[0] = max(0, skip[0] - 1)
                elif tag in cls.BLOCK:
                    flush()
                    if tag == "pre":
                        pre[0] = max(0, pre[0] - 1)

            def handle_data(self, data):
                if not skip[0]:
                    cur.append(data if pre[0] else _join_wrapped(data.split("\n")))

        p = P(convert_charrefs=True)
        p.feed(html_text)
        p.close()
        flush()
        return out


def _join_wrapped(lines: list[str]) -> str:
    """Join hard-wrapped lines: no space between Japanese characters."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if out and not (_JA_CHAR.match(out[-1]) or _JA_CHAR.match(line[0])):
            out += " "
        out += line
    return out


_ROFF_ESCAPE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\s[+-]?\d|\\\*(\(..|\[[^\]]*\]|.)|"
                          r"\\[&|^%:,/]|\\\(..|\\\[[^\]]*\]|\\[nkz]\(?..?")
_ROFF_CHARS = {"\\-": "-", "\\e": "\\", "\\ ": " ", "\\~": " ", "\\(em": "—",
               "\\(en": "–", "\\(bu": "・", "\\(co": "©", "\\(aq": "'", "\\(dq": '"'}


def roff_paragraphs(text: str) -> list[str]:
    """Man page (roff) -> paragraphs: requests dropped except the text of
    font/heading macros, escapes removed, wrapped lines joined."""
    paras, cur = [], []

    def flush():
        if cur:
            paras.append(_join_wrapped(cur))
            cur.clear()

    for line in text.split("\n"):
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            req, _, arg = line[1:].partition(" ")
            req = req.strip()
            if req in ("SH", "SS", "TH"):
                flush()
                if req != "TH":
                    paras.append(_roff_clean(arg.replace('"', "")))
            elif req in ("PP", "LP", "P", "TP", "IP", "HP", "sp", "br", "RS", "RE", "nf", "fi"):
                flush()
                if req == "IP" and arg:
                    cur.append(_roff_clean(arg.split('"')[1] if arg.startswith('"') else arg))
            elif req in ("B", "I", "SM", "SB", "BI", "BR", "IB", "IR", "RB", "RI") and arg:
                cur.append(_roff_clean(arg.replace('"', "")))
            continue
        if not line.strip():
            flush()
            continue
        cur.append(_roff_clean(line))
    flush()
    return paras


def _roff_clean(s: str) -> str:
    for k, v in _ROFF_CHARS.items():
        s = s.replace(k, v)
    return _ROFF_ESCAPE.sub("", s).replace("\\", "")


def _text_paragraphs(text: str) -> list[str]:
    paras, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line)
        elif cur:
            paras.append(_join_wrapped(cur))
            cur = []
    if cur:
        paras.append(_join_wrapped(cur))
    return paras


def _read_doc(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    # Older Japanese man pages are EUC-JP; try that before replacing bytes.
    for enc in ("utf-8", "euc-jp"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            pass
    return data.decode("utf-8", errors="replace")


def debian_ja_files(root: str = "/") -> tuple[dict, list]:
    """{package: [installed document paths]} from dpkg's file lists, and the
    packages that are not installed."""
    info = os.path.join(root, "var/lib/dpkg/info")
    found, missing = {}, []
    for pkg in DEBIAN_JA_PACKAGES:
        lst = None
        for name in (f"{pkg}.list", f"{pkg}:all.list"):
            if os.path.isfile(os.path.join(info, name)):
                lst = os.path.join(info, name)
        if lst is None:
            missing.append(pkg)
            continue
        files = []
        with open(lst, encoding="utf-8", errors="replace") as f:
            for line in f:
                p = line.strip()
                base = p[:-3] if p.endswith(".gz") else p
                is_man = "/man/ja" in p and re.search(r"\.\d\w*$", base)
                is_doc = base.endswith((".html", ".htm", ".txt")) or is_man
                full = os.path.join(root, p.lstrip("/"))
                if is_doc and os.path.isfile(full):
                    files.append(full)
        found[pkg] = sorted(files)
    return found, missing


def extract_debian_ja(out_dir: str, *, root: str = "/", valid_fraction: float = 0.05,
                      test_fraction: float = 0.05, normalizer: TextNormalizer | None = None,
                      min_chars: int = 8, min_japanese: float = 0.3, log=None) -> dict:
    """The ``debian-ja`` corpus: Japanese documentation of the installed
    Debian packages (HTML, man pages, text) as paragraphs in
    ``out_dir/{split}.txt``, documents split by a hash of their path.
    Lines shorter than ``min_chars`` or with less than ``min_japanese`` of
    Japanese characters, and exact duplicates, are dropped.
    Returns {split: path}."""
    found, missing = debian_ja_files(root)
    n_files = sum(len(v) for v in found.values())
    if not n_files:
        raise QrnnLmError("the debian-ja corpus needs Debian's Japanese documentation; "
                          "install it with: sudo apt-get install " + " ".join(DEBIAN_JA_PACKAGES))
    if missing and log:
        log("debian-ja: not installed (skipped): " + " ".join(missing)
            + "; sudo apt-get install " + " ".join(missing) + " adds them")
    normalizer = normalizer or TextNormalizer()
    w = SplitWriter(out_dir)
    seen = set()
    for pkg in sorted(found):
        for path in found[pkg]:
            base = path[:-3] if path.endswith(".gz") else path
            try:
                text = _read_doc(path)
            except (OSError, EOFError):
                continue
            if base.endswith((".html", ".htm")):
                paras = _HTMLText.paragraphs(text)
            elif base.endswith(".txt"):
                paras = _text_paragraphs(text)
            else:
                paras = roff_paragraphs(text)
            keep = []
            for line in normalizer.lines(paras):
                if len(line) < min_chars or len(_JA_CHAR.findall(line)) < min_japanese * len(line):
                    continue
                h = hash(line)
                if h in seen:
                    continue
                seen.add(h)
                keep.append(line)
            rel = os.path.relpath(path, root)
            w.write(split_of(rel, valid_fraction, test_fraction), keep)
    paths = w.close()
    if "train" not in paths or not w.lines["train"]:
        raise QrnnLmError("the installed Debian Japanese documentation yielded no text; "
                          "reinstall it with: sudo apt-get install --reinstall "
                          + " ".join(sorted(found)))
    if log:
        log(f"debian-ja: {n_files} files -> " + ", ".join(f"{s} {w.lines[s]} lines"
                                                         for s in paths))
    return paths


class DebianJa:
    """The ``debian-ja`` corpus as a source (``prepare --corpus debian-ja``):
    a ``heldout`` fraction of the documents (default 0.05) for valid and for
    test each; ``root`` is where Debian is installed."""

    def __init__(self, heldout: float | None = None, root: str = "/"):
        self.root = root
        self.heldout = heldout_fraction(heldout, 0.05)

    @property
    def inputs(self) -> dict:
        return {}

    def check(self) -> None:
        """Nothing to check before the work: the installed files are found by extract."""

    def extract(self, out_dir: str, *, log=None) -> dict:
        """The documentation's paragraphs in ``out_dir/{split}.txt``; returns {split: path}."""
        return extract_debian_ja(out_dir, root=self.root, valid_fraction=self.heldout,
                                 test_fraction=self.heldout, log=log)
