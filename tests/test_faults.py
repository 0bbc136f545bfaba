"""Hostile but realistic use: every failure is one sentence and a non-zero
exit, nothing a user saved is lost or mixed up, and odd but valid input works."""
import builtins
import errno
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from qrnn_lm import prepare as P
from qrnn_lm import corpus as C
from qrnn_lm.cli import evaluate_main, generate_main
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.train import main as train_main
from conftest import TINY, assert_one_sentence_error, write_corpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prep(paths, out, *extra):
    argv = ["--train", paths["train"], "--valid", paths["valid"], "--out", str(out),
            "--tokenizer", "char", "--vocab-size", "16", "--rare", "unk", "--quiet", *extra]
    return P.main(argv)


def snapshot(directory):
    """{relative path: bytes} of every file under ``directory``."""
    out = {}
    for dirpath, _, files in os.walk(directory):
        for name in files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, directory)] = open(p, "rb").read()
    return out


def leftovers(parent):
    """Temporary files or directories a prepare left in ``parent`` (recursively)."""
    found = []
    for dirpath, dirs, files in os.walk(parent):
        found += [os.path.join(dirpath, n) for n in dirs + files
                  if ".tmp" in n or ".prepare-" in n]
    return found


@pytest.fixture()
def corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return write_corpus(str(src))


@pytest.fixture(scope="module")
def run_dir(char_data, tmp_path_factory):  # noqa: F811
    run = str(tmp_path_factory.mktemp("faults") / "run")
    assert train_main(["--data", char_data, "--save", run, *TINY, "--max-steps", "4",
                       "--eval-interval", "4"]) == 0
    return run


# ---------------------------------------------------------------------------
# A4: prepare --out over an existing dataset
# ---------------------------------------------------------------------------
def test_prepare_refuses_a_non_empty_out_and_force_replaces_it_whole(corpus, tmp_path, capsys):
    out = tmp_path / "ds"
    assert prep(corpus, out, "--test", corpus["test"]) == 0
    before = snapshot(out)
    assert "test.ids.npy" in before
    capsys.readouterr()
    rc = prep(corpus, out, "--vocab-size", "8")
    assert_one_sentence_error(rc, capsys.readouterr().err, str(out), "--force")
    assert snapshot(out) == before
    # --force replaces the directory whole: no stale test split beside the new vocabulary
    assert prep(corpus, out, "--vocab-size", "8", "--force") == 0
    after = snapshot(out)
    assert not any(name.startswith("test.") for name in after)
    assert after["vocab.json"] != before["vocab.json"]
    assert leftovers(tmp_path) == []
    # an empty directory is fine without --force
    (tmp_path / "empty").mkdir()
    assert prep(corpus, tmp_path / "empty") == 0


def test_a_failed_forced_prepare_leaves_the_old_dataset(corpus, tmp_path, capsys):
    out = tmp_path / "ds"
    assert prep(corpus, out) == 0
    before = snapshot(out)
    bad = tmp_path / "bin.txt"
    bad.write_bytes(bytes(range(256)) * 64)
    capsys.readouterr()
    rc = P.main(["--train", corpus["train"], "--valid", str(bad), "--out", str(out), "--force",
                 "--tokenizer", "char", "--vocab-size", "16", "--rare", "unk", "--quiet"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "binary")
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_force_never_deletes_its_own_input(corpus, tmp_path, capsys):
    out = tmp_path / "ds"
    assert prep(corpus, out) == 0
    inside = out / "train.txt"
    shutil.copy(corpus["train"], inside)
    capsys.readouterr()
    rc = P.main(["--train", str(inside), "--valid", corpus["valid"], "--out", str(out), "--force",
                 "--tokenizer", "char", "--quiet"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "--train", "inside")
    assert inside.exists()


# ---------------------------------------------------------------------------
# B6: a prepared dataset is all or nothing
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["valid.rare_logp.npy", "valid.meta.json", "valid.ids.npy",
                                  "test.rare_logp.npy", "train.meta.json"])
def test_a_missing_dataset_part_is_an_error(char_data, tmp_path, capsys, part):  # noqa: F811
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    os.remove(data / part)
    rc = train_main(["--data", str(data), "--save", str(tmp_path / "run"), *TINY, "--max-steps", "2"])
    assert_one_sentence_error(rc, capsys.readouterr().err, part)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_meta_file_that_disagrees_is_an_error(char_data, tmp_path, capsys):  # noqa: F811
    from qrnn_lm.data import load_split
    data = tmp_path / "data"
    shutil.copytree(char_data, data)
    meta = json.loads((data / "valid.meta.json").read_text(encoding="utf-8"))
    (data / "valid.meta.json").write_text(json.dumps(dict(meta, tokens=meta["tokens"] + 1)))
    with pytest.raises(QrnnLmError, match="valid.meta.json"):
        load_split(str(data), "valid")
    (data / "valid.meta.json").write_text("{}")
    with pytest.raises(QrnnLmError, match="valid.meta.json"):
        load_split(str(data), "valid")


# ---------------------------------------------------------------------------
# B7 / C15 / D18: evaluate --file is read as prepare reads a corpus
# ---------------------------------------------------------------------------
def _evaluate(run_dir, path, capsys):
    rc = evaluate_main(["--checkpoint", run_dir, "--file", str(path), "--batch-size", "2"])
    io = capsys.readouterr()
    return rc, (json.loads(io.out) if rc == 0 else None), io.err


def test_evaluate_reads_compressed_and_utf16_text_and_refuses_binary(run_dir, corpus, tmp_path, capsys):
    text = open(corpus["test"], encoding="utf-8").read()
    rc, plain, _ = _evaluate(run_dir, corpus["test"], capsys)
    assert rc == 0
    gz = tmp_path / "test.txt.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8")))
    for path in (gz, tmp_path / "test.utf16.txt", tmp_path / "test.bom.txt"):
        if path.name == "test.utf16.txt":
            path.write_text(text, encoding="utf-16")
        elif path.name == "test.bom.txt":
            path.write_text(text, encoding="utf-8-sig")
        rc, res, err = _evaluate(run_dir, path, capsys)
        assert rc == 0, err
        assert (res["tokens"], res["characters"]) == (plain["tokens"], plain["characters"])
        assert res["bpc"] == pytest.approx(plain["bpc"], rel=1e-12)
    binary = tmp_path / "prog"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 30)
    rc, _, err = _evaluate(run_dir, binary, capsys)
    assert_one_sentence_error(rc, err, "binary")
    rc, _, err = _evaluate(run_dir, tmp_path, capsys)
    assert_one_sentence_error(rc, err, "is a directory")


# ---------------------------------------------------------------------------
# B8: the references never read padding
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_references_ignore_nan_in_padding(fused, reverse):
    from qrnn_lm import ops
    torch.manual_seed(0)
    T, B, H = 7, 4, 5
    lengths = torch.tensor([7, 3, 0, 5])
    pad = torch.arange(T)[:, None] >= lengths[None, :]          # (T, B)
    if fused:
        inputs = [torch.randn(T, B, 3 * H, dtype=torch.float64)]
        fn, kernel = ops.fo_pool_fused_reference, ops.fo_pool_fused
    else:
        inputs = [torch.rand(T, B, H, dtype=torch.float64), torch.randn(T, B, H, dtype=torch.float64)]
        fn, kernel = ops.fo_pool_reference, ops.fo_pool
    clean = [x.clone() for x in inputs]
    for x, v in zip(inputs, (float("nan"), float("inf"))):
        x[pad] = v

    def run(f, xs):
        xs = [x.clone().requires_grad_() for x in xs]
        c0 = torch.randn(B, H, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                         requires_grad=True)
        out, c_n = f(*xs, c0, lengths, reverse=reverse)
        (out * torch.linspace(0.5, 1.5, H, dtype=torch.float64)).sum().backward(retain_graph=True)
        c_n.sum().backward()
        return [out.detach(), c_n.detach()] + [x.grad for x in xs] + [c0.grad]

    got = run(fn, inputs)
    want = run(fn, clean)
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        assert torch.equal(g, w)
    assert (got[0][pad] == 0).all()
    for grad in got[2:-1]:
        assert (grad[pad] == 0).all()
    if "cpu" in ops.compiled_devices():
        for g, k in zip(got, run(kernel, inputs)):
            torch.testing.assert_close(g, k)


# ---------------------------------------------------------------------------
# C9: a full disk in prepare
# ---------------------------------------------------------------------------
class _FullDisk:
    """``open`` whose files opened for writing fail with ENOSPC, from the
    ``fail_at``-th such file on (after ``after`` bytes of it)."""

    def __init__(self, fail_at, after=0):
        self.fail_at, self.after, self.opened, self.failed = fail_at, after, 0, False
        self.real = builtins.open

    def __call__(self, file, mode="r", *a, **k):
        f = self.real(file, mode, *a, **k)
        if not any(m in mode for m in "wax+"):
            return f
        self.opened += 1
        if self.opened - 1 < self.fail_at:
            return f
        owner, budget = self, [self.after]

        class Full:
            def __init__(self, inner):
                self._inner = inner

            def write(self, data):
                if len(data) > budget[0]:
                    owner.failed = True
                    raise OSError(errno.ENOSPC, "No space left on device")
                budget[0] -= len(data)
                return self._inner.write(data)

            def __getattr__(self, name):
                return getattr(self._inner, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._inner.close()

        return Full(f)


@pytest.mark.parametrize("fail_at", [0, 1, 2, 3, 5, 7])
def test_disk_full_in_prepare(corpus, tmp_path, capsys, monkeypatch, fail_at):
    out = tmp_path / "ds"
    assert prep(corpus, out) == 0
    before = snapshot(out)
    full = _FullDisk(fail_at, after=100)
    from qrnn_lm import rawfile
    for module in (P, rawfile):   # prepare's files, and the raw id streams it writes through rawfile
        monkeypatch.setattr(module, "open", full, raising=False)
    capsys.readouterr()
    rc = prep(corpus, out, "--force", "--vocab-size", "8")
    monkeypatch.undo()
    assert full.failed
    err = capsys.readouterr().err
    assert_one_sentence_error(rc, err, "disk is full", str(out))
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# C10: truncated or corrupt .gz corpora
# ---------------------------------------------------------------------------
def _damaged_gz(tmp_path, corpus):
    text = open(corpus["train"], encoding="utf-8").read() * 20
    data = gzip.compress(text.encode("utf-8"))
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(data[:len(data) // 2])
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 40):
        flipped[i] ^= 0x5A
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(bytes(flipped))
    notgz = tmp_path / "plain.txt.gz"
    notgz.write_bytes(b"not gzip at all\n" * 10)
    return [cut, bad, notgz]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_damaged_gz_corpus_in_prepare(corpus, tmp_path, capsys, workers):
    import multiprocessing
    for path in _damaged_gz(tmp_path, corpus):
        rc = P.main(["--train", str(path), "--valid", corpus["valid"], "--out", str(tmp_path / "o"),
                     "--tokenizer", "char", "--quiet", "--workers", workers])
        assert_one_sentence_error(rc, capsys.readouterr().err, str(path))
        assert not (tmp_path / "o").exists()
    assert leftovers(tmp_path) == []
    assert not multiprocessing.active_children()   # the tokenizer pool is gone


def test_damaged_gz_corpus_in_train(corpus, tmp_path, capsys):
    cut = _damaged_gz(tmp_path, corpus)[0]
    cache = tmp_path / "cache"
    rc = train_main(["--train", str(cut), "--valid", corpus["valid"], "--tokenizer", "char",
                     "--cache-dir", str(cache), "--save", str(tmp_path / "run"), *TINY, "--max-steps", "2"])
    assert_one_sentence_error(rc, capsys.readouterr().err, str(cut), "truncated")
    assert not cache.exists() or not [n for n in os.listdir(cache) if n.startswith(("prepared-", "."))]


# ---------------------------------------------------------------------------
# C11: --out that is a file, under a file, or not writable
# ---------------------------------------------------------------------------
def test_out_that_cannot_be_a_directory(corpus, tmp_path, capsys, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    for out, needle in ((f, "is a file"), (f / "sub", "is a file")):
        rc = prep(corpus, out)
        assert_one_sentence_error(rc, capsys.readouterr().err, str(out))
    assert f.read_text() == "x"
    real_mkdir = os.mkdir

    def read_only(path, *a, **k):
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", read_only)
    rc = prep(corpus, tmp_path / "ro" / "ds")
    monkeypatch.undo()
    assert_one_sentence_error(rc, capsys.readouterr().err, "read-only")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not apply to root")
def test_out_in_a_read_only_directory(corpus, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = prep(corpus, ro / "ds")
        assert_one_sentence_error(rc, capsys.readouterr().err, "permission denied")
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------------------
# C12: non-finite or negative sampling settings
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--temperature", "nan"), ("--temperature", "inf"),
                                        ("--temperature", "-1"), ("--top-p", "nan"),
                                        ("--top-k", "-3"), ("--max-tokens", "-5")])
def test_bad_sampling_settings(run_dir, capsys, flag, value):
    rc = generate_main(["--checkpoint", run_dir, "--max-tokens", "5", flag, value])
    assert_one_sentence_error(rc, capsys.readouterr().err, flag)


def test_generate_temperature_nan_in_python(run_dir):
    from qrnn_lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir)
    with pytest.raises(QrnnLmError, match="--temperature"):
        lm.generate("猫", max_tokens=3, temperature=float("nan"))


# ---------------------------------------------------------------------------
# C15: UTF-16/32 and UTF-8 with a byte-order mark
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-be"])
def test_utf16_32_and_bom_text_is_decoded(tmp_path, encoding):
    text = "吾輩は猫である。\nDebian は自由な OS です。\r\n\nABC １２３\n"
    want = list(C.read_text(_write(tmp_path / "u8.txt", text, "utf-8")))
    path = _write(tmp_path / f"{encoding}.txt", text, encoding)
    assert list(C.read_text(path)) == want
    gz = tmp_path / f"{encoding}.txt.gz"
    gz.write_bytes(gzip.compress(text.encode(encoding)))
    assert list(C.read_text(str(gz))) == want


def test_prepare_reads_a_utf16_corpus(corpus, tmp_path):
    u16 = {s: _write(tmp_path / f"{s}16.txt", open(p, encoding="utf-8").read(), "utf-16")
           for s, p in corpus.items()}
    assert prep(corpus, tmp_path / "a") == 0
    assert prep(u16, tmp_path / "b") == 0
    for name in ("train.ids.npy", "valid.ids.npy", "vocab.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _write(path, text, encoding):
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return str(path)


# ---------------------------------------------------------------------------
# D16: what a killed or failed prepare left is cleaned on the next start
# ---------------------------------------------------------------------------
def test_orphans_of_earlier_prepares_are_removed(corpus, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "test.ids.npy.tmp").write_bytes(b"\0" * 100)
    (out / "train.rare_logp.npy.tmp").write_bytes(b"\0" * 100)
    dead = 2 ** 22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    stale = tmp_path / f".other{P._STAGE_TAG}{socket.gethostname()}-{dead}-abc"
    stale.mkdir()
    (stale / "train.ids.npy.tmp").write_bytes(b"\0" * 10)
    live = tmp_path / f".mine{P._STAGE_TAG}{socket.gethostname()}-{os.getpid()}-abc"
    live.mkdir()
    assert prep(corpus, out) == 0
    assert sorted(os.listdir(out)) == ["train.ids.npy", "train.meta.json", "train.rare_logp.npy",
                                       "valid.ids.npy", "valid.meta.json", "valid.rare_logp.npy",
                                       "vocab.json"]
    assert not stale.exists()
    assert live.exists()   # its process is running: not an orphan


def test_no_temp_files_after_a_failed_prepare(corpus, tmp_path, capsys):
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"ok line\n" * 10 + bytes(range(256)) * 64)
    rc = P.main(["--train", corpus["train"], "--valid", str(bad), "--out", str(tmp_path / "ds"),
                 "--tokenizer", "char", "--quiet"])
    assert_one_sentence_error(rc, capsys.readouterr().err)
    assert leftovers(tmp_path) == [] and not (tmp_path / "ds").exists()


# ---------------------------------------------------------------------------
# D17: generation streams; Ctrl-C keeps what was printed
# ---------------------------------------------------------------------------
def test_generate_stream_matches_generate(run_dir):
    from qrnn_lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir)
    pieces = list(lm.generate_stream("猫が", max_tokens=150, seed=4, temperature=2.0))
    assert len(pieces) > 10
    assert "".join(pieces) == lm.generate("猫が", max_tokens=150, seed=4, temperature=2.0)


class _ByteTokenizer:
    """Detokenizes like sentencepiece's byte fallback: <0xNN> pieces are
    UTF-8 bytes, a lone leading ▁ is dropped."""

    @staticmethod
    def detokenize(pieces):
        out = bytearray()
        for p in pieces:
            if p.startswith("<0x") and p.endswith(">"):
                out.append(int(p[3:-1], 16))
            else:
                out += p.replace("▁", " ").encode("utf-8")
        return out.decode("utf-8", errors="replace").removeprefix(" ")


def test_stream_decoder_equals_decode_on_long_lines_and_split_bytes():
    from qrnn_lm.lm import _StreamDecoder
    from qrnn_lm.vocab import EOS, Vocabulary

    class V:
        tokenizer = _ByteTokenizer()
        decode = Vocabulary.decode

    rng = random.Random(0)
    words = []
    for _ in range(2000):
        r = rng.random()
        if r < 0.01:
            words.append(EOS)
        elif r < 0.3:
            words += [f"<0x{b:02X}>" for b in rng.choice(["猫", "é", "𝄞", "a"]).encode("utf-8")]
        else:
            words.append(rng.choice(["▁the", "cat", "▁犬", "が", "▁"]))
    words += ["<0xE7>"]   # an unfinished byte sequence at the end
    d = _StreamDecoder(V())
    streamed = "".join(d.push(w) for w in words) + d.finish()
    assert streamed == V().decode(words)


def test_generate_streams_and_ctrl_c_keeps_the_text(run_dir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "qrnn_lm", "generate", "--checkpoint", run_dir,
                             "--prompt", "猫が", "--max-tokens", "1e9", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    got = b""
    deadline = time.time() + 120
    os.set_blocking(proc.stdout.fileno(), False)
    while len(got) < 200 and time.time() < deadline and proc.poll() is None:
        chunk = proc.stdout.read()
        if chunk:
            got += chunk
        else:
            time.sleep(0.05)
    assert len(got) >= 200, proc.stderr.read().decode()
    proc.send_signal(signal.SIGINT)
    os.set_blocking(proc.stdout.fileno(), True)
    rest, err = proc.communicate(timeout=60)
    out = (got + rest).decode("utf-8")
    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    assert out.startswith("猫が") and got.decode("utf-8", "ignore")[:50] in out


# ---------------------------------------------------------------------------
# D18: a directory as a corpus; --workers beyond the CPUs
# ---------------------------------------------------------------------------
def test_a_directory_as_corpus(corpus, tmp_path, capsys):
    d = tmp_path / "texts"
    d.mkdir()
    rc = P.main(["--train", str(d), "--valid", corpus["valid"], "--out", str(tmp_path / "o"), "--quiet"])
    assert_one_sentence_error(rc, capsys.readouterr().err, str(d), "is a directory")
    rc = train_main(["--train", str(d), "--valid", corpus["valid"], "--cache-dir", str(tmp_path / "c"),
                     "--save", str(tmp_path / "run"), *TINY])
    assert_one_sentence_error(rc, capsys.readouterr().err, str(d), "is a directory")


def test_workers_capped_at_the_cpu_count(corpus, tmp_path):
    logs = []
    P.prepare(corpus["train"], corpus["valid"], None, str(tmp_path / "o"), tokenizer="char",
              vocab_size=16, rare="unk", workers=P.usable_cpus() + 50, log=logs.append)
    assert any(f"lowered to {P.usable_cpus()}" in m for m in logs), logs


# ---------------------------------------------------------------------------
# C13: vocab.json is checked when loaded
# ---------------------------------------------------------------------------
def _edit_vocab(data, tmp_path, edit):
    out = tmp_path / "data"
    shutil.copytree(data, out)
    d = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    d = edit(d) or d
    (out / "vocab.json").write_text(json.dumps(d, ensure_ascii=False), encoding="utf-8")
    return out


def _first(d, kind):
    return next(i for i, t in enumerate(d["tokens"]) if t[2] == kind)


def _drop_eos(d):
    d["tokens"] = [t for t in d["tokens"] if t[0] != "</s>"]
    d["size"] = len(d["tokens"])


VOCAB_EDITS = {
    "a list": (lambda d: d["tokens"], "not a qrnn_lm vocabulary"),
    "no </s>": (_drop_eos, "</s>"),
    "count not an integer": (lambda d: d["tokens"][_first(d, "word")].__setitem__(1, "12"), "whole number"),
    "count a float": (lambda d: d["tokens"][_first(d, "word")].__setitem__(1, 2.5), "whole number"),
    "size edited": (lambda d: d.__setitem__("size", d["size"] + 3), "'size'"),
    "duplicate token": (lambda d: d["tokens"][_first(d, "word") + 1].__setitem__(0, d["tokens"][_first(d, "word")][0]),
                        "appears twice"),
    "rare word bucket out of range": (lambda d: next(iter(d["rare_words"].values())).__setitem__(0, 10 ** 6),
                                      "not the id of a bucket"),
    "rare word in a word's id": (lambda d: next(iter(d["rare_words"].values())).__setitem__(0, _first(d, "word")),
                                 "not the id of a bucket"),
    "default bucket out of range": (lambda d: d.__setitem__("default_bucket", -1), "default_bucket"),
    "bucket count edited": (lambda d: d["tokens"][_first(d, "bucket")].__setitem__(1, d["tokens"][_first(d, "bucket")][1] + 1),
                            "bucket"),
    "missing field": (lambda d: d.pop("rare_words") and None, "rare_words"),
}


@pytest.mark.parametrize("case", sorted(VOCAB_EDITS))
def test_malformed_vocab_json_is_one_sentence(char_data, tmp_path, case):  # noqa: F811
    from qrnn_lm.vocab import Vocabulary
    edit, needle = VOCAB_EDITS[case]
    data = _edit_vocab(char_data, tmp_path, edit)
    with pytest.raises(QrnnLmError, match=re.escape(needle)) as e:
        Vocabulary.load(str(data))
    assert str(data / "vocab.json") in str(e.value)


def test_malformed_vocab_json_in_train(char_data, tmp_path, capsys):  # noqa: F811
    data = _edit_vocab(char_data, tmp_path, VOCAB_EDITS["duplicate token"][0])
    rc = train_main(["--data", str(data), "--save", str(tmp_path / "run"), *TINY, "--max-steps", "2"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "vocab.json", "appears twice")


def test_vocab_json_saved_with_a_bom_loads(char_data, tmp_path):  # noqa: F811
    from qrnn_lm.vocab import Vocabulary
    data = _edit_vocab(char_data, tmp_path, lambda d: None)
    raw = (data / "vocab.json").read_bytes()
    (data / "vocab.json").write_bytes(b"\xef\xbb\xbf" + raw)
    assert len(Vocabulary.load(str(data))) == len(Vocabulary.load(char_data))


def test_checkpoint_with_an_edited_vocabulary(run_dir, tmp_path, capsys):
    ckpt = torch.load(os.path.join(run_dir, "best.pt"), weights_only=True)
    ckpt["vocab"]["size"] += 1
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    rc = generate_main(["--checkpoint", str(bad), "--max-tokens", "3"])
    assert_one_sentence_error(rc, capsys.readouterr().err, "'size'", str(bad))


# ---------------------------------------------------------------------------
# C14: prepare --vectors with a file that is not a qrnn_lm checkpoint
# ---------------------------------------------------------------------------
class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_vectors",))


def _bad_vectors(tmp_path, run_dir):
    out = {}
    out["random"] = tmp_path / "random.pt"
    out["random"].write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4000)))
    out["empty"] = tmp_path / "empty.pt"
    out["empty"].write_bytes(b"")
    out["object"] = tmp_path / "object.pt"
    torch.save({"model": {}, "vocab": _Exploit()}, out["object"])
    out["list"] = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], out["list"])
    out["state_dict"] = tmp_path / "state.pt"
    torch.save({"encoder.weight": torch.zeros(4, 3)}, out["state_dict"])
    raw = open(os.path.join(run_dir, "best.pt"), "rb").read()
    out["truncated"] = tmp_path / "truncated.pt"
    out["truncated"].write_bytes(raw[:len(raw) // 2])
    return out


def test_bad_vectors_checkpoint_is_one_sentence(corpus, run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, path in _bad_vectors(tmp_path, run_dir).items():
        rc = P.main(["--train", corpus["train"], "--valid", corpus["valid"], "--out", str(tmp_path / name),
                     "--tokenizer", "char", "--vocab-size", "6", "--rare", "kmeans", "--buckets", "2",
                     "--vectors", str(path), "--quiet"])
        err = capsys.readouterr().err
        assert_one_sentence_error(rc, err, str(path))
        assert "weights_only" not in err and "weights only" not in err.lower(), err
        assert not (tmp_path / name).exists()
    assert not (tmp_path / "pwned_by_vectors").exists()


def test_prepare_into_the_empty_working_directory(corpus, tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert prep(corpus, ".") == 0
    assert (here / "vocab.json").exists() and os.path.samefile(os.getcwd(), here)
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_a_parallel_prepare(tmp_path):
    """Ctrl-C reaches every process of the group: one line, no worker tracebacks,
    nothing left behind."""
    rng = random.Random(0)
    train = tmp_path / "train.txt"
    with open(train, "w", encoding="utf-8") as f:
        for _ in range(300000):
            f.write("".join(rng.choice("猫犬鳥本魚がをはにで。") for _ in range(20)) + "\n")
    valid = tmp_path / "valid.txt"
    valid.write_text("猫が本を読む。\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "qrnn_lm", "prepare", "--train", str(train),
                             "--valid", str(valid), "--out", str(tmp_path / "ds"), "--tokenizer", "char",
                             "--vocab-size", "8", "--workers", "2", "--quiet"],
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if any(os.path.getsize(p) > 0 for p in leftovers(tmp_path) if os.path.isfile(p)):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert leftovers(tmp_path) == [] and not (tmp_path / "ds").exists()


def test_ctrl_c_while_the_command_loads_is_one_line(monkeypatch, capsys):
    """Ctrl-C before a command's own handler runs (torch still importing)."""
    import importlib

    import qrnn_lm.__main__ as entry

    def interrupted(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert entry.main(["train", "--help"]) == 130
    assert capsys.readouterr().err == "interrupted.\n"
