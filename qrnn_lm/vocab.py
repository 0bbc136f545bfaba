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

Layout of this module: loading and checking a vocabulary file
(:meth:`Vocabulary.load`, :meth:`Vocabulary.from_dict`, both through
:meth:`Vocabulary._check_dict`), then :meth:`Vocabulary.build` and its steps
(module-level ``_`` functions below the class), then the lookup API.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import random
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from .errors import QrnnLmError
from .spelling import SpellingModel, script_of
from .wordvec import allocate_clusters, kmeans_assign
# Re-exported: these lived here before the vector and spelling code had modules.
from .wordvec import ppmi_svd_vectors, read_vec_file  # noqa: F401

EOS = "</s>"
RARE_MODES = ("unk", "pos", "pos+script", "kmeans", "pos+kmeans", "exchange")
FORMAT = "qrnn_lm-vocab"
VERSION = 1


def pos_prefix(pos: str, depth: int) -> str:
    """``"名詞-固有名詞-地名-一般", 2 -> "名詞-固有名詞"``."""
    return "-".join(pos.split("-")[:depth])


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


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _spelling_problem(m, name: str) -> str | None:
    if not isinstance(m, dict) or not isinstance(m.get("char_counts"), dict):
        return f"{name} has no character counts"
    if not _is_count(m.get("n_types", 0)):
        return f"{name} has a type count that is not a whole number"
    for c, n in m["char_counts"].items():
        if not _is_count(n):
            return f"{name} has a count for {c!r} that is not a whole number ({n!r})"
    return None


def vocab_dict_problem(d: dict) -> str | None:
    """What is wrong with a vocabulary dict (``vocab.json``), in a few words,
    or None when it is consistent: field types, a single ``</s>``, unique
    tokens, whole non-negative counts, ``size`` equal to the number of
    tokens, every bucket reference an id of a bucket token, and each
    bucket's types and tokens equal to those of its rare words."""
    for key, kind in (("tokenizer", dict), ("normalizer", dict), ("rare", dict),
                      ("tokens", list), ("buckets", list), ("rare_words", dict),
                      ("unseen_bucket_by_pos", dict), ("spelling", dict)):
        if not isinstance(d.get(key), kind):
            return f"{key!r} is missing or not a JSON {'object' if kind is dict else 'list'}"
    if not isinstance(d["tokenizer"].get("type"), str):
        return "the tokenizer has no type"
    if d["rare"].get("mode") not in RARE_MODES:
        return f"rare-word mode {d['rare'].get('mode')!r} is not one of {', '.join(RARE_MODES)}"
    if not _is_count(d["rare"].get("pos_depth")):
        return "rare.pos_depth is not a whole number"
    tokens = d["tokens"]
    if not tokens:
        return "it has no tokens"
    seen, kinds = {}, []
    for i, t in enumerate(tokens):
        if not (isinstance(t, list) and len(t) == 3 and isinstance(t[0], str)):
            return f"token {i} is not a [name, count, kind] triple"
        if not _is_count(t[1]):
            return f"the count of token {t[0]!r} is not a whole number ({t[1]!r})"
        if t[2] not in ("word", "bucket", "special"):
            return f"token {t[0]!r} has the unknown kind {t[2]!r}"
        if t[0] in seen:
            return f"token {t[0]!r} appears twice (ids {seen[t[0]]} and {i})"
        seen[t[0]] = i
        kinds.append(t[2])
    if EOS not in seen or tokens[seen[EOS]][2] != "special":
        return f"it has no {EOS} token"
    if kinds.count("special") != 1:
        return f"it has {kinds.count('special')} special tokens, {EOS} should be the only one"
    size = d.get("size", len(tokens))
    if size != len(tokens):
        return f"'size' says {size!r} but it lists {len(tokens)} tokens"
    bucket_ids = {i for i, k in enumerate(kinds) if k == "bucket"}

    def bucket_ref(b, what):
        if not (_is_count(b) and b in bucket_ids):
            return f"{what} refers to {b!r}, which is not the id of a bucket token"
        return None

    listed = {}
    for b in d["buckets"]:
        if not isinstance(b, dict):
            return "a bucket entry is not a JSON object"
        bid = b.get("id")
        p = bucket_ref(bid, f"bucket {b.get('name')!r}")
        if p:
            return p
        if bid in listed:
            return f"bucket id {bid} is listed twice"
        if b.get("name") != tokens[bid][0]:
            return f"bucket {bid} is named {b.get('name')!r} but token {bid} is {tokens[bid][0]!r}"
        if not (_is_count(b.get("types")) and _is_count(b.get("tokens"))):
            return f"bucket {b.get('name')!r} has a size that is not a whole number"
        listed[bid] = b
    if set(listed) != bucket_ids:
        missing = sorted(bucket_ids - set(listed))[0]
        return f"bucket token {tokens[missing][0]!r} has no entry in 'buckets'"
    types, counts = Counter(), Counter()
    for w, v in d["rare_words"].items():
        if not (isinstance(v, list) and len(v) == 2):
            return f"rare word {w!r} is not a [bucket, count] pair"
        p = bucket_ref(v[0], f"rare word {w!r}")
        if p:
            return p
        if not _is_count(v[1]):
            return f"the count of rare word {w!r} is not a whole number ({v[1]!r})"
        if w in seen and kinds[seen[w]] == "word":
            return f"{w!r} is both a kept word and a rare word"
        types[v[0]] += 1
        counts[v[0]] += v[1]
    for bid, b in listed.items():
        if b["types"] != types[bid] or b["tokens"] != counts[bid] or tokens[bid][1] != counts[bid]:
            return (f"bucket {b['name']!r} says {b['types']} words and {b['tokens']} tokens "
                    f"(token count {tokens[bid][1]}) but its rare words are {types[bid]} with "
                    f"{counts[bid]} tokens")
    for pos, b in d["unseen_bucket_by_pos"].items():
        p = bucket_ref(b, f"the unseen-word bucket of {pos!r}")
        if p:
            return p
    p = bucket_ref(d.get("default_bucket"), "default_bucket")
    if p:
        return p
    p = _spelling_problem(d["spelling"], "the spelling model")
    if p:
        return p
    groups = d.get("group_spelling", {})
    if not isinstance(groups, dict):
        return "'group_spelling' is not a JSON object"
    for g, m in groups.items():
        p = _spelling_problem(m, f"the spelling model of {g!r}")
        if p:
            return p
    return None


class Vocabulary:
    """Output vocabulary of a language model (see the module docstring).

    Build one with :meth:`build` (``prepare`` does), load with :meth:`load`.
    """

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
        self.spelling = SpellingModel.from_dict(d["spelling"])
        groups = {g: SpellingModel.from_dict(m, self.spelling)
                  for g, m in d.get("group_spelling", {}).items()}
        self._bucket_spelling = {b["id"]: groups[b["spelling"]] for b in d["buckets"]
                                 if b.get("spelling") is not None and b["spelling"] in groups}
        self._members = None
        self._tokenizer = None
        self._normalizer = None

    # -- loading, checking, saving ------------------------------------------
    # Every vocabulary a program uses comes through here: ``load`` (vocab.json)
    # and ``from_dict`` (checkpoints) both construct through ``__init__``,
    # which calls ``_check_dict`` before reading any field.

    @staticmethod
    def _check_dict(d: dict, where: str = "the vocabulary",
                    advice: str = "prepare the dataset again (`python -m qrnn_lm prepare --force`)"
                    ) -> None:
        """Raise QrnnLmError unless ``d`` is a vocabulary this version reads
        and is consistent in itself (see :func:`vocab_dict_problem`)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise QrnnLmError(f"{where} is not a qrnn_lm vocabulary; run "
                              "`python -m qrnn_lm prepare` to make one.")
        version = d.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise QrnnLmError(f"{where} is damaged: its version is not a whole number; "
                              "prepare the dataset again.")
        if version > VERSION:
            raise QrnnLmError(f"vocabulary format version {d['version']} is newer than this "
                              "qrnn_lm understands; upgrade qrnn_lm.")
        problem = vocab_dict_problem(d)
        if problem:
            raise QrnnLmError(f"{where} is damaged or was edited by hand: {problem}; {advice}.")

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
            with open(path, encoding="utf-8-sig") as f:   # a BOM from an editor is fine
                d = json.load(f)
        except FileNotFoundError:
            raise QrnnLmError(f"no vocabulary at {path}; run `python -m qrnn_lm prepare` "
                              "first.") from None
        except IsADirectoryError:
            raise QrnnLmError(f"{path} is a directory, not a vocabulary file.") from None
        except OSError as e:
            raise QrnnLmError(f"cannot read {path} ({e.strerror or e}).") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise QrnnLmError(f"{path} is not a valid vocabulary file ({e}).") from None
        cls._check_dict(d, path)
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
        """Build from training counts.

        ``type_counts``: {(surface, pos): count} over the training split.
        ``n_lines``: number of training lines (the count of ``</s>``).
        ``vectors``: for k-means, a callable ``f(rare_words: list[str]) ->
        (float32 (n, d), has_vector bool (n,))`` (see :mod:`qrnn_lm.wordvec`).
        ``clusters``: for ``exchange``, a callable ``f(rare_words, k) -> int
        labels in [0, k)``.
        """
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
            "buckets": [{"id": bid[k], "name": table.name(k), "pos": k[0],
                         "cluster": table.cluster(k),
                         "types": table.types[k], "tokens": table.tokens[k],
                         "spelling": (k[0] or "") if (k[0] or "") in group_spelling else None}
                        for k in table.keys],
            "group_spelling": group_spelling,
            "unseen_bucket_by_pos": unseen,
            "unseen_bucket_by_pos_script": unseen_script,
            "default_bucket": bid[default],
            "rare_words": {w: [bid[bucket_of[w]], word_count[w]] for w in rare_list},
            "spelling": spelling.to_dict(),
        }
        if extra:
            d.update(extra)
        return cls(d)

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
                b = self.unseen_bucket_by_pos_script.get(_script_key(pos_prefix(pos, dpt), sc))
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

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Normalise, tokenize and map ``text``: (ids int32 (n,), rare_logp float32 (n,)).

        No ``</s>`` is appended; a text of several lines gets ``</s>`` between
        its (non-empty, normalised) lines.
        """
        ids, lps = [], []
        for j, line in enumerate(self.normalizer.lines(text.split("\n"))):
            if j:
                ids.append(self.eos_id)
                lps.append(0.0)
            for surface, pos in self.tokenizer.tokenize(line):
                i, lp = self.lookup(surface, pos)
                ids.append(i)
                lps.append(lp)
        return np.asarray(ids, dtype=np.int32), np.asarray(lps, dtype=np.float32)

    def encode_normalized(self, line: str) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`encode` for one line that ``self.normalizer`` already
        produced (no second normalisation): tokenize and map it."""
        ids, lps = [], []
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


# --------------------------------------------------------------------------
# Steps of Vocabulary.build
# --------------------------------------------------------------------------

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
                by_script[_script_key(pos_prefix(p, dpt), sc)][bid[k]] += word_count[w]

    def most(counters):
        return {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0]
                for p, c in sorted(counters.items())}
    default = max(table.keys, key=lambda k: (table.tokens[k], -bid[k]))
    return most(by_script), most(by_prefix), default


def _script_key(prefix: str, script: str) -> str:
    return f"{prefix}|{script}"


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
