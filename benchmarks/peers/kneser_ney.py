"""An interpolated modified Kneser-Ney n-gram (Chen & Goodman 1998) over a
prepared dataset's ids, scored in the dataset's bits per character.

    python benchmarks/peers/kneser_ney.py --data DATASET_DIR --save RUN_DIR [--order 5]

The model predicts the same outputs as train.py's models (kept words, rare-word
buckets, ``</s>``) over the same stream (``[</s>] + ids``: position k+1 holds
ids[k]), so its test BPC is in the same units: the n-gram's -log P(id) over
every output token plus the rare words' -log P(word | bucket), over the split's
characters (:func:`qrnn_lm.lm.bits_per_char`).

The model is the package's own (:class:`qrnn_lm.ngram.KneserNey`, the one
train.py mixes with the network); here it runs alone.

Writes RUN_DIR/results.json with the fields train.py writes that
benchmarks/bench_budget.py reads (test/valid bpc and ppl, tokens, minutes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
BENCH = os.path.join(REPO, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
from peers.common import score_splits, split_figures, write_results  # noqa: E402
from qrnn_lm.ngram import KneserNey, discounts  # noqa: E402,F401  (the model lives in the package)


def score_split(model: KneserNey, split, eos_id: int) -> dict:
    """train.py's evaluation figures for one split (stream ``[eos] + ids``)."""
    from qrnn_lm.data import eos_stream
    nll = -float(np.sum(model.log_probs(eos_stream(np.asarray(split.ids), eos_id)), dtype=np.float64))
    return split_figures(nll, split)


def run(data_dir: str, save: str, order: int = 5) -> dict:
    from qrnn_lm.data import eos_stream, load_split
    from qrnn_lm.vocab import Vocabulary
    vocab = Vocabulary.load(data_dir)
    train = load_split(data_dir, "train")
    t0 = time.time()
    model = KneserNey(order).fit(eos_stream(np.asarray(train.ids), vocab.eos_id), len(vocab))
    train_s = time.time() - t0
    print(f"model: interpolated modified Kneser-Ney {order}-gram over {len(vocab)} outputs, "
          f"{sum(len(k) for k in model.keys[2:]) + len(vocab)} n-grams; counted in {train_s:.1f} s; "
          f"discounts " + " ".join(f"{k + 1}:" + ",".join(f"{d:.2f}" for d in lv['D'])
                                   for k, lv in enumerate(model.levels)), flush=True)
    res = {"step": 0, "tokens": train.tokens, "minutes": train_s / 60, "train_seconds": round(train_s, 2),
           "chosen": {"order": order, "smoothing": "interpolated modified Kneser-Ney"}}
    score_splits(data_dir, res, lambda name, split: score_split(model, split, vocab.eos_id))
    res["wall_seconds"] = round(time.time() - t0, 2)
    write_results(save, res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared dataset (train.py --data)")
    p.add_argument("--save", required=True, help="the run folder; results.json goes there")
    p.add_argument("--order", type=int, default=5)
    args = p.parse_args(argv)
    from qrnn_lm.errors import QrnnLmError
    if args.order < 1:
        print("error: --order must be 1 or more.", file=sys.stderr)
        return 2
    try:
        run(args.data, args.save, args.order)
    except (QrnnLmError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
