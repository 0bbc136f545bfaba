"""Corpus sources and text reading for ``prepare``, ``train --train`` and
``evaluate --file``.

- :mod:`.textio`: decoding (gzip/bzip2, UTF-8/16/32, damaged or binary input
  refused), :class:`TextNormalizer`, :func:`read_text`, :func:`read_lines`,
  deterministic document splits (:func:`split_of`) and their writer;
- :mod:`.sources`: the source interface, :data:`SOURCES` and
  :func:`source_from_flags`; the sources themselves:
  :class:`TextFiles` (:mod:`.text`), :class:`WikiDump` (:mod:`.wiki`,
  Wikipedia XML dumps) and :class:`DebianJa` (:mod:`.debian_ja`, Debian's
  Japanese documentation).
"""
from ..errors import QrnnLmError
from .debian_ja import (DEBIAN_JA_PACKAGES, DebianJa, debian_ja_files, extract_debian_ja,
                        roff_paragraphs)
from .sources import NAMED_CORPORA, SOURCES, Source, make_source, source_from_flags
from .text import TextFiles
from .textio import (SplitWriter, TextNormalizer, check_input_file, heldout_fraction, read_lines,
                     read_text, split_of)
from .wiki import (WIKI_LANGUAGES, WIKI_TEMPLATES, WikiDump, _WikiRenderer, extract_wiki_dump,
                   iter_wiki_articles, strip_wiki_markup)

__all__ = [
    "DEBIAN_JA_PACKAGES", "NAMED_CORPORA", "SOURCES", "WIKI_LANGUAGES", "WIKI_TEMPLATES",
    "DebianJa", "QrnnLmError", "Source", "SplitWriter", "TextFiles", "TextNormalizer",
    "WikiDump", "check_input_file", "debian_ja_files", "extract_debian_ja",
    "extract_wiki_dump", "heldout_fraction", "iter_wiki_articles", "make_source",
    "read_lines", "read_text", "roff_paragraphs", "source_from_flags", "split_of",
    "strip_wiki_markup",
]
