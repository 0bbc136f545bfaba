"""Word vectors for rare-word k-means, and the clustering itself.

Every vector source returns ``(float32 (n, d) L2-normalised, has_vector bool
(n,))`` for a list of words; :func:`kmeans_assign` clusters the rows with
faiss.  Sources (``prepare --vectors``):

- ``ppmi``: :func:`ppmi_svd_vectors`, co-occurrence counts in the training
  stream (positive PMI + truncated SVD);
- ``fasttext``: :func:`fasttext_vectors`, gensim's FastText trained on the
  training text: a word's vector is the sum of its character n-gram vectors
  and its own, so a word seen twice, or never, still gets one from its
  spelling;
- a ``.vec`` file: :func:`vec_file_vectors` (word2vec/fastText text format);
- a train.py checkpoint: ``qrnn_lm.lm.vectors_from_checkpoint``, the mean
  hidden state of the trained model just before each occurrence of the word
  in the training text (what the model knows when it must predict the word).

:func:`exchange_clusters` clusters rare words without vectors, by their
neighbours (``prepare --rare exchange``).
"""
from __future__ import annotations

import warnings
import zlib
from typing import Iterable, Sequence

import numpy as np

from .errors import QrnnLmError

VECTOR_KINDS = ("ppmi", "fasttext")  # computed from the training text; else a path


def read_vec_file(path: str, words: Iterable[str]) -> dict:
    """Vectors of ``words`` from a word2vec/fastText text file (``N D``
    header, then ``word v1 ... vD`` per line).  Returns {word: float32 (D,)}."""
    wanted = set(words)
    out = {}
    try:
        f = open(path, encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise QrnnLmError(f"cannot read vector file {path}: {e.strerror or e}.") from e
    with f:
        header = f.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise QrnnLmError(f"{path} does not start with an 'N D' header line; "
                              "give a word2vec/fastText .vec text file.")
        dim = int(header[1])
        if dim <= 0:
            raise QrnnLmError(f"{path}: the header says dimension {dim}; it must be positive.")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) == 1 and not parts[0]:
                continue
            if len(parts) != dim + 1:
                raise QrnnLmError(f"{path} line {lineno} has {len(parts) - 1} numbers after "
                                  f"the word but the header says dimension {dim}; fix the "
                                  "file or its header.")
            w = parts[0]
            if w in wanted:
                try:
                    out[w] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise QrnnLmError(f"{path} line {lineno} has a value that is not a "
                                      "number.") from None
    return out

def vec_file_vectors(path: str, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``words`` from a ``.vec`` text file; words not in it have none."""
    table = read_vec_file(path, words)
    dims = {v.shape[0] for v in table.values()}
    dim = dims.pop() if dims else 1
    x = np.zeros((len(words), dim), dtype=np.float32)
    has = np.zeros(len(words), dtype=bool)
    for i, w in enumerate(words):
        v = table.get(w)
        if v is not None:
            x[i], has[i] = v, True
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12), has


def _stable_hash(s: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn(word + seed)``;
    Python's ``hash`` of a str changes between processes (PYTHONHASHSEED), so
    vectors would too."""
    return zlib.crc32(s.encode("utf-8"))


def fasttext_vectors(sentences: Sequence[Sequence[str]], words: Sequence[str], *, dim: int = 64,
                     window: int = 5, epochs: int = 5, min_n: int = 1, max_n: int = 3,
                     ngram_buckets: int = 200_000, seed: int = 0,
                     workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Subword-informed vectors of ``words`` from gensim's FastText (CBOW)
    trained on ``sentences`` (lists of surface words).

    Character n-grams of ``min_n``..``max_n`` characters (1..3 suits Japanese
    words, which are short), hashed into ``ngram_buckets`` rows.  Every word
    gets a vector, also one not in ``sentences`` (from its n-grams).  One
    worker thread and a string hash that does not change between processes
    keep the vectors reproducible.  Returns (float32 (n, dim) L2-normalised,
    has_vector bool (n,)).
    """
    try:
        from gensim.models import FastText
    except ImportError:
        raise QrnnLmError("--vectors fasttext needs gensim: pip install gensim "
                          "(or pip install 'qrnn_lm[vectors]').") from None
    if not any(len(s) for s in sentences):
        raise QrnnLmError("--vectors fasttext: the training text has no words.")
    model = FastText(vector_size=dim, window=window, min_count=1, sg=0, epochs=epochs,
                     min_n=min_n, max_n=max_n, bucket=ngram_buckets, seed=seed,
                     workers=workers, hashfxn=_stable_hash)
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=model.corpus_count, epochs=epochs)
    x = np.stack([model.wv[w] for w in words]).astype(np.float32) if len(words) else \
        np.zeros((0, dim), np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    has = n[:, 0] > 0
    return x / np.maximum(n, 1e-12), has


class _KeyCounts:
    """Counts of int64 keys added chunk by chunk: each chunk's (unique keys,
    counts) are merged into the running total whenever the pending chunks
    outgrow it, so memory stays a small multiple of the distinct keys (not
    of the chunks seen, as when every chunk's counts are kept to the end)."""

    MIN_MERGE = 1 << 20   # pending keys below this are not worth a merge

    def __init__(self):
        self.u, self.c = np.zeros(0, np.int64), np.zeros(0, np.float64)
        self.parts, self.pending = [], 0

    def add(self, keys: np.ndarray) -> None:
        u, c = np.unique(keys, return_counts=True)
        self.parts.append((u, c.astype(np.float64)))
        self.pending += len(u)
        if self.pending > max(len(self.u), self.MIN_MERGE):
            self._merge()

    def _merge(self) -> None:
        if self.parts:
            u = np.concatenate([self.u] + [p[0] for p in self.parts])
            c = np.concatenate([self.c] + [p[1] for p in self.parts])
            self.u, inv = np.unique(u, return_inverse=True)
            self.c = np.bincount(inv, weights=c, minlength=len(self.u))
        self.parts, self.pending = [], 0

    def total(self) -> tuple:
        """(sorted unique keys int64, their counts float64)."""
        self._merge()
        return self.u, self.c


def ppmi_svd_vectors(stream: np.ndarray, rows: np.ndarray, n_words: int, *,
                     window: int = 2, context_words: int = 5000, dim: int = 64,
                     seed: int = 0, chunk: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Word vectors from co-occurrence: positive PMI + truncated SVD.

    ``stream``: int (N,) word indices in [0, n_words), read in chunks (a
    memmap is fine).  ``rows``: indices of the words that need vectors.
    Contexts are the ``context_words`` most frequent words within
    ``window`` positions on either side.  PMI uses the context distribution
    smoothed with exponent 0.75 (Levy, Goldberg & Dagan 2015); the sparse PPMI
    matrix is factored with ``torch.svd_lowrank`` (seeded) and the vectors are
    U * sqrt(S), L2-normalised.

    Returns (vectors float32 (len(rows), dim'), has_vector bool (len(rows),));
    words that never co-occur with a context word have no vector.
    """
    import torch

    n = len(stream)
    freq = np.zeros(n_words, dtype=np.int64)
    for s in range(0, n, chunk):
        freq += np.bincount(np.asarray(stream[s:s + chunk]), minlength=n_words)
    n_ctx = min(context_words, n_words)
    ctx_words = np.argsort(-freq, kind="stable")[:n_ctx]
    col_of = np.full(n_words, -1, dtype=np.int64)
    col_of[ctx_words] = np.arange(n_ctx)
    row_of = np.full(n_words, -1, dtype=np.int64)
    row_of[rows] = np.arange(len(rows))

    counts = _KeyCounts()  # key = row * n_ctx + col
    for s in range(0, n, chunk):
        a = np.asarray(stream[max(0, s - window):min(n, s + chunk + window)], dtype=np.int64)
        lo = s - max(0, s - window)  # the centre positions this chunk owns
        centre = np.arange(lo, lo + min(chunk, n - s))
        r_all = row_of[a[centre]]
        sel = centre[r_all >= 0]
        keys = []
        for o in range(1, window + 1):
            for other in (sel + o, sel - o):
                ok = (other >= 0) & (other < len(a))
                c = col_of[a[other[ok]]]
                r = row_of[a[sel[ok]]]
                keys.append(r[c >= 0] * n_ctx + c[c >= 0])
        counts.add(np.concatenate(keys))
    u, c = counts.total()
    r = u // n_ctx
    col = u % n_ctx
    n_rows = len(rows)
    has = np.zeros(n_rows, dtype=bool)
    if len(u) == 0:
        return np.zeros((n_rows, 1), np.float32), has
    row_tot = np.bincount(r, weights=c, minlength=n_rows)
    col_tot = np.bincount(col, weights=c, minlength=n_ctx) ** 0.75
    pmi = np.log(c) + np.log(col_tot.sum()) - np.log(row_tot[r]) - np.log(col_tot[col])
    pos = pmi > 0
    r, col, val = r[pos], col[pos], pmi[pos]
    has[np.unique(r)] = True
    q = max(1, min(dim, n_rows, n_ctx))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        a = torch.sparse_coo_tensor(torch.from_numpy(np.stack([r, col])),
                                    torch.from_numpy(val), (n_rows, n_ctx),
                                    check_invariants=True).coalesce()
        if q >= min(n_rows, n_ctx):
            U, S, _ = torch.linalg.svd(a.to_dense(), full_matrices=False)
            U, S = U[:, :q], S[:q]
        else:
            U, S, _ = torch.svd_lowrank(a, q=q, niter=6)
    vec = (U * S.clamp_min(0).sqrt()).numpy()
    # SVD signs are arbitrary; fix them so the vectors are reproducible.
    flip = np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(vec.shape[1])])
    vec = vec * np.where(flip == 0, 1, flip)
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    has &= norm[:, 0] > 1e-12
    vec = np.where(norm > 1e-12, vec / np.maximum(norm, 1e-12), 0.0)
    return vec.astype(np.float32), has


def kmeans_assign(x: np.ndarray, k: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups with faiss; returns
    int64 (n,) labels.

    faiss silently subsamples to ``max_points_per_centroid * k`` points and
    prints a warning below ``min_points_per_centroid * k``; both are switched
    off here (all points are used; a Python warning is raised instead when
    clusters would be tiny).  One thread and a fixed seed keep the result
    deterministic.
    """
    import faiss

    n = len(x)
    if k > n:
        raise QrnnLmError(f"--buckets {k} is larger than the number of rare words with "
                          f"vectors ({n}); use fewer buckets or a larger corpus.")
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)
    if n < 4 * k:
        warnings.warn(f"k-means: only {n} rare words for {k} clusters; clusters will be "
                      "tiny. Consider fewer --buckets.", stacklevel=2)
    x = np.ascontiguousarray(x, dtype=np.float32)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=max(n, 1), min_points_per_centroid=1)
        km.train(x)
        _, labels = km.index.search(x, 1)
    finally:
        faiss.omp_set_num_threads(threads)
    return labels[:, 0].astype(np.int64)


def allocate_clusters(total: int, sizes: dict) -> dict:
    """Split ``total`` clusters over groups: one each, the rest proportionally
    to the group sizes (largest remainder), never more than a group's size."""
    groups = sorted(sizes)
    alloc = {g: 1 for g in groups}
    left = total - len(groups)
    while left > 0:
        room = {g: sizes[g] - alloc[g] for g in groups if sizes[g] > alloc[g]}
        if not room:
            break
        n = sum(room.values())
        raw = {g: left * room[g] / n for g in room}
        give = {g: min(room[g], int(raw[g])) for g in room}
        rest = left - sum(give.values())
        for g in sorted(room, key=lambda g: (-(raw[g] - int(raw[g])), g)):
            if rest <= 0:
                break
            if give[g] < room[g]:
                give[g] += 1
                rest -= 1
        for g, k in give.items():
            alloc[g] += k
        given = sum(give.values())
        if given == 0:
            break
        left -= given
    return alloc


# ---------------------------------------------------------------------------
# exchange clustering (no vectors): classes that predict the neighbours
# ---------------------------------------------------------------------------
def _xlogx(x):
    x = np.asarray(x, dtype=np.float64)
    return x * np.log(np.maximum(x, 1.0))


def exchange_clusters(stream, rare_rows: np.ndarray, n_words: int, k: int, *, max_iter: int = 8,
                      tol: float = 1e-3, chunk: int = 1 << 22, log=None) -> np.ndarray:
    """Cluster the rare words ``rare_rows`` into ``k`` classes with the exchange
    algorithm (Kneser & Ney 1993; Martin, Liermann & Ney 1998), maximising the
    class-bigram log-likelihood of the training stream, i.e. the mutual
    information between a token's class and its neighbours' -- exactly what a
    model over kept words and buckets must predict.  Every other word is a
    class of its own and stays fixed.

    ``stream``: int (N,) word indices in [0, n_words) (``</s>`` included; a
    memmap or anything sliceable is read in chunks).  The objective is
    ``sum N(c, c') log N(c, c') - 2 sum_c N(c) log N(c)`` over the cells with a
    rare class; each pass moves every rare word (most frequent first) to the
    class that raises it most.  A word next to itself is ignored (rare).
    Starts from classes by frequency rank (round robin), so the result is
    deterministic.  Stops when fewer than ``tol`` of the words move or after
    ``max_iter`` passes.  Returns int64 (len(rare_rows),) labels in [0, k).
    """
    rare_rows = np.asarray(rare_rows, dtype=np.int64)
    n_rare = len(rare_rows)
    if k < 1 or k > n_rare:
        raise QrnnLmError(f"--buckets {k} must be between 1 and the number of rare words ({n_rare}).")
    if k == 1 or n_rare == 0:
        return np.zeros(n_rare, dtype=np.int64)
    ex = _Exchange(stream, rare_rows, n_words, k, chunk)
    for it in range(max_iter):
        moved = 0
        for i in ex.order.tolist():
            moved += ex.move(i)
        if log:
            log(f"exchange pass {it + 1}: {moved}/{n_rare} rare words moved")
        if moved <= tol * n_rare:
            break
    return ex.label


def _rare_bigram_counts(stream, slot: np.ndarray, n_words: int, chunk: int) -> tuple:
    """(count of each word, and the bigrams (left, right, count) with a rare
    word -- ``slot`` >= 0 -- on either side and not a word next to itself),
    reading ``stream`` in chunks."""
    n = len(stream)
    freq = np.zeros(n_words, dtype=np.int64)
    pairs = _KeyCounts()
    for s in range(0, n, chunk):  # a chunk owns positions s..s+chunk-1 and the bigrams they start
        a = np.asarray(stream[s:min(n, s + chunk + 1)], dtype=np.int64)
        freq += np.bincount(a[:chunk], minlength=n_words)
        left, right = a[:-1], a[1:]
        sel = ((slot[left] >= 0) | (slot[right] >= 0)) & (left != right)
        pairs.add(left[sel] * n_words + right[sel])
    u, c = pairs.total()
    return freq, u // n_words, u % n_words, c


class _Exchange:
    """The state of :func:`exchange_clusters`: the labels, each word's class,
    the class-bigram counts and class sizes, updated as words move."""

    def __init__(self, stream, rare_rows: np.ndarray, n_words: int, k: int, chunk: int):
        n_rare = len(rare_rows)
        self.n_words, self.k, self.rare_rows = n_words, k, rare_rows
        slot = np.full(n_words, -1, dtype=np.int64)  # rare word -> its position in rare_rows
        slot[rare_rows] = np.arange(n_rare)
        freq, self.left, self.right, self.c = _rare_bigram_counts(stream, slot, n_words, chunk)
        # Classes: the fixed words are columns 0..nf-1 (nf of them, in id order),
        # rare class j is column nf + j: the tables hold (vocabulary + k) x k
        # cells, however many rare types there are.  Start by frequency rank,
        # round robin.
        self.nf = nf = n_words - n_rare
        self.order = np.argsort(-freq[rare_rows], kind="stable")
        self.label = np.empty(n_rare, dtype=np.int64)
        self.label[self.order] = np.arange(n_rare) % k
        self.cls = np.empty(n_words, dtype=np.int64)
        self.cls[slot < 0] = np.arange(nf)
        self.cls[rare_rows] = nf + self.label
        self._index_neighbours(slot, n_rare)
        self._count_class_bigrams()
        self.wcount = freq[rare_rows].astype(np.float64)
        self.size = np.bincount(self.label, weights=self.wcount, minlength=k)

    def _index_neighbours(self, slot: np.ndarray, n_rare: int) -> None:
        """Per rare word: its bigrams to the right (w -> x) and left (x -> w)."""
        rs, ls = slot[self.left], slot[self.right]
        by_r = np.argsort(rs, kind="stable")
        self.by_r = by_r[rs[by_r] >= 0]
        by_l = np.argsort(ls, kind="stable")
        self.by_l = by_l[ls[by_l] >= 0]
        self.r_start = np.searchsorted(rs[self.by_r], np.arange(n_rare + 1))
        self.l_start = np.searchsorted(ls[self.by_l], np.arange(n_rare + 1))

    def _count_class_bigrams(self) -> None:
        """R[j, x]: bigrams (class j, x); L[j, x]: bigrams (x, class j) with x a fixed word."""
        nf, c = self.nf, self.c
        self.R = np.zeros((self.k, nf + self.k))
        self.L = np.zeros((self.k, nf))
        cr, cl = self.cls[self.left], self.cls[self.right]
        is_r = cr >= nf
        np.add.at(self.R, (cr[is_r] - nf, cl[is_r]), c[is_r])
        is_l = (cl >= nf) & (cr < nf)
        np.add.at(self.L, (cl[is_l] - nf, cr[is_l]), c[is_l])

    def move(self, i: int) -> bool:
        """Move rare word ``i`` to the class that raises the objective most
        (staying unless another is better); whether it moved."""
        nf, a = self.nf, self.label[i]
        ri = self.by_r[self.r_start[i]:self.r_start[i + 1]]
        li = self.by_l[self.l_start[i]:self.l_start[i + 1]]
        xr, vr = self.cls[self.right[ri]], self.c[ri]          # w -> x
        xl, vl = self.cls[self.left[li]], self.c[li]           # x -> w
        fixed = xl < nf
        nb = (xr, vr, xl[fixed], vl[fixed], xl[~fixed] - nf, vl[~fixed])
        n_w = self.wcount[i]
        self._add(a, nb, -1.0, n_w)  # take w out of class a
        gain = self._gain(nb, n_w)
        b = int(np.argmax(gain))
        if gain[b] <= gain[a] + 1e-9:
            b = a
        self._add(b, nb, 1.0, n_w)
        if b == a:
            return False
        self.label[i] = b
        self.cls[self.rare_rows[i]] = nf + b
        return True

    def _add(self, j: int, nb: tuple, sign: float, n_w: float) -> None:
        """Add (sign 1) or remove (sign -1) a word with neighbours ``nb`` to class j."""
        xr, vr, xlf, vlf, xlr, vlr = nb
        if sign < 0:
            vr, vlf, vlr, n_w = -vr, -vlf, -vlr, -n_w
        np.add.at(self.R[j], xr, vr)
        np.add.at(self.L[j], xlf, vlf)
        np.add.at(self.R[:, self.nf + j], xlr, vlr)
        self.size[j] += n_w

    def _gain(self, nb: tuple, n_w: float) -> np.ndarray:
        """The objective's gain of putting a word with neighbours ``nb`` in each class."""
        xr, vr, xlf, vlf, xlr, vlr = nb
        Rb = self.R[:, xr]
        gain = (_xlogx(Rb + vr) - _xlogx(Rb)).sum(1)
        Lb = self.L[:, xlf]
        gain += (_xlogx(Lb + vlf) - _xlogx(Lb)).sum(1)
        Cb = self.R[xlr[:, None], self.nf + np.arange(self.k)]   # (x rare class, b)
        gain += (_xlogx(Cb + vlr[:, None]) - _xlogx(Cb)).sum(0)
        gain -= 2 * (_xlogx(self.size + n_w) - _xlogx(self.size))
        return gain


def class_bigram_loglik(stream, rare_rows: np.ndarray, labels: np.ndarray, n_words: int) -> float:
    """``sum N(c, c') log N(c, c') - sum N_left(c) log N_left(c) - sum
    N_right(c') log N_right(c')`` over all bigrams of ``stream`` with the rare
    words mapped to their classes (the class-bigram log-likelihood up to a
    constant); a reference for tests of :func:`exchange_clusters`."""
    cls = np.arange(n_words, dtype=np.int64)
    cls[np.asarray(rare_rows, dtype=np.int64)] = n_words + np.asarray(labels, dtype=np.int64)
    a = cls[np.asarray(stream, dtype=np.int64)]
    _, pc = np.unique(a[:-1] * (2 * n_words + len(labels)) + a[1:], return_counts=True)
    _, lc = np.unique(a[:-1], return_counts=True)
    _, rc = np.unique(a[1:], return_counts=True)
    return float(_xlogx(pc).sum() - _xlogx(lc).sum() - _xlogx(rc).sum())
