"""What ``prepare --rare kmeans|pos+kmeans|exchange`` clusters rare words
by, computed over the training text as prepare holds it: a stream of
(surface, POS) type ids, 0 for ``</s>``.

:func:`vector_source` gives ``f(words) -> (vectors, has_vector)`` for
``--vectors`` (ppmi, fasttext, a .vec file, a checkpoint or run directory);
:func:`exchange_source` gives ``f(words, k) -> labels``.  Both are called by
``Vocabulary.build`` only for the words that need them.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .wordvec import exchange_clusters, fasttext_vectors, ppmi_svd_vectors, vec_file_vectors

_CHUNK = 1 << 22   # stream items per slice read from the memory-mapped stream


def _surface_stream(type_stream, types: list):
    """(the training stream as surface-word indices, sliceable; {surface:
    index}); index 0 is ``</s>``."""
    surfaces = sorted({t[0] for t in types[1:]})
    word_of = {w: i + 1 for i, w in enumerate(surfaces)}
    type_to_word = np.zeros(len(types), dtype=np.int32)
    for g in range(1, len(types)):
        type_to_word[g] = word_of[types[g][0]]
    return _Mapped(type_stream, type_to_word), word_of


def exchange_source(type_stream, types: list, log):
    """``f(words, k) -> labels`` for ``--rare exchange`` over the training
    stream (:func:`qrnn_lm.wordvec.exchange_clusters`)."""
    def clusters(words, k):
        t1 = time.time()
        stream, word_of = _surface_stream(type_stream, types)
        rows = np.asarray([word_of[w] for w in words], dtype=np.int64)
        labels = exchange_clusters(stream, rows, len(word_of) + 1, k, log=log)
        log(f"exchange clustering: {len(words)} rare words into {k} classes, "
            f"{time.time() - t1:.1f}s")
        return labels
    return clusters


def vector_source(vectors: str, type_stream, types: list, *, window: int,
                   context_words: int, dim: int, seed: int, log):
    """``f(words) -> (vectors, has_vector)`` for ``--vectors`` (see
    :mod:`qrnn_lm.wordvec`), over the training stream of type ids."""
    def timed(name, fn):
        def wrapped(words):
            t1 = time.time()
            x, has = fn(words)
            log(f"vectors ({name}): {int(has.sum())}/{len(words)} rare words, dim {x.shape[1]}, "
                f"{time.time() - t1:.1f}s")
            return x, has
        return wrapped

    if vectors == "ppmi":
        def ppmi(words):
            stream, word_of = _surface_stream(type_stream, types)
            rows = np.asarray([word_of[w] for w in words], dtype=np.int64)
            return ppmi_svd_vectors(stream, rows, len(word_of) + 1,
                                    window=window, context_words=context_words, dim=dim,
                                    seed=seed)
        return timed("ppmi", ppmi)
    if vectors == "fasttext":
        def fasttext(words):
            return fasttext_vectors(_sentences(type_stream, types), words, dim=dim, seed=seed)
        return timed("fasttext", fasttext)
    if os.path.isdir(vectors) or vectors.endswith((".pt", ".pth")):
        def checkpoint(words):
            from .lm import vectors_from_checkpoint
            return vectors_from_checkpoint(vectors, words, type_stream, types)
        return timed("checkpoint", checkpoint)
    return timed("file", lambda words: vec_file_vectors(vectors, words))


def _sentences(type_stream, types: list) -> list:
    """The training text as lists of surface words, one a line."""
    surface = [None] + [t[0] for t in types[1:]]
    out, cur = [], []
    for s in range(0, len(type_stream), _CHUNK):
        for g in np.asarray(type_stream[s:s + _CHUNK]).tolist():
            if g == 0:
                out.append(cur)
                cur = []
            else:
                cur.append(surface[g])
    if cur:
        out.append(cur)
    return out


class _Mapped:
    """``table[stream[i]]`` without materialising it (slices only)."""

    def __init__(self, stream, table):
        self.stream, self.table = stream, table

    def __len__(self):
        return len(self.stream)

    def __getitem__(self, sl):
        return self.table[np.asarray(self.stream[sl])]
