"""Section 8: how fast the data pipeline runs: MeCab tokenization and a whole
``prepare`` (benchmarks/bench_prepare.py's JSON), Wikipedia dump extraction
(benchmarks/bench_wiki.py's JSON) and the whole ``prepare --wiki-dump`` with 1
and 2 workers (benchmarks/bench_pipeline.py's JSON files)."""
from __future__ import annotations

import os

from report.stored import load_stored, span, stored_files
from report.tables import _rel, _table

PREPARE = "python benchmarks/bench_prepare.py"
WIKI = "python benchmarks/bench_wiki.py"
PIPELINE = "python benchmarks/bench_pipeline.py"


def pipeline_section(results_dir: str) -> list:
    return (["## 8. Data preparation speed\n"] + prepare_lines(os.path.join(results_dir, "bench_prepare.json"))
            + wiki_lines(os.path.join(results_dir, "wiki_extract.json"))
            + pipeline_lines(stored_files(results_dir, "bench_pipeline"))
            + growth_lines(stored_files(results_dir, "bench_pipeline")))


def prepare_lines(path: str) -> list:
    L = ["### `prepare` with MeCab (`benchmarks/bench_prepare.py`)\n"]
    d, missing = load_stored(path, PREPARE)
    if d is None:
        return L + [missing]
    key = "tokens_per_s_workers"
    workers = sorted(int(k[len(key):]) for k in d if k.startswith(key))
    L.append(f"`{PREPARE} --lines {d.get('lines')} --workers {max(workers, default=1)}` (`{_rel(path)}`; the JSON "
             f"records no date) on "
             f"{d.get('machine')}, {d.get('cpus')} CPUs shared with other work (load average "
             f"{d.get('load_avg_start', 0):.1f} at the start, {d.get('load_avg_end', 0):.1f} at the end). "
             f"Tokenization of the first {d.get('lines', 0):,} lines of train.txt ({d.get('characters', 0):,} "
             f"characters, {d.get('tokens', 0):,} tokens):\n")
    rows = [[w, f"{d[f'tokens_per_s_workers{w}']:,.0f}", f"{d[f'cpu_seconds_workers{w}']:.2f}",
             f"{d['tokens'] / d[f'cpu_seconds_workers{w}']:,.0f}"] for w in workers if d.get("tokens")]
    L.append(_table(["worker processes", "tokens/s (wall)", "CPU seconds", "tokens per CPU second"], rows) + "\n")
    if "prepare_seconds" in d:
        L.append(f"A whole `prepare` of train/valid/test (MeCab, k-means buckets; {d.get('prepare_train_tokens', 0):,}"
                 f" training tokens) took **{d['prepare_seconds']:.1f} s** of wall time; its log:\n")
        L.append("```\n" + "\n".join(p.strip() for p in d.get("prepare_phases", [])) + "\n```\n")
    else:
        L.append(f"The whole `prepare` was skipped (`--skip-prepare`); `{PREPARE}` times it.\n")
    return L


def wiki_lines(path: str) -> list:
    L = ["### Wikipedia dump extraction (`benchmarks/bench_wiki.py`)\n"]
    d, missing = load_stored(path, WIKI)
    if d is None:
        return L + [missing]
    rows = d.get("rows", [])
    full = [r for r in rows if r.get("dump") == "full"] or rows
    mb = full[0]["xml_mb"] if full else 0
    L.append(f"`{WIKI} --mb {mb:.0f}` (`{_rel(path)}`), {d.get('date')}, {d.get('cpu')}, {d.get('cores')} cores, "
             f"Python {d.get('python')}, mwparserfromhell {d.get('mwparserfromhell')} (C tokenizer: "
             f"{'yes' if d.get('mwparserfromhell_c_tokenizer') else 'no'}): a generated jawiki-like dump, each case "
             "in a fresh process. " + (d.get("note", "") + "." if d.get("note") else "") + "\n")
    L.append(_table(["dump", "file", "articles", "XML MB", "pages", "articles written", "CPU s", "pages per CPU s",
                     "MB of XML per CPU s", "MB of XML per s (wall)", "peak RSS MB"],
                    [[r["dump"], f"`{r['file']}`", "all" if r["sample"] == 1 else f"`--sample {r['sample']}`",
                      f"{r['xml_mb']:.1f}", f"{r['pages']:,}", f"{r['articles_written']:,}", f"{r['cpu_seconds']:.1f}",
                      f"{r['pages_per_cpu_s']:,.0f}", f"{r['xml_mb_per_cpu_s']:.2f}", f"{r['xml_mb_per_s']:.2f}",
                      f"{r['peak_rss_mb']:.0f}"] for r in rows]) + "\n")
    return L + wiki_findings(rows)


def wiki_findings(rows: list) -> list:
    if not rows:
        return []
    sizes = sorted({r["xml_mb"] for r in rows})
    L = [f"- Peak RSS {span([r['peak_rss_mb'] for r in rows], '{:.0f}')} MB for dumps of "
         + " and ".join(f"{s:.0f}" for s in sizes) + " MB of XML: extraction streams the dump."]
    allp = [r for r in rows if r["sample"] == 1]
    if allp:
        L.append(f"- Every article: {span([r['xml_mb_per_cpu_s'] for r in allp], '{:.2f}')} MB of XML per CPU "
                 "second, bounded by parsing the wikitext.")
    for r in rows:
        if r["sample"] > 1 and r["file"].endswith(".bz2"):
            L.append(f"- `--sample {r['sample']}` of a `.bz2` dump: {r['xml_mb_per_cpu_s']:.2f} MB of XML per CPU "
                     "second, bounded by decompressing the whole dump, which every page passes through; 10 GB of "
                     f"uncompressed XML at that rate take about {10_000 / r['xml_mb_per_cpu_s'] / 60:.0f} CPU minutes.")
    return L + [""]


def pipeline_lines(paths: list) -> list:
    L = ["### The whole `prepare --wiki-dump`, 1 and 2 workers (`benchmarks/bench_pipeline.py`)\n"]
    if not paths:
        return L + [f"Not measured: no `benchmarks/results/bench_pipeline*.json`; `{PIPELINE}` writes one.\n"]
    for path in paths:
        d, missing = load_stored(path, PIPELINE)
        if d is None:
            L.append(missing)
            continue
        dump = d.get("dump", {})
        load = d.get("load_average_at_start") or [0]
        flags = "".join(f" --{k} {d[f'{k}_asked']}" for k in ("workers", "forms")
                        if d.get(f"{k}_asked") not in (None, "1,2", "multistream,bz2"))
        L.append(f"`{PIPELINE} --size-mb {d.get('size_mb_asked', 0):g}{flags}` (`{_rel(path)}`), {d.get('date')}, "
                 f"{d.get('cores')} cores, load average {load[0]:.1f} at the start: a generated dump of "
                 f"{dump.get('xml_bytes', 0) / 1e6:,.0f} MB of XML ({dump.get('articles', 0):,} articles, "
                 f"{dump.get('redirects', 0):,} redirects, {dump.get('other_ns', 0):,} pages of other namespaces); "
                 f"{d.get('settings')}. Outputs byte-identical across forms and worker counts: "
                 f"{'yes' if d.get('identical_outputs') else 'no'}. {d.get('note', '')}\n")
        rows = []
        for form, by in d.get("runs", {}).items():
            for w, r in by.items():
                if not isinstance(r, dict):
                    continue
                anon, pss = r.get("peak_tree_anon_rss_mb"), r.get("peak_tree_pss_mb")
                stages = r.get("main_process_peak_anon_mb") or {}
                main = " / ".join("–" if stages.get(k) is None else f"{stages[k]:.0f}"
                                  for k in ("extract+tokenize train", "vocabulary", "ids (train, valid, test)"))
                rows.append([form, w, f"{r['seconds']:.0f}", f"{r['cpu_seconds']:.0f}", f"{r['xml_mb_per_s']:.2f}",
                             f"{r['xml_mb_per_cpu_s']:.2f}", f"{r['max_process_rss_mb']:.0f}",
                             f"{r['peak_tree_rss_mb']:.0f}", "–" if anon is None else f"{anon:.0f}",
                             "–" if pss is None else f"{pss:.0f}", main,
                             "–" if r.get("train_types") is None else f"{r['train_types']:,}",
                             f"{100 * r['stage_share'].get('extract+tokenize train', 0):.0f}%"])
            if by.get("speedup_2_vs_1"):
                L_speed = (f"- {form}: `--workers 2` is {by['speedup_2_vs_1']:.2f}× as fast as `--workers 1` "
                           f"(scaling efficiency {by['scaling_efficiency']:.2f}).")
                L.append(L_speed)
        L.append("")
        L.append(_table(["form", "workers", "wall s", "CPU s", "MB of XML per s", "MB of XML per CPU s",
                         "peak RSS MB (largest process)", "peak RSS MB (tree)", "peak anonymous MB (tree)", "peak Pss MB (tree)",
                         "prepare process peak anonymous MB: extract / vocabulary / ids", "train (word, POS) types",
                         "extract + tokenize share"], rows) + "\n")
        pr = d.get("projection")
        if pr:
            L.append(f"Projection for the full jawiki ({pr['jawiki_xml_mb']:,} MB of XML), "
                     f"{pr['model']}: **{pr['hours_8_cores']:.1f} h on 8 cores, {pr['hours_16_cores']:.1f} h on "
                     f"16 cores**. Assumptions: " + "; ".join(pr.get("assumptions", [])) + ".\n")
    return L


def growth_lines(paths: list) -> list:
    """What grows with the dump: the runs of every size side by side, with the
    prepare process's own memory and the train split's distinct types."""
    rows = []
    for path in paths:
        d, _ = load_stored(path, PIPELINE)
        if d is None:
            continue
        mb = d.get("dump", {}).get("xml_bytes", 0) / 1e6
        for form, by in d.get("runs", {}).items():
            for w, r in by.items():
                if isinstance(r, dict) and r.get("main_process_peak_anon_mb"):
                    stages = r["main_process_peak_anon_mb"]
                    peak = max(v for v in stages.values() if v is not None)
                    pss = r.get("peak_tree_pss_mb")
                    rows.append((mb, int(w), [f"{mb:,.0f}", w, f"{r['train_types']:,}", f"{peak:.0f}",
                                              f"{r['peak_tree_anon_rss_mb']:.0f}", "–" if pss is None else f"{pss:.0f}",
                                              f"{r['peak_tree_rss_mb']:.0f}", f"`{_rel(path)}`"]))
    if len(rows) < 2:
        return []
    rows.sort(key=lambda r: (r[1], r[0]))
    return ["### What grows with the dump\n",
            _table(["XML MB", "workers", "train (word, POS) types", "prepare process peak anonymous MB",
                    "peak anonymous MB (tree)", "peak Pss MB (tree)", "peak RSS MB (tree)", "from"],
                   [r[2] for r in rows]) + "\n",
            "The text streams through (extraction, the token stream on disk, ids written slice by slice); "
            "what the prepare process keeps is a table of the distinct (word, POS) types and, at the "
            "vocabulary stage, the vocabulary built from it, so its memory follows the number of types, not the "
            "text. The generated dumps reuse 10 MB of prose but invent names, so their types grow almost in "
            "proportion to the dump (real text grows more slowly: Heaps' law). The tree's anonymous memory adds "
            "up every process's RssAnon, and the processes that tokenize the valid and test splits are forked "
            "from the prepare process after the vocabulary is built: their share of its pages (copy-on-write) "
            "counts again in each of them; Pss splits shared pages among their processes.\n"]
