"""What every peer of bench_budget.py shares: the evaluation figures train.py
reports for a split, scoring the valid and test splits a dataset has, and the
results.json that bench_budget.py reads."""
from __future__ import annotations

import json
import math
import os

import numpy as np


def split_figures(nll: float, split, **extra) -> dict:
    """train.py's figures for one split from the summed -ln P over its output
    tokens: loss, ppl, tokens, and bits per character with the rare words'
    -log P(word | bucket) added (:func:`qrnn_lm.lm.bits_per_char`)."""
    from qrnn_lm.lm import bits_per_char
    n = split.tokens
    rare = float(np.sum(split.rare_logp, dtype=np.float64))
    return {"loss": nll / n, "ppl": math.exp(min(nll / n, 700)), "tokens": n, **extra,
            "bpc": bits_per_char(nll, rare, split.characters)}


def score_splits(data_dir: str, res: dict, score) -> None:
    """``res[name] = score(name, split)`` for the valid and test splits of
    ``data_dir`` that exist, each printed as it is scored."""
    from qrnn_lm.data import load_split
    for name in ("valid", "test"):
        if os.path.exists(os.path.join(data_dir, f"{name}.ids.npy")):
            res[name] = r = score(name, load_split(data_dir, name))
            unseen = f" ({r['oov']} tokens unseen in training)" if "oov" in r else ""
            print(f"{name}: bpc {r['bpc']:.4f} ppl {r['ppl']:.2f}{unseen}", flush=True)


def write_results(save: str, res: dict) -> None:
    os.makedirs(save, exist_ok=True)
    with open(os.path.join(save, "results.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
