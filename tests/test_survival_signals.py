"""Stop signals and closed terminals, piece by piece: which handlers a
process installs, the sentence and exit status of SIGTERM/SIGHUP outside the
training loop (preparing on the fly, the final evaluation), a stdout that goes
away, and a torchrun peer that dies or a torchrun that is told to stop."""
import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, cli_env, kill_tree, write_corpus
from qrnn_lm import errors, runlog

RUN_FLAGS = [*TINY, "--log-interval", "1", "--eval-interval", "0", "--seed", "7"]


@pytest.fixture
def saved_handlers():
    old = {s: signal.getsignal(s) for s in errors.STOP_SIGNALS}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def test_a_signal_the_parent_ignores_stays_ignored(saved_handlers):
    """A background job (`train.py &`) has SIGINT ignored: it stays so, SIGTERM still works."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    seen = []
    restore = errors.install_stop_handlers(seen.append)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    assert seen == [signal.SIGTERM]
    restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("signame,status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_run_command_turns_a_stop_signal_into_a_sentence(saved_handlers, capsys, signame, status):
    signal.signal(getattr(signal, signame), signal.SIG_DFL)
    cleaned = []

    def command(argv):
        os.kill(os.getpid(), getattr(signal, signame))
        time.sleep(5)
        return 0
    rc = errors.run_command(command, [], interrupted="error: interrupted; --out X is as it was before.",
                            cleanup=lambda: cleaned.append(1))
    assert rc == status and cleaned == [1]
    assert capsys.readouterr().err == f"error: stopped by {signame}; --out X is as it was before.\n"
    assert signal.getsignal(getattr(signal, signame)) is signal.SIG_DFL


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_stdout_log_keeps_the_log_file_when_stdout_breaks(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    (tmp_path / "metrics.jsonl").write_text("")      # the run has started training
    log = runlog.StdoutLog(str(tmp_path))
    try:
        print("one", flush=True)
        print("two", flush=True)
        assert log.silenced
    finally:
        log.release()
    assert isinstance(sys.stdout, _ClosedPipe)
    assert (tmp_path / runlog.LOG_FILE).read_text(encoding="utf-8") == "one\ntwo\n"


def test_a_run_that_never_started_leaves_no_log(tmp_path, capsys):
    log = runlog.StdoutLog(str(tmp_path))
    print("starting the new run directory")
    log.release()
    assert capsys.readouterr().out == "starting the new run directory\n"
    assert os.listdir(tmp_path) == []


def _sigterm_when(monkeypatch, module, name):
    orig = getattr(module, name)

    def wrapped(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return orig(*a, **k)
    monkeypatch.setattr(module, name, wrapped)


def test_sigterm_during_the_final_evaluation(char_data, tmp_path, monkeypatch, capsys, saved_handlers):
    from qrnn_lm import train as train_mod
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_when(monkeypatch, train_mod, "final_evaluation")
    run = str(tmp_path / "run")
    assert train_mod.main(["--data", char_data, "--save", run, *RUN_FLAGS, "--max-steps", "3"]) == 143
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped by SIGTERM during the final evaluation" in err, err
    assert not os.path.exists(os.path.join(run, "lock"))
    assert not os.path.exists(os.path.join(run, "results.json"))
    assert torch.load(os.path.join(run, "last.pt"), weights_only=True)["step"] == 3


def test_sigterm_while_preparing_on_the_fly(tmp_path, monkeypatch, capsys, saved_handlers):
    from qrnn_lm import prepare
    from qrnn_lm import train as train_mod
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_when(monkeypatch, prepare, "_write_train")
    paths = write_corpus(str(tmp_path))
    run, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    rc = train_mod.main(["--train", paths["train"], "--valid", paths["valid"], "--cache-dir", cache,
                         "--tokenizer", "char", "--save", run, *RUN_FLAGS, "--max-steps", "3"])
    assert rc == 143
    err = capsys.readouterr().err         # prepare's progress lines, then one sentence
    assert "Traceback" not in err and [ln for ln in err.splitlines() if "SIGTERM" in ln or "error" in ln] == \
        [err.strip().splitlines()[-1]], err
    assert "stopped by SIGTERM" in err
    assert not os.path.exists(os.path.join(run, "lock"))
    assert not os.listdir(cache), "a half-prepared dataset was left in the cache"


# ---------------------------------------------------------------------------
# torchrun (gloo on CPU): a peer killed mid-run; torchrun itself told to stop
# ---------------------------------------------------------------------------
def _distributed_ok():
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


def _prepare(directory):
    os.makedirs(directory)
    paths = write_corpus(str(directory))
    out = os.path.join(str(directory), "data")
    from qrnn_lm import prepare
    assert prepare.main(["--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
                         "--out", out, "--tokenizer", "char", "--vocab-size", "16", "--rare", "unk", "--quiet"]) == 0
    return out


def _torchrun(tmp_path, *argv):
    out, err = open(tmp_path / "out.txt", "wb"), open(tmp_path / "err.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             os.path.join(ROOT, "train.py"), *map(str, argv)], cwd=ROOT, env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    return proc


def _wait(proc, timeout):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.wait()
        pytest.fail(f"torchrun still ran after {timeout} s (a hang)")


def _worker(rank):
    """The pid of this test's torchrun worker of ``rank``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID=" in b"\0".join(env) \
                    and f"QRNN_TEST_MARK={os.getpid()}".encode() in env:
                return int(entry)
    return None


def _step(path):
    return torch.load(path, map_location="cpu", weights_only=True)["step"]


def _until_saved(run, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(run, "last.pt")) or _step(os.path.join(run, "last.pt")) < 10:
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_tree(proc.pid)
            pytest.fail("torchrun ended or saved nothing")
        time.sleep(0.1)


@pytest.mark.skipif(not _distributed_ok(), reason="torch.distributed with the gloo backend is not available")
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the worker processes in /proc")
@pytest.mark.parametrize("how", ["peer killed", "torchrun stopped"])
def test_torchrun_a_dying_peer_or_sigterm_ends_with_one_sentence_and_resumes(tmp_path, monkeypatch, how):
    monkeypatch.setenv("QRNN_TEST_MARK", str(os.getpid()))
    data, run = _prepare(tmp_path / "ds"), str(tmp_path / "run")
    proc = _torchrun(tmp_path, "--data", data, "--save", run, *RUN_FLAGS, "--max-steps", 100000)
    try:
        _until_saved(run, proc)
        if how == "peer killed":
            os.kill(_worker(1), signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGTERM)   # Slurm, Kubernetes: torchrun passes SIGTERM to its workers
        assert _wait(proc, 90) != 0
    finally:
        kill_tree(proc.pid)
    err = (tmp_path / "err.txt").read_text(encoding="utf-8", errors="replace")
    out = (tmp_path / "out.txt").read_text(encoding="utf-8", errors="replace")
    # torchrun reports a failed worker with a traceback of its own; none comes from the workers
    assert err.count("Traceback") <= err.count("torch/distributed/run.py"), err[-3000:]
    assert "pair.cc" not in err and "DistBackendError" not in err, err[-3000:]
    if how == "peer killed":
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "--resume" in lines[0], err[-3000:]
    else:
        assert "stopped by SIGTERM at step" in out, out[-1000:]
    assert not os.path.exists(os.path.join(run, "lock"))
    step = _step(os.path.join(run, "last.pt"))
    proc = _torchrun(tmp_path, "--save", run, "--resume", "--max-steps", step + 3)
    try:
        rc = _wait(proc, 120)
    finally:
        kill_tree(proc.pid)
    assert rc == 0, (tmp_path / "err.txt").read_text(encoding="utf-8", errors="replace")[-3000:]
    assert f"at step {step}" in (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert _step(os.path.join(run, "last.pt")) == step + 3
