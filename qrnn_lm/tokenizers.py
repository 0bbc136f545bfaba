"""Tokenizers: ``mecab`` (fugashi + unidic-lite), ``sentencepiece`` and ``char``.

Every tokenizer turns one normalised line into a list of ``(surface, pos)``
pairs and back:

    tok.tokenize(line) -> list[(surface: str, pos: str)]
    tok.detokenize(list_of_surfaces) -> str
    tok.to_dict() / tokenizer_from_dict(d, directory)

``pos`` is a "-"-joined part-of-speech path used by the rare-word buckets:
UniDic ``pos1-pos2-pos3-pos4`` for MeCab (``*`` levels dropped; MeCab's
unknown-word POS for words outside its dictionary), the Unicode general
category + name for ``char`` (``Lo-CJK``, ``Nd-DIGIT`` ...), ``piece`` for sentencepiece.

Whitespace is part of the text a model must predict (bits per character
count it), so the MeCab tokenizer emits a ``" "`` token (POS ``空白``) where
the text had a space before a token; ``"".join(surfaces)`` then restores the
line exactly, which is also the detokenizer.

``tokenize_stream`` runs a tokenizer over many lines in worker processes
(one tokenizer, e.g. one MeCab ``Tagger``, per worker: Taggers cannot be
pickled) and yields compact chunks of type ids, so a large corpus never sits
in RAM as Python strings.
"""
from __future__ import annotations

import base64
import binascii
import collections
import multiprocessing
import os
import re
import signal
import stat
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from .errors import QrnnLmError

TOKENIZERS = ("mecab", "sentencepiece", "char")
SPACE_POS = "空白"
MAX_MODEL_BYTES = 64 << 20   # a tokenizer model file (sentencepiece: ~1 MB at 32k pieces)


class MecabTokenizer:
    """MeCab with the UniDic-lite dictionary through fugashi."""

    name = "mecab"

    def __init__(self):
        try:
            import fugashi
        except ImportError as e:  # pragma: no cover - depends on the install
            raise QrnnLmError("the mecab tokenizer needs fugashi and unidic-lite: "
                              "pip install fugashi unidic-lite.") from e
        try:
            import unidic_lite
            self._tagger = fugashi.Tagger(f"-d {unidic_lite.DICDIR}")
        except ImportError:
            try:
                self._tagger = fugashi.Tagger()
            except Exception as e:  # pragma: no cover
                raise QrnnLmError("MeCab found no dictionary; install one with "
                                  "pip install unidic-lite.") from e

    def tokenize(self, line: str) -> list[tuple[str, str]]:
        out = []
        for node in self._tagger(line):
            if node.white_space:
                out.append((" ", SPACE_POS))
            # feature_raw is the CSV UniDic record; the first four fields are
            # pos1..pos4. Splitting it is cheaper than building the namedtuple.
            pos = [p for p in node.feature_raw.split(",", 4)[:4] if p != "*"]
            out.append((node.surface, "-".join(pos) or "*"))
        return out

    def detokenize(self, surfaces: Iterable[str]) -> str:
        return "".join(surfaces)

    def to_dict(self) -> dict:
        return {"type": "mecab", "dictionary": "unidic-lite"}


class CharTokenizer:
    """One token per character.  Its "POS" is the Unicode general category
    and the first word of the character's name (``Lo-CJK``, ``Lo-HIRAGANA``,
    ``Nd-DIGIT``), so rare-character buckets separate kanji from kana."""

    name = "char"

    def __init__(self):
        self._pos: dict = {}

    def _char_pos(self, c: str) -> str:
        p = self._pos.get(c)
        if p is None:
            name = unicodedata.name(c, "").split(" ", 1)[0]
            p = self._pos[c] = f"{unicodedata.category(c)}-{name}" if name else unicodedata.category(c)
        return p

    def tokenize(self, line: str) -> list[tuple[str, str]]:
        pos = self._char_pos
        return [(c, pos(c)) for c in line]

    def detokenize(self, surfaces: Iterable[str]) -> str:
        return "".join(surfaces)

    def to_dict(self) -> dict:
        return {"type": "char"}


class SentencePieceTokenizer:
    """A sentencepiece unigram model (trained by :func:`train_sentencepiece`)."""

    name = "sentencepiece"

    def __init__(self, model_file: str | None = None, model_proto: bytes | None = None, *,
                 where: str | None = None):
        import sentencepiece as spm
        if model_proto is None:
            if not model_file or not os.path.exists(model_file):
                raise QrnnLmError(f"sentencepiece model {model_file} is missing; "
                                  "prepare the dataset again.")
            model_proto = _read_bounded(model_file)
        self.model_file = model_file or "sentencepiece.model"
        self.model_proto = model_proto
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except Exception:  # garbage bytes: sentencepiece raises whatever its parser says
            raise QrnnLmError(f"the sentencepiece tokenizer model in {where or model_file} is damaged "
                              "(not a sentencepiece model); prepare the dataset or train again.") from None

    def tokenize(self, line: str) -> list[tuple[str, str]]:
        return [(p, "piece") for p in self._sp.encode(line, out_type=str)]

    def detokenize(self, surfaces: Iterable[str]) -> str:
        return self._sp.decode_pieces(list(surfaces))

    def pieces(self) -> list[str]:
        """The pieces encode() can produce (not <s>, </s>, <unk>)."""
        sp = self._sp
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                if not (sp.is_control(i) or sp.is_unknown(i))]

    def to_dict(self) -> dict:
        # The model travels inside the dict so a checkpoint is self-contained.
        return {"type": "sentencepiece", "model_file": os.path.basename(self.model_file),
                "model_proto": base64.b64encode(self.model_proto).decode("ascii")}


def train_sentencepiece(lines: Iterable[str], model_prefix: str, vocab_size: int,
                        seed: int = 0, threads: int = 1) -> SentencePieceTokenizer:
    """Train a unigram model on normalised training lines.

    character_coverage 0.9995 and byte fallback: characters outside the
    coverage become UTF-8 byte pieces, so no input is ever unknown.  The text is
    already NFKC-normalised by the corpus reader, so sentencepiece's own
    normalisation is switched off (``identity``) and whitespace is kept as is,
    which makes ``decode(encode(line)) == line``.
    """
    import sentencepiece as spm
    # sentencepiece samples its training sentences with its own RNG; the seed
    # keeps the model reproducible.
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=model_prefix,
            vocab_size=vocab_size, model_type="unigram",
            character_coverage=0.9995, byte_fallback=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            input_sentence_size=2_000_000, shuffle_input_sentence=True,
            max_sentence_length=1 << 16, num_threads=threads,
            unk_surface="\u2047", minloglevel=2,
            # EM over ~1M seed pieces dominates training time; fewer seeds and
            # faster shrinking train 3x faster on the 10 MB debian-ja corpus
            # with no loss (valid: 89.6k vs 89.9k pieces at 8000).
            seed_sentencepiece_size=min(1_000_000, max(100_000, 20 * vocab_size)),
            shrinking_factor=0.5,
            # a small corpus may not support vocab_size pieces: take fewer
            hard_vocab_limit=False)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1]
        m = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
        if m:
            raise QrnnLmError(f"--vocab-size {vocab_size} is too small for sentencepiece with "
                              f"byte fallback on this corpus; use at least {m.group(1)}.") from e
        raise QrnnLmError(f"sentencepiece training failed ({msg}).") from e
    return SentencePieceTokenizer(model_prefix + ".model")


def tokenizer_from_dict(d: dict, directory: str | None = None, *, where: str | None = None):
    """Rebuild a tokenizer from ``to_dict()``; files are looked up in
    ``directory`` and must lie inside it (:func:`tokenizer_model_path`).
    ``where`` names the file the dict came from, for error messages."""
    kind = d.get("type")
    if kind == "mecab":
        return MecabTokenizer()
    if kind == "char":
        return CharTokenizer()
    if kind == "sentencepiece":
        if "model_proto" in d:
            return SentencePieceTokenizer(d.get("model_file"), _embedded_model(d["model_proto"], where),
                                          where=where)
        return SentencePieceTokenizer(tokenizer_model_path(d.get("model_file"), directory), where=where)
    raise QrnnLmError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}.")


def check_tokenizer_config(d: dict, directory: str | None = None) -> None:
    """Check, without opening anything, that the model file a tokenizer
    config names (if any, and not embedded) is a safe file of ``directory``."""
    if isinstance(d, dict) and d.get("type") == "sentencepiece" and "model_proto" not in d:
        tokenizer_model_path(d.get("model_file"), directory)


def tokenizer_model_path(name, directory: str | None) -> str:
    """The path of the tokenizer model file ``name`` that a vocabulary names,
    checked before anything opens it: a relative path inside ``directory``
    (no absolute path, no ``..``, no symlink out of it), a regular file of at
    most ``MAX_MODEL_BYTES``.  Anything else is one QrnnLmError sentence."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise QrnnLmError(f"the tokenizer model file {name!r} named by the vocabulary is not a file name; "
                          "prepare the dataset again.")
    advice = "a vocabulary may only name a file inside its own directory; prepare the dataset again"
    if os.path.isabs(name) or ".." in re.split(r"[\\/]", name):
        raise QrnnLmError(f"the tokenizer model file {name} is refused: absolute paths and '..' are not "
                          f"allowed ({advice}).")
    base = os.path.realpath(directory or ".")
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise QrnnLmError(f"the tokenizer model file {name} is refused: it leads outside {base} ({advice}).")
    try:
        st = os.stat(path)
    except OSError:
        raise QrnnLmError(f"sentencepiece model {os.path.join(base, name)} is missing; "
                          "prepare the dataset again.") from None
    if not stat.S_ISREG(st.st_mode):
        raise QrnnLmError(f"the tokenizer model file {name} is refused: it is not a regular file ({advice}).")
    if st.st_size > MAX_MODEL_BYTES:
        raise QrnnLmError(f"the tokenizer model file {name} is refused: it has {st.st_size} bytes, more than "
                          f"the {MAX_MODEL_BYTES >> 20} MiB a tokenizer model may have.")
    return path


def _read_bounded(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise QrnnLmError(f"cannot read the tokenizer model {path} ({e.strerror or e}).") from None
    if len(data) > MAX_MODEL_BYTES:
        raise QrnnLmError(f"the tokenizer model file {path} is refused: it has more than "
                          f"{MAX_MODEL_BYTES >> 20} MiB.")
    return data


def _embedded_model(proto, where: str | None) -> bytes:
    """The bytes of a tokenizer model embedded (base64) in a vocabulary."""
    where = where or "the vocabulary"
    if not isinstance(proto, str) or len(proto) > MAX_MODEL_BYTES * 4 // 3 + 4:
        raise QrnnLmError(f"the sentencepiece tokenizer model embedded in {where} is not a base64 text of at "
                          f"most {MAX_MODEL_BYTES >> 20} MiB; the file is damaged, prepare or train again.")
    try:
        return base64.b64decode(proto, validate=True)
    except (binascii.Error, ValueError):
        raise QrnnLmError(f"the sentencepiece tokenizer model embedded in {where} is not valid base64; "
                          "the file is damaged, prepare or train again.") from None


# --------------------------------------------------------------------------
# Streaming, multi-process tokenization
# --------------------------------------------------------------------------

@dataclass
class TokenChunk:
    """Tokens of a run of lines, as ids into the chunk's own ``types`` list.

    ``ids`` (int32, (n,)) holds 1 + an index into ``types`` per token and 0 for
    every line end (``</s>``).  ``characters`` counts the characters of the
    lines plus one per line end.
    """
    types: list            # list of (surface, pos)
    ids: np.ndarray
    lines: int
    characters: int


_WORKER_TOKENIZER = None


def _init_worker(tok_dict: dict, directory: str | None) -> None:
    global _WORKER_TOKENIZER
    # Ctrl-C reaches the whole process group: the parent stops the pool and
    # reports it once; workers must not print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_TOKENIZER = tokenizer_from_dict(tok_dict, directory)


def _tokenize_chunk(lines: list[str], tokenizer=None) -> TokenChunk:
    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    index: dict = {}
    types = []
    ids = []
    chars = 0
    for line in lines:
        chars += len(line) + 1
        for t in tok.tokenize(line):
            i = index.get(t)
            if i is None:
                i = index[t] = len(types) + 1
                types.append(t)
            ids.append(i)
        ids.append(0)
    return TokenChunk(types, np.asarray(ids, dtype=np.int32), len(lines), chars)


def _chunks(lines: Iterable[str], chunk_lines: int) -> Iterator[list[str]]:
    buf = []
    for line in lines:
        buf.append(line)
        if len(buf) >= chunk_lines:
            yield buf
            buf = []
    if buf:
        yield buf


def tokenize_stream(tokenizer, lines: Iterable[str], workers: int = 1, *,
                    chunk_lines: int = 1000, progress: bool = False,
                    desc: str = "tokenizing", directory: str | None = None
                    ) -> Iterator[TokenChunk]:
    """Tokenize ``lines`` in order, yielding :class:`TokenChunk` s.

    With ``workers > 1`` the chunks are tokenized by a process pool whose
    workers each build their own tokenizer from ``tokenizer.to_dict()``; the
    order of the output is the order of the input.  Memory stays bounded: the
    pool reads ahead a few chunks per worker.
    """
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc=desc, unit=" lines", unit_scale=True, mininterval=1.0)
    try:
        if workers <= 1:
            for chunk in _chunks(lines, chunk_lines):
                out = _tokenize_chunk(chunk, tokenizer)
                if bar is not None:
                    bar.update(out.lines)
                yield out
            return
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker,
                        initargs=(tokenizer.to_dict(), directory))
        try:
            # pool.imap would drain the input iterator as fast as it can (the
            # whole corpus in RAM); a bounded queue of pending chunks keeps
            # the read-ahead at a few chunks per worker and the output ordered.
            pending = collections.deque()
            for chunk in _chunks(lines, chunk_lines):
                pending.append(pool.apply_async(_tokenize_chunk, (chunk,)))
                if len(pending) >= 3 * workers:
                    out = pending.popleft().get()
                    if bar is not None:
                        bar.update(out.lines)
                    yield out
            while pending:
                out = pending.popleft().get()
                if bar is not None:
                    bar.update(out.lines)
                yield out
        except BaseException:   # Ctrl-C, an unreadable input, the consumer stopping
            _stop_pool_now(pool)
            raise
        pool.close()
        pool.join()
    finally:
        if bar is not None:
            bar.close()


def _stop_pool_now(pool) -> None:
    """Stop a pool whose tasks are still running, without waiting on its queues.

    ``Pool.terminate`` writes a sentinel to the result queue under a lock that
    a worker may hold while it blocks writing a result nobody reads any more,
    and then waits forever; killing the workers and dropping the pool's
    finalizer cannot hang."""
    finalizer, procs = getattr(pool, "_terminate", None), getattr(pool, "_pool", None)
    if finalizer is None or procs is None:   # another multiprocessing: the plain way
        pool.terminate()
        return
    from multiprocessing.pool import TERMINATE
    finalizer.cancel()
    pool._state = TERMINATE
    for name in ("_worker_handler", "_task_handler", "_result_handler"):
        handler = getattr(pool, name, None)
        if handler is not None:   # no new workers; the threads end when they wake
            handler._state = TERMINATE
    for p in list(procs):
        p.kill()
    for p in list(procs):
        p.join(timeout=5)
