"""Checkpoints and datasets from strangers (issue 19, section 4): a crafted
file must not make ``evaluate`` / ``generate`` / ``train.py`` open paths
outside the run or dataset, allocate a model of any size it names, loop for
as long as it says, or accept a format newer than the code.  Each crafted
file starts from a real tiny checkpoint (``torch.load``), is tampered with
and saved back with ``torch.save``; the commands run in subprocesses under a
timeout and an address-space cap, so a failure here is a failed test, never
a hung or swapping machine.  Tokenizer paths point at a FIFO: opening it is
seen by the test (and never blocks the command)."""
import base64
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, assert_one_sentence, cli_env, kill_tree, write_corpus

MEMORY_GIB = 4          # a tiny model needs well under 1 GiB; anything near the cap is an allocation it was told to make
TIMEOUT = 90
TEXT = "象が月と星を見る。\n猫が本を読む。\n"   # 象, 月, 星: characters the tiny corpus never had (rare words)


def _run(argv, cwd=None):
    return subprocess.Popen([sys.executable, *argv], cwd=cwd or ROOT, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_cap_memory)


def _cap_memory():
    import resource
    cap = MEMORY_GIB << 30
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _kill(proc):
    if proc.poll() is None:
        kill_tree(proc.pid)
    proc.wait()


def run_all(commands, *, fifo=None, cwd=None, timeout=TIMEOUT):
    """Start every command at once (argv lists after ``python``); wait for all
    of them, watching whether any opens ``fifo`` for reading.  Returns
    ({name: (rc, stdout, stderr)}, fifo_opened)."""
    procs = {name: _run(argv, cwd) for name, argv in commands.items()}
    opened = False
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs.values()):
            if time.monotonic() > deadline:
                pytest.fail(f"still running after {timeout} s (a hang, a spin or a huge allocation): "
                            f"{[n for n, p in procs.items() if p.poll() is None]}")
            if fifo is not None:
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # succeeds only while a reader has it open
                except OSError as e:
                    assert e.errno == errno.ENXIO, e
                else:
                    opened = True
                    os.close(fd)                                     # the reader sees an empty file
            time.sleep(0.02)
        results = {}
        for name, p in procs.items():
            out, err = p.communicate()
            results[name] = (p.returncode, out, err)
        return results, opened
    finally:
        for p in procs.values():
            _kill(p)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real tiny run, made with the commands."""
    base = tmp_path_factory.mktemp("untrusted")
    paths = write_corpus(str(base))
    data = str(base / "data")
    p = subprocess.run([sys.executable, "-m", "qrnn_lm", "prepare", "--train", paths["train"], "--valid",
                        paths["valid"], "--test", paths["test"], "--out", data, "--tokenizer", "char",
                        "--vocab-size", "16", "--rare", "unk", "--quiet"], cwd=ROOT, env=cli_env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    run = str(base / "run")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--data", data, "--save", run, *TINY,
                        "--max-steps", "4"], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    return run


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def craft(run_dir, path, edit):
    """A copy of the run's best.pt with ``edit(ckpt)`` applied, saved at ``path``."""
    ck = torch.load(os.path.join(run_dir, "best.pt"), map_location="cpu", weights_only=True)
    ck = edit(ck) or ck
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    torch.save(ck, str(path))
    return str(path)


def both_commands(ckpt, text_file):
    return {
        "evaluate": ["-m", "qrnn_lm", "evaluate", "--checkpoint", ckpt, "--file", text_file, "--device", "cpu"],
        "generate": ["-m", "qrnn_lm", "generate", "--checkpoint", ckpt, "--prompt", "象が", "--max-tokens", "5",
                     "--seed", "1", "--device", "cpu"],
    }


def assert_each_one_sentence(results, ckpt, *words):
    """Each command failed with one sentence naming the checkpoint and ``words``
    (looked for outside the checkpoint's path, whose folder repeats the test's name)."""
    for name, (rc, _, err) in results.items():
        try:
            assert_one_sentence(rc, err, os.path.basename(ckpt))
            assert_one_sentence(rc, err, *words, ignore=[os.path.dirname(ckpt)])
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


REFUSAL = ("refus", "outside", "absolute", "not allowed", "unsafe", "confined", "..")


def assert_refused_path(results, name_in_message, tmp):
    for cmd, (rc, _, err) in results.items():
        line = assert_one_sentence(rc, err, name_in_message)
        bare = line.replace(str(tmp), "").lower()
        assert any(w in bare for w in REFUSAL), f"{cmd}: the path is not named as refused: {line!r}"


# ---------------------------------------------------------------------------
# tokenizer paths: never outside the run / dataset, never a non-regular file
# ---------------------------------------------------------------------------
def _sentencepiece_at(model_file):
    def edit(ck):
        ck["vocab"]["tokenizer"] = {"type": "sentencepiece", "model_file": model_file}
    return edit


def test_tokenizer_path_absolute_is_refused_unopened(run_dir, tmp_path, text_file):
    fifo = str(tmp_path / "stolen.model")
    os.mkfifo(fifo)
    ckpt = craft(run_dir, tmp_path / "crafted" / "abs.pt", _sentencepiece_at(fifo))
    results, opened = run_all(both_commands(ckpt, text_file), fifo=fifo)
    assert not opened, f"a checkpoint made the command open {fifo}: {results}"
    assert_refused_path(results, "stolen.model", tmp_path)


def test_tokenizer_path_with_dotdot_is_refused_unopened(run_dir, tmp_path, text_file):
    fifo = str(tmp_path / "stolen.model")
    os.mkfifo(fifo)
    crafted = tmp_path / "crafted"
    # "../stolen.model" is the FIFO seen from the checkpoint's folder and from the working directory alike
    ckpt = craft(run_dir, crafted / "dotdot.pt", _sentencepiece_at("../stolen.model"))
    results, opened = run_all(both_commands(ckpt, text_file), fifo=fifo, cwd=str(crafted))
    assert not opened, f"a checkpoint made the command open {fifo}: {results}"
    assert_refused_path(results, "stolen.model", tmp_path)


def test_tokenizer_path_etc_passwd_is_refused(run_dir, tmp_path, text_file):
    ckpt = craft(run_dir, tmp_path / "passwd.pt", _sentencepiece_at("/etc/passwd"))
    results, _ = run_all(both_commands(ckpt, text_file))
    assert_refused_path(results, "/etc/passwd", tmp_path)


def test_dataset_tokenizer_path_outside_the_dataset_is_refused(run_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(os.path.dirname(run_dir), "data"), data)
    fifo = str(tmp_path / "stolen.model")
    os.mkfifo(fifo)
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))
    vocab["tokenizer"] = {"type": "sentencepiece", "model_file": "../stolen.model"}
    (data / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    argv = [os.path.join(ROOT, "train.py"), "--data", str(data), "--save", str(tmp_path / "run"), *TINY,
            "--max-steps", "1"]
    results, opened = run_all({"train": argv}, fifo=fifo)
    assert not opened, f"a dataset made train.py open {fifo}"
    assert_refused_path(results, "stolen.model", tmp_path)
    assert not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------------------
# sizes and loops: bounded before anything is allocated or run
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("key,value", [("nhid", 10 ** 9), ("emsize", 10 ** 9), ("nlayers", 10 ** 6)])
def test_huge_model_dimensions_are_refused_before_allocation(run_dir, tmp_path, text_file, key, value):
    def edit(ck):
        ck["config"][key] = value
    ckpt = craft(run_dir, tmp_path / "shared.pt", edit)
    results, _ = run_all(both_commands(ckpt, text_file))
    assert_each_one_sentence(results, ckpt, key)


def test_pos_depth_beyond_any_pos_is_refused(run_dir, tmp_path, text_file):
    def edit(ck):
        ck["vocab"]["rare"]["pos_depth"] = 10 ** 12
    ckpt = craft(run_dir, tmp_path / "shared.pt", edit)
    results, _ = run_all(both_commands(ckpt, text_file))
    assert_each_one_sentence(results, ckpt, "pos_depth")


def test_a_checkpoint_version_newer_than_the_code_is_refused(run_dir, tmp_path, text_file):
    def edit(ck):
        ck["version"] = int(ck.get("version", 1)) + 100
    ckpt = craft(run_dir, tmp_path / "shared.pt", edit)
    results, _ = run_all(both_commands(ckpt, text_file))
    assert_each_one_sentence(results, ckpt, "version")


@pytest.mark.parametrize("proto", ["random bytes", "not base64"])
def test_garbage_embedded_tokenizer_is_one_sentence(run_dir, tmp_path, text_file, proto):
    junk = (base64.b64encode(bytes(random.Random(0).randrange(256) for _ in range(3000))).decode("ascii")
            if proto == "random bytes" else "%%% this is not base64 %%%")

    def edit(ck):
        ck["vocab"]["tokenizer"] = {"type": "sentencepiece", "model_file": "sentencepiece.model",
                                    "model_proto": junk}
    ckpt = craft(run_dir, tmp_path / "shared.pt", edit)
    results, _ = run_all(both_commands(ckpt, text_file))
    assert_each_one_sentence(results, ckpt, "tokenizer")
