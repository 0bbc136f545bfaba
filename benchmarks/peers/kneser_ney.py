"""An interpolated modified Kneser-Ney n-gram (Chen & Goodman 1998) over a
prepared dataset's ids, scored in the dataset's bits per character.

    python benchmarks/peers/kneser_ney.py --data DATASET_DIR --save RUN_DIR [--order 5]

The model predicts the same outputs as train.py's models (kept words, rare-word
buckets, ``</s>``) over the same stream (``[</s>] + ids``: position k+1 holds
ids[k]), so its test BPC is in the same units: the n-gram's -log P(id) over
every output token plus the rare words' -log P(word | bucket), over the split's
characters (:func:`qrnn_lm.lm.bits_per_char`).

Counts: every n-gram of the training stream gets a dense id order by order —
the key of an n-gram is ``id(its first n-1 tokens) * V + last token``, exact
in int64 (no collisions), made dense with ``np.unique``.  Orders below the
highest use continuation counts N1+(. h w); discounts D1, D2, D3+ per order
from that order's count-of-counts; the unigram level interpolates with the
uniform distribution over all V outputs, so every output has probability > 0
and P(. | h) sums to 1 over the V outputs for every history h.

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


def discounts(counts: np.ndarray) -> np.ndarray:
    """(D1, D2, D3+) from the count-of-counts n1..n4 of ``counts`` (Chen &
    Goodman's estimates), kept within [0, c] for c = 1, 2, 3 when the counts
    are too few to estimate them."""
    n = [int(np.sum(counts == k)) for k in (1, 2, 3, 4)]
    if min(n) == 0:
        return np.array([0.5, 1.0, 1.5])
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return np.clip(d, 0.0, [1.0, 2.0, 3.0])


class KneserNey:
    """Interpolated modified Kneser-Ney over ``vocab_size`` outputs."""

    def __init__(self, order: int = 5):
        if order < 1:
            raise ValueError("the order must be >= 1")
        self.order = order

    # -- counting ----------------------------------------------------------
    def fit(self, stream: np.ndarray, vocab_size: int) -> "KneserNey":
        """Count every n-gram (n <= order) of ``stream`` (int ids < vocab_size)."""
        stream = np.asarray(stream, dtype=np.int64)
        if len(stream) < 2 or stream.min() < 0 or stream.max() >= vocab_size:
            raise ValueError("the training stream needs >= 2 ids, all in [0, vocab_size)")
        V = self.V = int(vocab_size)
        N = len(stream)
        # gid[k][i]: dense id of the k-gram ending at position i (-1 where i < k - 1)
        gid = [np.zeros(N, dtype=np.int64), stream.copy()]
        self.keys, self.ngram_hist, first = [None, np.arange(V, dtype=np.int64)], [None, None], [None, None]
        for k in range(2, self.order + 1):
            key = np.full(N, -1, dtype=np.int64)
            key[k - 1:] = gid[k - 1][k - 2:-1] * V + stream[k - 1:]
            valid = key >= 0
            uniq, pos, inv = np.unique(key[valid], return_index=True, return_inverse=True)
            g = np.full(N, -1, dtype=np.int64)
            g[valid] = inv
            gid.append(g)
            self.keys.append(uniq)
            first.append(np.flatnonzero(valid)[pos])
        self.levels = []
        for k in range(1, self.order + 1):
            if k == self.order:          # the highest order: raw counts
                cnt = np.bincount(gid[k][gid[k] >= 0], minlength=len(self.keys[k]))
            else:                        # continuation counts N1+(. w_1..w_k)
                suffix = gid[k][first[k + 1]]
                cnt = np.bincount(suffix, minlength=len(self.keys[k]) if k > 1 else V)
            self.levels.append(self._level(k, cnt))
        return self

    def _level(self, k: int, cnt: np.ndarray) -> dict:
        """Per-order tables: counts, discounts, per-history totals and
        interpolation weights' numerators."""
        V = self.V
        hist = self.keys[k] // V if k > 1 else np.zeros(V, dtype=np.int64)
        nhist = (len(self.keys[k - 1]) if k > 2 else V) if k > 1 else 1
        D = discounts(cnt[cnt > 0])
        disc = np.where(cnt >= 3, D[2], np.where(cnt == 2, D[1], np.where(cnt == 1, D[0], 0.0)))
        total = np.bincount(hist, weights=cnt, minlength=nhist)
        gamma = np.bincount(hist, weights=disc, minlength=nhist)
        return {"count": cnt.astype(np.float64), "disc": disc, "total": total, "gamma": gamma, "D": D}

    # -- lookup ------------------------------------------------------------
    def _find(self, k: int, key: np.ndarray) -> np.ndarray:
        """Dense ids of k-gram keys (-1 where the k-gram was never seen)."""
        keys = self.keys[k]
        out = np.full(len(key), -1, dtype=np.int64)
        ok = key >= 0
        if len(keys) == 0:
            return out
        j = np.searchsorted(keys, key[ok])
        j = np.minimum(j, len(keys) - 1)
        out[ok] = np.where(keys[j] == key[ok], j, -1)
        return out

    def history_ids(self, stream: np.ndarray) -> list:
        """hid[k][i]: id of the k-gram ending at position i of ``stream`` among
        the training k-grams (-1 when unseen or too close to the start)."""
        stream = np.asarray(stream, dtype=np.int64)
        N = len(stream)
        hid = [np.zeros(N, dtype=np.int64), stream.copy()]
        for k in range(2, self.order):
            key = np.full(N, -1, dtype=np.int64)
            prev = hid[k - 1][k - 2:-1]
            key[k - 1:] = np.where(prev >= 0, prev * self.V + stream[k - 1:], -1)
            hid.append(self._find(k, key))
        return hid

    def prob(self, hists: list, words: np.ndarray) -> np.ndarray:
        """P(word | history) for parallel arrays: ``hists[k - 1]`` holds the id
        of each query's (k-1)-token history (-1: unseen), k = 1..order."""
        words = np.asarray(words, dtype=np.int64)
        p = np.full(len(words), 1.0 / self.V)
        for k in range(1, self.order + 1):
            lv, h = self.levels[k - 1], np.asarray(hists[k - 1], dtype=np.int64)
            seen = h >= 0
            hs = np.where(seen, h, 0)
            total = np.where(seen, lv["total"][hs], 0.0)
            known = total > 0
            if k == 1:
                g = words
            else:
                g = self._find(k, np.where(known, hs * self.V + words, -1))
            c = np.where(g >= 0, lv["count"][np.maximum(g, 0)], 0.0)
            d = np.where(g >= 0, lv["disc"][np.maximum(g, 0)], 0.0)
            safe = np.where(known, total, 1.0)
            p = np.where(known, (c - d + lv["gamma"][hs] * p) / safe, p)
        return p

    def next_probs(self, history) -> np.ndarray:
        """P(w | history) for every output w (the history's last order-1 ids)."""
        history = list(history)[-(self.order - 1):] if self.order > 1 else []
        hid = self.history_ids(np.asarray(history, dtype=np.int64)) if history else None
        hists = []
        for k in range(1, self.order + 1):
            n = k - 1
            h = 0 if n == 0 else (int(hid[n][-1]) if n <= len(history) else -1)
            hists.append(np.full(self.V, h, dtype=np.int64))
        return self.prob(hists, np.arange(self.V))

    def log_probs(self, stream: np.ndarray) -> np.ndarray:
        """ln P(stream[t] | stream[:t]) for t = 1..len(stream)-1."""
        stream = np.asarray(stream, dtype=np.int64)
        hid = self.history_ids(stream)
        T = len(stream) - 1
        hists = [np.zeros(T, dtype=np.int64)]
        for n in range(1, self.order):
            h = np.full(T, -1, dtype=np.int64)
            h[n - 1:] = hid[n][n - 1:T]   # the n-gram ending at t - 1 (history of target t)
            hists.append(h)
        return np.log(self.prob(hists, stream[1:]))


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
