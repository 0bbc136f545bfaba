"""Experiment 2, QRNN vs LSTM: stream and sentence batching on the
RNN_DATA dataset, equal wall time; tokens/s, test BPC of the last weights
and validation BPC against training minutes."""
from __future__ import annotations

import os

from experiments.rare import full_dataset
from experiments.runner import evaluate_last, prepare, train
from experiments.store import attempt, log
from experiments_config import CUT, RARE_METHODS, RNN_DATA, RNN_RUNS


def exp_rnn(args, profile, files, store):
    full = store.get("datasets", "full")
    n_keep = round(CUT * full["kept_words"]) if full else None
    if full is None:
        full = full_dataset(files, args, profile, store)
        n_keep = round(CUT * full["kept_words"])
    flags = dict((m[0], m[2]) for m in RARE_METHODS)[RNN_DATA]
    ds = prepare(RNN_DATA, ["--vocab-size", str(n_keep)] + flags, files, args, profile, store)
    for rnn, batching in RNN_RUNS:
        name = f"{rnn}-{batching}"
        if store.get("rnn", name) and name not in args.redo:
            continue
        extra = ["--rnn", rnn, "--batching", batching, "--eval-interval", str(profile["eval_interval"][name]),
                 "--log-interval", str(profile["log_interval"])]
        def one():
            r = train(name, ds["dir"], profile["rnn_minutes"], extra, args, store, "rnn")
            r["test_bpc_last"] = evaluate_last(os.path.join(args.work, "runs", "rnn", name), files["test"],
                                               args)["bpc"]
            return r
        r = attempt(store, f"rnn/{name}", one)
        if r is None:
            continue
        store.put("rnn", name, r)
        log(f"  {name}: {r['tokens_per_s']:.0f} tok/s, test bpc (last weights) {r['test_bpc_last']:.4f}")
