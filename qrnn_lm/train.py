"""Train a QRNN (or LSTM) language model.

    python train.py --data DIR --save runs/ja                      # a prepared dataset
    python train.py --train a.txt --valid b.txt --test c.txt \\
                    --tokenizer mecab --vocab-size 30000 --rare pos --save runs/ja
    python train.py ... --resume                                    # continue runs/ja/last.pt
    torchrun --standalone --nproc_per_node=2 train.py ...           # DDP, one process per GPU

The file reads top to bottom: flags, setup (DDP, device, data, model,
optimizer, resume), the training loop, the final evaluation.  Losses are in
nats per model token; bits per character are exact over the original text
(DESIGN.md section 3).  Every user-facing failure is one sentence on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

from qrnn_lm.corpus import check_input_file
from qrnn_lm.data import load_split, make_batches
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.lm import (BEST, LAST, bits_per_char, build_model, load_checkpoint, load_vocab_dict,
                        save_checkpoint, total_nll, vocab_tokens)
from qrnn_lm.model import ModelConfig, RNNLanguageModel


# -----------------------------------------------------------------------------
# flags
# -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train a QRNN/LSTM language model.")
    d = p.add_argument_group("data")
    d.add_argument("--data", help="a prepared dataset directory (python -m qrnn_lm prepare)")
    d.add_argument("--train", help="training text (one paragraph a line), tokenized on the fly")
    d.add_argument("--valid", help="validation text (with --train)")
    d.add_argument("--test", help="test text (with --train)")
    d.add_argument("--cache-dir", default=None,
                   help="where datasets prepared on the fly are cached (default ~/.cache/qrnn_lm)")
    # prepare flags, passed to `python -m qrnn_lm prepare` when given (its defaults otherwise)
    d.add_argument("--tokenizer", choices=["mecab", "sentencepiece", "char"])
    d.add_argument("--vocab-size", type=int)
    d.add_argument("--rare", choices=["unk", "pos", "pos+script", "kmeans", "pos+kmeans"])
    d.add_argument("--buckets", type=int)
    d.add_argument("--vectors")
    d.add_argument("--pos-depth", type=int)
    d.add_argument("--workers", type=int)
    m = p.add_argument_group("model")
    m.add_argument("--rnn", choices=["qrnn", "lstm"], default="qrnn", help="recurrent layer type")
    m.add_argument("--emsize", type=int, default=400, help="embedding size")
    m.add_argument("--nhid", type=int, default=1150, help="hidden units per layer")
    m.add_argument("--nlayers", type=int, default=3, help="number of layers")
    m.add_argument("--window", type=int, default=2, help="QRNN convolution width of the first layer")
    m.add_argument("--dropout", type=float, default=0.4, help="locked dropout on the last layer's output")
    m.add_argument("--dropouth", type=float, default=0.25, help="locked dropout between layers")
    m.add_argument("--dropouti", type=float, default=0.4, help="locked dropout on the embeddings")
    m.add_argument("--dropoute", type=float, default=0.1, help="word-type dropout on the embedding matrix")
    m.add_argument("--zoneout", type=float, default=0.0, help="QRNN zoneout")
    m.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    m.add_argument("--softmax", choices=["full", "adaptive"], default="full", help="output layer")
    m.add_argument("--cutoffs", type=int, nargs="+", default=None, help="adaptive softmax cluster boundaries")
    t = p.add_argument_group("training")
    t.add_argument("--batching", choices=["stream", "sentences"], default="stream",
                   help="stream: BPTT windows with state carried; sentences: lines as packed sequences")
    t.add_argument("--bptt", type=int, default=70, help="BPTT window length (stream)")
    t.add_argument("--fixed-bptt", action="store_true", help="no random window lengths around --bptt")
    t.add_argument("--max-len", type=int, default=None, help="longest sentence piece (sentences; default 4*bptt)")
    t.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=20, help="batch size")
    t.add_argument("--eval-batch-size", type=int, default=10, help="columns / sentences per evaluation batch")
    t.add_argument("--epochs", type=int, default=10, help="upper epoch limit")
    t.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="stop after this much time (0: no limit)")
    t.add_argument("--optimizer", choices=["sgd", "adamw"], default="adamw")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 30 for sgd, 2e-3 for adamw)")
    t.add_argument("--lr-decay", type=float, default=0.25,
                   help="multiply the lr by this when validation loss does not improve")
    t.add_argument("--warmup-steps", type=int, default=0, help="linear lr warmup")
    t.add_argument("--wdecay", type=float, default=None,
                   help="weight decay (default 1.2e-6 for sgd as awd-lstm-lm, 0.01 for adamw)")
    t.add_argument("--clip", type=float, default=0.25, help="gradient norm clipping (0: off)")
    t.add_argument("--seed", type=int, default=1111, help="random seed")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off", help="autocast on CUDA")
    o = p.add_argument_group("output")
    o.add_argument("--save", default="runs/lm", help="run directory: checkpoints, metrics.jsonl")
    o.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                   help="continue from CKPT (default: last.pt in --save)")
    o.add_argument("--log-interval", type=int, default=200, help="steps between log lines")
    o.add_argument("--eval-interval", type=int, default=0, help="also validate every N steps (0: each epoch)")
    o.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return p


# -----------------------------------------------------------------------------
# helpers
# -----------------------------------------------------------------------------
def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_vectors_path(path: str) -> str:
    """A --vectors file, or a run directory's checkpoint (the file that is hashed)."""
    if os.path.isdir(path):
        from qrnn_lm.lm import resolve_checkpoint
        return resolve_checkpoint(path)
    if not os.path.isfile(path):
        raise QrnnLmError(f"--vectors file {path} does not exist.")
    return path


class PrepareFailed(Exception):
    """``qrnn_lm.prepare`` failed and has already told the user why."""


PREPARE_FLAGS = ("tokenizer", "vocab_size", "rare", "buckets", "vectors", "pos_depth", "workers", "seed")


def prepare_on_the_fly(args, is_master: bool, distributed: bool) -> str:
    """Tokenize --train/--valid/--test with ``qrnn_lm.prepare`` into a cache
    directory named by a hash of the files' contents and the prepare flags."""
    files = {s: getattr(args, s) for s in ("train", "valid", "test") if getattr(args, s)}
    for split, path in files.items():
        check_input_file(path, f"--{split} file")  # missing, a directory, not a file
        if os.path.getsize(path) == 0:
            raise QrnnLmError(f"--{split} file {path} is empty; give it some text (one paragraph a line).")
    from qrnn_lm.wordvec import VECTOR_KINDS
    vector_file = args.vectors if args.vectors and args.vectors not in VECTOR_KINDS else None
    if vector_file:
        vector_file = resolve_vectors_path(vector_file)
    settings = {k: getattr(args, k) for k in PREPARE_FLAGS if getattr(args, k) is not None}
    key = hashlib.sha256(json.dumps({"files": {s: _file_digest(p) for s, p in files.items()},
                                     "vectors": _file_digest(vector_file) if vector_file else None,
                                     "settings": settings}, sort_keys=True).encode()).hexdigest()[:16]
    cache = args.cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "qrnn_lm")
    out = os.path.join(cache, f"prepared-{key}")
    if is_master and not os.path.isfile(os.path.join(out, "vocab.json")):
        from qrnn_lm import prepare
        os.makedirs(cache, exist_ok=True)
        tmp = f"{out}.tmp{os.getpid()}"
        argv = [a for s, pth in files.items() for a in (f"--{s}", pth)] + ["--out", tmp]
        for k, v in settings.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        print(f"preparing the dataset into {out} ...", file=sys.stderr)
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


class PlateauScheduler:
    """lr = base * warmup(step) * scale; scale *= decay when validation stops improving."""

    def __init__(self, base_lr: float, warmup: int, decay: float):
        self.base_lr, self.warmup, self.decay = base_lr, warmup, decay
        self.scale, self.best = 1.0, float("inf")

    def get_lr(self, step: int) -> float:
        w = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        return self.base_lr * w * self.scale

    def step(self, val_loss: float):
        if val_loss < self.best:
            self.best = val_loss
        else:
            self.scale *= self.decay

    def state_dict(self):
        return {"scale": self.scale, "best": self.best}

    def load_state_dict(self, d):
        self.scale, self.best = float(d["scale"]), float(d["best"])


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
# main
# -----------------------------------------------------------------------------
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except QrnnLmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except torch.OutOfMemoryError:
        print("error: CUDA ran out of memory; lower --batch_size (or --eval-batch-size, --bptt, --nhid), "
              "or try --softmax adaptive or --amp bf16.", file=sys.stderr)
        return 1
    except PrepareFailed as e:
        return int(e.args[0]) or 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def train(args) -> int:
    # -------------------------------------------------------------------------
    # DDP: switched on by torchrun's RANK / WORLD_SIZE
    # -------------------------------------------------------------------------
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = "RANK" in os.environ and world_size > 1
    rank = int(os.environ.get("RANK", "0")) if distributed else 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    is_master = rank == 0

    if args.device == "cuda" and not torch.cuda.is_available():
        raise QrnnLmError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if args.amp != "off" and not use_cuda:
        raise QrnnLmError(f"--amp {args.amp} needs a CUDA device; use --amp off on CPU.")
    if args.resume is None and any(os.path.exists(os.path.join(args.save, n)) for n in (LAST, BEST)):
        # never overwrite a run's checkpoints by starting a new run over them
        raise QrnnLmError(f"--save {args.save} already holds a run; continue it with --resume, "
                          "or give another --save directory.")
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp == "fp16")
    log = print if is_master else (lambda *a, **k: None)

    # -------------------------------------------------------------------------
    # data
    # -------------------------------------------------------------------------
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
    eos = vocab.eos_id
    stream = args.batching == "stream"
    train_batches = make_batches(splits["train"], eos, args.batching, args.batch_size, args.bptt, train=True,
                                 random_length=not args.fixed_bptt, max_len=args.max_len, seed=args.seed,
                                 rank=rank, world_size=world_size)
    eval_batches = {name: make_batches(s, eos, args.batching, args.eval_batch_size, args.bptt, train=False,
                                       max_len=args.max_len)
                    for name, s in splits.items() if name != "train"}

    # -------------------------------------------------------------------------
    # model, optimizer, resume
    # -------------------------------------------------------------------------
    if is_master:
        os.makedirs(args.save, exist_ok=True)
    ckpt = None
    if args.resume is not None:
        path = args.resume or os.path.join(args.save, LAST)
        ckpt = load_checkpoint(path)
        if vocab_tokens(load_vocab_dict(ckpt["vocab"], ckpt["path"])) != vocab_tokens(vocab):
            raise QrnnLmError(f"checkpoint {ckpt['path']} was trained with another vocabulary than the dataset "
                              f"{data_dir}; resume with the data it was trained on.")
        for key in ("optimizer", "scheduler", "step", "data"):
            if key not in ckpt:
                raise QrnnLmError(f"checkpoint {ckpt['path']} holds no training state ({key!r}); "
                                  "it cannot be resumed (it can still be evaluated).")
    torch.manual_seed(args.seed)
    if ckpt is not None:
        model = build_model(ckpt, vocab)
        config = model.config
    else:
        try:
            config = ModelConfig(vocab_size=len(vocab), rnn=args.rnn, emsize=args.emsize, nhid=args.nhid,
                                 nlayers=args.nlayers, window=args.window, zoneout=args.zoneout,
                                 dropout=args.dropout, dropouth=args.dropouth, dropouti=args.dropouti,
                                 dropoute=args.dropoute, tied=args.tied, softmax=args.softmax,
                                 cutoffs=args.cutoffs or [])
        except ValueError as e:
            raise QrnnLmError(str(e).rstrip(".") + ".") from None
        model = RNNLanguageModel(config)
    model.to(device)
    raw_model = model
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if use_cuda else None,
            find_unused_parameters=config.softmax == "adaptive")  # a tail cluster may get no gradient
    lr = args.lr if args.lr is not None else (30.0 if args.optimizer == "sgd" else 2e-3)
    wdecay = args.wdecay if args.wdecay is not None else (1.2e-6 if args.optimizer == "sgd" else 0.01)
    optimizer = make_optimizer(raw_model, args.optimizer, lr, wdecay)
    scheduler = PlateauScheduler(lr, args.warmup_steps, args.lr_decay)
    step, epoch, start_batch, best_val, state = 0, 0, 0, float("inf"), None
    torch.manual_seed(args.seed + rank)  # different dropout masks on each rank
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise QrnnLmError(f"the optimizer state in {ckpt['path']} does not match --optimizer "
                              f"{args.optimizer}; resume with the flags it was trained with.") from None
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        step, best_val = int(ckpt["step"]), float(ckpt.get("best_val_loss", float("inf")))
        epoch, start_batch = int(ckpt["data"]["epoch"]), int(ckpt["data"]["batch"])
        rng = ckpt.get("rng") or []
        if len(rng) == world_size:  # restore this rank's RNG streams
            torch.set_rng_state(rng[rank]["torch"])
            if use_cuda and rng[rank].get("cuda") is not None:
                torch.cuda.set_rng_state(rng[rank]["cuda"])
        states = ckpt["data"].get("state")
        if stream and states is not None and len(states) == world_size:
            state = to_device(states[rank], device)
        log(f"resumed from {ckpt['path']} at step {step} (epoch {epoch + 1}, batch {start_batch})")
    nparams = sum(p.numel() for p in raw_model.parameters())
    log(f"model: {config.rnn.upper()} {config.nlayers}x{config.nhid}, emsize {config.emsize}, "
        f"{config.softmax} softmax over {config.vocab_size} outputs, {nparams / 1e6:.2f}M parameters; "
        f"device {device}{f' x{world_size}' if distributed else ''}")

    # -------------------------------------------------------------------------
    # logging: metrics.jsonl, TensorBoard and tqdm if installed
    # -------------------------------------------------------------------------
    metrics_path = os.path.join(args.save, "metrics.jsonl")

    def record(**row):
        if is_master:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if tb is not None:
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                        tb.add_scalar(f"{row.get('split', 'train')}/{k}", v, row.get("step", step))

    tb = None
    if is_master:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(os.path.join(args.save, "tb"))
        except ImportError:
            pass
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    rare_sums = {name: float(np.sum(s.rare_logp, dtype=np.float64)) for name, s in splits.items()}

    def evaluate(name: str) -> dict:
        with autocast():
            nll, n = total_nll(raw_model, eval_batches[name], device, stream)
        loss = nll / max(n, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 700)), "tokens": n,
                "bpc": bits_per_char(nll, rare_sums[name], splits[name].characters)}

    def checkpoint(path: str, next_epoch: int, next_batch: int):
        """Gather every rank's RNG and carried state, then rank 0 writes ``path``."""
        local = {"rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state() if use_cuda else None},
                 "state": to_plain(state) if stream and next_batch > 0 else None}
        everything = [None] * world_size
        if distributed:
            dist.all_gather_object(everything, local)
        else:
            everything = [local]
        if not is_master:
            return
        save_checkpoint({
            "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "config": config.to_dict(), "args": {k: v for k, v in vars(args).items()},
            "vocab": vocab.to_dict(), "rng": [e["rng"] for e in everything],
            "data": {"epoch": next_epoch, "batch": next_batch, "state": [e["state"] for e in everything]
                     if stream and next_batch > 0 else None},
            "step": step, "best_val_loss": best_val,
        }, path)

    def validate(next_epoch: int, next_batch: int, step_scheduler: bool = True):
        """Validate, step the plateau scheduler, save best and last.

        ``step_scheduler=False`` (a run stopped by --max-steps/--max-minutes
        mid-epoch) still keeps the final weights if they are the best, but
        leaves the scheduler as an uninterrupted run would have it, so that
        --resume stays exact."""
        nonlocal best_val
        if "valid" not in eval_batches:
            checkpoint(os.path.join(args.save, LAST), next_epoch, next_batch)
            return
        v = evaluate("valid")
        if step_scheduler:
            scheduler.step(v["loss"])
        improved = v["loss"] < best_val
        best_val = min(best_val, v["loss"])
        log(f"| validation | step {step:6d} | valid loss {v['loss']:5.2f} | valid ppl {v['ppl']:9.2f} "
            f"| valid bpc {v['bpc']:.4f} |{' best' if improved else ''}")
        record(split="valid", step=step, epoch=next_epoch, **v)
        checkpoint(os.path.join(args.save, LAST), next_epoch, next_batch)
        if improved and is_master:
            shutil.copyfile(os.path.join(args.save, LAST), os.path.join(args.save, BEST + ".tmp"))
            os.replace(os.path.join(args.save, BEST + ".tmp"), os.path.join(args.save, BEST))

    # Ctrl-C: finish the current step, save, exit.  A second Ctrl-C aborts.
    stop_request = {"sigint": False}

    def on_sigint(signum, frame):
        if stop_request["sigint"]:
            raise KeyboardInterrupt
        stop_request["sigint"] = True

    old_handler = None
    if hasattr(signal, "SIGINT") and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old_handler = signal.signal(signal.SIGINT, on_sigint)

    # -------------------------------------------------------------------------
    # training loop
    # -------------------------------------------------------------------------
    t_start = time.time()
    stop_reason = None
    last_good = os.path.join(args.save, LAST) if ckpt is not None else None
    try:
        while epoch < args.epochs and stop_reason is None:
            model.train()
            nbatches = len(train_batches.plan(epoch)) if stream else len(train_batches.batches(epoch))
            bar = None
            if tqdm is not None and is_master and not args.no_progress:
                bar = tqdm(total=nbatches, initial=start_batch, desc=f"epoch {epoch + 1}", leave=False,
                           dynamic_ncols=True, disable=None)
            interval_loss, interval_steps, interval_tokens, t_interval = 0.0, 0, 0, time.time()
            for index, x, y in train_batches.epoch(epoch, start_batch):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                step_lr = scheduler.get_lr(step)
                if stream and not args.fixed_bptt:  # awd-lstm-lm: lr scaled with the window length
                    step_lr *= x.size(0) / args.bptt
                for g in optimizer.param_groups:
                    g["lr"] = step_lr
                if stream:
                    state = raw_model.detach_state(state)
                try:
                    with autocast():
                        nll, new_state = model(x, state if stream else None, targets=y)
                        loss = nll.mean()
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                except torch.OutOfMemoryError:
                    raise QrnnLmError(f"CUDA ran out of memory at step {step + 1}; lower --batch_size "
                                      "(or --bptt / --max-len, --nhid), or try --softmax adaptive or --amp bf16."
                                      ) from None
                loss_value = loss.item()
                bad = not math.isfinite(loss_value)
                flags = torch.tensor([float(bad), float(stop_request["sigint"])])
                if distributed:  # every rank stops at the same step (NCCL reduces CUDA tensors only)
                    flags = flags.to(device)
                    dist.all_reduce(flags)
                    flags = flags.cpu()
                if flags[0] > 0:
                    where = (f"the last good checkpoint is {last_good}" if last_good
                             else "no checkpoint had been saved yet")
                    raise QrnnLmError(f"the training loss became {loss_value} at step {step + 1}, so training "
                                      f"stopped without saving it; {where}. Lower --lr, keep --clip on, "
                                      "or use --amp bf16 / off.")
                if args.clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.clip)
                scaler.step(optimizer)
                scaler.update()
                state = new_state if stream else None
                step += 1
                ntok = int(nll.numel()) * world_size
                interval_loss += loss_value
                interval_steps += 1
                interval_tokens += ntok
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", ppl=f"{math.exp(min(loss_value, 700)):.1f}",
                                    **{"tok/s": f"{interval_tokens / max(time.time() - t_interval, 1e-9):.0f}"})
                next_epoch, next_batch = (epoch, index + 1) if index + 1 < nbatches else (epoch + 1, 0)
                if step % args.log_interval == 0:
                    elapsed = time.time() - t_interval
                    cur = interval_loss / interval_steps
                    line = (f"| epoch {epoch + 1:3d} | step {step:7d} | {index + 1:5d}/{nbatches:5d} batches "
                            f"| lr {step_lr:.2e} | ms/batch {1000 * elapsed / interval_steps:7.1f} "
                            f"| loss {cur:5.2f} | ppl {math.exp(min(cur, 700)):8.2f} "
                            f"| tok/s {interval_tokens / max(elapsed, 1e-9):7.0f} |")
                    if bar is not None:
                        bar.write(line)
                    else:
                        log(line)
                    record(split="train", step=step, epoch=epoch + 1, loss=cur, ppl=math.exp(min(cur, 700)),
                           lr=step_lr, ms_per_batch=1000 * elapsed / interval_steps,
                           tok_per_s=interval_tokens / max(elapsed, 1e-9))
                    interval_loss, interval_steps, interval_tokens, t_interval = 0.0, 0, 0, time.time()
                validated_now = bool(args.eval_interval) and step % args.eval_interval == 0 and next_batch != 0
                if validated_now:
                    validate(next_epoch, next_batch)
                    last_good = os.path.join(args.save, LAST)
                    model.train()
                if flags[1] > 0:
                    stop_reason = "interrupted (Ctrl-C)"
                elif args.max_steps and step >= args.max_steps:
                    stop_reason = f"reached --max-steps {args.max_steps}"
                elif args.max_minutes and time.time() - t_start >= 60 * args.max_minutes:
                    stop_reason = f"reached --max-minutes {args.max_minutes:g}"
                if stop_reason:
                    if next_batch == 0:  # the epoch is complete: validate as an uninterrupted run would
                        validate(next_epoch, 0)
                    elif validated_now:
                        pass  # validated and saved at this very step, just above
                    elif flags[1] == 0:
                        # a budget ran out mid-epoch: the final weights may be the best ones
                        validate(next_epoch, next_batch, step_scheduler=False)
                    else:
                        checkpoint(os.path.join(args.save, LAST), next_epoch, next_batch)
                    last_good = os.path.join(args.save, LAST)
                    break
            else:
                # the epoch ran to its end
                if bar is not None:
                    bar.close()
                epoch, start_batch, state = epoch + 1, 0, None
                validate(epoch, 0)
                last_good = os.path.join(args.save, LAST)
                continue
            if bar is not None:
                bar.close()
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    if stop_reason:
        log(f"stopped at step {step}: {stop_reason}; saved {os.path.join(args.save, LAST)} "
            "(continue with --resume)")
    if stop_reason == "interrupted (Ctrl-C)":
        return 130

    # -------------------------------------------------------------------------
    # final evaluation with the best weights
    # -------------------------------------------------------------------------
    best_path = os.path.join(args.save, BEST)
    if os.path.isfile(best_path):
        raw_model.load_state_dict(load_checkpoint(best_path, map_location=device)["model"])
    results = {}
    for name in ("valid", "test"):
        if name in eval_batches:
            results[name] = r = evaluate(name)
            log(f"| end of training | {name} loss {r['loss']:5.2f} | {name} ppl {r['ppl']:9.2f} "
                f"| {name} bpc {r['bpc']:.4f} | tokens {r['tokens']} |")
            record(split=name, step=step, final=True, **r)
    if tb is not None:
        tb.close()
    if is_master:
        _plot_losses(metrics_path, os.path.join(args.save, "loss.png"))
        with open(os.path.join(args.save, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"step": step, **results}, f, indent=1)
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
