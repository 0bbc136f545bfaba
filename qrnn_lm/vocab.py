"""Vocabulary with rare-word buckets and exact word probabilities.

The language model predicts over *output ids*: the kept (frequent) words, one
token per rare-word bucket, and ``</s>``.  Every other word w is mapped to a
bucket b(w), and its probability is

    P(w | history) = P_model(b(w) | history) * P(w | b(w))

with P(w | b) an interpolated (Witten-Bell) estimate over *all* strings:

    P(w | b) = (c_b(w) + n_b * P_spell(w)) / (N_b + n_b)

where c_b(w) is w's training count as a member of b, N_b the bucket's token
count, n_b its number of member types, and P_spell a character-level
"spelling" model that is itself a distribution over all non-empty strings
(:class:`SpellingModel`; one per POS group of buckets, fitted on the group's
rare words and backing off to all training types).  Summed over all strings this is exactly 1, so the
model is a proper generative distribution: choose an output id, and for a
bucket choose a seen member by its count or spell a new word.  The mass that
lands on strings which at test time would go to another bucket (or are kept
words) is wasted, never double-counted: bits per character computed with
``rare_logp`` are an upper bound on the true code length, comparable between
tokenizers.

Buckets (``rare`` mode):

- ``unk``: one bucket ``<unk>``;
- ``pos``: one bucket per UniDic POS prefix of depth D (``<unk-名詞-固有名詞>``);
- ``kmeans``: K faiss k-means clusters of word vectors (``<unk-k12>``);
  rare words without a vector go to their POS bucket;
- ``pos+kmeans``: k-means within each POS bucket (``<unk-名詞-普通名詞-k3>``).

Words never seen in training get the bucket that holds most training tokens
of rare words sharing their (MeCab unknown-word) POS, at the deepest POS
depth that has one, else the largest bucket.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import random
import warnings
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

from .errors import QrnnLmError

EOS = "</s>"
RARE_MODES = ("unk", "pos", "kmeans", "pos+kmeans")
FORMAT = "qrnn_lm-vocab"
VERSION = 1
_NUM_CODEPOINTS = 0x110000


def pos_prefix(pos: str, depth: int) -> str:
    """``"名詞-固有名詞-地名-一般", 2 -> "名詞-固有名詞"``."""
    return "-".join(pos.split("-")[:depth])


# --------------------------------------------------------------------------
# Spelling model for words never seen in training
# --------------------------------------------------------------------------

class SpellingModel:
    """A character unigram model with a geometric length: a distribution over
    all non-empty strings of Unicode code points.

        P(w) = q (1 - q)^(len(w) - 1) * prod_i p(w_i)
        p(c) = (count(c) + d * p0(c)) / (T + d)

    T and d are the total and distinct character counts of the word types it
    was fitted on (Witten-Bell: characters not among them share d / (T + d)),
    and p0 is the ``backoff`` model's character distribution, or uniform over
    all 0x110000 code points without one.  q = (types + 1) / (T + 2) so that
    the mean length matches; ``single_char`` (the char tokenizer) fixes q = 1.
    Each POS group of buckets has its own model (katakana loanwords spell
    differently from verbs) backing off to one fitted on all training types.
    """

    def __init__(self, char_counts: dict, n_types: int, single_char: bool = False,
                 backoff: "SpellingModel | None" = None):
        self.char_counts = dict(char_counts)
        self.n_types = int(n_types)
        self.single_char = bool(single_char)
        self.backoff = backoff
        total = sum(self.char_counts.values())
        distinct = len(self.char_counts)
        denom = total + distinct
        self._p_seen = total / denom if denom else 0.0
        # log of the backoff share d / (T + d); all mass when there is no data
        self._log_share = math.log(distinct / denom) if denom else 0.0
        # the model's own share of each character it has seen: log(count / (T + d))
        self._log_char = {c: math.log(n / denom) for c, n in self.char_counts.items() if n > 0}
        self._cache: dict = {}
        self._log_uniform = -math.log(_NUM_CODEPOINTS)
        if self.single_char:
            self.q = 1.0
        else:
            self.q = (self.n_types + 1) / (total + 2)
        self._log_q = math.log(self.q)
        self._log_1mq = math.log1p(-self.q) if self.q < 1.0 else -math.inf
        # cumulative table for sampling seen characters
        self._chars = sorted(self.char_counts)
        self._cum = np.cumsum([self.char_counts[c] for c in self._chars]) if self._chars else None

    def _base_logp(self, c: str) -> float:
        return self.backoff.char_logp(c) if self.backoff is not None else self._log_uniform

    def char_logp(self, c: str) -> float:
        """log p(c) of one character."""
        r = self._cache.get(c)
        if r is None:
            other = self._log_share + self._base_logp(c)
            own = self._log_char.get(c)
            if own is None:
                r = other
            else:  # log(exp(own) + exp(other)), own >= other almost always
                hi, lo = max(own, other), min(own, other)
                r = hi + math.log1p(math.exp(lo - hi))
            if len(self._cache) < 1_000_000:
                self._cache[c] = r
        return r

    @classmethod
    def fit(cls, words: Iterable[str], single_char: bool = False,
            backoff: "SpellingModel | None" = None) -> "SpellingModel":
        counts = Counter()
        n = 0
        for w in words:
            counts.update(w)
            n += 1
        return cls(counts, n, single_char, backoff)

    def logp(self, word: str) -> float:
        """Natural log of P(word); -inf for the empty string (and for words
        longer than one character under ``single_char``)."""
        n = len(word)
        if n == 0 or (n > 1 and self.single_char):
            return -math.inf
        s = self._log_q + (n - 1) * self._log_1mq if n > 1 else self._log_q
        for c in word:
            s += self.char_logp(c)
        return s

    def sample_char(self, rand) -> str:
        if self._cum is not None and rand() < self._p_seen:
            i = int(np.searchsorted(self._cum, rand() * self._cum[-1], side="right"))
            return self._chars[min(i, len(self._chars) - 1)]
        if self.backoff is not None:
            return self.backoff.sample_char(rand)
        while True:
            cp = int(rand() * _NUM_CODEPOINTS)
            if not 0xD800 <= cp <= 0xDFFF:  # surrogates are not text
                return chr(cp)

    def sample(self, rand) -> str:
        """Draw a string; ``rand()`` returns uniform floats in [0, 1)."""
        out = []
        while True:
            out.append(self.sample_char(rand))
            if self.single_char or rand() < self.q:
                return "".join(out)

    def to_dict(self) -> dict:
        return {"char_counts": self.char_counts, "n_types": self.n_types,
                "single_char": self.single_char}

    @classmethod
    def from_dict(cls, d: dict, backoff: "SpellingModel | None" = None) -> "SpellingModel":
        return cls(d["char_counts"], d["n_types"], d.get("single_char", False), backoff)


# --------------------------------------------------------------------------
# Word vectors for k-means
# --------------------------------------------------------------------------

def read_vec_file(path: str, words: Iterable[str]) -> dict:
    """Vectors of ``words`` from a word2vec/fastText text file (``N D``
    header, then ``word v1 ... vD`` per line).  Returns {word: float32 (D,)}."""
    wanted = set(words)
    out = {}
    try:
        f = open(path, encoding="utf-8", errors="replace")
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


def vectors_from_checkpoint(path: str, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Input embeddings of ``words`` from a trained qrnn_lm checkpoint.

    Useful with a model trained on a larger vocabulary (a bigger
    ``--vocab-size``): its kept words are this vocabulary's rare words.  Words
    the checkpoint's model did not keep have no vector.  Returns
    (float32 (n, emsize) L2-normalised, has_vector bool (n,)).
    """
    import torch
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        old = Vocabulary.from_dict(ckpt["vocab"])
        state = ckpt["model"]
    except (OSError, RuntimeError, KeyError, TypeError, QrnnLmError) as e:
        raise QrnnLmError(f"cannot read word vectors from checkpoint {path} ({e}); give a "
                          "checkpoint written by train.py or a .vec file.") from None
    weight = state.get("encoder.weight")
    if weight is None:
        cands = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2
                 and v.shape[0] == len(old)]
        if not cands:
            raise QrnnLmError(f"checkpoint {path} has no input embedding matrix with "
                              f"{len(old)} rows.")
        weight = cands[0]
    w = weight.float().numpy()
    x = np.zeros((len(words), w.shape[1]), dtype=np.float32)
    has = np.zeros(len(words), dtype=bool)
    for i, word in enumerate(words):
        j = old.word_to_id.get(word)
        if j is not None:
            x[i], has[i] = w[j], True
    n = np.linalg.norm(x, axis=1, keepdims=True)
    has &= n[:, 0] > 0
    return x / np.maximum(n, 1e-12), has


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

    parts = []  # (unique keys, counts) per chunk; key = row * n_ctx + col
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
        parts.append(np.unique(np.concatenate(keys), return_counts=True))
    all_u = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    all_c = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    u, inv = np.unique(all_u, return_inverse=True)
    c = np.bincount(inv, weights=all_c).astype(np.float64)
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


# --------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------

def _rand_fn(generator):
    """A zero-argument uniform [0, 1) sampler from torch / numpy / random generators."""
    if generator is None:
        return random.random
    if isinstance(generator, random.Random):
        return generator.random
    if isinstance(generator, np.random.Generator):
        return generator.random
    try:
        import torch
        if isinstance(generator, torch.Generator):
            return lambda: float(torch.rand((), generator=generator))
    except ImportError:  # pragma: no cover
        pass
    raise ValueError("generator must be a torch.Generator, numpy Generator, random.Random or None")


class Vocabulary:
    """Output vocabulary of a language model (see the module docstring).

    Build one with :meth:`build` (``prepare`` does), load with :meth:`load`.
    """

    def __init__(self, d: dict, directory: str | None = None):
        if d.get("format") != FORMAT:
            raise QrnnLmError("this is not a qrnn_lm vocabulary file; run "
                              "`python -m qrnn_lm prepare` to make one.")
        if d.get("version", 0) > VERSION:
            raise QrnnLmError(f"vocabulary format version {d['version']} is newer than this "
                              "qrnn_lm understands; upgrade qrnn_lm.")
        self._dict = d
        self.directory = directory
        self.tokenizer_config = d["tokenizer"]
        self.normalizer_config = d["normalizer"]
        self.rare_mode = d["rare"]["mode"]
        self.pos_depth = d["rare"]["pos_depth"]
        self.itos = [t[0] for t in d["tokens"]]
        self.counts = np.asarray([t[1] for t in d["tokens"]], dtype=np.int64)
        self._kind = [t[2] for t in d["tokens"]]
        self._is_bucket = np.asarray([k == "bucket" for k in self._kind])
        self.eos_id = self._kind.index("special")
        self.word_to_id = {w: i for i, (w, k) in enumerate(zip(self.itos, self._kind))
                           if k == "word"}
        self.buckets = {b["id"]: b for b in d["buckets"]}
        self.rare_words = {w: (int(v[0]), int(v[1])) for w, v in d["rare_words"].items()}
        self.unseen_bucket_by_pos = {p: int(b) for p, b in d["unseen_bucket_by_pos"].items()}
        self.default_bucket = int(d["default_bucket"])
        self.spelling = SpellingModel.from_dict(d["spelling"])
        groups = {g: SpellingModel.from_dict(m, self.spelling)
                  for g, m in d.get("group_spelling", {}).items()}
        self._bucket_spelling = {b["id"]: groups[b["spelling"]] for b in d["buckets"]
                                 if b.get("spelling") is not None and b["spelling"] in groups}
        self._members = None
        self._tokenizer = None
        self._normalizer = None

    # -- construction ------------------------------------------------------

    @classmethod
    def build(cls, type_counts: dict, n_lines: int, *, vocab_size: int, rare: str = "pos",
              buckets: int | None = None, pos_depth: int = 2, seed: int = 0,
              vectors=None, tokenizer_config: dict, normalizer_config: dict | None = None,
              single_char: bool = False, extra: dict | None = None) -> "Vocabulary":
        """Build from training counts.

        ``type_counts``: {(surface, pos): count} over the training split.
        ``n_lines``: number of training lines (the count of ``</s>``).
        ``vectors``: for k-means, a callable ``f(rare_words: list[str]) ->
        (float32 (n, d), has_vector bool (n,))`` (see :func:`ppmi_svd_vectors`,
        :func:`read_vec_file`).
        """
        if rare not in RARE_MODES:
            raise QrnnLmError(f"unknown --rare {rare!r}; choose one of {', '.join(RARE_MODES)}.")
        if vocab_size < 1:
            raise QrnnLmError("--vocab-size must be at least 1.")
        if pos_depth < 1:
            raise QrnnLmError("--pos-depth must be at least 1.")
        if not type_counts:
            raise QrnnLmError("the training split has no tokens; give a non-empty corpus.")
        word_count = Counter()
        word_pos = defaultdict(Counter)
        for (surface, pos), c in type_counts.items():
            word_count[surface] += c
            word_pos[surface][pos] += c
        # most frequent POS of a surface; ties by name, for determinism
        main_pos = {w: min(pc.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                    for w, pc in word_pos.items()}
        order = sorted(word_count, key=lambda w: (-word_count[w], w))
        kept, rare_list = order[:vocab_size], order[vocab_size:]

        # ---- assign rare words to buckets
        bucket_of: dict = {}          # word -> bucket key (pos, cluster)
        if rare == "unk":
            for w in rare_list:
                bucket_of[w] = (None, None)
        elif rare == "pos":
            for w in rare_list:
                bucket_of[w] = (pos_prefix(main_pos[w], pos_depth), None)
        else:
            if buckets is None or buckets < 1:
                raise QrnnLmError(f"--rare {rare} needs --buckets K (K >= 1).")
            if buckets > len(rare_list):
                raise QrnnLmError(f"--buckets {buckets} is larger than the number of rare "
                                  f"words ({len(rare_list)}); use fewer buckets or a smaller "
                                  "--vocab-size.")
            if vectors is None:
                raise QrnnLmError(f"--rare {rare} needs word vectors.")
            vec, has = vectors(rare_list)
            with_vec = [w for w, h in zip(rare_list, has) if h]
            x = vec[np.asarray(has, dtype=bool)]
            for w, h in zip(rare_list, has):
                if not h:  # no vector: the word's POS bucket
                    bucket_of[w] = (pos_prefix(main_pos[w], pos_depth), None)
            if rare == "kmeans":
                if buckets > len(with_vec):
                    raise QrnnLmError(f"--buckets {buckets} is larger than the number of rare "
                                      f"words with vectors ({len(with_vec)}); use fewer "
                                      "buckets.")
                labels = kmeans_assign(x, buckets, seed)
                for w, lab in zip(with_vec, labels):
                    bucket_of[w] = (None, int(lab))
            else:
                groups = defaultdict(list)
                for i, w in enumerate(with_vec):
                    groups[pos_prefix(main_pos[w], pos_depth)].append(i)
                alloc = _allocate(buckets, {p: len(ix) for p, ix in groups.items()})
                for p in sorted(groups):
                    ix = np.asarray(groups[p])
                    labels = kmeans_assign(x[ix], alloc[p], seed)
                    for i, lab in zip(ix, labels):
                        # a POS group with one cluster is just the POS bucket
                        bucket_of[with_vec[i]] = (p, int(lab) if alloc[p] > 1 else None)

        # ---- buckets (k-means labels renumbered densely, empty clusters dropped)
        keys = sorted(set(bucket_of.values()), key=lambda k: (k[0] or "", -1 if k[1] is None else k[1]))
        if not keys:
            keys = [(None, None)]
        renum = {}
        per_pos = Counter()
        for k in keys:
            if k[1] is not None:
                renum[k] = per_pos[k[0]]
                per_pos[k[0]] += 1

        def bucket_name(k):
            parts = ["unk"]
            if k[0]:
                parts.append(k[0])
            if k[1] is not None:
                parts.append(f"k{renum[k]}")
            return "<" + "-".join(parts) + ">"

        b_tokens = Counter()
        b_types = Counter()
        for w, k in bucket_of.items():
            b_tokens[k] += word_count[w]
            b_types[k] += 1

        # ---- output ids: descending training count (ties: words, buckets, eos; then name)
        entries = [(w, word_count[w], "word") for w in kept]
        entries += [(bucket_name(k), b_tokens[k], "bucket") for k in keys]
        entries.append((EOS, n_lines, "special"))
        rank = {"word": 0, "bucket": 1, "special": 2}
        entries.sort(key=lambda e: (-e[1], rank[e[2]], e[0]))
        id_of = {(e[0], e[2]): i for i, e in enumerate(entries)}
        bid = {k: id_of[(bucket_name(k), "bucket")] for k in keys}

        # ---- unseen words: bucket with most rare tokens per POS prefix
        by_prefix = defaultdict(Counter)
        for w, k in bucket_of.items():
            p = main_pos[w]
            for dpt in range(1, pos_depth + 1):
                by_prefix[pos_prefix(p, dpt)][bid[k]] += word_count[w]
        if rare == "unk":
            by_prefix = {}
        unseen = {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                  for p, c in sorted(by_prefix.items())}
        default = max(keys, key=lambda k: (b_tokens[k], -bid[k]))

        # Characters of all training types (kept ones too) cover far more of the
        # script than the rare words alone; unseen characters still get mass.
        spelling = SpellingModel.fit(order, single_char)
        # Unseen words reach a bucket through their POS, so a bucket spells
        # them like the rare words of its POS group (all rare words for
        # `unk` and plain `kmeans` buckets), backing off to all types.
        groups = defaultdict(list)
        for w, k in bucket_of.items():
            groups[k[0] or ""].append(w)
        group_spelling = {g: SpellingModel.fit(sorted(ws), single_char).to_dict()
                          for g, ws in sorted(groups.items())}
        d = {
            "format": FORMAT, "version": VERSION,
            "tokenizer": tokenizer_config,
            "normalizer": normalizer_config or {"nfkc": True, "max_line_chars": 4000},
            "rare": {"mode": rare, "buckets": buckets, "pos_depth": pos_depth, "seed": seed},
            "size": len(entries),
            "tokens": [list(e) for e in entries],
            "buckets": [{"id": bid[k], "name": bucket_name(k), "pos": k[0],
                         "cluster": None if k[1] is None else renum[k],
                         "types": b_types[k], "tokens": b_tokens[k],
                         "spelling": (k[0] or "") if (k[0] or "") in group_spelling else None}
                        for k in keys],
            "group_spelling": group_spelling,
            "unseen_bucket_by_pos": unseen,
            "default_bucket": bid[default],
            "rare_words": {w: [bid[bucket_of[w]], word_count[w]] for w in rare_list},
            "spelling": spelling.to_dict(),
        }
        if extra:
            d.update(extra)
        return cls(d)

    # -- persistence -------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-safe dict (for checkpoints); :meth:`from_dict` inverts it."""
        return self._dict

    @classmethod
    def from_dict(cls, d: dict, directory: str | None = None) -> "Vocabulary":
        return cls(d, directory)

    def save(self, path: str) -> None:
        """Write ``vocab.json`` (``path`` may be the dataset directory)."""
        if os.path.isdir(path):
            path = os.path.join(path, "vocab.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            _dump_readable(self._dict, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        """Load from ``vocab.json`` or a prepared dataset directory."""
        if os.path.isdir(path):
            path = os.path.join(path, "vocab.json")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise QrnnLmError(f"no vocabulary at {path}; run `python -m qrnn_lm prepare` "
                              "first.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise QrnnLmError(f"{path} is not a valid vocabulary file ({e}).") from None
        return cls(d, os.path.dirname(os.path.abspath(path)))

    # -- basic API ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def size(self) -> int:
        return len(self.itos)

    @property
    def bucket_ids(self) -> list[int]:
        return sorted(self.buckets)

    def id_to_token(self, i: int) -> str:
        return self.itos[i]

    def is_bucket(self, i: int) -> bool:
        return bool(self._is_bucket[i])

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from .tokenizers import tokenizer_from_dict
            self._tokenizer = tokenizer_from_dict(self.tokenizer_config, self.directory)
        return self._tokenizer

    @property
    def normalizer(self):
        if self._normalizer is None:
            from .corpus import TextNormalizer
            self._normalizer = TextNormalizer.from_dict(self.normalizer_config)
        return self._normalizer

    # -- probabilities -----------------------------------------------------

    def bucket_for(self, surface: str, pos: str = "") -> int:
        """Bucket id of a word that is not kept (seen rare or unseen)."""
        r = self.rare_words.get(surface)
        if r is not None:
            return r[0]
        for dpt in range(self.pos_depth, 0, -1):
            b = self.unseen_bucket_by_pos.get(pos_prefix(pos, dpt))
            if b is not None:
                return b
        return self.default_bucket

    def rare_logp(self, surface: str, bucket_id: int) -> float:
        """log P(surface | bucket) (natural log)."""
        b = self.buckets[bucket_id]
        n_tok, n_typ = b["tokens"], b["types"]
        ls = self.spelling_for(bucket_id).logp(surface)
        if n_tok == 0:
            return ls
        r = self.rare_words.get(surface)
        c = r[1] if r is not None and r[0] == bucket_id else 0
        spell = math.log(n_typ) + ls
        num = np.logaddexp(math.log(c), spell) if c else spell
        return float(num - math.log(n_tok + n_typ))

    def spelling_for(self, bucket_id: int) -> SpellingModel:
        """The bucket's spelling model for words it has not seen (that of its
        POS group)."""
        return self._bucket_spelling.get(bucket_id, self.spelling)

    def unseen_mass(self, bucket_id: int) -> float:
        """P(a string that is not a training member of the bucket | bucket)."""
        b = self.buckets[bucket_id]
        if b["tokens"] == 0:
            return 1.0
        seen = sum(math.exp(self.rare_logp(w, bucket_id)) for w in self.members(bucket_id)[0])
        return 1.0 - seen

    def lookup(self, surface: str, pos: str = "") -> tuple[int, float]:
        """(output id, log P(surface | bucket) or 0.0) of one token."""
        i = self.word_to_id.get(surface)
        if i is not None:
            return i, 0.0
        b = self.bucket_for(surface, pos)
        return b, self.rare_logp(surface, b)

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalise, tokenize and map ``text``: (ids int32 (n,), rare_logp float32 (n,)).

        No ``</s>`` is appended; a text of several lines gets ``</s>`` between
        its (non-empty, normalised) lines.
        """
        ids, lps = [], []
        lines = list(self.normalizer.lines(text.split("\n")))
        for j, line in enumerate(lines):
            if j:
                ids.append(self.eos_id)
                lps.append(0.0)
            for surface, pos in self.tokenizer.tokenize(line):
                i, lp = self.lookup(surface, pos)
                ids.append(i)
                lps.append(lp)
        return np.asarray(ids, dtype=np.int32), np.asarray(lps, dtype=np.float32)

    def token_log_probs(self, output_log_probs, ids, rare_logp):
        """Log-probabilities of the actual tokens from the LM's output distribution.

        ``output_log_probs`` (..., V) log-softmax over output ids, ``ids`` (...)
        output ids, ``rare_logp`` (...) from the dataset or :meth:`encode`;
        returns (...) = output_log_probs[ids] + rare_logp (torch or numpy).
        """
        return token_log_probs(output_log_probs, ids, rare_logp)

    # -- generation --------------------------------------------------------

    def members(self, bucket_id: int) -> tuple[list[str], np.ndarray]:
        """Training members of a bucket and the cumulative sum of their counts."""
        if self._members is None:
            tmp = defaultdict(list)
            for w, (b, c) in self.rare_words.items():
                tmp[b].append((w, c))
            self._members = {}
            for b, lst in tmp.items():
                lst.sort(key=lambda wc: (-wc[1], wc[0]))
                self._members[b] = ([w for w, _ in lst],
                                    np.cumsum([c for _, c in lst], dtype=np.int64))
        return self._members.get(bucket_id, ([], np.zeros(0, dtype=np.int64)))

    def sample_word(self, bucket_id: int, generator=None, *, unseen: bool = False) -> str:
        """Expand a bucket into a word.

        Default: a training member drawn by its count (readable output).  With
        ``unseen=True`` the exact P(word | bucket), which spells a new word
        with probability n_b / (N_b + n_b).  ``generator``: torch.Generator,
        numpy Generator, random.Random or None.
        """
        if not self.is_bucket(bucket_id):
            raise ValueError(f"id {bucket_id} is not a bucket")
        rand = _rand_fn(generator)
        words, cum = self.members(bucket_id)
        b = self.buckets[bucket_id]
        if not words or (unseen and rand() < b["types"] / (b["tokens"] + b["types"])):
            return self.spelling_for(bucket_id).sample(rand)
        i = bisect.bisect_right(cum, rand() * int(cum[-1]))
        return words[min(i, len(words) - 1)]

    def decode(self, words: Sequence[str]) -> str:
        """Detokenize surface words for display (``</s>`` becomes a newline)."""
        out, cur = [], []
        for w in words:
            if w == EOS:
                out.append(self.tokenizer.detokenize(cur))
                cur = []
            else:
                cur.append(w)
        out.append(self.tokenizer.detokenize(cur))
        return "\n".join(out)


def token_log_probs(output_log_probs, ids, rare_logp):
    """``output_log_probs[..., ids] + rare_logp``: log P of the actual tokens.

    Works on torch tensors or numpy arrays; (..., V), (...), (...) -> (...).
    Summing ``-result`` and dividing by (characters * ln 2) gives exact bits
    per character.
    """
    try:
        import torch
        if isinstance(output_log_probs, torch.Tensor):
            ids_t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids,
                                    device=output_log_probs.device).long()
            lp = output_log_probs.gather(-1, ids_t.unsqueeze(-1)).squeeze(-1)
            r = rare_logp if isinstance(rare_logp, torch.Tensor) else torch.as_tensor(np.asarray(rare_logp))
            return lp + r.to(device=lp.device, dtype=lp.dtype)
    except ImportError:  # pragma: no cover
        pass
    olp = np.asarray(output_log_probs)
    ids = np.asarray(ids, dtype=np.int64)
    return np.take_along_axis(olp, ids[..., None], axis=-1)[..., 0] + np.asarray(rare_logp)


def _allocate(total: int, sizes: dict) -> dict:
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


def _dump_readable(d: dict, f) -> None:
    """JSON with one top-level key, and one list item or dict entry, per line."""
    dumps = lambda x: json.dumps(x, ensure_ascii=False)  # noqa: E731
    f.write("{\n")
    for n, (k, v) in enumerate(d.items()):
        f.write(f" {dumps(k)}: ")
        if isinstance(v, list) and v:
            f.write("[\n" + ",\n".join("  " + dumps(x) for x in v) + "\n ]")
        elif isinstance(v, dict) and len(v) > 4:
            f.write("{\n" + ",\n".join(f"  {dumps(a)}: {dumps(b)}" for a, b in v.items())
                    + "\n }")
        else:
            f.write(dumps(v))
        f.write(",\n" if n + 1 < len(d) else "\n")
    f.write("}\n")
