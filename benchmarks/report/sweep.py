"""Section 5, the rare-word sweep: its tables, plot and the findings read off
them (paired by seed)."""
from __future__ import annotations

import os
import sys

from experiments_config import SWEEP_SCHEMES
from report.tables import _f, _ms, _plt, _save, _table, mean_sd


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
    L.append(sweep_setup(cfg, cuts, order))
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
    L += cut_tables(d, table, cuts, order)
    L += generation_table(d, table, order)
    # what the numbers say
    L.append("### Read off the numbers\n")
    L += [f"- {x}" for x in sweep_findings(d)]
    L.append("")
    return L


def sweep_setup(cfg: dict, cuts: dict, order: list) -> str:
    """The paragraph saying how the sweep was run."""
    softmax = cfg.get("softmax") or {}
    return (f"Every scheme at every cut trains the same model for the same **{cfg.get('steps')} steps** "
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


def cut_tables(d: dict, table: dict, cuts: dict, order: list) -> list:
    """One table per cut: test BPC of each scheme, paired differences, where the bits go."""
    L = []
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
    return L


def generation_table(d: dict, table: dict, order: list) -> list:
    """Parts of speech of generated text against the test text's."""
    sm = d.get("sweep_meta", {})
    cfg = sm.get("config", {})
    test_pos = sm.get("test_pos1") or {}
    tn = sum(test_pos.values())
    L = ["### Generated text: parts of speech\n"]
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
