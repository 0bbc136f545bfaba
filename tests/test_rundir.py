"""A run directory belongs to one run: resume semantics, the lock, checkpoint
writes that fail, and flags refused before training (tiny data, seconds each)."""
import errno
import hashlib
import json
import os
import socket
import subprocess
import sys

import pytest

from qrnn_lm import train as train_mod
from qrnn_lm.lm import load_checkpoint
from conftest import TINY, assert_one_sentence_error, prepare_dataset
from test_train import metrics, run_train


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def start(data, run, *extra, steps=3):
    assert train_mod.main(["--data", data, "--save", run, *TINY, "--max-steps", str(steps), *extra]) == 0


# ---------------------------------------------------------------------------
# resume semantics
# ---------------------------------------------------------------------------
def test_resume_from_elsewhere_never_overwrites_the_run_in_save(char_data, tmp_path, capsys):
    rx, rb = str(tmp_path / "rX"), str(tmp_path / "rB")
    start(char_data, rx)
    start(char_data, rb, "--emsize", "24")
    before = {n: digest(os.path.join(rx, n)) for n in ("last.pt", "best.pt")}
    capsys.readouterr()
    rc, err = run_train(["--data", char_data, *TINY, "--emsize", "24", "--max-steps", "6", "--save", rx,
                         "--resume", os.path.join(rb, "last.pt")], capsys)
    assert_one_sentence_error(rc, err, rx, "not empty")
    assert {n: digest(os.path.join(rx, n)) for n in ("last.pt", "best.pt")} == before


def test_resume_from_elsewhere_starts_a_new_run_in_an_empty_save(char_data, tmp_path, capsys):
    rb, new = str(tmp_path / "rB"), str(tmp_path / "new")
    start(char_data, rb)
    before = digest(os.path.join(rb, "last.pt"))
    capsys.readouterr()
    assert train_mod.main(["--save", new, "--resume", rb, "--max-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert f"starting the new run directory {new} from the checkpoint" in out
    assert load_checkpoint(os.path.join(new, "last.pt"))["step"] == 5
    assert digest(os.path.join(rb, "last.pt")) == before          # the source run is untouched


def test_resume_rundir_continues_last_not_best(char_data, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    orig = train_mod.evaluate

    def worse_after_step_2(run, name):   # validation gets worse: best.pt stays at step 2
        r = orig(run, name)
        return dict(r, loss=r["loss"] + (0 if run.state.step <= 2 else 10))
    monkeypatch.setattr(train_mod, "evaluate", worse_after_step_2)
    start(char_data, run, "--eval-interval", "2", steps=8)
    monkeypatch.undo()
    best, last = load_checkpoint(os.path.join(run, "best.pt")), load_checkpoint(os.path.join(run, "last.pt"))
    assert (best["step"], last["step"]) == (2, 8)
    capsys.readouterr()
    assert train_mod.main(["--resume", run, "--max-steps", "10"]) == 0      # --save defaults to the run
    out = capsys.readouterr().out
    assert f"resumed from {os.path.join(run, 'last.pt')} at step 8" in out
    assert load_checkpoint(os.path.join(run, "last.pt"))["step"] == 10
    # naming best.pt of the same run would rewind it: refused
    rc, err = run_train(["--resume", os.path.join(run, "best.pt"), "--max-steps", "12"], capsys)
    assert_one_sentence_error(rc, err, "best.pt", "overwrite")


def test_resume_of_a_finished_run_says_so(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    start(char_data, run, steps=4)
    before = digest(os.path.join(run, "last.pt"))
    capsys.readouterr()
    assert train_mod.main(["--save", run, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "is finished (reached --max-steps 4, step 4)" in out
    assert digest(os.path.join(run, "last.pt")) == before
    assert max(r["step"] for r in metrics(run)) == 4
    # a larger budget continues it, and the change is reported in one line
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "6", "--lr", "0.001"]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("changed on resume")]
    assert "--max-steps 4 -> 6" in line and "-> 0.001" in line
    assert load_checkpoint(os.path.join(run, "last.pt"))["step"] == 6


def test_resume_flags_that_contradict_the_run_are_named(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    start(char_data, run, steps=2)
    capsys.readouterr()
    rc, err = run_train(["--save", run, "--resume", "--nhid", "64", "--rnn", "lstm", "--max-steps", "4"], capsys)
    assert_one_sentence_error(rc, err, "--nhid 64 (the run has 24)", "--rnn lstm (the run has qrnn)")
    assert load_checkpoint(os.path.join(run, "last.pt"))["step"] == 2
    # the same values as the run are fine
    assert train_mod.main(["--save", run, "--resume", "--nhid", "24", "--max-steps", "4"]) == 0


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    rc, err = run_train(["--save", str(tmp_path / "none"), "--resume"], capsys)
    assert_one_sentence_error(rc, err, "holds no run to continue")


# ---------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------
def write_lock(run, pid, host=None):
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "lock"), "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"}, f)


def test_a_held_run_directory_is_refused(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(run, other.pid)
        rc, err = run_train(["--data", char_data, "--save", run, *TINY, "--max-steps", "2"], capsys)
        assert_one_sentence_error(rc, err, "in use by process", str(other.pid), socket.gethostname())
        assert not os.path.exists(os.path.join(run, "last.pt"))
        assert json.load(open(os.path.join(run, "lock")))["pid"] == other.pid    # not taken
    finally:
        other.kill()
        other.wait()


def test_a_stale_lock_is_taken_over_and_released(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(run, dead.pid)
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "2"]) == 0
    assert "taking over the stale lock" in capsys.readouterr().out
    assert not os.path.exists(os.path.join(run, "lock"))          # released at the end


def test_lock_is_held_while_training(char_data, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    seen = []
    orig = train_mod.save_last

    def save_last(r):
        seen.append(json.load(open(os.path.join(run, "lock"))))
        return orig(r)
    monkeypatch.setattr(train_mod, "save_last", save_last)
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "2"]) == 0
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not os.path.exists(os.path.join(run, "lock"))


def test_orphan_temp_files_are_removed_on_the_next_start(char_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    start(char_data, run, steps=2)
    for name in ("last.pt.tmp12345", "last.pt.tmp999", "best.pt.tmp"):
        open(os.path.join(run, name), "wb").write(b"partial")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:   # a live owner: its temp files are left alone
        write_lock(run, other.pid)
        rc, err = run_train(["--save", run, "--resume", "--max-steps", "3"], capsys)
        assert rc != 0 and os.path.exists(os.path.join(run, "last.pt.tmp12345"))
    finally:
        other.kill()
        other.wait()
    assert train_mod.main(["--save", run, "--resume", "--max-steps", "3"]) == 0
    assert not [n for n in os.listdir(run) if ".tmp" in n]


# ---------------------------------------------------------------------------
# a full disk, unusable directories, bad flags
# ---------------------------------------------------------------------------
def test_disk_full_while_saving_names_the_file_and_keeps_the_previous(char_data, tmp_path, monkeypatch, capsys):
    run = str(tmp_path / "run")
    start(char_data, run, steps=2)
    before = digest(os.path.join(run, "last.pt"))
    import torch

    def full_disk(obj, f, *a, **k):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    rc, err = run_train(["--save", run, "--resume", "--max-steps", "4"], capsys)
    assert_one_sentence_error(rc, err, os.path.join(run, "last.pt"), "disk is full", "intact")
    assert digest(os.path.join(run, "last.pt")) == before
    assert not [n for n in os.listdir(run) if ".tmp" in n]
    monkeypatch.undo()
    assert load_checkpoint(os.path.join(run, "last.pt"))["step"] == 2


def test_save_that_is_a_file_under_a_file_or_read_only(char_data, tmp_path, monkeypatch, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = run_train(["--data", char_data, "--save", str(f), *TINY, "--max-steps", "1"], capsys)
    assert_one_sentence_error(rc, err, "--save", "is a file")
    rc, err = run_train(["--data", char_data, "--save", str(f / "run"), *TINY, "--max-steps", "1"], capsys)
    assert_one_sentence_error(rc, err, "--save", "under the file")
    real = os.makedirs

    def read_only(path, *a, **k):
        if "ro" in os.path.basename(str(path)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, *a, **k)
    monkeypatch.setattr(os, "makedirs", read_only)
    rc, err = run_train(["--data", char_data, "--save", str(tmp_path / "ro"), *TINY, "--max-steps", "1"], capsys)
    assert_one_sentence_error(rc, err, "--save", "read-only")


def test_cache_dir_that_is_a_file(tmp_path, capsys):
    from conftest import write_corpus
    paths = write_corpus(str(tmp_path))
    f = tmp_path / "cachefile"
    f.write_text("x")
    rc, err = run_train(["--train", paths["train"], "--valid", paths["valid"], "--tokenizer", "char",
                         "--cache-dir", str(f), "--save", str(tmp_path / "run"), *TINY, "--max-steps", "1"], capsys)
    assert_one_sentence_error(rc, err, "--cache-dir", "is a file")


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lr", "-1"], "--lr must be a positive number"),
    (["--log-interval", "0"], "--log-interval must be at least 1"),
    (["--window", "0"], "--window must be at least 1"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be at least 1"),
    (["--max-minutes", "-2"], "--max-minutes must be 0 or more"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
])
def test_bad_flags_are_one_sentence_before_training(char_data, tmp_path, capsys, flags, needle):
    run = str(tmp_path / "run")
    rc, err = run_train(["--data", char_data, "--save", run, *TINY, "--max-steps", "2", *flags], capsys)
    assert_one_sentence_error(rc, err, needle)
    assert not os.path.exists(os.path.join(run, "last.pt"))
