"""``OUT.lock``: one ``prepare`` at a time writes a dataset directory.

The lock is a small JSON file beside ``--out`` (pid, host, start time),
created with ``os.link`` of a complete temp file, so it is never seen
half-written and only one process can create it.  A second prepare of the
same ``--out`` fails with a sentence naming the process that holds it; a lock
left by a process of this host that is gone (or whose pid was reused) is
taken over (the owner rules of the run lock, :func:`qrnn_lm.rundir.lock_owner_alive`)."""
from __future__ import annotations

import contextlib
import json
import os
import socket

from .errors import QrnnLmError
from .rundir import _check_out, _remove_orphan_parts, lock_owner_alive, lock_record, os_error_reason, read_lock


@contextlib.contextmanager
def out_lock(out: str, *, force: bool = False, inputs: dict | None = None, log=None):
    """Hold ``OUT.lock`` for the block (``--out`` is checked first, so a bad
    ``out`` is its own sentence); removed when the block ends."""
    if out and os.path.isdir(out):
        _remove_orphan_parts(os.path.realpath(out), log)   # before the check, as staged_output does
    path = _check_out(out, force, inputs or {})
    try:
        lock = _take(path, out, log)
    except OSError as e:
        raise QrnnLmError(f"cannot create --out {out}: {os_error_reason(e)}.") from None
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)


def _take(path: str, out: str, log) -> str:
    lock = path + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{lock}.{socket.gethostname()}-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(lock_record(), f)
    try:
        for _ in range(3):
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                pass
            owner = read_lock(lock)
            if lock_owner_alive(owner):
                raise QrnnLmError(
                    f"--out {out} is being prepared by process {owner.get('pid')} on {owner.get('host')} "
                    f"(since {owner.get('since', '?')}); wait for it to end, or delete {lock} if that "
                    "process is gone.")
            _take_over(lock, owner)
            if log and owner is not None:
                log(f"took over the stale lock {lock} of process {owner.get('pid')}, which is gone")
        raise QrnnLmError(f"cannot take the lock {lock}; another prepare of --out {out} keeps taking it.")
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _take_over(lock: str, owner) -> None:
    """Remove the stale ``lock`` of ``owner`` -- unless another prepare took
    it over meanwhile (then its fresh lock is put back)."""
    stale = f"{lock}.stale-{os.getpid()}"
    try:
        os.rename(lock, stale)
    except FileNotFoundError:
        return
    if read_lock(stale) != owner:
        with contextlib.suppress(OSError):
            os.link(stale, lock)
    with contextlib.suppress(OSError):
        os.remove(stale)
