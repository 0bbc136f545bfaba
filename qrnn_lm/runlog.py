"""What a training run tells: stdout lines, ``RUNDIR/metrics.jsonl``,
TensorBoard and a tqdm bar if installed (rank 0 only), and ``loss.png``.

metrics.jsonl holds one JSON object a line: a ``{"event": "start", ...}`` row
at the start of each session, then rows with a ``split`` (train, valid, and
the final valid/test figures with ``"final": true``); experiments read it
and ``results.json``, never stdout.  ``RUNDIR/train.log`` gets every line
the run prints on stdout (``StdoutLog``), and a stdout that goes away (a
``| head`` or a ``tee`` that ended, a closed terminal) is silenced while
training goes on.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading

from .rundir import atomic_write

LOG_FILE = "train.log"


class StdoutLog:
    """``sys.stdout`` while a run trains: every write goes to the terminal (or
    pipe) and to ``RUNDIR/train.log``.  When the terminal or pipe is gone
    (BrokenPipeError, EPIPE, EIO, a closed file), its descriptor is pointed at
    /dev/null and only the log file is written.  ``release()`` puts the
    old stdout back (and removes a log it made for a run that never started
    training, so a failed start leaves the directory as it was)."""

    def __init__(self, run_dir: str):
        self.stream = sys.stdout
        self.path, self.metrics_path = os.path.join(run_dir, LOG_FILE), os.path.join(run_dir, "metrics.jsonl")
        self.created = not os.path.exists(self.path)
        self.file = open(self.path, "a", encoding="utf-8")
        self.silenced = self.stream is None
        if (hasattr(signal, "SIGPIPE") and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGPIPE) == signal.SIG_DFL):
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)   # a closed pipe is an error to handle, not death
        sys.stdout = self

    def write(self, text: str) -> int:
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.write(text)
                if "\n" in text:
                    self.file.flush()
        if not self.silenced:
            try:
                self.stream.write(text)
            except (OSError, ValueError):
                self.silence()
        return len(text)

    def flush(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.flush()
        if not self.silenced:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.silence()

    def silence(self) -> None:
        """The terminal or pipe is gone: point its descriptor at /dev/null
        (so that no later flush, ours or the interpreter's at exit, fails)."""
        self.silenced = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self.stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
            self.stream.flush()      # what was buffered goes to /dev/null

    def isatty(self) -> bool:
        return not self.silenced and bool(getattr(self.stream, "isatty", lambda: False)())

    def __getattr__(self, name):     # encoding, fileno, ... as the stream has them
        return getattr(self.stream, name)

    def release(self) -> None:
        if sys.stdout is self:
            sys.stdout = self.stream
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.close()
                if self.created and not os.path.exists(self.metrics_path):
                    os.remove(self.path)    # the run never started: its directory stays as it was
            self.file = None


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
        if self.tb is not None and "split" in row:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{row['split']}/{k}", v, row.get("step", 0))

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

    # -- the lines and rows of a run -----------------------------------------
    def train_interval(self, state, *, lr: float, loss_sum: float, steps: int, tokens: int, seconds: float,
                       index: int, nbatches: int, progress: float) -> None:
        """The log line and metrics row of the ``steps`` steps since the last
        one (``seconds``: their training time, validations excluded)."""
        s = state
        cur = loss_sum / steps
        tok_s = tokens / max(seconds, 1e-9)
        self.line(f"| epoch {s.epoch + 1 if s.batch else s.epoch:3d} | step {s.step:7d} | {index + 1:5d}/"
                  f"{nbatches:5d} batches | lr {lr:.2e} | ms/batch {1000 * seconds / steps:7.1f} "
                  f"| loss {cur:5.2f} | ppl {math.exp(min(cur, 700)):8.2f} | tok/s {tok_s:7.0f} "
                  f"| {s.elapsed / 60:5.2f} min |")
        self.record(split="train", step=s.step, epoch=s.epoch + 1, loss=cur, ppl=math.exp(min(cur, 700)),
                    lr=lr, ms_per_batch=1000 * seconds / steps, tok_per_s=tok_s,
                    minutes=s.elapsed / 60, progress=progress, train_seconds=s.train_seconds)

    def validation_line(self, step: int, v: dict, improved: bool) -> None:
        self.line(f"| validation | step {step:6d} | valid loss {v['loss']:5.2f} | valid ppl "
                  f"{v['ppl']:9.2f} | valid bpc {v['bpc']:.4f} |{' best' if improved else ''}")

    def final(self, name: str, step: int, r: dict) -> None:
        self.line(f"| end of training | {name} loss {r['loss']:5.2f} | {name} ppl {r['ppl']:9.2f} "
                  f"| {name} bpc {r['bpc']:.4f} | tokens {r['tokens']} |")
        self.record(split=name, step=step, final=True, **r)

    def results(self, run_dir: str, state, **figures) -> None:
        """``results.json`` (and loss.png): the run's final figures, its
        size and where its time went."""
        if not self.is_master:
            return
        s = state
        _plot_losses(self.metrics_path, os.path.join(run_dir, "loss.png"))
        text = json.dumps({"step": s.step, "tokens": s.tokens, "minutes": s.elapsed / 60, **figures,
                           "train_seconds": s.train_seconds, "valid_seconds": s.valid_seconds,
                           "tokens_per_second": s.tokens / s.train_seconds if s.train_seconds > 0 else None,
                           "stop_reason": s.finished}, indent=1)
        atomic_write(os.path.join(run_dir, "results.json"), lambda f: f.write(text.encode("utf-8")))


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
