"""What a user gets per budget: test bits per character at equal wall time.

    python benchmarks/bench_budget.py --corpus ../shared/data/ja-debian-docs --minutes 2 5 1 \\
        --contenders defaults classic sentencepiece char

Contenders (all through train.py, one process per run):

- ``defaults``: ``train.py --train --valid --test --max-minutes N`` and nothing
  else (the defaults rule and budget schedule of train.py; on a corpus this
  size that includes the 8-gram counted at the start, within the budget, and
  mixed in at the end with the cache of the text read so far: its row records
  the network's own test BPC and the mixture's without the cache too);
- ``classic``: pytorch/examples' word_language_model recipe with this
  package's LSTM, on the very same token stream as ``defaults``: ``--rnn lstm
  --emsize 200 --nhid 200 --nlayers 2 --tied --optimizer sgd --lr 20 --clip
  0.25 --dropout 0.2 --bptt 35 --batch_size 20``, plus what that recipe does
  and our flags would otherwise choose (dropout 0.2 everywhere, no word
  dropout, full softmax, fixed BPTT, no weight decay, lr / 4 after an epoch
  whose validation does not improve), and no n-gram mixed in (``--ngram 0``);
- ``sentencepiece``, ``char``: the defaults with ``--tokenizer sentencepiece`` /
  ``char``;
- ``gpt``: nanoGPT's model.py with its README's CPU settings (4 layers x 128,
  4 heads, context 64, batch 12, AdamW lr 1e-3, no dropout; cosine over the
  budget), benchmarks/peers/gpt.py;
- ``ngram``: an interpolated modified Kneser-Ney 5-gram,
  benchmarks/peers/kneser_ney.py; it has no budget (it counts in seconds), so
  it runs once and its row records how long counting took; ``ngram8``: the
  same at order 8, the n-gram the defaults mix in on a corpus this size;
- ``kenlm``: the same with KenLM's ``lmplz`` (benchmarks/peers/kenlm_lmplz.py),
  when ``--lmplz`` (or an ``lmplz`` on PATH) is there; otherwise the JSON's
  meta records why it was skipped.

``classic``, ``gpt``, ``ngram``, ``ngram8`` and ``kenlm`` read the very ids the ``defaults`` run
trains on (its prepared dataset) and are scored the same way: -log P over
every output token of the test split plus the rare words' -log P(word |
bucket), over the split's characters (qrnn_lm.lm.bits_per_char).

Each corpus/tokenizer pair is tokenized once into ``--cache-dir`` before the
runs (train.py's own on-the-fly cache), so no run pays for tokenizing.  Runs
are interleaved (for each budget and seed, every contender in turn) because
the machine may be shared; each row records the steps and tokens it reached
and the load average around it.  Results go to a JSON file (rewritten after
every run; ``--keep`` reuses finished runs of it) and a PNG of BPC against
budget; then benchmarks/render_results.py rewrites docs/RESULTS.md (its
section "What a budget buys" comes from this JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLASSIC = ["--rnn", "lstm", "--emsize", "200", "--nhid", "200", "--nlayers", "2", "--tied", "--optimizer", "sgd",
           "--lr", "20", "--clip", "0.25", "--dropout", "0.2", "--bptt", "35", "--batch_size", "20",
           # what the classic recipe also does, where our defaults would choose otherwise
           "--dropouth", "0.2", "--dropouti", "0.2", "--dropoute", "0", "--softmax", "full", "--fixed-bptt",
           "--wdecay", "0", "--schedule", "plateau", "--lr-decay", "0.25", "--eval-interval", "0",
           "--ngram", "0"]   # the network alone, as that recipe has it
TOKENIZER = {"defaults": None, "classic": None, "sentencepiece": "sentencepiece", "char": "char", "gpt": None,
             "ngram": None, "ngram8": None, "kenlm": None}
LABEL = {"defaults": "(a) defaults (MeCab)", "classic": "(b) classic recipe (LSTM 2x200, SGD 20)",
         "sentencepiece": "(c) defaults, sentencepiece", "char": "(c) defaults, char",
         "gpt": "(d) small GPT (nanoGPT model.py, 4x128, context 64, AdamW 1e-3)",
         "ngram": "(e) Kneser-Ney 5-gram (interpolated modified, numpy)",
         "ngram8": "(e) Kneser-Ney 8-gram (interpolated modified, numpy)",
         "kenlm": "(e) Kneser-Ney 5-gram (KenLM lmplz)"}
SAME_IDS = ("classic", "gpt", "ngram", "ngram8", "kenlm")   # contenders that read the defaults' prepared dataset
NO_BUDGET = ("ngram", "ngram8", "kenlm")                    # train as long as they take, once
PEERS = {"gpt": os.path.join(REPO, "benchmarks", "peers", "gpt.py"),
         "ngram": os.path.join(REPO, "benchmarks", "peers", "kneser_ney.py"),
         "ngram8": os.path.join(REPO, "benchmarks", "peers", "kneser_ney.py"),
         "kenlm": os.path.join(REPO, "benchmarks", "peers", "kenlm_lmplz.py")}
QUICKSTART_5MIN = 2.891   # the README quickstart's 5-minute test BPC before the budget schedule


def files(corpus: str) -> list:
    return ["--train", os.path.join(corpus, "train.txt"), "--valid", os.path.join(corpus, "valid.txt"),
            "--test", os.path.join(corpus, "test.txt")]


def prepared_dir(corpus: str, tokenizer: str | None, cache: str) -> str:
    """Tokenize once (train.py's cache); returns the prepared dataset directory."""
    from qrnn_lm import train
    argv = files(corpus) + ["--cache-dir", cache] + (["--tokenizer", tokenizer] if tokenizer else [])
    args = train.build_parser().parse_args(argv)
    t = time.time()
    out = train.prepare_on_the_fly(args, True, False)
    print(f"dataset for {tokenizer or 'mecab (defaults)'}: {out} ({time.time() - t:.0f} s)", flush=True)
    return out


def command(name: str, minutes: float, seed: int, corpus: str, cache: str, data: dict, save: str,
            lmplz: str | None = None) -> list:
    base = [sys.executable, os.path.join(REPO, "train.py"), "--max-minutes", f"{minutes:g}", "--save", save,
            "--no-progress"]
    if seed != 1111:
        base += ["--seed", str(seed)]
    if name == "classic":
        return base + ["--data", data["defaults"]] + CLASSIC
    if name in PEERS:
        peer = [sys.executable, PEERS[name], "--data", data["defaults"], "--save", save]
        if name == "kenlm":
            return peer + ["--lmplz", lmplz]
        if name == "ngram8":
            return peer + ["--order", "8"]
        return peer if name in NO_BUDGET else peer + ["--minutes", f"{minutes:g}", "--seed", str(seed)]
    tok = TOKENIZER[name]
    return base + files(corpus) + ["--cache-dir", cache] + (["--tokenizer", tok] if tok else [])


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_one(name, minutes, seed, corpus, cache, data, runs_dir, threads, lmplz=None) -> dict:
    if name in NO_BUDGET:
        minutes = 0    # its row: "minutes" 0, the time it took in wall_s and train_seconds
    save = os.path.join(runs_dir, f"{name}-{minutes:g}m-s{seed}")
    shutil.rmtree(save, ignore_errors=True)
    cmd = command(name, minutes, seed, corpus, cache, data, save, lmplz)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    load0, t0 = loadavg(), time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    with open(save + ".log", "w", encoding="utf-8") as f:
        f.write(proc.stdout + proc.stderr)
    row = {"contender": name, "minutes": minutes, "seed": seed, "rc": proc.returncode, "wall_s": round(wall, 1),
           "load_before": load0, "load_after": loadavg(),
           "command": " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd[1:])}
    if proc.returncode == 0:
        res = json.load(open(os.path.join(save, "results.json"), encoding="utf-8"))
        row.update(test_bpc=res["test"]["bpc"], valid_bpc=res["valid"]["bpc"], test_ppl=res["test"]["ppl"],
                   steps=res["step"], tokens=res.get("tokens"), train_minutes=res.get("minutes"),
                   chosen=res.get("chosen"), network_test_bpc=(res.get("network") or res)["test"]["bpc"],
                   ngram_weight=(res.get("ngram") or {}).get("weight"),
                   without_cache_test_bpc=res["test"].get("without_cache_bpc"),
                   **{k: res[k] for k in ("train_seconds", "parameters") if k in res})
    else:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
    print(json.dumps({k: v for k, v in row.items() if k not in ("command", "chosen")}), flush=True)
    return row


def summary(rows: list) -> dict:
    """Mean test BPC per (contender, minutes) over seeds, and the two criteria."""
    out = {}
    for r in rows:
        if r.get("rc") == 0:
            out.setdefault((r["contender"], r["minutes"]), []).append(r)
    return out


def write_plot(rows: list, png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table = summary(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in LABEL:
        pts = sorted((m, sum(r["test_bpc"] for r in rs) / len(rs)) for (n, m), rs in table.items() if n == name)
        if pts and name in NO_BUDGET:   # no budget: a level line
            ax.axhline(pts[0][1], linestyle="--", color="gray", label=LABEL[name])
        elif pts:
            ax.plot(*zip(*pts), marker="o", label=LABEL[name])
    ax.set_xlabel("training budget (CPU minutes, wall time)")
    ax.set_ylabel("test bits per character")
    ax.set_xscale("log")
    ticks = sorted({m for (n, m) in table if n not in NO_BUDGET})
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{m:g}" for m in ticks])
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(png), exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=os.path.join(REPO, "..", "shared", "data", "ja-debian-docs"),
                   help="a folder with train.txt, valid.txt, test.txt")
    p.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 1])
    p.add_argument("--contenders", nargs="+", choices=list(LABEL), default=list(LABEL))
    p.add_argument("--seeds", type=int, nargs="+", default=[1111])
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (OMP_NUM_THREADS)")
    p.add_argument("--cache-dir", default=os.path.join(REPO, "runs", "bench_budget", "cache"))
    p.add_argument("--runs-dir", default=os.path.join(REPO, "runs", "bench_budget"))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "bench_budget_cpu.json"))
    p.add_argument("--png", default=os.path.join(REPO, "docs", "img", "bpc_vs_budget.png"),
                   help="the plot (the report links img/bpc_vs_budget.png beside --results-md)")
    p.add_argument("--results-md", default=os.path.join(REPO, "docs", "RESULTS.md"),
                   help="the report benchmarks/render_results.py rewrites after the runs")
    p.add_argument("--lmplz", default=shutil.which("lmplz"),
                   help="KenLM's lmplz for the kenlm contender (default: lmplz on PATH; KenLM's query beside it)")
    p.add_argument("--keep", action="store_true", help="reuse the finished runs already in --out")
    p.add_argument("--report-only", action="store_true", help="only rewrite the plot and RESULTS.md from --out")
    args = p.parse_args(argv)
    import torch
    result = {"meta": {}, "runs": []}
    if (args.keep or args.report_only) and os.path.exists(args.out):
        result = json.load(open(args.out, encoding="utf-8"))
    meta = result["meta"]
    if not args.report_only:
        cmd = "python benchmarks/bench_budget.py " + " ".join(argv if argv is not None else sys.argv[1:])
        meta["commands"] = meta.get("commands", [meta["command"]] if "command" in meta else []) + [cmd]
        meta.update(command=cmd,
                    corpus=os.path.basename(os.path.normpath(args.corpus)),
                    machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), threads=args.threads,
                    torch=torch.__version__, date=time.strftime("%Y-%m-%d", time.gmtime()), seeds=args.seeds)
    meta["json"] = os.path.abspath(args.out)
    if not args.report_only:
        os.makedirs(args.runs_dir, exist_ok=True)
        data = {}
        for name in args.contenders:
            key = "defaults" if name in SAME_IDS else name
            if key not in data:
                data[key] = prepared_dir(args.corpus, TOKENIZER[key], args.cache_dir)
        done = {(r["contender"], r["minutes"], r["seed"]) for r in result["runs"] if r.get("rc") == 0}
        done |= {(r["contender"], m, s) for r in result["runs"] if r.get("rc") == 0 and r["contender"] in NO_BUDGET
                 for m in args.minutes for s in args.seeds}
        result["runs"] = [r for r in result["runs"] if r.get("rc") == 0]
        skipped = meta.setdefault("skipped", {})
        if "kenlm" in args.contenders and not (args.lmplz and os.access(args.lmplz, os.X_OK)):
            skipped["kenlm"] = ("no KenLM lmplz (none on PATH and no --lmplz); build github.com/kpu/kenlm and "
                                "pass --lmplz PATH/lmplz")
            done |= {("kenlm", m, s) for m in args.minutes for s in args.seeds}
        elif "kenlm" in args.contenders:
            skipped.pop("kenlm", None)
        for minutes in args.minutes:
            for seed in args.seeds:
                for name in args.contenders:
                    if (name, minutes, seed) in done:
                        continue
                    if name in NO_BUDGET:   # once, whatever the budget and seed
                        done |= {(name, m, s) for m in args.minutes for s in args.seeds}
                    result["runs"].append(run_one(name, minutes, seed, args.corpus, args.cache_dir, data,
                                                  args.runs_dir, args.threads, args.lmplz))
                    report(result, args)
    return report(result, args)


def report(result: dict, args) -> int:
    """Write the JSON and the plot, then have benchmarks/render_results.py
    rewrite the report from the JSON files (the only writer of RESULTS.md)."""
    loads = [v for r in result["runs"] for v in (r.get("load_before"), r.get("load_after")) if v == v and v is not None]
    result["meta"].update(load_min=min(loads) if loads else float("nan"), load_max=max(loads) if loads else float("nan"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    write_plot(result["runs"], args.png)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import render_results
    rc = render_results.main(["--budget-json", args.out, "--out", args.results_md])
    if rc:
        print(f"error: {args.out} is written, {args.results_md} is not; run benchmarks/render_results.py "
              f"--budget-json {args.out} once the experiments JSON exists.", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
