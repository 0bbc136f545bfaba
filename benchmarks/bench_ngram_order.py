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

Then the cache of the text read so far (qrnn_lm.cache) on top of the
mixture by context of ``--cache-order`` (default 8), for a few half-lives,
its weights fitted on the validation split; and, with ``--samples N``, how
often generated text repeats itself (the share of repeated character 4-grams
in each sample) with and without the cache, beside the test text's own rate
in windows of the samples' length.

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

from qrnn_lm import cache as cache_mod, ngram  # noqa: E402
from qrnn_lm.data import eos_stream, load_split  # noqa: E402
from qrnn_lm.lm import LanguageModel, bits_per_char  # noqa: E402
from qrnn_lm.token_scores import token_losses  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a trained run directory")
    ap.add_argument("--data", required=True, help="the prepared dataset the run trained on")
    ap.add_argument("--orders", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8, 10])
    ap.add_argument("--cache-order", type=int, default=8, help="the n-gram order the cache rows use")
    ap.add_argument("--half-lives", type=float, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--samples", type=int, default=0, help="generate this many samples (150 tokens, seeds 0..N-1)")
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

    rows, cache_kn = [], None
    print(f"network alone: test BPC {bpc(network['test']):.4f}")
    print("order  count s  n-grams  npz MB  n-gram BPC  mixed, one weight  mixed, by context")
    for order in args.orders:
        t0 = time.perf_counter()
        kn = ngram.KneserNey(order).fit(train, V)
        seconds = time.perf_counter() - t0
        if order == args.cache_order:
            cache_kn = kn   # the cache rows reuse it
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
    mixture, base = _mixture(lm, cache_kn or ngram.KneserNey(args.cache_order).fit(train, V), splits, ids,
                             network)
    cache_rows, samples = cache_rows_of(args, lm, ids, base, bpc), None
    if args.samples:
        samples = repetition(args, lm, ids, mixture, base)
    out = {"meta": {"command": "python benchmarks/bench_ngram_order.py " + " ".join(argv or sys.argv[1:]),
                    "run": os.path.basename(os.path.normpath(args.run)), "train_tokens": len(train_ids),
                    "network_test_bpc": bpc(network["test"]), "machine": platform.machine(),
                    "date": time.strftime("%Y-%m-%d")},
           "rows": rows, "cache": cache_rows, "samples": samples}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


def _mixture(lm, kn, splits, ids, network):
    """The run's mixture rebuilt with ``kn`` (the --cache-order n-gram), weights by context from valid; and
    the per-token nats of each split without a cache."""
    eos = lm.vocab.eos_id
    scored = {n: kn.log_probs_and_bins(eos_stream(ids[n], eos)) for n in splits}
    weight, table = ngram.best_weights(network["valid"], -scored["valid"][0], scored["valid"][1], kn.n_bins)
    base = {n: ngram.mixed_nll(network[n], -scored[n][0], table[scored[n][1]]) for n in splits}
    return ngram.Mixture(kn, weight, weights=table), base


def cache_rows_of(args, lm, ids, base, bpc) -> list:
    eos, V = lm.vocab.eos_id, len(lm.vocab)
    rows = [{"half_life": None, "weights": None, "mixed_by_context_test_bpc": bpc(base["test"])}]
    print(f"cache on the {args.cache_order}-gram mixture by context: none {rows[0]['mixed_by_context_test_bpc']:.4f}")
    for hl in args.half_lives:
        c = cache_mod.fit(base["valid"], eos_stream(ids["valid"], eos), V, hl)
        rows.append({"half_life": hl, "weights": list(c.weights),
                     "mixed_by_context_test_bpc": bpc(c.token_nll(eos_stream(ids["test"], eos), base["test"]))})
        print(f"  half-life {hl:g}: weights {', '.join(f'{w:.3f}' for w in c.weights)}, test BPC "
              f"{rows[-1]['mixed_by_context_test_bpc']:.4f}")
    return rows


def _repeated_4grams(text: str) -> float:
    grams = [text[i:i + 4] for i in range(len(text) - 3)]
    return 1 - len(set(grams)) / max(len(grams), 1)


def repetition(args, lm, ids, mixture, base) -> dict:
    eos, V = lm.vocab.eos_id, len(lm.vocab)
    mixture.cache = cache_mod.fit(base["valid"], eos_stream(ids["valid"], eos), V)
    lm.mixture = mixture
    out = {}
    for name, cache in (("without cache", None), ("with cache", mixture.cache)):
        mixture.cache = cache
        texts = [lm.generate("", max_tokens=150, seed=s) for s in range(args.samples)]
        out[name] = float(np.mean([_repeated_4grams(t) for t in texts]))
        out["characters"] = float(np.mean([len(t) for t in texts]))
    with open(os.path.join(args.data, "test.meta.json"), encoding="utf-8") as f:
        test = json.load(f).get("source") or ""   # the test split's text file
    if os.path.isfile(test):
        with open(test, encoding="utf-8") as f:
            text = f.read()
        n, rng = int(out["characters"]), np.random.default_rng(0)
        if len(text) > n:
            out["test text"] = float(np.mean([_repeated_4grams(text[i:i + n])
                                              for i in rng.integers(0, len(text) - n, 200)]))
    print("repeated character 4-grams per sample: " + ", ".join(
        f"{k} {v:.3f}" for k, v in out.items() if k != "characters") + f" ({out['characters']:.0f} characters)")
    return out


if __name__ == "__main__":
    sys.exit(main())
