"""Wikipedia XML dumps as a corpus: articles streamed, wikitext rendered to prose.

The dump is read in one pass (:mod:`.wiki_read`: plain .xml/.bz2/.gz dumps
streamed, multistream dumps stream by stream through their index); worker
processes render each sampled article's wikitext to prose
(:mod:`.wiki_markup`: see :data:`WIKI_TEMPLATES`) and may tokenize the
train split at the same time (:mod:`.wiki_pipeline`).  The output is the
same whatever the number of workers.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterator

from ..errors import QrnnLmError
from . import wiki_pipeline
from .textio import TextNormalizer, check_input_file, heldout_fraction
from .wiki_markup import (WIKI_LANGUAGES, WIKI_TEMPLATES, _is_redirect, _WikiRenderer,
                          strip_wiki_markup)
from .wiki_read import DROP_NAMESPACE_KEYS, DumpReader, find_index, iter_pages

__all__ = ["WIKI_LANGUAGES", "WIKI_TEMPLATES", "WikiDump", "extract_wiki_dump",
           "iter_wiki_articles", "strip_wiki_markup", "_WikiRenderer", "_is_redirect"]


def iter_wiki_articles(path: str, sample: int = 1,
                       namespaces: set | None = None) -> Iterator[tuple[str, str]]:
    """Stream ``(title, wikitext)`` of every ``sample``-th article (main
    namespace, no redirects) of a MediaWiki XML dump (.xml, .xml.bz2,
    .xml.gz).  ``namespaces``, if given, receives the dump's names of the
    file, media and category namespaces (from <siteinfo>, before the first
    page)."""
    if sample < 1:
        raise QrnnLmError("--sample must be at least 1.")
    if not os.path.isfile(path):
        raise QrnnLmError(f"Wikipedia dump {path} does not exist.")
    reader = DumpReader(path)
    names: dict = {}
    index = 0
    try:
        for page in iter_pages(reader, names):
            if namespaces is not None:
                namespaces.update(names[k] for k in DROP_NAMESPACE_KEYS if k in names)
            if not page.is_article:
                continue
            if index % sample == 0:
                yield page.title, page.text
            index += 1
    finally:
        reader.close()


def extract_wiki_dump(path: str, out_dir: str, sample: int = 1, *,
                      valid_fraction: float = 0.01, test_fraction: float = 0.01,
                      normalizer: TextNormalizer | None = None, log=None,
                      stats: dict | None = None, workers: int = 1, index: str | None = None,
                      tokens: wiki_pipeline.Tokens | None = None,
                      progress: bool = False) -> dict:
    """Write the prose of every ``sample``-th article to ``out_dir/{split}.txt``
    (articles split by a hash of their title); returns {split: path}.

    ``workers`` processes render the articles (the output is the same for
    any number).  ``index``: the multistream index of the dump (default:
    found beside a ``*-multistream.xml.bz2`` by name; ``""``: none), whose
    streams the workers then read and decompress themselves; ``--sample``
    then takes every ``sample``-th main-namespace page of the index
    (redirects among them are skipped) and reads only their streams.
    ``tokens`` (:class:`.wiki_pipeline.Tokens`): tokenize the train lines
    too.  ``stats`` (a dict) receives ``articles``, ``lines`` and ``chars``
    written (and ``streams`` read, ``unparsable`` articles)."""
    if sample < 1:
        raise QrnnLmError("--sample must be at least 1.")
    if not os.path.isfile(path):
        raise QrnnLmError(f"Wikipedia dump {path} does not exist.")
    if index is None:
        index = find_index(path)
    paths, w, counts = wiki_pipeline.extract(
        path, out_dir, sample=sample, index=index or None, workers=workers,
        fractions=(valid_fraction, test_fraction), normalizer=normalizer or TextNormalizer(),
        tokens=tokens, log=log, progress=progress)
    n, failed = counts["articles"], counts["unparsable"]
    if stats is not None:
        stats.update(articles=n, lines=sum(w.lines.values()), chars=counts["chars"])
        if failed:
            stats["unparsable"] = failed
        if index:
            stats["streams"] = counts["streams"]
    if failed:
        msg = f"{path}: skipped {failed} article(s) whose wikitext could not be parsed."
        if log:
            log(f"warning: {msg}")
        else:
            warnings.warn(msg, stacklevel=2)
    if n == 0 or "train" not in paths:
        raise QrnnLmError(f"{path} yielded no article text; check that it is a MediaWiki "
                          "pages-articles dump.")
    if log:
        log(f"wikipedia: {n} articles -> " + ", ".join(f"{s} {w.lines[s]} lines" for s in paths))
    return paths


class WikiDump:
    """A Wikipedia dump as a corpus source (``prepare --wiki-dump FILE``): every
    ``sample``-th article, a ``heldout`` fraction of them (default 0.01) for
    valid and for test each.  ``index``: its multistream index
    (``--wiki-index``; default: found beside the dump by name).

    Besides ``extract``, it offers ``extract_tokens``: the extraction and the
    tokenization of the train split in one pass (``prepare`` uses it)."""

    def __init__(self, path: str, sample: int = 1, heldout: float | None = None,
                 index: str | None = None):
        self.path, self.sample = path, sample
        self.heldout = heldout_fraction(heldout, 0.01)
        self.index = index if index is not None else find_index(path)

    @property
    def inputs(self) -> dict:
        return {"--wiki-dump": self.path, **({"--wiki-index": self.index} if self.index else {})}

    def check(self) -> None:
        check_input_file(self.path, "--wiki-dump file")
        if self.index:
            check_input_file(self.index, "--wiki-index file")

    def extract(self, out_dir: str, *, log=None, workers: int = 1, progress: bool = False,
                tokens: wiki_pipeline.Tokens | None = None) -> dict:
        """The articles' prose in ``out_dir/{split}.txt``; returns {split: path}."""
        return extract_wiki_dump(self.path, out_dir, sample=self.sample,
                                 valid_fraction=self.heldout, test_fraction=self.heldout,
                                 log=log, workers=workers, index=self.index or "",
                                 tokens=tokens, progress=progress)

    def extract_tokens(self, out_dir: str, tokenizer, normalizer: TextNormalizer, consume, *,
                       log=None, workers: int = 1, progress: bool = False) -> dict:
        """``extract``, and the train split's lines (normalised by
        ``normalizer``) tokenized on the way: ``consume(TokenChunk)`` in order."""
        return self.extract(out_dir, log=log, workers=workers, progress=progress,
                            tokens=wiki_pipeline.Tokens(tokenizer, normalizer, consume))
