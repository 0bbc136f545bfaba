"""Run every experiment of docs/RESULTS.md on the shared Japanese corpus and
store the numbers in benchmarks/results/experiments.json; render_results.py
turns that JSON into docs/RESULTS.md and its plots (called at the end, and
after each experiment).

    python benchmarks/run_experiments.py                 # every experiment (its time: docs/RESULTS.md, "Regenerate")
    python benchmarks/run_experiments.py --quick         # plumbing check on a slice of the corpus
    python benchmarks/run_experiments.py --only sweep --jobs 2   # one experiment
    python benchmarks/render_results.py                  # rewrite the report from the JSON

Experiments (same model and the same budget for every training run of an
experiment), one module each in benchmarks/experiments/:

1. rare words (``rare``): MeCab vocabulary cut to ~40% of the training types,
   rare words as ``unk`` / ``pos`` (depth 1, 2) / ``kmeans`` (K = 64, 256,
   1024) / ``pos+kmeans``; the full vocabulary (no cut), ``sentencepiece`` (as
   many pieces as kept words) and ``char``.  Test bits per character,
   parameters, peak RSS of the training process, 5 generated samples per
   model with the fraction of rare-word (bucket) tokens and a check that no
   bucket name leaked into the text.  ``repeat`` trains two of them again
   with another seed; ``breakdown`` splits their test bits by token class.
2. QRNN vs LSTM (``rnn``), stream and sentence batching, on the k-means-256
   data: tokens/s, test BPC of the last weights at equal wall time,
   validation BPC against training minutes.
3. kernel and layer speed tables from benchmarks/results/*.json (written by
   bench_fo_pool.py, bench_rnn.py, bench_lm.py).
4. peak memory of one training step against vocabulary size (``memory``;
   synthetic Zipfian ids) for full softmax, 40% kept + buckets, adaptive
   softmax -- each point is ``benchmarks/bench_lm.py``'s own memory
   measurement (``_memory_worker``, a fresh process per configuration).
5. rare-word sweep (``sweep``): vocabulary cuts giving about 2%, 5%, 10% and
   20% rare test tokens x bucket schemes (unk, pos, pos x character type,
   k-means on PPMI, fastText and context vectors, pos+kmeans, exchange
   classes) x 3 seeds, every run trained for the same number of steps with
   the budget schedule on the CPU defaults model; test bits per character
   split into kept words, choosing the bucket and choosing the word inside
   it, and the POS of generated text against the test text's.  ``--jobs 2``
   trains two datasets at once; ``--schemes`` picks schemes.

Every number is read from the files train.py writes into its run directory
(results.json, metrics.jsonl), never from its console output.  The script is
resumable: results are saved to the JSON after every step
(benchmarks/results/experiments.json) and steps found there are skipped;
prepared datasets and run directories live in --work.  ``--redo NAME`` runs
one step again.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time

import render_results
from experiments.breakdown import exp_breakdown
from experiments.memory import exp_memory
from experiments.rare import exp_rare
from experiments.repeat import exp_repeat
from experiments.rnn import exp_rnn
from experiments.runner import DEFAULT_DATA, HERE, REPO, corpus_files, machine
from experiments.store import Store, attempt, log
from experiments.sweep import exp_sweep
from experiments_config import PROFILES, SWEEP_SCHEMES

EXPERIMENTS = ["rare", "rnn", "memory", "repeat", "breakdown", "sweep"]   # in the order they run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets on a slice of the corpus (plumbing check)")
    p.add_argument("--data-dir", default=DEFAULT_DATA, help="folder with train.txt, valid.txt, test.txt")
    p.add_argument("--work", default=None, help="prepared datasets, runs, logs "
                                                "(default ~/.cache/qrnn_lm/experiments[_quick])")
    p.add_argument("--only", nargs="+", choices=EXPERIMENTS, default=None,
                   help="run only these experiments (the report covers whatever is stored)")
    p.add_argument("--redo", nargs="*", default=[], help="step names to run again (e.g. kmeans64 qrnn-stream)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the runs (default: torch's; with --jobs N: the CPUs / N)")
    p.add_argument("--jobs", type=int, default=1, help="sweep datasets trained at once (default 1)")
    p.add_argument("--schemes", nargs="+", default=None, choices=[n for n, _, _ in SWEEP_SCHEMES],
                   help="sweep only these bucket schemes (default: the profile's)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the stored JSON")
    return p


def start_meta(store: Store, args, profile) -> None:
    """What the report says about this invocation: command, machine, profile."""
    meta = store.d.setdefault("meta", {})
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


def run_all(args, profile, store: Store, report) -> None:
    """Run the chosen experiments in order, rendering the report after each
    (a crash keeps what was measured); ``meta.total_minutes`` adds this
    invocation's wall time to the earlier ones'."""
    meta = store.d["meta"]
    t0 = time.time()
    files = corpus_files(args, profile)
    steps = {"rare": lambda: exp_rare(args, profile, files, store),
             "rnn": lambda: exp_rnn(args, profile, files, store),
             "memory": lambda: exp_memory(args, profile, store),
             "repeat": lambda: exp_repeat(args, profile, files, store),
             "breakdown": lambda: exp_breakdown(args, profile, store),
             "sweep": lambda: exp_sweep(args, profile, files, store)}
    failed = []
    for name in EXPERIMENTS:
        if name not in (args.only or EXPERIMENTS):
            continue
        # keep going when one experiment stops: the others and the report still have value
        if attempt(store, f"experiment/{name}", lambda: steps[name]() or True) is None:
            failed.append(name)
        meta["finished"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
        meta["total_minutes"] = meta.get("total_minutes_before", 0) + (time.time() - t0) / 60
        store.save(sections={"meta"})
        report()
    meta["total_minutes_before"] = meta["total_minutes"]
    store.save(sections={"meta"})
    if failed:
        log(f"failed: {', '.join(failed)} (rerun to retry; finished steps are kept)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    profile = PROFILES["quick" if args.quick else "real"]
    if args.jobs > 1 and not args.threads:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)  # the runner's own scoring and sampling
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qrnn_lm")
    args.work = os.path.abspath(args.work or os.path.join(cache, "experiments_quick" if args.quick else "experiments"))
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    if args.quick:  # never overwrite the committed report with a plumbing check
        json_path = os.path.join(args.work, "experiments_quick.json")
        md_path = os.path.join(args.work, "RESULTS.md")
    else:
        json_path = os.path.join(HERE, "results", "experiments.json")
        md_path = os.path.join(REPO, "docs", "RESULTS.md")
    if args.report_only:
        return render_results.main([] if not args.quick else ["--json", json_path, "--out", md_path])
    sys.path.insert(0, REPO)
    store = Store(json_path)
    img_dir = os.path.join(os.path.dirname(md_path), "img")
    start_meta(store, args, profile)
    run_all(args, profile, store, lambda: render_results.render(store.d, md_path, img_dir, json_path))
    render_results.render(store.d, md_path, img_dir, json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
