"""Tokenization throughput and end-to-end `prepare` time on the debian-ja corpus.

    python benchmarks/bench_prepare.py [--data /work/shared/data/ja-debian-docs]
        [--workers 2] [--lines 20000] [--skip-prepare]

Prints tokens/s of the MeCab tokenizer (1 and --workers processes, on the
first --lines lines of train.txt) and the wall time of a full
`prepare --tokenizer mecab --rare kmeans --buckets 256` of train/valid/test,
and writes benchmarks/results/bench_prepare.json.  Wall times depend on how
busy the machine is: the load average is recorded next to them.
"""
import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qrnn_lm.corpus import TextNormalizer, read_text  # noqa: E402
from qrnn_lm.prepare import prepare  # noqa: E402
from qrnn_lm.tokenizers import MecabTokenizer, tokenize_stream  # noqa: E402


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def throughput(lines, workers):
    """(tokens, wall seconds, CPU seconds of this process and its workers)."""
    tok = MecabTokenizer()
    c0, t0 = _cpu(), time.perf_counter()
    n = sum(len(c.ids) - c.lines for c in tokenize_stream(tok, lines, workers))
    dt = time.perf_counter() - t0
    return n, dt, _cpu() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/work/shared/data/ja-debian-docs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("--vocab-size", type=int, default=20000)
    ap.add_argument("--buckets", type=int, default=256)
    ap.add_argument("--skip-prepare", action="store_true")
    args = ap.parse_args()
    train = os.path.join(args.data, "train.txt")
    if not os.path.isfile(train):
        sys.exit(f"error: {train} not found; pass --data DIR with train/valid/test.txt.")
    res = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_avg_start": os.getloadavg()[0], "lines": args.lines}
    lines = list(itertools.islice(read_text(train, TextNormalizer()), args.lines))
    res["characters"] = sum(len(x) + 1 for x in lines)
    for w in sorted({1, args.workers}):
        n, dt, cpu = throughput(lines, w)
        res[f"tokens_per_s_workers{w}"] = n / dt
        res[f"cpu_seconds_workers{w}"] = cpu
        res["tokens"] = n
        # CPU seconds / wall seconds shows how much of the 2 cores the run got
        print(f"mecab tokenization, {w} worker(s): {n} tokens in {dt:.2f}s = "
              f"{n / dt:,.0f} tokens/s ({res['characters'] / dt:,.0f} chars/s; "
              f"{cpu:.2f} CPU-s, {n / cpu:,.0f} tokens per CPU-s)")
    if not args.skip_prepare:
        with tempfile.TemporaryDirectory() as out:
            phases = []
            t0 = time.perf_counter()
            prepare(train, os.path.join(args.data, "valid.txt"), os.path.join(args.data, "test.txt"),
                    out, tokenizer="mecab", vocab_size=args.vocab_size, rare="kmeans",
                    buckets=args.buckets, workers=args.workers, seed=0,
                    log=lambda m: phases.append(f"{time.perf_counter() - t0:6.1f}s {m}"))
            dt = time.perf_counter() - t0
            with open(os.path.join(out, "train.meta.json")) as f:
                res["prepare_train_tokens"] = json.load(f)["tokens"]
        for p in phases:
            print("  " + p)
        res["prepare_seconds"] = dt
        res["prepare_phases"] = phases
        print(f"prepare (mecab, kmeans {args.buckets} buckets, vocab {args.vocab_size}, "
              f"{args.workers} workers) of train/valid/test: {dt:.1f}s")
    res["load_avg_end"] = os.getloadavg()[0]
    print(f"load average (1 min) start {res['load_avg_start']:.2f}, end {res['load_avg_end']:.2f} "
          f"on {res['cpus']} CPUs (shared)")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", "bench_prepare.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
