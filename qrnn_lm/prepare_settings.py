"""What ``prepare`` is asked to do: :class:`PrepareSettings`, their check
before any work, and the command-line flags that fill them."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Callable

from .corpus import NAMED_CORPORA, TextNormalizer, check_input_file
from .errors import QrnnLmError
from .tokenizers import TOKENIZERS
from .vocab import RARE_MODES
from .wordvec import VECTOR_KINDS


@dataclass
class PrepareSettings:
    """How a corpus is prepared: the ``prepare`` flags of the same names."""
    tokenizer: str = "mecab"         # mecab, char or sentencepiece
    vocab_size: int = 50000          # kept words (sentencepiece: pieces); others go to buckets
    rare: str = "pos+script"         # how rare words are put in buckets (vocab.RARE_MODES)
    buckets: int | None = None       # k-means clusters or exchange classes
    vectors: str | None = None       # word vectors for k-means (None: ppmi)
    pos_depth: int = 2               # UniDic POS levels per bucket
    workers: int = 1                 # tokenizer and extraction processes (at most the usable CPUs)
    seed: int = 0
    nfkc: bool = True                # Unicode NFKC normalisation of every line
    max_line_chars: int = 4000       # longer lines are split
    window: int = 2                  # context window for corpus vectors
    context_words: int = 5000        # context vocabulary for corpus vectors
    vector_dim: int = 64             # dimension of ppmi and fasttext vectors
    progress: bool = False           # progress bars on stderr
    log: Callable | None = None      # log(message) for the progress lines


def check_settings(source, s: PrepareSettings) -> None:
    """QrnnLmError for a bad setting or an unreadable input of ``source`` (a
    corpus source), before any work."""
    if s.rare not in RARE_MODES:
        raise QrnnLmError(f"unknown --rare {s.rare!r}; choose one of {', '.join(RARE_MODES)}.")
    if s.rare in ("kmeans", "pos+kmeans", "exchange") and not s.buckets:
        raise QrnnLmError(f"--rare {s.rare} needs --buckets K.")
    vectors = s.vectors or "ppmi"
    if s.workers < 1:
        raise QrnnLmError("--workers must be at least 1.")
    for flag, value in (("--buckets", s.buckets), ("--window", s.window),
                        ("--context-words", s.context_words), ("--vector-dim", s.vector_dim)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise QrnnLmError(f"{flag} must be a whole number of at least 1, not {value!r}.")
    source.check()
    if vectors not in VECTOR_KINDS:
        if not os.path.exists(vectors):
            raise QrnnLmError(f"--vectors {vectors} is neither {' nor '.join(VECTOR_KINDS)} nor an "
                              "existing .vec file, checkpoint or run directory.")
        if not os.path.isdir(vectors):  # a run directory is resolved to its checkpoint later
            check_input_file(vectors, "--vectors file")
    TextNormalizer(max_line_chars=s.max_line_chars)  # checks --max-line-chars


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m qrnn_lm prepare",
        description="Tokenize a corpus and build a vocabulary with rare-word buckets.")
    src = p.add_argument_group("corpus (one of --train, --corpus, --wiki-dump)")
    src.add_argument("--train", help="training text, one paragraph a line (.txt/.gz/.bz2)")
    src.add_argument("--valid", help="validation text")
    src.add_argument("--test", help="test text")
    src.add_argument("--corpus", choices=NAMED_CORPORA,
                     help="a named corpus extracted from installed files")
    src.add_argument("--wiki-dump", help="Wikipedia XML dump (.xml or .xml.bz2)")
    src.add_argument("--wiki-index",
                     help="with --wiki-dump: its multistream index (offset:page_id:title "
                          "lines); the dump's streams are then read and decompressed by the "
                          "--workers in parallel, and --sample reads only the streams it "
                          "needs (default: X-multistream-index.txt.bz2 beside "
                          "X-multistream.xml.bz2, if there)")
    src.add_argument("--sample", type=int, default=1,
                     help="with --wiki-dump: take every n-th article (default 1: all; with an "
                          "index: every n-th main-namespace page of the index, redirects "
                          "among them skipped)")
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
    p.add_argument("--workers", type=int, default=1,
                   help="processes for tokenizing and for --wiki-dump extraction")
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

