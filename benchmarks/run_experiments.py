"""Run every experiment of docs/RESULTS.md on the shared Japanese corpus and
store the numbers in benchmarks/results/experiments.json; render_results.py
turns that JSON into docs/RESULTS.md and its plots (called at the end, and
after each experiment).

    python benchmarks/run_experiments.py                 # sections 1-4 (~1.5 h on 2 CPU cores) and the sweep
    python benchmarks/run_experiments.py --quick         # plumbing check on a slice (~15 min)
    python benchmarks/run_experiments.py --only sweep --jobs 2   # one experiment (the sweep: ~1.5 h)
    python benchmarks/render_results.py                  # rewrite the report from the JSON

Experiments (same model and the same budget for every training run of an experiment):

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
5. rare-word sweep: vocabulary cuts giving about 2%, 5%, 10% and 20% rare
   test tokens x bucket schemes (unk, pos, pos x character type, k-means on
   PPMI, fastText and context vectors, pos+kmeans, exchange classes) x 3
   seeds, every run trained for the same number of steps with the budget
   schedule on the CPU defaults model; test bits per character split into
   kept words, choosing the bucket and choosing the word inside it, and the
   POS of generated text against the test text's.  ``--jobs 2`` trains two
   datasets at once (~1.5 h on 2 cores); ``--schemes`` picks schemes.

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

import render_results
from experiments_config import (CUT, MEM_METHODS, MODEL, PROFILES, RARE_METHODS, REPEAT, REPEAT_SEED, RNN_DATA,
                                RNN_RUNS, SAMPLE_TOKENS, SAMPLES, SWEEP_MODEL, SWEEP_SCHEMES)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "ja-debian-docs"))

# ---------------------------------------------------------------------------
# bookkeeping
# ---------------------------------------------------------------------------
class Store:
    """The results JSON, rewritten atomically after every step.

    Safe for several threads and several runner processes at once: every
    write takes a lock file, reads what the others stored, lays this
    process's sections over it and replaces the file."""

    def __init__(self, path: str):
        import threading
        self.path = path
        self.d = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
        self._lock = threading.RLock()

    def get(self, section: str, key: str):
        return self.d.get(section, {}).get(key)

    def put(self, section: str, key: str, value) -> None:
        with self._lock:
            self.d.setdefault(section, {})[key] = value
            self.save(touched={(section, key)})

    def drop(self, section: str, key: str) -> None:
        with self._lock:
            if self.d.get(section, {}).pop(key, None) is not None:
                self.save(dropped={(section, key)})

    def save(self, touched=(), dropped=(), sections=()) -> None:
        """Write the JSON: the file's keys, with this process's keys that the
        file lacks, the (section, key) pairs in ``touched`` and every key of
        the ``sections`` laid over them."""
        import fcntl
        with self._lock:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path + ".lock", "w") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)
                disk = json.load(open(self.path, encoding="utf-8")) if os.path.exists(self.path) else {}
                for section, keys in self.d.items():
                    sec = disk.setdefault(section, {})
                    if not isinstance(keys, dict) or not isinstance(sec, dict):
                        disk[section] = keys
                        continue
                    for k, v in keys.items():
                        if section in sections or (section, k) in touched or k not in sec:
                            sec[k] = v
                for section, k in dropped:
                    disk.get(section, {}).pop(k, None)
                tmp = self.path + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(disk, f, ensure_ascii=False, indent=1)
                    f.write("\n")
                os.replace(tmp, self.path)
                for section, v in disk.items():  # in place: callers may hold a section's dict
                    cur = self.d.get(section)
                    if isinstance(cur, dict) and isinstance(v, dict):
                        cur.clear()
                        cur.update(v)
                    else:
                        self.d[section] = v


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
               "train_bucket_fraction": meta["train"].get("bucket_tokens", 0) / max(meta["train"]["tokens"], 1),
               "within_bucket_bpc": render_results.within_bucket_bits(
                   {"dir": out, "test_characters": meta["test"]["characters"]})}
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
    store.save(sections={"meta"})
    for name, label, flags in RARE_METHODS:
        if name not in profile["methods"]:
            continue
        if store.get("rare", name) and name not in args.redo:
            continue
        def one():
            if name == "full":
                ds = full
            else:
                size = 10 ** 9 if name == "char" else n_keep  # a character vocabulary is small: keep it all
                ds = prepare(name, ["--vocab-size", str(size)] + flags, files, args, profile, store)
            r = train(name, ds["dir"], profile["rare_minutes"], ["--rnn", "qrnn", "--batching", "stream",
                                                                  "--log-interval", str(profile["log_interval"])],
                      args, store, "rare")
            r.update(samples(os.path.join(args.work, "runs", "rare", name)))
            return r
        r = attempt(store, f"rare/{name}", one)
        if r is None:
            continue
        r["label"] = label
        store.put("rare", name, r)
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
        def one():
            r = train(name, ds["dir"], profile["rnn_minutes"], extra, args, store, "rnn")
            r["test_bpc_last"] = evaluate_last(os.path.join(args.work, "runs", "rnn", name), files["test"],
                                               args)["bpc"]
            return r
        r = attempt(store, f"rnn/{name}", one)
        if r is None:
            continue
        store.put("rnn", name, r)
        log(f"  {name}: {r['tokens_per_s']:.0f} tok/s, test bpc (last weights) {r['test_bpc_last']:.4f}")


def exp_repeat(args, profile, files, store):
    """Two rare-word runs again with another seed: how far apart two runs of
    the same setup land (the spread the comparisons of section 1 live with)."""
    for name in REPEAT:
        key = f"{name}-seed{REPEAT_SEED}"
        ds = store.get("datasets", name)
        if ds is None or (store.get("repeat", key) and key not in args.redo):
            continue
        r = attempt(store, f"repeat/{key}", lambda: train(
            key, ds["dir"], profile["rare_minutes"],
            ["--rnn", "qrnn", "--batching", "stream", "--log-interval", str(profile["log_interval"]),
             "--seed", str(REPEAT_SEED)], args, store, "repeat"))
        if r is None:
            continue
        store.put("repeat", key, r)
        log(f"  {key}: test bpc {r['test_bpc']:.4f}, {r['steps']} steps")


def token_nll(run_dir: str, data_dir: str, split_name: str = "test"):
    """-log P (nats) of every test token under the run's evaluated checkpoint
    (32 stream columns, windows of 70, state carried: the same for every run;
    train.py's own figure reads the split as one column, so it differs by the
    32 cold starts), and the test split itself."""
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
    store.drop("failed", key)
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
    words = sorted(v.word_to_id.values())
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
_MECAB_LOCK = __import__("threading").Lock()  # one MeCab tagger for the runner's threads


def pos1_counts(lines) -> dict:
    """UniDic pos1 (名詞, 助詞, ...) counts of MeCab tokens of ``lines``."""
    from collections import Counter
    from qrnn_lm.tokenizers import MecabTokenizer
    with _MECAB_LOCK:
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


def _sweep_cmd(args, data: str, save: str, steps: int, seed: int, softmax: str) -> list:
    return [sys.executable, "-u", os.path.join(REPO, "train.py"), "--data", data, "--save", save,
            "--max-steps", str(steps), "--seed", str(seed), "--softmax", softmax] + SWEEP_MODEL


def sweep_softmax(kept: int) -> str:
    """The output layer the defaults rule gives a cut (adaptive above 2,000
    outputs), the same for every scheme of the cut."""
    return "adaptive" if kept > 2000 else "full"


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
    scheme), scored on test bits per character and generated-text POS.

    ``--jobs N`` runs N datasets at once (each: prepare, then its seeds), with
    the CPU threads shared between them; cuts run in the profile's order."""
    from concurrent.futures import ThreadPoolExecutor
    sp = profile["sweep"]
    wanted = args.schemes or sp["schemes"]
    schemes = [s for s in SWEEP_SCHEMES if s[0] in wanted]
    full = prepare("full", ["--vocab-size", str(10 ** 9), "--rare", "unk"], files, args, profile, store)
    cuts = store.get("sweep_meta", "cuts") or {}
    if any(f"{round(100 * s)}%" not in cuts for s in sp["shares"]):
        cuts.update(cut_sizes(full["dir"], [s for s in sp["shares"] if f"{round(100 * s)}%" not in cuts]))
        store.put("sweep_meta", "cuts", cuts)
    cfg = store.get("sweep_meta", "config") or {}
    known = cfg.get("schemes", {}) if cfg.get("steps") == sp["steps"] else {}
    known.update({n: {"label": lab, "flags": f} for n, lab, f in schemes})
    store.put("sweep_meta", "config", {"steps": sp["steps"], "seeds": sp["seeds"], "buckets": sp["buckets"],
                                       "model": " ".join(SWEEP_MODEL), "samples": sp["samples"],
                                       "softmax": {c: sweep_softmax(v["kept"]) for c, v in cuts.items()},
                                       "sample_tokens": sp["sample_tokens"], "schemes": known})
    sweep_files = dict(files)
    sweep_files["valid"] = os.path.join(args.work, "text", "valid_sweep.txt")
    with open(os.path.join(args.data_dir, "valid.txt"), encoding="utf-8") as f:
        lines = f.readlines()[:profile.get("lines", {}).get("valid")]
    with open(sweep_files["valid"] + ".tmp", "w", encoding="utf-8") as f:  # validation only ends the run: keep it small
        f.writelines(lines[::sp["valid_every"]])
    os.replace(sweep_files["valid"] + ".tmp", sweep_files["valid"])
    vec = os.path.join(args.work, "fasttext.vec")
    if any("fasttext" in n for n, _, _ in schemes):
        info = attempt(store, "sweep/fasttext", lambda: write_fasttext_vec(full["dir"], vec))
        if info and not info.get("cached"):
            store.put("sweep_meta", "fasttext", info)
    test_counts = store.get("sweep_meta", "test_pos1")
    if test_counts is None:
        test_counts = pos1_counts(open(files["test"], encoding="utf-8"))
        store.put("sweep_meta", "test_pos1", test_counts)

    def run_dir(cut, name, seed):
        return os.path.join(args.work, "runs", "sweep", f"{cut.rstrip('%')}-{name}-s{seed}")

    def dataset_job(cut, c, name, flags, after=None):
        if after is not None:  # context vectors come from this cut's first unk run
            after.result()
        tag = cut.rstrip("%")
        flags = [f.replace("{K}", str(sp["buckets"])).replace("{FASTTEXT}", vec)
                 .replace("{CONTEXT}", run_dir(cut, "unk", sp["seeds"][0])) for f in flags]
        ds = attempt(store, f"sweep/{cut}/{name}/prepare",
                     lambda: prepare(f"sweep-{tag}-{name}", ["--vocab-size", str(c["kept"])] + flags, sweep_files,
                                     args, profile, store))
        if ds is None:
            return
        for ext in (".ids.npy", ".rare_logp.npy", ".meta.json"):
            src = os.path.join(ds["dir"], "test" + ext)
            if os.path.exists(src):
                os.replace(src, os.path.join(ds["dir"], HELDOUT + ext))
        for seed in sp["seeds"]:
            key = f"{cut}/{name}/s{seed}"
            if store.get("sweep", key) and key not in args.redo:
                continue
            run = run_dir(cut, name, seed)

            def one():
                if os.path.exists(run):
                    shutil.rmtree(run)
                cmd = _sweep_cmd(args, ds["dir"], run, sp["steps"], seed, sweep_softmax(c["kept"]))
                r = run_logged(cmd, os.path.join(args.work, "logs", f"sweep_{tag}_{name}_s{seed}.log"),
                               child_env(args.threads))
                if r["rc"]:
                    raise RuntimeError(f"train failed (rc {r['rc']}): {r['lines'][-1][1] if r['lines'] else ''}")
                res = json.load(open(os.path.join(run, "results.json"), encoding="utf-8"))
                t0 = time.monotonic()
                out = {"steps": res["step"], "valid_bpc": res.get("valid", {}).get("bpc"), "wall_s": r["wall_s"],
                       "bits": sweep_bits(run, ds["dir"]),
                       "gen": generation_pos(run, test_counts, sp["samples"], sp["sample_tokens"])}
                out["score_s"] = time.monotonic() - t0
                out["test_bpc"] = out["bits"]["total"]
                return out
            out = attempt(store, f"sweep/{key}", one)
            if out is not None:
                store.put("sweep", key, out)
                log(f"  sweep {key}: test bpc {out['test_bpc']:.4f} (kept {out['bits']['kept']:.3f} + bucket "
                    f"{out['bits']['bucket']:.3f} + within {out['bits']['within']:.3f}), "
                    f"JS {out['gen']['js_bits']:.3f}, content {100 * out['gen']['content_share']:.1f}%, "
                    f"train {out['wall_s']:.0f}s + score {out['score_s']:.0f}s")

    rank = sp.get("order", sp["shares"])
    order = sorted(((cut, c) for cut, c in cuts.items() if c["target"] in sp["shares"]),
                   key=lambda kv: rank.index(kv[1]["target"]) if kv[1]["target"] in rank else len(rank))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = []
        for cut, c in order:
            by_scheme = {}
            for name, label, flags in schemes:
                after = by_scheme.get("unk") if "{CONTEXT}" in " ".join(flags) else None
                by_scheme[name] = pool.submit(dataset_job, cut, c, name, flags, after)
                futures.append(by_scheme[name])
        for fut in futures:
            fut.result()


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
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the runs (default: torch's; with --jobs N: the CPUs / N)")
    p.add_argument("--jobs", type=int, default=1, help="sweep datasets trained at once (default 1)")
    p.add_argument("--schemes", nargs="+", default=None, choices=[n for n, _, _ in SWEEP_SCHEMES],
                   help="sweep only these bucket schemes (default: the profile's)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the stored JSON")
    args = p.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "real"]
    if args.jobs > 1 and not args.threads:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)  # the runner's own scoring and sampling
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qrnn_lm")
    args.work = os.path.abspath(args.work or os.path.join(cache, "experiments_quick" if args.quick else "experiments"))
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    if args.report_only:
        return render_results.main([] if not args.quick else
                                   ["--json", os.path.join(args.work, "experiments_quick.json"),
                                    "--out", os.path.join(args.work, "RESULTS.md")])
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
        meta["data_dir"] = os.path.relpath(args.data_dir, REPO) if not args.quick else args.data_dir
        meta["quick"] = bool(args.quick)
        meta["machine"] = machine()
        meta["profile"] = {k: v for k, v in profile.items()}
        if "baseline_rss_bytes" not in meta:
            q = subprocess.run([sys.executable, "-c", "import resource, torch; print(resource.getrusage("
                                "resource.RUSAGE_SELF).ru_maxrss * 1024)"], capture_output=True, text=True)
            meta["baseline_rss_bytes"] = int(q.stdout.strip() or 0)
        store.save(sections={"meta"})
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
            # keep going when one experiment stops: the others and the report still have value
            if attempt(store, f"experiment/{name}", lambda: fn() or True) is None:
                failed.append(name)
            meta["finished"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
            meta["total_minutes"] = meta.get("total_minutes_before", 0) + (time.time() - t0) / 60
            store.save(sections={"meta"})
            render_results.render(store.d, md_path, img_dir, json_path)  # after each: a crash keeps the report
        meta["total_minutes_before"] = meta["total_minutes"]
        store.save(sections={"meta"})
        if failed:
            log(f"failed: {', '.join(failed)} (rerun to retry; finished steps are kept)")
    render_results.render(store.d, md_path, img_dir, json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
