"""Helpers shared by the test modules: a tiny prepared Japanese corpus
(the ``char_data`` fixture, ``prepare_dataset``, ``write_corpus``), the
smallest training arguments (``TINY``) and the check of a one-sentence CLI
failure.  Modules import the plain helpers with ``from conftest import ...``."""
import os
import random
import signal

import pytest

# train.py runs of the tests never time bf16 on this machine's CPU (--amp left out: off);
# tests/test_train_amp.py covers that rule with the CPU and the measurement faked.
os.environ.setdefault("QRNN_LM_AMP_PROBE", "0")

# The suite sends Ctrl-C and hang-ups to runs on purpose.  Where it was started with
# them ignored (SIGINT in a background job of a non-interactive shell, SIGHUP under
# nohup), the package keeps them ignored by design, and so would every process the
# tests start: give the suite their default actions.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGHUP, signal.SIG_DFL)

SUBJ = ["猫", "犬", "鳥", "私", "彼", "先生", "学生", "子供"]
OBJ = ["本", "魚", "手紙", "歌", "花", "水"]
VERB = ["走る", "見る", "食べる", "書く", "読む", "歌う"]


def write_corpus(directory, n_train=60, n_valid=8, n_test=8, seed=0):
    """A few dozen lines of simple, learnable Japanese; returns {split: path}."""
    rng = random.Random(seed)

    def line():
        return "".join(f"{rng.choice(SUBJ)}が{rng.choice(OBJ)}を{rng.choice(VERB)}。"
                       for _ in range(rng.randint(1, 3)))
    paths = {}
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        p = os.path.join(directory, f"{split}.txt")
        with open(p, "w", encoding="utf-8") as f:
            f.write("\n".join(line() for _ in range(n)) + "\n")
        paths[split] = p
    return paths


def prepare_dataset(directory, tokenizer="char", vocab_size=16, rare="unk", seed=0, **corpus):
    """Write a corpus and run ``qrnn_lm.prepare.main`` on it; returns the dataset dir."""
    from qrnn_lm import prepare
    os.makedirs(directory, exist_ok=True)
    paths = write_corpus(directory, seed=seed, **corpus)
    out = os.path.join(directory, "data")
    rc = prepare.main(["--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
                       "--out", out, "--tokenizer", tokenizer, "--vocab-size", str(vocab_size),
                       "--rare", rare, "--quiet"])
    assert rc == 0
    return out


TINY = ["--emsize", "16", "--nhid", "24", "--nlayers", "2", "--batch_size", "4", "--bptt", "12",
        "--eval-batch-size", "4", "--no-progress"]


@pytest.fixture(scope="module")
def char_data(tmp_path_factory):
    return prepare_dataset(str(tmp_path_factory.mktemp("lmdata")))


def assert_one_sentence_error(rc, err, *needles):
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


# ---------------------------------------------------------------------------
# black-box helpers: the commands run as a user runs them, in subprocesses
# ---------------------------------------------------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(**extra):
    """The environment for a subprocess that imports this checkout's qrnn_lm."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


def run_cli(argv, *, timeout=90, cwd=None, env=None, memory_gib=None):
    """Run ``python ARGV...`` (e.g. ``["train.py", ...]`` or ``["-m", "qrnn_lm", "evaluate", ...]``)
    from the checkout root; returns the CompletedProcess (text).  A run that
    outlives ``timeout`` is killed with its whole process group and fails the
    test as a hang.  ``memory_gib`` caps the address space, so a command that
    tries to allocate a huge model fails fast instead of swapping the machine."""
    import subprocess
    import sys

    def limit():
        if memory_gib:
            import resource
            cap = int(memory_gib * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    argv = [a if not (a.endswith(".py") and not os.path.isabs(a) and os.path.exists(os.path.join(ROOT, a)))
            else os.path.join(ROOT, a) for a in map(str, argv)]
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=cwd or ROOT, env=env or cli_env(),
                            start_new_session=True, preexec_fn=limit if memory_gib else None)
    try:
        out, err = proc.communicate(timeout=timeout)
        hung = False
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate(timeout=30)
        hung = True
    if hung:
        pytest.fail(f"`python {' '.join(argv)}` still ran after {timeout} s (a hang or a spin); "
                    f"stdout tail: {out[-800:]!r}; stderr tail: {err[-800:]!r}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_tree(pid):
    """SIGKILL ``pid``, its process group and every descendant (torchrun's
    workers leave the group), so no pipe stays open after a timeout."""
    import signal
    children = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def assert_one_sentence(rc, stderr, *words, ignore=()):
    """A user-facing failure: a non-zero exit, no traceback, and stderr is one
    line (one sentence) holding every one of ``words`` (case-insensitive).
    The strings in ``ignore`` (e.g. a temporary directory whose name repeats
    the test's name) are cut from the line before the words are looked for."""
    assert rc != 0, f"exit status 0; stderr: {stderr!r}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {stderr!r}"
    bare = lines[0]
    for s in ignore:
        bare = bare.replace(str(s), "")
    for w in words:
        assert str(w).lower() in bare.lower(), f"{w!r} is not in {lines[0]!r}"
    return lines[0]
