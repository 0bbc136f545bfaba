"""Batching a prepared split for the language model.

A prepared split (DESIGN.md section 3) is one array of output ids in which
every line ends with ``</s>``.  We prepend one ``</s>`` so that the first
token has a context too: in the stream ``S = [eos] + ids``, target ``ids[k]``
sits at ``S[k+1]`` and is predicted from ``S[:k+1]``.  Every token of a split
is therefore scored exactly once by :func:`evaluate`-style loops, which the
exact bits-per-character formula needs.

Two batchings:

- :class:`StreamBatches` -- the token stream cut into B columns and then into
  truncated-BPTT windows (T, B); the recurrent state is carried across windows.
  Training windows may have a random length around ``bptt`` (awd-lstm-lm).
- :class:`SentenceBatches` -- each line (``</s>`` included) is one sequence
  whose input starts with the previous ``</s>``; batches of sequences of
  similar length are packed (no padding is computed or counted) and every
  sequence starts from a zero state.  Lines longer than ``max_len`` are cut
  into pieces; a piece's input starts with the token before it.

Both are deterministic functions of (seed, epoch), so a run can resume at a
batch index.  Under DDP each rank takes its own slice (columns / batches).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from qrnn_lm.errors import QrnnLmError


@dataclass
class Split:
    """One prepared split: ids (N,) int32, rare_logp (N,) float32 (memory-mapped), meta."""

    name: str
    ids: np.ndarray
    rare_logp: np.ndarray
    meta: dict

    @property
    def tokens(self) -> int:
        return int(self.ids.shape[0])

    @property
    def characters(self) -> int:
        return int(self.meta.get("characters", 0))


SPLIT_PARTS = ("ids.npy", "rare_logp.npy", "meta.json")


def check_dataset(data_dir: str) -> None:
    """A prepared dataset is all or nothing: ``vocab.json`` and, for every split
    that has any of its files, all three of them.  Raises QrnnLmError naming the
    first missing part."""
    if not os.path.isfile(os.path.join(data_dir, "vocab.json")):
        raise QrnnLmError(f"the prepared dataset {data_dir} has no vocab.json; prepare it again "
                          "with `python -m qrnn_lm prepare --force`.")
    for name in ("train", "valid", "test"):
        present = [os.path.exists(os.path.join(data_dir, f"{name}.{p}")) for p in SPLIT_PARTS]
        if any(present) and not all(present):
            missing = SPLIT_PARTS[present.index(False)]
            raise QrnnLmError(f"the prepared dataset {data_dir} is incomplete: {name}.{missing} is "
                              f"missing beside {name}.{SPLIT_PARTS[present.index(True)]}; prepare "
                              "it again with `python -m qrnn_lm prepare --force`.")


def load_split(data_dir: str, name: str) -> Split:
    """Load ``{name}.ids.npy``, ``{name}.rare_logp.npy`` and ``{name}.meta.json``
    (all three must be there and agree; see :func:`check_dataset`)."""
    check_dataset(data_dir)
    ids_path = os.path.join(data_dir, f"{name}.ids.npy")
    if not os.path.exists(ids_path):
        raise QrnnLmError(f"the prepared dataset {data_dir} has no {name} split ({ids_path} is missing); "
                          f"run `python -m qrnn_lm prepare` with --{name} or pass --{name} FILE.")
    again = "prepare the dataset again with `python -m qrnn_lm prepare --force`"
    try:
        ids = np.load(ids_path, mmap_mode="r")
        rare_logp = np.load(os.path.join(data_dir, f"{name}.rare_logp.npy"), mmap_mode="r")
        with open(os.path.join(data_dir, f"{name}.meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise QrnnLmError(f"cannot read the {name} split of {data_dir} ({e}); {again}.") from None
    if ids.ndim != 1 or len(ids) == 0:
        raise QrnnLmError(f"the {name} split of {data_dir} is empty; give it some text and prepare it again.")
    if rare_logp.shape != ids.shape:
        raise QrnnLmError(f"{name}.rare_logp.npy and {name}.ids.npy of {data_dir} differ in length; {again}.")
    if not np.issubdtype(ids.dtype, np.integer) or not np.issubdtype(rare_logp.dtype, np.floating):
        raise QrnnLmError(f"{name}.ids.npy or {name}.rare_logp.npy of {data_dir} has the wrong data type; {again}.")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)
                                             for k in ("tokens", "characters")):
        raise QrnnLmError(f"{name}.meta.json of {data_dir} lacks its token and character counts; {again}.")
    if meta["tokens"] != len(ids):
        raise QrnnLmError(f"{name}.meta.json of {data_dir} does not match {name}.ids.npy ({meta['tokens']} "
                          f"tokens said, {len(ids)} found); {again}.")
    _check_meta_counts(meta, os.path.join(data_dir, f"{name}.meta.json"), again)
    _check_rare_logp(rare_logp, os.path.join(data_dir, f"{name}.rare_logp.npy"), again)
    return Split(name, ids, rare_logp, meta)


META_COUNTS = ("tokens", "lines", "characters", "invalid_utf8", "bucket_tokens", "unseen_tokens", "vocab_size")
_CHUNK = 1 << 22


def _check_meta_counts(meta: dict, path: str, again: str) -> None:
    """Every count in a split's meta.json is a non-negative integer, and the
    counts are possible: at least one character, and one for every line (its end)."""
    for key in META_COUNTS:
        v = meta.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise QrnnLmError(f"{path} says {key} is {v!r}, which is not a count; {again}.")
    lines = meta.get("lines", 0)
    if meta["characters"] < max(1, lines):
        raise QrnnLmError(f"{path} says {meta['characters']} characters in {lines} lines, which is impossible "
                          f"(every line counts at least its end); {again}.")
    if "bucket_tokens" in meta and meta["bucket_tokens"] > meta["tokens"]:
        raise QrnnLmError(f"{path} says {meta['bucket_tokens']} of its {meta['tokens']} tokens are in buckets, "
                          f"which is impossible; {again}.")


def _check_rare_logp(rare_logp: np.ndarray, path: str, again: str) -> None:
    """Every log P(word | bucket) is finite and at most 0 (chunks of the memory map)."""
    for s in range(0, len(rare_logp), _CHUNK):
        chunk = np.asarray(rare_logp[s:s + _CHUNK])
        bad = ~(np.isfinite(chunk) & (chunk <= 0))
        if bad.any():
            i = s + int(np.argmax(bad))
            raise QrnnLmError(f"{path} holds {float(rare_logp[i])} at position {i}, not a log-probability "
                              f"(finite and at most 0); {again}.")


def vocab_sha256(data_dir: str) -> str:
    """The identity of a prepared dataset: the SHA-256 of its vocab.json's bytes,
    recorded in every split's meta.json by ``prepare``."""
    h = hashlib.sha256()
    try:
        with open(os.path.join(data_dir, "vocab.json"), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise QrnnLmError(f"cannot read {os.path.join(data_dir, 'vocab.json')} ({e.strerror}); "
                          "prepare the dataset again with `python -m qrnn_lm prepare --force`.") from None
    return h.hexdigest()


def check_dataset_identity(data_dir: str, splits, vocab_size: int) -> str | None:
    """Check that ``data_dir/vocab.json`` belongs to the loaded ``splits``
    ({name: Split}): the vocab_sha256 and vocab_size their meta.json recorded
    when the dataset was prepared.  Returns the hash, or None for a dataset
    prepared before splits recorded it (then only the size is checked)."""
    vocab_path = os.path.join(data_dir, "vocab.json")
    again = "prepare the dataset again with `python -m qrnn_lm prepare --force`"
    for s in splits.values():
        size = s.meta.get("vocab_size")
        if isinstance(size, int) and size != vocab_size:
            raise QrnnLmError(f"{vocab_path} does not belong to {os.path.join(data_dir, s.name)}.*: it has "
                              f"{vocab_size} outputs, {s.name}.meta.json recorded {size}; {again}.")
    recorded = {name: s.meta.get("vocab_sha256") for name, s in splits.items()}
    if not any(recorded.values()):
        return None
    digest = vocab_sha256(data_dir)
    for name, h in recorded.items():
        if h != digest:
            why = ("its hash differs from the one recorded when the dataset was prepared" if h
                   else f"{name}.meta.json records no vocabulary hash, unlike the other splits")
            raise QrnnLmError(f"{vocab_path} does not belong to {os.path.join(data_dir, name)}.*: {why}; {again}.")
    return digest


def eos_stream(ids: np.ndarray, eos_id: int) -> np.ndarray:
    """``[eos] + ids`` as int64 (the stream whose position k+1 holds ids[k])."""
    out = np.empty(len(ids) + 1, dtype=np.int64)
    out[0] = eos_id
    out[1:] = ids
    return out


# ---------------------------------------------------------------------------
# Token stream, truncated BPTT
# ---------------------------------------------------------------------------
class StreamBatches:
    """Windows of a token stream split into columns.

    Training (``train=True``): the N targets are cut into ``world_size *
    batch_size`` equal columns (the remainder is dropped, as in
    word_language_model); rank r takes columns r*B .. r*B+B-1.  Window lengths
    are ``bptt``, or with ``random_length`` drawn per epoch as in awd-lstm-lm
    (``bptt`` with p=0.95 else ``bptt/2``, plus N(0, 5) noise, at least 5).

    Evaluation (``train=False``): the targets are cut into ``batch_size``
    contiguous columns whose lengths differ by at most one, so every token is
    scored once; positions past a column's end have target -1 (ignore).

    Iterating ``epoch(e, start)`` yields ``(index, x, y)`` with x, y int64 (T, B).
    """

    def __init__(self, ids: np.ndarray, eos_id: int, batch_size: int, bptt: int, *,
                 train: bool = True, random_length: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1 or bptt < 1:
            raise QrnnLmError("--batch_size and --bptt must be at least 1.")
        self.stream = eos_stream(ids, eos_id)
        self.batch_size, self.bptt, self.train = batch_size, bptt, train
        self.random_length, self.seed = random_length, seed
        n = len(ids)
        if train:
            ncol = world_size * batch_size
            self.col_len = np.full(batch_size, n // ncol, dtype=np.int64)
            if n // ncol < 1:
                raise QrnnLmError(f"the training split has {n} tokens, too few for {ncol} columns; "
                                  "lower --batch_size or give more text.")
            self.col_start = (rank * batch_size + np.arange(batch_size)) * (n // ncol)
        else:
            b = min(batch_size, n)
            base, extra = divmod(n, b)
            self.col_len = base + (np.arange(b) < extra).astype(np.int64)
            self.col_start = np.concatenate([[0], np.cumsum(self.col_len)[:-1]])
            self.batch_size = b
        self.length = int(self.col_len.max())

    def plan(self, epoch: int) -> list:
        """[(offset, seq_len), ...] of the windows of ``epoch``."""
        if not (self.train and self.random_length):
            return [(i, min(self.bptt, self.length - i)) for i in range(0, self.length, self.bptt)]
        rng = np.random.default_rng([self.seed, epoch, 7])
        out, i = [], 0
        while i < self.length:
            bptt = self.bptt if rng.random() < 0.95 else self.bptt / 2
            seq_len = max(5, int(rng.normal(bptt, 5)))
            seq_len = min(seq_len, self.length - i)
            out.append((i, seq_len))
            i += seq_len
        return out

    def __len__(self):
        return len(self.plan(0))

    def consumed(self, epoch: int, batch: int) -> int:
        """Target tokens of this rank's first ``batch`` windows of ``epoch``."""
        return sum(min(seq_len, self.length - offset) for offset, seq_len in self.plan(epoch)[:batch]) \
            * len(self.col_len)

    def window(self, offset: int, seq_len: int):
        t = np.arange(offset, offset + seq_len)[:, None]              # (T, 1)
        pos = self.col_start[None, :] + t                              # stream index of inputs
        valid = t < self.col_len[None, :]
        pos = np.where(valid, pos, 0)
        x = torch.from_numpy(self.stream[pos])
        y = torch.from_numpy(np.where(valid, self.stream[pos + 1], -1))
        return x, y

    def epoch(self, epoch: int, start: int = 0):
        for index, (offset, seq_len) in enumerate(self.plan(epoch)):
            if index >= start:
                x, y = self.window(offset, seq_len)
                yield index, x, y


# ---------------------------------------------------------------------------
# Sentences as packed sequences
# ---------------------------------------------------------------------------
class SentenceBatches:
    """Lines as packed sequences, grouped by length.

    Each piece is (start, length) over the targets: inputs ``S[start:start+L]``,
    targets ``S[start+1:start+L+1]`` of the eos-prepended stream S.  Training
    batches: pieces sorted by length (ties broken at random per epoch), cut
    into groups of ``batch_size``, the groups shuffled; the list is trimmed to
    a multiple of ``world_size`` and rank r takes every world_size-th group.
    Evaluation batches: sorted by length, not shuffled, nothing dropped.

    Iterating ``epoch(e, start)`` yields ``(index, x, y)`` where x and y are
    PackedSequences of int64 ids with identical ``batch_sizes``.
    """

    def __init__(self, ids: np.ndarray, eos_id: int, batch_size: int, max_len: int, *,
                 train: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or max_len < 1:
            raise QrnnLmError("--batch_size and --max-len must be at least 1.")
        self.stream = eos_stream(ids, eos_id)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        ids = np.asarray(ids)
        ends = np.flatnonzero(ids == eos_id)
        if len(ends) == 0 or ends[-1] != len(ids) - 1:   # text not ending with eos
            ends = np.append(ends, len(ids) - 1)
        starts = np.concatenate([[0], ends[:-1] + 1])
        lengths = ends - starts + 1
        # cut long lines into pieces of at most max_len targets
        npieces = (lengths + max_len - 1) // max_len
        line = np.repeat(np.arange(len(lengths)), npieces)
        k = np.arange(len(line)) - np.repeat(np.cumsum(npieces) - npieces, npieces)
        self.start = starts[line] + k * max_len
        self.length = np.minimum(max_len, lengths[line] - k * max_len)

    def batches(self, epoch: int) -> list:
        """Groups of piece indices (each sorted by descending length) for ``epoch``."""
        n = len(self.start)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, 11])
            order = np.lexsort((rng.random(n), -self.length))
        else:
            order = np.argsort(-self.length, kind="stable")
        groups = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.train:
            groups = [groups[i] for i in rng.permutation(len(groups))]
            usable = len(groups) // self.world_size * self.world_size
            if usable == 0:
                raise QrnnLmError(f"the training split has only {n} lines, too few for "
                                  f"{self.world_size} processes; lower --batch_size or give more text.")
            groups = groups[:usable][self.rank::self.world_size]
        return groups

    def __len__(self):
        return len(self.batches(0))

    def consumed(self, epoch: int, batch: int) -> int:
        """Target tokens of this rank's first ``batch`` batches of ``epoch``."""
        return int(sum(int(self.length[g].sum()) for g in self.batches(epoch)[:batch]))

    def make_batch(self, group: np.ndarray):
        lengths = self.length[group]
        T = int(lengths.max())
        t = np.arange(T)[:, None]
        valid = t < lengths[None, :]
        pos = np.where(valid, self.start[group][None, :] + t, 0)
        lens = torch.from_numpy(lengths.astype(np.int64))
        x = pack_padded_sequence(torch.from_numpy(self.stream[pos]), lens, enforce_sorted=True)
        y = pack_padded_sequence(torch.from_numpy(self.stream[pos + 1]), lens, enforce_sorted=True)
        return x, y

    def epoch(self, epoch: int, start: int = 0):
        for index, group in enumerate(self.batches(epoch)):
            if index >= start:
                x, y = self.make_batch(group)
                yield index, x, y


def make_batches(split: Split, eos_id: int, batching: str, batch_size: int, bptt: int, *,
                 train: bool, random_length: bool = False, max_len: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
    """StreamBatches or SentenceBatches for ``split`` (``batching`` = "stream" | "sentences")."""
    if batching == "stream":
        return StreamBatches(split.ids, eos_id, batch_size, bptt, train=train, random_length=random_length,
                             seed=seed, rank=rank, world_size=world_size)
    return SentenceBatches(split.ids, eos_id, batch_size, max_len or 4 * bptt, train=train, seed=seed,
                           rank=rank, world_size=world_size)
