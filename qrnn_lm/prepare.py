"""``python -m qrnn_lm prepare``: corpus -> prepared dataset directory.

    python -m qrnn_lm prepare --train train.txt --valid valid.txt [--test test.txt] \\
        --out data/ja --tokenizer mecab --vocab-size 30000 --rare pos+kmeans --buckets 256

writes (see docs/DESIGN.md section 3)::

    vocab.json             the Vocabulary (tokenizer settings, kept words and
                           counts, buckets, every rare word's bucket)
    {split}.ids.npy        int32 output ids, `</s>` after every line
    {split}.rare_logp.npy  float32 log P(word | bucket), 0 for kept words
    {split}.meta.json      tokens, lines, characters (+1 per line end), ...
    sentencepiece.model    (--tokenizer sentencepiece)

``--corpus debian-ja`` or ``--wiki-dump FILE [--sample N]`` replace
``--train/--valid/--test``: the text is first extracted to ``OUT/corpus/``.
Each of the three is a corpus source (:mod:`qrnn_lm.corpus.sources`);
:func:`prepare` takes any source.

Everything is written into a staging directory beside ``OUT`` that replaces
it only when complete; ``OUT`` must be new or empty unless ``--force``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings

import numpy as np

from .corpus import TextFiles, TextNormalizer, read_text, source_from_flags
from .errors import QrnnLmError, run_command
from .prepare_lock import out_lock
from .prepare_settings import PrepareSettings, build_parser, check_settings
from .rawfile import COPY_CHUNK, RawArray, RawWriter, npy_from
from .rundir import (_STAGE_TAG, _check_out, _remove_orphan_parts,  # noqa: F401 (old names)
                     _stage_prefix, os_error_reason, pid_alive, remove_stale_staging,
                     staged_output, writing as _writing)
from .tokenizers import (CharTokenizer, MecabTokenizer, TOKENIZERS, tokenize_stream,
                         train_sentencepiece)
from .vocab import Vocabulary
from .wordvec import exchange_clusters, fasttext_vectors, ppmi_svd_vectors, vec_file_vectors

SPLITS = ("train", "valid", "test")


def prepare(source=None, *where, force: bool = False, train=None, valid=None, test=None, out=None,
            **settings) -> Vocabulary:
    """Prepare a dataset directory; returns the Vocabulary. See the module docstring.

        prepare(source, out, **settings)              # any corpus source (qrnn_lm.corpus)
        prepare(train, valid, test, out, **settings)  # text files; valid, test may be None
        prepare(train=..., valid=..., test=..., out=..., **settings)

    ``settings`` are the fields of :class:`PrepareSettings`.  ``out`` must be
    new or empty unless ``force``, which replaces it whole.  The dataset is
    written to a temporary directory beside ``out`` and moved into place when
    complete: a failed or interrupted run leaves ``out`` as it was.
    """
    if source is None and train is not None:
        source = train
        where = (valid, test, out) if out is not None else where
    if isinstance(source, (str, os.PathLike)):
        paths = list(where)
        if out is not None and len(where) < 3:   # out (and valid, test) given by keyword
            paths = (paths + [valid, test][len(paths):])[:2] + [out]
        if len(paths) != 3:
            raise TypeError("prepare(train, valid, test, out, **settings) takes four paths")
        valid, test, out = paths
        source = TextFiles(source, valid, test)
    elif source is None:
        raise TypeError("prepare() needs a corpus source or train=, and out=")
    elif out is None and len(where) == 1:
        out, = where
    elif out is None or where:
        raise TypeError("prepare(source, out, **settings) takes a source and an output directory")
    s = PrepareSettings(**settings)
    check_settings(source, s)
    inputs = {**source.inputs, "--vectors": s.vectors}
    with out_lock(out, force=force, inputs=inputs, log=s.log), \
            staged_output(out, force=force, inputs=inputs, log=s.log) as tmp:
        vocab = _prepare_source(source, tmp, out, s)
    vocab.directory = os.path.abspath(out)
    return vocab


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _make_tokenizer(name: str, train_path: str, out: str, vocab_size: int,
                    normalizer: TextNormalizer, seed: int, workers: int):
    if name == "mecab":
        return MecabTokenizer()
    if name == "char":
        return CharTokenizer()
    if name == "sentencepiece":
        return train_sentencepiece(read_text(train_path, normalizer),
                                   os.path.join(out, "sentencepiece"), vocab_size,
                                   seed=seed, threads=max(1, workers))
    raise QrnnLmError(f"unknown --tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)}.")


def _source_name(path: str, out: str, final: str) -> str:
    """``path`` as the dataset's meta.json names it: corpus files extracted
    into the staging directory ``out`` end up in ``final``."""
    path = os.path.abspath(path)
    tmp = os.path.abspath(out) + os.sep
    return os.path.join(os.path.abspath(final), path[len(tmp):]) if path.startswith(tmp) else path


class _TrainTypes:
    """One pass over the training text: its tokens as a stream of type ids
    (``types[i]`` is a (surface, POS) pair; 0 is ``</s>``), their counts, and
    the raw ``train.ids.npy`` writer, finished once the vocabulary exists.
    Fed chunk by chunk (``add``), then ``finish()``; :meth:`of_text` reads a file."""

    def __init__(self, out: str):
        self._index: dict = {}
        self.types, self.stats, self.lines, self.chars = [None], {}, 0, 0
        self.writer = RawWriter(os.path.join(out, "train.ids.npy"), np.int32)

    @classmethod
    def of_text(cls, tok, path: str, normalizer, out: str, workers: int, progress: bool):
        train = cls(out)
        for chunk in tokenize_stream(tok, read_text(path, normalizer, train.stats), workers,
                                     progress=progress, desc="train", directory=out):
            train.add(chunk)
        return train.finish()

    def add(self, chunk) -> None:
        index, types = self._index, self.types
        remap = np.empty(len(chunk.types) + 1, dtype=np.int32)
        remap[0] = 0
        for j, t in enumerate(chunk.types, start=1):
            g = index.get(t)
            if g is None:
                g = index[t] = len(types)
                types.append(t)
            remap[j] = g
        self.writer.write(remap[chunk.ids])
        self.lines += chunk.lines
        self.chars += chunk.characters

    def finish(self) -> "_TrainTypes":
        self._index = None
        self.stream = self.writer.close_raw()
        self.counts = np.zeros(len(self.types), dtype=np.int64)
        for s in range(0, len(self.stream), COPY_CHUNK):
            self.counts += np.bincount(self.stream[s:s + COPY_CHUNK], minlength=len(self.types))
        return self


def _build_vocabulary(train: _TrainTypes, tok, normalizer, out: str, s: PrepareSettings,
                      log) -> Vocabulary:
    """The Vocabulary of the training types, saved as ``out/vocab.json``."""
    vocab_size, rare, buckets, vectors = s.vocab_size, s.rare, s.buckets, s.vectors or "ppmi"
    types = train.types
    type_counts = {types[g]: int(train.counts[g]) for g in range(1, len(types))}
    if s.tokenizer == "sentencepiece":
        # every piece is kept, so there are no rare words to put in buckets
        vocab_size, rare, buckets = 1 << 30, "unk", None
        # Every piece is an output, also those the training text never used
        # (byte-fallback pieces): the model can then spell anything itself.
        for piece in tok.pieces():
            type_counts.setdefault((piece, "piece"), 0)
    vec_fn = cluster_fn = None
    if rare in ("kmeans", "pos+kmeans"):
        vec_fn = _vector_source(vectors, train.stream, types, window=s.window,
                                context_words=s.context_words, dim=s.vector_dim, seed=s.seed,
                                log=log)
    elif rare == "exchange":
        cluster_fn = _exchange_source(train.stream, types, log)
    vocab = Vocabulary.build(
        type_counts, train.lines, vocab_size=vocab_size, rare=rare, buckets=buckets,
        pos_depth=s.pos_depth, seed=s.seed, vectors=vec_fn, clusters=cluster_fn,
        tokenizer_config=tok.to_dict(),
        normalizer_config=normalizer.to_dict(), single_char=(s.tokenizer == "char"),
        extra={"vectors": vectors if vec_fn else None})
    vocab.directory = os.path.abspath(out)
    vocab.tokenizer = tok
    with _writing(os.path.join(out, "vocab.json")):
        vocab.save(out)
        vocab.dataset_identity = _sha256_of(os.path.join(out, "vocab.json"))
    log(f"vocabulary: {len(vocab)} outputs ({len(vocab.word_to_id)} words, "
        f"{len(vocab.buckets)} buckets, </s>), {len(vocab.rare_words)} rare words")
    return vocab


def _write_train(train: _TrainTypes, vocab: Vocabulary, out: str, source: str) -> None:
    """train.ids.npy, train.rare_logp.npy and train.meta.json, mapped from
    the type stream through lookup tables over its types."""
    types = train.types
    out_id = np.empty(len(types), dtype=np.int32)
    out_lp = np.zeros(len(types), dtype=np.float32)
    out_id[0] = vocab.eos_id
    for g in range(1, len(types)):
        out_id[g], out_lp[g] = vocab.lookup(*types[g])
    npy_from(train.stream, os.path.join(out, "train.rare_logp.npy"), lambda c: out_lp[c])
    train.writer.finish(lambda c: out_id[c])
    bucket_tokens = int(sum(train.counts[g] for g in range(1, len(types))
                            if vocab.is_bucket(int(out_id[g]))))
    _write_meta(out, "train", int(train.counts.sum()), train.lines, train.chars, train.stats,
                source, vocab, bucket_tokens=bucket_tokens, unseen_tokens=0, types=len(types) - 1)
    if isinstance(train.stream, RawArray):
        train.stream.close()
    train.stream = None   # reads of the raw file, deleted by finish()


def _usable_workers(workers: int, log) -> int:
    if workers > usable_cpus():
        log(f"--workers {workers} lowered to {usable_cpus()}, the number of usable CPUs")
        workers = usable_cpus()
    return workers


def _prepare_source(source, out: str, final: str, s: PrepareSettings) -> Vocabulary:
    """Extract ``source`` into ``out/corpus`` and write its dataset into
    ``out``.  A source that can (``extract_tokens``: a Wikipedia dump) hands
    the train split's tokens over while it extracts: one pass, no second
    reading of the text (the result is the same)."""
    log = s.log or (lambda msg: None)
    workers = _usable_workers(s.workers, log)
    corpus = os.path.join(out, "corpus")
    if not hasattr(source, "extract_tokens"):
        return _prepare_into(source.extract(corpus, log=s.log), out, final, s)
    if s.tokenizer == "sentencepiece":   # its model is trained on the extracted text first
        paths = source.extract(corpus, log=s.log, workers=workers, progress=s.progress)
        return _prepare_into(paths, out, final, s)
    t0 = time.time()
    normalizer = TextNormalizer(nfkc=s.nfkc, max_line_chars=s.max_line_chars)
    tok = _make_tokenizer(s.tokenizer, "", out, s.vocab_size, normalizer, s.seed, workers)
    train = _TrainTypes(out)
    paths = source.extract_tokens(corpus, tok, normalizer, train.add, log=s.log,
                                  workers=workers, progress=s.progress)
    return _prepare_into(paths, out, final, s, pretokenized=(tok, train.finish(), t0))


def _prepare_into(paths: dict, out: str, final: str, s: PrepareSettings,
                  pretokenized=None) -> Vocabulary:
    """Write the dataset of ``paths`` ({split: text file}, train always) into
    ``out``, a fresh directory that will become ``final``.  ``pretokenized``:
    (tokenizer, _TrainTypes of the train split, start time), if done already."""
    log = s.log or (lambda msg: None)
    workers = _usable_workers(s.workers, lambda msg: None)
    normalizer = TextNormalizer(nfkc=s.nfkc, max_line_chars=s.max_line_chars)
    if pretokenized is not None:
        tok, train, t0 = pretokenized
    else:
        t0 = time.time()
        tok = _make_tokenizer(s.tokenizer, paths["train"], out, s.vocab_size, normalizer,
                              s.seed, workers)
        if s.tokenizer == "sentencepiece" and s.rare != "unk":
            log(f"sentencepiece keeps every piece: --rare {s.rare} ignored")
        train = _TrainTypes.of_text(tok, paths["train"], normalizer, out, workers, s.progress)
    log(f"train: {train.lines} lines, {len(train.stream)} tokens, {len(train.types) - 1} "
        f"(word, POS) types, tokenized in {time.time() - t0:.1f}s")
    vocab = _build_vocabulary(train, tok, normalizer, out, s, log)
    _write_train(train, vocab, out, _source_name(paths["train"], out, final))
    for split in ("valid", "test"):
        if paths.get(split) is not None:
            _encode_split(vocab, tok, split, paths[split], out, normalizer, workers, s.progress,
                          _source_name(paths[split], out, final))
    log(f"done in {time.time() - t0:.1f}s: wrote {os.path.abspath(final)}")
    return vocab


def _surface_stream(type_stream, types: list):
    """(the training stream as surface-word indices, sliceable; {surface:
    index}); index 0 is ``</s>``."""
    surfaces = sorted({t[0] for t in types[1:]})
    word_of = {w: i + 1 for i, w in enumerate(surfaces)}
    type_to_word = np.zeros(len(types), dtype=np.int32)
    for g in range(1, len(types)):
        type_to_word[g] = word_of[types[g][0]]
    return _Mapped(type_stream, type_to_word), word_of


def _exchange_source(type_stream, types: list, log):
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


def _vector_source(vectors: str, type_stream, types: list, *, window: int,
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


class _sentences:
    """The training text as lists of surface words, one a line, read from the
    type stream each time it is iterated (gensim iterates it once per epoch;
    a list would hold the whole corpus in memory)."""

    def __init__(self, type_stream, types: list):
        self.type_stream, self.surface = type_stream, [None] + [t[0] for t in types[1:]]

    def __iter__(self):
        surface, stream, cur = self.surface, self.type_stream, []
        for s in range(0, len(stream), COPY_CHUNK):
            for g in np.asarray(stream[s:s + COPY_CHUNK]).tolist():
                if g == 0:
                    yield cur
                    cur = []
                else:
                    cur.append(surface[g])
        if cur:
            yield cur


class _Mapped:
    """``table[stream[i]]`` without materialising it (slices only)."""

    def __init__(self, stream, table):
        self.stream, self.table = stream, table

    def __len__(self):
        return len(self.stream)

    def __getitem__(self, sl):
        return self.table[np.asarray(self.stream[sl])]


def _encode_split(vocab, tok, split, path, out, normalizer, workers, progress, source):
    cache: dict = {}
    stats: dict = {}
    w_ids = RawWriter(os.path.join(out, f"{split}.ids.npy"), np.int32)
    w_lp = RawWriter(os.path.join(out, f"{split}.rare_logp.npy"), np.float32)
    lines = chars = unseen = in_bucket = 0
    for chunk in tokenize_stream(tok, read_text(path, normalizer, stats), workers,
                                 progress=progress, desc=split, directory=out):
        m_id = np.empty(len(chunk.types) + 1, dtype=np.int32)
        m_lp = np.zeros(len(chunk.types) + 1, dtype=np.float32)
        m_id[0] = vocab.eos_id
        new = np.zeros(len(chunk.types) + 1, dtype=bool)
        for j, t in enumerate(chunk.types, start=1):
            r = cache.get(t)
            if r is None:
                i, lp = vocab.lookup(*t)
                r = cache[t] = (i, lp, t[0] not in vocab.word_to_id
                                and t[0] not in vocab.rare_words)
            m_id[j], m_lp[j], new[j] = r
        w_ids.write(m_id[chunk.ids])
        w_lp.write(m_lp[chunk.ids])
        unseen += int(new[chunk.ids].sum())
        in_bucket += int(vocab.bucket_mask[m_id[chunk.ids]].sum())
        lines += chunk.lines
        chars += chunk.characters
    w_ids.finish()
    w_lp.finish()
    _write_meta(out, split, w_ids.n, lines, chars, stats, source, vocab,
                bucket_tokens=in_bucket, unseen_tokens=unseen)


def _sha256_of(path: str) -> str:
    """The dataset's identity: the SHA-256 of vocab.json's bytes, recorded in
    every split's meta.json (``qrnn_lm.data.check_dataset_identity``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_meta(out, split, tokens, lines, chars, stats, source, vocab, **extra):
    meta = {"tokens": int(tokens), "lines": int(lines), "characters": int(chars),
            "source": os.path.abspath(source), "invalid_utf8": int(stats.get("invalid_utf8", 0)),
            "tokenizer": vocab.tokenizer_config["type"], "rare": vocab.rare_mode,
            "vocab_size": len(vocab), "vocab_sha256": vocab.dataset_identity,
            **{k: int(v) for k, v in extra.items()}}
    path = os.path.join(out, f"{split}.meta.json")
    with _writing(path), open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda _: _main(args), argv,
                       interrupted=f"error: interrupted; --out {args.out} is as it was before.",
                       out_of_memory="out of memory while preparing the data; use fewer --workers or a smaller --vocab-size.")


def _main(args: argparse.Namespace) -> int:
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    source = source_from_flags(train=args.train, valid=args.valid, test=args.test,
                               corpus=args.corpus, wiki_dump=args.wiki_dump, sample=args.sample,
                               heldout=args.heldout, wiki_index=args.wiki_index)
    settings = dict(tokenizer=args.tokenizer, vocab_size=args.vocab_size, rare=args.rare,
                    buckets=args.buckets, vectors=args.vectors, pos_depth=args.pos_depth,
                    workers=args.workers, seed=args.seed, nfkc=args.nfkc,
                    max_line_chars=args.max_line_chars, window=args.window,
                    context_words=args.context_words, vector_dim=args.vector_dim,
                    progress=not args.quiet, log=log)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = (lambda message, *a, **k:
                                print(f"warning: {message}", file=sys.stderr))
        prepare(source, args.out, force=args.force, **settings)
    return 0
