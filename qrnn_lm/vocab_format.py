"""The ``vocab.json`` format: its constants, the keys of its unseen-word
tables, the consistency check every vocabulary passes before it is used
(:func:`check_vocab_dict`, :func:`vocab_dict_problem`) and the readable
writer.  Shared by the runtime :class:`qrnn_lm.vocab.Vocabulary` and the
builder :mod:`qrnn_lm.vocab_build`, which import it and not each other's
internals."""
from __future__ import annotations

import json
import os
from collections import Counter

from .errors import QrnnLmError

EOS = "</s>"
RARE_MODES = ("unk", "pos", "pos+script", "kmeans", "pos+kmeans", "exchange")
FORMAT = "qrnn_lm-vocab"
VERSION = 1
MAX_POS_DEPTH = 16        # POS paths have 4 levels (UniDic) or 2 (char); a bound for loops over them
MAX_COUNT = 1 << 53       # no corpus has this many tokens; larger numbers are crafted
MAX_SPELLING_LENGTH = 1000  # mean characters of a spelled rare word: sampling runs that long

_FIELDS = (("tokenizer", dict), ("normalizer", dict), ("rare", dict), ("tokens", list),
           ("buckets", list), ("rare_words", dict), ("unseen_bucket_by_pos", dict),
           ("spelling", dict))


def pos_prefix(pos: str, depth: int) -> str:
    """``"名詞-固有名詞-地名-一般", 2 -> "名詞-固有名詞"``."""
    return "-".join(pos.split("-")[:depth])


def script_key(prefix: str, script: str) -> str:
    """Key of ``unseen_bucket_by_pos_script``: ``"名詞-普通名詞|katakana"``."""
    return f"{prefix}|{script}"


# -- checking ----------------------------------------------------------------

def check_vocab_dict(d: dict, where: str = "the vocabulary",
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
        raise QrnnLmError(f"{where} has vocabulary format version {d['version']}, newer than the version "
                          f"{VERSION} this qrnn_lm understands; upgrade qrnn_lm.")
    problem = vocab_dict_problem(d)
    if problem:
        raise QrnnLmError(f"{where} is damaged or was edited by hand: {problem}; {advice}.")


def vocab_dict_problem(d: dict) -> str | None:
    """What is wrong with a vocabulary dict (``vocab.json``), in a few words,
    or None when it is consistent: field types, a single ``</s>``, unique
    tokens, whole non-negative counts, ``size`` equal to the number of
    tokens, every bucket reference an id of a bucket token, and each
    bucket's types and tokens equal to those of its rare words."""
    problem = _fields_problem(d) or _tokens_problem(d)
    if problem:
        return problem
    bucket_ids = {i for i, t in enumerate(d["tokens"]) if t[2] == "bucket"}
    return (_buckets_problem(d, bucket_ids) or _rare_words_problem(d, bucket_ids)
            or _unseen_problem(d, bucket_ids) or _spelling_problems(d))


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_COUNT


def _bucket_ref_problem(b, bucket_ids: set, what: str) -> str | None:
    if not (_is_count(b) and b in bucket_ids):
        return f"{what} refers to {b!r}, which is not the id of a bucket token"
    return None


def _fields_problem(d: dict) -> str | None:
    """Top-level field types, the tokenizer type and the rare-word settings."""
    for key, kind in _FIELDS:
        if not isinstance(d.get(key), kind):
            return f"{key!r} is missing or not a JSON {'object' if kind is dict else 'list'}"
    if not isinstance(d["tokenizer"].get("type"), str):
        return "the tokenizer has no type"
    if d["rare"].get("mode") not in RARE_MODES:
        return f"rare-word mode {d['rare'].get('mode')!r} is not one of {', '.join(RARE_MODES)}"
    if not _is_count(d["rare"].get("pos_depth")):
        return "rare.pos_depth is not a whole number"
    if d["rare"]["pos_depth"] > MAX_POS_DEPTH:
        return f"rare.pos_depth is {d['rare']['pos_depth']}, more than the {MAX_POS_DEPTH} levels any POS has"
    return None


def _tokens_problem(d: dict) -> str | None:
    """[name, count, kind] triples, unique names, one ``</s>``, ``size``."""
    tokens = d["tokens"]
    if not tokens:
        return "it has no tokens"
    seen = {}
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
    if EOS not in seen or tokens[seen[EOS]][2] != "special":
        return f"it has no {EOS} token"
    n_special = sum(t[2] == "special" for t in tokens)
    if n_special != 1:
        return f"it has {n_special} special tokens, {EOS} should be the only one"
    size = d.get("size", len(tokens))
    if size != len(tokens):
        return f"'size' says {size!r} but it lists {len(tokens)} tokens"
    return None


def _buckets_problem(d: dict, bucket_ids: set) -> str | None:
    """One well-formed ``buckets`` entry per bucket token, named as it."""
    tokens, listed = d["tokens"], set()
    for b in d["buckets"]:
        if not isinstance(b, dict):
            return "a bucket entry is not a JSON object"
        bid = b.get("id")
        p = _bucket_ref_problem(bid, bucket_ids, f"bucket {b.get('name')!r}")
        if p:
            return p
        if bid in listed:
            return f"bucket id {bid} is listed twice"
        if b.get("name") != tokens[bid][0]:
            return f"bucket {bid} is named {b.get('name')!r} but token {bid} is {tokens[bid][0]!r}"
        if not (_is_count(b.get("types")) and _is_count(b.get("tokens"))):
            return f"bucket {b.get('name')!r} has a size that is not a whole number"
        listed.add(bid)
    if listed != bucket_ids:
        missing = sorted(bucket_ids - listed)[0]
        return f"bucket token {tokens[missing][0]!r} has no entry in 'buckets'"
    return None


def _rare_words_problem(d: dict, bucket_ids: set) -> str | None:
    """Well-formed rare words, none of them kept, summing to their buckets' sizes."""
    tokens = d["tokens"]
    kept = {t[0] for t in tokens if t[2] == "word"}
    types, counts = Counter(), Counter()
    for w, v in d["rare_words"].items():
        if not (isinstance(v, list) and len(v) == 2):
            return f"rare word {w!r} is not a [bucket, count] pair"
        p = _bucket_ref_problem(v[0], bucket_ids, f"rare word {w!r}")
        if p:
            return p
        if not _is_count(v[1]):
            return f"the count of rare word {w!r} is not a whole number ({v[1]!r})"
        if w in kept:
            return f"{w!r} is both a kept word and a rare word"
        types[v[0]] += 1
        counts[v[0]] += v[1]
    for b in d["buckets"]:
        bid = b["id"]
        if b["types"] != types[bid] or b["tokens"] != counts[bid] or tokens[bid][1] != counts[bid]:
            return (f"bucket {b['name']!r} says {b['types']} words and {b['tokens']} tokens "
                    f"(token count {tokens[bid][1]}) but its rare words are {types[bid]} with "
                    f"{counts[bid]} tokens")
    return None


def _unseen_problem(d: dict, bucket_ids: set) -> str | None:
    for pos, b in d["unseen_bucket_by_pos"].items():
        p = _bucket_ref_problem(b, bucket_ids, f"the unseen-word bucket of {pos!r}")
        if p:
            return p
    return _bucket_ref_problem(d.get("default_bucket"), bucket_ids, "default_bucket")


def _spelling_problems(d: dict) -> str | None:
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


def _spelling_problem(m, name: str) -> str | None:
    if not isinstance(m, dict) or not isinstance(m.get("char_counts"), dict):
        return f"{name} has no character counts"
    if not _is_count(m.get("n_types", 0)):
        return f"{name} has a type count that is not a whole number"
    for c, n in m["char_counts"].items():
        if not _is_count(n):
            return f"{name} has a count for {c!r} that is not a whole number ({n!r})"
    if not isinstance(m.get("single_char", False), bool):
        return f"{name} has a single_char flag that is not true or false"
    total, types = sum(m["char_counts"].values()), m.get("n_types", 0)
    if not m.get("single_char") and (types > total + 1 or total + 2 > MAX_SPELLING_LENGTH * (types + 1)):
        return (f"{name} has {types} types of {total} characters in all, which no words have "
                f"(at most {MAX_SPELLING_LENGTH} characters a word on average)")
    return None


# -- reading and writing -----------------------------------------------------

def read_vocab_file(path: str) -> tuple[dict, str]:
    """(the JSON of ``vocab.json``, its path) from the file or a prepared
    dataset directory; unreadable files are one QrnnLmError sentence.  The
    dict is not checked yet (:func:`check_vocab_dict`)."""
    if os.path.isdir(path):
        path = os.path.join(path, "vocab.json")
    try:
        with open(path, encoding="utf-8-sig") as f:   # a BOM from an editor is fine
            return json.load(f), path
    except FileNotFoundError:
        raise QrnnLmError(f"no vocabulary at {path}; run `python -m qrnn_lm prepare` "
                          "first.") from None
    except IsADirectoryError:
        raise QrnnLmError(f"{path} is a directory, not a vocabulary file.") from None
    except OSError as e:
        raise QrnnLmError(f"cannot read {path} ({e.strerror or e}).") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QrnnLmError(f"{path} is not a valid vocabulary file ({e}).") from None


def write_vocab_file(d: dict, path: str) -> None:
    """Write ``d`` as ``vocab.json`` (``path`` may be the dataset directory),
    through a temporary file so a reader never sees half of it."""
    if os.path.isdir(path):
        path = os.path.join(path, "vocab.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        dump_readable(d, f)
    os.replace(tmp, path)


def dump_readable(d: dict, f) -> None:
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
