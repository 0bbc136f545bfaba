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
(:class:`qrnn_lm.spelling.SpellingModel`; one per POS group of buckets, fitted on the group's
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
- ``pos+script``: one bucket per POS prefix and character class of the word
  (kanji, hiragana, katakana, latin, digit, mixed, other:
  ``<unk-名詞-普通名詞-katakana>``);
- ``kmeans``: K faiss k-means clusters of word vectors (``<unk-k12>``,
  vectors and clustering in :mod:`qrnn_lm.wordvec`);
  rare words without a vector go to their POS bucket;
- ``pos+kmeans``: k-means within each POS bucket (``<unk-名詞-普通名詞-k3>``);
- ``exchange``: K classes of the exchange algorithm, which maximises the
  class-bigram likelihood of the training text (``<unk-k12>``,
  :func:`qrnn_lm.wordvec.exchange_clusters`).

Words never seen in training are placed by their spelling and POS: the
bucket that holds most training tokens of rare words sharing their (MeCab
unknown-word) POS prefix and character class, at the deepest POS depth that
has one; else sharing the POS prefix alone; else the largest bucket.  (A
vocabulary file without the ``unseen_bucket_by_pos_script`` table, written
before it existed, places by POS alone.)

Layout: the ``vocab.json`` format and its check are in
:mod:`qrnn_lm.vocab_format`, building from training counts in
:mod:`qrnn_lm.vocab_build` (:meth:`Vocabulary.build` delegates to it); this
module is the runtime vocabulary: loading, lookup and encoding, sampling and
decoding.
"""
from __future__ import annotations

import bisect
import math
import os
import random
from collections import defaultdict
from typing import Sequence

import numpy as np

from .errors import QrnnLmError
from .spelling import SpellingModel, script_of
from .vocab_build import build_vocab_dict
from .vocab_format import (check_vocab_dict, pos_prefix, read_vocab_file, script_key,
                           write_vocab_file)
# Re-exported: these lived here before the format, builder, vector and
# spelling code had modules of their own.
from .vocab_format import (EOS, FORMAT, RARE_MODES, VERSION,  # noqa: F401
                           vocab_dict_problem)
from .wordvec import ppmi_svd_vectors, read_vec_file  # noqa: F401


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
    Build one with :meth:`build` (``prepare`` does), load with :meth:`load`."""

    def __init__(self, d: dict, directory: str | None = None):
        self._check_dict(d)
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
        self.unseen_bucket_by_pos_script = {p: int(b) for p, b in
                                            d.get("unseen_bucket_by_pos_script", {}).items()}
        self.default_bucket = int(d["default_bucket"])
        self.spelling, self._bucket_spelling = _spelling_models(d)
        self._members = None
        self._tokenizer = None
        self._normalizer = None

    # -- loading, checking, saving ------------------------------------------
    # Every vocabulary a program uses comes through here: ``load`` (vocab.json)
    # and ``from_dict`` (checkpoints) both construct through ``__init__``,
    # which calls ``_check_dict`` (``vocab_format.check_vocab_dict``: format,
    # version and consistency, or one QrnnLmError sentence) before reading any field.
    _check_dict = staticmethod(check_vocab_dict)

    def to_dict(self) -> dict:
        """JSON-safe dict (for checkpoints); :meth:`from_dict` inverts it."""
        return self._dict

    @classmethod
    def from_dict(cls, d: dict, directory: str | None = None) -> "Vocabulary":
        return cls(d, directory)

    def save(self, path: str) -> None:
        """Write ``vocab.json`` (``path`` may be the dataset directory)."""
        write_vocab_file(self._dict, path)

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        """Load from ``vocab.json`` or a prepared dataset directory."""
        d, path = read_vocab_file(path)
        cls._check_dict(d, path)
        from .tokenizers import check_tokenizer_config
        check_tokenizer_config(d["tokenizer"], os.path.dirname(os.path.abspath(path)))
        try:
            return cls(d, os.path.dirname(os.path.abspath(path)))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise QrnnLmError(f"{path} is damaged or was edited by hand ({type(e).__name__}: "
                              f"{e}); prepare the dataset again.") from None

    # -- construction ------------------------------------------------------

    @classmethod
    def build(cls, type_counts: dict, n_lines: int, *, vocab_size: int, rare: str = "pos",
              buckets: int | None = None, pos_depth: int = 2, seed: int = 0,
              vectors=None, clusters=None, tokenizer_config: dict,
              normalizer_config: dict | None = None, single_char: bool = False,
              extra: dict | None = None) -> "Vocabulary":
        """Build from training counts: ``type_counts`` {(surface, pos): count},
        ``n_lines`` (the count of ``</s>``) and the settings, all explained,
        with the steps, at :func:`qrnn_lm.vocab_build.build_vocab_dict`."""
        return cls(build_vocab_dict(
            type_counts, n_lines, vocab_size=vocab_size, rare=rare, buckets=buckets,
            pos_depth=pos_depth, seed=seed, vectors=vectors, clusters=clusters,
            tokenizer_config=tokenizer_config, normalizer_config=normalizer_config,
            single_char=single_char, extra=extra))

    # -- basic API ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def size(self) -> int:
        return len(self.itos)

    def id_to_token(self, i: int) -> str:
        return self.itos[i]

    def is_bucket(self, i: int) -> bool:
        return bool(self._is_bucket[i])

    @property
    def bucket_mask(self) -> np.ndarray:
        """bool (len(self),): True at bucket ids (index it with an id array)."""
        return self._is_bucket

    @property
    def tokenizer(self):
        """The tokenizer of ``tokenizer_config`` (made on first use, with files
        from ``directory``), or the one set here (``prepare`` sets the one it
        trained, to not load it back)."""
        if self._tokenizer is None:
            from .tokenizers import tokenizer_from_dict
            self._tokenizer = tokenizer_from_dict(self.tokenizer_config, self.directory)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        self._tokenizer = tok

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
        if self.unseen_bucket_by_pos_script:
            sc = script_of(surface)
            for dpt in range(self.pos_depth, 0, -1):
                b = self.unseen_bucket_by_pos_script.get(script_key(pos_prefix(pos, dpt), sc))
                if b is not None:
                    return b
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

    def encode_lines(self, text: str, *, normalized: bool = False,
                     final_eos: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        """The one encode path: normalise ``text`` into lines (unless it is one
        line ``normalized`` already), tokenize and look up each line, ``</s>``
        between lines (and after the last with ``final_eos``).  Returns (ids
        int32 (n,), rare_logp float32 (n,), characters: the lines' lengths
        plus one newline each)."""
        lines = [text] if normalized else self.normalizer.lines(text.split("\n"))
        pairs, chars = [], 0
        for j, line in enumerate(lines):
            if j:
                pairs.append((self.eos_id, 0.0))
            pairs += [self.lookup(surface, pos) for surface, pos in self.tokenizer.tokenize(line)]
            chars += len(line) + 1
        if final_eos and chars:
            pairs.append((self.eos_id, 0.0))
        return (np.asarray([i for i, _ in pairs], dtype=np.int32),
                np.asarray([lp for _, lp in pairs], dtype=np.float32), chars)

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalise, tokenize and map ``text``: (ids int32 (n,), rare_logp float32 (n,)).
        No ``</s>`` is appended; a text of several lines gets ``</s>`` between
        its (non-empty, normalised) lines."""
        return self.encode_lines(text)[:2]

    def encode_normalized(self, line: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode` for one line that ``self.normalizer`` already
        produced (no second normalisation): tokenize and map it."""
        return self.encode_lines(line, normalized=True)[:2]

    def token_log_probs(self, output_log_probs, ids, rare_logp):
        """``output_log_probs[..., ids] + rare_logp``: log P of the actual
        tokens (:func:`token_log_probs`; ``rare_logp`` from the dataset or
        :meth:`encode`)."""
        return token_log_probs(output_log_probs, ids, rare_logp)

    # -- generation --------------------------------------------------------

    def members(self, bucket_id: int) -> tuple[list[str], np.ndarray]:
        """Training members of a bucket and the cumulative sum of their counts."""
        if self._members is None:
            self._members = _members_by_bucket(self.rare_words)
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


def _spelling_models(d: dict) -> tuple[SpellingModel, dict]:
    """The spelling model of all training types and {bucket id: the model of
    its POS group} (a bucket without one uses the first)."""
    spelling = SpellingModel.from_dict(d["spelling"])
    groups = {g: SpellingModel.from_dict(m, spelling)
              for g, m in d.get("group_spelling", {}).items()}
    return spelling, {b["id"]: groups[b["spelling"]] for b in d["buckets"]
                      if b.get("spelling") is not None and b["spelling"] in groups}


def _members_by_bucket(rare_words: dict) -> dict:
    """{bucket id: (its training members by descending count, then name;
    the cumulative sum of their counts)}."""
    tmp = defaultdict(list)
    for w, (b, c) in rare_words.items():
        tmp[b].append((w, c))
    members = {}
    for b, lst in tmp.items():
        lst.sort(key=lambda wc: (-wc[1], wc[0]))
        members[b] = ([w for w, _ in lst], np.cumsum([c for _, c in lst], dtype=np.int64))
    return members


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

