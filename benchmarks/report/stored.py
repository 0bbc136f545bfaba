"""Reading the benchmark JSON files of benchmarks/results/ for the report
sections that summarise them: a missing or unreadable file becomes a line
saying which command writes it, never an exception."""
from __future__ import annotations

import json
import os

from report.tables import _rel

ELEMENT_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def load_stored(path: str, command: str) -> tuple:
    """(dict, None) for a readable JSON file, else (None, a sentence naming
    ``command``, which writes it)."""
    if not os.path.exists(path):
        return None, f"Not measured: `{_rel(path)}` does not exist; `{command}` writes it.\n"
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return None, f"`{_rel(path)}` cannot be read ({e}); run `{command}` again to rewrite it.\n"


def stored_files(folder: str, prefix: str) -> list:
    """Paths of the ``prefix*.json`` files in ``folder``, sorted by name (the
    benchmarks put a time stamp in the name, so oldest first)."""
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.startswith(prefix) and f.endswith(".json")]


def fo_pool_command(d: dict) -> str:
    """The bench_fo_pool.py command line that measures what the JSON ``d``
    holds, rebuilt from its fields (the JSON does not store the command)."""
    rows = d.get("rows", [])
    shapes = list(dict.fromkeys(f"{r['T']}x{r['B']}x{r['H']}" for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    cmd = ["python benchmarks/bench_fo_pool.py"]
    if d.get("device") == "cuda":
        cmd.append("--device cuda")
    elif d.get("threads"):
        cmd.append(f"--threads {d['threads']}")
    cmd += ["--shapes " + " ".join(shapes), "--dtypes " + " ".join(dtypes)]
    if d.get("repeats"):
        cmd.append(f"--repeats {d['repeats']}")
    if d.get("device") == "cuda" and d.get("inner_calls_per_run"):
        cmd.append(f"--inner {d['inner_calls_per_run']}")
    if any(r["dtype"] in ("float32", "float64") for r in rows) and not any("unbind_fwdbwd_ms" in r for r in rows):
        cmd.append("--no-slow")
    if d.get("QRNN_LM_CPU_BASELINE"):
        cmd.insert(0, f"QRNN_LM_CPU_BASELINE={d['QRNN_LM_CPU_BASELINE']}")
    return " ".join(cmd)


def threads(n) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def span(xs: list, fmt: str = "{:.1f}") -> str:
    """'a–b' over the values ``xs`` (one value alone: 'a')."""
    lo, hi = fmt.format(min(xs)), fmt.format(max(xs))
    return lo if lo == hi else f"{lo}–{hi}"


def layer_ranges(paths: list) -> list:
    """One sentence per bench_rnn.py JSON file: the range of the QRNN layer's
    speed-up over the LSTM layer and of its cost against its own matmul."""
    out = []
    for path in paths:
        d, missing = load_stored(path, "python benchmarks/bench_rnn.py")
        rows = (d or {}).get("results", [])
        if not rows:
            out.append(missing or f"`{_rel(path)}` holds no rows.\n")
            continue
        m = d.get("meta", {})
        used = f", {threads(m.get('threads'))}" if m.get("device") == "cpu" else ""
        out.append(f"- {m.get('device_name', m.get('device'))}, {m.get('input', 'tensor')} input, hidden "
                   f"{m.get('hidden')}{used}, batch {span([r['batch'] for r in rows], '{}')}"
                   f" × length {span([r['length'] for r in rows], '{}')}: the QRNN layer's forward+backward is "
                   f"{span([r['speedup_fwdbwd'] for r in rows])}× faster than the LSTM layer's (forward alone "
                   f"{span([r['speedup_fwd'] for r in rows])}×) and costs "
                   f"{span([r['qrnn_over_matmul_fwdbwd'] for r in rows], '{:.2f}')}× its own gate matmul "
                   f"(`{m.get('command', 'python benchmarks/bench_rnn.py')}`, {m.get('date')}; `{_rel(path)}`).")
    return out
