"""Corpus readers: normalisation, bad input, Wikipedia dumps, debian-ja."""
import bz2
import gzip
import os
import re
import warnings
from xml.sax.saxutils import escape

import pytest

from qrnn_lm import corpus as C
from qrnn_lm.errors import QrnnLmError


def test_normalisation_and_long_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("ＡＢＣ　１２３  ｶﾀｶﾅ\n\n   \n" + "あ" * 30 + "。" + "い" * 30 + "\n",
                 encoding="utf-8")
    n = C.TextNormalizer(max_line_chars=40)
    lines = list(C.read_text(str(p), n))
    assert lines[0] == "ABC 123 カタカナ"
    # split after the sentence end, not in the middle of a word
    assert lines[1:] == ["あ" * 30 + "。", "い" * 30]
    raw = list(C.read_text(str(p), C.TextNormalizer(nfkc=False)))
    assert raw[0] == "ＡＢＣ １２３ ｶﾀｶﾅ"
    # a line without any break point is cut at the limit
    assert [len(x) for x in C.TextNormalizer(max_line_chars=16).split_long("x" * 40)] == [16, 16, 8]


def test_invalid_utf8_replaced_and_counted_once(tmp_path):
    p = tmp_path / "b.txt"
    good = "これは正しい文です。\n" * 50
    p.write_bytes(good.encode() + b"bad \xff\xfe here \xc3\n" + "\ufffd ok\n".encode())
    stats = {}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        lines = list(C.read_text(str(p), stats=stats))
    # three bytes that start no valid sequence; the genuine U+FFFD is not counted
    assert stats["invalid_utf8"] == 3
    assert len(w) == 1 and "3 invalid UTF-8" in str(w[0].message)
    assert lines[-2:] == ["bad \ufffd\ufffd here \ufffd", "\ufffd ok"]


def test_empty_and_binary_input(tmp_path):
    e = tmp_path / "empty.txt"
    e.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="contains no text"):
        list(C.read_text(str(e)))
    b = tmp_path / "bin.dat"
    b.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(QrnnLmError, match="binary"):
        list(C.read_text(str(b)))
    g = tmp_path / "garbage.txt"
    g.write_bytes(bytes(range(128, 256)) * 1000)
    with pytest.raises(QrnnLmError, match="does not look like UTF-8"):
        list(C.read_text(str(g)))
    with pytest.raises(QrnnLmError, match="does not exist"):
        list(C.read_text(str(tmp_path / "missing.txt")))


def test_compressed_text(tmp_path):
    p = tmp_path / "c.txt.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write("一行目\n二行目\n")
    assert list(C.read_text(str(p))) == ["一行目", "二行目"]


ARTICLE_ONE = """{{Infobox 都市|名前=東京{{lang|en|Tokyo}}}}
'''東京都'''（{{lang-en|Tokyo}}、）は[[日本]]の[[首都|首都である都市]]。<ref>出典</ref>人口が多い。
== 歴史 ==
[[ファイル:Tokyo.jpg|thumb|[[東京]]の写真]]
江戸と呼ばれた<!-- 注釈 -->。[https://example.org 外部リンク]も見よ。
* 箇条書き
{| class="wikitable"
| 表のセル
|}
[[Category:日本の都市]]"""

# In a dump the wikitext is XML-escaped (&lt;ref&gt; ...).
WIKI = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="ja">
  <siteinfo><sitename>Wikipedia</sitename></siteinfo>
  <page><title>記事一</title><ns>0</ns><id>1</id>
    <revision><text xml:space="preserve">""" + escape(ARTICLE_ONE) + """</text></revision></page>
  <page><title>転送</title><ns>0</ns><id>2</id><redirect title="記事一"/>
    <revision><text>#転送 [[記事一]]</text></revision></page>
  <page><title>Wikipedia:方針</title><ns>4</ns><id>3</id>
    <revision><text>プロジェクト文書。</text></revision></page>
  <page><title>記事二</title><ns>0</ns><id>4</id>
    <revision><text>二番目の記事です。</text></revision></page>
  <page><title>記事三</title><ns>0</ns><id>5</id>
    <revision><text>三番目の記事です。</text></revision></page>
</mediawiki>
"""


def test_wiki_markup_stripped_and_sampled(tmp_path):
    p = tmp_path / "dump.xml"
    p.write_text(WIKI, encoding="utf-8")
    arts = list(C.iter_wiki_articles(str(p)))
    assert [t for t, _ in arts] == ["記事一", "記事二", "記事三"]
    prose = C.strip_wiki_markup(arts[0][1])
    assert prose == ["東京都（英語: Tokyo）は日本の首都である都市。人口が多い。",
                     "江戸と呼ばれた。外部リンクも見よ。"]
    # every 2nd article, counted over articles only (not redirects / other namespaces)
    assert [t for t, _ in C.iter_wiki_articles(str(p), sample=2)] == ["記事一", "記事三"]
    b = tmp_path / "dump.xml.bz2"
    b.write_bytes(bz2.compress(WIKI.encode("utf-8")))
    paths = C.extract_wiki_dump(str(b), str(tmp_path / "out"), sample=1,
                                valid_fraction=0.0, test_fraction=0.0)
    assert open(paths["train"], encoding="utf-8").read().splitlines() == [
        "東京都(英語: Tokyo)は日本の首都である都市。人口が多い。", "江戸と呼ばれた。外部リンクも見よ。",
        "二番目の記事です。", "三番目の記事です。"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<mediawiki><page><title>x</title>", encoding="utf-8")
    with pytest.raises(QrnnLmError, match="not a readable MediaWiki"):
        list(C.iter_wiki_articles(str(bad)))


JAWIKI = os.path.join(os.path.dirname(__file__), "data", "jawiki_excerpt.xml")

# the prose of tests/data/jawiki_excerpt.xml (three articles; redirects, talk,
# template, category, file and project pages skipped), NFKC-normalised
JAWIKI_PROSE = [
    "札幌市(さっぽろし)(アイヌ語: Satporo、英: Sapporo City)は、北海道の道央地方、石狩振興局に"
    "位置する市。政令指定都市であり、北海道の道庁所在地である。",
    "人口は日本で4番目に多い。「北の都」とも呼ばれる。",
    "アイヌ語の「サッ・ポロ・ペッ」(sat-poro-pet、乾いた大きな川)に由来するという説が有力である。"
    "別の説ではバチェラーが「サリ・ポロ・ペッ」を挙げている。英語: Sapporoの綴りは明治期に定まった。",
    "1869年(明治2年)、開拓使が置かれ、島義勇が都市の建設に着手した。1922年に市制を施行し、"
    "1972年には冬季オリンピックが開催された。",
    "開催に合わせて地下鉄が開業した。",
    "ケッペンの気候区分では亜寒帯湿潤気候(Dfa)に属する。年間降雪量は597 cmに達し、"
    "人口100万人以上の都市としては世界有数の多雪地である。",
    "「都市は人なり」と初代市長は述べた。",
    "人口密度 は、約1,760人/km2である。",
    "札幌駅は 北海道最大の駅で、1日の乗車人員は約10万人と多い。詳細は札幌市公式サイトを参照。"
    "赤字の注記も本文である。",
    "東京都(とうきょうと、英語: Tokyo Metropolis)は、日本の首都である。英語版や東京都のカテゴリも参照。",
    "TokyoはTokyo(東京、Tōkyō)とも表記され、東京府を前身とする。重要な都市である。"
    "東京都庁は新宿にある。その歴史は長い。",
    "古語ではTokyo'nganとも書かれた(仮)。ある式はで表される。",
    "出典を参照する記事もある。都の字を含む。",
    "大通公園(おおどおりこうえん)は、札幌市中央区にある公園。",
]

# markup or punctuation that no extracted line may hold
WIKI_DEBRIS = re.compile(r"\{\{|\}\}|\[\[|\]\]|[<>|=&{}\[\]]|https?:|''|__|\(\)|\(\s*[、,]|[、,]\s*\)|"
                         r"、\s*、|^[、。,]|thumb|px|Category:|カテゴリ:|ファイル:|File:|画像:|"
                         r"^[a-z-]+:|cite|ref|sfn|efn|formatnum|人口の推移|1,973,395|102,580")


def test_jawiki_excerpt_prose_without_debris(tmp_path):
    """A dump excerpt as jawiki writes it: 仮リンク, lang/lang-xx(-short),
    読み仮名, Nihongo, ruby, 和暦, convert, 要出典範囲, nowrap, color kept as
    text; infoboxes, citations, sfn/efn, tables, math, galleries, files,
    categories, interlanguage links, lists, headings, magic words, redirects
    and other namespaces dropped."""
    stats = {}
    paths = C.extract_wiki_dump(JAWIKI, str(tmp_path / "out"), valid_fraction=0.0,
                                test_fraction=0.0, stats=stats)
    lines = open(paths["train"], encoding="utf-8").read().splitlines()
    assert lines == JAWIKI_PROSE
    assert stats == {"articles": 3, "lines": len(JAWIKI_PROSE),
                     "chars": sum(len(x) + 1 for x in JAWIKI_PROSE)}
    for line in lines:
        assert not WIKI_DEBRIS.search(line), line
    # the same through bz2, as dumps are downloaded
    b = tmp_path / "jawiki.xml.bz2"
    b.write_bytes(bz2.compress(open(JAWIKI, "rb").read()))
    paths = C.extract_wiki_dump(str(b), str(tmp_path / "bz"), valid_fraction=0.0,
                                test_fraction=0.0)
    assert open(paths["train"], encoding="utf-8").read().splitlines() == JAWIKI_PROSE


def test_wiki_templates_and_links():
    s = C.strip_wiki_markup
    assert s("{{仮リンク|表示名|en|English}}によれば、") == ["表示名によれば、"]
    assert s("{{仮リンク|表示名|en|English|label=別名}}は") == ["別名は"]
    assert s("{{ill|イル|de|Ill}}。") == ["イル。"]
    assert s("東京（{{lang-en-short|Tokyo}}、{{lang-fr-short|Tokyo}}）") == ["東京（英: Tokyo、仏: Tokyo）"]
    assert s("東京（{{lang-en|Tokyo}}）") == ["東京（英語: Tokyo）"]
    assert s("東京（{{Lang-xyz|Tok}}）") == ["東京（Tok）"]  # unknown language: the text
    assert s("{{lang|en|Tokyo}}") == ["Tokyo"]
    # dropped templates leave no "、、", "（）" or "（、"
    assert s("東京（{{IPA-en|x}}、{{Audio|a.ogg}}、{{lang-en|Tokyo}}）は") == ["東京（英語: Tokyo）は"]
    assert s("東京（{{IPA-en|x}}）は{{要出典|date=2020}}、、首都。") == ["東京は、首都。"]
    assert s("[[en:Tokyo]]\n[[:en:Tokyo]]と[[:en:Tokyo|英語版]]") == ["Tokyoと英語版"]
    assert s("[[Category:都市]][[カテゴリ:x]][[ファイル:a.jpg|thumb|[[b]]の図]]本文") == ["本文"]
    assert s("[[Datei:a.jpg|mini|Bild]]Text", drop_namespaces={"Datei"}) == ["Text"]
    # [[a (b)|]]: the "pipe trick" (expanded on save, so rare in dumps)
    assert s("[[東京#歴史|東京の歴史]]と[[#概要]]と[[東京 (曖昧さ回避)|]]") == ["東京の歴史と概要と東京"]
    assert s("{{読み仮名|漢字|かんじ}}と{{ruby|漢字|かんじ}}と<ruby>漢<rt>かん</rt></ruby>") == [
        "漢字（かんじ）と漢字と漢"]
    assert s("{{和暦|1989}}、{{和暦|2019}}、{{和暦|1850}}") == [
        "1989年（平成元年）、2019年（令和元年）、1850年"]


def test_wiki_dump_namespaces_from_siteinfo(tmp_path):
    dump = tmp_path / "de.xml"
    dump.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/"><siteinfo><namespaces>'
        '<namespace key="6">Datei</namespace><namespace key="14">Kategorie</namespace>'
        '</namespaces></siteinfo><page><title>Tokio</title><ns>0</ns><id>1</id><revision>'
        '<text>[[Datei:Tokio.jpg|mini|Bild]]Tokio ist die Hauptstadt.\n[[Kategorie:Stadt]]'
        '</text></revision></page></mediawiki>', encoding="utf-8")
    paths = C.extract_wiki_dump(str(dump), str(tmp_path / "o"), valid_fraction=0.0,
                                test_fraction=0.0)
    assert open(paths["train"], encoding="utf-8").read() == "Tokio ist die Hauptstadt.\n"


def test_split_of_is_deterministic_and_proportional():
    keys = [f"doc{i}" for i in range(4000)]
    splits = [C.split_of(k, 0.05, 0.05) for k in keys]
    assert splits == [C.split_of(k, 0.05, 0.05) for k in keys]
    assert 120 < splits.count("valid") < 290 and 120 < splits.count("test") < 290


def _fake_debian_root(tmp_path, packages):
    root = tmp_path / "root"
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    files = {
        "debian-reference-ja": {
            "/usr/share/doc/debian-reference-ja/index.ja.html":
                "<html><head><title>x</title><style>p {}</style></head><body>"
                "<p>これはDebianの\nリファレンスです。</p><script>var a=1;</script>"
                "<p>English only paragraph here.</p><p>短い</p></body></html>",
        },
        "manpages-ja-dev": {
            "/usr/share/man/ja/man3/printf.3": "文字列を整形して出力する関数です。\n",
        },
        "manpages-ja": {
            "/usr/share/man/ja/man1/ls.1.gz":
                '.\\" comment\n.TH LS 1\n.SH 名前\nls \\- ディレクトリの内容を\n一覧表示する\n'
                ".PP\n\\fBls\\fP はファイルの情報を表示します。\n",
        },
    }
    for pkg in packages:
        paths = []
        for path, text in files.get(pkg, {}).items():
            full = root / path.lstrip("/")
            full.parent.mkdir(parents=True, exist_ok=True)
            if path.endswith(".3"):  # an old EUC-JP page
                full.write_bytes(text.encode("euc-jp"))
            elif path.endswith(".gz"):
                with gzip.open(full, "wt", encoding="utf-8") as f:
                    f.write(text)
            else:
                full.write_text(text, encoding="utf-8")
            paths.append(path)
        (info / f"{pkg}.list").write_text("/.\n/usr\n" + "\n".join(paths) + "\n",
                                          encoding="utf-8")
    return str(root)


def test_debian_ja_extraction(tmp_path):
    root = _fake_debian_root(tmp_path, ["debian-reference-ja", "manpages-ja",
                                        "manpages-ja-dev"])
    logs = []
    paths = C.extract_debian_ja(str(tmp_path / "out"), root=root, valid_fraction=0,
                                test_fraction=0, log=logs.append)
    lines = open(paths["train"], encoding="utf-8").read().splitlines()
    assert "これはDebianのリファレンスです。" in lines
    assert "ls - ディレクトリの内容を一覧表示する" in lines
    assert "ls はファイルの情報を表示します。" in lines
    assert "文字列を整形して出力する関数です。" in lines
    assert not any("English" in l or "var a" in l or l == "短い" for l in lines)
    assert any("apt-get install" in m and "debian-faq-ja" in m for m in logs)


def test_debian_ja_missing_packages_message(tmp_path):
    root = _fake_debian_root(tmp_path, [])
    with pytest.raises(QrnnLmError, match="sudo apt-get install manpages-ja manpages-ja-dev"):
        C.extract_debian_ja(str(tmp_path / "out"), root=root)


def test_wiki_unparsable_article_skipped_with_a_warning(tmp_path, monkeypatch):
    dump = tmp_path / "d.xml"
    dump.write_text(WIKI, encoding="utf-8")
    real = C._WikiRenderer.lines

    def flaky(self, text):
        if text.startswith("二番目"):
            raise RuntimeError("tokenizer exited with non-empty token stack")
        return real(self, text)
    monkeypatch.setattr(C._WikiRenderer, "lines", flaky)
    stats = {}
    with pytest.warns(UserWarning, match="skipped 1 article"):
        paths = C.extract_wiki_dump(str(dump), str(tmp_path / "o"), valid_fraction=0.0,
                                    test_fraction=0.0, stats=stats)
    assert stats["articles"] == 2 and stats["unparsable"] == 1
    assert "二番目" not in open(paths["train"], encoding="utf-8").read()


def test_sources_extract_their_splits(tmp_path):
    """Every source: inputs, check() before any work, extract(out_dir) -> {split: path}."""
    t = tmp_path / "t.txt"
    t.write_text("一行目\n", encoding="utf-8")
    text = C.make_source("text", train=str(t), valid=str(t))
    assert text.inputs == {"--train": str(t), "--valid": str(t), "--test": None}
    assert text.extract(str(tmp_path / "unused"), log=print) == {"train": str(t), "valid": str(t)}
    assert not (tmp_path / "unused").exists()
    with pytest.raises(QrnnLmError, match="--test file .* does not exist"):
        C.TextFiles(str(t), str(t), str(tmp_path / "missing.txt")).check()

    dump = tmp_path / "dump.xml"
    dump.write_text(WIKI, encoding="utf-8")
    wiki = C.source_from_flags(wiki_dump=str(dump), heldout=0)
    assert isinstance(wiki, C.WikiDump) and wiki.inputs == {"--wiki-dump": str(dump)}
    logs = []
    paths = wiki.extract(str(tmp_path / "w"), log=logs.append)
    assert list(paths) == ["train"] and logs[0].startswith("wikipedia: 3 articles")
    assert open(paths["train"], encoding="utf-8").read().splitlines()[-1] == "三番目の記事です。"
    with pytest.raises(QrnnLmError, match="--wiki-dump file .* does not exist"):
        C.WikiDump(str(tmp_path / "none.xml")).check()

    root = _fake_debian_root(tmp_path, ["manpages-ja"])
    deb = C.DebianJa(heldout=0, root=root)
    deb.check()
    assert deb.inputs == {}
    paths = deb.extract(str(tmp_path / "d"))
    assert "ls はファイルの情報を表示します。" in open(paths["train"], encoding="utf-8").read()
    assert C.source_from_flags(corpus="debian-ja").heldout == 0.05
    assert C.source_from_flags(wiki_dump="x.xml").heldout == 0.01


def test_source_flags_errors():
    for flags, msg in [({}, "exactly one"), ({"train": "a", "corpus": "debian-ja"}, "exactly one"),
                       ({"train": "a"}, "needs --valid"),
                       ({"corpus": "debian-ja", "test": "b"}, "cannot be combined"),
                       ({"wiki_dump": "x", "heldout": -0.1}, "--heldout must be in"),
                       ({"corpus": "nope"}, "unknown corpus source 'nope'")]:
        with pytest.raises(QrnnLmError, match=msg):
            C.source_from_flags(**flags)


def test_ruby_ja_keeps_its_base_text():
    assert C.strip_wiki_markup("{{ruby-ja|漢字|かんじ}}を読む") == ["漢字を読む"]


AWKWARD_WIKITEXT = [
    "{{Infobox|a={{b|c}}|d=<ref>x{{cite|y}}</ref>}}本文{{lang-en|Tokyo}}です。<ref name=a/>続き",
    "{{ {{x}} }}と<!-- c -->{{仮リンク|東京|en|Tokyo}}<ref>閉じない",
    "{|\n|a\n|}\n表の後。<table><tr><td>x</td></tr></table>後",
    "<ref>{{cite web|title=[[A|B]]}}</ref>文。{{ruby-ja|漢字|かんじ}}",
    "{{<!--x-->nihongo|a|b|c}}と{{nihongo<!--y-->|d|e}}",
    "{{読み仮名|東京|とうきょう}}は<math>x^2</math>首都。<REF>大文字</REF>",
    "}}{{|}}{{{{}}}}<ref<ref>>{{{1|引数}}}",
    "{{template:Lang-en|Tokyo}}と{{Tl:small|x}}と{{テンプレート:Color|red|赤}}",
    "<references/>{{reflist}}<gallery>\nFile:x.jpg\n</gallery>後{{要出典範囲|範囲|date=x}}",
    "* 項目 {{cite|a}}\n# 番号\n本文<br>改行<!-- 閉じないコメント",
    "{{Infobox\n| 名前 = {{lang|en|X}}\n| 表 = {|\n|a\n|}\n}}\n'''太字'''の[[リンク|ラベル]]。",
    "[[東京]]と[[東京|都]]と[[東京 (曖昧さ回避)|]]と[[#概要]]と[[東京#歴史| 歴史 ]]と[[ 空白 ]]",
    "[[Category:都市]][[カテゴリ:x|y]][[en:Tokyo]][[:en:Tokyo]][[:en:Tokyo|英語版]][[:Category:都市]]",
    "[[ファイル:a.jpg|thumb|[[b]]の図]][[File:b.png]]本文[[wikt:語]][[commons:x|y]][[a|[[b]]]]",
    "[[リンク|{{lang|en|X}}]]と[[a|b|c]]と[[閉じない",
]


def test_pruned_parse_renders_as_the_whole_tree(monkeypatch):
    """Cutting dropped spans out of the token stream before building the
    tree does not change what is rendered."""
    from qrnn_lm.corpus import wiki_markup as W
    import mwparserfromhell
    pruned = [W.strip_wiki_markup(t) for t in AWKWARD_WIKITEXT]
    monkeypatch.setattr(W, "_parse", lambda text, link=None: mwparserfromhell.parse(text, skip_style_tags=True))
    assert [W.strip_wiki_markup(t) for t in AWKWARD_WIKITEXT] == pruned
    assert any(pruned)
    # one difference, for the better: a comment in a link's title no longer shows
    assert W.strip_wiki_markup("[[<!-- c -->東京]]へ") == ["<!-- c -->東京へ"]
    monkeypatch.undo()
    assert W.strip_wiki_markup("[[<!-- c -->東京]]へ") == ["東京へ"]
