"""The recipe of a run: which data and settings it trains with, and how
its learning rate and validations follow its budget.

- ``check_flags``: values no run can use, refused before anything starts;
- ``choose_defaults``: the defaults rule (flags left out, from the corpus
  size, the device and the budget);
- the data (in :mod:`qrnn_lm.run_data`, re-exported here):
  ``prepare_settings`` (the ``prepare`` flags for --train files),
  ``prepare_on_the_fly`` (the cached dataset), ``load_data``,
  ``eval_batches_for``;
- the resume policy: ``FIXED_ON_RESUME``, ``CHANGEABLE_ON_RESUME``,
  ``STATIC_DEFAULTS``, ``merge_resumed_args`` and ``fill_defaults``;
  ``resolve_amp`` (--amp: given, the resumed run's, or the rule's choice)
  and ``decide_amp`` (the rule, measuring bf16 on a new run's model);
- ``resolve_settings``: the flags resolved once into a read-only
  ``Settings`` (given, else the resumed run's, else a static default, else
  chosen by the rule), printing the "changed on resume" and "chosen for
  this run" lines;
- the schedule: ``budget_progress``, ``lr_at`` and ``budget_reason``;
  ``model_config`` and ``make_optimizer``; when to validate
  (``validation_due``, ``estimate_validation_cost``).
"""
from __future__ import annotations

import math
import time

import torch

from . import amp, distributed
from .amp import choose_amp
from .errors import QrnnLmError
from .model import ModelConfig, RNNLanguageModel
from .model_size import FLAG_OF, check_flag_sizes, check_model_size
from .ngram import MAX_ORDER as MAX_NGRAM_ORDER, auto_order as ngram_auto_order
from .run_data import (PREPARE_FLAGS, PrepareFailed, eval_batches_for, load_data,  # noqa: F401 (the recipe's data)
                       prepare_on_the_fly, prepare_settings, resolve_vectors_path)


# -----------------------------------------------------------------------------
# flags no run can use
# -----------------------------------------------------------------------------
def seed_value(text: str):
    """``--seed``'s argparse type: a whole number (also 1e3), else the text, which check_flags refuses."""
    try:
        return int(text) if text.strip().lstrip("+-").isdigit() else int(x) if (x := float(text)).is_integer() else text
    except ValueError:
        return text


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
    ngram = getattr(args, "ngram", None)
    if ngram is not None and not 0 <= ngram <= MAX_NGRAM_ORDER:
        bad(f"--ngram must be an order from 1 to {MAX_NGRAM_ORDER}, or 0 for none; not {ngram}.")
    if getattr(args, "take_over", None) and args.resume is None:
        bad("--take-over takes over the lock of a run you continue; give it with --resume.")
    if args.seed is not None and not (isinstance(args.seed, int) and 0 <= args.seed < 2 ** 63):
        shown = f"{args.seed:g}" if isinstance(args.seed, int) and abs(args.seed) >= 2 ** 63 else args.seed
        bad(f"--seed must be a whole number from 0 to 2**63-1, not {shown}.")
    check_flag_sizes(args)


# -----------------------------------------------------------------------------
# the defaults rule: what a run is not told, from corpus size, device and budget
# -----------------------------------------------------------------------------
#: Tokens a 5-minute CPU budget allows at the rule's speed: from there on a CPU
#: run gets QRNN 2x384, emsize 192 (measured: docs/RESULTS.md "What a budget buys").
CPU_GROWN_TOKENS = 12_000.0 * 60.0 * 5


def choose_defaults(*, train_tokens: int, vocab_size: int, device: str, minutes: float = 0.0, max_steps: int = 0,
                    epochs: int = 0, optimizer: str = "adamw", rnn: str = "qrnn", batch_size: int | None = None,
                    bptt: int | None = None) -> dict:
    """Settings for a run that was told only its data and budget.

    The rule (README "Defaults", DESIGN.md section 4; measured on the 2.1M-token
    Japanese corpus, docs/RESULTS.md "What a budget buys"):

    - CPU: a 2x256 QRNN with emsize 128 (~1.4M parameters at 5k outputs),
      batch 32 x bptt 35: what a few CPU minutes can fit; from a 5-minute
      budget on (CPU_GROWN_TOKENS), 2x384 with emsize 192 (at 5 minutes on
      ja-debian-docs its network reached 2.593 test BPC against 2.623 for
      2x256, one seed each).  A GPU processes ~20x more tokens per second:
      3x1024, emsize 400, batch 64 x 70.
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
    grown = not cuda and tokens >= CPU_GROWN_TOKENS   # a CPU budget of 5 minutes or more: a wider model
    return {
        "emsize": 400 if big else (192 if grown else 128), "nhid": 1024 if big else (384 if grown else 256),
        "nlayers": 3 if big else 2,
        "batch_size": batch_size, "bptt": bptt,
        "dropout": drop, "dropouth": drop, "dropouti": drop, "dropoute": drope,
        "softmax": "adaptive" if vocab_size > 2000 else "full",
        "lr": 30.0 if optimizer == "sgd" else (2e-3 if cuda else 5e-3),
        "wdecay": 1.2e-6 if optimizer == "sgd" else 0.01,
        "warmup_steps": 0 if optimizer == "sgd" else int(min(200, max(1, round(0.02 * steps)))),
    }


# -----------------------------------------------------------------------------
# the settings: resolved once, with the resume policy
# -----------------------------------------------------------------------------
# Flags a resumed run keeps from its checkpoint (an explicit different value is an error naming it).
FIXED_ON_RESUME = ("rnn", "emsize", "nhid", "nlayers", "window", "tied", "softmax", "cutoffs", "dropout",
                   "dropouth", "dropouti", "dropoute", "zoneout", "batching", "bptt", "fixed_bptt", "max_len",
                   "batch_size", "optimizer", "seed")
# Flags that may change on resume (reported in one line when they do).
CHANGEABLE_ON_RESUME = ("epochs", "max_steps", "max_minutes", "lr", "schedule", "min_lr_ratio", "lr_decay",
                        "warmup_steps", "wdecay", "clip", "eval_interval", "eval_batch_size", "log_interval",
                        "device", "amp", "no_progress", "ngram")
# Flags of one session only: never taken from the checkpoint (--take-over: take the run
# directory's lock even when it looks alive, e.g. left on a preempted machine).
SESSION_ONLY = ("resume", "save", "take_over")
# Everything that is not a model/optimizer setting: never "chosen" (--amp left out is chosen by
# resolve_amp: off on CUDA; bf16 on a CPU with native bf16 where it measured faster).
STATIC_DEFAULTS = {"rnn": "qrnn", "window": 2, "zoneout": 0.0, "tied": False, "batching": "stream",
                   "fixed_bptt": False, "optimizer": "adamw", "schedule": "cosine", "min_lr_ratio": 0.1,
                   "lr_decay": 0.25, "clip": 0.25, "seed": 1111, "device": "auto",
                   "log_interval": 200, "eval_batch_size": 32, "max_steps": 0, "max_minutes": 0.0,
                   "no_progress": False}


class Settings:
    """The run's flags resolved once (``resolve_settings``): read like the
    argparse namespace (``settings.lr``), never changed afterwards.
    ``as_dict()`` is what checkpoints store as ``args``; ``chosen`` holds the
    values the defaults rule chose (all sessions of the run)."""

    __slots__ = ("_values", "chosen")

    def __init__(self, values: dict, chosen: dict):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "chosen", dict(chosen))

    def __getattr__(self, name: str):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"the settings of a run are resolved once; {name} cannot change")

    def as_dict(self) -> dict:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def merge_resumed_args(args: dict, ckpt: dict, given: set) -> tuple:
    """The flags of a resumed run: those not given take the run's values;
    model-shape flags that contradict the run are an error naming them.
    Returns (flags, the "changed on resume" items); ``args`` is not changed."""
    old = ckpt.get("args") or {}
    chosen = ckpt.get("chosen") or {}
    conflicts = []
    for k in FIXED_ON_RESUME:
        was = old.get(k)
        if k in given and was is not None and args[k] != was:
            conflicts.append(f"--{k.replace('_', '-') if k != 'batch_size' else k} {_show(args[k])} "
                             f"(the run has {_show(was)})")
    cfg = ckpt.get("config") or {}
    for k in ("rnn", "emsize", "nhid", "nlayers", "window", "softmax"):
        if k in given and k in cfg and args[k] != cfg[k] and not any(c.startswith(f"--{k} ") for c in conflicts):
            conflicts.append(f"--{k} {_show(args[k])} (the run has {_show(cfg[k])})")
    if conflicts:
        raise QrnnLmError(f"these flags contradict the run in {ckpt['path']}: {', '.join(conflicts)}; "
                          "leave them out to resume, or start a new run in another --save.")
    flags, changed = dict(args), []
    for k, v in args.items():
        if k in SESSION_ONLY:
            continue
        if k not in given:
            if k in old:
                flags[k] = old[k]
        elif k in CHANGEABLE_ON_RESUME and old.get(k, chosen.get(k)) != v:
            changed.append(f"--{k.replace('_', '-')} {_show(old.get(k, chosen.get(k)))} -> {_show(v)}")
    return flags, changed


def fill_defaults(flags: dict, *, train_tokens: int, vocab_size: int, device: str) -> tuple:
    """The flags left out filled: the static defaults, then ``choose_defaults``.
    Returns (flags, the values the rule chose); ``flags`` is not changed."""
    flags = dict(flags)
    for k, v in STATIC_DEFAULTS.items():
        if flags[k] is None:
            flags[k] = v
    if flags["epochs"] is None:
        flags["epochs"] = 0 if (flags["max_steps"] or flags["max_minutes"]) else 10
    rule = choose_defaults(train_tokens=train_tokens, vocab_size=vocab_size, device=device,
                           minutes=flags["max_minutes"], max_steps=flags["max_steps"], epochs=flags["epochs"],
                           optimizer=flags["optimizer"], rnn=flags["rnn"], batch_size=flags["batch_size"],
                           bptt=flags["bptt"])
    rule["ngram"] = ngram_auto_order(train_tokens)
    chosen = {}
    for k, v in rule.items():
        if flags.get(k) is None:
            flags[k] = chosen[k] = v
    if flags["schedule"] == "plateau" and flags["eval_interval"] is None:
        flags["eval_interval"] = 0     # plateau decay: validate each epoch, as awd-lstm-lm
    return flags, chosen


def resolve_amp(flags: dict, given: set, ckpt: dict | None, device: str, decide=None) -> tuple:
    """--amp of this session and a sentence saying why: given (checked, fp16
    on the CPU refused), else on --resume the run's recorded value (never
    measured again, so a resumed run stays exact), else ``decide(flags)`` --
    the defaults rule, ``amp.choose_amp`` (train.py's also measures bf16 on
    the actual model and batch).  Returns (amp, reason, chosen by the rule)."""
    if "amp" in given and flags.get("amp") is not None:
        return (*choose_amp(device, requested=flags["amp"]), False)
    if ckpt is not None:
        amp = flags.get("amp") or "off"
        was = (ckpt.get("chosen") or {}).get("amp_reason")
        return amp, f"{amp}: kept from the run" + (f" ({was})" if was else ""), False
    amp, reason = decide(flags) if decide is not None else choose_amp(device, native=False)
    return amp, reason, True


def decide_amp(flags: dict, world, device: torch.device, splits, vocab_size: int, probe: dict) -> tuple:
    """--amp of a new run that left it out (``amp.choose_amp``): on a CPU with
    native bf16, rank 0 times bf16 against float32 on this run's model and a
    batch of its shape, for a few seconds (``probe["seconds"]``); every rank
    gets rank 0's choice.  Returns (amp, reason)."""
    def measure():
        if not amp.probe_allowed():
            return None
        t0 = time.monotonic()
        batch = amp.probe_batch(splits["train"].ids, flags["batch_size"], flags["bptt"])
        ratio = amp.measure_bf16_speedup(lambda: RNNLanguageModel(model_config(Settings(flags, {}), vocab_size)),
                                         batch, steps=6, max_seconds=3.0)
        probe["seconds"] = time.monotonic() - t0
        return ratio

    choice, reason, probe["seconds"] = distributed.decided_on_master(
        world, lambda: (*amp.choose_amp(device.type, measure), probe["seconds"]))
    return choice, reason


def resolve_settings(args, given: set, ckpt: dict | None, *, save: str, train_tokens: int, vocab_size: int,
                     device: str, log, decide_amp=None) -> Settings:
    """The run's settings, resolved once: the flags given, else (on --resume)
    the run's, else the static defaults, else the defaults rule for this
    corpus, device and budget (``decide_amp(flags) -> (amp, reason)``: the
    rule for --amp, see ``resolve_amp``).  Prints what changed on resume and
    what was chosen, one line each."""
    flags, changed = dict(vars(args)), []
    if ckpt is not None:
        flags, changed = merge_resumed_args(flags, ckpt, given)
    flags["save"] = save
    if changed:
        log("changed on resume: " + ", ".join(changed))
    flags, chosen = fill_defaults(flags, train_tokens=train_tokens, vocab_size=vocab_size, device=device)
    flags["amp"], flags["amp_reason"], by_rule = resolve_amp(flags, given, ckpt, device, decide_amp)
    if by_rule:
        chosen.update(amp=flags["amp"], amp_reason=flags["amp_reason"])
    shown = {k: v for k, v in chosen.items() if k != "amp_reason"}
    if by_rule:
        shown["amp"] = f"{flags['amp']} ({flags['amp_reason'].partition(': ')[2]})"
    if flags["eval_interval"] is None:
        shown["validation"] = "by time"
    if shown:
        log("chosen for this run (corpus, device, budget; flags given win): "
            + " ".join(f"{k}={_show(v)}" for k, v in shown.items()))
    if ckpt is not None:
        chosen = dict(ckpt.get("chosen") or {}, **chosen)
    return Settings(flags, chosen)


def _show(v) -> str:
    if v is None:
        return "default"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return str(v)


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


def budget_reason(settings, *, step: int, elapsed: float) -> str:
    """Why a run whose budget is spent stopped, naming the bound."""
    a = settings
    if a.max_steps and step >= a.max_steps:
        return f"reached --max-steps {a.max_steps}"
    if a.max_minutes and elapsed >= 60 * a.max_minutes:
        return f"reached --max-minutes {a.max_minutes:g}"
    return f"reached --epochs {a.epochs}"


# -----------------------------------------------------------------------------
# the model and the optimizer of a new run
# -----------------------------------------------------------------------------
def model_config(settings, vocab_size: int):
    """The ModelConfig of a new run's settings (a shape the model refuses: one sentence)."""
    s = settings
    try:
        config = ModelConfig(vocab_size=vocab_size, rnn=s.rnn, emsize=s.emsize, nhid=s.nhid, nlayers=s.nlayers,
                             window=s.window, zoneout=s.zoneout, dropout=s.dropout, dropouth=s.dropouth,
                             dropouti=s.dropouti, dropoute=s.dropoute, tied=s.tied, softmax=s.softmax,
                             cutoffs=s.cutoffs or [])
    except ValueError as e:
        raise QrnnLmError(str(e).rstrip(".") + ".") from None
    check_model_size(config, what="the model of these flags", training=not torch.cuda.is_available(), names=FLAG_OF)
    return config


def make_optimizer(model, name: str, lr: float, wdecay: float):
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
# when to validate
# -----------------------------------------------------------------------------
def validation_due(settings, *, step: int, next_batch: int, has_valid: bool, since_last: float,
                   last_cost: float) -> bool:
    """--eval-interval N: every N steps; by time (the default): when the
    time since the last validation is 19x what it cost (<= 5% of the run),
    at least 10 s, and at most 10 times per --max-minutes budget."""
    a = settings
    if a.eval_interval is not None:
        return bool(a.eval_interval) and step % a.eval_interval == 0 and next_batch != 0
    if not has_valid:
        return since_last >= 300.0        # nothing to validate: save last.pt every 5 minutes
    gap = max(19.0 * last_cost, 10.0, 6.0 * (a.max_minutes or 0.0))
    return since_last >= gap


def estimate_validation_cost(valid_tokens: int, cuda: bool) -> float:
    """Seconds one validation should take before any was measured: the
    validation tokens at three times a conservative training speed."""
    return valid_tokens / (3 * (250_000.0 if cuda else 8_000.0))
