"""Experiment 1, rare words: the MeCab vocabulary cut to CUT of the training
types with each rare-word scheme of RARE_METHODS, against the full
vocabulary, sentencepiece and char; every run trains for the same minutes."""
from __future__ import annotations

import os

from experiments.runner import prepare, train
from experiments.scoring import samples
from experiments.store import attempt, log
from experiments_config import CUT, RARE_METHODS

FULL_FLAGS = ["--vocab-size", str(10 ** 9), "--rare", "unk"]   # no cut: every training type kept


def full_dataset(files, args, profile, store) -> dict:
    """The full-vocabulary dataset (the other cuts are sized from it)."""
    return prepare("full", FULL_FLAGS, files, args, profile, store)


def exp_rare(args, profile, files, store):
    full = full_dataset(files, args, profile, store)
    n_keep = round(CUT * full["kept_words"])
    store.d.setdefault("meta", {})["cut"] = {"types": full["kept_words"], "kept": n_keep, "fraction": CUT}
    store.save(sections={"meta"})
    for name, label, flags in RARE_METHODS:
        if name not in profile["methods"]:
            continue
        if store.get("rare", name) and name not in args.redo:
            continue
        def one():
            if name == "full":
                ds = full
            else:
                size = 10 ** 9 if name == "char" else n_keep  # a character vocabulary is small: keep it all
                ds = prepare(name, ["--vocab-size", str(size)] + flags, files, args, profile, store)
            r = train(name, ds["dir"], profile["rare_minutes"], ["--rnn", "qrnn", "--batching", "stream",
                                                                  "--log-interval", str(profile["log_interval"])],
                      args, store, "rare")
            r.update(samples(os.path.join(args.work, "runs", "rare", name)))
            return r
        r = attempt(store, f"rare/{name}", one)
        if r is None:
            continue
        r["label"] = label
        store.put("rare", name, r)
        log(f"  {name}: test bpc {r['test_bpc']:.4f}, {r['steps']} steps, rare in samples "
            f"{100 * r['rare_fraction']:.1f}%, leaks {r['leaks']}")
