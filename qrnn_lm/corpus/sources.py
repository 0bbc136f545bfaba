"""Corpus sources: where ``prepare`` gets its train/valid/test text.

A source is an object with

- ``inputs``: {flag: path} of the files it reads (``prepare --force`` must
  not delete them);
- ``check()``: QrnnLmError if it cannot be read, before any work is done;
- ``extract(out_dir, *, log=None) -> {split: path}``: text files of one
  paragraph a line, "train" always among them; a source that makes its own
  text writes it into ``out_dir`` (``OUT/corpus/`` of the dataset).

A source may also offer (:class:`WikiDump` does) ``extract(..., workers=N,
progress=False)`` and ``extract_tokens(out_dir, tokenizer, normalizer,
consume, *, log, workers, progress)``, which hands the train split's
:class:`~qrnn_lm.tokenizers.TokenChunk` s to ``consume`` in order while it
extracts; ``prepare`` then tokenizes the train text in the same pass.

:data:`SOURCES` names them; :func:`source_from_flags` builds the one that
prepare's corpus flags give.
"""
from __future__ import annotations

from typing import Protocol

from ..errors import QrnnLmError
from .debian_ja import DebianJa
from .text import TextFiles
from .wiki import WikiDump


class Source(Protocol):
    inputs: dict

    def check(self) -> None: ...

    def extract(self, out_dir: str, *, log=None) -> dict: ...


#: kind -> the class of that source (its constructor takes the options).
SOURCES = {"text": TextFiles, "wiki": WikiDump, "debian-ja": DebianJa}
#: the sources ``prepare --corpus NAME`` names.
NAMED_CORPORA = ("debian-ja",)


def make_source(kind: str, **options) -> Source:
    """The source ``kind`` (a key of :data:`SOURCES`) with ``options``."""
    if kind not in SOURCES:
        raise QrnnLmError(f"unknown corpus source {kind!r}; choose one of {', '.join(SOURCES)}.")
    return SOURCES[kind](**options)


def source_from_flags(*, train: str | None = None, valid: str | None = None,
                      test: str | None = None, corpus: str | None = None,
                      wiki_dump: str | None = None, sample: int = 1,
                      heldout: float | None = None, wiki_index: str | None = None) -> Source:
    """The source of ``prepare``'s flags: exactly one of ``--train`` (with
    ``--valid``, optionally ``--test``), ``--corpus NAME`` or ``--wiki-dump``
    (those two make their own splits, ``--heldout`` of the documents;
    ``--wiki-index``: the dump's multistream index)."""
    if wiki_index is not None and wiki_dump is None:
        raise QrnnLmError("--wiki-index needs --wiki-dump (the dump it indexes).")
    if sum(x is not None for x in (train, corpus, wiki_dump)) != 1:
        raise QrnnLmError("give exactly one of --train, --corpus debian-ja or --wiki-dump.")
    if train is None:
        if valid or test:
            raise QrnnLmError("--valid/--test cannot be combined with --corpus or "
                              "--wiki-dump, which make their own splits.")
        if corpus is not None:
            return make_source(corpus, heldout=heldout)
        return make_source("wiki", path=wiki_dump, sample=sample, heldout=heldout,
                           index=wiki_index)
    if valid is None:
        raise QrnnLmError("--train needs --valid (and optionally --test).")
    return make_source("text", train=train, valid=valid, test=test)
