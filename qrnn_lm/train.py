"""Train a QRNN (or LSTM) language model.

    python train.py --train a.txt --valid b.txt --test c.txt --max-minutes 5   # defaults chosen for you
    python train.py --data DIR --save runs/ja --max-minutes 60                 # a prepared dataset
    python train.py --save runs/ja --resume                                    # continue runs/ja/last.pt
    torchrun --standalone --nproc_per_node=2 train.py ...                      # DDP, one process per GPU

The file reads top to bottom: flags; set-up (the run directory, the device,
data, the settings, the model or the resumed run's); ``train_step``, one
step on one batch; the loop (schedule, logging, validation, checkpoints,
stop signals); the final evaluation.  Elsewhere: the recipe (defaults rule, budget
schedule, resume policy) in recipe.py, the checkpoint format in
checkpoint.py, the run directory in rundir.py, logging in runlog.py, DDP in
distributed.py.  Losses are in nats per model token; bits per character are
exact over the original text (DESIGN.md section 3).  Every user-facing
failure is one sentence on stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time

import numpy as np
import torch

from qrnn_lm import amp, distributed, run_ngram
from qrnn_lm.checkpoint import (RunParts, TrainState, build_model, check_resumable, load_checkpoint,  # noqa: F401
                                load_vocab_dict, rank_snapshot, resume_training, to_device, to_plain, vocab_tokens,
                                write_checkpoint)
from qrnn_lm.data import make_batches
from qrnn_lm.distributed import World
from qrnn_lm.errors import ExitCode, Interrupted, QrnnLmError, StopSignals, exit_status, run_command, signal_name
from qrnn_lm.lm import bits_per_char, total_nll
from qrnn_lm.model import RNNLanguageModel
from qrnn_lm.recipe import (CHANGEABLE_ON_RESUME, FIXED_ON_RESUME, PREPARE_FLAGS, STATIC_DEFAULTS,  # noqa: F401
                            PrepareFailed, Settings, budget_progress, budget_reason, check_flags, choose_defaults,
                            estimate_validation_cost, eval_batches_for, fill_defaults, load_data, lr_at, make_optimizer,
                            merge_resumed_args, model_config, prepare_on_the_fly, prepare_settings,
                            resolve_settings, resolve_vectors_path, validation_due, decide_amp)
from qrnn_lm.recipe import seed_value
from qrnn_lm.rundir import (BEST, LAST, LOCK, RunLock, copy_best, ensure_writable_dir,  # noqa: F401
                            remove_orphan_temp_files, resolve_run)
from qrnn_lm.runlog import RunLog, StdoutLog, _plot_losses  # noqa: F401
from qrnn_lm.vocab import RARE_MODES

clock = time.monotonic   # the training-time clock (tests replace it)


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
    t.add_argument("--seed", type=seed_value, default=None, help="random seed (1111)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    t.add_argument("--ngram", type=int, default=None, metavar="ORDER",
                   help="mix the network with a Kneser-Ney n-gram of this order counted over the training ids "
                        "(0: none; default 5 when the training split has at most 10M tokens; one process only)")
    t.add_argument("--amp", choices=["off", "bf16", "fp16"], default=None,
                   help="autocast: bf16 (CPU or CUDA) or fp16 (CUDA); default off, or bf16 on a CPU with native "
                        "bf16 where a bf16 step measured >= 1.1x faster (QRNN_LM_AMP_PROBE=0: don't measure)")
    o = p.add_argument_group("output")
    o.add_argument("--save", default=None,
                   help="run directory: checkpoints, metrics.jsonl (default runs/lm, or the run --resume names)")
    o.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue the run in --save from its last.pt; RUN: a run directory or checkpoint "
                        "(one from elsewhere starts a new run only in an empty --save)")
    o.add_argument("--take-over", action="store_true", default=None, help="with --resume: take the run "
                   "directory's lock even if it looks alive (e.g. left by a preempted machine)")
    o.add_argument("--log-interval", type=int, default=None, help="steps between log lines (200)")
    o.add_argument("--eval-interval", type=int, default=None,
                   help="validate every N steps (0: each epoch; default: by time, about 5%% of it)")
    o.add_argument("--no-progress", action="store_true", default=None, help="no tqdm progress bar")
    return p


# --- main --------------------------------------------------------------------
def main(argv=None) -> int:
    locks = []

    def cleanup():
        for lock in locks:
            lock.release()
        distributed.shut_down()

    def command(argv):
        args = build_parser().parse_args(argv)
        given = {k for k, v in vars(args).items() if v is not None}
        check_flags(args)
        try:
            return train(setup(args, given, locks))
        except PrepareFailed as e:
            raise ExitCode(int(e.args[0]) or 1) from None

    return run_command(command, argv, cleanup=cleanup,
                       out_of_memory="out of memory; lower --batch_size (or --eval-batch-size, --bptt, --nhid), "
                                     "or try --softmax adaptive or --amp bf16.")


# --- set-up: the run directory, device, data, settings, model ---------------
@dataclasses.dataclass
class Run:
    """What set-up builds and the loop uses."""

    settings: Settings
    world: World
    device: torch.device
    ckpt: dict | None             # the checkpoint resumed from
    vocab: object
    splits: dict                  # name -> data.Split
    model: torch.nn.Module        # what trains: the model, DDP-wrapped when distributed
    raw_model: RNNLanguageModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    runlog: RunLog | None = None
    last_lr: float | None = None  # the schedule's last lr (logged)

    def __post_init__(self):
        s, eos = self.settings, self.vocab.eos_id
        self.train_batches = make_batches(self.splits["train"], eos, s.batching, s.batch_size, s.bptt, train=True,
                                          random_length=not s.fixed_bptt, max_len=s.max_len, seed=s.seed,
                                          rank=self.world.rank, world_size=self.world.size)
        self.eval_batches = {n: eval_batches_for(sp, eos, s) for n, sp in self.splits.items() if n != "train"}
        self.rare_sums = {n: float(np.sum(sp.rare_logp, dtype=np.float64)) for n, sp in self.splits.items()}
        self.parameters = sum(p.numel() for p in self.raw_model.parameters())
        self._nbatches = {}

    save = property(lambda self: self.settings.save)
    stream = property(lambda self: self.settings.batching == "stream")

    def log(self, text: str) -> None:
        if self.world.is_master:
            print(text, flush=True)

    def autocast(self):
        return amp.autocast_for(self.device.type, self.settings.amp)()

    def parts(self) -> RunParts:
        s = self.settings
        return RunParts(model=self.raw_model, optimizer=self.optimizer, scaler=self.scaler, vocab=self.vocab,
                        args=s.as_dict(), chosen=s.chosen,
                        inference={"batching": s.batching, "bptt": s.bptt, "max_len": s.max_len or 4 * s.bptt})

    def nbatches(self, epoch: int) -> int:
        if epoch not in self._nbatches:
            tb = self.train_batches
            self._nbatches = {epoch: len(tb.plan(epoch)) if self.stream else len(tb.batches(epoch))}
        return self._nbatches[epoch]

    def progress(self) -> float:
        a, s = self.settings, self.state
        return budget_progress(step=s.step, epoch_pos=s.epoch_pos(self.nbatches(s.epoch)), elapsed=s.elapsed,
                               max_steps=a.max_steps, max_minutes=a.max_minutes, epochs=a.epochs)

    def lr(self, progress: float) -> float:
        a = self.settings
        return lr_at(self.state.step, progress, peak=a.lr, warmup_steps=a.warmup_steps, schedule=a.schedule,
                     min_ratio=a.min_lr_ratio, plateau_scale=self.state.plateau_scale)


def setup(args, given: set, locks: list) -> Run:
    """The run directory (locked), the checkpoint resumed from, the device,
    the data, the settings resolved once, then the model and its state."""
    world = distributed.world_from_env()
    log = (lambda text: print(text, flush=True)) if world.is_master else (lambda text: None)
    save, resume_path, note = resolve_run(args.save, args.resume)
    if world.is_master:
        ensure_writable_dir(save, "--save")
        lock = RunLock(save)
        lock.acquire(print, take_over=bool(args.take_over))
        locks.append(lock)   # main() releases it
        locks.append(StdoutLog(save))   # RUN/train.log; a closed stdout is silenced, not fatal
        remove_orphan_temp_files(save, print)
    if note:
        log(note)
    ckpt = load_checkpoint(resume_path) if resume_path else None
    if ckpt is not None:
        check_resumable(ckpt)
    # the flags as the run has them (data, device), before the settings can be resolved
    flags = argparse.Namespace(**(merge_resumed_args(vars(args), ckpt, given)[0] if ckpt else vars(args)))
    device = distributed.setup_device(flags.device or "auto", flags.amp or "off", world)
    data_dir, vocab, splits = load_data(flags, world.is_master, world.distributed)
    if ckpt is not None and vocab_tokens(load_vocab_dict(ckpt["vocab"], ckpt["path"])) != vocab_tokens(vocab):
        raise QrnnLmError(f"checkpoint {ckpt['path']} was trained with another vocabulary than the "
                          f"dataset {data_dir}; resume with the data it was trained on.")
    probe = {"seconds": 0.0}
    settings = resolve_settings(args, given, ckpt, save=save, train_tokens=splits["train"].tokens,
                                vocab_size=len(vocab), device=device.type, log=log,
                                decide_amp=lambda flags: decide_amp(flags, world, device, splits, len(vocab), probe))
    run = setup_model(settings, world, device, ckpt, vocab, splits)
    run.state.elapsed += probe["seconds"] + run_ngram.count(run, clock)   # bf16 probe, n-gram: in the budget
    c = run.raw_model.config
    log(f"model: {c.rnn.upper()} {c.nlayers}x{c.nhid}, emsize {c.emsize}, {c.softmax} softmax over "
        f"{c.vocab_size} outputs, {run.parameters / 1e6:.2f}M parameters; device {device}"
        f"{f' x{world.size}' if world.distributed else ''}")
    return run


def setup_model(s: Settings, world: World, device: torch.device, ckpt: dict | None, vocab, splits) -> Run:
    """Build the model (or the resumed run's), the optimizer and the state,
    restoring the resumed run's optimizer, grad scaler, state and RNG."""
    torch.manual_seed(s.seed)
    raw = (build_model(ckpt, vocab) if ckpt is not None else RNNLanguageModel(model_config(s, len(vocab)))).to(device)
    model = distributed.wrap(raw, world, device)
    run = Run(settings=s, world=world, device=device, ckpt=ckpt, vocab=vocab, splits=splits, model=model,
              raw_model=raw, optimizer=make_optimizer(raw, s.optimizer, s.lr, s.wdecay), state=TrainState(),
              scaler=torch.amp.GradScaler("cuda", enabled=s.amp == "fp16"))
    torch.manual_seed(s.seed + world.rank)  # different dropout masks on each rank
    if ckpt is not None:
        run.state = resume_training(ckpt, run.parts(), rank=world.rank, world_size=world.size, device=device,
                                    epoch_batches=run.nbatches, split_tokens=splits["train"].tokens, log=run.log)
    return run


# --- one training step -------------------------------------------------------
def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               state=None, *, clip: float = 0.25, scaler=None, autocast=contextlib.nullcontext,
               before_update=None) -> tuple:
    """Forward, backward, gradient clipping and the optimizer step on one batch.

    ``model``: an RNNLanguageModel (or its DDP wrapper); ``x``, ``y``: input
    and target ids on the model's device; ``state``: the recurrent state
    carried from the previous batch (stream batching; cut from its graph
    here) or None; ``clip``: gradient norm limit (0: off); ``scaler``: the
    fp16 GradScaler, ``autocast``: a context for the forward (mixed
    precision); ``before_update(loss)``: called after backward, before the
    weights change (it may raise to stop).  Returns (the loss as a float,
    the number of target tokens, the new state)."""
    raw = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if state is not None:
        state = raw.detach_state(state)
    with autocast():
        nll, new_state = model(x, state, targets=y)
        loss = nll.mean()
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    loss_value = loss.item()
    if before_update is not None:
        before_update(loss_value)
    if clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss_value, int(nll.numel()), new_state


# --- the loop ----------------------------------------------------------------
def train(run: Run) -> int:
    """Train, then the final evaluation.  Ctrl-C, SIGTERM and SIGHUP finish
    the step, save it and exit 130 / 143 / 129; a second one aborts."""
    a, s = run.settings, run.state
    if s.finished and run.progress() >= 1.0:
        run.log(f"the run in {run.save} is finished ({s.finished}, step {s.step}); nothing to do. Give a "
                "larger --max-minutes, --max-steps or --epochs to train it further.")
        return 0
    if run.ckpt is not None:
        run.log(f"resumed from {run.ckpt['path']} at step {s.step} (epoch {s.epoch + 1}, batch {s.batch}, "
                f"{s.elapsed / 60:.2f} minutes trained)")
    s.finished = ""
    run.runlog = RunLog(run.save, run.world.is_master, progress=not a.no_progress)
    run.runlog.record(event="start", step=s.step, parameters=run.parameters, settings=a.as_dict(),
                      device=run.device.type, world_size=run.world.size)
    with StopSignals() as stop:
        try:
            stop_reason = loop(run, stop)
        finally:
            run.runlog.close_bar()
    last = os.path.join(run.save, LAST)
    if stop.agreed:
        run.log(stop.sentence(s.step, last))
        run.runlog.close()
        return exit_status(stop.agreed)
    floor = f", floor {a.lr * a.min_lr_ratio:.2e}" if a.schedule in ("cosine", "linear") else ""
    last_lr = run.last_lr if run.last_lr is not None else a.lr
    run.log(f"stopped at step {s.step}: {stop_reason} (last lr {last_lr:.2e}{floor}); saved {last}")
    try:
        rc = final_evaluation(run)
    except Interrupted as e:
        e.detail = (f" during the final evaluation; the trained run is saved in {last} and "
                    f"{os.path.join(run.save, BEST)}; evaluate it with python -m qrnn_lm evaluate")
        raise
    run.runlog.close()
    return rc


def loop(run: Run, stop: StopSignals) -> str:
    """Train until the budget is spent or a stop signal; returns why it stopped."""
    a, s = run.settings, run.state
    last_good = os.path.join(run.save, LAST) if run.ckpt is not None else None
    t_session = clock() - s.elapsed    # elapsed: wall time of all sessions, validations included
    at_start = (s.elapsed, s.train_seconds, s.valid_seconds)
    last_val_end = s.elapsed
    val_cost = estimate_validation_cost(run.splits["valid"].tokens, run.device.type == "cuda") \
        if "valid" in run.splits else 0.0

    def agree_to_go_on(loss_value):    # every rank stops at the same step
        bad, stop.agreed = distributed.agree(run.world, run.device, not math.isfinite(loss_value), stop.signum)
        if bad:
            where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint had been saved yet"
            raise QrnnLmError(f"the training loss became {loss_value} at step {s.step + 1}, so training "
                              f"stopped without saving it; {where}. Lower --lr, keep --clip on, or use "
                              "--amp bf16 / off.")
    while True:
        nbatches = s.epoch_in_progress(run.nbatches)   # never a spin past an epoch's end
        run.model.train()
        run.runlog.open_bar(nbatches, s.batch, s.epoch)
        t_interval, acc = clock(), [0.0, 0, 0]        # loss sum, steps, tokens since the last log line
        for index, x, y in run.train_batches.epoch(s.epoch, s.batch):
            # the schedule: progress in steps / training time / epochs, whichever is furthest
            s.elapsed = clock() - t_session
            step_lr = run.last_lr = run.lr(run.progress())   # the schedule's lr (logged), before window scaling
            if run.stream and not a.fixed_bptt:               # awd-lstm-lm: lr scaled with the window length
                step_lr *= x.size(0) / a.bptt
            for g in run.optimizer.param_groups:
                g["lr"] = step_lr
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            try:
                with distributed.peers(run.world, run.save):
                    loss_value, ntok, new_state = train_step(
                        run.model, run.optimizer, x, y, s.rnn_state if run.stream else None, clip=a.clip,
                        scaler=run.scaler, autocast=run.autocast, before_update=agree_to_go_on)
            except torch.OutOfMemoryError:
                raise QrnnLmError(f"CUDA ran out of memory at step {s.step + 1}; lower --batch_size (or "
                                  "--bptt / --max-len, --nhid), or try --softmax adaptive or --amp bf16.") from None
            s.rnn_state = new_state if run.stream else None
            s.step += 1
            s.epoch, s.batch = (s.epoch, index + 1) if index + 1 < nbatches else (s.epoch + 1, 0)
            if s.batch == 0:
                s.rnn_state = None
            s.elapsed = clock() - t_session
            s.train_seconds = at_start[1] + (s.elapsed - at_start[0]) - (s.valid_seconds - at_start[2])
            # log, validate, stop
            acc[0] += loss_value
            acc[1] += 1
            acc[2] += ntok * run.world.size
            s.tokens += ntok * run.world.size
            run.runlog.tick(loss=f"{loss_value:.3f}", **{"tok/s": f"{acc[2] / max(clock() - t_interval, 1e-9):.0f}"})
            if s.step % a.log_interval == 0:
                run.runlog.train_interval(s, lr=step_lr, loss_sum=acc[0], steps=acc[1], tokens=acc[2], index=index,
                                          nbatches=nbatches, seconds=clock() - t_interval, progress=run.progress())
                t_interval, acc = clock(), [0.0, 0, 0]
            if stop.agreed:                         # a stop signal: save where we are, no validation
                save_last(run)
                return signal_name(stop.agreed)
            stop_reason = budget_reason(a, step=s.step, elapsed=s.elapsed) if run.progress() >= 1.0 else ""
            s.finished = stop_reason
            epoch_end = s.batch == 0 and a.eval_interval is not None
            if stop_reason or epoch_end or validation_due(a, step=s.step, next_batch=s.batch, last_cost=val_cost,
                                                          has_valid="valid" in run.eval_batches,
                                                          since_last=s.elapsed - last_val_end):
                # a budget that runs out mid-epoch is not a plateau step (--resume stays exact)
                val_cost = validate(run, step_plateau=not stop_reason or s.batch == 0)
                last_val_end = s.elapsed = clock() - t_session
                t_interval += val_cost                  # speeds are of training time only
                last_good = os.path.join(run.save, LAST)
            if stop_reason:
                return stop_reason
            if s.batch == 0:
                break
        run.runlog.close_bar()


# --- validation and checkpoints ----------------------------------------------
def evaluate(run: Run, name: str) -> dict:
    with run.autocast():
        nll, n = total_nll(run.raw_model, run.eval_batches[name], run.device, run.stream)
    loss = nll / max(n, 1)
    return {"loss": loss, "ppl": math.exp(min(loss, 700)), "tokens": n,
            "bpc": bits_per_char(nll, run.rare_sums[name], run.splits[name].characters)}


def save_last(run: Run) -> None:
    """Gather every rank's RNG and carried state, then rank 0 writes last.pt."""
    s = run.state
    s.epoch_batches, s.split_tokens = run.nbatches(s.epoch), run.splits["train"].tokens   # the data position
    s.epoch_tokens = run.train_batches.consumed(s.epoch, s.batch) * run.world.size
    local = rank_snapshot(s.rnn_state if run.stream and s.batch > 0 else None, cuda=run.device.type == "cuda")
    with distributed.peers(run.world, run.save):
        ranks = distributed.gather(run.world, local)
    if run.world.is_master:
        write_checkpoint(s.to_checkpoint(run.parts(), ranks), os.path.join(run.save, LAST))


def validate(run: Run, step_plateau: bool = True) -> float:
    """Validate, step the plateau schedule, save last (and best); returns
    the seconds it took.  ``step_plateau=False`` (a run stopped by its
    budget mid-epoch) keeps the schedule as an uninterrupted run would
    have it, so that --resume stays exact."""
    t0 = clock()
    a, s, improved, row, before = run.settings, run.state, False, None, run.state.valid_seconds
    if "valid" in run.eval_batches:
        v = evaluate(run, "valid")
        if step_plateau and a.schedule == "plateau":
            if v["loss"] < s.plateau_best:
                s.plateau_best = v["loss"]
            else:
                s.plateau_scale *= a.lr_decay
        improved = v["loss"] < s.best_val_loss
        s.best_val_loss = min(s.best_val_loss, v["loss"])
        run.runlog.validation_line(s.step, v, improved)
        row = dict(split="valid", step=s.step, epoch=s.epoch, **v)
    s.valid_seconds = before + clock() - t0     # the checkpoint counts the evaluation, not its own writing
    save_last(run)
    if improved and run.world.is_master:
        copy_best(run.save)
    seconds = clock() - t0
    s.valid_seconds = before + seconds
    if row is not None:
        run.runlog.record(**row, seconds=seconds, train_seconds=s.train_seconds, valid_seconds=s.valid_seconds)
    run.raw_model.train()
    return seconds


# --- the final evaluation, with the best weights -----------------------------
def final_evaluation(run: Run) -> int:
    s = run.state
    best_path = os.path.join(run.save, BEST)
    if os.path.isfile(best_path):
        run.raw_model.load_state_dict(load_checkpoint(best_path, map_location=run.device)["model"])
    results = {}
    for name in ("valid", "test"):
        if name in run.eval_batches:
            results[name] = evaluate(run, name)
            run.runlog.final(name, s.step, results[name])
    mixed = run_ngram.mix(run, results)   # then the run's figures are the mixture's, as `evaluate` reports
    run.runlog.results(run.save, s, chosen=run.settings.chosen, parameters=run.parameters,
                       **(dict(mixed["splits"], network=results, ngram=mixed) if mixed else results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
