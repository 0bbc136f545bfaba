"""Spelling model: a distribution over all non-empty strings, for words a
bucket has not seen in training (see :mod:`qrnn_lm.vocab`)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable

import numpy as np

_NUM_CODEPOINTS = 0x110000


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


# Character classes of a word's spelling, for placing words by their script.
SCRIPTS = ("kanji", "hiragana", "katakana", "latin", "digit", "mixed", "other")


def _char_script(c: str) -> str:
    o = ord(c)
    if 0x3040 <= o <= 0x309F:
        return "hiragana"
    if 0x30A0 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F:
        return "katakana"
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or o in (0x3005, 0x3006):
        return "kanji"  # 々 and 〆 repeat or abbreviate kanji
    if c.isdigit():
        return "digit"
    if c.isascii() and c.isalpha() or 0xC0 <= o <= 0x24F:
        return "latin"
    return "other"


def script_of(word: str) -> str:
    """The character class of ``word``: one of :data:`SCRIPTS`.  A word of one
    class is that class; kanji with hiragana (送り仮名: 食べ, 美しい) is kanji;
    anything else that mixes classes is ``mixed``."""
    kinds = {_char_script(c) for c in word}
    if len(kinds) == 1:
        return kinds.pop()
    if kinds == {"kanji", "hiragana"}:
        return "kanji"
    return "mixed" if kinds else "other"
