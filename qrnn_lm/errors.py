"""User-facing errors, and the one wrapper every command runs under.

Anything a user can cause (bad flags, missing files, wrong shapes at the API
boundary) raises :class:`QrnnLmError` -- or ``ValueError`` at the tensor API --
with one sentence that says what was wrong and what to do.  The command-line
entry points run under :func:`run_command`, which prints only that sentence
and turns it into an exit code.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from typing import Callable, Sequence


class QrnnLmError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class ExitCode(Exception):
    """Stop a command with this exit code; whatever needed saying was said."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = int(code)


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP; SIGINT is KeyboardInterrupt itself)
    raised where the command cannot stop cleanly by itself; ``detail``
    completes the sentence (where it stopped, what was kept)."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum)
        self.signum, self.detail = int(signum), detail


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130 for SIGINT,
    143 for SIGTERM, 129 for SIGHUP."""
    return 128 + int(signum)


def install_stop_handlers(handler: Callable[[int], None], signums=STOP_SIGNALS) -> Callable[[], None]:
    """Route each of ``signums`` this process owns to ``handler(signum)``:
    owned means the main thread and a handler that is the default one or
    one of these (a signal the parent ignores -- SIGINT in a background job,
    SIGHUP under nohup -- stays ignored).  A forked child (a worker pool)
    that inherits the handler dies of the signal as by default.  Returns
    the function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    owner, old = os.getpid(), {}

    def on_signal(signum, frame):
        if os.getpid() != owner:          # a forked worker: die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        handler(signum)

    on_signal.stop_handler = True
    for signum in signums:
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler) or getattr(current, "stop_handler", False):
            old[signum] = signal.signal(signum, on_signal)

    def restore():
        for signum, previous in old.items():
            signal.signal(signum, previous)
    return restore


def _raise_interrupted(signum: int) -> None:
    raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(signum)


class StopSignals:
    """While training: the first Ctrl-C, SIGTERM or SIGHUP sets ``signum``
    (the loop finishes its step, every rank agrees, saves and exits with
    ``exit_status``); a second one aborts."""

    def __init__(self):
        self.signum = 0     # a signal this process got
        self.agreed = 0     # the signal every rank stops for (distributed.agree)

    def __enter__(self):
        self._restore = install_stop_handlers(self._on_signal)
        return self

    def __exit__(self, *exc):
        self._restore()

    def _on_signal(self, signum: int) -> None:
        if self.signum:
            _raise_interrupted(signum)
        self.signum = signum

    def sentence(self, step: int, saved: str) -> str:
        name = "interrupted (Ctrl-C)" if self.agreed == signal.SIGINT else f"stopped by {signal_name(self.agreed)}"
        return f"{name} at step {step}; saved {saved}; continue with --resume"


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    if isinstance(e, torch.OutOfMemoryError):
        return True
    # CPU allocations that fail raise RuntimeError("... DefaultCPUAllocator: not enough memory ...")
    return isinstance(e, RuntimeError) and ("not enough memory" in str(e) or "can't allocate memory" in str(e))


def run_command(fn: Callable[[list], int], argv: Sequence[str] | None, *,
                interrupted: str = "interrupted.",
                out_of_memory: str = "out of memory; give smaller sizes (--batch-size, --nhid, ...).",
                cleanup: Callable[[], None] | None = None) -> int:
    """Run ``fn(argv)`` as a command: its return value is the exit code;
    :class:`QrnnLmError` prints ``error: <sentence>`` and exits 1; running out
    of memory prints ``error: <out_of_memory>`` and exits 1; Ctrl-C prints
    ``interrupted`` and exits 130; SIGTERM and SIGHUP print ``stopped by
    SIGTERM`` and exit 143 / 129; :class:`ExitCode` exits with its code.
    ``cleanup`` runs in every case (locks, process groups)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    restore = install_stop_handlers(_raise_interrupted, STOP_SIGNALS[1:])
    try:
        return fn(argv)
    except QrnnLmError as e:
        _say(f"error: {e}")
        return 1
    except ExitCode as e:
        return e.code or 1
    except Interrupted as e:     # the command's own Ctrl-C sentence, naming the signal
        name = f"stopped by {signal_name(e.signum)}"
        _say(f"{name}{e.detail}." if e.detail or "interrupted" not in interrupted else
             interrupted.replace("interrupted", name, 1))
        return exit_status(e.signum)
    except KeyboardInterrupt:
        _say(interrupted)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _is_oom(e):
            raise
        _say(f"error: {out_of_memory}")
        return 1
    finally:
        try:
            if cleanup is not None:
                cleanup()
        except KeyboardInterrupt:   # another signal while cleaning up: the first outcome stands
            pass
        finally:
            warnings.showwarning = shown
            restore()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning under a command: one ``warning: ...`` line, without
    the internal source line and file position Python prints by default."""
    text = " ".join(str(message).split())
    _say(f"warning: {text}" if text else f"warning: {category.__name__}")


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):  # stderr closed: the exit code still tells
        pass
