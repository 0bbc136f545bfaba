"""Small pieces every section of the report uses: number formats, Markdown
tables, mean ± sd, matplotlib set-up."""
from __future__ import annotations

import math
import os
import statistics

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # benchmarks/
REPO = os.path.dirname(HERE)


def _rel(path: str) -> str:
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


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


def _f(x, fmt="{:.3f}", none="–"):
    return none if x is None else fmt.format(x)


def _table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _save(plt, fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def within_bucket_bits(ds: dict):
    """Bits per test character spent on P(word | bucket): -sum(rare_logp) / (C ln 2),
    read from the prepared test split (None when it is gone)."""
    import numpy as np
    path = os.path.join(ds.get("dir", ""), "test.rare_logp.npy")
    if not os.path.exists(path) or not ds.get("test_characters"):
        return None
    return -float(np.load(path).astype(np.float64).sum()) / (ds["test_characters"] * math.log(2))
