"""Building a vocabulary from training counts: the trainer to the runtime
:class:`qrnn_lm.vocab.Vocabulary` (as sentencepiece keeps its trainer apart
from its processor).  :func:`build_vocab_dict` runs the steps below and
returns the ``vocab.json`` dict; :meth:`Vocabulary.build` wraps it.  The
model of rare-word buckets is described in :mod:`qrnn_lm.vocab`.

Steps: check the arguments, word statistics (count, main POS, order), the
bucket of each rare word (by ``--rare`` mode), the bucket table (names,
sizes), output ids, the buckets of words never seen in training, the
spelling models.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from .errors import QrnnLmError
from .spelling import SpellingModel, script_of
from .vocab_format import EOS, FORMAT, RARE_MODES, VERSION, pos_prefix, script_key
from .wordvec import allocate_clusters, kmeans_assign


def build_vocab_dict(type_counts: dict, n_lines: int, *, vocab_size: int, rare: str = "pos",
                     buckets: int | None = None, pos_depth: int = 2, seed: int = 0,
                     vectors=None, clusters=None, tokenizer_config: dict,
                     normalizer_config: dict | None = None, single_char: bool = False,
                     extra: dict | None = None) -> dict:
    """The ``vocab.json`` dict of the training counts (arguments as
    :meth:`qrnn_lm.vocab.Vocabulary.build`)."""
    _check_build_args(rare, vocab_size, pos_depth, type_counts)
    word_count, main_pos, order = _word_stats(type_counts)
    kept, rare_list = order[:vocab_size], order[vocab_size:]
    bucket_of = _assign_buckets(rare, rare_list, main_pos, buckets=buckets,
                                pos_depth=pos_depth, seed=seed, vectors=vectors,
                                clusters=clusters)
    table = _BucketTable(bucket_of, word_count)
    entries, bid = _output_ids(kept, word_count, table, n_lines)
    unseen_script, unseen, default = _unseen_buckets(rare, bucket_of, main_pos, word_count,
                                                     pos_depth, table, bid)
    spelling, group_spelling = _spelling_models(order, bucket_of, single_char)
    d = {
        "format": FORMAT, "version": VERSION,
        "tokenizer": tokenizer_config,
        "normalizer": normalizer_config or {"nfkc": True, "max_line_chars": 4000},
        "rare": {"mode": rare, "buckets": buckets, "pos_depth": pos_depth, "seed": seed},
        "size": len(entries),
        "tokens": [list(e) for e in entries],
        "buckets": _bucket_entries(table, bid, group_spelling),
        "group_spelling": group_spelling,
        "unseen_bucket_by_pos": unseen,
        "unseen_bucket_by_pos_script": unseen_script,
        "default_bucket": bid[default],
        "rare_words": {w: [bid[bucket_of[w]], word_count[w]] for w in rare_list},
        "spelling": spelling.to_dict(),
    }
    if extra:
        d.update(extra)
    return d


def _check_build_args(rare: str, vocab_size: int, pos_depth: int, type_counts: dict) -> None:
    if rare not in RARE_MODES:
        raise QrnnLmError(f"unknown --rare {rare!r}; choose one of {', '.join(RARE_MODES)}.")
    if vocab_size < 1:
        raise QrnnLmError("--vocab-size must be at least 1.")
    if pos_depth < 1:
        raise QrnnLmError("--pos-depth must be at least 1.")
    if not type_counts:
        raise QrnnLmError("the training split has no tokens; give a non-empty corpus.")


def _word_stats(type_counts: dict) -> tuple[Counter, dict, list]:
    """(count of each surface, its most frequent POS, surfaces by descending
    count).  Ties (POS and order) break by name, for determinism."""
    word_count = Counter()
    word_pos = defaultdict(Counter)
    for (surface, pos), c in type_counts.items():
        word_count[surface] += c
        word_pos[surface][pos] += c
    main_pos = {w: min(pc.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                for w, pc in word_pos.items()}
    order = sorted(word_count, key=lambda w: (-word_count[w], w))
    return word_count, main_pos, order


def _assign_buckets(rare: str, rare_list: list, main_pos: dict, *, buckets, pos_depth: int,
                    seed: int, vectors, clusters=None) -> dict:
    """word -> bucket key (POS prefix or None, k-means cluster or None)."""
    if rare == "unk":
        return {w: (None, None) for w in rare_list}
    if rare == "pos":
        return {w: (pos_prefix(main_pos[w], pos_depth), None) for w in rare_list}
    if rare == "pos+script":
        return {w: (f"{pos_prefix(main_pos[w], pos_depth)}-{script_of(w)}", None)
                for w in rare_list}
    if buckets is None or buckets < 1:
        raise QrnnLmError(f"--rare {rare} needs --buckets K (K >= 1).")
    if buckets > len(rare_list):
        raise QrnnLmError(f"--buckets {buckets} is larger than the number of rare "
                          f"words ({len(rare_list)}); use fewer buckets or a smaller "
                          "--vocab-size.")
    if rare == "exchange":
        if clusters is None:
            raise QrnnLmError("--rare exchange needs the training text to cluster on.")
        labels = clusters(rare_list, buckets)
        return {w: (None, int(lab)) for w, lab in zip(rare_list, labels)}
    if vectors is None:
        raise QrnnLmError(f"--rare {rare} needs word vectors.")
    bucket_of = {}
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
        alloc = allocate_clusters(buckets, {p: len(ix) for p, ix in groups.items()})
        for p in sorted(groups):
            ix = np.asarray(groups[p])
            labels = kmeans_assign(x[ix], alloc[p], seed)
            for i, lab in zip(ix, labels):
                # a POS group with one cluster is just the POS bucket
                bucket_of[with_vec[i]] = (p, int(lab) if alloc[p] > 1 else None)
    return bucket_of


class _BucketTable:
    """The distinct bucket keys in name order, their names (k-means labels
    renumbered densely per POS group, empty clusters dropped) and sizes."""

    def __init__(self, bucket_of: dict, word_count: Counter):
        keys = sorted(set(bucket_of.values()),
                      key=lambda k: (k[0] or "", -1 if k[1] is None else k[1]))
        self.keys = keys or [(None, None)]
        self._renum = {}
        per_pos = Counter()
        for k in self.keys:
            if k[1] is not None:
                self._renum[k] = per_pos[k[0]]
                per_pos[k[0]] += 1
        self.tokens = Counter()
        self.types = Counter()
        for w, k in bucket_of.items():
            self.tokens[k] += word_count[w]
            self.types[k] += 1

    def cluster(self, k) -> int | None:
        return None if k[1] is None else self._renum[k]

    def name(self, k) -> str:
        parts = ["unk"]
        if k[0]:
            parts.append(k[0])
        if k[1] is not None:
            parts.append(f"k{self._renum[k]}")
        return "<" + "-".join(parts) + ">"


def _output_ids(kept: list, word_count: Counter, table: _BucketTable,
                n_lines: int) -> tuple[list, dict]:
    """Output entries (name, count, kind) by descending training count (ties:
    words, buckets, eos; then name), and bucket key -> output id."""
    entries = [(w, word_count[w], "word") for w in kept]
    entries += [(table.name(k), table.tokens[k], "bucket") for k in table.keys]
    entries.append((EOS, n_lines, "special"))
    rank = {"word": 0, "bucket": 1, "special": 2}
    entries.sort(key=lambda e: (-e[1], rank[e[2]], e[0]))
    id_of = {(e[0], e[2]): i for i, e in enumerate(entries)}
    bid = {k: id_of[(table.name(k), "bucket")] for k in table.keys}
    return entries, bid


def _unseen_buckets(rare: str, bucket_of: dict, main_pos: dict, word_count: Counter,
                    pos_depth: int, table: _BucketTable, bid: dict) -> tuple[dict, dict, tuple]:
    """For words never seen in training: {"POS prefix|script": the bucket with
    most rare tokens of that prefix and character class}, {POS prefix: the
    bucket with most rare tokens of that prefix} (both empty for ``unk``), and
    the default bucket key."""
    by_prefix = defaultdict(Counter)
    by_script = defaultdict(Counter)
    if rare != "unk":
        for w, k in bucket_of.items():
            p, sc = main_pos[w], script_of(w)
            for dpt in range(1, pos_depth + 1):
                by_prefix[pos_prefix(p, dpt)][bid[k]] += word_count[w]
                by_script[script_key(pos_prefix(p, dpt), sc)][bid[k]] += word_count[w]

    def most(counters):
        return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                for p, c in sorted(counters.items())}
    default = max(table.keys, key=lambda k: (table.tokens[k], -bid[k]))
    return most(by_script), most(by_prefix), default


def _spelling_models(order: list, bucket_of: dict,
                     single_char: bool) -> tuple[SpellingModel, dict]:
    """The spelling model of all training types, and one (as a dict) per POS
    group of buckets ("" for ``unk`` and plain ``kmeans``)."""
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
    return spelling, group_spelling


def _bucket_entries(table: _BucketTable, bid: dict, group_spelling: dict) -> list:
    """The ``buckets`` list: id, name, POS, cluster, sizes and spelling group."""
    return [{"id": bid[k], "name": table.name(k), "pos": k[0], "cluster": table.cluster(k),
             "types": table.types[k], "tokens": table.tokens[k],
             "spelling": (k[0] or "") if (k[0] or "") in group_spelling else None}
            for k in table.keys]
