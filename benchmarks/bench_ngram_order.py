"""Which n-gram order should a run mix with its network, and do weights by
context pay?

    python benchmarks/bench_ngram_order.py --run RUN --data DATASET [--orders 3 4 5 6 7 8 10]

RUN is a trained run directory (e.g. one kept by ``bench_budget.py --keep``:
``--runs-dir/defaults-2m-s1111``) and DATASET the prepared dataset it trained
on (``--cache-dir/prepared-*``).  For each order: a Kneser-Ney n-gram counted
over the training ids (seconds, distinct n-grams, size of its ngram.npz), the
n-gram's test BPC alone, and the network mixed with it as train.py mixes them
-- one weight, and one weight per context class (qrnn_lm.ngram.best_weights),
both chosen on the validation split and scored on the test split.  The
network is the run's own checkpoint, scored once.

Printed and written to benchmarks/results/ngram_order.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qrnn_lm import ngram  # noqa: E402
from qrnn_lm.data import eos_stream, load_split  # noqa: E402
from qrnn_lm.lm import LanguageModel, bits_per_char  # noqa: E402
from qrnn_lm.token_scores import token_losses  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--data", required=True, help="the prepared dataset the run trained on")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8, 10])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ngram_order.json"))
    args = ap.parse_args(argv)

    lm = LanguageModel.from_checkpoint(args.run, ngram=False)
    eos, V = lm.vocab.eos_id, len(lm.vocab)
    train_ids = np.asarray(load_split(args.data, "train").ids, dtype=np.int64)
    train = eos_stream(train_ids, eos)
    splits = {n: load_split(args.data, n) for n in ("valid", "test")}
    ids = {n: np.asarray(s.ids, dtype=np.int64) for n, s in splits.items()}
    network = {n: token_losses(lm, ids[n], top=0)[0] for n in splits}
    test = splits["test"]
    rare = float(np.sum(test.rare_logp, dtype=np.float64))

    def bpc(nll):
        return bits_per_char(float(np.sum(nll)), rare, test.characters)

    rows = []
    print(f"network alone: test BPC {bpc(network['test']):.4f}")
    print("order  count s  n-grams  npz MB  n-gram BPC  mixed, one weight  mixed, by context")
    for order in args.orders:
        t0 = time.perf_counter()
        kn = ngram.KneserNey(order).fit(train, V)
        seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            ngram.save(tmp, kn, {})
            size = os.path.getsize(os.path.join(tmp, ngram.FILE))
        scored = {n: kn.log_probs_and_bins(eos_stream(ids[n], eos)) for n in splits}
        weight, table = ngram.best_weights(network["valid"], -scored["valid"][0], scored["valid"][1], kn.n_bins)
        kl, bins = -scored["test"][0], scored["test"][1]
        row = {"order": order, "count_seconds": seconds, "ngrams": int(sum(len(k) for k in kn.keys[2:]) + V),
               "npz_bytes": size, "ngram_test_bpc": bpc(kl), "weight": weight,
               "mixed_test_bpc": bpc(ngram.mixed_nll(network["test"], kl, weight)),
               "mixed_by_context_test_bpc": bpc(ngram.mixed_nll(network["test"], kl, table[bins]))}
        rows.append(row)
        print(f"{order:5d}  {seconds:7.1f}  {row['ngrams'] / 1e6:6.2f}M  {size / 2 ** 20:6.0f}  "
              f"{row['ngram_test_bpc']:10.4f}  {row['mixed_test_bpc']:17.4f}  {row['mixed_by_context_test_bpc']:17.4f}")
    out = {"meta": {"command": "python benchmarks/bench_ngram_order.py " + " ".join(argv or sys.argv[1:]),
                    "run": os.path.basename(os.path.normpath(args.run)), "train_tokens": len(train_ids),
                    "network_test_bpc": bpc(network["test"]), "machine": platform.machine(),
                    "date": time.strftime("%Y-%m-%d")},
           "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
