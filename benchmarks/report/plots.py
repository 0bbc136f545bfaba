"""The plots of the report (PNG files beside it)."""
from __future__ import annotations

from experiments_config import MEM_METHODS, RARE_METHODS
from report.tables import _plt, _save


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
