"""Run and dataset directories on disk: where files go, and how they are
written so that a crash, Ctrl-C, a full disk or a second process never
leaves a half-written or mixed-up directory.

- run directories (train.py ``--save``): ``resolve_run`` (the resume rules),
  ``ensure_writable_dir``, ``RunLock`` (``RUNDIR/lock``),
  ``remove_orphan_temp_files``, ``write_checkpoint_file`` / ``copy_best``;
- dataset directories (``prepare --out``): ``staged_output`` writes into a
  staging directory beside ``--out`` that replaces it only when complete;
- both: ``atomic_write`` (temp file, fsync, rename), ``nearest_existing``,
  ``is_disk_full`` and ``os_error_reason`` (an OSError in a few words).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
import time

from .errors import QrnnLmError

BEST, LAST, LOCK = "best.pt", "last.pt", "lock"


# --------------------------------------------------------------------------
# shared: paths, errors, atomic writes
# --------------------------------------------------------------------------
def nearest_existing(path: str) -> str:
    """``path`` or its nearest ancestor that exists ("" if none does)."""
    path = os.path.abspath(path)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return ""
        path = parent
    return path


def is_disk_full(e: BaseException | None) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def os_error_reason(e: OSError) -> str:
    """The cause of an OSError in a few words, naming its file."""
    name = f" (writing {e.filename})" if e.filename else ""
    if is_disk_full(e):
        return f"the disk is full{name}, free some space and run prepare again"
    if e.errno == errno.EDQUOT:
        return f"the disk quota is exceeded{name}, free some space and run prepare again"
    name = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied{name}, choose a place you can write to"
    if e.errno == errno.EROFS:
        return f"the file system is read-only{name}, choose a writable place"
    if e.errno == errno.ENOTDIR:
        return f"a part of the path is a file, not a directory{name}"
    return f"{e.strerror or e}{name}"


@contextlib.contextmanager
def writing(path: str):
    """Give an OSError raised while writing ``path`` that file's name (a
    failed ``write()`` carries none)."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = path
        raise


def atomic_write(path: str, write) -> None:
    """``write(f)`` into a temp file beside ``path``, flushed to disk, then
    renamed over ``path``: a crash or Ctrl-C mid-write never leaves a
    half-written file under the real name."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------
# run directories
# --------------------------------------------------------------------------
def resolve_run(save: str | None, resume: str | None) -> tuple:
    """(save_dir, checkpoint path or None, note) following the resume rules:
    ``--resume`` continues the run in --save from its last.pt; a checkpoint
    from elsewhere starts a new run directory, and only in an empty --save."""
    if resume is None:
        save = save or "runs/lm"
        if any(os.path.exists(os.path.join(save, n)) for n in (LAST, BEST)):
            raise QrnnLmError(f"--save {save} already holds a run; continue it with --resume, "
                              "or give another --save directory.")
        return save, None, ""
    if resume == "":
        save = save or "runs/lm"
        path = os.path.join(save, LAST)
        if not os.path.isfile(path):
            raise QrnnLmError(f"--resume: {save} holds no run to continue (no {LAST} in it); start one with "
                              f"--save {save}, or give --resume RUN.")
        return save, path, ""
    if os.path.isdir(resume):
        path = os.path.join(resume, LAST)
        if not os.path.isfile(path):
            raise QrnnLmError(f"--resume {resume}: the directory holds no {LAST} to continue.")
    elif os.path.isfile(resume):
        path = resume
    else:
        raise QrnnLmError(f"--resume {resume} does not exist; give a run directory or a checkpoint file.")
    home = os.path.dirname(os.path.abspath(path))
    save = save or os.path.dirname(path) or "."
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


def ensure_writable_dir(path: str, flag: str) -> None:
    """Create ``path`` if needed and check a file can be written in it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise QrnnLmError(f"{flag} {path} is a file, not a directory; give a directory.")
    parent = nearest_existing(path)
    if parent and not os.path.isdir(parent):
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie -- killed,
    not yet reaped -- does not).  Used for prepare's staging directories and
    train.py's run-directory lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # e.g. another user's process: it exists
        return True
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` of this host started, as "BOOT-ID:TICKS" (the
    boot and the start time in clock ticks since boot, from /proc), or None
    where /proc cannot tell.  A pid reused by a later process has another."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    boot = ""
    with contextlib.suppress(OSError):
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    return f"{boot}:{ticks}"


def lock_record() -> dict:
    """What a lock file holds: this process's pid, host, the time it took the
    lock and its start time (so a reused pid is recognised)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "started": process_start(os.getpid())}


def read_lock(path: str):
    """The owner a lock file names, or None (half-written or damaged: stale)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def lock_owner_alive(owner) -> bool:
    """Whether the owner of a lock may still run: another host's cannot be
    checked (assumed alive); on this host, a pid that is gone, a zombie, this
    very process, or a live pid started at another time (reused) is not."""
    if owner is None:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    if not pid_alive(pid):
        return False
    started, now = owner.get("started"), process_start(pid)
    return not (isinstance(started, str) and now is not None and started != now)


class RunLock:
    """``RUNDIR/lock`` holds the owner's pid, host and process start time
    while a run uses the directory.  A lock whose process is gone (same
    host, pid not running, or running but started at another time: a reused
    pid) is stale and taken over; a lock that may be alive (a live pid, or
    another host, which cannot be checked) is an error naming ``--take-over``,
    which takes it all the same."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK)
        self.held = False

    def acquire(self, log, take_over: bool = False) -> None:
        """Take the lock; ``take_over``: even one that looks alive (the user
        says its process is gone, e.g. on a preempted machine)."""
        me = lock_record()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_lock(self.path)
                who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "process ? on ?"
                since = f" (since {owner.get('since', '?')})" if owner else ""
                if lock_owner_alive(owner):
                    if not take_over:
                        raise QrnnLmError(
                            f"the run directory {os.path.dirname(self.path)} is in use by {who}{since}; wait for "
                            "it to end or give another --save; if that process is gone (e.g. a preempted "
                            "machine), resume with --resume --take-over.") from None
                    log(f"taking over the lock of {os.path.dirname(self.path)} held by {who}{since}, "
                        "as --take-over asks")
                else:
                    log(f"taking over the stale lock of {os.path.dirname(self.path)} ({who} is gone)")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise QrnnLmError(f"cannot take the lock {self.path}; another process keeps taking it.")

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


def write_checkpoint_file(path: str, write) -> None:
    """``atomic_write`` of a checkpoint, with a failure (a full disk above
    all) said in one sentence that tells the previous checkpoints are intact."""
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as e:
        for tmp in glob.glob(glob.escape(path) + ".tmp*"):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if is_disk_full(e):
            raise QrnnLmError(f"cannot write the checkpoint {path}: the disk is full; the previous checkpoints "
                              f"in {os.path.dirname(path) or '.'} are intact (free some space and --resume).") from None
        raise QrnnLmError(f"cannot write the checkpoint {path} ({e}); the previous checkpoints in "
                          f"{os.path.dirname(path) or '.'} are intact.") from None


def copy_best(run_dir: str) -> None:
    """last.pt becomes best.pt (a copy, renamed into place)."""
    tmp = os.path.join(run_dir, BEST + ".tmp")
    try:
        shutil.copyfile(os.path.join(run_dir, LAST), tmp)
        os.replace(tmp, os.path.join(run_dir, BEST))
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        what = "the disk is full" if is_disk_full(e) else str(e)
        raise QrnnLmError(f"cannot write the checkpoint {os.path.join(run_dir, BEST)}: {what}; the previous "
                          f"checkpoints in {run_dir} are intact.") from None


# --------------------------------------------------------------------------
# dataset directories: staged beside --out, swapped in when complete
# --------------------------------------------------------------------------
_STAGE_TAG = ".prepare-"


def _stage_prefix(out: str) -> str:
    return f".{os.path.basename(out)}{_STAGE_TAG}{socket.gethostname()}-"


def remove_stale_staging(parent: str, log=None) -> None:
    """Remove what killed runs of ``prepare`` left in ``parent``: staging
    directories ``.NAME.prepare-HOST-PID-*`` of this host whose process is gone."""
    marker = f"{_STAGE_TAG}{socket.gethostname()}-"
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(".") or marker not in name:
            continue
        pid = name.rsplit(marker, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            if log:
                log(f"removed {os.path.join(parent, name)}, left by an interrupted prepare")


def _remove_orphan_parts(out: str, log=None) -> None:
    """``*.npy.tmp`` / ``vocab.json.tmp`` inside ``out``: raw parts that an
    earlier prepare writing directly into ``out`` left when it failed."""
    try:
        names = os.listdir(out)
    except OSError:
        return
    for name in names:
        if name.endswith((".npy.tmp", "vocab.json.tmp")):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(out, name))
                if log:
                    log(f"removed {os.path.join(out, name)}, left by a failed prepare")


def _check_out(out: str, force: bool, inputs: dict) -> str:
    """The absolute --out path after checking it can become the dataset."""
    if not out:
        raise QrnnLmError("--out must name a directory.")
    path = os.path.realpath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise QrnnLmError(f"--out {out} is a file, not a directory; give a directory path.")
    anc = nearest_existing(os.path.dirname(path))
    if anc and not os.path.isdir(anc):
        raise QrnnLmError(f"--out {out} cannot be created because {anc} is a file, not a "
                          "directory.")
    if os.path.isdir(path) and os.listdir(path):
        if not force:
            raise QrnnLmError(f"--out {out} is not empty (it holds {sorted(os.listdir(path))[0]}"
                              f"{' and more' if len(os.listdir(path)) > 1 else ''}); give a new "
                              "or empty directory, or --force to replace it whole.")
        _refuse_a_run_inside(path, out)
        cwd = os.path.realpath(os.getcwd())
        if cwd == path or cwd.startswith(path + os.sep):
            raise QrnnLmError(f"--force would delete --out {out}, which holds the current "
                              "directory; run prepare from elsewhere.")
        for flag, p in inputs.items():
            if p is None:
                continue
            rp = os.path.realpath(p)
            if rp == path or rp.startswith(path + os.sep):
                raise QrnnLmError(f"{flag} {p} lies inside --out {out}, which --force would "
                                  "delete; move it out of that directory first.")
    return path


def _refuse_a_run_inside(path: str, out: str) -> None:
    """--force never deletes a run directory saved inside --out."""
    for top, dirs, files in os.walk(path):
        dirs.sort()
        for name in (BEST, LAST, LOCK, "metrics.jsonl"):
            if name in files:
                where = os.path.join(out, os.path.relpath(top, path)) if top != path else out
                raise QrnnLmError(f"--force would delete the run in {os.path.normpath(where)} (it holds {name}) "
                                  f"inside --out {out}; move that run out of it first, or give another --out.")


@contextlib.contextmanager
def staged_output(out: str, *, force: bool = False, inputs: dict | None = None, log=None):
    """Yield a new directory beside ``out`` to write a dataset into; when the
    block ends without an exception it replaces ``out`` (which must be new or
    empty unless ``force``), otherwise it is deleted and ``out`` is untouched.
    An OSError inside the block becomes a QrnnLmError naming the file."""
    if out and os.path.isdir(out):
        _remove_orphan_parts(os.path.realpath(out), log)
    path = _check_out(out, force, inputs or {})
    parent = os.path.dirname(path)
    remove_stale_staging(parent, log)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=_stage_prefix(path) + f"{os.getpid()}-", dir=parent)
    except OSError as e:
        if isinstance(e.filename, str) and _STAGE_TAG in e.filename:
            e.filename = parent   # the staging directory is an internal name
        raise QrnnLmError(f"cannot create --out {out}: {os_error_reason(e)}.") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        yield tmp
        _swap_in(tmp, path, parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name = e.filename if isinstance(e.filename, str) else None
        if name and os.path.abspath(name).startswith(tmp + os.sep):
            e.filename = os.path.join(out, os.path.relpath(os.path.abspath(name), tmp))
        raise QrnnLmError(f"cannot write the dataset: {os_error_reason(e)}; the partial files "
                          f"were removed and --out {out} is as it was before.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: str, path: str, parent: str) -> None:
    """The complete staging directory ``tmp`` becomes ``path``."""
    old = None
    cwd = os.path.realpath(os.getcwd())
    if os.path.isdir(path) and not os.listdir(path) and (
            cwd == path or cwd.startswith(path + os.sep)):
        # an empty --out that is (or holds) the working directory stays in
        # place: move the files in, vocab.json last
        names = sorted(os.listdir(tmp), key=lambda n: n == "vocab.json")
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
        os.rmdir(tmp)
        return
    if os.path.isdir(path):
        if os.listdir(path):
            old = tempfile.mkdtemp(prefix=_stage_prefix(path) + f"{os.getpid()}-old-", dir=parent)
            os.replace(path, os.path.join(old, "dataset"))
        else:
            os.rmdir(path)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
