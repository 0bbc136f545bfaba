"""A dataset's parts belong together (issue 19, section 3), tested piece by
piece in process: the vocab_sha256 identity prepare records and load_data
checks, the checkpoint's record of it, prepare's lock on --out, --force and
runs, impossible metadata and the vector flags."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_sentence_error, prepare_dataset, write_corpus
from qrnn_lm import prepare
from qrnn_lm.checkpoint import check_same_dataset, dataset_identity
from qrnn_lm.data import check_dataset_identity, load_split
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.prepare_lock import out_lock


@pytest.fixture()
def ds(char_data, tmp_path):
    """A private copy of the tiny prepared dataset."""
    d = str(tmp_path / "data")
    shutil.copytree(char_data, d)
    return d


def _splits(d):
    return {n: load_split(d, n) for n in ("train", "valid", "test")}


def _edit_meta(d, split, **changes):
    path = os.path.join(d, f"{split}.meta.json")
    meta = json.load(open(path, encoding="utf-8"))
    meta.update(changes)
    for k, v in changes.items():
        if v is None:
            del meta[k]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f)


# ---------------------------------------------------------------------------
# the identity: recorded by prepare, checked on load, kept in checkpoints
# ---------------------------------------------------------------------------
def test_every_split_records_the_hash_of_vocab_json(ds):
    digest = hashlib.sha256(open(os.path.join(ds, "vocab.json"), "rb").read()).hexdigest()
    for split in ("train", "valid", "test"):
        assert json.load(open(os.path.join(ds, f"{split}.meta.json")))["vocab_sha256"] == digest
    assert check_dataset_identity(ds, _splits(ds), _vocab_size(ds)) == digest


def _vocab_size(d):
    from qrnn_lm.vocab import Vocabulary
    return len(Vocabulary.load(d))


def test_a_changed_vocab_json_does_not_belong(ds):
    with open(os.path.join(ds, "vocab.json"), "ab") as f:
        f.write(b"\n")
    with pytest.raises(QrnnLmError, match=r"vocab.json does not belong to .*train\.\*: its hash differs"):
        check_dataset_identity(ds, _splits(ds), _vocab_size(ds))


def test_a_dataset_prepared_before_the_hash_still_loads(ds):
    for split in ("train", "valid", "test"):
        _edit_meta(ds, split, vocab_sha256=None)
    assert check_dataset_identity(ds, _splits(ds), _vocab_size(ds)) is None


def test_one_split_without_the_hash_among_others_is_refused(ds):
    _edit_meta(ds, "valid", vocab_sha256=None)
    with pytest.raises(QrnnLmError, match="valid.meta.json records no vocabulary hash"):
        check_dataset_identity(ds, _splits(ds), _vocab_size(ds))


def test_another_vocabulary_size_is_refused_also_without_the_hash(ds):
    _edit_meta(ds, "test", vocab_sha256=None, vocab_size=999)
    with pytest.raises(QrnnLmError, match="999"):
        check_dataset_identity(ds, _splits(ds), _vocab_size(ds))


def test_the_checkpoint_check_accepts_old_checkpoints_and_refuses_another_dataset():
    class V:
        dataset_identity = "a" * 64
    assert dataset_identity(V()) == {"vocab_sha256": "a" * 64}
    check_same_dataset({"path": "x.pt"}, V(), "DIR")                                  # written before: no key
    check_same_dataset({"path": "x.pt", "dataset": None}, V(), "DIR")                 # from an old dataset
    check_same_dataset({"path": "x.pt", "dataset": {"vocab_sha256": "a" * 64}}, V(), "DIR")
    with pytest.raises(QrnnLmError, match="another dataset than DIR"):
        check_same_dataset({"path": "x.pt", "dataset": {"vocab_sha256": "b" * 64}}, V(), "DIR")


# ---------------------------------------------------------------------------
# impossible metadata
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("changes,needle", [({"lines": 2.5}, "lines"), ({"tokens": True}, "token"),
                                            ({"characters": 0}, "characters"), ({"unseen_tokens": -1}, "unseen"),
                                            ({"bucket_tokens": 10 ** 9}, "buckets")])
def test_impossible_counts_are_refused(ds, changes, needle):
    _edit_meta(ds, "valid", **changes)
    with pytest.raises(QrnnLmError, match=needle):
        load_split(ds, "valid")


@pytest.mark.parametrize("value", [np.inf, -np.inf, 0.5])
def test_rare_logp_that_is_no_log_probability_is_refused(ds, value):
    path = os.path.join(ds, "test.rare_logp.npy")
    logp = np.load(path)
    logp[-1] = value
    np.save(path, logp)
    with pytest.raises(QrnnLmError, match=f"test.rare_logp.npy holds .* at position {len(logp) - 1}"):
        load_split(ds, "test")


# ---------------------------------------------------------------------------
# prepare: the lock on --out, --force and runs, vector flags
# ---------------------------------------------------------------------------
def _argv(paths, out, *extra):
    return ["--train", paths["train"], "--valid", paths["valid"], "--out", out, "--tokenizer", "char",
            "--vocab-size", "8", "--rare", "unk", "--quiet", *extra]


def _write_lock(out, pid, host=None):
    with open(out + ".lock", "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"}, f)


def test_a_live_prepare_holds_out(tmp_path, capsys):
    paths = write_corpus(str(tmp_path))
    out = str(tmp_path / "ds")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(out, other.pid)
        rc = prepare.main(_argv(paths, out))
        assert_one_sentence_error(rc, capsys.readouterr().err, f"--out {out} is being prepared by process "
                                                               f"{other.pid}", "delete")
        assert not os.path.exists(out)
    finally:
        other.kill()
        other.wait()
    _write_lock(out, other.pid)           # now a dead process's: taken over, then released
    assert prepare.main(_argv(paths, out)) == 0
    assert os.path.isfile(os.path.join(out, "vocab.json"))
    assert sorted(os.listdir(tmp_path)) == ["ds", "test.txt", "train.txt", "valid.txt"]


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    out = str(tmp_path / "ds")
    _write_lock(out, 1, host="elsewhere.invalid")
    with pytest.raises(QrnnLmError, match="process 1 on elsewhere.invalid"):
        with out_lock(out):
            pass
    os.remove(out + ".lock")
    with out_lock(out) as lock:
        assert json.load(open(lock))["pid"] == os.getpid()
    assert not os.path.exists(lock)


def test_force_refuses_a_run_deep_inside_out_and_keeps_it(tmp_path, capsys):
    paths = write_corpus(str(tmp_path))
    out = prepare_dataset(str(tmp_path / "src"))
    os.makedirs(os.path.join(out, "runs", "a"))
    open(os.path.join(out, "runs", "a", "metrics.jsonl"), "w").close()
    rc = prepare.main(_argv(paths, out, "--force"))
    assert_one_sentence_error(rc, capsys.readouterr().err, "--force would delete the run in",
                              os.path.join("runs", "a"), "metrics.jsonl")
    assert os.path.isfile(os.path.join(out, "runs", "a", "metrics.jsonl"))


@pytest.mark.parametrize("flag,value", [("--window", "0"), ("--window", "-1"), ("--context-words", "0"),
                                        ("--vector-dim", "0"), ("--buckets", "-3")])
def test_out_of_range_vector_flags_before_any_work(tmp_path, capsys, flag, value):
    paths = write_corpus(str(tmp_path))
    out = str(tmp_path / "ds")
    rc = prepare.main(_argv(paths, out, "--rare", "kmeans", "--buckets", "2", flag, value))
    assert_one_sentence_error(rc, capsys.readouterr().err, flag)
    assert not os.path.exists(out) and not os.path.exists(out + ".lock")
