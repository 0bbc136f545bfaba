"""User-facing errors, and the one wrapper every command runs under.

Anything a user can cause (bad flags, missing files, wrong shapes at the API
boundary) raises :class:`QrnnLmError` -- or ``ValueError`` at the tensor API --
with one sentence that says what was wrong and what to do.  The command-line
entry points run under :func:`run_command`, which prints only that sentence
and turns it into an exit code.
"""
from __future__ import annotations

import sys
import warnings
from typing import Callable, Sequence


class QrnnLmError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class ExitCode(Exception):
    """Stop a command with this exit code; whatever needed saying was said."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = int(code)


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
    ``interrupted`` and exits 130; :class:`ExitCode` exits with its code.
    ``cleanup`` runs in every case (locks, process groups)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return fn(argv)
    except QrnnLmError as e:
        _say(f"error: {e}")
        return 1
    except ExitCode as e:
        return e.code or 1
    except KeyboardInterrupt:
        _say(interrupted)
        return 130
    except (MemoryError, RuntimeError) as e:
        if not _is_oom(e):
            raise
        _say(f"error: {out_of_memory}")
        return 1
    finally:
        warnings.showwarning = shown
        if cleanup is not None:
            cleanup()


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
