"""The sections of docs/RESULTS.md before the sweep, one function each: every
function takes the results dict and returns the section's Markdown lines
(joined with newlines by ``render_results.render``)."""
from __future__ import annotations

import os

from experiments_config import MEM_METHODS, MODEL, RARE_METHODS, REPEAT_SEED, RNN_RUNS, SAMPLE_TOKENS, SAMPLES
from report.plots import plot_curves, plot_memory, plot_rare
from report.speed import speed_sections
from report.tables import HERE, _f, _rel, _table, within_bucket_bits
from report.targets import goals, summary


def header(d: dict, json_path: str) -> list:
    meta = d.get("meta", {})
    mach = meta.get("machine", {})
    kernels = ", ".join(mach.get("compiled_kernels") or []) or "no device (reference loops)"
    return ["# Results\n",
            f"Produced by `{meta.get('command', 'python benchmarks/run_experiments.py')}` "
            f"(benchmarks/run_experiments.py), started {meta.get('started', '?')}, "
            f"last step finished {meta.get('finished', '?')} (UTC); commit {mach.get('commit')}.  "
            f"Raw numbers: `{_rel(json_path)}`.\n",
            f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, "
            f"{(mach.get('memory_bytes') or 0) / 2 ** 30:.0f} GiB RAM, no GPU; Python {mach.get('python')}, "
            f"torch {mach.get('torch')}, compiled fo-pool kernels for {kernels}.  The cores were shared with other "
            "work at times; each run's load average is in the JSON.\n"]


def setup(d: dict) -> list:
    meta = d.get("meta", {})
    profile = meta.get("profile") or {}
    cut = meta.get("cut", {})
    ds = d.get("datasets", {})
    L = ["## Setup\n"]
    L.append(f"- Corpus: `{meta.get('data_dir', '../shared/data/ja-debian-docs')}` "
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
    L.append(f"- Budget: every rare-word run trains for **{profile.get('rare_minutes')} minutes** of wall time "
             f"(`--max-minutes`), every QRNN/LSTM run for **{profile.get('rnn_minutes')} minutes** with validation "
             "every " + ", ".join(f"{v} ({k})" for k, v in (profile.get("eval_interval") or {}).items()) +
             " steps (their time inside the budget); the learning curves of section 2 show how far from "
             "convergence that is.")
    rare_runs = d.get("rare", {}).values()
    if rare_runs and all(r.get("best_step") == r["steps"] for r in rare_runs):
        L.append("- No rare-word run completes an epoch; each validates once, when its budget ends, so section 1 "
                 "evaluates the weights at the end of the budget. Section 2 evaluates each run's last weights "
                 "too (`python -m qrnn_lm evaluate --checkpoint RUN/last.pt`).")
    L.append("- BPC is exact over the original text: rare words cost log P(bucket | history) + log P(word | bucket) "
             "(DESIGN.md section 3), so word, subword and character models are comparable.\n")
    return L


def targets(d: dict) -> list:
    L = ["## Targets\n"]
    goal_rows = goals(d)
    if goal_rows:
        L.append(_table(["goal", "measured", "verdict"], goal_rows) + "\n")
    L.append("\"Equal BPC\" for the speed goal: the best validation BPC the LSTM-LM reached in its budget, and "
             "the training minutes (validation passes left out) each model needed to first reach it, linear "
             "between validations.  The first k-means goal uses the test BPC of section 1, the second the "
             "sweep of section 5 (3 seeds).  Outside section 5, every number is one run with "
             "one seed on a shared 2-core machine" + (
                 "; two setups were run again with another seed (section 1)."
                 if d.get("repeat") else "; no setup was run with a second seed.") + "\n")
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
    return L


def rare_section(d: dict, img_dir: str, rel: str) -> list:
    """Section 1: the rare-word methods at the 40% cut."""
    L = ["## 1. Rare words at a 40% vocabulary\n"]
    rare = d.get("rare", {})
    if not rare:
        return L + ["Not run.\n"]
    ds = d.get("datasets", {})
    plot_rare(rare, ds, os.path.join(img_dir, "rare_words.png"))
    L.append(_rare_table(rare, ds) + "\n")
    L.append(f"![Test BPC and rare words in samples per method]({rel}/rare_words.png)\n")
    baseline = d.get("meta", {}).get("baseline_rss_bytes")
    L.append("Peak RSS is ru_maxrss of the train.py process (it includes the Python interpreter and torch, "
             f"about {_f(baseline and baseline / 2 ** 20, '{:.0f}')} MiB "
             "for `import torch` alone). \"steps\" differs because the budget is time; tokens per step are "
             "32 × ~70. \"test tokens in buckets\" is the share of test tokens that map to a bucket (for the full "
             "vocabulary and char: words or characters never seen in training); \"within-bucket part of BPC\" "
             "(-Σ log2 P(word | bucket) per "
             "character) is the part of the test BPC spent choosing the word inside its bucket, fixed by the "
             "vocabulary before any training (the model pays the rest: which output, bucket or word, comes "
             "next); "
             f"\"samples\" is the share of the {SAMPLES} × {SAMPLE_TOKENS} sampled tokens that were bucket "
             "tokens (each expanded to a word by P(word | bucket)) and the number of bucket names found in "
             "the text.\n")
    L += repeat_table(d) + breakdown_table(d) + samples_list(rare)
    return L


def _rare_table(rare: dict, ds: dict) -> str:
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
                     _f(s.get("within_bucket_bpc", within_bucket_bits(s)), "{:.3f}"),
                     f"{r['params'] / 1e6:.2f}M", r["steps"], _f(r.get("tokens_per_s"), "{:,.0f}"),
                     f"{r['maxrss_bytes'] / 2 ** 20:,.0f}", f"**{r['test_bpc']:.4f}**",
                     _f(full_bpc and 100 * (r["test_bpc"] / full_bpc - 1), "{:+.1f}%"),
                     f"{100 * r['rare_fraction']:.1f}% / {r['leaks']}"])
    return _table(["method", "outputs", "buckets", "test tokens in buckets", "within-bucket part of BPC",
                   "parameters", "steps", "train tok/s", "peak RSS MiB", "test BPC", "vs full",
                   "samples: bucket tokens / leaks"], rows)


def repeat_table(d: dict) -> list:
    """Run-to-run spread: section 1 setups trained again with another seed."""
    rare = d.get("rare", {})
    rows = []
    for key, r in sorted(d.get("repeat", {}).items()):
        name = key.rsplit("-seed", 1)[0]
        if name in rare:
            rows.append([rare[name]["label"], f"{rare[name]['test_bpc']:.4f} ({rare[name]['steps']} steps)",
                         f"{r['test_bpc']:.4f} ({r['steps']} steps)",
                         f"{abs(r['test_bpc'] - rare[name]['test_bpc']):.4f}"])
    if not rows:
        return []
    return [f"Run-to-run spread: the same setup trained again with seed {REPEAT_SEED} (dropout masks, "
            "initialisation, window lengths) and the same time budget:\n",
            _table(["method", "test BPC, seed 1111", f"test BPC, seed {REPEAT_SEED}", "difference"], rows) + "\n"]


def breakdown_table(d: dict) -> list:
    """Where the test bits of the MeCab models go, per class of token."""
    bd = d.get("breakdown", {})
    if not bd:
        return []
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
    return ["Where the test bits go (MeCab models; bits per test character, model part + within-bucket "
            "part; the token positions are the same in every MeCab dataset, "
            + ", ".join(f"{first[c]['tokens']:,} {c}" for c in cls) + "):\n",
            _table(["method"] + cls + ["total"], rows) + "\n"]


def samples_list(rare: dict) -> list:
    L = ["### Samples (seeds 1–5, temperature 1, no prompt)\n"]
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
    return L


def rnn_section(d: dict, img_dir: str, rel: str) -> list:
    """Section 2: QRNN vs LSTM at equal wall time."""
    L = ["## 2. QRNN vs LSTM\n"]
    rnn = d.get("rnn", {})
    if not rnn:
        return L + ["Not run.\n"]
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
             f"layer), hence its larger parameter count. Each run had the same "
             f"{(d.get('meta', {}).get('profile') or {}).get('rnn_minutes')} "
             "minutes of wall time (validation passes included); the curve's x axis leaves the validation "
             "passes out. " + _tokens_per_s_note(rnn.values()) + "\n")
    return L


def _tokens_per_s_note(runs) -> str:
    """How tok/s was measured: train.py's own figure (runs read from the run
    directory's JSON) or, in results stored before it wrote one, the median
    over log intervals."""
    if all(r.get("timing") == "train.py" for r in runs):
        return ("tok/s is train.py's `tokens_per_second`: target tokens over training time, validations and "
                "checkpoint saves left out (sentence batches hold fewer tokens per step than 32 × 70 windows).")
    return ("tok/s is the median over log intervals of target tokens per second of training steps (sentence "
            "batches hold fewer tokens per step than 32 × 70 windows).")


def speed_section(results_dir: str = os.path.join(HERE, "results")) -> list:
    """Section 3: tables of the kernel, layer and LM benchmark JSON files."""
    return ["## 3. Kernel and layer speed\n",
            "Collected from the benchmark JSON files in `benchmarks/results/` (rerun the benchmark to refresh "
            "them; this script does not time kernels itself).\n",
            speed_sections(results_dir)]


def memory_section(d: dict, img_dir: str, rel: str) -> list:
    """Section 4: peak memory of one training step against vocabulary size."""
    L = ["## 4. Vocabulary size vs training memory\n"]
    mem = d.get("memory", {})
    if not mem:
        return L + ["Not run.\n"]
    plot_memory(mem, os.path.join(img_dir, "memory_vs_vocab.png"))
    rows = []
    for v in sorted({r["types"] for r in mem.values()}):
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
    return L


def run_minutes(d: dict):
    """Wall time of a full experiment run, in minutes: the runner's own clock
    over all its invocations (``meta.total_minutes``), the one figure the
    documentation quotes for how long the experiments take."""
    return d.get("meta", {}).get("total_minutes")


def regenerate(d: dict) -> list:
    minutes = run_minutes(d)
    took = (f"A full run took {minutes:.0f} minutes of wall time on the machine above (all invocations of the "
            "runner together)." if minutes is not None else "")
    return ["## Regenerate\n",
            "```\npip install matplotlib        # only this script needs it\n"
            "python benchmarks/run_experiments.py            # everything, resumable (how long: below)\n"
            "python benchmarks/run_experiments.py --quick    # a check of the plumbing on a slice\n"
            "python benchmarks/run_experiments.py --only sweep   # section 5 only\n"
            "python benchmarks/render_results.py             # this file from the JSON files, no training\n"
            "```\n",
            "Runs already in `benchmarks/results/experiments.json` are skipped (delete it, or `--redo NAME`, "
            "to measure again); prepared datasets, run directories and logs go to `--work` "
            f"(default `~/.cache/qrnn_lm/experiments`). {took}\n"]
