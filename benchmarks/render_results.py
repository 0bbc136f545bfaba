"""Render docs/RESULTS.md and its plots from the stored JSON files, without
training anything: benchmarks/results/experiments.json (written by
run_experiments.py), benchmarks/results/bench_budget_cpu.json (written by
bench_budget.py) and the benchmark JSON files of --results-dir (sections 3
and 6-9: bench_fo_pool.py, bench_rnn.py, bench_lm.py, gpu_check.sh,
bench_prepare.py, bench_wiki.py, bench_amp_cpu.py).

    python benchmarks/render_results.py
    python benchmarks/render_results.py --json other.json --out /tmp/RESULTS.md

Every sentence of the report is read off the stored numbers.  This script
alone writes the report: one function per section (benchmarks/report/),
joined in the order of ``SECTIONS`` below.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from report.budget import budget_section
from report.contents import contents
from report.gpu import gpu_section
from report.kernels import cpu_kernel_section
from report.amp import amp_section
from report.pipeline import pipeline_section
from report.sections import (header, memory_section, rare_section, regenerate, rnn_section, setup, speed_section,
                             targets)
from report.sweep import beats, mean_sd, paired, sweep_findings, sweep_section, sweep_table
from report.tables import HERE, REPO, within_bucket_bits
from report.targets import goals, summary, time_to_reach

# the helpers of the old single-file renderer, importable from here as before
__all__ = ["render", "main", "read_json", "ReportError", "beats", "mean_sd", "paired", "sweep_findings",
           "sweep_table", "within_bucket_bits", "goals", "summary", "time_to_reach"]

DEFAULT_JSON = os.path.join(HERE, "results", "experiments.json")
DEFAULT_BUDGET_JSON = os.path.join(HERE, "results", "bench_budget_cpu.json")
DEFAULT_RESULTS_DIR = os.path.join(HERE, "results")


class ReportError(Exception):
    """A results file cannot be read; the message says which and what to do."""


def read_json(path: str, writer: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"cannot read {path} ({e}); run benchmarks/{writer} first.") from None


def render(d: dict, md_path: str, img_dir: str, json_path: str = None,
           budget_json: str | None = DEFAULT_BUDGET_JSON, results_dir: str = DEFAULT_RESULTS_DIR) -> None:
    """Write ``md_path`` (and PNG plots into ``img_dir``) from the results
    dict ``d``, the benchmark JSON files in ``results_dir`` and, when the
    file exists, bench_budget.py's JSON ``budget_json``."""
    json_path = json_path or DEFAULT_JSON
    os.makedirs(img_dir, exist_ok=True)
    md_dir = os.path.dirname(os.path.abspath(md_path))
    rel = os.path.relpath(os.path.abspath(img_dir), md_dir)
    top = header(d, json_path)
    L = (setup(d) + targets(d) + rare_section(d, img_dir, rel) + rnn_section(d, img_dir, rel)
         + speed_section(results_dir) + memory_section(d, img_dir, rel) + sweep_section(d, img_dir, rel)
         + cpu_kernel_section(results_dir) + gpu_section(results_dir, md_dir) + pipeline_section(results_dir)
         + amp_section(results_dir) + regenerate(d))
    if budget_json and os.path.exists(budget_json):
        L += budget_section(read_json(budget_json, "bench_budget.py"), budget_json, md_dir, rel)
    L = top + contents(L) + L
    tmp = md_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(L))
    os.replace(tmp, md_path)
    print(f"wrote {md_path}", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=DEFAULT_JSON, help="results written by run_experiments.py")
    p.add_argument("--budget-json", default=DEFAULT_BUDGET_JSON,
                   help="results written by bench_budget.py (its section is left out when the default file is "
                        "missing)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help="benchmark JSON files of sections 3 and 6-9 (a missing one: its section names the command "
                        "that writes it)")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "RESULTS.md"), help="report to write")
    p.add_argument("--img", default=None, help="folder for the plots (default: img/ beside --out)")
    args = p.parse_args(argv)
    try:
        d = read_json(args.json, "run_experiments.py")
        if args.budget_json != DEFAULT_BUDGET_JSON and not os.path.exists(args.budget_json):
            raise ReportError(f"{args.budget_json} does not exist; run benchmarks/bench_budget.py --out "
                              f"{args.budget_json} first, or leave out --budget-json.")
        if not os.path.isdir(args.results_dir):
            raise ReportError(f"--results-dir {args.results_dir} is not a folder; give the folder of the "
                              "benchmark JSON files (default benchmarks/results).")
        render(d, args.out, args.img or os.path.join(os.path.dirname(os.path.abspath(args.out)), "img"), args.json,
               args.budget_json, args.results_dir)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
