"""`python -m qrnn_lm prepare`: file layout, tokenizers, CLI errors."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from qrnn_lm import corpus as C
from qrnn_lm.prepare import main, prepare
from qrnn_lm.vocab import Vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXT = ["吾輩は猫である。名前はまだ無い。",
        "どこで生れたかとんと見当がつかぬ。",
        "何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。",
        "Debian は自由なオペレーティングシステムです。",
        "パッケージを apt でインストールします。"]


@pytest.fixture()
def files(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("\n".join(TEXT * 6) + "\n", encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("吾輩は犬である。\n\nＡＰＴで新しいパッケージを入れる。\n", encoding="utf-8")
    return str(train), str(valid)


def _check_layout(out, vocab, splits):
    for s in splits:
        ids = np.load(os.path.join(out, f"{s}.ids.npy"), mmap_mode="r")
        lp = np.load(os.path.join(out, f"{s}.rare_logp.npy"), mmap_mode="r")
        meta = json.load(open(os.path.join(out, f"{s}.meta.json"), encoding="utf-8"))
        assert ids.dtype == np.int32 and lp.dtype == np.float32 and ids.shape == lp.shape
        assert meta["tokens"] == len(ids)
        assert int((ids == vocab.eos_id).sum()) == meta["lines"] and ids[-1] == vocab.eos_id
        assert ((lp == 0) | np.array([vocab.is_bucket(i) for i in ids])).all()
        assert (lp <= 0).all() and np.isfinite(lp).all()


@pytest.mark.parametrize("tokenizer", ["char", "mecab", "sentencepiece"])
def test_prepare_layout_and_detokenization(files, tmp_path, tokenizer):
    train, valid = files
    out = str(tmp_path / tokenizer)
    size = {"char": 40, "mecab": 30, "sentencepiece": 400}[tokenizer]
    v = prepare(train, valid, None, out, tokenizer=tokenizer, vocab_size=size, rare="pos")
    _check_layout(out, v, ["train", "valid"])
    meta = json.load(open(os.path.join(out, "valid.meta.json"), encoding="utf-8"))
    # characters: normalised text (NFKC: ＡＰＴ -> APT), plus one per line end
    assert meta["lines"] == 2
    assert meta["characters"] == len("吾輩は犬である。") + len("APTで新しいパッケージを入れる。") + 2
    w = Vocabulary.load(out)
    if tokenizer == "sentencepiece":
        assert os.path.exists(os.path.join(out, "sentencepiece.model"))
    for line in TEXT:  # detokenize(tokenize(x)) == x, spaces included
        toks = [s for s, _ in w.tokenizer.tokenize(line)]
        assert w.decode(toks) == line
    if tokenizer == "char":
        assert len(w) == 40 + len(w.buckets) + 1
        assert all(len(t) == 1 for t in w.word_to_id)


def test_sentencepiece_all_pieces_are_outputs(files, tmp_path):
    train, valid = files
    v = prepare(train, valid, None, str(tmp_path / "sp"), tokenizer="sentencepiece",
                vocab_size=400, rare="unk")
    sp = v.tokenizer._sp
    # every piece, byte-fallback pieces never seen in training included
    assert len(v.word_to_id) == sp.get_piece_size() - 3 and "<0xE9>" in v.word_to_id
    assert not {"<s>", "</s>", "<unk>"} & set(v.word_to_id)
    ids, lp = v.encode("未知の文字: 鬱")  # bytes, not a bucket
    assert not any(v.is_bucket(i) for i in ids) and (lp == 0).all()


def test_sentencepiece_vocab_too_small(files, tmp_path):
    train, valid = files
    with pytest.raises(C.QrnnLmError, match="too small for sentencepiece.*at least"):
        prepare(train, valid, None, str(tmp_path / "sp"), tokenizer="sentencepiece",
                vocab_size=100)


def test_cli_errors_are_one_sentence(files, tmp_path, capsys):
    train, valid = files
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(1000) + b"\0")
    cases = [
        (["--train", str(empty), "--valid", valid], "contains no text"),
        (["--train", str(garbage), "--valid", valid], "binary"),
        (["--train", train, "--valid", valid, "--rare", "kmeans"], "needs --buckets"),
        (["--train", train], "needs --valid"),
        (["--train", train, "--valid", valid, "--wiki-dump", train], "exactly one"),
        (["--train", str(tmp_path / "nope.txt"), "--valid", valid], "does not exist"),
        (["--wiki-dump", train, "--valid", valid], "cannot be combined"),
        (["--wiki-dump", train, "--heldout", "0.5"], "--heldout must be in"),
        (["--wiki-dump", str(tmp_path / "nope.xml")], "--wiki-dump file"),
        (["--train", train, "--valid", valid, "--max-line-chars", "8"], "--max-line-chars"),
    ]
    for argv, msg in cases:
        rc = main(argv + ["--out", str(tmp_path / "o"), "--quiet", "--tokenizer", "char"])
        err = capsys.readouterr().err
        assert rc == 1, argv
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err
        assert "Traceback" not in err


def test_cli_debian_ja_missing(tmp_path, capsys, monkeypatch):
    from qrnn_lm.corpus import debian_ja
    monkeypatch.setattr(debian_ja, "debian_ja_files",
                        lambda root="/": ({}, list(C.DEBIAN_JA_PACKAGES)))
    assert main(["--corpus", "debian-ja", "--out", str(tmp_path / "d"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install manpages-ja" in err and err.count("\n") == 1


def test_cli_wiki_dump(tmp_path, capsys):
    from tests.test_corpus import WIKI
    dump = tmp_path / "dump.xml"
    dump.write_text(WIKI, encoding="utf-8")
    out = tmp_path / "w"
    rc = main(["--wiki-dump", str(dump), "--sample", "1", "--out", str(out), "--tokenizer",
               "char", "--vocab-size", "10", "--rare", "pos", "--quiet", "--heldout", "0"])
    assert rc == 0, capsys.readouterr().err
    v = Vocabulary.load(str(out))
    meta = json.load(open(out / "train.meta.json", encoding="utf-8"))
    text = (out / "corpus" / "train.txt").read_text(encoding="utf-8")
    assert meta["characters"] == len(text)  # "\n" per line == one per line end
    assert meta["tokens"] == len(text)      # char tokenizer: a token per character and </s>
    assert len(v) == 10 + len(v.buckets) + 1


def test_invalid_utf8_counted_in_meta(files, tmp_path):
    train, valid = files
    bad = tmp_path / "bad.txt"
    bad.write_bytes(open(valid, "rb").read() + b"\xff\xfe\n")
    with pytest.warns(UserWarning, match="2 invalid UTF-8"):
        prepare(train, str(bad), None, str(tmp_path / "u"), tokenizer="char", vocab_size=50)
    meta = json.load(open(tmp_path / "u" / "valid.meta.json", encoding="utf-8"))
    assert meta["invalid_utf8"] == 2 and meta["lines"] == 3


def test_bpc_of_a_unigram_model_is_finite_and_exact(files, tmp_path):
    """A unigram LM over output ids + rare_logp gives a finite bpc whose parts
    add up the way DESIGN.md section 3 says."""
    train, valid = files
    out = tmp_path / "b"
    v = prepare(train, valid, None, str(out), tokenizer="mecab", vocab_size=10, rare="pos")
    counts = v.counts + 1.0
    logp = np.log(counts / counts.sum())
    ids = np.load(out / "valid.ids.npy")
    lp = np.load(out / "valid.rare_logp.npy")
    meta = json.load(open(out / "valid.meta.json", encoding="utf-8"))
    bpc = (-logp[ids].sum() - lp.sum()) / (meta["characters"] * math.log(2))
    assert math.isfinite(bpc) and bpc > 0
    # the same through encode()
    total = 0.0
    for line in ["吾輩は犬である。", "APTで新しいパッケージを入れる。"]:
        i, l = v.encode(line)
        total += -(logp[i].sum() + l.sum()) - logp[v.eos_id]
    assert total / (meta["characters"] * math.log(2)) == pytest.approx(bpc, rel=1e-5)


def test_python_m_entry_point(files, tmp_path):
    train, valid = files
    r = subprocess.run([sys.executable, "-m", "qrnn_lm", "prepare", "--train", train,
                        "--valid", valid, "--out", str(tmp_path / "m"), "--tokenizer", "char",
                        "--vocab-size", "5", "--buckets", "2", "--rare", "kmeans"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "vocabulary:" in r.stderr and (tmp_path / "m" / "vocab.json").exists()


def test_char_buckets_by_script(files, tmp_path):
    train, valid = files
    v = prepare(train, valid, None, str(tmp_path / "c"), tokenizer="char", vocab_size=20,
                rare="pos", pos_depth=2)
    names = {v.id_to_token(v.rare_words[c][0]) for c in "吾輩猫"}
    assert names == {"<unk-Lo-CJK>"}
    assert v.id_to_token(v.rare_words["ニ"][0]) == "<unk-Lo-KATAKANA>"
    # an unseen kanji goes to the kanji bucket, a single character has finite logp
    ids, lp = v.encode("鬱")
    assert v.id_to_token(ids[0]) == "<unk-Lo-CJK>" and np.isfinite(lp[0])


def test_prepare_takes_any_source(files, tmp_path):
    """prepare(source, out) writes what prepare(train, valid, test, out) does."""
    train, valid = files
    settings = dict(tokenizer="char", vocab_size=20, rare="pos")
    prepare(train, valid, None, str(tmp_path / "a"), **settings)
    prepare(C.TextFiles(train, valid), str(tmp_path / "b"), **settings)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) and "valid.ids.npy" in names
    for name in names:
        a, b = (open(tmp_path / d / name, "rb").read() for d in "ab")
        assert a == b, name
    from tests.test_corpus import WIKI
    dump = tmp_path / "dump.xml"
    dump.write_text(WIKI, encoding="utf-8")
    v = prepare(C.make_source("wiki", path=str(dump), heldout=0), str(tmp_path / "w"), **settings)
    assert v.directory == str(tmp_path / "w")
    text = (tmp_path / "w" / "corpus" / "train.txt").read_text(encoding="utf-8")
    assert "二番目の記事です。" in text and not (tmp_path / "w" / "valid.ids.npy").exists()
    with pytest.raises(TypeError):
        prepare(C.TextFiles(train, valid), str(tmp_path / "c"), None, **settings)


def test_settings_checked_once_before_any_work(files, tmp_path, monkeypatch):
    from qrnn_lm import prepare as P
    train, valid = files
    calls = []
    real = P.check_settings
    monkeypatch.setattr(P, "check_settings", lambda *a: calls.append(a) or real(*a))
    assert main(["--train", train, "--valid", valid, "--out", str(tmp_path / "o"), "--quiet",
                 "--tokenizer", "char", "--vocab-size", "20"]) == 0
    assert len(calls) == 1
    with pytest.raises(C.QrnnLmError, match="needs --buckets"):
        prepare(train, valid, None, str(tmp_path / "p"), tokenizer="char", rare="kmeans")
    assert len(calls) == 2 and not (tmp_path / "p").exists()
