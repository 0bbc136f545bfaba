"""The "What a budget buys" section, from the JSON bench_budget.py writes
(benchmarks/results/bench_budget_cpu.json)."""
from __future__ import annotations

import os

from bench_budget import LABEL, NO_BUDGET, QUICKSTART_5MIN, summary


def _mean(rs: list, key: str) -> float:
    return sum(r.get(key) or 0 for r in rs) / len(rs)


def budget_section(result: dict, json_path: str, md_dir: str, rel: str) -> list:
    """Test BPC per contender and budget; ``json_path`` is the file the
    numbers were read from (linked relative to ``md_dir``), ``rel`` the plot
    folder relative to ``md_dir``."""
    rows, meta = result["runs"], result["meta"]
    commands = meta.get("commands", [meta["command"]])
    link = os.path.relpath(os.path.abspath(json_path), os.path.abspath(md_dir))
    return (["## What a budget buys (`benchmarks/bench_budget.py`)", "",
             "- Command" + ("s (the later ones add runs with --keep)" if len(commands) > 1 else "")
             + ": " + "; ".join(f"`{c}`" for c in commands),
             f"- Corpus: {meta['corpus']}; machine: {meta['machine']}, {meta['cpus']} CPUs "
             f"(shared with other work: load average {meta['load_min']:.1f}–{meta['load_max']:.1f} during the runs), "
             f"{meta['threads']} torch thread(s) per run, torch {meta['torch']}, {meta['date']}.",
             f"- Seeds: {', '.join(sorted({str(r['seed']) for r in rows}))}; a cell with more than one run shows "
             "the mean and the number of seeds (n); one seed alone cannot separate differences of ~1-2% from noise. "
             "Runs interleaved (each budget: every contender in turn); wall time includes validations, "
             "not start-up or the final evaluation.",
             "- Test BPC is exact over the text (rare words through their buckets); cells: test BPC "
             "(steps, million tokens trained; for a run with its n-gram mixed in, the network's own BPC too).",
             *([f"- {meta['note']}"] if meta.get("note") else []), *peer_notes(rows, meta), ""]
            + budget_table(rows) + [""] + budget_findings(rows)
            + ["", f"![test BPC against budget]({rel}/bpc_vs_budget.png)", "",
               f"Per-run rows (commands, steps, tokens, load): [{link}]({link}).", ""])


def peer_notes(rows: list, meta: dict) -> list:
    """How the peers (d) and (e) were trained and scored, when they ran, and
    the contenders skipped (with the reason the JSON's meta gives)."""
    names = {r["contender"] for r in rows}
    out = []
    if names & {"gpt", "ngram", "ngram8", "kenlm"}:
        out.append("- (d) and (e) train on the very ids of (a)'s prepared dataset (same vocabulary, buckets and "
                   "`</s>`) and are scored with train.py's formula: -log P over every test output token plus the "
                   "rare words' -log P(word | bucket), over the test characters.")
    if "gpt" in names:
        out.append("- (d): benchmarks/peers/gpt.py — nanoGPT's model.py unchanged, its README's CPU settings "
                   "(4 layers x 128, 4 heads, context 64, batch 12, no dropout, AdamW lr 1e-3 to 1e-4, 100 warmup "
                   "iterations, weight decay 0.1, clip 1.0) with the cosine over the wall-clock budget; full "
                   "softmax over the dataset's outputs; test tokens scored in windows of 64 sliding by 32 (each "
                   "token sees at least 32 tokens of context).")
    if names & {"ngram", "ngram8", "kenlm"}:
        out.append("- (e): interpolated modified Kneser-Ney 5-grams (and an 8-gram: the order the defaults mix in "
                   "on a corpus of this size; discounts D1, D2, D3+ per order) — "
                   "benchmarks/peers/kneser_ney.py (numpy, normalised over all outputs, context across lines) and "
                   "KenLM's lmplz (benchmarks/peers/kenlm_lmplz.py; context restarts at every `</s>`). No budget: "
                   "each is counted once, and its row shows its result under every budget longer than the "
                   "counting took (cells: test BPC (seconds counting, million tokens counted)).")
    out += [f"- Skipped: {name}: {why}." for name, why in sorted((meta.get("skipped") or {}).items())]
    return out


def _ngram_cells(rs: list, minutes: list) -> list:
    secs = _mean(rs, "train_seconds") or _mean(rs, "wall_s")
    cell = f"{_mean(rs, 'test_bpc'):.3f} ({secs:.{1 if secs < 10 else 0}f} s, {_mean(rs, 'tokens') / 1e6:.2f}M)"
    return [cell if secs <= 60 * m else "–" for m in minutes]


def budget_table(rows: list) -> list:
    table = summary(rows)
    minutes = sorted({m for (n, m) in table if n not in NO_BUDGET})
    lines = ["| contender | " + " | ".join(f"{m:g} min" for m in minutes) + " |", "|---|" + "---|" * len(minutes)]
    for name in LABEL:
        if name in NO_BUDGET:
            rs = [r for (n, _), group in table.items() if n == name for r in group]
            if rs:
                lines.append(f"| {LABEL[name]} | " + " | ".join(_ngram_cells(rs, minutes)) + " |")
            continue
        cells = []
        for m in minutes:
            rs = table.get((name, m))
            if not rs:
                cells.append("–")
                continue
            spread = f" ±{(max(r['test_bpc'] for r in rs) - min(r['test_bpc'] for r in rs)) / 2:.3f}, n={len(rs)}" \
                if len(rs) > 1 else ""
            net = [r["network_test_bpc"] for r in rs if r.get("ngram_weight") is not None]
            alone = f"; network alone {sum(net) / len(net):.3f}" if len(net) == len(rs) else ""
            cells.append(f"{_mean(rs, 'test_bpc'):.3f}{spread} ({_mean(rs, 'steps'):.0f}, "
                         f"{_mean(rs, 'tokens') / 1e6:.2f}M{alone})")
        if any(c != "–" for c in cells):
            lines.append(f"| {LABEL[name]} | " + " | ".join(cells) + " |")
    return lines


def budget_findings(rows: list) -> list:
    """The defaults against the classic recipe and the earlier quickstart."""
    table = summary(rows)
    out = []
    once = {n: [r for (k, _), group in table.items() if k == n for r in group] for n in NO_BUDGET}
    for m in sorted({m for (n, m) in table if n == "defaults"}):
        a = table.get(("defaults", m))
        for peer, what in (("classic", "the classic recipe"), ("gpt", "the small GPT"),
                           ("ngram", "the Kneser-Ney 5-gram"), ("ngram8", "the Kneser-Ney 8-gram"),
                           ("kenlm", "KenLM's Kneser-Ney 5-gram")):
            b = once[peer] if peer in NO_BUDGET else table.get((peer, m))
            if a and b:
                ba, bb = _mean(a, "test_bpc"), _mean(b, "test_bpc")
                out.append(f"- {m:g} min: the defaults are {abs(100 * (bb - ba) / bb):.1f}% "
                           f"{'below' if ba <= bb else 'above'} {what} ({ba:.3f} vs {bb:.3f} test BPC).")
        mixed = [r for r in a or [] if r.get("ngram_weight") is not None]
        if mixed:
            cached = [r for r in mixed if r.get("without_cache_test_bpc") is not None]
            no_cache = (f"{_mean(cached, 'without_cache_test_bpc'):.3f}, and with the cache of the text read so "
                        f"far {_mean(mixed, 'test_bpc'):.3f}" if len(cached) == len(mixed) else f"{_mean(mixed, 'test_bpc'):.3f}")
            out.append(f"- {m:g} min: the defaults' network alone scores {_mean(mixed, 'network_test_bpc'):.3f}; "
                       f"with its n-gram mixed in (overall weight {_mean(mixed, 'ngram_weight'):.2f} on the network; "
                       f"chosen on the validation split) {no_cache}.")
    a5 = table.get(("defaults", 5))
    if a5:
        ba = _mean(a5, "test_bpc")
        d = 100 * (QUICKSTART_5MIN - ba) / QUICKSTART_5MIN
        out.append(f"- 5 min: the defaults reach {ba:.3f}, {abs(d):.1f}% {'below' if d >= 0 else 'above'} the "
                   f"earlier quickstart recipe's 5-minute result ({QUICKSTART_5MIN}); "
                   f"{_mean(a5, 'tokens') / 1e6:.2f}M tokens trained here on average.")
    runs = sorted((r for r in rows if r["contender"] == "defaults" and r.get("chosen")),
                  key=lambda r: (r["minutes"] != 2, r["minutes"]))   # the 2-minute run's, else the shortest's
    if runs:
        out.append(f"- Settings the defaults rule chose (2-core CPU, this corpus, {runs[0]['minutes']:g}-minute run; "
                   "warmup scales with the budget): "
                   + " ".join(f"{k}={v}" for k, v in sorted(runs[0]["chosen"].items())) + ".")
    return out
