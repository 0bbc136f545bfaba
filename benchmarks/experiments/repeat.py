"""Repeats: two rare-word runs again with another seed."""
from __future__ import annotations

from experiments.runner import train
from experiments.store import attempt, log
from experiments_config import REPEAT, REPEAT_SEED


def exp_repeat(args, profile, files, store):
    """Two rare-word runs again with another seed: how far apart two runs of
    the same setup land (the spread the comparisons of section 1 live with)."""
    for name in REPEAT:
        key = f"{name}-seed{REPEAT_SEED}"
        ds = store.get("datasets", name)
        if ds is None or (store.get("repeat", key) and key not in args.redo):
            continue
        r = attempt(store, f"repeat/{key}", lambda: train(
            key, ds["dir"], profile["rare_minutes"],
            ["--rnn", "qrnn", "--batching", "stream", "--log-interval", str(profile["log_interval"]),
             "--seed", str(REPEAT_SEED)], args, store, "repeat"))
        if r is None:
            continue
        store.put("repeat", key, r)
        log(f"  {key}: test bpc {r['test_bpc']:.4f}, {r['steps']} steps")
