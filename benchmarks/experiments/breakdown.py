"""Breakdown: where the test bits of the MeCab rare-word models go, per


class of token."""
from __future__ import annotations

import math
import os

from experiments.scoring import token_nll
from experiments.store import log
from experiments_config import RARE_METHODS


def exp_breakdown(args, profile, store):
    """Where the test bits go, per class of token, for the MeCab models: kept
    words, `</s>`, rare words seen in training, words never seen in training
    (the same token positions in every MeCab dataset; 'unseen' = a bucket token
    of the full-vocabulary dataset)."""
    import numpy as np
    full = store.get("datasets", "full")
    if full is None:
        return
    from qrnn_lm.vocab import Vocabulary
    fv = Vocabulary.load(full["dir"])
    fids = np.load(os.path.join(full["dir"], "test.ids.npy"))
    unseen = fv.bucket_mask[fids]
    for name, _, flags in RARE_METHODS:
        if "--tokenizer" in flags or store.get("rare", name) is None:
            continue
        if store.get("breakdown", name) and name not in args.redo:
            continue
        ds = store.get("datasets", name)
        nll, split, vocab = token_nll(os.path.join(args.work, "runs", "rare", name), ds["dir"])
        ids, lp = np.asarray(split.ids), np.asarray(split.rare_logp, dtype=np.float64)
        bucket = vocab.bucket_mask[ids]
        eos = ids == vocab.eos_id
        classes = {"kept words": ~bucket & ~eos, "</s>": eos, "seen rare words": bucket & ~unseen,
                   "unseen words": unseen}
        denom = split.characters * math.log(2)
        row = {"total_bpc": float((nll.sum() - lp.sum()) / denom)}
        for cname, m in classes.items():
            row[cname] = {"tokens": int(m.sum()), "model_bpc": float(nll[m].sum() / denom),
                          "within_bucket_bpc": float(-lp[m].sum() / denom)}
        store.put("breakdown", name, row)
        log(f"breakdown {name}: total {row['total_bpc']:.4f} (train.py: {store.get('rare', name)['test_bpc']:.4f})")
