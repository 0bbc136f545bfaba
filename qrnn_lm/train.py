"""Train a QRNN (or LSTM) language model.

    python train.py --train a.txt --valid b.txt --test c.txt --max-minutes 5   # defaults chosen for you
    python train.py --data DIR --save runs/ja --max-minutes 60                 # a prepared dataset
    python train.py --save runs/ja --resume                                    # continue runs/ja/last.pt
    torchrun --standalone --nproc_per_node=2 train.py ...                      # DDP, one process per GPU

The file reads top to bottom: flags; the two small rules that make a run fit
its budget (``choose_defaults`` and ``lr_at``); the run's state
(``TrainState``, which alone defines the checkpoint format); the run
directory (lock, checks); set-up (DDP, data, build-or-resume); logging; the
training loop; the final evaluation.  Losses are in nats per model token;
bits per character are exact over the original text (DESIGN.md section 3).
Every user-facing failure is one sentence on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from qrnn_lm.corpus import check_input_file
from qrnn_lm.data import StreamBatches, load_split, make_batches
from qrnn_lm.errors import ExitCode, QrnnLmError, run_command
from qrnn_lm.lm import (BEST, LAST, bits_per_char, build_model, load_checkpoint, load_vocab_dict,
                        save_checkpoint, total_nll, vocab_tokens)
from qrnn_lm.model import ModelConfig, RNNLanguageModel
from qrnn_lm.vocab import RARE_MODES

LOCK = "lock"


# -----------------------------------------------------------------------------
# flags.  A default of None means "chosen by choose_defaults" (or, on
# --resume, "as the run was started").
# -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a QRNN/LSTM language model. Flags left out "
                                "are chosen from the corpus size, the device and the budget (printed at the start).")
    d = p.add_argument_group("data")
    d.add_argument("--data", help="a prepared dataset directory (python -m qrnn_lm prepare)")
    d.add_argument("--train", help="training text (one paragraph a line), tokenized on the fly")
    d.add_argument("--valid", help="validation text (with --train)")
    d.add_argument("--test", help="test text (with --train)")
    d.add_argument("--cache-dir", default=None,
                   help="where datasets prepared on the fly are cached (default ~/.cache/qrnn_lm)")
    # prepare flags, passed to `python -m qrnn_lm prepare` when given (see prepare_settings otherwise)
    d.add_argument("--tokenizer", choices=["mecab", "sentencepiece", "char"])
    d.add_argument("--vocab-size", type=int)
    d.add_argument("--rare", choices=RARE_MODES)
    d.add_argument("--buckets", type=int)
    d.add_argument("--vectors")
    d.add_argument("--pos-depth", type=int)
    d.add_argument("--workers", type=int)
    m = p.add_argument_group("model (left out: chosen by the defaults rule)")
    m.add_argument("--rnn", choices=["qrnn", "lstm"], default=None, help="recurrent layer type (qrnn)")
    m.add_argument("--emsize", type=int, default=None, help="embedding size")
    m.add_argument("--nhid", type=int, default=None, help="hidden units per layer")
    m.add_argument("--nlayers", type=int, default=None, help="number of layers")
    m.add_argument("--window", type=int, default=None, help="QRNN convolution width of the first layer (2)")
    m.add_argument("--dropout", type=float, default=None, help="locked dropout on the last layer's output")
    m.add_argument("--dropouth", type=float, default=None, help="locked dropout between layers")
    m.add_argument("--dropouti", type=float, default=None, help="locked dropout on the embeddings")
    m.add_argument("--dropoute", type=float, default=None, help="word-type dropout on the embedding matrix")
    m.add_argument("--zoneout", type=float, default=None, help="QRNN zoneout (0)")
    m.add_argument("--tied", action="store_true", default=None, help="tie input and output embeddings")
    m.add_argument("--softmax", choices=["full", "adaptive"], default=None, help="output layer")
    m.add_argument("--cutoffs", type=int, nargs="+", default=None, help="adaptive softmax cluster boundaries")
    t = p.add_argument_group("training")
    t.add_argument("--batching", choices=["stream", "sentences"], default=None,
                   help="stream (default): BPTT windows with state carried; sentences: lines as packed sequences")
    t.add_argument("--bptt", type=int, default=None, help="BPTT window length (stream)")
    t.add_argument("--fixed-bptt", action="store_true", default=None, help="no random window lengths around --bptt")
    t.add_argument("--max-len", type=int, default=None, help="longest sentence piece (sentences; default 4*bptt)")
    t.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=None, help="batch size")
    t.add_argument("--eval-batch-size", type=int, default=None,
                   help="evaluation speed knob: tokens per evaluation window = this x --bptt (32); "
                        "the figures do not depend on it")
    t.add_argument("--epochs", type=int, default=None,
                   help="epoch limit (default: 10 when neither --max-steps nor --max-minutes is given)")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all (0: no limit)")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much training time in all, resumed sessions included (0: no limit)")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="adamw (default) or sgd")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate")
    t.add_argument("--schedule", choices=["cosine", "linear", "constant", "plateau"], default=None,
                   help="lr after warmup: cosine (default) or linear decay to --min-lr-ratio at the end of the "
                        "budget, constant, or plateau (x --lr-decay at each validation that does not improve)")
    t.add_argument("--min-lr-ratio", type=float, default=None, help="the lr floor reached at the end, x --lr (0.1)")
    t.add_argument("--lr-decay", type=float, default=None, help="plateau schedule: lr factor (0.25)")
    t.add_argument("--warmup-steps", type=int, default=None, help="linear lr warmup")
    t.add_argument("--wdecay", type=float, default=None,
                   help="weight decay (default 1.2e-6 for sgd as awd-lstm-lm, 0.01 for adamw)")
    t.add_argument("--clip", type=float, default=None, help="gradient norm clipping (0.25; 0: off)")
    t.add_argument("--seed", type=int, default=None, help="random seed (1111)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument("--amp", choices=["off", "bf16", "fp16"], default=None, help="autocast on CUDA (off)")
    o = p.add_argument_group("output")
    o.add_argument("--save", default=None,
                   help="run directory: checkpoints, metrics.jsonl (default runs/lm, or the run --resume names)")
    o.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue the run in --save from its last.pt; RUN: a run directory or checkpoint "
                        "(one from elsewhere starts a new run only in an empty --save)")
    o.add_argument("--log-interval", type=int, default=None, help="steps between log lines (200)")
    o.add_argument("--eval-interval", type=int, default=None,
                   help="validate every N steps (0: each epoch; default: by time, about 5%% of it)")
    o.add_argument("--no-progress", action="store_true", default=None, help="no tqdm progress bar")
    return p


# Flags a resumed run keeps from its checkpoint (an explicit different value is an error naming it).
FIXED_ON_RESUME = ("rnn", "emsize", "nhid", "nlayers", "window", "tied", "softmax", "cutoffs", "dropout",
                   "dropouth", "dropouti", "dropoute", "zoneout", "batching", "bptt", "fixed_bptt", "max_len",
                   "batch_size", "optimizer", "seed")
# Flags that may change on resume (reported in one line when they do).
CHANGEABLE_ON_RESUME = ("epochs", "max_steps", "max_minutes", "lr", "schedule", "min_lr_ratio", "lr_decay",
                        "warmup_steps", "wdecay", "clip", "eval_interval", "eval_batch_size", "log_interval",
                        "device", "amp", "no_progress")
# Everything that is not a model/optimizer setting: never "chosen".
STATIC_DEFAULTS = {"rnn": "qrnn", "window": 2, "zoneout": 0.0, "tied": False, "batching": "stream",
                   "fixed_bptt": False, "optimizer": "adamw", "schedule": "cosine", "min_lr_ratio": 0.1,
                   "lr_decay": 0.25, "clip": 0.25, "seed": 1111, "device": "auto", "amp": "off",
                   "log_interval": 200, "eval_batch_size": 32, "max_steps": 0, "max_minutes": 0.0,
                   "no_progress": False}


def check_flags(args) -> None:
    """Values no run can use: one sentence each, before anything starts."""
    def bad(msg):
        raise QrnnLmError(msg)
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        bad(f"--lr must be a positive number, not {args.lr}.")
    for name in ("log_interval", "window", "eval_batch_size", "batch_size", "bptt", "emsize", "nhid", "nlayers"):
        v = getattr(args, name)
        if v is not None and v < 1:
            bad(f"--{name.replace('_', '-') if name != 'batch_size' else 'batch_size'} must be at least 1, not {v}.")
    for name in ("max_steps", "warmup_steps", "epochs", "eval_interval"):
        v = getattr(args, name)
        if v is not None and v < 0:
            bad(f"--{name.replace('_', '-')} must be 0 or more, not {v}.")
    for name in ("max_minutes", "clip", "wdecay"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v >= 0):
            bad(f"--{name.replace('_', '-')} must be 0 or more, not {v}.")
    for name in ("dropout", "dropouth", "dropouti", "dropoute", "zoneout"):
        v = getattr(args, name)
        if v is not None and not 0 <= v < 1:
            bad(f"--{name} must be in [0, 1), not {v}.")
    if args.min_lr_ratio is not None and not 0 <= args.min_lr_ratio <= 1:
        bad(f"--min-lr-ratio must be in [0, 1], not {args.min_lr_ratio}.")
    if args.lr_decay is not None and not 0 < args.lr_decay <= 1:
        bad(f"--lr-decay must be in (0, 1], not {args.lr_decay}.")


# -----------------------------------------------------------------------------
# the defaults rule: what a run is not told, from corpus size, device and budget
# -----------------------------------------------------------------------------
def choose_defaults(*, train_tokens: int, vocab_size: int, device: str, minutes: float = 0.0, max_steps: int = 0,
                    epochs: int = 0, optimizer: str = "adamw", rnn: str = "qrnn", batch_size: int | None = None,
                    bptt: int | None = None) -> dict:
    """Settings for a run that was told only its data and budget.

    The rule (README "Defaults", DESIGN.md section 4; measured on the 2.1M-token
    Japanese corpus, docs/RESULTS.md "What a budget buys"):

    - CPU: a 2x256 QRNN with emsize 128 (~2.4M parameters at 5k outputs),
      batch 32 x bptt 35: what a few CPU minutes can fit.  A GPU processes
      ~20x more tokens per second: 3x1024, emsize 400, batch 64 x 70.
    - dropout from the passes over the corpus the budget allows: 0.1 under 2
      (the data is barely seen once; regularising costs more than it saves),
      0.2 under 8, 0.3 beyond (with word dropout 0.1).
    - adaptive softmax when there are more than 2,000 outputs.
    - AdamW at peak lr 5e-3 (CPU) / 2e-3 (GPU) with warmup over 2% of the
      expected steps (at most 200), then the budget schedule (``lr_at``);
      SGD keeps awd-lstm-lm's lr 30 and no warmup.
    """
    cuda = device == "cuda"
    big = cuda and rnn == "qrnn"
    batch_size = batch_size or (64 if cuda else 32)
    bptt = bptt or (70 if cuda else 35)
    tok_per_s = 250_000.0 if cuda else 12_000.0     # training speed of these models, H200 / 2-core CPU
    budgets = []                                    # tokens each bound allows
    if minutes:
        budgets.append(tok_per_s * 60.0 * minutes)
    if max_steps:
        budgets.append(float(max_steps) * batch_size * bptt)
    if epochs:
        budgets.append(float(epochs) * train_tokens)
    tokens = min(budgets) if budgets else 10.0 * train_tokens
    passes = tokens / max(train_tokens, 1)
    steps = max(1.0, tokens / (batch_size * bptt))
    if passes < 2:
        drop, drope = 0.1, 0.0
    elif passes < 8:
        drop, drope = 0.2, 0.0
    else:
        drop, drope = 0.3, 0.1
    return {
        "emsize": 400 if big else 128, "nhid": 1024 if big else 256, "nlayers": 3 if big else 2,
        "batch_size": batch_size, "bptt": bptt,
        "dropout": drop, "dropouth": drop, "dropouti": drop, "dropoute": drope,
        "softmax": "adaptive" if vocab_size > 2000 else "full",
        "lr": 30.0 if optimizer == "sgd" else (2e-3 if cuda else 5e-3),
        "wdecay": 1.2e-6 if optimizer == "sgd" else 0.01,
        "warmup_steps": 0 if optimizer == "sgd" else int(min(200, max(1, round(0.02 * steps)))),
    }


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
    from qrnn_lm.prepare import usable_cpus
    settings.setdefault("workers", min(8, usable_cpus()))
    return settings


# -----------------------------------------------------------------------------
# the schedule: warmup, then a decay that ends with the budget
# -----------------------------------------------------------------------------
def budget_progress(*, step: int, epoch_pos: float, elapsed: float, max_steps: int, max_minutes: float,
                    epochs: int) -> float:
    """How much of the budget is spent, in [0, 1]: the largest of steps,
    training time and epochs, each over its limit (the first to run out ends
    the run).  0 when the run has no limit."""
    parts = []
    if max_steps:
        parts.append(step / max_steps)
    if max_minutes:
        parts.append(elapsed / (60.0 * max_minutes))
    if epochs:
        parts.append(epoch_pos / epochs)
    return min(1.0, max(parts)) if parts else 0.0


def lr_at(step: int, progress: float, *, peak: float, warmup_steps: int, schedule: str, min_ratio: float,
          plateau_scale: float = 1.0) -> float:
    """The learning rate of ``step`` (0-based) at ``progress`` of the budget.

    Linear warmup over ``warmup_steps`` steps, then ``cosine``: peak * (r +
    (1 - r)(1 + cos(pi p)) / 2), ``linear``: peak * (1 - (1 - r) p),
    ``constant``: peak, ``plateau``: peak * plateau_scale.  r = min_ratio; the
    floor peak * r is reached exactly at p = 1, the end of the budget."""
    w = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    p = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        f = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif schedule == "linear":
        f = 1.0 - (1.0 - min_ratio) * p
    elif schedule == "plateau":
        f = plateau_scale
    else:
        f = 1.0
    return peak * w * f


# -----------------------------------------------------------------------------
# the run's state: one home, one checkpoint format
# -----------------------------------------------------------------------------
@dataclasses.dataclass
class TrainState:
    """Everything a run has done so far; ``to_checkpoint`` / ``from_checkpoint``
    define the checkpoint format (``lm.load_checkpoint`` reads the model part)."""

    step: int = 0
    epoch: int = 0               # the epoch in progress
    batch: int = 0               # the next batch of that epoch
    elapsed: float = 0.0         # seconds of training, all sessions of the run
    tokens: int = 0              # training tokens seen, all ranks
    best_val_loss: float = float("inf")
    plateau_scale: float = 1.0   # plateau schedule: lr factor so far
    plateau_best: float = float("inf")
    finished: str = ""           # why the run ended ("" while it can go on)
    rnn_state: object = None     # this rank's carried recurrent state (stream batching)

    def epoch_pos(self, nbatches: int) -> float:
        return self.epoch + self.batch / max(nbatches, 1)

    def to_checkpoint(self, *, model, optimizer, scaler, config: ModelConfig, args, chosen: dict, vocab,
                      rng: list, rnn_states) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": {"scale": self.plateau_scale, "best": self.plateau_best},
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "config": config.to_dict(), "args": dict(vars(args)), "chosen": dict(chosen),
            "vocab": vocab.to_dict(), "rng": rng,
            "data": {"epoch": self.epoch, "batch": self.batch, "state": rnn_states},
            "step": self.step, "elapsed": self.elapsed, "tokens": self.tokens, "best_val_loss": self.best_val_loss,
            "finished": self.finished,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, rank: int, world_size: int, device) -> "TrainState":
        sched = ckpt.get("scheduler") or {}
        states = ckpt["data"].get("state")
        rnn_state = to_device(states[rank], device) if states is not None and len(states) == world_size else None
        return cls(step=int(ckpt["step"]), epoch=int(ckpt["data"]["epoch"]), batch=int(ckpt["data"]["batch"]),
                   elapsed=float(ckpt.get("elapsed", 0.0)), tokens=int(ckpt.get("tokens", 0)),
                   best_val_loss=float(ckpt.get("best_val_loss", float("inf"))),
                   plateau_scale=float(sched.get("scale", 1.0)), plateau_best=float(sched.get("best", float("inf"))),
                   finished=str(ckpt.get("finished") or ""), rnn_state=rnn_state)


def to_plain(obj):
    """A recurrent state as plain tuples of CPU tensors (checkpoint-safe)."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (tuple, list)):
        return tuple(to_plain(o) for o in obj)
    raise TypeError(f"unexpected state type {type(obj).__name__}")


def to_device(obj, device):
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    return tuple(to_device(o, device) for o in obj)


def make_optimizer(model: torch.nn.Module, name: str, lr: float, wdecay: float) -> torch.optim.Optimizer:
    """Weight decay on trainable matrices (and, for SGD as in awd-lstm-lm, on all
    trainable parameters).  Frozen parameters are left out; parameters whose
    ``grad`` is None in a step (an adaptive-softmax cluster no target hit,
    with zero_grad(set_to_none=True)) are skipped by torch's optimizers, decay
    included, instead of failing the step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wdecay)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": wdecay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


# -----------------------------------------------------------------------------
# run and cache directories
# -----------------------------------------------------------------------------
def ensure_writable_dir(path: str, flag: str) -> None:
    """Create ``path`` if needed and check a file can be written in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise QrnnLmError(f"{flag} {path} is a file, not a directory; give a directory.")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise QrnnLmError(f"{flag} {path} is under the file {parent}, so it cannot be a directory; "
                          "give another path.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        why = "is on a read-only file system" if e.errno == errno.EROFS else (
            "is not writable (permission denied)" if isinstance(e, PermissionError) else f"cannot be written ({e.strerror})")
        raise QrnnLmError(f"{flag} {path} {why}; give a directory you can write to.") from None


class RunLock:
    """``RUNDIR/lock`` holds the owner's pid and host while a run uses the
    directory.  A lock whose process is gone (same host, pid not running) is
    stale and taken over; a lock of a live process is an error."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)
        self.held = False

    def acquire(self, log) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read()
                if owner is not None and self._alive(owner):
                    raise QrnnLmError(
                        f"the run directory {os.path.dirname(self.path)} is in use by process {owner.get('pid')} "
                        f"on {owner.get('host')} (since {owner.get('since', '?')}); wait for it to end or give "
                        "another --save.") from None
                log(f"taking over the stale lock of {os.path.dirname(self.path)} (process "
                    f"{owner.get('pid') if owner else '?'} on {owner.get('host') if owner else '?'} is gone)")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise QrnnLmError(f"cannot take the lock {self.path}; another process keeps taking it.")

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                d = json.load(f)
            return d if isinstance(d, dict) else None
        except (OSError, ValueError):
            return None   # half-written or damaged: treated as stale

    @staticmethod
    def _alive(owner: dict) -> bool:
        if owner.get("host") != socket.gethostname():
            return True       # cannot check another machine: assume it runs
        pid = owner.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        if pid == os.getpid():
            return False      # left by an earlier run of this very process
        from qrnn_lm.prepare import pid_alive
        return pid_alive(pid)   # a zombie (killed, not yet reaped) holds nothing

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                os.remove(self.path)
            self.held = False


def remove_orphan_temp_files(run_dir: str, log) -> None:
    """Checkpoint temp files left by a killed run (``last.pt.tmp<PID>``,
    ``best.pt.tmp``); called only while holding the run's lock."""
    orphans = [p for n in (LAST, BEST) for p in glob.glob(os.path.join(glob.escape(run_dir), n + ".tmp*"))]
    for p in orphans:
        with contextlib.suppress(OSError):
            os.remove(p)
    if orphans:
        log(f"removed {len(orphans)} temp file(s) left by an interrupted save in {run_dir}")


def _disk_full(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def write_checkpoint(ckpt: dict, path: str) -> None:
    """``lm.save_checkpoint`` with a full disk said in one sentence."""
    try:
        save_checkpoint(ckpt, path)
    except (OSError, RuntimeError) as e:
        for tmp in glob.glob(glob.escape(path) + ".tmp*"):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if _disk_full(e):
            raise QrnnLmError(f"cannot write the checkpoint {path}: the disk is full; the previous checkpoints "
                              f"in {os.path.dirname(path) or '.'} are intact (free some space and --resume).") from None
        raise QrnnLmError(f"cannot write the checkpoint {path} ({e}); the previous checkpoints in "
                          f"{os.path.dirname(path) or '.'} are intact.") from None


def copy_best(run_dir: str) -> None:
    tmp = os.path.join(run_dir, BEST + ".tmp")
    try:
        shutil.copyfile(os.path.join(run_dir, LAST), tmp)
        os.replace(tmp, os.path.join(run_dir, BEST))
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        what = "the disk is full" if _disk_full(e) else str(e)
        raise QrnnLmError(f"cannot write the checkpoint {os.path.join(run_dir, BEST)}: {what}; the previous "
                          f"checkpoints in {run_dir} are intact.") from None


# -----------------------------------------------------------------------------
# data: a prepared dataset, or text files prepared on the fly into a cache
# -----------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PrepareFailed(Exception):
    """``qrnn_lm.prepare`` failed and has already told the user why."""


PREPARE_FLAGS = ("tokenizer", "vocab_size", "rare", "buckets", "vectors", "pos_depth", "workers", "seed")


def resolve_vectors_path(path: str) -> str:
    """A --vectors file, or a run directory's checkpoint (the file that is hashed)."""
    if os.path.isdir(path):
        from qrnn_lm.lm import resolve_checkpoint
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
    from qrnn_lm.wordvec import VECTOR_KINDS
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
        from qrnn_lm import prepare
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
        dist.barrier()
    return out


def load_data(args, is_master: bool, distributed: bool):
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
    from qrnn_lm.vocab import Vocabulary
    vocab = Vocabulary.load(data_dir)
    splits = {"train": load_split(data_dir, "train")}
    for name in ("valid", "test"):
        if os.path.exists(os.path.join(data_dir, f"{name}.ids.npy")):
            splits[name] = load_split(data_dir, name)
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


# -----------------------------------------------------------------------------
# resume: which checkpoint, into which run directory, with which flags
# -----------------------------------------------------------------------------
def resolve_run(args) -> tuple:
    """(save_dir, checkpoint path or None, note) following the resume rules:
    ``--resume`` continues the run in --save from its last.pt; a checkpoint
    from elsewhere starts a new run directory, and only in an empty --save."""
    if args.resume is None:
        save = args.save or "runs/lm"
        if any(os.path.exists(os.path.join(save, n)) for n in (LAST, BEST)):
            raise QrnnLmError(f"--save {save} already holds a run; continue it with --resume, "
                              "or give another --save directory.")
        return save, None, ""
    target = args.resume
    if target == "":
        save = args.save or "runs/lm"
        path = os.path.join(save, LAST)
        if not os.path.isfile(path):
            raise QrnnLmError(f"--resume: {save} holds no run to continue (no {LAST} in it); start one with "
                              f"--save {save}, or give --resume RUN.")
        return save, path, ""
    if os.path.isdir(target):
        path = os.path.join(target, LAST)
        if not os.path.isfile(path):
            raise QrnnLmError(f"--resume {target}: the directory holds no {LAST} to continue.")
    elif os.path.isfile(target):
        path = target
    else:
        raise QrnnLmError(f"--resume {target} does not exist; give a run directory or a checkpoint file.")
    home = os.path.dirname(os.path.abspath(path))
    save = args.save or os.path.dirname(path) or "."
    if os.path.abspath(save) == home:
        if os.path.basename(path) != LAST:
            raise QrnnLmError(f"resuming {path} would overwrite {os.path.join(save, LAST)}, a later point of "
                              f"the same run; continue the run with --resume {save}, or branch from {path} "
                              "into an empty --save directory.")
        return save, path, ""
    if os.path.isdir(save) and os.listdir(save):
        raise QrnnLmError(f"--save {save} is not empty, so the run from {path} cannot start there (it would mix "
                          f"two runs); continue {save} with --resume alone, or give an empty --save.")
    return save, path, f"starting the new run directory {save} from the checkpoint {path}"


def merge_resumed_args(args, ckpt: dict, given: set, log) -> None:
    """Flags not given take the run's values; model-shape flags that contradict
    the run are an error naming them; changed budgets/lr are reported."""
    old = ckpt.get("args") or {}
    chosen = ckpt.get("chosen") or {}
    conflicts = []
    for k in FIXED_ON_RESUME:
        was = old.get(k)
        if k in given and was is not None and getattr(args, k) != was:
            conflicts.append(f"--{k.replace('_', '-') if k != 'batch_size' else k} {_show(getattr(args, k))} "
                             f"(the run has {_show(was)})")
    cfg = ckpt.get("config") or {}
    for k in ("rnn", "emsize", "nhid", "nlayers", "window", "softmax"):
        if k in given and k in cfg and getattr(args, k) != cfg[k] and not any(c.startswith(f"--{k} ") for c in conflicts):
            conflicts.append(f"--{k} {_show(getattr(args, k))} (the run has {_show(cfg[k])})")
    if conflicts:
        raise QrnnLmError(f"these flags contradict the run in {ckpt['path']}: {', '.join(conflicts)}; "
                          "leave them out to resume, or start a new run in another --save.")
    changed = []
    for k, v in vars(args).items():
        if k in ("resume", "save"):
            continue
        if k not in given:
            if k in old:
                setattr(args, k, old[k])
        elif k in CHANGEABLE_ON_RESUME and old.get(k, chosen.get(k)) != v:
            changed.append(f"--{k.replace('_', '-')} {_show(old.get(k, chosen.get(k)))} -> {_show(v)}")
    if changed:
        log("changed on resume: " + ", ".join(changed))


def _show(v) -> str:
    if v is None:
        return "default"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return str(v)


def fill_defaults(args, *, train_tokens: int, vocab_size: int, device: str, given: set, log) -> dict:
    """Fill the flags left out: the static defaults, then ``choose_defaults``;
    print the chosen values in one line and return them (for the checkpoint)."""
    for k, v in STATIC_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.epochs is None:
        args.epochs = 0 if (args.max_steps or args.max_minutes) else 10
    rule = choose_defaults(train_tokens=train_tokens, vocab_size=vocab_size, device=device,
                           minutes=args.max_minutes, max_steps=args.max_steps, epochs=args.epochs,
                           optimizer=args.optimizer, rnn=args.rnn, batch_size=args.batch_size, bptt=args.bptt)
    chosen = {}
    for k, v in rule.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
            chosen[k] = v
    if args.schedule == "plateau" and args.eval_interval is None:
        args.eval_interval = 0     # plateau decay: validate each epoch, as awd-lstm-lm
    shown = {k: v for k, v in chosen.items()}
    if args.eval_interval is None:
        shown["validation"] = "by time"
    if shown:
        log("chosen for this run (corpus, device, budget; flags given win): "
            + " ".join(f"{k}={_show(v)}" for k, v in shown.items()))
    return chosen


# -----------------------------------------------------------------------------
# logging: stdout, metrics.jsonl, TensorBoard and tqdm if installed
# -----------------------------------------------------------------------------
class RunLog:
    def __init__(self, run_dir: str, is_master: bool, progress: bool):
        self.is_master = is_master
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.tb, self.tqdm, self.bar = None, None, None
        if is_master:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(run_dir, "tb"))
            except ImportError:
                pass
            if progress:
                with contextlib.suppress(ImportError):
                    from tqdm.auto import tqdm
                    self.tqdm = tqdm

    def line(self, text: str) -> None:
        if not self.is_master:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def record(self, **row) -> None:
        if not self.is_master:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row.get('split', 'train')}/{k}", v, row.get("step", 0))

    def open_bar(self, total: int, initial: int, epoch: int) -> None:
        if self.tqdm is not None:
            self.bar = self.tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}", leave=False,
                                 dynamic_ncols=True, disable=None)

    def tick(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(**postfix)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.close_bar()
        if self.tb is not None:
            self.tb.close()


# -----------------------------------------------------------------------------
# main
# -----------------------------------------------------------------------------
def main(argv=None) -> int:
    locks = []

    def cleanup():
        for lock in locks:
            lock.release()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()

    def train(argv):
        args = build_parser().parse_args(argv)
        given = {k for k, v in vars(args).items() if v is not None}
        check_flags(args)
        try:
            return Trainer(args, given, locks).run()
        except PrepareFailed as e:
            raise ExitCode(int(e.args[0]) or 1) from None

    return run_command(train, argv, cleanup=cleanup,
                       out_of_memory="out of memory; lower --batch_size (or --eval-batch-size, --bptt, --nhid), "
                                     "or try --softmax adaptive or --amp bf16.")


clock = time.monotonic   # the training-time clock (tests replace it)


class Trainer:
    """Set-up in small steps (``__init__``), then ``run``: the loop and the final evaluation."""

    def __init__(self, args, given: set, locks: list):
        self.args, self.given = args, given
        self.setup_distributed()
        self.save, resume_path, note = resolve_run(args)
        args.save = self.save
        if self.is_master:
            ensure_writable_dir(self.save, "--save")
            lock = RunLock(self.save)
            lock.acquire(print)
            locks.append(lock)   # main() releases it
            remove_orphan_temp_files(self.save, print)
        if note:
            self.log(note)
        self.ckpt = load_checkpoint(resume_path) if resume_path else None
        if self.ckpt is not None:
            for key in ("optimizer", "scheduler", "step", "data"):
                if key not in self.ckpt:
                    raise QrnnLmError(f"checkpoint {self.ckpt['path']} holds no training state ({key!r}); "
                                      "it cannot be resumed (it can still be evaluated).")
            merge_resumed_args(args, self.ckpt, given, self.log)
        self.setup_device()
        self.setup_data()
        self.setup_model()

    def log(self, text: str) -> None:
        if self.is_master:
            print(text, flush=True)

    # -- set-up -------------------------------------------------------------
    def setup_distributed(self) -> None:
        """DDP: switched on by torchrun's RANK / WORLD_SIZE."""
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = "RANK" in os.environ and self.world_size > 1
        self.rank = int(os.environ.get("RANK", "0")) if self.distributed else 0
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0")) if self.distributed else 0
        self.is_master = self.rank == 0

    def setup_device(self) -> None:
        args = self.args
        dev = args.device or "auto"
        if dev == "cuda" and not torch.cuda.is_available():
            raise QrnnLmError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
        self.use_cuda = dev == "cuda" or (dev == "auto" and torch.cuda.is_available())
        if self.use_cuda:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if (args.amp or "off") != "off" and not self.use_cuda:
            raise QrnnLmError(f"--amp {args.amp} needs a CUDA device; use --amp off on CPU.")
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.use_cuda else "gloo")

    def setup_data(self) -> None:
        args = self.args
        self.data_dir, self.vocab, self.splits = load_data(args, self.is_master, self.distributed)
        if self.ckpt is not None:
            if vocab_tokens(load_vocab_dict(self.ckpt["vocab"], self.ckpt["path"])) != vocab_tokens(self.vocab):
                raise QrnnLmError(f"checkpoint {self.ckpt['path']} was trained with another vocabulary than the "
                                  f"dataset {self.data_dir}; resume with the data it was trained on.")
        self.chosen = fill_defaults(args, train_tokens=self.splits["train"].tokens, vocab_size=len(self.vocab),
                                    device=self.device.type, given=self.given, log=self.log)
        if self.ckpt is not None:
            self.chosen = dict(self.ckpt.get("chosen") or {}, **self.chosen)
        eos = self.vocab.eos_id
        self.stream = args.batching == "stream"
        self.train_batches = make_batches(self.splits["train"], eos, args.batching, args.batch_size, args.bptt,
                                          train=True, random_length=not args.fixed_bptt, max_len=args.max_len,
                                          seed=args.seed, rank=self.rank, world_size=self.world_size)
        self.eval_batches = {name: eval_batches_for(s, eos, args) for name, s in self.splits.items() if name != "train"}
        self._nbatches = {}
        self.rare_sums = {name: float(np.sum(s.rare_logp, dtype=np.float64)) for name, s in self.splits.items()}

    def setup_model(self) -> None:
        """Build the model (or the resumed run's), the optimizer and the state."""
        args, ckpt = self.args, self.ckpt
        torch.manual_seed(args.seed)
        if ckpt is not None:
            model = build_model(ckpt, self.vocab)
        else:
            try:
                config = ModelConfig(vocab_size=len(self.vocab), rnn=args.rnn, emsize=args.emsize, nhid=args.nhid,
                                     nlayers=args.nlayers, window=args.window, zoneout=args.zoneout,
                                     dropout=args.dropout, dropouth=args.dropouth, dropouti=args.dropouti,
                                     dropoute=args.dropoute, tied=args.tied, softmax=args.softmax,
                                     cutoffs=args.cutoffs or [])
            except ValueError as e:
                raise QrnnLmError(str(e).rstrip(".") + ".") from None
            model = RNNLanguageModel(config)
        self.config = model.config
        self.raw_model = model.to(self.device)
        self.model = self.raw_model
        if self.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[self.local_rank] if self.use_cuda else None,
                find_unused_parameters=self.config.softmax == "adaptive")  # a tail cluster may get no gradient
        self.optimizer = make_optimizer(self.raw_model, args.optimizer, args.lr, args.wdecay)
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        self.autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler("cuda", enabled=args.amp == "fp16")
        self.state = TrainState()
        torch.manual_seed(args.seed + self.rank)  # different dropout masks on each rank
        if ckpt is not None:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (ValueError, KeyError):
                raise QrnnLmError(f"the optimizer state in {ckpt['path']} does not match --optimizer "
                                  f"{args.optimizer}; resume with the flags it was trained with.") from None
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.state = TrainState.from_checkpoint(ckpt, rank=self.rank, world_size=self.world_size,
                                                    device=self.device)
            if not self.stream:
                self.state.rnn_state = None
            rng = ckpt.get("rng") or []
            if len(rng) == self.world_size:  # restore this rank's RNG streams
                torch.set_rng_state(rng[self.rank]["torch"])
                if self.use_cuda and rng[self.rank].get("cuda") is not None:
                    torch.cuda.set_rng_state(rng[self.rank]["cuda"])
        nparams = sum(p.numel() for p in self.raw_model.parameters())
        c = self.config
        self.log(f"model: {c.rnn.upper()} {c.nlayers}x{c.nhid}, emsize {c.emsize}, {c.softmax} softmax over "
                 f"{c.vocab_size} outputs, {nparams / 1e6:.2f}M parameters; device {self.device}"
                 f"{f' x{self.world_size}' if self.distributed else ''}")

    # -- pieces of the loop ------------------------------------------------
    def nbatches(self, epoch: int) -> int:
        if epoch not in self._nbatches:
            tb = self.train_batches
            self._nbatches = {epoch: len(tb.plan(epoch)) if self.stream else len(tb.batches(epoch))}
        return self._nbatches[epoch]

    def progress(self) -> float:
        a, s = self.args, self.state
        return budget_progress(step=s.step, epoch_pos=s.epoch_pos(self.nbatches(s.epoch)), elapsed=s.elapsed,
                               max_steps=a.max_steps, max_minutes=a.max_minutes, epochs=a.epochs)

    def lr(self, progress: float) -> float:
        a = self.args
        return lr_at(self.state.step, progress, peak=a.lr, warmup_steps=a.warmup_steps, schedule=a.schedule,
                     min_ratio=a.min_lr_ratio, plateau_scale=self.state.plateau_scale)

    def evaluate(self, name: str) -> dict:
        with self.autocast():
            nll, n = total_nll(self.raw_model, self.eval_batches[name], self.device, self.stream)
        loss = nll / max(n, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700)), "tokens": n,
                "bpc": bits_per_char(nll, self.rare_sums[name], self.splits[name].characters)}

    def checkpoint(self) -> None:
        """Gather every rank's RNG and carried state, then rank 0 writes last.pt."""
        s = self.state
        keep_state = self.stream and s.batch > 0
        local = {"rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state() if self.use_cuda else None},
                 "state": to_plain(s.rnn_state) if keep_state else None}
        everything = [None] * self.world_size
        if self.distributed:
            dist.all_gather_object(everything, local)
        else:
            everything = [local]
        if self.is_master:
            write_checkpoint(s.to_checkpoint(
                model=self.raw_model, optimizer=self.optimizer, scaler=self.scaler, config=self.config,
                args=self.args, chosen=self.chosen, vocab=self.vocab, rng=[e["rng"] for e in everything],
                rnn_states=[e["state"] for e in everything] if keep_state else None), os.path.join(self.save, LAST))

    def validate(self, step_plateau: bool = True) -> float:
        """Validate, step the plateau schedule, save last (and best); returns
        the seconds it took.  ``step_plateau=False`` (a run stopped by its
        budget mid-epoch) keeps the schedule as an uninterrupted run would
        have it, so that --resume stays exact."""
        t0 = clock()
        s, improved = self.state, False
        if "valid" in self.eval_batches:
            v = self.evaluate("valid")
            if step_plateau and self.args.schedule == "plateau":
                if v["loss"] < s.plateau_best:
                    s.plateau_best = v["loss"]
                else:
                    s.plateau_scale *= self.args.lr_decay
            improved = v["loss"] < s.best_val_loss
            s.best_val_loss = min(s.best_val_loss, v["loss"])
            self.runlog.line(f"| validation | step {s.step:6d} | valid loss {v['loss']:5.2f} | valid ppl "
                             f"{v['ppl']:9.2f} | valid bpc {v['bpc']:.4f} |{' best' if improved else ''}")
            self.runlog.record(split="valid", step=s.step, epoch=s.epoch, **v)
        self.checkpoint()
        if improved and self.is_master:
            copy_best(self.save)
        self.raw_model.train()
        return clock() - t0

    def validation_due(self, since_last: float, last_cost: float, next_batch: int) -> bool:
        """--eval-interval N: every N steps; by time (the default): when the
        time since the last validation is 19x what it cost (<= 5% of the run),
        at least 10 s, and at most 10 times per --max-minutes budget."""
        a = self.args
        if a.eval_interval is not None:
            return bool(a.eval_interval) and self.state.step % a.eval_interval == 0 and next_batch != 0
        if "valid" not in self.eval_batches:
            return since_last >= 300.0        # nothing to validate: save last.pt every 5 minutes
        gap = max(19.0 * last_cost, 10.0, 6.0 * (a.max_minutes or 0.0))
        return since_last >= gap

    # -- the loop ------------------------------------------------------------
    def run(self) -> int:
        args, s = self.args, self.state
        if s.finished and self.progress() >= 1.0:
            self.log(f"the run in {self.save} is finished ({s.finished}, step {s.step}); nothing to do. Give a "
                     "larger --max-minutes, --max-steps or --epochs to train it further.")
            return 0
        if self.ckpt is not None:
            self.log(f"resumed from {self.ckpt['path']} at step {s.step} (epoch {s.epoch + 1}, batch {s.batch}, "
                     f"{s.elapsed / 60:.2f} minutes trained)")
        s.finished = ""
        self.runlog = RunLog(self.save, self.is_master, progress=not args.no_progress)
        stop = {"sigint": False}

        def on_sigint(signum, frame):   # Ctrl-C: finish the step, save, exit; a second one aborts
            if stop["sigint"]:
                raise KeyboardInterrupt
            stop["sigint"] = True

        old_handler = None
        if hasattr(signal, "SIGINT") and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        try:
            stop_reason = self.loop(stop)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.runlog.close_bar()
        floor = f", floor {args.lr * args.min_lr_ratio:.2e}" if args.schedule in ("cosine", "linear") else ""
        self.log(f"stopped at step {s.step}: {stop_reason} (last lr {getattr(self, 'last_lr', args.lr):.2e}{floor}); "
                 f"saved {os.path.join(self.save, LAST)}"
                 + ("" if s.finished else " (continue with --resume)"))
        if not s.finished:
            self.runlog.close()
            return 130
        rc = self.final_evaluation()
        self.runlog.close()
        return rc

    def loop(self, stop: dict) -> str:
        """Train until the budget is spent or Ctrl-C; returns why it stopped."""
        args, s, model, opt = self.args, self.state, self.model, self.optimizer
        last_good = os.path.join(self.save, LAST) if self.ckpt is not None else None
        t_session = clock() - s.elapsed    # elapsed: wall time of all sessions, validations included
        last_val_end = s.elapsed
        val_cost = self.estimate_validation_cost()
        while True:
            nbatches = self.nbatches(s.epoch)
            model.train()
            self.runlog.open_bar(nbatches, s.batch, s.epoch)
            t_interval, acc = clock(), [0.0, 0, 0]        # loss sum, steps, tokens since the last log line
            for index, x, y in self.train_batches.epoch(s.epoch, s.batch):
                # the schedule: progress in steps / training time / epochs, whichever is furthest
                s.elapsed = clock() - t_session
                step_lr = self.lr(self.progress())
                self.last_lr = step_lr                   # the schedule's lr (logged), before window scaling
                if self.stream and not args.fixed_bptt:  # awd-lstm-lm: lr scaled with the window length
                    step_lr *= x.size(0) / args.bptt
                for g in opt.param_groups:
                    g["lr"] = step_lr
                # forward, backward, step
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                if self.stream:
                    s.rnn_state = self.raw_model.detach_state(s.rnn_state)
                try:
                    with self.autocast():
                        nll, new_state = model(x, s.rnn_state if self.stream else None, targets=y)
                        loss = nll.mean()
                    opt.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                except torch.OutOfMemoryError:
                    raise QrnnLmError(f"CUDA ran out of memory at step {s.step + 1}; lower --batch_size (or "
                                      "--bptt / --max-len, --nhid), or try --softmax adaptive or --amp bf16.") from None
                loss_value = loss.item()
                flags = self.agree(not math.isfinite(loss_value), stop["sigint"])
                if flags[0]:
                    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint had been saved yet"
                    raise QrnnLmError(f"the training loss became {loss_value} at step {s.step + 1}, so training "
                                      f"stopped without saving it; {where}. Lower --lr, keep --clip on, or use "
                                      "--amp bf16 / off.")
                if args.clip > 0:
                    self.scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), args.clip)
                self.scaler.step(opt)
                self.scaler.update()
                s.rnn_state = new_state if self.stream else None
                s.step += 1
                s.epoch, s.batch = (s.epoch, index + 1) if index + 1 < nbatches else (s.epoch + 1, 0)
                if s.batch == 0:
                    s.rnn_state = None
                s.elapsed = clock() - t_session
                # log, validate, stop
                acc[0] += loss_value
                acc[1] += 1
                acc[2] += int(nll.numel()) * self.world_size
                s.tokens += int(nll.numel()) * self.world_size
                self.runlog.tick(loss=f"{loss_value:.3f}", **{"tok/s": f"{acc[2] / max(clock() - t_interval, 1e-9):.0f}"})
                if s.step % args.log_interval == 0:
                    self.log_train(step_lr, acc, clock() - t_interval, index, nbatches)
                    t_interval, acc = clock(), [0.0, 0, 0]
                if flags[1]:                      # Ctrl-C: save where we are, no validation
                    self.checkpoint()
                    return "interrupted (Ctrl-C)"
                stop_reason = self.budget_reason() if self.progress() >= 1.0 else ""
                s.finished = stop_reason
                epoch_end = s.batch == 0 and args.eval_interval is not None
                if (stop_reason or epoch_end or
                        self.validation_due(s.elapsed - last_val_end, val_cost, s.batch)):
                    # a budget that runs out mid-epoch is not a plateau step (--resume stays exact)
                    val_cost = self.validate(step_plateau=not stop_reason or s.batch == 0)
                    last_val_end = s.elapsed = clock() - t_session
                    last_good = os.path.join(self.save, LAST)
                if stop_reason:
                    return stop_reason
                if s.batch == 0:
                    break
            self.runlog.close_bar()

    def agree(self, bad: bool, sigint: bool) -> list:
        """Every rank stops at the same step (NCCL reduces CUDA tensors only)."""
        flags = torch.tensor([float(bad), float(sigint)])
        if self.distributed:
            flags = flags.to(self.device)
            dist.all_reduce(flags)
            flags = flags.cpu()
        return [bool(flags[0] > 0), bool(flags[1] > 0)]

    def budget_reason(self) -> str:
        a, s = self.args, self.state
        if a.max_steps and s.step >= a.max_steps:
            return f"reached --max-steps {a.max_steps}"
        if a.max_minutes and s.elapsed >= 60 * a.max_minutes:
            return f"reached --max-minutes {a.max_minutes:g}"
        return f"reached --epochs {a.epochs}"

    def estimate_validation_cost(self) -> float:
        """Seconds one validation should take before any was measured: the
        validation tokens at three times a conservative training speed."""
        if "valid" not in self.splits:
            return 0.0
        per_s = 3 * (250_000.0 if self.use_cuda else 8_000.0)
        return self.splits["valid"].tokens / per_s

    def log_train(self, step_lr: float, acc: list, elapsed: float, index: int, nbatches: int) -> None:
        s = self.state
        cur = acc[0] / acc[1]
        tok_s = acc[2] / max(elapsed, 1e-9)
        self.runlog.line(f"| epoch {s.epoch + 1 if s.batch else s.epoch:3d} | step {s.step:7d} | {index + 1:5d}/"
                         f"{nbatches:5d} batches | lr {step_lr:.2e} | ms/batch {1000 * elapsed / acc[1]:7.1f} "
                         f"| loss {cur:5.2f} | ppl {math.exp(min(cur, 700)):8.2f} | tok/s {tok_s:7.0f} "
                         f"| {s.elapsed / 60:5.2f} min |")
        self.runlog.record(split="train", step=s.step, epoch=s.epoch + 1, loss=cur, ppl=math.exp(min(cur, 700)),
                           lr=step_lr, ms_per_batch=1000 * elapsed / acc[1], tok_per_s=tok_s,
                           minutes=s.elapsed / 60, progress=self.progress())

    # -- final evaluation with the best weights ----------------------------------
    def final_evaluation(self) -> int:
        best_path = os.path.join(self.save, BEST)
        if os.path.isfile(best_path):
            self.raw_model.load_state_dict(load_checkpoint(best_path, map_location=self.device)["model"])
        results = {}
        for name in ("valid", "test"):
            if name in self.eval_batches:
                results[name] = r = self.evaluate(name)
                self.runlog.line(f"| end of training | {name} loss {r['loss']:5.2f} | {name} ppl {r['ppl']:9.2f} "
                                 f"| {name} bpc {r['bpc']:.4f} | tokens {r['tokens']} |")
                self.runlog.record(split=name, step=self.state.step, final=True, **r)
        if self.is_master:
            _plot_losses(self.runlog.metrics_path, os.path.join(self.save, "loss.png"))
            with open(os.path.join(self.save, "results.json"), "w", encoding="utf-8") as f:
                json.dump({"step": self.state.step, "tokens": self.state.tokens, "minutes": self.state.elapsed / 60, "chosen": self.chosen,
                           **results}, f, indent=1)
        return 0


def _plot_losses(metrics_path: str, png_path: str) -> None:
    """Train/valid loss curve as a PNG, only if matplotlib is installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [json.loads(line) for line in open(metrics_path, encoding="utf-8")] if os.path.exists(metrics_path) else []
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in ("train", "valid"):
        pts = [(r["step"], r["loss"]) for r in rows if r.get("split") == split and not r.get("final")]
        if pts:
            ax.plot(*zip(*pts), label=split, marker="o" if split == "valid" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
