"""The n-gram of a training run (``--ngram ORDER``, :mod:`qrnn_lm.ngram`):
counted over the training ids when the run starts (its seconds count in the
budget), mixed with the trained network at the end with the weight that
minimises the validation loss, and kept in the run directory for
``evaluate``, ``generate`` and ``serve``."""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import ngram
from .cache import fit as fit_cache
from .data import eos_stream
from .lm import LanguageModel, bits_per_char
from .token_scores import token_losses


def _identity(run) -> str | None:
    return getattr(run.vocab, "dataset_identity", None)


def count(run, clock=time.monotonic) -> float:
    """Count the run's n-gram unless its run directory already holds this
    one; returns the seconds it took on ``clock`` (train.py's training-time
    clock; 0 when there was nothing to do)."""
    order = run.settings.ngram
    if not run.world.is_master:
        return 0.0
    if not order or run.world.size > 1:
        if order:
            run.log(f"n-gram: --ngram {order} is for one process; this torchrun run trains the network alone.")
        if ngram.remove(run.save):   # an earlier session's n-gram would be mixed with this network
            run.log(f"n-gram: removed the run's {ngram.FILE} and {ngram.META}; the network is used alone")
        return 0.0
    meta = ngram.read_meta(run.save)
    if (meta is not None and meta.get("order") == order and meta.get("dataset") == _identity(run)
            and os.path.isfile(os.path.join(run.save, ngram.FILE))):
        return 0.0
    t0 = clock()
    train = run.splits["train"]
    kn = ngram.KneserNey(order).fit(eos_stream(np.asarray(train.ids), run.vocab.eos_id), len(run.vocab))
    n = sum(len(k) for k in kn.keys[2:]) + len(run.vocab)
    ngram.save(run.save, kn, {"order": order, "dataset": _identity(run), "weight": None, "ngrams": n,
                              "train_tokens": train.tokens})
    seconds = clock() - t0
    size = os.path.getsize(os.path.join(run.save, ngram.FILE))
    run.log(f"n-gram: {order}-gram counted over {train.tokens:,} training tokens in {seconds:.1f} s ({n / 1e6:.2f}M "
            f"n-grams, {size / 2 ** 20:.0f} MB in {ngram.FILE}); the network is mixed with it at the end")
    return seconds


def _nll(lm, split, eos_id: int, kn) -> tuple:
    """Per-token nats of the network (as ``evaluate`` scores it) and of the
    n-gram, each token's context class, and the stream they predict."""
    ids = np.asarray(split.ids, dtype=np.int64)
    nn, _, _, _ = token_losses(lm, ids, top=0)
    stream = eos_stream(ids, eos_id)
    lp, bins = kn.log_probs_and_bins(stream)
    return nn, -lp, bins, stream


def mix(run, network: dict) -> dict | None:
    """At the end of training: the mixing weights (one per context class,
    :func:`qrnn_lm.ngram.best_weights`) and the cache's (:func:`qrnn_lm.cache.fit`)
    from the validation split,
    then each held-out split's figures of the mixture (the shape of
    ``network``, train.py's figures of the network alone: {split: {"loss",
    "ppl", "bpc", "tokens"}}), with the network's and the n-gram's bpc
    beside them; printed and saved in ngram.json.  None when the run has no
    n-gram."""
    meta = ngram.read_meta(run.save)
    if (not run.settings.ngram or run.world.size > 1 or meta is None
            or not os.path.isfile(os.path.join(run.save, ngram.FILE))):
        return None
    kn = ngram.load(run.save, len(run.vocab))
    s = run.settings
    lm = LanguageModel(run.raw_model, run.vocab, batching=s.batching, bptt=s.bptt, max_len=s.max_len,
                       device=run.device)
    eos = run.vocab.eos_id
    losses = {name: _nll(lm, run.splits[name], eos, kn) for name in network}
    cache = None
    if "valid" in losses:
        nn, kl, bins, stream = losses["valid"]
        weight, weights = ngram.best_weights(nn, kl, bins, kn.n_bins)
        source = "from the validation split"
        cache = fit_cache(ngram.mixed_nll(nn, kl, weights[bins]), stream, len(run.vocab))
    else:
        weight, weights, source = 0.5, np.full(kn.n_bins, 0.5), "an even mix: no validation split"
    figures = {}
    for name, (nn, kl, bins, stream) in losses.items():
        split, rare = run.splits[name], float(np.sum(run.splits[name].rare_logp, dtype=np.float64))
        mixed = ngram.mixed_nll(nn, kl, weights[bins])
        cached = cache.token_nll(stream, mixed) if cache is not None else mixed
        loss = float(cached.sum()) / max(len(nn), 1)
        figures[name] = {"loss": loss, "ppl": math.exp(min(loss, 700)), "tokens": len(nn),
                         "bpc": bits_per_char(float(cached.sum()), rare, split.characters),
                         "network_bpc": network[name]["bpc"],
                         "ngram_bpc": bits_per_char(float(kl.sum()), rare, split.characters),
                         "without_cache_bpc": bits_per_char(float(mixed.sum()), rare, split.characters)}
        f = figures[name]
        with_cache = (f", the cache of the text read so far mixed in ({f['without_cache_bpc']:.4f} without)"
                      if cache is not None else "")
        run.log(f"| end of training | {name} bpc {f['bpc']:.4f} with the {kn.order}-gram{with_cache} "
                f"(network alone {f['network_bpc']:.4f}, {kn.order}-gram alone {f['ngram_bpc']:.4f}; weight "
                f"{weight:.2f} on the network, {weights.min():.2f}-{weights.max():.2f} by context, {source}) |")
    weights = [float(w) for w in weights]
    cache_meta = cache.to_dict() if cache is not None else None
    ngram.save_meta(run.save, dict(meta, weight=weight, weights=weights, weight_from=source, figures=figures,
                                   cache=cache_meta))
    return {"order": kn.order, "weight": weight, "weights": weights, "weight_from": source, "cache": cache_meta,
            "splits": figures}
