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

Everything is written into a staging directory beside ``OUT`` that replaces
it only when complete; ``OUT`` must be new or empty unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

from .corpus import TextNormalizer, check_input_file, read_text
from .errors import QrnnLmError, run_command
from .rundir import (_STAGE_TAG, _check_out, _remove_orphan_parts,  # noqa: F401 (old names)
                     _stage_prefix, os_error_reason, pid_alive, remove_stale_staging,
                     staged_output, writing as _writing)
from .tokenizers import (CharTokenizer, MecabTokenizer, TOKENIZERS, tokenize_stream,
                         train_sentencepiece)
from .vocab import RARE_MODES, Vocabulary
from .wordvec import (VECTOR_KINDS, exchange_clusters, fasttext_vectors, ppmi_svd_vectors,
                      vec_file_vectors)

SPLITS = ("train", "valid", "test")
_COPY_CHUNK = 1 << 22


def _write_npy(path: str, n: int, dtype, chunks) -> None:
    """Write a 1-D .npy of ``n`` items from an iterable of arrays with plain
    file writes (a full disk is then an OSError, never a crash in a memory map)."""
    dtype = np.dtype(dtype)
    with _writing(path), open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": (int(n),)})
        written = 0
        for chunk in chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(chunk.tobytes())
            written += len(chunk)
        assert written == n, (path, written, n)


class _RawWriter:
    """Append numpy arrays to a raw file, then turn it into a .npy (the
    length is unknown until the stream ends)."""

    def __init__(self, path: str, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        with _writing(path + ".tmp"):
            self._f = open(path + ".tmp", "wb")

    def write(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=self.dtype)
        with _writing(self.path + ".tmp"):
            self._f.write(a.tobytes())
        self.n += len(a)

    def close_raw(self) -> np.memmap:
        with _writing(self.path + ".tmp"):
            self._f.close()
        if self.n == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path + ".tmp", dtype=self.dtype, mode="r", shape=(self.n,))

    def finish(self, transform=None) -> None:
        """Write ``path`` as .npy from the raw data (optionally mapped by
        ``transform(chunk) -> array``) and delete the raw file."""
        raw = self.close_raw()
        _npy_from(raw, self.path, transform or (lambda c: c))
        del raw
        os.remove(self.path + ".tmp")


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


def prepare(train: str, valid: str | None, test: str | None, out: str, *,
            tokenizer: str = "mecab", vocab_size: int = 50000, rare: str = "pos+script",
            buckets: int | None = None, vectors: str | None = None, pos_depth: int = 2,
            workers: int = 1, seed: int = 0, nfkc: bool = True, max_line_chars: int = 4000,
            window: int = 2, context_words: int = 5000, vector_dim: int = 64,
            progress: bool = False, log=None, force: bool = False) -> Vocabulary:
    """Prepare a dataset directory; returns the Vocabulary. See the module docstring.

    ``out`` must be new or empty unless ``force``, which replaces it whole.  The
    dataset is written to a temporary directory beside ``out`` and moved into
    place when complete: a failed or interrupted run leaves ``out`` as it was.
    """
    kwargs = dict(tokenizer=tokenizer, vocab_size=vocab_size, rare=rare, buckets=buckets,
                  vectors=vectors, pos_depth=pos_depth, workers=workers, seed=seed, nfkc=nfkc,
                  max_line_chars=max_line_chars, window=window, context_words=context_words,
                  vector_dim=vector_dim, progress=progress, log=log)
    _check_settings(train, valid, test, **kwargs)
    with staged_output(out, force=force, inputs={"--train": train, "--valid": valid,
                                                 "--test": test, "--vectors": vectors},
                       log=log) as tmp:
        vocab = _prepare_into(train, valid, test, tmp, final=out, **kwargs)
    vocab.directory = os.path.abspath(out)
    return vocab


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _check_settings(train, valid, test, *, rare, buckets, workers, vectors, **_):
    if rare not in RARE_MODES:
        raise QrnnLmError(f"unknown --rare {rare!r}; choose one of {', '.join(RARE_MODES)}.")
    if rare in ("kmeans", "pos+kmeans", "exchange") and not buckets:
        raise QrnnLmError(f"--rare {rare} needs --buckets K.")
    vectors = vectors or "ppmi"
    if workers < 1:
        raise QrnnLmError("--workers must be at least 1.")
    for name, path in (("train", train), ("valid", valid), ("test", test)):
        if path is not None:
            check_input_file(path, f"--{name} file")
    if vectors not in VECTOR_KINDS:
        if not os.path.exists(vectors):
            raise QrnnLmError(f"--vectors {vectors} is neither {' nor '.join(VECTOR_KINDS)} nor an "
                              "existing .vec file, checkpoint or run directory.")
        if not os.path.isdir(vectors):  # a run directory is resolved to its checkpoint later
            check_input_file(vectors, "--vectors file")


def _prepare_into(train: str, valid: str | None, test: str | None, out: str, *,
                  final: str | None = None, tokenizer: str = "mecab", vocab_size: int = 50000,
                  rare: str = "pos+script", buckets: int | None = None, vectors: str | None = None,
                  pos_depth: int = 2, workers: int = 1, seed: int = 0, nfkc: bool = True,
                  max_line_chars: int = 4000, window: int = 2, context_words: int = 5000,
                  vector_dim: int = 64, progress: bool = False, log=None) -> Vocabulary:
    """Write the dataset into ``out`` (a fresh directory that will become
    ``final``)."""
    log = log or (lambda msg: None)
    _check_settings(train, valid, test, rare=rare, buckets=buckets, workers=workers,
                    vectors=vectors)
    if workers > usable_cpus():
        log(f"--workers {workers} lowered to {usable_cpus()}, the number of usable CPUs")
        workers = usable_cpus()
    vectors = vectors or "ppmi"
    final = final or out

    def source_name(path):  # corpus files extracted into ``out`` end up in ``final``
        path = os.path.abspath(path)
        tmp = os.path.abspath(out) + os.sep
        return os.path.join(os.path.abspath(final), path[len(tmp):]) if path.startswith(tmp) else path

    normalizer = TextNormalizer(nfkc=nfkc, max_line_chars=max_line_chars)
    t0 = time.time()
    tok = _make_tokenizer(tokenizer, train, out, vocab_size, normalizer, seed, workers)
    if tokenizer == "sentencepiece":
        # every piece is kept, so there are no rare words to put in buckets
        vocab_size = 1 << 30
        if rare != "unk":
            log(f"sentencepiece keeps every piece: --rare {rare} ignored")
        rare, buckets = "unk", None
    # ---- pass over train: type ids of (surface, pos) pairs; 0 is `</s>`
    type_index: dict = {}
    types: list = [None]
    stats: dict = {}
    writer = _RawWriter(os.path.join(out, "train.ids.npy"), np.int32)
    lines = chars = 0
    for chunk in tokenize_stream(tok, read_text(train, normalizer, stats), workers,
                                 progress=progress, desc="train", directory=out):
        remap = np.empty(len(chunk.types) + 1, dtype=np.int32)
        remap[0] = 0
        for j, t in enumerate(chunk.types, start=1):
            g = type_index.get(t)
            if g is None:
                g = type_index[t] = len(types)
                types.append(t)
            remap[j] = g
        writer.write(remap[chunk.ids])
        lines += chunk.lines
        chars += chunk.characters
    type_stream = writer.close_raw()
    counts = np.zeros(len(types), dtype=np.int64)
    for s in range(0, len(type_stream), _COPY_CHUNK):
        counts += np.bincount(type_stream[s:s + _COPY_CHUNK], minlength=len(types))
    log(f"train: {lines} lines, {len(type_stream)} tokens, {len(types) - 1} (word, POS) "
        f"types, tokenized in {time.time() - t0:.1f}s")
    # ---- vocabulary
    type_counts = {types[g]: int(counts[g]) for g in range(1, len(types))}
    if tokenizer == "sentencepiece":
        # Every piece is an output, also those the training text never used
        # (byte-fallback pieces): the model can then spell anything itself.
        for piece in tok.pieces():
            type_counts.setdefault((piece, "piece"), 0)
    vec_fn = cluster_fn = None
    if rare in ("kmeans", "pos+kmeans"):
        vec_fn = _vector_source(vectors, type_stream, types, window=window,
                                context_words=context_words, dim=vector_dim, seed=seed,
                                log=log)
    elif rare == "exchange":
        cluster_fn = _exchange_source(type_stream, types, log)
    vocab = Vocabulary.build(
        type_counts, lines, vocab_size=vocab_size, rare=rare, buckets=buckets,
        pos_depth=pos_depth, seed=seed, vectors=vec_fn, clusters=cluster_fn,
        tokenizer_config=tok.to_dict(),
        normalizer_config=normalizer.to_dict(), single_char=(tokenizer == "char"),
        extra={"vectors": vectors if vec_fn else None})
    vocab.directory = os.path.abspath(out)
    vocab.tokenizer = tok
    with _writing(os.path.join(out, "vocab.json")):
        vocab.save(out)
    n_rare = len(vocab.rare_words)
    log(f"vocabulary: {len(vocab)} outputs ({len(vocab.word_to_id)} words, "
        f"{len(vocab.buckets)} buckets, </s>), {n_rare} rare words")

    # ---- map train through lookup tables over its types
    out_id = np.empty(len(types), dtype=np.int32)
    out_lp = np.zeros(len(types), dtype=np.float32)
    out_id[0] = vocab.eos_id
    for g in range(1, len(types)):
        out_id[g], out_lp[g] = vocab.lookup(*types[g])
    _npy_from(type_stream, os.path.join(out, "train.rare_logp.npy"), lambda c: out_lp[c])
    writer.finish(lambda c: out_id[c])
    bucket_tokens = int(sum(counts[g] for g in range(1, len(types))
                            if vocab.is_bucket(int(out_id[g]))))
    _write_meta(out, "train", int(counts.sum()), lines, chars, stats, source_name(train),
                vocab, bucket_tokens=bucket_tokens, unseen_tokens=0)
    del type_stream
    # ---- valid / test
    for split, path in (("valid", valid), ("test", test)):
        if path is None:
            continue
        _encode_split(vocab, tok, split, path, out, normalizer, workers, progress,
                      source_name(path))
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


def _sentences(type_stream, types: list) -> list:
    """The training text as lists of surface words, one a line."""
    surface = [None] + [t[0] for t in types[1:]]
    out, cur = [], []
    for s in range(0, len(type_stream), _COPY_CHUNK):
        for g in np.asarray(type_stream[s:s + _COPY_CHUNK]).tolist():
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


def _npy_from(raw, path, transform):
    dtype = transform(raw[:0]).dtype
    _write_npy(path, len(raw), dtype,
               (transform(np.asarray(raw[s:s + _COPY_CHUNK]))
                for s in range(0, len(raw), _COPY_CHUNK)))


def _encode_split(vocab, tok, split, path, out, normalizer, workers, progress, source):
    cache: dict = {}
    stats: dict = {}
    w_ids = _RawWriter(os.path.join(out, f"{split}.ids.npy"), np.int32)
    w_lp = _RawWriter(os.path.join(out, f"{split}.rare_logp.npy"), np.float32)
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


def _write_meta(out, split, tokens, lines, chars, stats, source, vocab, **extra):
    meta = {"tokens": int(tokens), "lines": int(lines), "characters": int(chars),
            "source": os.path.abspath(source), "invalid_utf8": int(stats.get("invalid_utf8", 0)),
            "tokenizer": vocab.tokenizer_config["type"], "rare": vocab.rare_mode,
            "vocab_size": len(vocab), **{k: int(v) for k, v in extra.items()}}
    path = os.path.join(out, f"{split}.meta.json")
    with _writing(path), open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qrnn_lm prepare",
        description="Tokenize a corpus and build a vocabulary with rare-word buckets.")
    src = p.add_argument_group("corpus (one of --train, --corpus, --wiki-dump)")
    src.add_argument("--train", help="training text, one paragraph a line (.txt/.gz/.bz2)")
    src.add_argument("--valid", help="validation text")
    src.add_argument("--test", help="test text")
    src.add_argument("--corpus", choices=["debian-ja"],
                     help="a named corpus extracted from installed files")
    src.add_argument("--wiki-dump", help="Wikipedia XML dump (.xml or .xml.bz2)")
    src.add_argument("--sample", type=int, default=1,
                     help="with --wiki-dump: take every n-th article (default 1: all)")
    src.add_argument("--heldout", type=float, default=None,
                     help="with --corpus/--wiki-dump: fraction of documents for valid and "
                          "for test each (default 0.05 debian-ja, 0.01 Wikipedia)")
    p.add_argument("--out", required=True,
                   help="output directory: new or empty (see --force); written only when complete")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out whole (the old dataset is deleted once the "
                        "new one is complete)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="mecab")
    p.add_argument("--vocab-size", type=int, default=50000,
                   help="kept words (sentencepiece: pieces); others go to buckets")
    p.add_argument("--rare", choices=RARE_MODES, default="pos+script",
                   help="rare-word buckets (default pos+script: by POS and character class)")
    p.add_argument("--buckets", type=int, default=None,
                   help="k-means clusters (total over POS groups for pos+kmeans), or "
                        "exchange classes")
    p.add_argument("--vectors", default="ppmi",
                   help="word vectors for k-means: ppmi (PPMI + SVD of the training text's "
                        "co-occurrences), fasttext (gensim FastText on the training text: "
                        "subword vectors), a word2vec/fastText .vec file, or a train.py "
                        "checkpoint or run directory (mean hidden state of the model before "
                        "each occurrence of the word); default ppmi")
    p.add_argument("--pos-depth", type=int, default=2, help="UniDic POS levels per bucket")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-nfkc", dest="nfkc", action="store_false",
                   help="skip Unicode NFKC normalisation")
    p.add_argument("--max-line-chars", type=int, default=4000,
                   help="split longer lines (default 4000)")
    p.add_argument("--window", type=int, default=2, help="context window for corpus vectors")
    p.add_argument("--context-words", type=int, default=5000,
                   help="context vocabulary for corpus vectors")
    p.add_argument("--vector-dim", type=int, default=64,
                   help="dimension of ppmi and fasttext vectors")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda _: _main(args), argv,
                       interrupted=f"error: interrupted; --out {args.out} is as it was before.",
                       out_of_memory="out of memory while preparing the data; use fewer --workers or a smaller --vocab-size.")


def _main(args) -> int:
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    sources = sum(x is not None for x in (args.train, args.corpus, args.wiki_dump))
    if sources != 1:
        raise QrnnLmError("give exactly one of --train, --corpus debian-ja or --wiki-dump.")
    train, valid, test = args.train, args.valid, args.test
    if args.corpus or args.wiki_dump:
        if valid or test:
            raise QrnnLmError("--valid/--test cannot be combined with --corpus or "
                              "--wiki-dump, which make their own splits.")
        h = args.heldout
        if h is not None and not 0 <= h < 0.5:
            raise QrnnLmError("--heldout must be in [0, 0.5).")
        if args.wiki_dump:
            check_input_file(args.wiki_dump, "--wiki-dump file")
    elif valid is None:
        raise QrnnLmError("--train needs --valid (and optionally --test).")
    settings = dict(tokenizer=args.tokenizer, vocab_size=args.vocab_size, rare=args.rare,
                    buckets=args.buckets, vectors=args.vectors, pos_depth=args.pos_depth,
                    workers=args.workers, seed=args.seed, nfkc=args.nfkc,
                    max_line_chars=args.max_line_chars, window=args.window,
                    context_words=args.context_words, vector_dim=args.vector_dim,
                    progress=not args.quiet, log=log)
    _check_settings(train, valid, test, **settings)
    TextNormalizer(max_line_chars=args.max_line_chars)  # checks the flag before any work
    inputs = {"--train": train, "--valid": valid, "--test": test,
              "--vectors": args.vectors, "--wiki-dump": args.wiki_dump}
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = (lambda message, *a, **k:
                                print(f"warning: {message}", file=sys.stderr))
        with staged_output(args.out, force=args.force, inputs=inputs, log=log) as tmp:
            if args.corpus or args.wiki_dump:
                from . import corpus as C
                cdir = os.path.join(tmp, "corpus")
                h = args.heldout
                if args.corpus:
                    h = 0.05 if h is None else h
                    paths = C.extract_debian_ja(cdir, valid_fraction=h, test_fraction=h,
                                                log=log)
                else:
                    h = 0.01 if h is None else h
                    paths = C.extract_wiki_dump(args.wiki_dump, cdir, sample=args.sample,
                                                valid_fraction=h, test_fraction=h, log=log)
                train, valid, test = paths["train"], paths.get("valid"), paths.get("test")
            _prepare_into(train, valid, test, tmp, final=args.out, **settings)
    return 0
