"""Wikipedia extraction in worker processes: the same output for any number
of workers, plain and multistream dumps, --sample reading only the streams
it needs, one-pass tokenization equal to two passes, and Ctrl-C."""
import bz2
import json
import os
import signal
import subprocess
import sys
import time
from xml.sax.saxutils import escape

import pytest

from qrnn_lm import corpus as C
from qrnn_lm.corpus import wiki_read
from qrnn_lm.prepare import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xml:lang="ja">\n'
          "  <siteinfo><sitename>Wikipedia</sitename><namespaces>"
          '<namespace key="0" case="first-letter" /><namespace key="1">ノート</namespace>'
          '<namespace key="6">ファイル</namespace><namespace key="10">Template</namespace>'
          '<namespace key="14">Category</namespace></namespaces></siteinfo>\n')
FOOTER = "</mediawiki>\n"
WORDS = "東京 大阪 鉄道 大学 研究 音楽 映画 歴史 地理 経済 港湾 図書館".split()


def _page(i: int) -> tuple[str, str, str]:
    """(id, title, <page> XML) of page ``i``: articles, redirects, other namespaces."""
    w = WORDS[i % len(WORDS)]
    ns, title = 0, f"{w}{i}"
    text = (f"{{{{Infobox|名前={w}}}}}'''{title}'''（{{{{lang-en|{w} {i}}}}}）は[[{w}]]の"
            f"[[{WORDS[(i * 7) % len(WORDS)]}|記事]]である<ref>出典{i}</ref>。\n"
            f"== 概要 ==\n{w}と{WORDS[(i * 3) % len(WORDS)]}の関係は{i}年から知られる。"
            f"[[ファイル:{w}.jpg|thumb|写真]]\n* 一覧\n[[Category:{w}]]\n[[en:{w} {i}]]")
    if i % 5 == 3:
        text = f"#転送 [[{w}{i - 1}]]"
    elif i % 7 == 4:
        ns, title = 1, f"ノート:{w}{i}"
    elif i % 11 == 6:
        ns, title = 10, f"Template:{w}{i}"
    xml = (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{i}</id>\n"
           f"    <revision><id>{i + 1000}</id><text xml:space=\"preserve\">{escape(text)}"
           "</text></revision>\n  </page>\n")
    return str(i), title, xml


def write_dumps(tmp_path, pages: int = 60, per_stream: int = 4) -> dict:
    """The same dump as .xml, .xml.bz2 and multistream .xml.bz2 with its index."""
    items = [_page(i) for i in range(1, pages + 1)]
    xml = HEADER + "".join(x for _, _, x in items) + FOOTER
    plain = tmp_path / "jawiki.xml"
    plain.write_text(xml, encoding="utf-8")
    (tmp_path / "jawiki.xml.bz2").write_bytes(bz2.compress(xml.encode("utf-8")))
    multi = tmp_path / "jawiki-multistream.xml.bz2"
    index = []
    with open(multi, "wb") as f:
        f.write(bz2.compress(HEADER.encode("utf-8")))
        for s in range(0, len(items), per_stream):
            offset = f.tell()
            chunk = items[s:s + per_stream]
            f.write(bz2.compress("".join(x for _, _, x in chunk).encode("utf-8")))
            index += [f"{offset}:{pid}:{title}\n" for pid, title, _ in chunk]
        f.write(bz2.compress(FOOTER.encode("utf-8")))
    (tmp_path / "jawiki-multistream-index.txt.bz2").write_bytes(
        bz2.compress("".join(index).encode("utf-8")))
    return {"xml": str(plain), "bz2": str(tmp_path / "jawiki.xml.bz2"), "multistream": str(multi),
            "index": str(tmp_path / "jawiki-multistream-index.txt.bz2"), "pages": pages,
            "per_stream": per_stream}


def _files(d) -> dict:
    """{relative path: bytes} of every file under ``d``."""
    out = {}
    for root, _, names in os.walk(d):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, d)] = f.read()
    return out


def _extract(path, out, workers, **kw):
    stats = {}
    C.extract_wiki_dump(path, str(out), valid_fraction=0.1, test_fraction=0.1, workers=workers,
                        stats=stats, **kw)
    return _files(out), stats


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    return write_dumps(tmp_path_factory.mktemp("dumps"))


@pytest.mark.parametrize("kind", ["xml", "bz2", "multistream"])
def test_same_output_for_any_number_of_workers(dumps, tmp_path, kind):
    one, s1 = _extract(dumps[kind], tmp_path / "one", 1)
    two, s2 = _extract(dumps[kind], tmp_path / "two", 2)
    assert one == two and s1 == s2
    assert set(one) == {"train.txt", "valid.txt", "test.txt"}
    # every reading of the same dump gives the same text
    ref, _ = _extract(dumps["xml"], tmp_path / "ref", 1, index="")
    assert one == ref
    assert s1.get("streams") == (dumps["pages"] // dumps["per_stream"]
                                 if kind == "multistream" else None)


def test_plain_bz2_without_a_parallel_decompressor(dumps, tmp_path, monkeypatch):
    piped, _ = _extract(dumps["bz2"], tmp_path / "piped", 2)
    monkeypatch.setattr(wiki_read, "BZIP2_TOOLS", ())
    assert _extract(dumps["bz2"], tmp_path / "stdlib", 1)[0] == piped


def test_sample_reads_only_the_streams_it_needs(dumps, tmp_path, monkeypatch):
    reads = []
    real = wiki_read.read_stream

    def counting(path, offset, length):
        reads.append(offset)
        return real(path, offset, length)
    monkeypatch.setattr(wiki_read, "read_stream", counting)
    from qrnn_lm.corpus import wiki_pipeline
    monkeypatch.setattr(wiki_pipeline, "read_stream", counting)
    out, stats = _extract(dumps["multistream"], tmp_path / "s", 1, sample=9)
    # main-namespace pages of the index, every 9th: pages 1, 12, 23, ...
    main = [i for i in range(1, dumps["pages"] + 1) if not (i % 5 != 3 and i % 7 == 4)
            and not (i % 5 != 3 and i % 7 != 4 and i % 11 == 6)]
    sampled = main[::9]
    streams = sorted({(i - 1) // dumps["per_stream"] for i in sampled})
    assert stats["streams"] == len(streams) < dumps["pages"] // dumps["per_stream"]
    assert len(reads) == len(streams) + 1   # + the header, for the namespace names
    articles = [i for i in sampled if i % 5 != 3]   # the redirects among them are skipped
    assert stats["articles"] == len(articles)
    text = b"".join(out.values()).decode("utf-8")
    for i in articles:
        assert f"関係は{i}年から" in text
    _, stats2 = _extract(dumps["multistream"], tmp_path / "s2", 2, sample=9)
    assert stats2 == stats


def test_multistream_index_errors(dumps, tmp_path):
    bad = tmp_path / "bad-index.txt"
    bad.write_text("0:1\n", encoding="utf-8")
    with pytest.raises(C.QrnnLmError, match="not a multistream index"):
        C.extract_wiki_dump(dumps["multistream"], str(tmp_path / "o"), index=str(bad))
    wrong = tmp_path / "wrong-index.txt"
    wrong.write_text("7:1:東京1\n", encoding="utf-8")
    with pytest.raises(C.QrnnLmError, match=r"the bz2 stream at byte \d+ is truncated"):
        C.extract_wiki_dump(dumps["multistream"], str(tmp_path / "o2"), index=str(wrong))
    with pytest.raises(C.QrnnLmError, match="--wiki-index needs --wiki-dump"):
        C.source_from_flags(train="a", valid="b", wiki_index="x")
    src = C.source_from_flags(wiki_dump=dumps["multistream"])
    assert src.inputs == {"--wiki-dump": dumps["multistream"], "--wiki-index": dumps["index"]}


@pytest.mark.parametrize("tokenizer", ["mecab", "char"])
def test_one_pass_prepare_equals_two_passes(dumps, tmp_path, tokenizer):
    settings = dict(tokenizer=tokenizer, vocab_size=40, rare="pos")
    for workers in (1, 2):
        prepare(C.WikiDump(dumps["multistream"], heldout=0.1), str(tmp_path / f"w{workers}"),
                workers=workers, **settings)
    corpus = tmp_path / "w1" / "corpus"
    prepare(C.TextFiles(str(corpus / "train.txt"), str(corpus / "valid.txt"),
                        str(corpus / "test.txt")), str(tmp_path / "two"), **settings)
    a, b, c = (_files(tmp_path / d) for d in ("w1", "w2", "two"))
    for files in (a, b, c):   # meta.json names the source file
        for name in [n for n in files if n.endswith("meta.json")]:
            meta = json.loads(files[name])
            assert meta.pop("source").endswith(name.replace(".meta.json", ".txt"))
            files[name] = meta
    assert a == b
    assert sorted(set(a) - set(c)) == ["corpus/test.txt", "corpus/train.txt", "corpus/valid.txt"]
    assert {n: a[n] for n in c} == c


def _group_alive(pgid: int) -> list:
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(pid))
    return alive


def test_interrupted_parallel_prepare_leaves_out_and_no_worker(tmp_path):
    d = write_dumps(tmp_path, pages=3000, per_stream=50)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("the old dataset", encoding="utf-8")
    before = _files(out)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrnn_lm", "prepare", "--wiki-dump", d["bz2"], "--out", str(out),
         "--force", "--workers", "2", "--tokenizer", "char", "--rare", "pos",
         "--vocab-size", "50"], cwd=str(tmp_path), env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    first = None
    while time.time() < deadline and proc.poll() is None and first is None:
        for name in os.listdir(tmp_path):
            train = tmp_path / name / "corpus" / "train.txt"
            if name.startswith(".out.prepare-") and train.exists() and train.stat().st_size:
                first = train
        time.sleep(0.05)
    assert first is not None and proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    time.sleep(0.5)
    assert _group_alive(proc.pid) == []
    assert _files(out) == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".out.")] == []


@pytest.mark.parametrize("tools", [("lbzip2", "pbzip2"), ()])
def test_truncated_bz2_dump_is_one_sentence(dumps, tmp_path, monkeypatch, tools):
    monkeypatch.setattr(wiki_read, "BZIP2_TOOLS", tools)
    data = open(dumps["bz2"], "rb").read()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(C.QrnnLmError, match="truncated or damaged|is the download complete"):
        C.extract_wiki_dump(str(cut), str(tmp_path / "o"), workers=2)
