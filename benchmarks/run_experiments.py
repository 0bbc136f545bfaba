"""Run every experiment of docs/RESULTS.md on the shared Japanese corpus and
write the report: tables, PNG plots, the command, machine and date.

    python benchmarks/run_experiments.py                 # the real run (~45 min on 2 CPU cores)
    python benchmarks/run_experiments.py --quick         # plumbing check on a slice (~5 min)
    python benchmarks/run_experiments.py --report-only   # rewrite the report from the JSON

Experiments (same model and the same wall-clock budget for every training run):

1. rare words: MeCab vocabulary cut to ~40% of the training types, rare words
   as ``unk`` / ``pos`` (depth 1, 2) / ``kmeans`` (K = 64, 256, 1024) /
   ``pos+kmeans``; the full vocabulary (no cut), ``sentencepiece`` (as many
   pieces as kept words) and ``char``.  Test bits per character, parameters,
   peak RSS of the training process, 5 generated samples per model with the
   fraction of rare-word (bucket) tokens and a check that no bucket name
   leaked into the text.
2. QRNN vs LSTM, stream and sentence batching, on the k-means-256 data:
   tokens/s, test BPC of the last weights at equal wall time, validation BPC
   against training minutes.
3. kernel and layer speed tables from benchmarks/results/*.json (written by
   bench_fo_pool.py, bench_rnn.py, bench_lm.py).
4. peak memory of one training step against vocabulary size (synthetic
   Zipfian ids) for full softmax, 40% kept + buckets, adaptive softmax --
   each point is ``benchmarks/bench_lm.py``'s own memory measurement
   (``_memory_worker``, a fresh process per configuration).

The script is resumable: results are saved to the JSON after every step
(benchmarks/results/experiments.json) and steps found there are skipped;
prepared datasets and run directories live in --work.  ``--redo NAME`` runs
one step again.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "ja-debian-docs"))

# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------
MODEL = ["--emsize", "128", "--nhid", "256", "--nlayers", "2", "--softmax", "adaptive",
         "--dropout", "0.1", "--dropouth", "0.1", "--dropouti", "0.1", "--dropoute", "0.0",
         "--batch_size", "32", "--bptt", "70", "--optimizer", "adamw", "--lr", "3e-3",
         "--eval-batch-size", "32", "--seed", "1111", "--no-progress",
         "--lr-decay", "1.0"]  # no plateau decay: frequent validations would cut the lr at noise
CUT = 0.4                 # kept fraction of the MeCab training types
RARE_METHODS = [          # (name, label, prepare flags beyond --vocab-size N)
    ("full", "full vocabulary (no cut)", ["--rare", "unk"]),
    ("unk", "unk (1 bucket)", ["--rare", "unk"]),
    ("pos1", "pos, depth 1", ["--rare", "pos", "--pos-depth", "1"]),
    ("pos2", "pos, depth 2", ["--rare", "pos", "--pos-depth", "2"]),
    ("kmeans64", "kmeans K=64", ["--rare", "kmeans", "--buckets", "64"]),
    ("kmeans256", "kmeans K=256", ["--rare", "kmeans", "--buckets", "256"]),
    ("kmeans1024", "kmeans K=1024", ["--rare", "kmeans", "--buckets", "1024"]),
    ("poskmeans256", "pos+kmeans K=256", ["--rare", "pos+kmeans", "--buckets", "256", "--pos-depth", "2"]),
    ("sentencepiece", "sentencepiece (as many pieces)", ["--tokenizer", "sentencepiece", "--rare", "unk"]),
    ("char", "char (all characters)", ["--tokenizer", "char", "--rare", "pos"]),
]
RNN_RUNS = [("qrnn", "stream"), ("lstm", "stream"), ("qrnn", "sentences"), ("lstm", "sentences")]
RNN_DATA = "kmeans256"
MEM_SIZES = [10_000, 25_000, 50_000, 100_000, 150_000, 250_000]
MEM_METHODS = [("full", "full softmax"), ("buckets", "40% kept + 256 buckets, full softmax"),
               ("adaptive", "adaptive softmax")]
SAMPLES, SAMPLE_TOKENS = 5, 60
REPEAT, REPEAT_SEED = ["unk", "kmeans256"], 2   # rare-word runs repeated with another seed

# Rare-word sweep: every scheme trained for the same number of steps.
SWEEP_MODEL = ["--rnn", "qrnn", "--emsize", "64", "--nhid", "128", "--nlayers", "2", "--softmax", "full",
               "--dropout", "0.1", "--dropouth", "0.1", "--dropouti", "0.1", "--dropoute", "0.0",
               "--batch_size", "32", "--bptt", "70", "--optimizer", "adamw", "--lr", "3e-3",
               "--eval-batch-size", "32", "--no-progress", "--lr-decay", "1.0", "--epochs", "1000",
               "--log-interval", "50"]
SWEEP_SCHEMES = [  # (name, label, prepare flags beyond --vocab-size N; {K}, {FASTTEXT}, {CONTEXT} filled in)
    ("unk", "unk (1 bucket)", ["--rare", "unk"]),
    ("pos", "pos, depth 2", ["--rare", "pos", "--pos-depth", "2"]),
    ("pos+script", "pos × character type", ["--rare", "pos+script", "--pos-depth", "2"]),
    ("kmeans-ppmi", "k-means, PPMI-SVD vectors", ["--rare", "kmeans", "--buckets", "{K}", "--vectors", "ppmi"]),
    ("kmeans-fasttext", "k-means, fastText vectors", ["--rare", "kmeans", "--buckets", "{K}",
                                                      "--vectors", "{FASTTEXT}"]),
    ("kmeans-context", "k-means, context vectors (unk model)", ["--rare", "kmeans", "--buckets", "{K}",
                                                                "--vectors", "{CONTEXT}"]),
    ("pos+kmeans-fasttext", "pos+kmeans, fastText vectors", ["--rare", "pos+kmeans", "--buckets", "{K}",
                                                             "--pos-depth", "2", "--vectors", "{FASTTEXT}"]),
]

PROFILES = {
    # Minutes of training per rare-word run and per QRNN/LSTM run.  Validation intervals (steps) give every QRNN/LSTM run about ten
    # validations in its budget (the LSTM takes about half as many steps, and
    # a sentence batch holds ~700 tokens against 2240 for a 32 x 70 window);
    # each must be a multiple of the log interval: the learning curve times a
    # validation by the log line of its step.
    "real": {"rare_minutes": 1.5, "rnn_minutes": 2.0, "eval_interval": {"qrnn-stream": 60, "lstm-stream": 30,
                                                                         "qrnn-sentences": 180, "lstm-sentences": 90},
             "log_interval": 10, "methods": [m[0] for m in RARE_METHODS], "mem_sizes": MEM_SIZES,
             "workers": 2,
             # 2 shares x 6 schemes x 3 seeds fit in ~40 minutes of a shared 2-core machine;
             # kmeans-ppmi (section 1's k-means) is left out for time.
             "sweep": {"shares": [0.10, 0.20], "steps": 60, "seeds": [1, 2, 3], "buckets": 64,
                       "samples": 20, "sample_tokens": 60, "valid_every": 16,
                       "schemes": [n for n, _, _ in SWEEP_SCHEMES if n != "kmeans-ppmi"]}},
    "quick": {"rare_minutes": 0.1, "rnn_minutes": 0.15, "eval_interval": {"qrnn-stream": 5, "lstm-stream": 5,
                                                                           "qrnn-sentences": 5, "lstm-sentences": 5},
              "log_interval": 1, "methods": ["full", "unk", "pos1", "kmeans64", "kmeans256", "sentencepiece",
                                             "char"],
              "mem_sizes": [10_000, 30_000], "workers": 1,
              "lines": {"train": 3000, "valid": 800, "test": 300},
              "sweep": {"shares": [0.1, 0.2], "steps": 5, "seeds": [1, 2], "buckets": 8, "valid_every": 4,
                        "samples": 2, "sample_tokens": 20, "schemes": [n for n, _, _ in SWEEP_SCHEMES]}},
}


# ---------------------------------------------------------------------------
# bookkeeping
# ---------------------------------------------------------------------------
class Store:
    """The results JSON, rewritten atomically after every step."""

    def __init__(self, path: str):
        self.path = path
        self.d = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}

    def get(self, section: str, key: str):
        return self.d.get(section, {}).get(key)

    def put(self, section: str, key: str, value) -> None:
        self.d.setdefault(section, {})[key] = value
        self.save()

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.d, f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


def log(msg: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def run_logged(cmd: list, log_path: str, env: dict) -> dict:
    """Run ``cmd``, copy its output to ``log_path`` with a time stamp per line.

    Returns rc, wall seconds, the (seconds, line) pairs and ru_maxrss of the
    process itself (os.wait4: its own peak RSS, not its children's)."""
    t0 = time.monotonic()
    lines = []
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=REPO, bufsize=1)
        for line in p.stdout:
            t = time.monotonic() - t0
            logf.write(f"{t:9.2f} {line}")
            logf.flush()
            lines.append((t, line.rstrip("\n")))
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": time.monotonic() - t0, "lines": lines, "maxrss_bytes": ru.ru_maxrss * 1024}


def child_env(threads: int | None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


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
        return done
    if os.path.exists(out):
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "qrnn_lm", "prepare", "--train", files["train"], "--valid", files["valid"],
           "--test", files["test"], "--out", out, "--workers", str(profile["workers"]), "--seed", "0"] + flags
    log(f"prepare {name}: {' '.join(flags)}")
    r = run_logged(cmd, os.path.join(args.work, "logs", f"prepare_{name}.log"), child_env(args.threads))
    if r["rc"]:
        raise RuntimeError(f"prepare {name} failed (rc {r['rc']}): {r['lines'][-1][1] if r['lines'] else ''}")
    from qrnn_lm.vocab import Vocabulary
    vocab = Vocabulary.load(out)
    meta = {s: json.load(open(os.path.join(out, f"{s}.meta.json"), encoding="utf-8")) for s in ("train", "test")}
    summary = {"dir": out, "flags": flags, "prepare_seconds": r["wall_s"], "outputs": len(vocab),
               "kept_words": len(vocab.word_to_id), "buckets": sum(1 for b in vocab.buckets.values() if b["tokens"]),
               "rare_types": len(vocab.rare_words),
               "train_tokens": meta["train"]["tokens"], "test_tokens": meta["test"]["tokens"],
               "test_characters": meta["test"]["characters"],
               "test_bucket_fraction": meta["test"].get("bucket_tokens", 0) / max(meta["test"]["tokens"], 1),
               "train_bucket_fraction": meta["train"].get("bucket_tokens", 0) / max(meta["train"]["tokens"], 1)}
    store.put("datasets", name, summary)
    log(f"  {summary['outputs']} outputs, {summary['buckets']} buckets, {r['wall_s']:.0f}s")
    return summary


# ---------------------------------------------------------------------------
# training, evaluation, samples
# ---------------------------------------------------------------------------
HELDOUT = "heldout"  # the test split of sweep datasets, renamed so train.py does not score it too
_STEP = re.compile(r"\| step +(\d+) ")
_VALID = re.compile(r"^\| validation \| step +(\d+) ")


def train(name: str, data: str, minutes: float, extra: list, args, store: Store, section: str) -> dict:
    """One train.py run (skipped when its result is stored)."""
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
    if r["rc"]:
        raise RuntimeError(f"train {name} failed (rc {r['rc']}): {r['lines'][-1][1] if r['lines'] else ''}")
    res = json.load(open(os.path.join(save, "results.json"), encoding="utf-8"))
    rows = [json.loads(x) for x in open(os.path.join(save, "metrics.jsonl"), encoding="utf-8")]
    tps, after_valid = [], False
    for x in rows:  # the log interval after a validation also timed the validation: leave it out
        if x.get("split") == "train" and not after_valid:
            tps.append(x["tok_per_s"])
        after_valid = x.get("split") == "valid" or (after_valid and x.get("split") != "train")
    tps.sort()
    out = {"command": " ".join(["python", os.path.relpath(cmd[2], REPO)] + cmd[3:]).replace(args.work, "$WORK"),
           "minutes": minutes, "steps": res["step"], "test_bpc": res["test"]["bpc"], "test_ppl": res["test"]["ppl"],
           "valid_bpc": res.get("valid", {}).get("bpc"), "tokens_per_s": tps[len(tps) // 2] if tps else None,
           "maxrss_bytes": r["maxrss_bytes"], "wall_s": r["wall_s"], "load_avg_before": load0,
           "load_avg_after": os.getloadavg()[0], "curve": learning_curve(r["lines"], rows),
           "best_step": best_step(rows, res["step"])}
    m = re.search(r"([\d.]+)M parameters", "\n".join(x[1] for x in r["lines"]))
    out["params"] = int(float(m.group(1)) * 1e6) if m else None
    return out


def best_step(rows: list, last_step: int) -> int:
    """Step of the weights train.py evaluated at the end (its best.pt: the best
    validation loss; the last step when there was no validation)."""
    val = [x for x in rows if x.get("split") == "valid" and not x.get("final")]
    return min(val, key=lambda x: (x["loss"], x["step"]))["step"] if val else last_step


def learning_curve(lines: list, rows: list) -> list:
    """Validation BPC against training minutes: the time of the train log line at
    the validation's step, minus the time spent in earlier validations.  A
    validation at a step without a log line (the one train.py runs when the
    budget ends) is timed as its own line minus the median validation time."""
    t_start = next((t for t, s in lines if s.startswith("model:")), 0.0)
    log_t, val_t = {}, {}
    for t, s in lines:
        m = _VALID.match(s)
        if m:
            val_t.setdefault(int(m.group(1)), t)  # the first of two validations at one step
            continue
        m = _STEP.search(s)
        if m and s.startswith("| epoch"):
            log_t[int(m.group(1))] = t
    bpc = {x["step"]: x["bpc"] for x in rows if x.get("split") == "valid" and not x.get("final")}
    durations = sorted(val_t[k] - log_t[k] for k in val_t if k in log_t)
    typical = durations[len(durations) // 2] if durations else 0.0
    curve, spent = [], 0.0
    for step in sorted(val_t):
        t_train = log_t.get(step, val_t[step] - typical)
        if step not in bpc:
            continue
        curve.append({"step": step, "minutes": (t_train - t_start - spent) / 60, "valid_bpc": bpc[step]})
        spent += val_t[step] - t_train
    return curve


def evaluate_last(run_dir: str, test_file: str, args) -> dict:
    """Test BPC of the run's last weights (the state at the end of the budget)."""
    cmd = [sys.executable, "-m", "qrnn_lm", "evaluate", "--checkpoint", os.path.join(run_dir, "last.pt"),
           "--file", test_file, "--batch-size", "32", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(args.threads), cwd=REPO)
    if p.returncode:
        raise RuntimeError(f"evaluate {run_dir} failed: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def samples(run_dir: str) -> dict:
    """SAMPLES texts of SAMPLE_TOKENS tokens (seeds 1..SAMPLES, temperature 1),
    the fraction of sampled tokens that were bucket tokens (expanded to a word
    by P(word | bucket)), and any bucket name found in the text."""
    from qrnn_lm.lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir, device="cpu")
    vocab = lm.vocab
    names = sorted({b["name"] for b in vocab.buckets.values()})
    drawn = {"n": 0}
    sample_word = vocab.sample_word

    def counting(bucket_id, generator=None, **kw):  # every bucket the model sampled passes here
        drawn["n"] += 1
        return sample_word(bucket_id, generator, **kw)

    vocab.sample_word = counting
    out = []
    for seed in range(1, SAMPLES + 1):
        drawn["n"] = 0
        text = lm.generate("", max_tokens=SAMPLE_TOKENS, seed=seed)
        leaked = sorted({n for n in names if n in text})
        out.append({"seed": seed, "text": text, "rare_tokens": drawn["n"], "tokens": SAMPLE_TOKENS,
                    "leaked": leaked})
    nparams = sum(p.numel() for p in lm.model.parameters())
    return {"samples": out, "rare_fraction": sum(s["rare_tokens"] for s in out) / (SAMPLES * SAMPLE_TOKENS),
            "leaks": sum(len(s["leaked"]) for s in out), "params": nparams}


# ---------------------------------------------------------------------------
# experiments
# ---------------------------------------------------------------------------
def exp_rare(args, profile, files, store):
    full = prepare("full", ["--vocab-size", str(10 ** 9), "--rare", "unk"], files, args, profile, store)
    n_keep = round(CUT * full["kept_words"])
    store.d.setdefault("meta", {})["cut"] = {"types": full["kept_words"], "kept": n_keep, "fraction": CUT}
    store.save()
    for name, label, flags in RARE_METHODS:
        if name not in profile["methods"]:
            continue
        if store.get("rare", name) and name not in args.redo:
            continue
        try:
            if name == "full":
                ds = full
            else:
                size = 10 ** 9 if name == "char" else n_keep  # a character vocabulary is small: keep it all
                ds = prepare(name, ["--vocab-size", str(size)] + flags, files, args, profile, store)
            r = train(name, ds["dir"], profile["rare_minutes"], ["--rnn", "qrnn", "--batching", "stream",
                                                                  "--log-interval", str(profile["log_interval"])],
                      args, store, "rare")
            r.update(samples(os.path.join(args.work, "runs", "rare", name)))
        except (RuntimeError, OSError, ValueError, KeyError) as e:  # the other methods still run
            log(f"  {name} failed: {e}")
            store.put("failed", f"rare/{name}", str(e))
            continue
        r["label"] = label
        store.put("rare", name, r)
        store.d.get("failed", {}).pop(f"rare/{name}", None)
        log(f"  {name}: test bpc {r['test_bpc']:.4f}, {r['steps']} steps, rare in samples "
            f"{100 * r['rare_fraction']:.1f}%, leaks {r['leaks']}")


def exp_rnn(args, profile, files, store):
    full = store.get("datasets", "full")
    n_keep = round(CUT * full["kept_words"]) if full else None
    if full is None:
        full = prepare("full", ["--vocab-size", str(10 ** 9), "--rare", "unk"], files, args, profile, store)
        n_keep = round(CUT * full["kept_words"])
    flags = dict((m[0], m[2]) for m in RARE_METHODS)[RNN_DATA]
    ds = prepare(RNN_DATA, ["--vocab-size", str(n_keep)] + flags, files, args, profile, store)
    for rnn, batching in RNN_RUNS:
        name = f"{rnn}-{batching}"
        if store.get("rnn", name) and name not in args.redo:
            continue
        extra = ["--rnn", rnn, "--batching", batching, "--eval-interval", str(profile["eval_interval"][name]),
                 "--log-interval", str(profile["log_interval"])]
        try:
            r = train(name, ds["dir"], profile["rnn_minutes"], extra, args, store, "rnn")
            last = evaluate_last(os.path.join(args.work, "runs", "rnn", name), files["test"], args)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            log(f"  {name} failed: {e}")
            store.put("failed", f"rnn/{name}", str(e))
            continue
        r["test_bpc_last"] = last["bpc"]
        store.put("rnn", name, r)
        store.d.get("failed", {}).pop(f"rnn/{name}", None)
        log(f"  {name}: {r['tokens_per_s']:.0f} tok/s, test bpc (last weights) {last['bpc']:.4f}")


def exp_repeat(args, profile, files, store):
    """Two rare-word runs again with another seed: how far apart two runs of
    the same setup land (the spread the comparisons of section 1 live with)."""
    for name in REPEAT:
        key = f"{name}-seed{REPEAT_SEED}"
        ds = store.get("datasets", name)
        if ds is None or (store.get("repeat", key) and key not in args.redo):
            continue
        try:
            r = train(key, ds["dir"], profile["rare_minutes"],
                      ["--rnn", "qrnn", "--batching", "stream", "--log-interval", str(profile["log_interval"]),
                       "--seed", str(REPEAT_SEED)], args, store, "repeat")
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            log(f"  {key} failed: {e}")
            store.put("failed", f"repeat/{key}", str(e))
            continue
        store.put("repeat", key, r)
        log(f"  {key}: test bpc {r['test_bpc']:.4f}, {r['steps']} steps")


def token_nll(run_dir: str, data_dir: str, split_name: str = "test"):
    """-log P (nats) of every test token under the run's evaluated checkpoint,
    scored exactly as train.py scores the test split (stream columns of 32,
    windows of 70, state carried), and the test split itself."""
    import numpy as np
    import torch
    from qrnn_lm.data import StreamBatches, load_split
    from qrnn_lm.lm import build_model, load_checkpoint, load_vocab_dict
    ckpt = load_checkpoint(run_dir)
    vocab = load_vocab_dict(ckpt["vocab"], ckpt["path"])
    model = build_model(ckpt, vocab).eval()
    split = load_split(data_dir, split_name)
    b = StreamBatches(split.ids, vocab.eos_id, 32, 70, train=False)
    out, state = np.zeros(len(split.ids)), None
    with torch.no_grad():
        for offset, seq_len in b.plan(0):
            x, y = b.window(offset, seq_len)
            nll, state = model(x, state, targets=y)
            state = model.detach_state(state)
            t = np.arange(offset, offset + seq_len)[:, None]
            valid = t < b.col_len[None, :]
            out[(b.col_start[None, :] + t)[valid]] = nll.double().numpy()  # target of input k is ids[k]
    return out, split, vocab


def exp_breakdown(args, profile, store):
    """Where the test bits go, per class of token, for the MeCab models: kept
    words, `</s>`, rare words seen in training, words never seen in training
    (the same token positions in every MeCab dataset; 'unseen' = a bucket token
    of the full-vocabulary dataset)."""
    import math
    import numpy as np
    full = store.get("datasets", "full")
    if full is None:
        return
    from qrnn_lm.vocab import Vocabulary
    fv = Vocabulary.load(full["dir"])
    fids = np.load(os.path.join(full["dir"], "test.ids.npy"))
    unseen = fv.bucket_mask[fids]
    for name, _, flags in RARE_METHODS:
        if "--tokenizer" in flags or store.get("rare", name) is None:
            continue
        if store.get("breakdown", name) and name not in args.redo:
            continue
        ds = store.get("datasets", name)
        nll, split, vocab = token_nll(os.path.join(args.work, "runs", "rare", name), ds["dir"])
        ids, lp = np.asarray(split.ids), np.asarray(split.rare_logp, dtype=np.float64)
        bucket = vocab.bucket_mask[ids]
        eos = ids == vocab.eos_id
        classes = {"kept words": ~bucket & ~eos, "</s>": eos, "seen rare words": bucket & ~unseen,
                   "unseen words": unseen}
        denom = split.characters * math.log(2)
        row = {"total_bpc": float((nll.sum() - lp.sum()) / denom)}
        for cname, m in classes.items():
            row[cname] = {"tokens": int(m.sum()), "model_bpc": float(nll[m].sum() / denom),
                          "within_bucket_bpc": float(-lp[m].sum() / denom)}
        store.put("breakdown", name, row)
        log(f"breakdown {name}: total {row['total_bpc']:.4f} (train.py: {store.get('rare', name)['test_bpc']:.4f})")


# ---------------------------------------------------------------------------
# rare-word sweep: vocabulary cuts x bucket schemes x seeds, fixed step budget
# ---------------------------------------------------------------------------
def attempt(store: Store, key: str, fn):
    """Run one step; on failure log it, record it under ``failed`` and return
    None so the other steps still run; on success clear an old failure."""
    try:
        out = fn()
    except (RuntimeError, OSError, ValueError, KeyError, ImportError) as e:
        log(f"  {key} failed: {e}")
        store.put("failed", key, str(e))
        return None
    if store.d.get("failed", {}).pop(key, None) is not None:
        store.save()
    return out


def cut_sizes(full_dir: str, shares: list) -> dict:
    """Kept-word counts whose test rare share (tokens that are not among the N
    most frequent training words, words never seen in training included, over
    all test tokens with `</s>`) is closest to each target share."""
    import numpy as np
    from qrnn_lm.vocab import Vocabulary
    v = Vocabulary.load(full_dir)
    ids = np.load(os.path.join(full_dir, "test.ids.npy"))
    # rank of each output among words (by training count, as `prepare` orders kept words)
    rank = np.full(len(v), -1, dtype=np.int64)
    words = [i for i in range(len(v)) if i in set(v.word_to_id.values())]
    rank[np.asarray(words)] = np.arange(len(words))
    r = rank[ids]
    unseen = v.bucket_mask[ids]
    n = len(ids)
    # tokens of rank >= N are rare at cut N: share(N) = (unseen + #(r >= N)) / n
    hist = np.bincount(r[r >= 0], minlength=len(words))
    at_least = np.concatenate([np.cumsum(hist[::-1])[::-1], [0]])  # at_least[N] = #(r >= N)
    share = (unseen.sum() + at_least) / n
    out = {}
    for target in shares:
        N = int(np.argmin(np.abs(share[1:] - target))) + 1
        out[f"{round(100 * target)}%"] = {"target": target, "kept": N, "test_rare_share": float(share[N])}
    return out


def write_fasttext_vec(full_dir: str, path: str, seed: int = 0) -> dict:
    """fastText vectors of every training word (the same as ``prepare --vectors
    fasttext`` computes), once for all cuts, as a .vec file."""
    import numpy as np
    from qrnn_lm.vocab import Vocabulary
    from qrnn_lm.wordvec import fasttext_vectors
    if os.path.isfile(path):
        return {"path": path, "cached": True}
    t0 = time.time()
    v = Vocabulary.load(full_dir)
    ids = np.load(os.path.join(full_dir, "train.ids.npy"))
    cuts = np.flatnonzero(ids == v.eos_id)
    itos = v.itos
    sentences, start = [], 0
    for c in cuts.tolist():
        sentences.append([itos[i] for i in ids[start:c].tolist()])
        start = c + 1
    words = sorted(v.word_to_id)
    x, has = fasttext_vectors(sentences, words, dim=64, seed=seed)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{int(has.sum())} {x.shape[1]}\n")
        for w, row, h in zip(words, x, has):
            if h and " " not in w:
                f.write(w + " " + " ".join(f"{a:.6f}" for a in row) + "\n")
    os.replace(tmp, path)
    return {"path": path, "seconds": time.time() - t0, "words": int(has.sum())}


_TEST_POS1 = {}


def pos1_counts(lines) -> dict:
    """UniDic pos1 (名詞, 助詞, ...) counts of MeCab tokens of ``lines``."""
    from collections import Counter
    from qrnn_lm.tokenizers import MecabTokenizer
    tok = _TEST_POS1.setdefault("tok", MecabTokenizer())
    c = Counter()
    for line in lines:
        line = line.strip()
        if line:
            c.update(pos.split("-")[0] for _, pos in tok.tokenize(line))
    return dict(c)


def generation_pos(run_dir: str, test_counts: dict, n: int, tokens: int) -> dict:
    """``n`` samples of ``tokens`` tokens (seeds 1..n, temperature 1, no
    prompt), re-tokenized with MeCab: pos1 counts, Jensen-Shannon divergence
    (bits) from the test text's pos1 distribution, share of content words."""
    import math
    from qrnn_lm.lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir, device="cpu")
    names = sorted({b["name"] for b in lm.vocab.buckets.values()})
    texts = [lm.generate("", max_tokens=tokens, seed=seed) for seed in range(1, n + 1)]
    counts = pos1_counts(line for t in texts for line in t.split("\n"))
    return {"pos1": counts, "js_bits": js_divergence(counts, test_counts),
            "content_share": content_share(counts), "samples": n, "tokens_each": tokens,
            "leaks": sum(sum(name in t for name in names) for t in texts), "texts": texts[:3]}


def _sweep_cmd(args, data: str, save: str, steps: int, seed: int) -> list:
    return [sys.executable, "-u", os.path.join(REPO, "train.py"), "--data", data, "--save", save,
            "--max-steps", str(steps), "--seed", str(seed)] + SWEEP_MODEL


def sweep_bits(run_dir: str, data_dir: str) -> dict:
    """Test bits per character split into kept words (and `</s>`), choosing
    the bucket (the model's -log P of bucket tokens) and choosing the word
    inside it (-log P(word | bucket))."""
    import math
    import numpy as np
    nll, split, vocab = token_nll(run_dir, data_dir, HELDOUT)
    ids, lp = np.asarray(split.ids), np.asarray(split.rare_logp, dtype=np.float64)
    bucket = vocab.bucket_mask[ids]
    denom = split.characters * math.log(2)
    return {"total": float((nll.sum() - lp.sum()) / denom), "kept": float(nll[~bucket].sum() / denom),
            "bucket": float(nll[bucket].sum() / denom), "within": float(-lp[bucket].sum() / denom),
            "rare_tokens": int(bucket.sum()), "tokens": int(len(ids))}


def exp_sweep(args, profile, files, store):
    """Rare-word schemes at several vocabulary cuts, each trained for the same
    number of steps with several seeds (paired: seed s is the same for every
    scheme), scored on test bits per character and generated-text POS."""
    sp = profile["sweep"]
    full = prepare("full", ["--vocab-size", str(10 ** 9), "--rare", "unk"], files, args, profile, store)
    cuts = store.get("sweep_meta", "cuts")
    if cuts is None or sorted(cuts) != sorted(f"{round(100 * s)}%" for s in sp["shares"]):
        cuts = cut_sizes(full["dir"], sp["shares"])
        store.put("sweep_meta", "cuts", cuts)
    store.put("sweep_meta", "config", {"steps": sp["steps"], "seeds": sp["seeds"], "buckets": sp["buckets"],
                                       "model": " ".join(SWEEP_MODEL), "samples": sp["samples"],
                                       "sample_tokens": sp["sample_tokens"],
                                       "schemes": {n: {"label": lab, "flags": f} for n, lab, f in SWEEP_SCHEMES
                                                   if n in sp["schemes"]}})
    sweep_files = dict(files)
    sweep_files["valid"] = os.path.join(args.work, "text", "valid_sweep.txt")
    with open(os.path.join(args.data_dir, "valid.txt"), encoding="utf-8") as f:
        lines = f.readlines()[:profile.get("lines", {}).get("valid")]
    with open(sweep_files["valid"], "w", encoding="utf-8") as f:  # validation only ends the run: keep it small
        f.writelines(lines[::sp["valid_every"]])
    vec = os.path.join(args.work, "fasttext.vec")
    if any("fasttext" in n for n in sp["schemes"]):
        info = attempt(store, "sweep/fasttext", lambda: write_fasttext_vec(full["dir"], vec))
        if info and not info.get("cached"):
            store.put("sweep_meta", "fasttext", info)
    test_counts = store.get("sweep_meta", "test_pos1")
    if test_counts is None:
        test_counts = pos1_counts(open(files["test"], encoding="utf-8"))
        store.put("sweep_meta", "test_pos1", test_counts)
    for cut, c in sorted(cuts.items(), key=lambda kv: kv[1]["target"]):
        for name, label, flags in SWEEP_SCHEMES:
            if name not in sp["schemes"]:
                continue
            ds_name = f"sweep-{cut.rstrip('%')}-{name}"
            flags = [f.replace("{K}", str(sp["buckets"])).replace("{FASTTEXT}", vec)
                     .replace("{CONTEXT}", os.path.join(args.work, "runs", "sweep", f"{cut.rstrip('%')}-unk-s{sp['seeds'][0]}"))
                     for f in flags]
            ds = attempt(store, f"sweep/{cut}/{name}/prepare",
                         lambda: prepare(ds_name, ["--vocab-size", str(c["kept"])] + flags, sweep_files, args,
                                         profile, store))
            if ds is None:
                continue
            for ext in (".ids.npy", ".rare_logp.npy", ".meta.json"):
                src = os.path.join(ds["dir"], "test" + ext)
                if os.path.exists(src):
                    os.replace(src, os.path.join(ds["dir"], HELDOUT + ext))
            for seed in sp["seeds"]:
                key = f"{cut}/{name}/s{seed}"
                if store.get("sweep", key) and key not in args.redo:
                    continue
                run = os.path.join(args.work, "runs", "sweep", f"{cut.rstrip('%')}-{name}-s{seed}")

                def one():
                    if os.path.exists(run):
                        shutil.rmtree(run)
                    cmd = _sweep_cmd(args, ds["dir"], run, sp["steps"], seed)
                    r = run_logged(cmd, os.path.join(args.work, "logs", f"sweep_{cut.rstrip('%')}_{name}_s{seed}.log"),
                                   child_env(args.threads))
                    if r["rc"]:
                        raise RuntimeError(f"train failed (rc {r['rc']}): {r['lines'][-1][1] if r['lines'] else ''}")
                    res = json.load(open(os.path.join(run, "results.json"), encoding="utf-8"))
                    out = {"steps": res["step"], "valid_bpc": res.get("valid", {}).get("bpc"), "wall_s": r["wall_s"],
                           "bits": sweep_bits(run, ds["dir"]),
                           "gen": generation_pos(run, test_counts, sp["samples"], sp["sample_tokens"])}
                    out["test_bpc"] = out["bits"]["total"]
                    return out
                out = attempt(store, f"sweep/{key}", one)
                if out is not None:
                    store.put("sweep", key, out)
                    log(f"  sweep {key}: test bpc {out['test_bpc']:.4f} (kept {out['bits']['kept']:.3f} + bucket "
                        f"{out['bits']['bucket']:.3f} + within {out['bits']['within']:.3f}), "
                        f"JS {out['gen']['js_bits']:.3f}, content {100 * out['gen']['content_share']:.1f}%, "
                        f"{out['wall_s']:.0f}s")


CONTENT_POS1 = ("名詞", "動詞", "形容詞", "形状詞")  # nouns, verbs, adjectives (形状詞: adjectival nouns)


def content_share(counts: dict) -> float:
    n = sum(counts.values())
    return sum(counts.get(p, 0) for p in CONTENT_POS1) / n if n else float("nan")


def js_divergence(p: dict, q: dict) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) of two count dicts."""
    import math
    keys = sorted(set(p) | set(q))
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return float("nan")
    out = 0.0
    for k in keys:
        a, b = p.get(k, 0) / sp, q.get(k, 0) / sq
        m = (a + b) / 2
        if a:
            out += 0.5 * a * math.log2(a / m)
        if b:
            out += 0.5 * b * math.log2(b / m)
    return out


def exp_memory(args, profile, store):
    bench = os.path.join(HERE, "bench_lm.py")
    for v in profile["mem_sizes"]:
        for method, _ in MEM_METHODS:
            key = f"{method}-{v}"
            if store.get("memory", key) and key not in args.redo:
                continue
            if method == "full":
                cfg = {"name": key, "vocab": v, "softmax": "full"}
            elif method == "buckets":
                cfg = {"name": key, "vocab": round(CUT * v) + 256 + 1, "softmax": "full"}
            else:
                cfg = {"name": key, "vocab": v, "softmax": "adaptive", "cutoffs": [round(0.08 * v), round(CUT * v)]}
            log(f"memory {key}")
            p = subprocess.run([sys.executable, bench, "_memory_worker", json.dumps(cfg)], capture_output=True,
                               text=True, env=child_env(args.threads), cwd=REPO)
            if p.returncode:
                row = dict(cfg, error=(p.stderr.strip().splitlines() or [str(p.returncode)])[-1])
            else:
                row = json.loads(p.stdout.strip().splitlines()[-1])
            row.update(method=method, types=v)
            store.put("memory", key, row)


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
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


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_rare(d: dict, datasets: dict, path: str) -> None:
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    names = [m[0] for m in RARE_METHODS if m[0] in d]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(len(names)))
    bpc = [d[n]["test_bpc"] for n in names]
    base = ("full", "sentencepiece", "char")
    colors = ["#999999" if n in base else "#3b75af" for n in names]
    a1.barh(ys, bpc, color=colors)
    for y, b in zip(ys, bpc):
        a1.text(b, y, f" {b:.3f}", va="center", fontsize=8)
    a1.set_yticks(ys, [d[n]["label"] for n in names])
    a1.invert_yaxis()
    a1.set_xlim(min(bpc) * 0.95, max(bpc) * 1.05)
    a1.set_xlabel("test bits per character (lower is better)")
    a1.set_title("Test BPC after the same training time")
    a1.legend(handles=[Patch(color="#3b75af", label="40% vocabulary + rare-word buckets"),
                       Patch(color="#999999", label="no cut / subword / character")],
              loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    rare = [100 * d[n]["rare_fraction"] for n in names]
    a2.barh(ys, rare, color=colors)
    for y, r in zip(ys, rare):
        a2.text(r, y, f" {r:.1f}", va="center", fontsize=8)
    test = [100 * datasets.get(n, {}).get("test_bucket_fraction", float("nan")) for n in names]
    a2.plot(test, ys, "k|", markersize=14, markeredgewidth=2)
    a2.set_yticks(ys, ["" for _ in names])
    a2.invert_yaxis()
    a2.set_xlim(0, max(rare + [t for t in test if t == t] + [1]) * 1.2)
    a2.set_xlabel("tokens that are rare words, bucket tokens (%)")
    a2.set_title("Rare words: generated samples vs test text")
    a2.legend(handles=[Patch(color="#3b75af", label="in the 5 generated samples"),
                       Line2D([], [], color="k", marker="|", linestyle="", markersize=10, markeredgewidth=2,
                              label="in the test text")], loc="upper center", bbox_to_anchor=(0.5, -0.13),
               ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(d: dict, path: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    style = {"qrnn": "-", "lstm": "--"}
    color = {"stream": "#3b75af", "sentences": "#d4752c"}
    for name, r in d.items():
        rnn, batching = name.split("-")
        pts = r.get("curve") or []
        if pts:
            ax.plot([p["minutes"] for p in pts], [p["valid_bpc"] for p in pts], style[rnn], color=color[batching],
                    marker="o", markersize=3, label=f"{rnn.upper()}-LM, {batching} batching")
    ax.set_xlabel("training time (minutes, validation passes excluded)")
    ax.set_ylabel("validation bits per character")
    ax.set_title("Learning curves, same model size, 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(d: dict, path: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, label in MEM_METHODS:
        pts = sorted((r["types"], r["peak_bytes"]) for r in d.values() if r["method"] == method and "peak_bytes" in r)
        if pts:
            ax.plot([p[0] / 1000 for p in pts], [p[1] / 2 ** 30 for p in pts], marker="o", label=label)
    ax.axhline(6e9 / 2 ** 30, color="k", linestyle=":", linewidth=1, label="6 GB (a small GPU)")
    ax.set_xlabel("word types in the corpus (thousands)")
    ax.set_ylabel("peak memory of one training step (GiB)")
    ax.set_title("Memory vs vocabulary (batch 32 x bptt 70, 2x650 QRNN)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def within_bucket_bits(ds: dict):
    """Bits per test character spent on P(word | bucket): -sum(rare_logp) / (C ln 2),
    read from the prepared test split (None when it is gone)."""
    import math
    import numpy as np
    path = os.path.join(ds.get("dir", ""), "test.rare_logp.npy")
    if not os.path.exists(path) or not ds.get("test_characters"):
        return None
    return -float(np.load(path).astype(np.float64).sum()) / (ds["test_characters"] * math.log(2))


def _f(x, fmt="{:.3f}", none="–"):
    return none if x is None else fmt.format(x)


def _table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def time_to_reach(curve: list, target: float):
    """Training minutes at which a validation curve first reaches ``target``
    (linear between points), or None."""
    prev = None
    for p in curve:
        if p["valid_bpc"] <= target:
            if prev is None:
                return p["minutes"]
            f = (prev["valid_bpc"] - target) / (prev["valid_bpc"] - p["valid_bpc"])
            return prev["minutes"] + f * (p["minutes"] - prev["minutes"])
        prev = p
    return None


def goals(d: dict) -> list:
    rows = []
    rare = d.get("rare", {})
    km = {k: v["test_bpc"] for k, v in rare.items() if k.startswith("kmeans")}
    base = {k: v["test_bpc"] for k, v in rare.items() if k in ("unk", "pos1", "pos2")}
    if km and base:
        best_km = min(km, key=km.get)
        best_base = min(base, key=base.get)
        all_beat = max(km.values()) < min(base.values())
        held = "held" if all_beat else ("partly: the best k-means beats them, not every K" if km[best_km] <
                                        base[best_base] else "not held")
        rows.append(["k-means buckets beat `unk` and `pos` on test BPC",
                     f"best k-means {best_km} {km[best_km]:.4f}, worst k-means {max(km.values()):.4f}; "
                     f"best of unk/pos {best_base} {base[best_base]:.4f}", held])
    if km and "full" in rare:
        best_km = min(km, key=km.get)
        rel = km[best_km] / rare["full"]["test_bpc"] - 1
        fs, ks = rare["full"]["steps"], rare[best_km]["steps"]
        caveat = (f" — but the full-vocabulary model made only {fs} training steps against {ks} in the same time "
                  f"(an output layer over {d.get('datasets', {}).get('full', {}).get('outputs', 0):,} outputs "
                  f"against {d.get('datasets', {}).get(best_km, {}).get('outputs', 0):,}), so here it is no ceiling"
                  if fs < 0.8 * ks else "")
        rows.append(["k-means at 40% of types within 3% of the full-vocabulary BPC",
                     f"{best_km} {km[best_km]:.4f} vs full {rare['full']['test_bpc']:.4f} ({100 * rel:+.1f}%)",
                     ("held" if rel <= 0.03 else "not held") + caveat])
    rnn = d.get("rnn", {})
    for batching in ("stream", "sentences"):
        q, l_ = rnn.get(f"qrnn-{batching}"), rnn.get(f"lstm-{batching}")
        if not (q and l_ and q.get("curve") and l_.get("curve")):
            continue
        target = min(p["valid_bpc"] for p in l_["curve"])
        tl, tq = time_to_reach(l_["curve"], target), time_to_reach(q["curve"], target)
        speed = q["tokens_per_s"] / l_["tokens_per_s"]
        if tq is None:
            rows.append([f"QRNN-LM trains ≥ 2× faster than LSTM-LM at equal BPC ({batching})",
                         f"QRNN never reached the LSTM's best valid BPC {target:.4f}; tokens/s ratio {speed:.2f}×",
                         "not held"])
        else:
            ratio = tl / max(tq, 1e-9)
            rows.append([f"QRNN-LM trains ≥ 2× faster than LSTM-LM at equal BPC ({batching})",
                         f"valid BPC {target:.4f} (the LSTM's best): LSTM {tl:.2f} min, QRNN {tq:.2f} min "
                         f"→ {ratio:.2f}×; tokens/s ratio {speed:.2f}×",
                         "held" if ratio >= 2 else ("not held (just below 2×)" if ratio >= 1.9 else "not held")])
    return rows


def summary(d: dict) -> list:
    """A few sentences read off the stored numbers."""
    out = []
    rare, ds = d.get("rare", {}), d.get("datasets", {})
    if rare:
        order = sorted(rare, key=lambda k: rare[k]["test_bpc"])
        out.append("Rare words: test BPC ranks " + " < ".join(
            f"{rare[k]['label']} {rare[k]['test_bpc']:.3f}" for k in order) + ".")
        if "unk" in rare:
            u = rare["unk"]
            share = ds.get("unk", {}).get("test_bucket_fraction")
            out.append(f"With one `unk` bucket, {_f(share and 100 * share, '{:.1f}')}% of the test tokens are the "
                       f"bucket; the `unk` model's samples drew it for {100 * u['rare_fraction']:.1f}% of their "
                       "tokens, each shown as a concrete word drawn by P(word | bucket), never as a bucket name.")
    bd = d.get("breakdown", {})
    if "unk" in bd and "kmeans256" in bd:
        u, k = bd["unk"], bd["kmeans256"]

        def part(r, c, key):
            return r[c][key]
        bucketed = [r["test_bpc"] for n, r in rare.items() if n not in ("full", "sentencepiece", "char")]
        spread = max(bucketed) - min(bucketed)
        def rare_total(r):
            return sum(r[c]["model_bpc"] + r[c]["within_bucket_bpc"] for c in ("seen rare words", "unseen words"))
        out.append("k-means (K=256) against `unk`, split by token class (table in section 1): the rare-word "
                   f"tokens cost {rare_total(u):.3f} (unk) vs {rare_total(k):.3f} (K=256) bits/char.  Inside the "
                   "buckets k-means saves bits (seen rare words: "
                   f"{part(u, 'seen rare words', 'within_bucket_bpc'):.3f} → "
                   f"{part(k, 'seen rare words', 'within_bucket_bpc'):.3f}), but the model pays more to name the "
                   f"right cluster: {part(u, 'seen rare words', 'model_bpc'):.3f} → "
                   f"{part(k, 'seen rare words', 'model_bpc'):.3f} for seen rare words and "
                   f"{part(u, 'unseen words', 'model_bpc'):.3f} → {part(k, 'unseen words', 'model_bpc'):.3f} for "
                   f"words never seen in training ({u['unseen words']['tokens']:,} of the "
                   f"{u['unseen words']['tokens'] + u['seen rare words']['tokens']:,} rare test tokens; they go to "
                   "one cluster of their POS instead of the one `unk` bucket).  The rest of the gap "
                   f"({part(k, 'kept words', 'model_bpc') - part(u, 'kept words', 'model_bpc'):+.3f} bits/char) "
                   "is on kept words, which the bucket scheme hardly touches: run-to-run noise at this budget "
                   "(see the seed spread).  Rare words are only "
                   f"{100 * d.get('datasets', {}).get('unk', {}).get('test_bucket_fraction', 0):.1f}% of the "
                   f"test tokens of this corpus at a 40% cut, so all bucket schemes land within {spread:.3f} "
                   "bits/char of each other.")
    rnn = d.get("rnn", {})
    for batching in ("stream", "sentences"):
        q, l_ = rnn.get(f"qrnn-{batching}"), rnn.get(f"lstm-{batching}")
        if q and l_:
            out.append(f"QRNN vs LSTM, {batching} batching: {q['tokens_per_s']:,.0f} vs {l_['tokens_per_s']:,.0f} "
                       f"training tokens/s ({q['tokens_per_s'] / l_['tokens_per_s']:.2f}×); after the same wall "
                       f"time, test BPC {q['test_bpc_last']:.3f} (QRNN) vs {l_['test_bpc_last']:.3f} (LSTM).")
    mem = d.get("memory", {})
    if mem:
        v = max(r["types"] for r in mem.values())
        got = {r["method"]: r["peak_bytes"] / 2 ** 30 for r in mem.values() if r["types"] == v and "peak_bytes" in r}
        if got:
            out.append(f"Memory at {v:,} word types: " + ", ".join(
                f"{lab} {got[m]:.2f} GiB" for m, lab in MEM_METHODS if m in got) + " for one training step.")
    return out


def speed_sections(results_dir: str) -> str:
    """Tables of the kernel/layer/LM benchmark JSON files, newest file per kind and device."""
    # benchmarks/results/*.json, and those of GPU runs in benchmarks/results/gpu_*/
    # (paths relative to results_dir)
    files = sorted(f for f in os.listdir(results_dir) if f.endswith(".json") and not f.startswith("experiments"))
    for sub in sorted(os.listdir(results_dir)):
        if sub.startswith("gpu_") and os.path.isdir(os.path.join(results_dir, sub)):
            files += sorted(f"{sub}/{f}" for f in os.listdir(os.path.join(results_dir, sub)) if f.endswith(".json"))
    base = os.path.basename
    out = []
    fo = {}
    for f in files:
        if base(f).startswith(("fo_pool_", "bench_fo_pool_")):
            d = json.load(open(os.path.join(results_dir, f)))
            fo[d.get("device", "cpu")] = (f, d)  # names sort by time stamp: keep the newest
    out.append("### fo-pooling kernels (`benchmarks/bench_fo_pool.py`)\n")
    for dev in ("cpu", "cuda"):
        if dev not in fo:
            out.append(f"**{dev.upper()}**: not measured on {'GPU' if dev == 'cuda' else 'CPU'}.\n")
            continue
        f, d = fo[dev]
        out.append(f"**{dev.upper()}** — {d.get('device_name')}, {d.get('date')}, torch {d.get('torch')}, "
                   f"threads {d.get('threads')}, copy bandwidth {d.get('copy_GBs', 0):.1f} GB/s "
                   f"(`benchmarks/results/{f}`)\n")
        rows = []
        for r in d.get("rows", []):
            rows.append([f"{r['T']}×{r['B']}×{r['H']}", r["dtype"], f"{r['kernel_fwd_ms']:.2f}",
                         f"{r['kernel_fwd_GBs']:.1f}", f"{r['kernel_bwd_ms']:.2f}", f"{r['kernel_bwd_GBs']:.1f}",
                         f"{r['kernel_fwdbwd_ms']:.2f}", _f(r.get("unbind_fwdbwd_ms"), "{:.1f}"),
                         _f(r.get("speedup_fwdbwd_vs_unbind"), "{:.1f}×")])
        out.append(_table(["T×B×H", "dtype", "fwd ms", "fwd GB/s", "bwd ms", "bwd GB/s", "fwd+bwd ms",
                           "Python loop fwd+bwd ms", "speed-up"], rows) + "\n")
    if "cuda" not in fo:
        out.append("GPU rows: not measured on GPU (no `fo_pool_cuda_*.json` in benchmarks/results/).\n")
    out.append("### One QRNN layer vs one LSTM layer (`benchmarks/bench_rnn.py`)\n")
    rnn_files = [f for f in files if base(f).startswith("bench_rnn_")]
    for f in rnn_files:
        d = json.load(open(os.path.join(results_dir, f)))
        m = d.get("meta", {})
        out.append(f"**{m.get('device', '?').upper()}** ({m.get('device_name')}), {m.get('date')}, {m.get('dtype')}, "
                   f"hidden {m.get('hidden')}, {m.get('input', 'tensor')} input, threads {m.get('threads')}: "
                   f"`{m.get('command', '')}` (`benchmarks/results/{f}`)\n")
        rows = [[r["batch"], r["length"], f"{r['qrnn_fwd_ms']:.2f}", f"{r['lstm_fwd_ms']:.2f}",
                 f"{r['speedup_fwd']:.2f}×", f"{r['qrnn_fwdbwd_ms']:.2f}", f"{r['lstm_fwdbwd_ms']:.2f}",
                 f"{r['speedup_fwdbwd']:.2f}×", f"{r['qrnn_over_matmul_fwdbwd']:.2f}"] for r in d.get("results", [])]
        out.append(_table(["batch", "length", "QRNN fwd ms", "LSTM fwd ms", "speed-up", "QRNN f+b ms",
                           "LSTM f+b ms", "speed-up", "QRNN / own matmul (f+b)"], rows) + "\n")
    if not any("cuda" in f for f in rnn_files):
        out.append("GPU rows: not measured on GPU (no `bench_rnn_cuda*.json` in benchmarks/results/).\n")
    out.append("### Whole language model, training step (`benchmarks/bench_lm.py`)\n")
    lm_files = [f for f in files if base(f).startswith("bench_lm_")]
    for f in lm_files:
        d = json.load(open(os.path.join(results_dir, f)))
        sp = d.get("speed", [])
        if sp:
            s0 = sp[0]
            out.append(f"**{d.get('device')}**, torch {d.get('torch')}: batch {s0['batch']} × bptt {s0['bptt']}, "
                       f"{s0['nlayers']} layers, emsize {s0['emsize']}, nhid {s0['nhid']}, vocabulary {s0['vocab']} "
                       f"(`benchmarks/results/{f}`)\n")
            rows = []
            for soft in ("full", "adaptive"):
                q = next((r for r in sp if r["softmax"] == soft and r["rnn"] == "qrnn"), None)
                l_ = next((r for r in sp if r["softmax"] == soft and r["rnn"] == "lstm"), None)
                if q and l_:
                    rows.append([soft, f"{q['tokens_per_s']:.0f}", f"{l_['tokens_per_s']:.0f}",
                                 f"{q['tokens_per_s'] / l_['tokens_per_s']:.2f}×",
                                 f"{q['params'] / 1e6:.1f}M / {l_['params'] / 1e6:.1f}M"])
            out.append(_table(["softmax", "QRNN-LM tok/s", "LSTM-LM tok/s", "ratio", "params QRNN / LSTM"], rows) + "\n")
        mem = d.get("memory", [])
        if mem:
            rows = [[r["name"], _f(r.get("params"), "{:,}"), _f(r.get("peak_bytes") and r["peak_bytes"] / 2 ** 30,
                                                                "{:.2f}"), r.get("method", r.get("error", ""))]
                    for r in mem]
            out.append(_table(["configuration (emsize = nhid = 650, 2 layers)", "parameters", "peak GiB", "how"],
                              rows) + "\n")
    if not any("cuda" in f for f in lm_files):
        out.append("GPU rows: not measured on GPU (no `bench_lm_cuda.json` in benchmarks/results/).\n")
    return "\n".join(out)


def report(store: Store, args, profile, md_path: str, img_dir: str) -> None:
    d = store.d
    meta = d.get("meta", {})
    mach = meta.get("machine", {})
    os.makedirs(img_dir, exist_ok=True)
    rel = os.path.relpath(img_dir, os.path.dirname(md_path))
    cut = meta.get("cut", {})
    L = []
    L.append("# Results\n")
    L.append(f"Produced by `{meta.get('command', 'python benchmarks/run_experiments.py')}` "
             f"(benchmarks/run_experiments.py), started {meta.get('started', '?')}, "
             f"last step finished {meta.get('finished', '?')} (UTC); commit {mach.get('commit')}.  "
             f"Raw numbers: `{os.path.relpath(store.path, REPO) if store.path.startswith(REPO) else store.path}`.\n")
    L.append(f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, "
             f"{(mach.get('memory_bytes') or 0) / 2 ** 30:.0f} GiB RAM, no GPU; Python {mach.get('python')}, "
             f"torch {mach.get('torch')}, compiled fo-pool kernels for {', '.join(mach.get('compiled_kernels') or []) or 'no device (reference loops)'}.  The cores were shared with other work at times; each run's load "
             "average is in the JSON.\n")
    L.append("## Setup\n")
    ds = d.get("datasets", {})
    L.append(f"- Corpus: `{os.path.relpath(args.data_dir, REPO) if not args.quick else args.data_dir}` "
             f"(Japanese documentation shipped by Debian, one paragraph a line). Training on train.txt "
             f"({_f(ds.get('full', {}).get('train_tokens'), '{:,}')} MeCab tokens), test BPC on the whole test.txt "
             f"({_f(ds.get('full', {}).get('test_characters'), '{:,}')} characters incl. line ends); validation "
             "(checkpoint choice, learning curves) on every 4th line of valid.txt.")
    if cut:
        L.append(f"- Vocabulary cut: the training text has {cut['types']:,} MeCab (surface) types; the cut keeps the "
                 f"{cut['kept']:,} most frequent ({100 * cut['fraction']:.0f}%), the rest go to buckets. "
                 f"sentencepiece gets {cut['kept']:,} pieces; char keeps every character of the training text "
                 f"({_f(ds.get('char', {}).get('kept_words'), '{:,}')}).")
    L.append(f"- Model (all runs): {' '.join(MODEL)} — a 2-layer QRNN (or LSTM), "
             "emsize 128, nhid 256, adaptive softmax with the default cutoffs, AdamW.")
    L.append(f"- Budget: every rare-word run trains for **{profile['rare_minutes']} minutes** of wall time "
             f"(`--max-minutes`), every QRNN/LSTM run for **{profile['rnn_minutes']} minutes** with validation every "
             + ", ".join(f"{v} ({k})" for k, v in profile["eval_interval"].items()) +
             " steps (about ten validations a run, their time inside the budget) — far from convergence: this "
             "compares what each setup reaches on a small, fixed CPU budget, not final quality.")
    rare_runs = d.get("rare", {}).values()
    if rare_runs and all(r.get("best_step") == r["steps"] for r in rare_runs):
        L.append("- No rare-word run completes an epoch; each validates once, when its budget ends, so section 1 "
                 "evaluates the weights at the end of the budget. Section 2 evaluates each run's last weights "
                 "too (`python -m qrnn_lm evaluate --checkpoint RUN/last.pt`).")
    L.append("- BPC is exact over the original text: rare words cost log P(bucket | history) + log P(word | bucket) "
             "(DESIGN.md section 3), so word, subword and character models are comparable.\n")

    goal_rows = goals(d)
    L.append("## Goals of the issue\n")
    if goal_rows:
        L.append(_table(["goal", "measured", "verdict"], goal_rows) + "\n")
    L.append("\"Equal BPC\" for the speed goal: the best validation BPC the LSTM-LM reached in its budget, and "
             "the training minutes (validation passes left out) each model needed to first reach it, linear "
             "between validations.  k-means goals use the test BPC of section 1.  Every number is one run with "
             "one seed on a shared 2-core machine" + (
                 "; two setups were run again with another seed to show the run-to-run spread (section 1)."
                 if d.get("repeat") else "; the run-to-run spread was not measured.") + "\n")
    sm = summary(d)
    if sm:
        L.append("In short:\n")
        L += [f"- {x}" for x in sm]
        L.append("")
    if d.get("failed"):
        L.append("Failed steps: " + "; ".join(f"{k}: {v}" for k, v in d["failed"].items()) + "\n")
    L.append("Leak check: " + (
        "no bucket name appeared in any generated sample." if d.get("rare") and
        not any(r["leaks"] for r in d["rare"].values()) else
        ", ".join(f"{k}: {r['leaks']} leaked" for k, r in d.get("rare", {}).items() if r["leaks"]) or "not run")
        + "\n")

    # ---- 1
    L.append("## 1. Rare words at a 40% vocabulary\n")
    rare = d.get("rare", {})
    if rare:
        plot_rare(rare, ds, os.path.join(img_dir, "rare_words.png"))
        full_bpc = rare.get("full", {}).get("test_bpc")
        rows = []
        for name, label, _ in RARE_METHODS:
            r = rare.get(name)
            if r is None:
                rows.append([label] + ["not run"] + [""] * 10)
                continue
            s = ds.get(name, {})
            rows.append([label, f"{s.get('outputs', 0):,}", s.get("buckets", "–"),
                         _f(s.get("test_bucket_fraction") and 100 * s["test_bucket_fraction"], "{:.1f}%"),
                         _f(within_bucket_bits(s), "{:.3f}"),
                         f"{r['params'] / 1e6:.2f}M", r["steps"], _f(r.get("tokens_per_s"), "{:,.0f}"),
                         f"{r['maxrss_bytes'] / 2 ** 20:,.0f}", f"**{r['test_bpc']:.4f}**",
                         _f(full_bpc and 100 * (r["test_bpc"] / full_bpc - 1), "{:+.1f}%"),
                         f"{100 * r['rare_fraction']:.1f}% / {r['leaks']}"])
        L.append(_table(["method", "outputs", "buckets", "test tokens in buckets", "within-bucket part of BPC",
                         "parameters", "steps",
                         "train tok/s", "peak RSS MiB", "test BPC", "vs full", "samples: bucket tokens / leaks"],
                        rows) + "\n")
        L.append(f"![Test BPC and rare words in samples per method]({rel}/rare_words.png)\n")
        L.append("Peak RSS is ru_maxrss of the train.py process (it includes the Python interpreter and torch, "
                 f"about {_f(meta.get('baseline_rss_bytes') and meta['baseline_rss_bytes'] / 2 ** 20, '{:.0f}')} MiB "
                 "for `import torch` alone). \"steps\" differs because the budget is time; tokens per step are "
                 "32 × ~70. \"test tokens in buckets\" is the share of test tokens that map to a bucket (for the full "
                 "vocabulary and char: words or characters never seen in training); \"within-bucket part of BPC\" (-Σ log2 P(word | bucket) per "
                 "character) is the part of the test BPC spent choosing the word inside its bucket, fixed by the "
                 "vocabulary before any training (the model pays the rest: which output, bucket or word, comes "
                 "next); "
                 f"\"samples\" is the share of the {SAMPLES} × {SAMPLE_TOKENS} sampled tokens that were bucket "
                 "tokens (each expanded to a word by P(word | bucket)) and the number of bucket names found in "
                 "the text.\n")
        rep_rows = []
        for key, r in sorted(d.get("repeat", {}).items()):
            name = key.rsplit("-seed", 1)[0]
            if name in rare:
                rep_rows.append([rare[name]["label"], f"{rare[name]['test_bpc']:.4f} ({rare[name]['steps']} steps)",
                                 f"{r['test_bpc']:.4f} ({r['steps']} steps)",
                                 f"{abs(r['test_bpc'] - rare[name]['test_bpc']):.4f}"])
        if rep_rows:
            L.append(f"Run-to-run spread: the same setup trained again with seed {REPEAT_SEED} (dropout masks, "
                     "initialisation, window lengths) and the same time budget:\n")
            L.append(_table(["method", "test BPC, seed 1111", f"test BPC, seed {REPEAT_SEED}", "difference"],
                            rep_rows) + "\n")
        bd = d.get("breakdown", {})
        if bd:
            cls = ["kept words", "</s>", "seen rare words", "unseen words"]
            rows = []
            for name, label, _ in RARE_METHODS:
                r = bd.get(name)
                if r is None:
                    continue
                rows.append([label] + [f"{r[c]['model_bpc']:.3f} + {r[c]['within_bucket_bpc']:.3f}"
                                       if r[c]["within_bucket_bpc"] else f"{r[c]['model_bpc']:.3f}" for c in cls]
                            + [f"{r['total_bpc']:.4f}"])
            first = next((v for k, v in bd.items() if k != "full"), next(iter(bd.values())))  # counts of a cut
            L.append("Where the test bits go (MeCab models; bits per test character, model part + within-bucket "
                     "part; the token positions are the same in every MeCab dataset, "
                     + ", ".join(f"{first[c]['tokens']:,} {c}" for c in cls) + "):\n")
            L.append(_table(["method"] + cls + ["total"], rows) + "\n")
        L.append("### Samples (seeds 1–5, temperature 1, no prompt)\n")
        for name, label, _ in RARE_METHODS:
            r = rare.get(name)
            if r is None:
                continue
            L.append(f"<details><summary>{label}: {100 * r['rare_fraction']:.1f}% bucket tokens, "
                     f"{r['leaks']} leaks</summary>\n")
            for s in r["samples"]:
                text = s["text"].replace("\n", " ⏎ ").strip()
                L.append(f"{s['seed']}. ({s['rare_tokens']}/{s['tokens']} rare) {text}")
            L.append("\n</details>\n")
    else:
        L.append("Not run.\n")

    # ---- 2
    L.append("## 2. QRNN vs LSTM\n")
    rnn = d.get("rnn", {})
    if rnn:
        plot_curves(rnn, os.path.join(img_dir, "qrnn_vs_lstm.png"))
        rows = []
        for rnn_name, batching in RNN_RUNS:
            r = rnn.get(f"{rnn_name}-{batching}")
            if r is None:
                rows.append([rnn_name.upper(), batching, "not run", "", "", "", "", ""])
                continue
            last_v = r["curve"][-1]["valid_bpc"] if r.get("curve") else None
            rows.append([rnn_name.upper(), batching, f"{r['params'] / 1e6:.2f}M", r["steps"],
                         _f(r.get("tokens_per_s"), "{:,.0f}"), _f(last_v, "{:.4f}"),
                         f"**{r['test_bpc_last']:.4f}**", f"{r['maxrss_bytes'] / 2 ** 20:,.0f}"])
        L.append(_table(["RNN", "batching", "parameters", "steps", "train tok/s", "last valid BPC",
                         "test BPC (last weights)", "peak RSS MiB"], rows) + "\n")
        L.append(f"![Validation BPC against training minutes]({rel}/qrnn_vs_lstm.png)\n")
        L.append(f"Data: the k-means K=256 dataset of section 1. Same size means the same emsize, nhid and "
                 "layers; an LSTM layer has four gate matrices against the QRNN's three (with a window-2 first "
                 f"layer), hence its larger parameter count. Each run had the same {profile['rnn_minutes']} "
                 "minutes of wall time (validation passes included); the curve's x axis leaves the validation "
                 "passes out. tok/s is the median over log intervals of target tokens per second of training "
                 "steps (sentence batches hold fewer tokens per step than 32 × 70 windows).\n")
    else:
        L.append("Not run.\n")

    # ---- 3
    L.append("## 3. Kernel and layer speed\n")
    L.append("Collected from the benchmark JSON files in `benchmarks/results/` (rerun the benchmark to refresh "
             "them; this script does not time kernels itself).\n")
    L.append(speed_sections(os.path.join(HERE, "results")))

    # ---- 4
    L.append("## 4. Vocabulary size vs training memory\n")
    mem = d.get("memory", {})
    if mem:
        plot_memory(mem, os.path.join(img_dir, "memory_vs_vocab.png"))
        sizes = sorted({r["types"] for r in mem.values()})
        rows = []
        for v in sizes:
            row = [f"{v:,}"]
            for method, _ in MEM_METHODS:
                r = mem.get(f"{method}-{v}")
                row.append("not run" if r is None else (f"{r['peak_bytes'] / 2 ** 30:.2f} ({r['vocab']:,} outputs)"
                                                        if "peak_bytes" in r else f"failed: {r.get('error')}"))
            rows.append(row)
        L.append(_table(["word types"] + [f"{lab}: GiB (outputs)" for _, lab in MEM_METHODS], rows) + "\n")
        L.append(f"![Peak memory against vocabulary size]({rel}/memory_vs_vocab.png)\n")
        L.append("One SGD training step (forward, backward, clipping, update) at batch 32 × bptt 70 of a 2-layer "
                 "QRNN with emsize = nhid = 650 on synthetic Zipfian ids, measured by `benchmarks/bench_lm.py`'s "
                 "memory worker in a fresh process per point (ru_maxrss minus the RSS after imports, on CPU). "
                 "Buckets: 40% of the types kept + 256 buckets with a full softmax; adaptive: all types, cutoffs "
                 "at 8% and 40% of the types.\n")
    else:
        L.append("Not run.\n")

    L.append("## Regenerate\n")
    L.append("```\npip install matplotlib        # only this script needs it\n"
             "python benchmarks/run_experiments.py            # everything, ~40 min on 2 CPU cores\n"
             "python benchmarks/run_experiments.py --quick    # a 5-minute check of the plumbing on a slice\n"
             "```\n")
    L.append("Runs already in `benchmarks/results/experiments.json` are skipped (delete it, or `--redo NAME`, "
             "to measure again); prepared datasets, run directories and logs go to `--work` "
             f"(default `~/.cache/qrnn_lm/experiments`). Took {_f(meta.get('total_minutes'), '{:.0f}')} minutes "
             "of wall time in all.\n")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(L))
    log(f"wrote {md_path}")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets on a slice of the corpus (plumbing check)")
    p.add_argument("--data-dir", default=DEFAULT_DATA, help="folder with train.txt, valid.txt, test.txt")
    p.add_argument("--work", default=None, help="prepared datasets, runs, logs "
                                                "(default ~/.cache/qrnn_lm/experiments[_quick])")
    p.add_argument("--only", nargs="+", choices=["rare", "rnn", "memory", "repeat", "breakdown", "sweep"],
                   default=None,
                   help="run only these experiments (the report covers whatever is stored)")
    p.add_argument("--redo", nargs="*", default=[], help="step names to run again (e.g. kmeans64 qrnn-stream)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the stored JSON")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "real"]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qrnn_lm")
    args.work = os.path.abspath(args.work or os.path.join(cache, "experiments_quick" if args.quick else "experiments"))
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    if args.quick:  # never overwrite the committed report with a plumbing check
        json_path = os.path.join(args.work, "experiments_quick.json")
        md_path, img_dir = os.path.join(args.work, "RESULTS.md"), os.path.join(args.work, "img")
    else:
        json_path = os.path.join(HERE, "results", "experiments.json")
        md_path, img_dir = os.path.join(REPO, "docs", "RESULTS.md"), os.path.join(REPO, "docs", "img")
    sys.path.insert(0, REPO)
    store = Store(json_path)
    meta = store.d.setdefault("meta", {})
    if not args.report_only:
        t0 = time.time()
        meta.setdefault("started", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}")
        meta["command"] = "python benchmarks/run_experiments.py" + (" --quick" if args.quick else "")
        meta["machine"] = machine()
        meta["profile"] = {k: v for k, v in profile.items()}
        if "baseline_rss_bytes" not in meta:
            q = subprocess.run([sys.executable, "-c", "import resource, torch; print(resource.getrusage("
                                "resource.RUSAGE_SELF).ru_maxrss * 1024)"], capture_output=True, text=True)
            meta["baseline_rss_bytes"] = int(q.stdout.strip() or 0)
        store.save()
        only = set(args.only or ["rare", "rnn", "memory", "repeat", "breakdown", "sweep"])
        files = corpus_files(args, profile)
        steps = [("rare", lambda: exp_rare(args, profile, files, store)),
                 ("rnn", lambda: exp_rnn(args, profile, files, store)),
                 ("memory", lambda: exp_memory(args, profile, store)),
                 ("repeat", lambda: exp_repeat(args, profile, files, store)),
                 ("breakdown", lambda: exp_breakdown(args, profile, store)),
                 ("sweep", lambda: exp_sweep(args, profile, files, store))]
        failed = []
        for name, fn in steps:
            if name not in only:
                continue
            try:
                fn()
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                # keep going: the other experiments and the report still have value
                log(f"experiment {name} stopped: {e}")
                failed.append(name)
            meta["finished"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
            meta["total_minutes"] = meta.get("total_minutes_before", 0) + (time.time() - t0) / 60
            store.save()
            report(store, args, profile, md_path, img_dir)  # after each experiment: a crash keeps the report
        meta["total_minutes_before"] = meta["total_minutes"]
        store.save()
        if failed:
            log(f"failed: {', '.join(failed)} (rerun to retry; finished steps are kept)")
    report(store, args, profile, md_path, img_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
