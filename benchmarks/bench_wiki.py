"""Wikipedia dump extraction throughput and memory (``prepare --wiki-dump``).

Generates a jawiki-like pages-articles dump (default 40 MB of XML: articles
with infoboxes, citation templates, <ref>s, tables, lists, files, categories,
interlanguage links, 仮リンク / lang / 読み仮名 templates; plus redirects and
pages of other namespaces, in about jawiki's proportions), then times
``qrnn_lm.corpus.extract_wiki_dump`` on it, as .xml and as .xml.bz2, for
every article and for every 50th (``--sample 50``, the origin's setting), each
in a fresh process whose peak RSS is recorded; a dump a quarter of the size
is run too, to show that peak memory does not grow with the dump (streaming).

    python benchmarks/bench_wiki.py                 # ~3 minutes on 2 cores
    python benchmarks/bench_wiki.py --mb 10 --out /tmp/w.json

Writes benchmarks/results/wiki_extract.json (or --out) and prints a table.
"""
from __future__ import annotations

import argparse
import bz2
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape, quoteattr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORDS = ("東京 大阪 北海道 鉄道 駅 市 町 村 川 山 大学 研究 政府 議会 戦争 条約 皇帝 王国 文化 "
         "音楽 映画 作品 小説 漫画 選手 野球 サッカー 企業 会社 製品 技術 言語 文学 歴史 地理 "
         "人口 経済 産業 農業 漁業 港湾 空港 道路 橋 城 寺 神社 祭り 学校 病院 図書館 博物館 "
         "公園 自然 動物 植物 気候 地震 火山 海 湖 島 半島 平野 盆地").split()
PARTICLES = "は が を に で と の から まで より も".split()
ENDINGS = ("である。", "であった。", "とされる。", "と呼ばれる。", "を行った。", "が知られている。",
           "に位置する。", "を務めた。", "が設立された。", "として知られる。")
LANGS = ("en", "de", "fr", "it", "es", "ru", "zh", "ko", "la")


def sentence(r: random.Random) -> str:
    parts = []
    for _ in range(r.randint(2, 5)):
        w = r.choice(WORDS) + r.choice(WORDS)
        x = r.random()
        if x < 0.35:
            w = f"[[{w}]]"
        elif x < 0.45:
            w = f"[[{w}の{r.choice(WORDS)}|{w}]]"
        elif x < 0.48:
            w = f"{{{{仮リンク|{w}|{r.choice(LANGS)}|{r.choice(WORDS)} article}}}}"
        elif x < 0.50:
            w = f"'''{w}'''"
        parts.append(w + r.choice(PARTICLES))
    s = "".join(parts) + r.choice(ENDINGS)
    x = r.random()
    if x < 0.20:
        s = s[:-1] + (f"<ref>{{{{Cite web|和書|url=https://example.org/{r.randint(1, 10**6)}"
                      f"|title={r.choice(WORDS)}の{r.choice(WORDS)}|publisher={r.choice(WORDS)}"
                      f"|accessdate=2020-01-{r.randint(10, 28)}}}}}</ref>。")
    elif x < 0.25:
        s = s[:-1] + f"<ref name=\"r{r.randint(1, 20)}\" />。"
    elif x < 0.28:
        s = s[:-1] + f"{{{{sfn|{r.choice(WORDS)}|{r.randint(1950, 2020)}|p={r.randint(1, 300)}}}}}。"
    elif x < 0.30:
        s = s[:-1] + "{{要出典|date=2021年5月}}。"
    return s


def article(r: random.Random, title: str) -> str:
    out = ["{{Otheruses}}" if r.random() < 0.1 else "",
           "{{Infobox " + r.choice(WORDS) + "\n" + "\n".join(
               f"| {r.choice(WORDS)}{i} = {r.choice(WORDS)}{r.randint(1, 9999)}"
               + (f"<ref>{r.choice(WORDS)}</ref>" if r.random() < 0.1 else "")
               for i in range(r.randint(5, 30))) + "\n}}" if r.random() < 0.6 else "",
           f"'''{title}'''（{r.choice(WORDS)}、{{{{lang-{r.choice(LANGS)}|{title} name}}}}）は、"
           + sentence(r)]
    for _ in range(r.randint(1, 8)):
        out.append(f"\n== {r.choice(WORDS)} ==")
        for _ in range(r.randint(1, 4)):
            out.append("".join(sentence(r) for _ in range(r.randint(1, 6))))
            x = r.random()
            if x < 0.1:
                out.append(f"[[ファイル:{r.choice(WORDS)}.jpg|thumb|250px|[[{r.choice(WORDS)}]]の写真]]")
            elif x < 0.18:
                out.append("\n".join(f"* [[{r.choice(WORDS)}{r.choice(WORDS)}]] - {r.choice(WORDS)}"
                                     for _ in range(r.randint(2, 10))))
            elif x < 0.23:
                rows = "\n|-\n".join(f"| {r.choice(WORDS)} || {r.randint(1, 10**6)} || "
                                     f"{{{{flagicon|JPN}}}} {r.choice(WORDS)}"
                                     for _ in range(r.randint(2, 15)))
                out.append('{| class="wikitable"\n! 名称 !! 数 !! 備考\n|-\n' + rows + "\n|}")
    out += ["\n== 脚注 ==", "{{Reflist}}", "\n== 外部リンク ==",
            f"* [https://example.org/{r.randint(1, 10**6)} 公式サイト]",
            "{{" + r.choice(WORDS) + "の一覧}}", "{{DEFAULTSORT:" + title + "}}"]
    out += [f"[[Category:{r.choice(WORDS)}の{r.choice(WORDS)}]]" for _ in range(r.randint(1, 5))]
    out += [f"[[{lang}:{title} {lang}]]" for lang in r.sample(LANGS, r.randint(0, 6))]
    return "\n".join(out)


def write_dump(path: str, target_bytes: int, seed: int = 0) -> dict:
    """A jawiki-like dump of about ``target_bytes`` bytes; returns its page counts."""
    r = random.Random(seed)
    counts = {"pages": 0, "articles": 0, "redirects": 0, "other_ns": 0}
    with open(path, "w", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xml:lang="ja">\n'
                "  <siteinfo><sitename>Wikipedia</sitename><dbname>jawiki</dbname><namespaces>"
                '<namespace key="6">ファイル</namespace><namespace key="14">Category</namespace>'
                "</namespaces></siteinfo>\n")
        pid = 0
        while f.tell() < target_bytes:
            pid += 1
            title = f"{r.choice(WORDS)}{r.choice(WORDS)}{pid}"
            x = r.random()
            redirect = None
            if x < 0.35:  # jawiki: about a third of main-namespace pages are redirects
                ns, redirect = 0, f"{r.choice(WORDS)}{pid - 1}"
                text = f"#転送 [[{redirect}]]"
                counts["redirects"] += 1
            elif x < 0.45:
                ns = r.choice((1, 4, 10, 14))
                title = {1: "ノート:", 4: "Wikipedia:", 10: "Template:", 14: "Category:"}[ns] + title
                text = "".join(sentence(r) for _ in range(r.randint(1, 10)))
                counts["other_ns"] += 1
            else:
                ns, text = 0, article(r, title)
                counts["articles"] += 1
            counts["pages"] += 1
            red = f"<redirect title={quoteattr(redirect)} />" if redirect else ""
            f.write(f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n"
                    f"    <id>{pid}</id>\n    {red}<revision><id>{pid + 10**6}</id>"
                    "<timestamp>2024-01-01T00:00:00Z</timestamp><contributor><username>x"
                    "</username><id>1</id></contributor><model>wikitext</model>"
                    '<format>text/x-wiki</format>\n      <text xml:space="preserve">'
                    f"{escape(text)}</text>\n    </revision>\n  </page>\n")
        f.write("</mediawiki>\n")
    counts["bytes"] = os.path.getsize(path)
    return counts


CHILD = r"""
import json, sys, time, resource
sys.path.insert(0, {root!r})
from qrnn_lm import corpus as C
stats = {{}}
t, c = time.perf_counter(), time.process_time()
C.extract_wiki_dump({path!r}, {out!r}, sample={sample}, stats=stats)
stats["seconds"] = time.perf_counter() - t
stats["cpu_seconds"] = time.process_time() - c
stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(stats))
"""


def run_child(path: str, sample: int, tmp: str) -> dict:
    out = tempfile.mkdtemp(dir=tmp)
    code = CHILD.format(root=ROOT, path=path, out=out, sample=sample)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=40, help="size of the generated dump (MB)")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "wiki_extract.json"))
    args = ap.parse_args(argv)
    import mwparserfromhell
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dumps = {}
        for label, mb in (("full", args.mb), ("quarter", args.mb / 4)):
            xml = os.path.join(tmp, f"{label}.xml")
            counts = write_dump(xml, int(mb * 1e6), seed=1)
            with open(xml, "rb") as f, bz2.open(xml + ".bz2", "wb") as g:
                g.write(f.read())
            dumps[label] = (xml, counts)
        cases = [("full", ".xml", 1), ("full", ".xml.bz2", 1), ("full", ".xml", 50),
                 ("full", ".xml.bz2", 50), ("quarter", ".xml", 1)]
        for label, ext, sample in cases:
            xml, counts = dumps[label]
            path = xml if ext == ".xml" else xml + ".bz2"
            s = run_child(path, sample, tmp)
            row = {"dump": label, "file": ext, "sample": sample, "xml_mb": counts["bytes"] / 1e6,
                   "file_mb": os.path.getsize(path) / 1e6, "pages": counts["pages"],
                   "articles_in_dump": counts["articles"], "articles_written": s["articles"],
                   "lines": s["lines"], "chars_out": s["chars"], "seconds": s["seconds"],
                   "cpu_seconds": s["cpu_seconds"],
                   "pages_per_s": counts["pages"] / s["seconds"],
                   "articles_per_s": s["articles"] / s["seconds"],
                   "xml_mb_per_s": counts["bytes"] / 1e6 / s["seconds"],
                   "xml_mb_per_cpu_s": counts["bytes"] / 1e6 / s["cpu_seconds"],
                   "pages_per_cpu_s": counts["pages"] / s["cpu_seconds"],
                   "peak_rss_mb": s["peak_rss_mb"]}
            rows.append(row)
            print(f"{label:7s} {ext:8s} --sample {sample:2d}: {row['xml_mb']:6.1f} MB XML, "
                  f"{row['pages']} pages ({row['articles_in_dump']} articles) in "
                  f"{row['seconds']:6.1f} s = {row['pages_per_s']:7.0f} pages/s "
                  f"({row['pages_per_cpu_s']:5.0f} per CPU second), "
                  f"{row['xml_mb_per_s']:5.2f} MB/s of XML ({row['xml_mb_per_cpu_s']:5.2f} MB per "
                  f"CPU second); {row['articles_written']} articles "
                  f"written; peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    result = {"python": platform.python_version(), "mwparserfromhell": mwparserfromhell.__version__,
              "mwparserfromhell_c_tokenizer": bool(mwparserfromhell.parser.use_c),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
