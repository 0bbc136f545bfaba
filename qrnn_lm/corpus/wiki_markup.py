"""Wikitext rendered to prose (the articles of Wikipedia dumps, :mod:`.wiki`).

The wikitext of each article is parsed by mwparserfromhell and rendered to
prose:

- links: their label, or their title (files, categories and interlanguage
  links such as [[en:Tokyo]] are dropped);
- templates: dropped (infoboxes, citations, navigation, maintenance notes,
  parser functions), except WIKI_TEMPLATES below, whose text belongs in the
  prose;
- tables, <ref>, <math>, <gallery>, code blocks, lists, headings, comments
  and bare URLs: dropped; bold/italic and inline HTML: their text;
- punctuation left behind by dropped parts ("（、）", "、、", "（ 、英: x）")
  is tidied.
"""
from __future__ import annotations

import re

from ..errors import QrnnLmError

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
          "ruby-ja": "small", "smaller": "small", "big": "small", "larger": "small",
          "visible anchor": "small", "vanc": "small", "nowrap": "small",
          "jis2004フォント": "small", "補助漢字フォント": "small", "cp932フォント": "small",
          "unicode": "small", "拡張漢字": "small", "snamei": "small", "nihongo2": "small",
          "ruby": "small", "要出典範囲": "small", "独自研究範囲": "small", "要検証範囲": "small",
          "疑問点範囲": "small", "要説明範囲": "small", "transl": "color"}
_LANG_TEMPLATE = re.compile(r"lang-([a-z]{2,3}(?:-[a-z0-9]+)*?)(-short)?")
_KEPT_KINDS = frozenset({"仮リンク", "small", "lang", "color", "読み仮名", "nihongo", "convert", "和暦",
                         "!", "=", "・"})
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


_MWPARSER = None


def _mwparser():
    """The mwparserfromhell module, imported once (not once per node)."""
    global _MWPARSER
    if _MWPARSER is None:
        try:
            import mwparserfromhell
            import mwparserfromhell.nodes  # noqa: F401
        except ImportError:
            raise QrnnLmError("reading Wikipedia dumps needs mwparserfromhell: "
                              "pip install mwparserfromhell") from None
        _MWPARSER = mwparserfromhell
    return _MWPARSER


def _template_kind(name: str) -> str | None:
    """What a template of (normalised) ``name`` renders as, None: dropped."""
    kind = _ALIAS.get(name, name)
    return kind if kind in _KEPT_KINDS or _LANG_TEMPLATE.fullmatch(name) else None


def _tname(template) -> str:
    return _normal_name(str(template.name))


def _normal_name(name: str) -> str:
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
        out: list[str] = []
        self._render(_parse(text, self.link_text), out)
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
        N = _mwparser().nodes
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
        out.append(self.link_text(str(node.title), None if node.text is None else self.text(node.text)))

    def link_text(self, title: str, label: str | None) -> str:
        """What a wikilink shows: ``label`` (rendered, stripped; None without
        a "|"), or the title; "" for files, categories, interlanguage links."""
        title = title.strip()
        inline = title.startswith(":")  # [[:Category:x]], [[:en:x]] are shown
        title = title.lstrip(":").strip()
        prefix, colon, rest = title.partition(":")
        prefix = prefix.strip().lower()
        if colon and not inline:
            if prefix in self.drop_ns:
                return ""
            if _INTERLANG.fullmatch(prefix) and prefix not in _INTERWIKI_NOT_LANG:
                return ""  # interlanguage link: not shown in the page
        if label is not None:
            if label:
                return label
            title = _RE_PIPE_TRICK.sub("", title)  # [[東京 (曖昧さ回避)|]] -> 東京
        if colon and (inline and prefix in self.drop_ns
                      or _INTERLANG.fullmatch(prefix) or prefix in _INTERWIKI_NOT_LANG):
            title = rest
        if title.startswith("#"):
            title = title[1:]
        return title.strip()

    def _param(self, t, key) -> str | None:
        try:
            p = t.get(key)
        except ValueError:
            return None
        return self.text(p.value)

    def _template(self, t, out: list) -> None:
        name = _tname(t)
        kind = _template_kind(name)
        if kind is None:
            return
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


class _Parser:
    """mwparserfromhell's two steps (its tokenizer, then its tree builder),
    with the token spans of what the renderer drops anyway -- templates other
    than the kept ones, tables, <ref> and the other tags of _WIKI_DROP_TAGS,
    comments -- cut out between them: building their nodes is most of the
    parsing time (citations and infoboxes), and the rendered text is the same."""

    def __init__(self):
        from mwparserfromhell.parser import builder, tokens
        try:
            from mwparserfromhell.parser._tokenizer import CTokenizer as Tokenizer
        except ImportError:
            from mwparserfromhell.parser.tokenizer import Tokenizer
        self.T, self.tokenizer, self.builder = tokens, Tokenizer(), builder.Builder()

    def parse(self, text: str, link=None):
        """The tree of ``text``; ``link(title, label)``: the text a wikilink of
        plain title and label shows (such links then become that text)."""
        # style tags ('' and ''') are cheaper to strip afterwards than to parse
        toks = self.tokenizer.tokenize(text, 0, True)
        try:
            return self.builder.build(self._pruned(toks, link))
        except Exception:   # never seen; the whole tree then, as mwparserfromhell.parse builds it
            return _mwparser().parse(text, skip_style_tags=True)

    def _pruned(self, toks: list, link) -> list:
        T, out, i, n = self.T, [], 0, len(toks)
        while i < n:
            tok = toks[i]
            kind = type(tok)
            end = None
            if kind is T.WikilinkOpen and link is not None:
                end = self._plain_link(toks, i, link, out)
            elif kind is T.TemplateOpen:
                j = i + 1
                while j < n and type(toks[j]) is T.Text:
                    j += 1
                if j < n and type(toks[j]) in (T.TemplateParamSeparator, T.TemplateClose) and _template_kind(
                        _normal_name("".join(t.text for t in toks[i + 1:j]))) is None:
                    end = self._end(toks, i, T.TemplateOpen, (T.TemplateClose,))
            elif kind is T.TagOpenOpen and i + 1 < n and type(toks[i + 1]) is T.Text:
                markup = getattr(tok, "wiki_markup", None)
                if markup == "{|" or (markup is None and toks[i + 1].text.strip().lower() in _WIKI_DROP_TAGS):
                    end = self._end(toks, i, T.TagOpenOpen, (T.TagCloseSelfclose, T.TagCloseClose))
            elif kind is T.CommentStart:
                end = self._end(toks, i, T.CommentStart, (T.CommentEnd,))
            if end is None:
                if kind is T.Text and out and type(out[-1]) is T.Text:   # one Text node, not many
                    out[-1] = T.Text(text=out[-1].text + tok.text)
                else:
                    out.append(tok)
                i += 1
            else:
                i = end
        return out

    def _plain_link(self, toks: list, i: int, link, out: list) -> int | None:
        """[[title]] or [[title|label]] of Text tokens only: appends the Text
        it shows to ``out`` and returns the index after it; else None."""
        T, n = self.T, len(toks)
        j = i + 1
        while j < n and type(toks[j]) is T.Text:
            j += 1
        title, label = "".join(t.text for t in toks[i + 1:j]), None
        if j < n and type(toks[j]) is T.WikilinkSeparator:
            k = j + 1
            while k < n and type(toks[k]) is T.Text:
                k += 1
            label, j = "".join(t.text for t in toks[j + 1:k]).strip(), k
        if j >= n or type(toks[j]) is not T.WikilinkClose:
            return None
        shown = link(title, label)
        if shown:
            if out and type(out[-1]) is T.Text:
                out[-1] = T.Text(text=out[-1].text + shown)
            else:
                out.append(T.Text(text=shown))
        return j + 1

    @staticmethod
    def _end(toks: list, i: int, opener, closers: tuple) -> int | None:
        """The index after the token that closes the span opened at ``i``."""
        depth = 0
        for j in range(i, len(toks)):
            kind = type(toks[j])
            if kind is opener:
                depth += 1
            elif kind in closers:
                depth -= 1
                if depth == 0:
                    return j + 1
        return None


_PARSER: _Parser | None = None


def _parse(text: str, link=None):
    global _PARSER
    if _PARSER is None:
        _mwparser()   # the one sentence when mwparserfromhell is missing
        _PARSER = _Parser()
    return _PARSER.parse(text, link)


def strip_wiki_markup(text: str, drop_namespaces=()) -> list[str]:
    """Wikitext -> prose paragraphs (one per line); see WIKI_TEMPLATES.
    ``drop_namespaces``: local names of the file and category namespaces
    beyond the English and Japanese ones."""
    return _WikiRenderer(drop_namespaces).lines(text)


def _is_redirect(text: str) -> bool:
    head = text.lstrip()[:16].lower()
    return head.startswith(("#redirect", "#転送", "#リダイレクト"))

