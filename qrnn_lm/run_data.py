"""The data of a run: a prepared dataset (``--data``), or ``--train`` files
prepared once into a cache (``prepare_on_the_fly``, with the ``prepare``
flags of ``prepare_settings``); ``load_data`` checks that the dataset's parts
belong together; ``eval_batches_for`` batches a split for evaluation."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np

from .corpus import check_input_file
from .data import StreamBatches, check_dataset_identity, load_split, make_batches
from .errors import QrnnLmError
from .rundir import ensure_writable_dir

PREPARE_FLAGS = ("tokenizer", "vocab_size", "rare", "buckets", "vectors", "pos_depth", "workers", "seed")


def prepare_settings(args, train_bytes: int) -> dict:
    """The ``prepare`` flags for --train files: those given, and where none of
    --vocab-size/--rare/--buckets is: MeCab on corpora of 2-50 MB keeps 5,000
    words (the best cut tried for budgets of minutes, README "Defaults") with
    rare-word buckets by POS and character class (``pos+script``, prepare's
    default, the best bucket scheme of docs/RESULTS.md);
    sentencepiece learns 8,000 pieces.  Tokenizer processes: up to 8 CPUs."""
    settings = {k: getattr(args, k) for k in PREPARE_FLAGS if getattr(args, k) is not None}
    tokenizer = settings.get("tokenizer", "mecab")
    if not any(k in settings for k in ("vocab_size", "rare", "buckets")):
        if tokenizer == "mecab" and 2_000_000 <= train_bytes < 50_000_000:
            settings.update(vocab_size=5000, rare="pos+script")
        elif tokenizer == "sentencepiece":
            settings.update(vocab_size=8000)
    from .prepare import usable_cpus
    settings.setdefault("workers", min(8, usable_cpus()))
    return settings


# -----------------------------------------------------------------------------
# the data of --train files: prepared once into a cache
# -----------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PrepareFailed(Exception):
    """``qrnn_lm.prepare`` failed and has already told the user why."""


def resolve_vectors_path(path: str) -> str:
    """A --vectors file, or a run directory's checkpoint (the file that is hashed)."""
    if os.path.isdir(path):
        from .checkpoint import resolve_checkpoint
        return resolve_checkpoint(path)
    if not os.path.isfile(path):
        raise QrnnLmError(f"--vectors file {path} does not exist.")
    return path


def prepare_on_the_fly(args, is_master: bool, distributed: bool) -> str:
    """Tokenize --train/--valid/--test with ``qrnn_lm.prepare`` into a cache
    directory named by a hash of the files' contents and the prepare settings
    (``prepare_settings``); later runs reuse it."""
    files = {s: getattr(args, s) for s in ("train", "valid", "test") if getattr(args, s)}
    for split, path in files.items():
        check_input_file(path, f"--{split} file")  # missing, a directory, not a file
        if os.path.getsize(path) == 0:
            raise QrnnLmError(f"--{split} file {path} is empty; give it some text (one paragraph a line).")
    from .wordvec import VECTOR_KINDS
    vector_file = args.vectors if args.vectors and args.vectors not in VECTOR_KINDS else None
    if vector_file:
        vector_file = resolve_vectors_path(vector_file)
    settings = prepare_settings(args, os.path.getsize(files["train"]))
    key_settings = {k: v for k, v in settings.items() if k != "workers"}   # workers do not change the result
    key = hashlib.sha256(json.dumps({"files": {s: _file_digest(p) for s, p in files.items()},
                                     "vectors": _file_digest(vector_file) if vector_file else None,
                                     "settings": key_settings}, sort_keys=True).encode()).hexdigest()[:16]
    cache = args.cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qrnn_lm")
    out = os.path.join(cache, f"prepared-{key}")
    if is_master and not os.path.isfile(os.path.join(out, "vocab.json")):
        from . import prepare
        ensure_writable_dir(cache, "--cache-dir")
        tmp = f"{out}.tmp{os.getpid()}"
        argv = [a for s, pth in files.items() for a in (f"--{s}", pth)] + ["--out", tmp]
        for k, v in settings.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        print(f"preparing the dataset into {out} ({' '.join(argv[argv.index(tmp) + 1:])}) ...", file=sys.stderr)
        try:
            rc = prepare.main(argv)
            if rc:
                raise PrepareFailed(rc)  # prepare has printed its one-sentence error
            if os.path.exists(out):   # another process won the race
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    if distributed:
        import torch.distributed as dist
        dist.barrier()
    return out


def load_data(args, is_master: bool = True, distributed: bool = False):
    """(data_dir, vocab, splits) for --data or --train."""
    if args.data and args.train:
        raise QrnnLmError("give either --data DIR or --train FILE, not both.")
    if args.train:
        data_dir = prepare_on_the_fly(args, is_master, distributed)
    elif args.data:
        if not os.path.isfile(os.path.join(args.data, "vocab.json")):
            raise QrnnLmError(f"--data {args.data} is not a prepared dataset (no vocab.json in it); "
                              "run `python -m qrnn_lm prepare` first or pass --train FILE.")
        data_dir = args.data
    else:
        raise QrnnLmError("no training data: give --data DIR (a prepared dataset) or --train FILE.")
    from .vocab import Vocabulary
    vocab = Vocabulary.load(data_dir)   # refuses a tokenizer file outside the dataset before opening it
    splits = {"train": load_split(data_dir, "train")}
    for name in ("valid", "test"):
        if os.path.exists(os.path.join(data_dir, f"{name}.ids.npy")):
            splits[name] = load_split(data_dir, name)
    vocab.dataset_identity = check_dataset_identity(data_dir, splits, len(vocab))
    for s in splits.values():
        if int(np.max(s.ids)) >= len(vocab) or int(np.min(s.ids)) < 0:
            raise QrnnLmError(f"the {s.name} split of {data_dir} has ids outside its vocabulary; prepare it again.")
    return data_dir, vocab, splits


def eval_batches_for(split, eos: int, args):
    """Evaluation batches whose figures do not depend on --eval-batch-size.

    Stream batching: the whole split is one column with the state carried from
    window to window (each token sees everything before it, as in
    generation); --eval-batch-size only sets the window length (x --bptt).
    Sentence batching: every line starts from a zero state anyway."""
    if args.batching == "stream":
        return StreamBatches(split.ids, eos, 1, args.bptt * args.eval_batch_size, train=False)
    return make_batches(split, eos, "sentences", args.eval_batch_size, args.bptt, train=False, max_len=args.max_len)
