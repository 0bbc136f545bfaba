"""Corpus readers: plain text, Wikipedia XML dumps, and the ``debian-ja`` corpus.

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
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import os
import re
import unicodedata
import warnings
import zlib
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


def _open_binary(path: str):
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
    f = _open_binary(path)
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
    import hashlib
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    if h < test_fraction:
        return "test"
    if h < test_fraction + valid_fraction:
        return "valid"
    return "train"


class _SplitWriter:
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


# --------------------------------------------------------------------------
# Wikipedia XML dumps
# --------------------------------------------------------------------------
#
# Pages are streamed with the standard library's iterparse (finished pages are
# cleared, so memory stays bounded however large the dump); the wikitext of
# each sampled article is parsed by mwparserfromhell and rendered to prose:
#
# - links: their label, or their title (files, categories and interlanguage
#   links such as [[en:Tokyo]] are dropped);
# - templates: dropped (infoboxes, citations, navigation, maintenance notes,
#   parser functions), except WIKI_TEMPLATES below, whose text belongs in the
#   prose;
# - tables, <ref>, <math>, <gallery>, code blocks, lists, headings, comments
#   and bare URLs: dropped; bold/italic and inline HTML: their text;
# - punctuation left behind by dropped parts ("（、）", "、、", "（ 、英: x）")
#   is tidied.

#: Templates whose text is kept (names compared case-insensitively, "_" = " "),
#: with what they render to.  Any other template is dropped.
WIKI_TEMPLATES = {
    "仮リンク / ill / interlanguage link": "label= or the 1st parameter (the Japanese title)",
    "lang": "the 2nd parameter ({{lang|en|Tokyo}} -> Tokyo)",
    "lang-xx, lang-xx-short": "language name and text ({{lang-en|Tokyo}} -> 英語: Tokyo, "
                              "-short: 英: Tokyo; the text alone for codes not in WIKI_LANGUAGES)",
    "読み仮名 / 読み仮名 ruby不使用": "{{読み仮名|東京|とうきょう}} -> 東京（とうきょう）",
    "nihongo": "{{nihongo|Tokyo|東京|Tōkyō}} -> Tokyo（東京、Tōkyō）",
    "nihongo2, ruby / ruby-ja": "the 1st parameter (the base text; ruby readings are dropped, "
                                "as are <rt>/<rp> in <ruby> tags)",
    "要出典範囲 / 独自研究範囲 / 要検証範囲 / 疑問点範囲 / 要説明範囲": "the 1st parameter",
    "nowrap / small / smaller / big / larger / visible anchor / vanc / jis2004フォント / "
    "補助漢字フォント / cp932フォント / unicode / 拡張漢字 / snamei": "the 1st parameter",
    "color / transl": "the 2nd parameter",
    "convert": "{{convert|100|km|mi}} -> 100 km",
    "和暦": "{{和暦|1990}} -> 1990年（平成2年）",
    "! / = / ・": "| / = / ・",
}

#: Language names for lang-xx (full) and lang-xx-short.
WIKI_LANGUAGES = {
    "en": ("英語", "英"), "de": ("ドイツ語", "独"), "fr": ("フランス語", "仏"),
    "it": ("イタリア語", "伊"), "es": ("スペイン語", "西"), "pt": ("ポルトガル語", "葡"),
    "nl": ("オランダ語", "蘭"), "ru": ("ロシア語", "露"), "zh": ("中国語", "中"),
    "ko": ("朝鮮語", "朝"), "la": ("ラテン語", "羅"), "el": ("ギリシア語", "希"),
    "grc": ("古代ギリシア語", "古希"), "ar": ("アラビア語", "亜"), "he": ("ヘブライ語", "ヘ"),
    "sa": ("サンスクリット", "梵"), "pl": ("ポーランド語", "波"), "sv": ("スウェーデン語", "瑞"),
    "fi": ("フィンランド語", "芬"), "tr": ("トルコ語", "土"), "hu": ("ハンガリー語", "洪"),
    "vi": ("ベトナム語", "越"), "th": ("タイ語", "泰"), "hi": ("ヒンディー語", "ヒ"),
    "fa": ("ペルシア語", "ペ"), "uk": ("ウクライナ語", "ウ"), "cs": ("チェコ語", "チ"),
    "ja": ("日本語", "日"), "ain": ("アイヌ語", "アイヌ"), "mn": ("モンゴル語", "蒙"),
}

_ALIAS = {"ill": "仮リンク", "interlanguage link": "仮リンク", "読み仮名 ruby不使用": "読み仮名",
          "ruby-ja": "ruby", "smaller": "small", "big": "small", "larger": "small",
          "visible anchor": "small", "vanc": "small", "nowrap": "small",
          "jis2004フォント": "small", "補助漢字フォント": "small", "cp932フォント": "small",
          "unicode": "small", "拡張漢字": "small", "snamei": "small", "nihongo2": "small",
          "ruby": "small", "要出典範囲": "small", "独自研究範囲": "small", "要検証範囲": "small",
          "疑問点範囲": "small", "要説明範囲": "small", "transl": "color"}
_LANG_TEMPLATE = re.compile(r"lang-([a-z]{2,3}(?:-[a-z0-9]+)*?)(-short)?")
_ERAS = ((2019, "令和"), (1989, "平成"), (1926, "昭和"), (1912, "大正"), (1868, "明治"))

# links: namespaces whose links are not prose (files, media, categories), in
# English and Japanese; the dump's own names for them are added from <siteinfo>
_WIKI_DROP_NS = {"file", "image", "media", "category", "ファイル", "画像", "メディア", "カテゴリ"}
_INTERLANG = re.compile(r"(?:[a-z]{2,3}(?:-[a-z0-9]+)*|simple)")
_RE_PIPE_TRICK = re.compile(r"\s*[(（][^()（）]*[)）]\s*$|^[^:]*:")
_INTERWIKI_NOT_LANG = {"voy", "mw", "wmf", "wikt", "commons", "species", "meta"}
# tags whose content is not prose
_WIKI_DROP_TAGS = {"ref", "references", "math", "chem", "ce", "gallery", "timeline",
                   "syntaxhighlight", "source", "pre", "score", "graph", "mapframe", "maplink",
                   "templatestyles", "imagemap", "hiero", "inputbox", "categorytree",
                   "includeonly", "rt", "rp", "table", "ul", "ol", "dl"}
_LIST_MARK = "\x00"  # starts a rendered list line, which is then dropped
_RE_MAGIC = re.compile(r"__[A-Z]+__")
_RE_QUOTES = re.compile(r"'{2,}")
_SEP = r"[\s、，,;；・/:：]"
_RE_DEBRIS = (
    (re.compile(rf"[（(]{_SEP}*[）)]"), ""),                 # （）, （、）
    (re.compile(rf"([（(]){_SEP}+"), r"\1"),                  # （、英語: x → （英語: x
    (re.compile(r"[\s、，,;；・/]+([）)])"), r"\1"),           # x、） → x）
    (re.compile(r"、(?:\s*、)+"), "、"),                      # 、、
    (re.compile(r"[、，,]\s*([。．])"), r"\1"),               # 、。 → 。
    (re.compile(r"^[\s、，,。．;；]+"), ""),                   # a line starting with 、
    (re.compile(r"[ \t]{2,}"), " "),
)


def _tname(template) -> str:
    name = str(template.name)
    if "<!--" in name:
        name = re.sub(r"<!--.*?-->", "", name, flags=re.S)
    name = " ".join(name.replace("_", " ").split()).lower()
    for prefix in ("template:", "テンプレート:", "tl:"):
        if name.startswith(prefix):
            name = name[len(prefix):].strip()
    return name


class _WikiRenderer:
    """Wikitext -> prose (see the notes above WIKI_TEMPLATES)."""

    def __init__(self, drop_namespaces=()):
        self.drop_ns = _WIKI_DROP_NS | {n.lower() for n in drop_namespaces}

    def lines(self, text: str) -> list[str]:
        try:
            import mwparserfromhell
        except ImportError:
            raise QrnnLmError("reading Wikipedia dumps needs mwparserfromhell: "
                              "pip install mwparserfromhell") from None
        out: list[str] = []
        # style tags ('' and ''') are cheaper to strip afterwards than to parse
        self._render(mwparserfromhell.parse(text, skip_style_tags=True), out)
        lines = []
        for line in "".join(out).split("\n"):
            line = line.strip()
            if not line or line[0] in _LIST_MARK + "|!{}" or line.startswith("----"):
                continue
            line = _RE_QUOTES.sub("", _RE_MAGIC.sub("", line))
            for s in ("{{", "}}", "[[", "]]"):
                line = line.replace(s, "")
            for pattern, repl in _RE_DEBRIS:
                line = pattern.sub(repl, line)
            line = line.strip()
            if line:
                lines.append(line)
        return lines

    def text(self, code) -> str:
        out: list[str] = []
        self._render(code, out)
        return "".join(out).strip()

    def _render(self, code, out: list) -> None:
        from mwparserfromhell import nodes as N
        for node in code.nodes:
            if isinstance(node, N.Text):
                out.append(node.value)
            elif isinstance(node, N.Wikilink):
                self._link(node, out)
            elif isinstance(node, N.Template):
                self._template(node, out)
            elif isinstance(node, N.Tag):
                self._tag(node, out)
            elif isinstance(node, N.HTMLEntity):
                out.append(node.normalize())
            elif isinstance(node, N.ExternalLink):
                if node.brackets and node.title is not None:  # [url label]: the label
                    self._render(node.title, out)
            elif isinstance(node, N.Heading):
                out.append("\n\n")
            # comments, {{{arguments}}}: nothing

    def _link(self, node, out: list) -> None:
        title = str(node.title).strip()
        inline = title.startswith(":")  # [[:Category:x]], [[:en:x]] are shown
        title = title.lstrip(":").strip()
        prefix, colon, rest = title.partition(":")
        prefix = prefix.strip().lower()
        if colon and not inline:
            if prefix in self.drop_ns:
                return
            if _INTERLANG.fullmatch(prefix) and prefix not in _INTERWIKI_NOT_LANG:
                return  # interlanguage link: not shown in the page
        if node.text is not None:
            label = self.text(node.text)
            if label:
                out.append(label)
                return
            title = _RE_PIPE_TRICK.sub("", title)  # [[東京 (曖昧さ回避)|]] -> 東京
        if colon and (inline and prefix in self.drop_ns
                      or _INTERLANG.fullmatch(prefix) or prefix in _INTERWIKI_NOT_LANG):
            title = rest
        if title.startswith("#"):
            title = title[1:]
        out.append(title.strip())

    def _param(self, t, key) -> str | None:
        try:
            p = t.get(key)
        except ValueError:
            return None
        return self.text(p.value)

    def _template(self, t, out: list) -> None:
        name = _tname(t)
        kind = _ALIAS.get(name, name)
        p = self._param
        if kind == "仮リンク":
            s = p(t, "label") or p(t, "1")
        elif kind == "small":
            s = p(t, "1")
        elif kind in ("lang", "color"):
            s = p(t, "2")
        elif kind == "読み仮名":
            base, reading = p(t, "1"), p(t, "2")
            s = f"{base}（{reading}）" if base and reading else base
        elif kind == "nihongo":
            base = p(t, "1") or ""
            rest = "、".join(x for x in (p(t, "2"), p(t, "3")) if x)
            s = f"{base}（{rest}）" if base and rest else base or rest
        elif kind == "convert":
            s = " ".join(x for x in (p(t, "1"), p(t, "2")) if x)
        elif kind == "和暦":
            s = self._wareki(p(t, "1"))
        elif kind in ("!", "=", "・"):
            s = "|" if kind == "!" else kind
        else:
            m = _LANG_TEMPLATE.fullmatch(name)
            if not m:
                return
            s = p(t, "1")
            names = WIKI_LANGUAGES.get(m.group(1))
            if s and names:
                s = f"{names[1] if m.group(2) else names[0]}: {s}"
        if s:
            out.append(s)

    @staticmethod
    def _wareki(year: str | None) -> str | None:
        if not year or not year.strip().isdigit():
            return year
        y = int(year)
        for start, era in _ERAS:
            if y >= start:
                n = y - start + 1
                return f"{y}年（{era}{'元' if n == 1 else n}年）"
        return f"{y}年"

    def _tag(self, node, out: list) -> None:
        markup = node.wiki_markup
        tag = str(node.tag).strip().lower()
        if markup is not None:
            if markup in ("*", "#", ":", ";"):
                out.append(_LIST_MARK)
            elif markup.startswith("----"):
                out.append("\n")
            # "{|" (a table) and anything else: dropped
            return
        if tag in ("br", "hr"):
            out.append("\n")
        elif tag in _WIKI_DROP_TAGS or node.self_closing or node.contents is None:
            return
        elif tag == "nowiki":
            out.append(str(node.contents))
        else:  # b, i, span, code, div, blockquote, poem, ruby, ...: the text
            self._render(node.contents, out)


def strip_wiki_markup(text: str, drop_namespaces=()) -> list[str]:
    """Wikitext -> prose paragraphs (one per line); see WIKI_TEMPLATES.
    ``drop_namespaces``: local names of the file and category namespaces
    beyond the English and Japanese ones."""
    return _WikiRenderer(drop_namespaces).lines(text)


def _is_redirect(text: str) -> bool:
    head = text.lstrip()[:16].lower()
    return head.startswith(("#redirect", "#転送", "#リダイレクト"))


def iter_wiki_articles(path: str, sample: int = 1,
                       namespaces: set | None = None) -> Iterator[tuple[str, str]]:
    """Stream ``(title, wikitext)`` of every ``sample``-th article (main
    namespace, no redirects) of a MediaWiki XML dump (.xml, .xml.bz2,
    .xml.gz).  ``namespaces``, if given, receives the dump's names of the
    file, media and category namespaces (from <siteinfo>, before the first
    page)."""
    import xml.etree.ElementTree as ET
    if sample < 1:
        raise QrnnLmError("--sample must be at least 1.")
    if not os.path.isfile(path):
        raise QrnnLmError(f"Wikipedia dump {path} does not exist.")
    f = _open_binary(path)
    index = 0
    try:
        root = None
        for event, elem in ET.iterparse(f, events=("start", "end")):
            if root is None:
                root = elem
            if event != "end":
                continue
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "namespace":
                if namespaces is not None and elem.get("key") in ("6", "14", "-2") and elem.text:
                    namespaces.add(elem.text.strip())
                continue
            if tag != "page":
                continue
            ns = title = text = None
            redirect = False
            for child in elem.iter():
                ctag = child.tag.rsplit("}", 1)[-1]
                if ctag == "ns":
                    ns = (child.text or "").strip()
                elif ctag == "title":
                    title = child.text or ""
                elif ctag == "redirect":
                    redirect = True
                elif ctag == "text":
                    text = child.text or ""
            root.clear()  # the point of iterparse: drop finished pages
            if ns not in (None, "0") or redirect or text is None or _is_redirect(text):
                continue
            if index % sample == 0:
                yield title, text
            index += 1
    except ET.ParseError as e:
        raise QrnnLmError(f"{path} is not a readable MediaWiki XML dump ({e}).") from None
    except (OSError, EOFError) as e:
        raise QrnnLmError(f"cannot read {path} ({e}); is the download complete?") from None
    finally:
        f.close()


def extract_wiki_dump(path: str, out_dir: str, sample: int = 1, *,
                      valid_fraction: float = 0.01, test_fraction: float = 0.01,
                      normalizer: TextNormalizer | None = None, log=None,
                      stats: dict | None = None) -> dict:
    """Write the prose of every ``sample``-th article to ``out_dir/{split}.txt``
    (articles split by a hash of their title); returns {split: path}.
    ``stats`` (a dict) receives ``articles``, ``lines`` and ``chars`` written."""
    normalizer = normalizer or TextNormalizer()
    w = _SplitWriter(out_dir)
    namespaces: set = set()
    renderer = None
    n = chars = failed = 0
    for title, text in iter_wiki_articles(path, sample, namespaces):
        if renderer is None or namespaces - renderer.drop_ns:
            renderer = _WikiRenderer(namespaces)
        try:
            lines = list(normalizer.lines(renderer.lines(text)))
        except (QrnnLmError, KeyboardInterrupt):
            raise
        except Exception:  # a page mwparserfromhell cannot parse: skip it, count it
            failed += 1
            continue
        if lines:
            w.write(split_of(title, valid_fraction, test_fraction), lines)
            n += 1
            chars += sum(len(x) + 1 for x in lines)
    paths = w.close()
    if stats is not None:
        stats.update(articles=n, lines=sum(w.lines.values()), chars=chars)
        if failed:
            stats["unparsable"] = failed
    if failed:
        msg = f"{path}: skipped {failed} article(s) whose wikitext could not be parsed."
        if log:
            log(f"warning: {msg}")
        else:
            warnings.warn(msg, stacklevel=2)
    if n == 0 or "train" not in paths:
        raise QrnnLmError(f"{path} yielded no article text; check that it is a MediaWiki "
                          "pages-articles dump.")
    if log:
        log(f"wikipedia: {n} articles -> " + ", ".join(f"{s} {w.lines[s]} lines" for s in paths))
    return paths


# --------------------------------------------------------------------------
# debian-ja: Japanese documentation shipped by Debian
# --------------------------------------------------------------------------

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
    w = _SplitWriter(out_dir)
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

