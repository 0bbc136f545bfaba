"""Experiment 5, the rare-word sweep: vocabulary cuts x bucket schemes x
seeds, every run trained for the same number of steps, scored on test bits
per character (split into kept words, choosing the bucket and choosing the
word inside it) and on the parts of speech of generated text."""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from experiments.rare import full_dataset
from experiments.run_dir import read_results
from experiments.runner import HELDOUT, REPO, check_rc, child_env, prepare, run_logged
from experiments.scoring import generation_pos, pos1_counts, token_nll
from experiments.store import attempt, log
from experiments_config import SWEEP_MODEL, SWEEP_SCHEMES


def exp_sweep(args, profile, files, store):
    """Rare-word schemes at several vocabulary cuts, each trained for the same
    number of steps with several seeds (paired: seed s is the same for every
    scheme), scored on test bits per character and generated-text POS.

    ``--jobs N`` runs N datasets at once (each: prepare, then its seeds), with
    the CPU threads shared between them; cuts run in the profile's order."""
    sp = profile["sweep"]
    wanted = args.schemes or sp["schemes"]
    schemes = [s for s in SWEEP_SCHEMES if s[0] in wanted]
    full = full_dataset(files, args, profile, store)
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
    job = SweepJob(args, profile, store, sweep_texts(args, profile, files), os.path.join(args.work, "fasttext.vec"))
    if any("fasttext" in n for n, _, _ in schemes):
        info = attempt(store, "sweep/fasttext", lambda: write_fasttext_vec(full["dir"], job.vec))
        if info and not info.get("cached"):
            store.put("sweep_meta", "fasttext", info)
    job.test_counts = store.get("sweep_meta", "test_pos1")
    if job.test_counts is None:
        job.test_counts = pos1_counts(open(files["test"], encoding="utf-8"))
        store.put("sweep_meta", "test_pos1", job.test_counts)
    rank = sp.get("order", sp["shares"])
    order = sorted(((cut, c) for cut, c in cuts.items() if c["target"] in sp["shares"]),
                   key=lambda kv: rank.index(kv[1]["target"]) if kv[1]["target"] in rank else len(rank))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = []
        for cut, c in order:
            by_scheme = {}
            for name, label, flags in schemes:
                after = by_scheme.get("unk") if "{CONTEXT}" in " ".join(flags) else None
                by_scheme[name] = pool.submit(job.dataset, cut, c, name, flags, after)
                futures.append(by_scheme[name])
        for fut in futures:
            fut.result()


def sweep_texts(args, profile, files) -> dict:
    """The corpus files of the sweep: those of the other experiments, with a
    smaller validation text (every ``valid_every``-th line: in the sweep
    validation only ends the run)."""
    sp = profile["sweep"]
    out = dict(files)
    out["valid"] = os.path.join(args.work, "text", "valid_sweep.txt")
    with open(os.path.join(args.data_dir, "valid.txt"), encoding="utf-8") as f:
        lines = f.readlines()[:profile.get("lines", {}).get("valid")]
    with open(out["valid"] + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines[::sp["valid_every"]])
    os.replace(out["valid"] + ".tmp", out["valid"])
    return out


class SweepJob:
    """One sweep dataset at a time (prepare it, then train and score each
    seed); several run at once in threads."""

    def __init__(self, args, profile, store, files: dict, vec: str):
        self.args, self.profile, self.store, self.files, self.vec = args, profile, store, files, vec
        self.sp = profile["sweep"]
        self.test_counts = None

    def run_dir(self, cut: str, name: str, seed: int) -> str:
        return os.path.join(self.args.work, "runs", "sweep", f"{cut.rstrip('%')}-{name}-s{seed}")

    def dataset(self, cut: str, c: dict, name: str, flags: list, after=None) -> None:
        if after is not None:  # context vectors come from this cut's first unk run
            after.result()
        sp, tag = self.sp, cut.rstrip("%")
        flags = [f.replace("{K}", str(sp["buckets"])).replace("{FASTTEXT}", self.vec)
                 .replace("{CONTEXT}", self.run_dir(cut, "unk", sp["seeds"][0])) for f in flags]
        ds = attempt(self.store, f"sweep/{cut}/{name}/prepare",
                     lambda: prepare(f"sweep-{tag}-{name}", ["--vocab-size", str(c["kept"])] + flags, self.files,
                                     self.args, self.profile, self.store))
        if ds is None:
            return
        for ext in (".ids.npy", ".rare_logp.npy", ".meta.json"):
            src = os.path.join(ds["dir"], "test" + ext)
            if os.path.exists(src):
                os.replace(src, os.path.join(ds["dir"], HELDOUT + ext))
        for seed in sp["seeds"]:
            key = f"{cut}/{name}/s{seed}"
            if self.store.get("sweep", key) and key not in self.args.redo:
                continue
            out = attempt(self.store, f"sweep/{key}", lambda: self.train_and_score(cut, c, name, seed, ds["dir"]))
            if out is not None:
                self.store.put("sweep", key, out)
                log(f"  sweep {key}: test bpc {out['test_bpc']:.4f} (kept {out['bits']['kept']:.3f} + bucket "
                    f"{out['bits']['bucket']:.3f} + within {out['bits']['within']:.3f}), "
                    f"JS {out['gen']['js_bits']:.3f}, content {100 * out['gen']['content_share']:.1f}%, "
                    f"train {out['wall_s']:.0f}s + score {out['score_s']:.0f}s")

    def train_and_score(self, cut: str, c: dict, name: str, seed: int, data: str) -> dict:
        run = self.run_dir(cut, name, seed)
        if os.path.exists(run):
            shutil.rmtree(run)
        cmd = _sweep_cmd(self.args, data, run, self.sp["steps"], seed, sweep_softmax(c["kept"]))
        r = run_logged(cmd, os.path.join(self.args.work, "logs", f"sweep_{cut.rstrip('%')}_{name}_s{seed}.log"),
                       child_env(self.args.threads))
        check_rc("train", r)
        res = read_results(run)
        t0 = time.monotonic()
        out = {"steps": res["step"], "valid_bpc": res.get("valid", {}).get("bpc"), "wall_s": r["wall_s"],
               "bits": sweep_bits(run, data),
               "gen": generation_pos(run, self.test_counts, self.sp["samples"], self.sp["sample_tokens"])}
        out["score_s"] = time.monotonic() - t0
        out["test_bpc"] = out["bits"]["total"]
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
    import numpy as np
    nll, split, vocab = token_nll(run_dir, data_dir, HELDOUT)
    ids, lp = np.asarray(split.ids), np.asarray(split.rare_logp, dtype=np.float64)
    bucket = vocab.bucket_mask[ids]
    denom = split.characters * math.log(2)
    return {"total": float((nll.sum() - lp.sum()) / denom), "kept": float(nll[~bucket].sum() / denom),
            "bucket": float(nll[bucket].sum() / denom), "within": float(-lp[bucket].sum() / denom),
            "rare_tokens": int(bucket.sum()), "tokens": int(len(ids))}
