"""Resume anywhere: the data position mapped onto another world size or a
changed training split (``checkpoint.map_position``), the loop's guard
against a position past an epoch's end, and the run directory's lock (a
reused pid, ``--take-over``)."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from qrnn_lm import train as train_mod
from qrnn_lm.checkpoint import TrainState, map_position
from qrnn_lm.data import SentenceBatches, StreamBatches
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.recipe import merge_resumed_args
from qrnn_lm.rundir import RunLock, process_start
from conftest import TINY, assert_one_sentence_error


def saved(**kw):
    base = dict(step=20, epoch=1, batch=9, world_size=1, epoch_batches=12, epoch_tokens=432, split_tokens=600,
                rnn_state=(torch.zeros(2, 4),))
    base.update(kw)
    return TrainState(**base)


def mapped(state, *, world_size=1, batches=12, split_tokens=600):
    lines = []
    map_position(state, "run/last.pt", world_size=world_size, epoch_batches=lambda e: batches,
                 split_tokens=split_tokens, log=lines.append)
    return lines


# ---------------------------------------------------------------------------
# the data position
# ---------------------------------------------------------------------------
def test_nothing_changed_keeps_the_position_and_state_exactly():
    s = saved()
    assert mapped(s) == []
    assert (s.epoch, s.batch) == (1, 9) and s.rnn_state is not None


def test_another_world_size_maps_the_fraction_of_the_epoch_and_drops_the_state():
    s = saved(batch=6)
    lines = mapped(s, world_size=2, batches=6)
    assert (s.epoch, s.batch) == (1, 3) and s.rnn_state is None
    assert len(lines) == 1 and "world size changed (1 -> 2 processes)" in lines[0]
    assert "batch 6/12 of epoch 2" in lines[0] and "batch 3/6 of epoch 2" in lines[0]


def test_a_shorter_split_maps_the_position_and_never_past_the_epoch():
    s = saved(batch=11)
    lines = mapped(s, batches=3, split_tokens=150)
    assert (s.epoch, s.batch) == (1, 2) and s.rnn_state is None
    assert "training split changed (600 -> 150 tokens)" in lines[0]


def test_a_position_at_the_end_of_the_new_epoch_is_the_next_epoch_start():
    s = saved(batch=12, epoch_batches=12)      # a damaged or hand-made position: never a spin
    mapped(s, world_size=2, batches=6)
    assert (s.epoch, s.batch) == (2, 0)


def test_an_old_checkpoint_resumes_as_before_when_nothing_changed():
    s = saved(epoch_batches=None, epoch_tokens=None, split_tokens=None)
    assert mapped(s) == [] and s.batch == 9


@pytest.mark.parametrize("change", [dict(world_size=2, batches=6), dict(batches=5)])
def test_an_old_checkpoint_that_cannot_be_mapped_is_refused(change):
    s = saved(epoch_batches=None, epoch_tokens=None, split_tokens=None)
    with pytest.raises(QrnnLmError, match="changed .*since it was saved.*resume it with the processes"):
        mapped(s, **change)


def test_the_checkpoint_records_the_position_and_reads_it_back(char_data, tmp_path):
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *TINY, "--max-steps", "3"]) == 0
    ck = torch.load(os.path.join(run, "last.pt"), weights_only=True)
    data = ck["data"]
    assert data["world_size"] == 1 and data["batch"] == 3 and data["batches"] > 3
    assert data["split_tokens"] == len(np.load(os.path.join(char_data, "train.ids.npy")))
    assert data["tokens"] > 0
    ck["path"] = "last.pt"
    s = TrainState.from_checkpoint(ck, rank=0, world_size=1, device="cpu")
    assert (s.world_size, s.epoch_batches, s.epoch_tokens) == (1, data["batches"], data["tokens"])


def test_consumed_counts_the_target_tokens_before_a_batch():
    ids = np.arange(1, 101) % 7
    sb = StreamBatches(ids, 0, 4, 6, train=True)
    assert sb.consumed(0, 0) == 0
    assert sb.consumed(0, 2) == 2 * 6 * 4
    assert sb.consumed(0, len(sb)) == sb.length * 4
    se = SentenceBatches(ids, 0, 2, 50, train=True)
    assert se.consumed(0, len(se)) == int(se.length[np.concatenate(se.batches(0))].sum())


def test_the_loop_never_spins_on_a_position_past_the_epoch():
    state = TrainState(epoch=0, batch=99, rnn_state=(torch.zeros(1),))
    assert state.epoch_in_progress(lambda e: 5) == 5
    assert (state.epoch, state.batch, state.rnn_state) == (1, 0, None)


# ---------------------------------------------------------------------------
# the lock
# ---------------------------------------------------------------------------
def write_lock(run, **owner):
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "lock"), "w") as f:
        json.dump(dict({"host": socket.gethostname(), "since": "2026-01-01 00:00:00"}, **owner), f)


@pytest.fixture
def other():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p
    p.kill()
    p.wait()


@pytest.mark.skipif(process_start(os.getpid()) is None, reason="no /proc to read process start times from")
def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path, other):
    run = str(tmp_path / "run")
    write_lock(run, pid=other.pid, started=process_start(other.pid))
    with pytest.raises(QrnnLmError, match="--take-over"):
        RunLock(run).acquire(print)                       # the very process that holds it: alive
    write_lock(run, pid=other.pid, started="another-boot:12345")
    lines, lock = [], RunLock(run)
    lock.acquire(lines.append)                            # the pid now belongs to another process: stale
    assert "stale lock" in lines[0] and json.load(open(lock.path))["pid"] == os.getpid()
    assert json.load(open(lock.path))["started"] == process_start(os.getpid())
    lock.release()


def test_take_over_takes_a_live_lock_and_says_whose(tmp_path, other):
    run = str(tmp_path / "run")
    write_lock(run, pid=other.pid, host="vm-7")
    lines, lock = [], RunLock(run)
    lock.acquire(lines.append, take_over=True)
    assert lock.held and "process " + str(other.pid) + " on vm-7" in lines[0] and "--take-over" in lines[0]
    lock.release()
    assert not os.path.exists(os.path.join(run, "lock"))


def test_take_over_needs_resume_and_is_never_kept(tmp_path, capsys):
    rc = train_mod.main(["--save", str(tmp_path / "run"), "--take-over", *TINY])
    assert_one_sentence_error(rc, capsys.readouterr().err, "--take-over", "--resume")
    args = {"take_over": None, "resume": "", "save": "r", "lr": None}
    flags, changed = merge_resumed_args(args, {"args": {"take_over": True, "lr": 0.1}, "path": "p"}, {"resume"})
    assert flags["take_over"] is None and flags["lr"] == 0.1 and changed == []
