"""What every experiment shares: the corpus files, preparing a dataset,
running train.py (or any command) as a logged subprocess and reading the run
directory it writes, evaluating a checkpoint, and the machine description."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time

from experiments.run_dir import read_run
from experiments.store import Store, log
from experiments_config import MODEL

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # benchmarks/
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "ja-debian-docs"))
HELDOUT = "heldout"  # the test split of sweep datasets, renamed so train.py does not score it too


def run_logged(cmd: list, log_path: str, env: dict) -> dict:
    """Run ``cmd``, copy its output to ``log_path`` with a time stamp per line
    (for people reading the log; nothing is read back from it).

    Returns rc, wall seconds, the last output line (for an error message) and
    ru_maxrss of the process itself (os.wait4: its own peak RSS, not its
    children's)."""
    t0 = time.monotonic()
    last = ""
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=REPO, bufsize=1)
        for line in p.stdout:
            logf.write(f"{time.monotonic() - t0:9.2f} {line}")
            logf.flush()
            last = line.rstrip("\n") or last
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": time.monotonic() - t0, "last_line": last,
            "maxrss_bytes": ru.ru_maxrss * 1024}


def child_env(threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def check_rc(what: str, r: dict) -> None:
    if r["rc"]:
        raise RuntimeError(f"{what} failed (rc {r['rc']}): {r['last_line']}")


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def corpus_files(args, profile) -> dict:
    """The text files every dataset is prepared from.  Validation uses every
    4th line of valid.txt (it only picks checkpoints and draws the learning
    curves, so a smaller one leaves more of the budget for training); test is
    the whole test.txt.  --quick takes the first lines of each."""
    out = os.path.join(args.work, "text")
    os.makedirs(out, exist_ok=True)
    files = {}
    for split in ("train", "valid", "test"):
        src = os.path.join(args.data_dir, f"{split}.txt")
        if not os.path.isfile(src):
            sys.exit(f"error: {src} does not exist; pass --data-dir DIR with train/valid/test.txt.")
        n = profile.get("lines", {}).get(split)
        if n is None and split == "train":
            files[split] = src
            continue
        dst = os.path.join(out, f"{split}.txt")
        with open(src, encoding="utf-8") as f:
            lines = f.readlines()
        if n is not None:
            lines = lines[:n]
        if split == "valid":
            lines = lines[::4]
        with open(dst, "w", encoding="utf-8") as f:
            f.writelines(lines)
        files[split] = dst
    return files


def prepare(name: str, flags: list, files: dict, args, profile, store: Store) -> dict:
    """Prepare one dataset (skipped when done); returns its summary."""
    out = os.path.join(args.work, "data", name)
    done = store.get("datasets", name)
    if done and any(os.path.isfile(os.path.join(out, f"{s}.meta.json")) for s in ("test", HELDOUT)) \
            and name not in args.redo:
        if done.get("dir") != out:  # the work folder moved
            done = dict(done, dir=out)
            store.put("datasets", name, done)
        return done
    if os.path.exists(out):
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "qrnn_lm", "prepare", "--train", files["train"], "--valid", files["valid"],
           "--test", files["test"], "--out", out, "--workers", str(profile["workers"]), "--seed", "0"] + flags
    log(f"prepare {name}: {' '.join(flags)}")
    r = run_logged(cmd, os.path.join(args.work, "logs", f"prepare_{name}.log"), child_env(args.threads))
    check_rc(f"prepare {name}", r)
    summary = dataset_summary(out)
    summary.update(flags=flags, prepare_seconds=r["wall_s"])
    store.put("datasets", name, summary)
    log(f"  {summary['outputs']} outputs, {summary['buckets']} buckets, {r['wall_s']:.0f}s")
    return summary


def dataset_summary(out: str) -> dict:
    """Sizes and bucket shares of a prepared dataset, read from its files."""
    from qrnn_lm.vocab import Vocabulary
    from report.tables import within_bucket_bits
    vocab = Vocabulary.load(out)
    meta = {s: json.load(open(os.path.join(out, f"{s}.meta.json"), encoding="utf-8")) for s in ("train", "test")}
    return {"dir": out, "outputs": len(vocab), "kept_words": len(vocab.word_to_id),
            "buckets": sum(1 for b in vocab.buckets.values() if b["tokens"]), "rare_types": len(vocab.rare_words),
            "train_tokens": meta["train"]["tokens"], "test_tokens": meta["test"]["tokens"],
            "test_characters": meta["test"]["characters"],
            "test_bucket_fraction": meta["test"].get("bucket_tokens", 0) / max(meta["test"]["tokens"], 1),
            "train_bucket_fraction": meta["train"].get("bucket_tokens", 0) / max(meta["train"]["tokens"], 1),
            "within_bucket_bpc": within_bucket_bits({"dir": out, "test_characters": meta["test"]["characters"]})}


# ---------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------
def train(name: str, data: str, minutes: float, extra: list, args, store: Store, section: str) -> dict:
    """One train.py run of MODEL for ``minutes`` (skipped when its result is
    stored); what it wrote is read back from the run directory."""
    done = store.get(section, name)
    if done and name not in args.redo:
        return done
    save = os.path.join(args.work, "runs", section, name)
    if os.path.exists(save):
        shutil.rmtree(save)
    cmd = [sys.executable, "-u", os.path.join(REPO, "train.py"), "--data", data, "--save", save,
           "--max-minutes", str(minutes)] + MODEL + extra
    log(f"train {section}/{name}: {minutes} min, {' '.join(extra)}")
    load0 = os.getloadavg()[0]
    r = run_logged(cmd, os.path.join(args.work, "logs", f"train_{section}_{name}.log"), child_env(args.threads))
    check_rc(f"train {name}", r)
    out = {"command": " ".join(["python", os.path.relpath(cmd[2], REPO)] + cmd[3:]).replace(args.work, "$WORK"),
           "minutes": minutes, "maxrss_bytes": r["maxrss_bytes"], "wall_s": r["wall_s"], "load_avg_before": load0,
           "load_avg_after": os.getloadavg()[0]}
    out.update(read_run(save))
    return out


def evaluate_last(run_dir: str, test_file: str, args) -> dict:
    """Test BPC of the run's last weights (the state at the end of the budget),
    from the JSON line ``qrnn_lm evaluate`` prints."""
    cmd = [sys.executable, "-m", "qrnn_lm", "evaluate", "--checkpoint", os.path.join(run_dir, "last.pt"),
           "--file", test_file, "--batch-size", "32", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads), cwd=REPO)
    if p.returncode:
        raise RuntimeError(f"evaluate {run_dir} failed: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    mem = None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    import torch
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=REPO).stdout.strip()
    except OSError:
        commit = None
    from qrnn_lm import ops
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "torch": torch.__version__,
            "python": platform.python_version(), "commit": commit, "gpu": torch.cuda.is_available(),
            "compiled_kernels": sorted(ops.compiled_devices())}
