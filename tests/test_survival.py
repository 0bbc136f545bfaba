"""Long runs that survive the real world (issue 19), tested as a user meets
them: ``python train.py`` and ``python -m qrnn_lm ...`` in subprocesses, files
on disk and signals -- SIGTERM/SIGHUP, a closed stdout, resuming on another
world size or a shorter split, a stale lock from another host, concurrent
prepares, datasets whose parts do not belong together, and flags that used to
end in a traceback.  Tiny data, a few seconds each; every subprocess runs
under a timeout, so a spin fails the test instead of hanging the suite."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, assert_one_sentence, cli_env, kill_tree, run_cli, write_corpus

RUN_FLAGS = [*TINY, "--log-interval", "1", "--eval-interval", "0", "--seed", "7"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def make_dataset(directory, *, vocab_size=16, seed=0, **corpus):
    """A tiny char-tokenized dataset made with ``python -m qrnn_lm prepare``."""
    os.makedirs(directory, exist_ok=True)
    paths = write_corpus(str(directory), seed=seed, **corpus)
    out = os.path.join(str(directory), "data")
    p = run_cli(["-m", "qrnn_lm", "prepare", "--train", paths["train"], "--valid", paths["valid"],
                 "--test", paths["test"], "--out", out, "--tokenizer", "char", "--vocab-size", str(vocab_size),
                 "--rare", "unk", "--quiet"])
    assert p.returncode == 0, p.stderr
    return out


def train(*argv, timeout=120, **kw):
    return run_cli(["train.py", *map(str, argv)], timeout=timeout, **kw)


def ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a, b):
    """Two checkpoints hold bit-identical model state dicts."""
    ma, mb = ckpt(a)["model"], ckpt(b)["model"]
    assert list(ma) == list(mb)
    different = [k for k in ma if not torch.equal(ma[k], mb[k])]
    assert not different, f"weights differ in {different}"


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def popen_train(argv, **kw):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, argv)], cwd=ROOT,
                            env=cli_env(), stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def wait_for(pred, proc, timeout, what):
    """Poll ``pred()`` until it is true; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.02)
    kill_group(proc)
    pytest.fail(f"no {what} within {timeout} s")


def kill_group(proc):
    if proc.poll() is None:
        kill_tree(proc.pid)
        proc.wait()


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"the process still ran after {timeout} s (a hang or a spin)")
    dec = (lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or ""))
    return proc.returncode, dec(out), dec(err)


def last_train_step(run):
    try:
        rows = metrics(run)
    except (OSError, ValueError):
        return 0
    return max((r["step"] for r in rows if r.get("split") == "train"), default=0)


def batches_per_epoch(stdout):
    """N of the log line ``| epoch 1 | step 3 | 3/ N batches |``."""
    for line in stdout.splitlines():
        if "batches" in line and line.startswith("| epoch"):
            return int(line.split("/")[1].split()[0])
    raise AssertionError(f"no training log line in {stdout[-500:]!r}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("survival"))


# ---------------------------------------------------------------------------
# 1. signals: SIGTERM and SIGHUP save like Ctrl-C; the run resumes exactly
# ---------------------------------------------------------------------------
STEPS = 400


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("reference") / "run")
    p = train("--data", data, "--save", run, *RUN_FLAGS, "--max-steps", STEPS)
    assert p.returncode == 0, p.stderr
    return run


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_saves_releases_the_lock_and_resumes_bit_identically(data, uninterrupted, tmp_path, signame):
    run = str(tmp_path / "run")
    proc = popen_train(["--data", data, "--save", run, *RUN_FLAGS, "--max-steps", STEPS],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: last_train_step(run) >= 20, proc, 90, "training step 20")
        seen = last_train_step(run)
        proc.send_signal(getattr(signal, signame))
        rc, out, err = finish(proc, 60)
    finally:
        kill_group(proc)
    assert rc != 0, f"{signame} ended the run with exit 0"
    assert "Traceback" not in out + err, err
    assert signame.lower() in (out + err).lower(), f"no sentence names {signame}: {out[-600:]!r} {err!r}"
    assert not os.path.exists(os.path.join(run, "lock")), "the run directory's lock was left behind"
    saved = ckpt(os.path.join(run, "last.pt"))
    assert seen <= saved["step"] < STEPS, (seen, saved["step"])
    assert saved["step"] == last_train_step(run), "last.pt is not at the step the run had reached"
    p = train("--save", run, "--resume", "--max-steps", STEPS)
    assert p.returncode == 0, p.stderr
    assert f"at step {saved['step']}" in p.stdout
    assert ckpt(os.path.join(run, "last.pt"))["step"] == STEPS
    assert_same_weights(os.path.join(run, "last.pt"), os.path.join(uninterrupted, "last.pt"))


# ---------------------------------------------------------------------------
# 1. a closed stdout (`train.py ... | head -1`) does not stop training
# ---------------------------------------------------------------------------
def test_a_closed_stdout_keeps_training_and_logging(data, tmp_path):
    run = str(tmp_path / "run")
    steps = 60
    proc = popen_train(["--data", data, "--save", run, *RUN_FLAGS, "--max-steps", steps],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()       # `| head -1`: read one line, then close the pipe
        assert first, "train.py printed nothing"
        proc.stdout.close()
        proc.stdout = None
        rc, _, err = finish(proc, 120)
    finally:
        kill_group(proc)
    assert rc == 0, err[-2000:]
    assert "Traceback" not in err and "BrokenPipe" not in err, err[-2000:]
    rows = metrics(run)
    assert sorted(r["step"] for r in rows if r.get("split") == "train") == list(range(1, steps + 1))
    assert {r["split"] for r in rows if r.get("final")} == {"valid", "test"}
    assert ckpt(os.path.join(run, "last.pt"))["step"] == steps
    assert os.path.isfile(os.path.join(run, "results.json"))
    logs = [n for n in os.listdir(run) if "log" in n.lower() and os.path.isfile(os.path.join(run, n))]
    assert logs, f"the run directory holds no log file of its own: {sorted(os.listdir(run))}"
    text = "".join(open(os.path.join(run, n), encoding="utf-8", errors="replace").read() for n in logs)
    assert f"stopped at step {steps}" in text and "end of training" in text, text[-1500:]


# ---------------------------------------------------------------------------
# 2. resume anywhere: another world size, a shorter split -- never a spin
# ---------------------------------------------------------------------------
def _late_in_the_first_epoch(data, run):
    """A 1-process run stopped near the end of its first epoch (past half of
    it, where each of 2 ranks' shorter epochs has already ended); returns
    (batches per epoch, the step it stopped at)."""
    p = train("--data", data, "--save", run, *RUN_FLAGS, "--max-steps", 3)
    assert p.returncode == 0, p.stderr
    n = batches_per_epoch(p.stdout)
    assert n >= 6, n
    p = train("--save", run, "--resume", "--max-steps", n - 1)
    assert p.returncode == 0, p.stderr
    saved = ckpt(os.path.join(run, "last.pt"))
    assert saved["step"] == n - 1
    return n, n - 1


def _continued_or_refused(p, run, target, *words):
    """Either the run went on to ``target`` steps, or it refused with one
    sentence holding ``words`` and left last.pt as it was."""
    if p.returncode == 0:
        assert "Traceback" not in p.stderr, p.stderr
        assert ckpt(os.path.join(run, "last.pt"))["step"] == target, p.stdout[-1500:]
        assert not os.path.exists(os.path.join(run, "lock"))
    else:
        assert_one_sentence(p.returncode, p.stderr, *words, ignore=[os.path.dirname(run)])


def unprefixed(text):
    """The lines of a torchrun worker's output without a ``[rankN]:`` prefix."""
    return [re.sub(r"^\[rank\d+\]:\s*", "", ln) for ln in text.splitlines()]


def _distributed_ok():
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


@pytest.mark.skipif(not _distributed_ok(), reason="torch.distributed with the gloo backend is not available")
def test_resume_with_two_processes_after_one_never_spins(data, tmp_path):
    run = str(tmp_path / "run")
    n, step = _late_in_the_first_epoch(data, run)
    target = step + 4
    p = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 os.path.join(ROOT, "train.py"), "--save", run, "--resume", "--max-steps", str(target)],
                timeout=120)
    if p.returncode == 0:
        assert ckpt(os.path.join(run, "last.pt"))["step"] == target, p.stdout[-1500:]
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
    else:
        # torchrun adds its own lines on a failed worker; the run's sentence must be there, once per run
        errors = [ln for ln in unprefixed(p.stderr) if ln.startswith("error:")]
        assert errors and "Traceback" not in p.stderr, p.stderr[-3000:]
        bare = errors[0].replace(str(tmp_path), "").lower()
        assert any(w in bare for w in ("process", "world size", "rank")), errors[0]
        assert ckpt(os.path.join(run, "last.pt"))["step"] == step


def _worker_of_rank(root_pid, rank, run):
    """The pid of torchrun's worker with RANK=rank training ``run`` (or None)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == root_pid:
            continue
        try:
            env = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
            cmd = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and run.encode() in cmd and b"train.py" in cmd:
            return int(entry)
    return None


@pytest.mark.skipif(not _distributed_ok() or not os.path.isdir("/proc"),
                    reason="needs torch.distributed with gloo and /proc")
def test_a_dying_torchrun_peer_ends_rank_0_with_a_sentence_and_the_run_resumes(data, tmp_path):
    run, logs = str(tmp_path / "run"), str(tmp_path / "logs")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "--log-dir", logs, "--redirects", "3"]
    proc = subprocess.Popen([*torchrun, os.path.join(ROOT, "train.py"), "--data", data, "--save", run,
                             *RUN_FLAGS, "--max-steps", "100000"], cwd=ROOT, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_for(lambda: last_train_step(run) >= 30, proc, 150, "training step 30 under torchrun")
        peer = _worker_of_rank(proc.pid, 1, run)
        assert peer is not None, "rank 1 not found"
        os.kill(peer, signal.SIGKILL)
        rc, _, _ = finish(proc, 90)
    finally:
        kill_group(proc)
    assert rc != 0
    rank0 = [os.path.join(d, f) for d, _, fs in os.walk(logs) for f in fs
             if f.startswith("std") and os.path.basename(d) == "0"]
    assert rank0, f"no rank-0 logs under {logs}"
    text = "".join(open(f, encoding="utf-8", errors="replace").read() for f in rank0)
    assert "Traceback" not in text, text[-3000:]
    assert [ln for ln in unprefixed(text) if ln.startswith("error:") or "sig" in ln.lower()], text[-1500:]
    assert not os.path.exists(os.path.join(run, "lock"))
    step = ckpt(os.path.join(run, "last.pt"))["step"]
    p = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                 os.path.join(ROOT, "train.py"), "--save", run, "--resume", "--max-steps", str(step + 3)],
                timeout=150)
    assert p.returncode == 0, p.stderr[-3000:]
    assert ckpt(os.path.join(run, "last.pt"))["step"] == step + 3


def test_resume_after_the_train_split_got_shorter_never_spins(data, tmp_path):
    ds = str(tmp_path / "data")
    shutil.copytree(data, ds)
    run = str(tmp_path / "run")
    n, step = _late_in_the_first_epoch(ds, run)
    # keep the first quarter of the training lines, as a re-prepared shorter corpus would hold
    ids = np.load(os.path.join(ds, "train.ids.npy"))
    logp = np.load(os.path.join(ds, "train.rare_logp.npy"))
    meta = json.load(open(os.path.join(ds, "train.meta.json"), encoding="utf-8"))
    vocab = json.load(open(os.path.join(ds, "vocab.json"), encoding="utf-8"))
    eos = next(i for i, t in enumerate(vocab["tokens"]) if t[0] == "</s>")
    ends = np.flatnonzero(ids == eos)
    keep_lines = max(2, len(ends) // 4)
    cut = int(ends[keep_lines - 1]) + 1
    lines = open(os.path.join(os.path.dirname(data), "train.txt"), encoding="utf-8").read().splitlines()
    np.save(os.path.join(ds, "train.ids.npy"), ids[:cut])
    np.save(os.path.join(ds, "train.rare_logp.npy"), logp[:cut])
    meta.update(tokens=cut, lines=keep_lines, characters=sum(len(s) + 1 for s in lines[:keep_lines]))
    with open(os.path.join(ds, "train.meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    p = train("--save", run, "--resume", "--max-steps", step + 4, timeout=90)
    _continued_or_refused(p, run, step + 4, "train")


# ---------------------------------------------------------------------------
# 2. a stale lock from another host (or a reused pid) says how to take over
# ---------------------------------------------------------------------------
def _write_lock(run, pid, host):
    with open(os.path.join(run, "lock"), "w", encoding="utf-8") as f:
        json.dump({"pid": pid, "host": host, "since": "2026-01-01 00:00:00"}, f)


def test_a_lock_from_another_host_names_take_over_which_works(data, tmp_path):
    run = str(tmp_path / "run")
    assert train("--data", data, "--save", run, *RUN_FLAGS, "--max-steps", 2).returncode == 0
    host = "preempted-vm-" + socket.gethostname()
    _write_lock(run, 4321, host)
    p = train("--save", run, "--resume", "--max-steps", 4)
    assert_one_sentence(p.returncode, p.stderr, host, "4321", "--take-over")
    assert ckpt(os.path.join(run, "last.pt"))["step"] == 2
    p = train("--save", run, "--resume", "--take-over", "--max-steps", 4)
    assert p.returncode == 0, p.stderr
    assert ckpt(os.path.join(run, "last.pt"))["step"] == 4
    assert not os.path.exists(os.path.join(run, "lock"))


def test_a_lock_of_a_reused_pid_names_take_over(data, tmp_path):
    """After a container restart the lock's pid may belong to some other
    live process of this host: the message says how to take the run over."""
    run = str(tmp_path / "run")
    assert train("--data", data, "--save", run, *RUN_FLAGS, "--max-steps", 2).returncode == 0
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _write_lock(run, other.pid, socket.gethostname())
        p = train("--save", run, "--resume", "--max-steps", 4)
        assert_one_sentence(p.returncode, p.stderr, str(other.pid), "--take-over")
        p = train("--save", run, "--resume", "--take-over", "--max-steps", 4)
        assert p.returncode == 0, p.stderr
        assert ckpt(os.path.join(run, "last.pt"))["step"] == 4
    finally:
        other.kill()
        other.wait()


# ---------------------------------------------------------------------------
# 3. datasets that cannot be mixed
# ---------------------------------------------------------------------------
def test_two_prepares_on_the_same_out_one_wins(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    paths = write_corpus(str(src), n_train=6000, n_valid=50, n_test=10)
    out = str(tmp_path / "ds")
    procs = {}
    for size in (16, 12):
        procs[size] = subprocess.Popen(
            [sys.executable, "-m", "qrnn_lm", "prepare", "--train", paths["train"], "--valid", paths["valid"],
             "--out", out, "--tokenizer", "char", "--vocab-size", str(size), "--rare", "unk", "--quiet"],
            cwd=ROOT, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
    results = {}
    try:
        for size, proc in procs.items():
            results[size] = finish(proc, 180)
    finally:
        for proc in procs.values():
            kill_group(proc)
    winners = [s for s, (rc, _, _) in results.items() if rc == 0]
    assert len(winners) == 1, {s: (rc, err) for s, (rc, _, err) in results.items()}
    (loser,) = [s for s in results if s not in winners]
    assert_one_sentence(results[loser][0], results[loser][2], out)
    # the dataset is the winner's, whole: every split was made with its vocabulary
    vocab = json.load(open(os.path.join(out, "vocab.json"), encoding="utf-8"))
    from qrnn_lm import Vocabulary
    assert len(Vocabulary.load(out)) == len(vocab["tokens"])
    kept = sum(1 for t in vocab["tokens"] if t[2] == "word")
    assert kept == winners[0], (kept, winners)
    for split in ("train", "valid"):
        ids = np.load(os.path.join(out, f"{split}.ids.npy"))
        meta = json.load(open(os.path.join(out, f"{split}.meta.json"), encoding="utf-8"))
        assert meta["tokens"] == len(ids) and int(ids.max()) < len(vocab["tokens"])
    assert [n for n in os.listdir(tmp_path) if ".prepare-" in n or ".tmp" in n] == []   # no staging left


def test_a_vocab_json_from_another_dataset_is_refused(tmp_path):
    a = make_dataset(tmp_path / "a", seed=0)
    b = make_dataset(tmp_path / "b", seed=5, n_train=40)
    assert open(os.path.join(a, "vocab.json"), "rb").read() != open(os.path.join(b, "vocab.json"), "rb").read()
    shutil.copy(os.path.join(b, "vocab.json"), os.path.join(a, "vocab.json"))
    run = str(tmp_path / "run")
    p = train("--data", a, "--save", run, *RUN_FLAGS, "--max-steps", 2, timeout=90)
    assert_one_sentence(p.returncode, p.stderr, "vocab.json", ignore=[tmp_path])
    assert not os.path.exists(os.path.join(run, "last.pt"))


@pytest.mark.parametrize("characters", [1, -7])
def test_a_meta_json_with_an_impossible_character_count(data, tmp_path, characters):
    ds = str(tmp_path / "data")
    shutil.copytree(data, ds)
    path = os.path.join(ds, "valid.meta.json")
    meta = json.load(open(path, encoding="utf-8"))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(dict(meta, characters=characters), f)
    p = train("--data", ds, "--save", str(tmp_path / "run"), *RUN_FLAGS, "--max-steps", 2, timeout=90)
    assert_one_sentence(p.returncode, p.stderr, "valid.meta.json", ignore=[tmp_path])


def test_nan_in_rare_logp_is_an_error(data, tmp_path):
    ds = str(tmp_path / "data")
    shutil.copytree(data, ds)
    path = os.path.join(ds, "valid.rare_logp.npy")
    logp = np.load(path)
    logp[len(logp) // 2] = np.nan
    np.save(path, logp)
    p = train("--data", ds, "--save", str(tmp_path / "run"), *RUN_FLAGS, "--max-steps", 2, timeout=90)
    assert_one_sentence(p.returncode, p.stderr, "valid.rare_logp.npy", ignore=[tmp_path])


def test_prepare_force_refuses_a_directory_that_holds_a_run(tmp_path):
    ds = make_dataset(tmp_path / "src")
    run = os.path.join(ds, "run")
    assert train("--data", ds, "--save", run, *RUN_FLAGS, "--max-steps", 2).returncode == 0
    paths = {s: str(tmp_path / "src" / f"{s}.txt") for s in ("train", "valid")}
    p = run_cli(["-m", "qrnn_lm", "prepare", "--train", paths["train"], "--valid", paths["valid"], "--out", ds,
                 "--force", "--tokenizer", "char", "--vocab-size", "12", "--rare", "unk", "--quiet"])
    assert_one_sentence(p.returncode, p.stderr, "--force", "run", ignore=[tmp_path])
    assert os.path.isfile(os.path.join(run, "last.pt")), "prepare --force deleted a run"
    assert os.path.isfile(os.path.join(ds, "test.ids.npy"))     # the old dataset is still there


# ---------------------------------------------------------------------------
# 5. flags that used to end in a traceback
# ---------------------------------------------------------------------------
def test_a_model_too_large_for_memory_names_the_flag(data, tmp_path):
    p = train("--data", data, "--save", str(tmp_path / "run"), *TINY, "--nhid", "1000000", "--max-steps", 1,
              timeout=90, memory_gib=6)
    assert_one_sentence(p.returncode, p.stderr, "memory", "--nhid", ignore=[tmp_path])


@pytest.mark.parametrize("seed", ["-5", "1e23"])
def test_a_bad_seed_is_one_sentence(data, tmp_path, seed):
    p = train("--data", data, "--save", str(tmp_path / "run"), *TINY, "--seed", seed, "--max-steps", 1,
              timeout=90)
    assert_one_sentence(p.returncode, p.stderr, "--seed", ignore=[tmp_path])
    assert not os.path.exists(tmp_path / "run" / "last.pt")


def test_prepare_kmeans_with_window_0_is_one_sentence(tmp_path):
    paths = write_corpus(str(tmp_path))
    p = run_cli(["-m", "qrnn_lm", "prepare", "--train", paths["train"], "--valid", paths["valid"],
                 "--out", str(tmp_path / "ds"), "--tokenizer", "char", "--vocab-size", "6", "--rare", "kmeans",
                 "--buckets", "2", "--window", "0", "--quiet"])
    assert_one_sentence(p.returncode, p.stderr, "--window", ignore=[tmp_path])
    assert not os.path.exists(tmp_path / "ds")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_generate_to_a_non_utf8_stdout(data, uninterrupted, encoding):
    p = run_cli(["-m", "qrnn_lm", "generate", "--checkpoint", uninterrupted, "--prompt", "猫が",
                 "--max-tokens", "10", "--seed", "1"], env=cli_env(PYTHONIOENCODING=encoding), timeout=60)
    if p.returncode == 0:
        assert "Traceback" not in p.stderr and p.stdout.strip(), (p.stdout, p.stderr)
    else:
        assert_one_sentence(p.returncode, p.stderr, "encod")


def test_qrnn_given_float64_input_against_float32_weights():
    from qrnn_lm import QRNN
    rnn = QRNN(4, 5, num_layers=2)
    with pytest.raises(ValueError) as e:
        rnn(torch.randn(3, 2, 4, dtype=torch.float64))
    msg = str(e.value)
    assert "\n" not in msg.strip() and "float64" in msg and "float32" in msg, msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_from_checkpoint_on_cuda_without_cuda(uninterrupted):
    from qrnn_lm import LanguageModel
    from qrnn_lm import QrnnLmError
    with pytest.raises(QrnnLmError) as e:
        LanguageModel.from_checkpoint(uninterrupted, device="cuda")
    assert "cuda" in str(e.value).lower() and "\n" not in str(e.value).strip()
