"""Checkpoints: the one file format a run writes and everything reads.

A checkpoint is a plain dict read with ``torch.load(weights_only=True)``, so
a checkpoint file can never run code::

    model, config, vocab        the weights, ModelConfig.to_dict(), Vocabulary.to_dict()
    inference                   how to read text with it: batching, bptt, max_len
    optimizer, scaler, scheduler, rng, data, step, elapsed, tokens,
    train_seconds, valid_seconds, best_val_loss, finished
                                the training state (``TrainState``): what --resume needs
    args, chosen                train.py's flags as the run used them, and those the
                                defaults rule chose (--resume reads them)
    dataset                     {"vocab_sha256": ...}: the identity of the dataset trained
                                on (None, or absent before it existed: not checked)
    format, version             the mark of a qrnn_lm checkpoint

Inference reads ``inference_settings(ckpt)``: the ``inference`` block, or
for checkpoints written before it existed, the same derived from ``args``.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile

import torch

from .errors import QrnnLmError
from .model import ModelConfig, RNNLanguageModel
from .model_size import check_model_size, config_dict_problem
from .rundir import BEST, LAST, atomic_write, write_checkpoint_file

CHECKPOINT_FORMAT = "qrnn_lm.checkpoint"
CHECKPOINT_VERSION = 1
MAX_WINDOW = 1 << 20      # inference bptt / max_len: longer windows are not from a run


# ---------------------------------------------------------------------------
# writing and reading files
# ---------------------------------------------------------------------------
def _stamped(ckpt: dict) -> dict:
    return dict(ckpt, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)


def save_checkpoint(ckpt: dict, path: str) -> None:
    """Write ``ckpt`` to ``path`` atomically (``rundir.atomic_write``)."""
    atomic_write(path, lambda f: torch.save(_stamped(ckpt), f))


def write_checkpoint(ckpt: dict, path: str) -> None:
    """``save_checkpoint`` with a failure (a full disk) said in one sentence."""
    write_checkpoint_file(path, lambda f: torch.save(_stamped(ckpt), f))


def resolve_checkpoint(path: str) -> str:
    """A run directory -> its best checkpoint (else its last); a file -> itself."""
    if os.path.isdir(path):
        for name in (BEST, LAST):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise QrnnLmError(f"the run directory {path} holds no checkpoint ({BEST} or {LAST}); "
                          "train with --save DIR first or give a checkpoint file.")
    if not os.path.isfile(path):
        raise QrnnLmError(f"checkpoint {path} does not exist; give a run directory written by --save or a .pt file.")
    return path


def load_checkpoint(path: str, map_location="cpu", *, weights_for: str | None = None) -> dict:
    """Load and check a checkpoint file (or the best one of a run directory).

    ``weights_for`` (a flag, e.g. ``"--vectors"``): the file is read only for
    its weights and vocabulary (``prepare --vectors``), any torch file with
    those is accepted, and failures are said as "cannot read word vectors
    from --vectors PATH"."""
    file = resolve_checkpoint(path)
    what = f"cannot read word vectors from {weights_for} {path}" if weights_for else ""
    hint = "give a checkpoint written by train.py or a word2vec/fastText .vec text file"
    try:
        size = os.path.getsize(file)
    except OSError as e:
        raise QrnnLmError(f"{what or 'cannot read checkpoint ' + file} ({e.strerror or e}).") from None
    if size == 0:
        raise QrnnLmError(f"{what}: it is empty (0 bytes); {hint}." if what else
                          f"checkpoint {file} is empty (0 bytes); use another checkpoint or train again.")
    try:
        ckpt = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message would suggest loading it unsafely: never pass it on
        if not what:
            raise QrnnLmError(f"{file} is not a qrnn_lm checkpoint: it holds objects other than tensors and plain "
                              "data, and was not loaded because that could run code.") from None
        if "can still be loaded" in str(e):
            raise QrnnLmError(f"{what}: it holds Python objects other than tensors and plain data "
                              f"and was not loaded, because loading it could run code; {hint}.") from None
        raise QrnnLmError(f"{what}: it is not a torch checkpoint; {hint}.") from None
    except Exception as e:  # truncated zip, random bytes, another format: never a traceback
        if what:
            raise QrnnLmError(f"{what}: it is truncated, damaged or not a torch checkpoint; {hint}.") from None
        kind = "truncated or damaged" if zipfile.is_zipfile(file) or "zip" in str(e).lower() else "not a checkpoint file"
        raise QrnnLmError(f"cannot read checkpoint {file}: the file is {kind}; "
                          "use another checkpoint (e.g. last.pt beside it) or train again.") from None
    if what:
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("vocab"), dict) \
                or not isinstance(ckpt.get("model"), dict):
            raise QrnnLmError(f"{what}: it is not a qrnn_lm checkpoint (no model and vocabulary in it); {hint}.")
    elif not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise QrnnLmError(f"{file} is not a qrnn_lm checkpoint (no model, config and vocabulary in it); "
                          "give a file written by train.py --save.")
    else:
        _check_version(ckpt, file)
        for key in ("model", "config", "vocab"):
            if key not in ckpt:
                raise QrnnLmError(f"checkpoint {file} has no {key!r} entry; it is incomplete, train again.")
    ckpt["path"] = file
    return ckpt


def _check_version(ckpt: dict, file: str) -> None:
    version = ckpt.get("version", CHECKPOINT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise QrnnLmError(f"checkpoint {file} is damaged: its version {version!r} is not a whole number; "
                          "use another checkpoint or train again.")
    if version > CHECKPOINT_VERSION:
        raise QrnnLmError(f"checkpoint {file} has format version {version}, newer than the version "
                          f"{CHECKPOINT_VERSION} this qrnn_lm reads; upgrade qrnn_lm to use it.")


def inference_settings(ckpt: dict) -> dict:
    """How inference reads text with this checkpoint's model: ``batching``
    (stream or sentences), ``bptt`` (the window, x --eval-batch-size when
    scoring) and ``max_len`` (the longest sentence piece).  Checkpoints
    written before the ``inference`` block existed: derived from ``args``.
    Values no run writes (a crafted file) are one QrnnLmError sentence."""
    block = ckpt.get("inference")
    if not isinstance(block, dict):
        block = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    out = {"batching": block.get("batching") or "stream", "bptt": block.get("bptt") or 70,
           "max_len": block.get("max_len")}
    for k in ("bptt", "max_len"):   # a whole float (an edited file) is still that number
        if isinstance(out[k], float) and out[k].is_integer():
            out[k] = int(out[k])
    bad = [f"{k} {out[k]!r}" for k in ("bptt", "max_len") if out[k] is not None
           and not (isinstance(out[k], int) and not isinstance(out[k], bool) and 1 <= out[k] <= MAX_WINDOW)]
    if out["batching"] not in ("stream", "sentences"):
        bad.append(f"batching {out['batching']!r}")
    if bad:
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} has impossible inference settings ({', '.join(bad)}); "
                          "the file is damaged or was crafted, use another checkpoint.")
    return out


# ---------------------------------------------------------------------------
# the model and vocabulary of a checkpoint
# ---------------------------------------------------------------------------
def vocab_tokens(vocab) -> list:
    """The output vocabulary as a list of strings, for comparing two vocabularies."""
    return [vocab.id_to_token(i) for i in range(len(vocab))]


def build_model(ckpt: dict, vocab) -> RNNLanguageModel:
    """The model of a loaded checkpoint, with its weights, after checking it
    belongs to ``vocab``."""
    problem = config_dict_problem(ckpt["config"])
    if problem:
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} has an impossible model config ({problem}); "
                          "the file is damaged or was crafted, use another checkpoint.")
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} has an invalid model config ({e}).") from None
    if config.vocab_size != len(vocab):
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} predicts {config.vocab_size} outputs but its vocabulary "
                          f"has {len(vocab)}: it mixes two vocabularies; use a checkpoint written by train.py.")
    check_model_size(config, what=f"checkpoint {ckpt.get('path')}")
    model = RNNLanguageModel(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise QrnnLmError(f"the weights in checkpoint {ckpt.get('path')} do not fit its model config; "
                          "the file is damaged or from another version, train again.") from None
    return model


def load_vocab_dict(d: dict, path: str = "checkpoint"):
    """The vocabulary stored in the checkpoint ``path``, checked; a tokenizer
    model it names is embedded or a file beside the checkpoint (never
    elsewhere), and a sentencepiece model is read now, so a damaged one is
    said at load."""
    from .tokenizers import check_tokenizer_config, tokenizer_from_dict
    from .vocab import Vocabulary
    Vocabulary._check_dict(d, f"the vocabulary stored in {path}",
                           "use another checkpoint or train again")
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    check_tokenizer_config(d["tokenizer"], directory)
    try:
        vocab = Vocabulary.from_dict(d, directory)
    except QrnnLmError:
        raise
    except Exception as e:  # a malformed dict can fail in many ways; say where it came from
        raise QrnnLmError(f"the vocabulary stored in {path} cannot be read ({type(e).__name__}); "
                          "the checkpoint is damaged or from another version.") from None
    if d["tokenizer"].get("type") == "sentencepiece":
        vocab.tokenizer = tokenizer_from_dict(d["tokenizer"], directory, where=f"checkpoint {path}")
    return vocab


# ---------------------------------------------------------------------------
# the training state: what --resume restores
# ---------------------------------------------------------------------------
def _plain_state(state, fn):
    """``state`` with ``fn`` applied to every tensor and every tuple (named
    ones included: ``weights_only`` loading accepts no named tuples) or list
    made a plain tuple.  The model takes plain tuples as its state."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return tuple(_plain_state(s, fn) for s in state)
    raise TypeError(f"unexpected state type {type(state).__name__}")


def to_plain(state):
    """A recurrent state as plain tuples of CPU tensors (checkpoint-safe)."""
    return _plain_state(state, lambda t: t.detach().cpu())


def to_device(state, device):
    return _plain_state(state, lambda t: t.to(device))


@dataclasses.dataclass
class RunParts:
    """What a checkpoint saves besides the ``TrainState``: the model, its
    optimizer (and fp16 grad scaler), the vocabulary and the settings."""

    model: torch.nn.Module            # the bare model (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scaler: object                    # torch.amp.GradScaler
    vocab: object
    args: dict                        # train.py's flags as resolved for the run
    chosen: dict                      # those the defaults rule chose
    inference: dict                   # inference_settings of the model


@dataclasses.dataclass
class TrainState:
    """Everything a run has done so far; ``to_checkpoint`` / ``from_checkpoint``
    define the training part of the checkpoint format."""

    step: int = 0
    epoch: int = 0               # the epoch in progress
    batch: int = 0               # the next batch of that epoch
    elapsed: float = 0.0         # seconds of the run in all sessions, validations included (the time budget)
    train_seconds: float = 0.0   # training time of all sessions: validations and checkpoint saves excluded
    valid_seconds: float = 0.0   # validations and the checkpoint saves after them, all sessions
    tokens: int = 0              # training tokens seen, all ranks
    best_val_loss: float = float("inf")
    plateau_scale: float = 1.0   # plateau schedule: lr factor so far
    plateau_best: float = float("inf")
    finished: str = ""           # why the run ended ("" while it can go on)
    rnn_state: object = None     # this rank's carried recurrent state (stream batching)
    # where in the data the run is, in a form that survives another world size or a changed split
    # (set before each save; None in checkpoints written before they were recorded)
    world_size: int | None = None      # processes that trained it
    epoch_batches: int | None = None   # batches of the epoch in progress, per rank
    epoch_tokens: int | None = None    # training tokens consumed in the epoch in progress, all ranks
    split_tokens: int | None = None    # tokens of the training split

    def epoch_pos(self, nbatches: int) -> float:
        return self.epoch + self.batch / max(nbatches, 1)

    def epoch_in_progress(self, epoch_batches) -> int:
        """The batches of the epoch in progress (``epoch_batches(epoch)``); a
        position at or past its end moves to the next epoch's start, so a
        training loop can never spin on it."""
        while self.batch >= epoch_batches(self.epoch):
            self.epoch, self.batch, self.rnn_state = self.epoch + 1, 0, None
        return epoch_batches(self.epoch)

    def to_checkpoint(self, parts: RunParts, ranks: list) -> dict:
        """``ranks``: every rank's ``{"rng": ..., "state": to_plain(state) or None}``."""
        states = [r["state"] for r in ranks]
        return {
            "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": {"scale": self.plateau_scale, "best": self.plateau_best},
            "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
            "config": parts.model.config.to_dict(), "args": dict(parts.args), "chosen": dict(parts.chosen),
            "inference": dict(parts.inference), "vocab": parts.vocab.to_dict(), "rng": [r["rng"] for r in ranks],
            "dataset": dataset_identity(parts.vocab),
            "data": {"epoch": self.epoch, "batch": self.batch,
                     "state": states if any(s is not None for s in states) else None,
                     "world_size": len(ranks), "batches": self.epoch_batches, "tokens": self.epoch_tokens,
                     "split_tokens": self.split_tokens},
            "step": self.step, "elapsed": self.elapsed, "tokens": self.tokens, "best_val_loss": self.best_val_loss,
            "train_seconds": self.train_seconds, "valid_seconds": self.valid_seconds, "finished": self.finished,
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, rank: int, world_size: int, device) -> "TrainState":
        sched, data = ckpt.get("scheduler") or {}, ckpt["data"]
        states = data.get("state")
        rnn_state = to_device(states[rank], device) if states is not None and len(states) == world_size else None
        elapsed = float(ckpt.get("elapsed", 0.0))
        valid_seconds = float(ckpt.get("valid_seconds", 0.0))   # older checkpoints: all elapsed time trained
        return cls(step=int(ckpt["step"]), epoch=int(ckpt["data"]["epoch"]), batch=int(ckpt["data"]["batch"]),
                   elapsed=elapsed, train_seconds=float(ckpt.get("train_seconds", elapsed - valid_seconds)),
                   valid_seconds=valid_seconds, tokens=int(ckpt.get("tokens", 0)),
                   best_val_loss=float(ckpt.get("best_val_loss", float("inf"))),
                   plateau_scale=float(sched.get("scale", 1.0)), plateau_best=float(sched.get("best", float("inf"))),
                   finished=str(ckpt.get("finished") or ""), rnn_state=rnn_state,
                   world_size=_count(data.get("world_size")) or len(ckpt.get("rng") or []) or None,
                   epoch_batches=_count(data.get("batches")), epoch_tokens=_count(data.get("tokens")),
                   split_tokens=_count(data.get("split_tokens")))


def _count(v) -> int | None:
    """A recorded count, or None where it is missing or not a count."""
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def dataset_identity(vocab) -> dict | None:
    """``{"vocab_sha256": ...}`` of the dataset ``vocab`` was loaded from
    (``run_data.load_data``), or None for a dataset prepared before it was recorded."""
    digest = getattr(vocab, "dataset_identity", None)
    return {"vocab_sha256": digest} if digest else None


def check_same_dataset(ckpt: dict, vocab, data_dir: str) -> None:
    """A resumed run goes on with the dataset it was trained on: the dataset
    identity the checkpoint recorded (if any) is the one of ``data_dir``."""
    saved = ckpt.get("dataset")
    saved = saved.get("vocab_sha256") if isinstance(saved, dict) else None
    digest = getattr(vocab, "dataset_identity", None)
    if saved and digest and saved != digest:
        raise QrnnLmError(f"checkpoint {ckpt['path']} was trained on another dataset than {data_dir} (its "
                          "vocab.json hash differs); resume with the data it was trained on.")


def check_resumable(ckpt: dict) -> None:
    for key in ("optimizer", "scheduler", "step", "data"):
        if key not in ckpt:
            raise QrnnLmError(f"checkpoint {ckpt['path']} holds no training state ({key!r}); "
                              "it cannot be resumed (it can still be evaluated).")


def rank_snapshot(rnn_state, cuda: bool) -> dict:
    """This rank's part of a checkpoint: its RNG streams and carried state."""
    return {"rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None},
            "state": to_plain(rnn_state)}


def resume_training(ckpt: dict, parts: RunParts, *, rank: int, world_size: int, device,
                    epoch_batches=None, split_tokens: int | None = None, log=None) -> TrainState:
    """Restore a resumed run's optimizer, grad scaler and this rank's RNG
    streams into ``parts``; returns the run's ``TrainState``, its data
    position mapped (``map_position``) when the world size or the training
    split changed.  ``epoch_batches(epoch)``: batches of an epoch per rank
    now; ``split_tokens``: tokens of the training split now."""
    check_same_dataset(ckpt, parts.vocab, getattr(parts.vocab, "directory", None) or "--data")
    try:
        parts.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError):
        raise QrnnLmError(f"the optimizer state in {ckpt['path']} does not match --optimizer "
                          f"{parts.args['optimizer']}; resume with the flags it was trained with.") from None
    if ckpt.get("scaler"):
        parts.scaler.load_state_dict(ckpt["scaler"])
    state = TrainState.from_checkpoint(ckpt, rank=rank, world_size=world_size, device=device)
    if parts.inference["batching"] != "stream":
        state.rnn_state = None
    rng = ckpt.get("rng") or []
    if len(rng) == world_size:  # restore this rank's RNG streams
        torch.set_rng_state(rng[rank]["torch"])
        if torch.device(device).type == "cuda" and rng[rank].get("cuda") is not None:
            torch.cuda.set_rng_state(rng[rank]["cuda"])
    if epoch_batches is not None:
        map_position(state, ckpt["path"], world_size=world_size, epoch_batches=epoch_batches,
                     split_tokens=split_tokens, log=log or (lambda text: None))
    return state


def map_position(state: TrainState, path: str, *, world_size: int, epoch_batches, split_tokens: int | None,
                 log) -> None:
    """Keep ``state``'s data position when nothing changed (an exact resume);
    when the world size or the training split changed, move it to the same
    fraction of the epoch under the new batching (the start of the next epoch
    when that is past its end), drop the carried recurrent state, whose
    columns no longer match, and say so in one line.  A checkpoint that does
    not record enough to map its position is refused in one sentence."""
    n = epoch_batches(state.epoch)
    changed = []
    if state.world_size is not None and state.world_size != world_size:
        changed.append(f"the world size changed ({state.world_size} -> {world_size} processes)")
    if state.split_tokens is not None and split_tokens is not None and state.split_tokens != split_tokens:
        changed.append(f"the training split changed ({state.split_tokens} -> {split_tokens} tokens)")
    if not changed and state.epoch_batches not in (None, n):
        changed.append(f"the batches of an epoch changed ({state.epoch_batches} -> {n})")
    if not changed and state.batch < n:
        return                                  # nothing changed: resume exactly where it stopped
    old_n = state.epoch_batches
    if old_n is None or old_n <= 0 or state.batch > old_n:
        what = changed[0] if changed else f"the training split changed (batch {state.batch} is past its {n} batches)"
        raise QrnnLmError(f"cannot resume {path}: {what} since it was saved, and the checkpoint does not "
                          "record its data position in a form that maps onto the new one; resume it with the "
                          "processes and training data it was saved with.")
    fraction = state.batch / old_n
    before = f"batch {state.batch}/{old_n} of epoch {state.epoch + 1}"
    if state.epoch_tokens is not None:
        before += f", {state.epoch_tokens} tokens into it"
    state.batch = min(int(fraction * n), n)
    if state.batch >= n:
        state.epoch, state.batch = state.epoch + 1, 0
    state.rnn_state = None                      # its columns were cut from another stream: start fresh
    state.world_size, state.epoch_batches, state.split_tokens = world_size, n, split_tokens
    log(f"resuming after a change: {', '.join(changed or ['the training split changed'])}; the data position "
        f"({before}, {fraction:.0%} of it) maps to batch {state.batch}/{epoch_batches(state.epoch)} of epoch "
        f"{state.epoch + 1}; the carried recurrent state starts fresh")
