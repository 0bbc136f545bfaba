"""Render docs/RESULTS.md and its plots from benchmarks/results/experiments.json
(written by run_experiments.py), without training anything.

    python benchmarks/render_results.py
    python benchmarks/render_results.py --json other.json --out /tmp/RESULTS.md

Every sentence of the report is read off the stored numbers.  A block of the
existing report between ``<!-- bench_budget:begin -->`` and
``<!-- bench_budget:end -->`` (written by bench_budget.py) is kept verbatim,
under the same heading.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

from experiments_config import (MEM_METHODS, MODEL, RARE_METHODS, REPEAT_SEED, RNN_RUNS, SAMPLE_TOKENS,
                                SAMPLES, SWEEP_SCHEMES)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_JSON = os.path.join(HERE, "results", "experiments.json")
BUDGET_BEGIN, BUDGET_END = "<!-- bench_budget:begin -->", "<!-- bench_budget:end -->"


def _rel(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


def keep_budget_block(old: str, new: str) -> str:
    """``new`` with the bench_budget block of ``old`` (if any) put back
    verbatim: at the end of the section of the same heading as in ``old``
    when ``new`` has it, else before "## Regenerate", else at the end."""
    b = old.find(BUDGET_BEGIN)
    e = old.find(BUDGET_END, b + 1)
    if b < 0 or e < 0:
        return new
    block = old[b:e + len(BUDGET_END)]
    heading = None
    for line in old[:b].splitlines():
        if line.startswith("#"):
            heading = line
    lines = new.split("\n")
    at = None
    if heading is not None and heading in lines:
        level = len(heading) - len(heading.lstrip("#"))
        at = lines.index(heading) + 1
        while at < len(lines) and not (lines[at].startswith("#")
                                       and len(lines[at]) - len(lines[at].lstrip("#")) <= level):
            at += 1
        while at > 0 and lines[at - 1].strip() == "":   # the block follows the section's text
            at -= 1
        if at == len(lines) or all(ln.strip() == "" for ln in lines[at:]):
            return "\n".join(lines[:at]).rstrip("\n") + "\n\n" + block + "\n"
        return "\n".join(lines[:at] + ["", block, ""] + lines[at:])
    elif "## Regenerate" in lines:
        at = lines.index("## Regenerate")
    if at is None:
        return new.rstrip("\n") + "\n\n" + block + "\n"
    return "\n".join(lines[:at] + [block, ""] + lines[at:])


# ---------------------------------------------------------------------------
# section 5: the rare-word sweep
# ---------------------------------------------------------------------------
def mean_sd(xs: list) -> tuple:
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return float("nan"), float("nan"), 0
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan")), len(xs)


def _ms(xs: list, fmt: str = "{:.3f}") -> str:
    m, s, n = mean_sd(xs)
    if n == 0:
        return "–"
    return fmt.format(m) + ("" if n < 2 else " ± " + fmt.replace("+", "").format(s))


def sweep_table(d: dict) -> dict:
    """{cut: {scheme: {seed: run}}} of the stored sweep runs."""
    out: dict = {}
    for key, r in d.get("sweep", {}).items():
        cut, scheme, seed = key.split("/")
        out.setdefault(cut, {}).setdefault(scheme, {})[seed] = r
    return out


def paired(runs: dict, a: str, b: str, get=lambda r: r["test_bpc"]) -> list:
    """Per-seed differences get(a) - get(b) over the seeds both have."""
    if a not in runs or b not in runs:
        return []
    return [get(runs[a][s]) - get(runs[b][s]) for s in sorted(set(runs[a]) & set(runs[b]))]


def beats(diffs: list) -> bool:
    """Lower by more than 2 standard deviations of the paired differences."""
    m, s, n = mean_sd(diffs)
    return n >= 2 and m < 0 and s == s and -m > 2 * s


def _cut_order(cuts: dict, table: dict) -> list:
    return sorted(table, key=lambda c: cuts.get(c, {}).get("target", float(c.rstrip("%")) / 100))


def _label(d: dict, scheme: str) -> str:
    cfg = d.get("sweep_meta", {}).get("config", {}).get("schemes", {})
    return cfg.get(scheme, {}).get("label") or dict((n, lab) for n, lab, _ in SWEEP_SCHEMES).get(scheme, scheme)


def _scheme_order(d: dict, present) -> list:
    names = [n for n, _, _ in SWEEP_SCHEMES]
    return sorted(present, key=lambda n: (names.index(n) if n in names else len(names), n))


def plot_sweep(d: dict, path: str) -> None:
    plt = _plt()
    table = sweep_table(d)
    cuts = d.get("sweep_meta", {}).get("cuts", {})
    order = _cut_order(cuts, table)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    schemes = _scheme_order(d, {s for c in table.values() for s in c})
    for j, sch in enumerate(schemes):
        xs, ys, es = [], [], []
        for cut in order:
            runs = table[cut].get(sch)
            if not runs:
                continue
            m, s, _ = mean_sd([r["test_bpc"] for r in runs.values()])
            share = cuts.get(cut, {}).get("test_rare_share", float(cut.rstrip("%")) / 100)
            xs.append(100 * share + 0.15 * (j - len(schemes) / 2))  # small offsets keep error bars apart
            ys.append(m)
            es.append(0 if s != s else s)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=_label(d, sch))
    ax.set_xlabel("rare-word share of test tokens (%)")
    ax.set_ylabel("test bits per character (mean ± sd over seeds)")
    ax.set_title("Rare-word schemes at equal training steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def sweep_section(d: dict, img_dir: str, rel: str) -> list:
    L = ["## 5. Rare-word schemes at several vocabulary cuts\n"]
    table = sweep_table(d)
    sm = d.get("sweep_meta", {})
    cfg, cuts = sm.get("config", {}), sm.get("cuts", {})
    if not table:
        return L + ["Not run.\n"]
    plot_sweep(d, os.path.join(img_dir, "rare_sweep.png"))
    order = _cut_order(cuts, table)
    softmax = cfg.get("softmax") or {}
    L.append(f"Every scheme at every cut trains the same model for the same **{cfg.get('steps')} steps** "
             f"(`train.py --max-steps`; {cfg.get('model', '')}), with the budget schedule (warmup, then cosine "
             "decay to 0.1 × lr at the last step), and seeds " + ", ".join(map(str, cfg.get('seeds', [])))
             + " — the same seeds for every scheme, so differences are paired by seed."
             + (" The output layer is what the defaults rule gives the cut (adaptive softmax above 2,000 "
                "outputs), the same for every scheme of a cut: "
                + ", ".join(f"{c} {softmax[c]}" for c in order if c in softmax) + "." if softmax else "")
             + "  The cut keeps the N most frequent training words, N chosen so that the share of test tokens "
             "that are rare (not kept, or never seen in training) is near the target: "
             + "; ".join(f"{c}: N = {cuts[c]['kept']:,}, {100 * cuts[c]['test_rare_share']:.1f}% rare"
                         for c in order if c in cuts)
             + f".  k-means and exchange use K = {cfg.get('buckets')}; context vectors are the mean hidden state "
             f"of the `unk` model of the same cut and seed {min(cfg.get('seeds') or [1])} before each occurrence of "
             "the word (`prepare --vectors RUN_DIR`); fastText vectors are gensim FastText (CBOW, character 1–3-"
             "grams, dimension 64) trained once on train.txt; exchange classes (`--rare exchange`) need no vectors: "
             "the exchange algorithm moves each rare word to the class that most raises the class-bigram "
             "likelihood of the training text, what the model itself has to predict.  Test bits per character "
             "(whole test.txt) are split into kept words and `</s>`, choosing the bucket (the model's -log P of "
             "bucket tokens) and choosing the word inside it (-log P(word | bucket), fixed by the vocabulary).\n")
    ran = {s for c in table.values() for s in c}
    missing = [lab for n, lab, _ in SWEEP_SCHEMES if n not in ran]
    if missing:
        L.append("Not run in this sweep: " + ", ".join(missing) + ".\n")
    want = len(cfg.get("seeds") or [])
    partial = [f"{c} {_label(d, s)} ({len(table[c][s])} of {want} seeds)" for c in order for s in table[c]
               if len(table[c][s]) < want]
    if partial:
        L.append("Incomplete: " + "; ".join(partial) + ".\n")
    L.append(f"![Test BPC against rare share]({rel}/rare_sweep.png)\n")
    for cut in order:
        runs = table[cut]
        L.append(f"### {cut} rare test tokens"
                 + (f" ({100 * cuts[cut]['test_rare_share']:.1f}%, {cuts[cut]['kept']:,} kept words)\n"
                    if cut in cuts else "\n"))
        rows = []
        for sch in _scheme_order(d, runs):
            rs = list(runs[sch].values())
            ds = d.get("datasets", {}).get(f"sweep-{cut.rstrip('%')}-{sch}", {})
            rows.append([_label(d, sch), _f(ds.get("outputs"), "{:,}"), _f(ds.get("buckets"), "{:,}"), len(rs),
                         f"**{_ms([r['test_bpc'] for r in rs], '{:.4f}')}**",
                         _ms(paired(runs, sch, "unk"), "{:+.4f}") if sch != "unk" else "",
                         _ms(paired(runs, sch, "pos"), "{:+.4f}") if sch != "pos" else "",
                         _ms([r["bits"]["kept"] for r in rs]), _ms([r["bits"]["bucket"] for r in rs]),
                         _ms([r["bits"]["within"] for r in rs])])
        L.append(_table(["scheme", "outputs", "buckets", "seeds", "test BPC", "Δ vs unk (paired)",
                         "Δ vs pos (paired)", "kept words", "choosing the bucket", "inside the bucket"], rows) + "\n")
    # generated text
    test_pos = sm.get("test_pos1") or {}
    tn = sum(test_pos.values())
    L.append("### Generated text: parts of speech\n")
    L.append(f"{cfg.get('samples')} samples of {cfg.get('sample_tokens')} tokens per model (seeds 1–"
             f"{cfg.get('samples')}, temperature 1, no prompt, bucket tokens expanded by P(word | bucket)), "
             "re-tokenized with MeCab; Jensen–Shannon divergence (bits, 0 = identical) between their UniDic pos1 "
             "distribution and the test text's, and the share of content words (名詞, 動詞, 形容詞, 形状詞) — "
             + (f"{100 * _content(test_pos):.1f}% in the test text ({tn:,} tokens)." if tn else "test text not "
                                                                                            "measured.") + "\n")
    rows = []
    for cut in order:
        runs = table[cut]
        for sch in _scheme_order(d, runs):
            rs = [r for r in runs[sch].values() if r.get("gen")]
            if rs:
                rows.append([cut, _label(d, sch), _ms([r["gen"]["js_bits"] for r in rs]),
                             _ms([100 * r["gen"]["content_share"] for r in rs], "{:.1f}"),
                             sum(r["gen"].get("leaks", 0) for r in rs)])
    L.append(_table(["cut", "scheme", "JS divergence (bits)", "content words %", "bucket names in text"], rows)
             + "\n")
    # what the numbers say
    L.append("### Read off the numbers\n")
    L += [f"- {x}" for x in sweep_findings(d)]
    L.append("")
    return L


def _content(counts: dict) -> float:
    n = sum(counts.values())
    return sum(counts.get(p, 0) for p in ("名詞", "動詞", "形容詞", "形状詞")) / n if n else float("nan")


def _clustering(scheme: str) -> bool:
    return "kmeans" in scheme or scheme == "exchange"


def _default_rare() -> str | None:
    """The bucket scheme ``prepare`` uses when given none."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo not in sys.path:
        sys.path.append(repo)
    try:
        from qrnn_lm.prepare import build_parser
    except ImportError:
        return None
    return build_parser().get_default("rare")


def sweep_findings(d: dict) -> list:
    """Sentences computed from the sweep: per cut the lowest mean BPC and how
    the others compare with it (paired by seed: "lower by more than 2 sd" or
    "no difference"); for the clustering schemes at rare shares >= 10% where
    their bits go against pos; prepare's default against the winners; last,
    whether any k-means scheme is lower than both unk and pos by more than 2
    sd of the paired differences at a rare share >= 10%."""
    table = sweep_table(d)
    cuts = d.get("sweep_meta", {}).get("cuts", {})
    want = d.get("sweep_meta", {}).get("config", {}).get("seeds") or []
    out = []
    winners = {}
    for cut in _cut_order(cuts, table):
        runs = table[cut]
        means = {s: mean_sd([r["test_bpc"] for r in rs.values()])[0] for s, rs in runs.items()}
        best = min(means, key=means.get)

        def seeds(s):
            n = len(runs[s])
            return "" if n == len(want) else f" ({n} seed{'s' if n != 1 else ''})"
        out.append(f"{cut}: lowest mean test BPC {_label(d, best)} {means[best]:.4f}{seeds(best)}; "
                   + ", ".join(f"{_label(d, s)} {means[s]:.4f}{seeds(s)}" for s in _scheme_order(d, means)
                               if s != best) + ".")
        clear, tied = [], []  # (scheme, paired differences) lower by > 2 sd / not
        for s in _scheme_order(d, means):
            if s != best:
                diff = paired(runs, best, s)
                (clear if beats(diff) else tied).append((s, diff))
        winners[cut] = (best, [best] + [s for s, _ in tied])

        def named(pairs):
            return ", ".join(f"{_label(d, s)} ({_ms(diff, '{:+.4f}')})" for s, diff in pairs)
        out.append(f"{cut}, paired by seed: {_label(d, best)} is lower by more than 2 sd than "
                   + (named(clear) if clear else "none")
                   + ("; within 2 sd (no difference at this budget): " + named(tied) if tied else "") + ".")
    for cut in _cut_order(cuts, table):
        share = cuts.get(cut, {}).get("test_rare_share", float(cut.rstrip("%")) / 100)
        runs = table[cut]
        if share < 0.095 or "pos" not in runs:
            continue
        parts = []
        for s in _scheme_order(d, runs):
            if not _clustering(s):
                continue
            split = {k: _ms(paired(runs, s, "pos", lambda r, k=k: r["bits"][k]), "{:+.3f}")
                     for k in ("within", "bucket", "kept")}
            parts.append(f"{_label(d, s)}: inside the bucket {split['within']}, choosing the bucket "
                         f"{split['bucket']}, kept words {split['kept']}")
        if parts:
            out.append(f"{cut}, where the bits of the clustering schemes go, against pos (bits per character, "
                       "paired): " + "; ".join(parts) + ".")
    default = _default_rare()
    if default and any(default in t for t in table.values()):
        good = [c for c, (_, ok) in winners.items() if default in ok]
        bad = [f"{c} ({_label(d, winners[c][0])})" for c in winners if c not in good
               and default in table.get(c, {})]
        out.append(f"`prepare`'s default bucket scheme, {_label(d, default)} (`--rare {default}`), is the lowest or "
                   f"within 2 sd of the lowest at " + (", ".join(good) if good else "no cut")
                   + ("; beaten by more than 2 sd at " + ", ".join(bad) if bad else "") + ".")
    km = [s for s in _scheme_order(d, {s for c in table.values() for s in c}) if "kmeans" in s]
    wins = []
    for cut in _cut_order(cuts, table):
        share = cuts.get(cut, {}).get("test_rare_share", float(cut.rstrip("%")) / 100)
        if share < 0.095:
            continue
        for s in km:
            du, dp = paired(table[cut], s, "unk"), paired(table[cut], s, "pos")
            if beats(du) and beats(dp):
                wins.append(f"{_label(d, s)} at {cut} (vs unk {_ms(du, '{:+.4f}')}, vs pos {_ms(dp, '{:+.4f}')})")
    if km:
        out.append("k-means lower than both unk and pos by more than 2 sd of the paired differences, at a rare "
                   "share ≥ 10%: " + ("; ".join(wins) if wins else "none") + ".")
    return out


def _save(plt, fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    _save(plt, fig, path)


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
    _save(plt, fig, path)


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
    _save(plt, fig, path)


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
        held = "met" if all_beat else ("met by the best K, not every K" if km[best_km] < base[best_base]
                                       else "not met")
        rows.append(["k-means buckets beat `unk` and `pos` on test BPC (section 1: 1.7% rare test tokens)",
                     f"best k-means {best_km} {km[best_km]:.4f}, worst k-means {max(km.values()):.4f}; "
                     f"best of unk/pos {best_base} {base[best_base]:.4f}", held])
    if km and "full" in rare:
        best_km = min(km, key=km.get)
        rel = km[best_km] / rare["full"]["test_bpc"] - 1
        fs, ks = rare["full"]["steps"], rare[best_km]["steps"]
        steps = (f"; in the same time the full-vocabulary model made {fs} training steps and {best_km} {ks} "
                 f"({d.get('datasets', {}).get('full', {}).get('outputs', 0):,} against "
                 f"{d.get('datasets', {}).get(best_km, {}).get('outputs', 0):,} outputs)")
        rows.append(["k-means at 40% of types within 3% of the full-vocabulary BPC",
                     f"{best_km} {km[best_km]:.4f} vs full {rare['full']['test_bpc']:.4f} ({100 * rel:+.1f}%)"
                     + steps, "met" if rel <= 0.03 else "not met"])
    table, cuts = sweep_table(d), d.get("sweep_meta", {}).get("cuts", {})
    high = [c for c in _cut_order(cuts, table)
            if cuts.get(c, {}).get("test_rare_share", float(c.rstrip("%")) / 100) >= 0.095]
    if high:
        wins = [(c, s) for c in high for s in _scheme_order(d, table[c]) if "kmeans" in s
                and beats(paired(table[c], s, "unk")) and beats(paired(table[c], s, "pos"))]
        rows.append(["a k-means scheme beats `unk` and `pos` by more than 2 sd (paired by seed) at a rare share "
                     "≥ 10% (section 5)",
                     ("; ".join(f"{c}: {_label(d, s)}" for c, s in wins) if wins else "none")
                     + f" (cuts tried: {', '.join(high)})", "met" if wins else "not met"])
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
                         "not met"])
        else:
            ratio = tl / max(tq, 1e-9)
            rows.append([f"QRNN-LM trains ≥ 2× faster than LSTM-LM at equal BPC ({batching})",
                         f"valid BPC {target:.4f} (the LSTM's best): LSTM {tl:.2f} min, QRNN {tq:.2f} min "
                         f"→ {ratio:.2f}×; tokens/s ratio {speed:.2f}×",
                         "met" if ratio >= 2 else "not met"])
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
        out.append("k-means (K=256) against `unk`, bits per test character by token class (table in section 1): "
                   f"rare-word tokens {rare_total(u):.3f} (unk) vs {rare_total(k):.3f} (K=256); of which inside the "
                   "bucket for seen rare words "
                   f"{part(u, 'seen rare words', 'within_bucket_bpc'):.3f} vs "
                   f"{part(k, 'seen rare words', 'within_bucket_bpc'):.3f}, naming the bucket "
                   f"{part(u, 'seen rare words', 'model_bpc'):.3f} vs {part(k, 'seen rare words', 'model_bpc'):.3f} "
                   f"(seen rare words) and {part(u, 'unseen words', 'model_bpc'):.3f} vs "
                   f"{part(k, 'unseen words', 'model_bpc'):.3f} (the {u['unseen words']['tokens']:,} of "
                   f"{u['unseen words']['tokens'] + u['seen rare words']['tokens']:,} rare test tokens never seen in "
                   "training); kept words "
                   f"{part(u, 'kept words', 'model_bpc'):.3f} vs {part(k, 'kept words', 'model_bpc'):.3f}.  Rare "
                   f"words are {100 * d.get('datasets', {}).get('unk', {}).get('test_bucket_fraction', 0):.1f}% of "
                   f"the test tokens at the 40% cut; the bucket schemes span {spread:.3f} bits/char.")
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


def render(d: dict, md_path: str, img_dir: str, json_path: str = None) -> None:
    """Write ``md_path`` (and PNG plots into ``img_dir``) from the results
    dict ``d``; a bench_budget block of the existing file is kept."""
    json_path = json_path or DEFAULT_JSON
    meta = d.get("meta", {})
    profile = meta.get("profile") or {}
    old_md = open(md_path, encoding="utf-8").read() if os.path.exists(md_path) else ""
    mach = meta.get("machine", {})
    os.makedirs(img_dir, exist_ok=True)
    rel = os.path.relpath(img_dir, os.path.dirname(md_path))
    cut = meta.get("cut", {})
    L = []
    L.append("# Results\n")
    L.append(f"Produced by `{meta.get('command', 'python benchmarks/run_experiments.py')}` "
             f"(benchmarks/run_experiments.py), started {meta.get('started', '?')}, "
             f"last step finished {meta.get('finished', '?')} (UTC); commit {mach.get('commit')}.  "
             f"Raw numbers: `{_rel(json_path)}`.\n")
    L.append(f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, "
             f"{(mach.get('memory_bytes') or 0) / 2 ** 30:.0f} GiB RAM, no GPU; Python {mach.get('python')}, "
             f"torch {mach.get('torch')}, compiled fo-pool kernels for {', '.join(mach.get('compiled_kernels') or []) or 'no device (reference loops)'}.  The cores were shared with other work at times; each run's load "
             "average is in the JSON.\n")
    L.append("## Setup\n")
    ds = d.get("datasets", {})
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

    goal_rows = goals(d)
    L.append("## Targets\n")
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
                         _f(s.get("within_bucket_bpc", within_bucket_bits(s)), "{:.3f}"),
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
                 f"layer), hence its larger parameter count. Each run had the same {profile.get('rnn_minutes')} "
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

    # ---- 5
    L += sweep_section(d, img_dir, rel)

    L.append("## Regenerate\n")
    L.append("```\npip install matplotlib        # only this script needs it\n"
             "python benchmarks/run_experiments.py            # everything, ~40 min on 2 CPU cores\n"
             "python benchmarks/run_experiments.py --quick    # a check of the plumbing on a slice\n"
             "python benchmarks/run_experiments.py --only sweep   # section 5 only\n"
             "python benchmarks/render_results.py             # this file from the JSON, no training\n"
             "```\n")
    L.append("Runs already in `benchmarks/results/experiments.json` are skipped (delete it, or `--redo NAME`, "
             "to measure again); prepared datasets, run directories and logs go to `--work` "
             f"(default `~/.cache/qrnn_lm/experiments`). Took {_f(meta.get('total_minutes'), '{:.0f}')} minutes "
             "of wall time in all.\n")
    text = keep_budget_block(old_md, "\n".join(L))
    tmp = md_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, md_path)
    print(f"wrote {md_path}", file=sys.stderr)



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=DEFAULT_JSON, help="results written by run_experiments.py")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "RESULTS.md"), help="report to write")
    p.add_argument("--img", default=None, help="folder for the plots (default: img/ beside --out)")
    args = p.parse_args(argv)
    try:
        with open(args.json, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: cannot read {args.json} ({e}); run benchmarks/run_experiments.py first.", file=sys.stderr)
        return 1
    render(d, args.out, args.img or os.path.join(os.path.dirname(os.path.abspath(args.out)), "img"), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
