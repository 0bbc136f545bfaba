"""Per-token inspection of a :class:`~qrnn_lm.lm.LanguageModel`.

    from qrnn_lm.token_scores import inspect_text
    result = inspect_text(lm, "今日は良い天気です。")
    result["summary"]      # {"ppl", "bpc", "nll", "tokens", "characters", "bits"}: as LanguageModel.score
    result["tokens"][0]    # {"text", "id", "bits", "p", "bucket", "p_bucket", "p_word", "top", ...}

The text is tokenized and batched exactly as :meth:`LanguageModel.score`
(and so ``python -m qrnn_lm evaluate``) does, and every token's loss comes
from the same ``model(x, state, targets=y)`` call that scoring sums, so the
per-token figures add up to the summary and the summary equals ``evaluate``.

Cost of a token in bits: ``-(log P(id | history) + log P(word | bucket)) /
ln 2``, where the second term is 0 for a kept word; for a rare word ``id``
is its bucket (DESIGN.md section 3).
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from qrnn_lm.errors import QrnnLmError

LN2 = math.log(2)
EOS = "</s>"
_ROWS = 512  # rows of the full output distribution computed at once (top-k)


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


def tokenize_text(lm, text: str) -> tuple:
    """``(surfaces, ids, rare_logp, characters)`` of ``text`` as the model was
    trained: ``ids``, ``rare_logp`` and ``characters`` are those of
    :meth:`LanguageModel.encode_text`; ``surfaces`` are the normalised words,
    ``</s>`` at every line end, aligned with ``ids``."""
    ids, rare_logp, chars = lm.encode_text(text)
    vocab = lm.vocab
    surfaces = []
    for line in vocab.normalizer.lines(text.split("\n")):
        surfaces.extend(surface for surface, _ in vocab.tokenizer.tokenize(line))
        surfaces.append(EOS)
    if len(surfaces) != len(ids):  # the tokenizer is deterministic; this would be a bug
        raise QrnnLmError("the text tokenized differently on a second reading; report this as a bug.")
    return surfaces, ids, rare_logp, chars


def _batches(lm, ids: np.ndarray, batch_size: int):
    """The evaluation batches of :meth:`LanguageModel.score`, and a twin whose
    targets are the positions (index into ``ids``) of the real targets."""
    from qrnn_lm.data import SentenceBatches, StreamBatches
    if lm.batching == "sentences":
        batches = SentenceBatches(ids, lm.vocab.eos_id, batch_size=max(batch_size, 1), max_len=lm.max_len,
                                  train=False)
    else:
        batches = StreamBatches(ids, lm.vocab.eos_id, 1, lm.bptt * max(batch_size, 1), train=False)
    where = copy.copy(batches)
    where.stream = np.arange(-1, len(ids), dtype=np.int64)  # stream[k + 1] == k: a target's position
    return batches, where


def _flat(t):
    return (t.data if isinstance(t, torch.nn.utils.rnn.PackedSequence) else t).reshape(-1)


@torch.no_grad()
def token_losses(lm, ids: np.ndarray, *, batch_size: int = 32, top: int = 5, deadline: float | None = None,
                 mix: bool = True):
    """Per-token ``-log P(id | history)`` (nats, float64, in text order), the
    top-``top`` output ids and their log-probabilities at each position, and
    the float64 sum of the losses in the order :meth:`LanguageModel.score`
    adds them.  ``deadline`` (a ``time.monotonic()`` value): QrnnLmError once
    passed.  With an n-gram mixed in (``lm.mixture``) and ``mix``, all of
    these are the mixture's."""
    if mix and getattr(lm, "mixture", None) is not None:
        return _mixed_losses(lm, ids, batch_size=batch_size, top=top, deadline=deadline)
    model, n = lm.model, len(ids)
    batches, where = _batches(lm, ids, batch_size)
    stream = lm.batching != "sentences"
    nll_at = np.zeros(n, dtype=np.float64)
    k = max(0, min(top, len(lm.vocab)))
    top_ids = np.zeros((n, k), dtype=np.int64)
    top_lp = np.zeros((n, k), dtype=np.float64)
    total, state = 0.0, None
    was_training = model.training
    model.eval()
    try:
        for (_, x, y), (_, _, wy) in zip(batches.epoch(0), where.epoch(0)):
            _check_deadline(deadline)
            x, y = x.to(lm.device), y.to(lm.device)
            start = state if stream else None
            nll, new_state = model(x, start, targets=y)  # the call LanguageModel.score sums
            keep = _flat(y) >= 0
            pos = _flat(wy)[keep.cpu()].numpy()
            total += float(nll.double().sum())
            nll_at[pos] = nll.double().cpu().numpy()
            if k:
                feats, _ = model(x, start)
                feats = (feats.data if isinstance(feats, torch.nn.utils.rnn.PackedSequence) else feats)
                feats = feats.reshape(-1, feats.size(-1))[keep]
                for r in range(0, len(pos), _ROWS):
                    values, index = torch.topk(model.log_probs(feats[r:r + _ROWS]), k, dim=-1)
                    top_ids[pos[r:r + _ROWS]] = index.cpu().numpy()
                    top_lp[pos[r:r + _ROWS]] = values.double().cpu().numpy()
            if stream:
                state = model.detach_state(new_state)
    finally:
        model.train(was_training)
    return nll_at, top_ids, top_lp, total


def _mixed_losses(lm, ids: np.ndarray, *, batch_size: int, top: int, deadline: float | None):
    """:func:`token_losses` of the network mixed with ``lm.mixture``: the
    per-token losses mixed, and the top outputs of the mixed distribution
    (the network's log-probabilities over every output at each position,
    recomputed from its features, mixed with the n-gram's)."""
    mixture, eos = lm.mixture, lm.vocab.eos_id
    nn, _, _, _ = token_losses(lm, ids, batch_size=batch_size, top=0, deadline=deadline, mix=False)
    nll_at = mixture.token_nll(ids, eos, nn)
    k = max(0, min(top, len(lm.vocab)))
    top_ids, top_lp = np.zeros((len(ids), k), dtype=np.int64), np.zeros((len(ids), k), dtype=np.float64)
    if k:
        stream = np.concatenate([[eos], np.asarray(ids, dtype=np.int64)])
        for pos, rows in _network_log_probs(lm, ids, batch_size, deadline):
            _check_deadline(deadline)   # before the slow part: the mixture's top-k position by position
            for t, row in zip(pos.tolist(), rows):
                lp = mixture.next_log_probs(stream[max(0, t + 1 - mixture.history_len):t + 1], row)
                order = np.argsort(-lp, kind="stable")[:k]
                top_ids[t], top_lp[t] = order, lp[order]
    return nll_at, top_ids, top_lp, float(nll_at.sum())


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise QrnnLmError("scoring took longer than the time limit of a request; give a shorter text.")


@torch.no_grad()
def _network_log_probs(lm, ids: np.ndarray, batch_size: int, deadline: float | None):
    """Yield (positions in ``ids``, the network's ln P over every output
    there: float64 (len(positions), V)), a few hundred positions at a time."""
    model = lm.model
    batches, where = _batches(lm, ids, batch_size)
    stream, state = lm.batching != "sentences", None
    for (_, x, y), (_, _, wy) in zip(batches.epoch(0), where.epoch(0)):
        _check_deadline(deadline)
        x, y = x.to(lm.device), y.to(lm.device)
        feats, new_state = model(x, state if stream else None)
        keep = _flat(y) >= 0
        pos = _flat(wy)[keep.cpu()].numpy()
        feats = (feats.data if isinstance(feats, torch.nn.utils.rnn.PackedSequence) else feats)
        feats = feats.reshape(-1, feats.size(-1))[keep]
        for r in range(0, len(pos), _ROWS):
            yield pos[r:r + _ROWS], model.log_probs(feats[r:r + _ROWS]).double().cpu().numpy()
        if stream:
            state = model.detach_state(new_state)


def _token_record(vocab, surface: str, i: int, nll: float, rare: float, tops, top_lps) -> dict:
    bits = (nll - rare) / LN2
    rec = {"text": surface, "id": i, "token": vocab.id_to_token(i), "bits": bits, "p": _safe_exp(-(nll - rare)),
           "model_bits": nll / LN2, "eos": surface == EOS, "bucket": None, "p_bucket": None, "p_word": None,
           "top": [{"token": vocab.id_to_token(int(t)), "p": math.exp(lp), "bucket": vocab.is_bucket(int(t))}
                   for t, lp in zip(tops, top_lps)]}
    if vocab.is_bucket(i):
        rec.update(bucket=vocab.id_to_token(i), p_bucket=math.exp(-nll), p_word=math.exp(rare))
    return rec


def inspect_text(lm, text: str, *, batch_size: int = 32, top: int = 5, deadline: float | None = None) -> dict:
    """Every token of ``text`` with its cost and the model's top-``top``
    alternatives, and the summary figures of :meth:`LanguageModel.score`.

    Returns ``{"summary": {...}, "tokens": [...]}``; a token is ``{"text"
    (the normalised surface, "</s>" at a line end), "id" (output id),
    "token" (the output's name: the word, or the bucket a rare word is
    predicted through), "bits", "p" (P(token | history), the word itself),
    "model_bits", "eos", "bucket", "p_bucket" (P(bucket | history)), "p_word"
    (P(word | bucket)), "top" ([{"token", "p", "bucket"}], most likely
    first)}``; the last three are None for a kept word."""
    surfaces, ids, rare_logp, chars = tokenize_text(lm, text)
    nll_at, top_ids, top_lp, total = token_losses(lm, ids, batch_size=batch_size, top=top, deadline=deadline)
    rare_sum = float(rare_logp.sum())
    n = len(ids)
    summary = {"ppl": _safe_exp(total / n), "bpc": (total - rare_sum) / (chars * LN2) if chars > 0 else float("nan"),
               "nll": total / n, "tokens": n, "characters": chars, "bits": (total - rare_sum) / LN2}
    vocab = lm.vocab
    tokens = [_token_record(vocab, s, int(i), float(nll), float(r), t, lp)
              for s, i, nll, r, t, lp in zip(surfaces, ids, nll_at, rare_logp, top_ids, top_lp)]
    return {"summary": summary, "tokens": tokens}


def same_tokenization(a: dict, b: dict) -> bool:
    """Whether two :func:`inspect_text` results cut the text into the same words."""
    return [t["text"] for t in a["tokens"]] == [t["text"] for t in b["tokens"]]


def compare_texts(lm_a, lm_b, text: str, *, batch_size: int = 32, top: int = 5,
                  deadline: float | None = None) -> dict:
    """Both models' :func:`inspect_text` of ``text`` and, when they tokenize it
    the same way, ``diff``: bits of B minus bits of A per token (negative: B
    finds the token likelier); otherwise ``diff`` is None and ``reason`` says why."""
    a = inspect_text(lm_a, text, batch_size=batch_size, top=top, deadline=deadline)
    b = inspect_text(lm_b, text, batch_size=batch_size, top=top, deadline=deadline)
    out = {"a": a, "b": b, "diff": None, "reason": None}
    if same_tokenization(a, b):
        out["diff"] = [tb["bits"] - ta["bits"] for ta, tb in zip(a["tokens"], b["tokens"])]
    else:
        out["reason"] = (f"The two models tokenize this text differently ({len(a['tokens'])} and "
                         f"{len(b['tokens'])} tokens), so only their totals can be compared.")
    return out
