"""Loads the compiled fo-pooling kernels (the ``torch.ops.qrnn_lm`` ops).

Order of attempts, once per process:

1. ``import qrnn_lm._C``, the extension built by ``pip install``; skipped when
   ``qrnn_lm/_build_info.json`` says it was built against another torch
   (loading it would fail on missing symbols or, worse, misbehave);
2. a JIT build of the CPU sources in ``csrc/`` with
   ``torch.utils.cpp_extension.load`` (plus the CUDA sources only when a GPU
   is visible and a toolkit exists); ``QRNN_LM_NO_JIT=1`` skips it;
3. otherwise the pure-PyTorch references, with one warning saying why and how
   to fix it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import torch

_lock = threading.Lock()
_state = {"loaded": None, "how": None, "why": None}

_PKG = Path(__file__).resolve().parent


def _csrc_dir() -> Path | None:
    # source checkout (editable install or PYTHONPATH) first, then the copy
    # that setup.py ships inside the package
    for d in (_PKG.parent / "csrc", _PKG / "_csrc"):
        if (d / "fo_pool.cpp").is_file():
            return d
    return None


def shared_libstdcxx() -> list:
    """Link arguments naming the shared C++ runtime (libstdc++.so.6) by path.

    Where g++ finds only libstdc++.a (an image without the libstdc++.so
    link) or LDFLAGS asks for -static-libstdc++, the module would carry its
    own copy of libstdc++, and two copies in one process break iostreams:
    formatting an error message then crashed or lost its numbers (seen on an
    Ubuntu 24.04 / GCC 13 GPU image).  Naming the shared library makes every
    libstdc++ symbol resolve to the one torch uses.  Used by setup.py and
    the JIT build."""
    if not sys.platform.startswith("linux"):
        return []
    cxx = os.environ.get("CXX", "c++")
    try:
        path = subprocess.run([cxx, "-print-file-name=libstdc++.so.6"], capture_output=True,
                              text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    return [path] if os.path.isabs(path) and os.path.exists(path) else []


def _has_cudart(home) -> bool:
    return any(os.path.exists(os.path.join(home, d, "libcudart.so")) for d in ("lib64", "lib"))


def fix_cuda_home(cpp_extension) -> str | None:
    """Points torch at the toolkit that the nvcc on PATH really runs.

    Without CUDA_HOME/CUDA_PATH, torch takes the toolkit to be the parent of
    the directory of the nvcc on PATH; for a wrapper script such as
    /usr/local/bin/nvcc that execs /usr/local/cuda-13.0/bin/nvcc, that is
    /usr/local, which has no libcudart, and the link fails ("cannot find
    -lcudart").  nvcc --dryrun names its real root (TOP=...); when torch's
    guess lacks libcudart and that root has it, it replaces torch's
    CUDA_HOME (and the variable, for child processes).  Returns the new
    home, or None when nothing was changed.  Used by setup.py and the JIT
    build."""
    home = cpp_extension.CUDA_HOME
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not home \
            or _has_cudart(home):
        return None
    nvcc = os.path.join(home, "bin", "nvcc")
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "qrnn_lm_probe.cu"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("#$ TOP="):
            top = os.path.normpath(line[len("#$ TOP="):].strip())  # .../bin/..
            if os.path.isfile(os.path.join(top, "bin", "nvcc")) and _has_cudart(top) \
                    and os.path.normpath(home) != top:
                cpp_extension.CUDA_HOME = top
                os.environ["CUDA_HOME"] = top
                return top
    return None


def _torch_base(v: str) -> str:
    return v.split("+")[0]


def _try_prebuilt() -> str | None:
    """Imports qrnn_lm._C; returns None on success, else the reason."""
    info_path = _PKG / "_build_info.json"
    if info_path.is_file():
        try:
            built = json.loads(info_path.read_text()).get("torch")
        except (OSError, ValueError):
            built = None
        if built and built != torch.__version__:
            return (f"the compiled extension was built against torch {built} but "
                    f"torch {torch.__version__} is installed")
    try:
        import qrnn_lm._C  # noqa: F401  (registers torch.ops.qrnn_lm.*)
    except ImportError as e:
        return f"qrnn_lm._C could not be imported ({e})"
    except OSError as e:
        return f"qrnn_lm._C could not be loaded ({e})"
    return None


def _try_jit() -> str | None:
    if os.environ.get("QRNN_LM_NO_JIT", "") not in ("", "0"):
        return "QRNN_LM_NO_JIT is set"
    src = _csrc_dir()
    if src is None:
        return "the csrc/ sources are not available for a JIT build"
    from torch.utils import cpp_extension
    sources = sorted(str(p) for p in src.glob("*.cpp"))
    flags = ["-O3", "-fno-trapping-math"]  # as setup.py
    cuda = False
    if torch.cuda.is_available() and torch.version.cuda and cpp_extension.CUDA_HOME:
        fix_cuda_home(cpp_extension)
        sources += sorted(str(p) for p in src.glob("*.cu"))
        cuda = True
    if os.environ.get("QRNN_LM_DEBUG", "") not in ("", "0"):
        flags = ["-O0", "-g"]
    try:
        cpp_extension.load(
            name="qrnn_lm_jit_cuda" if cuda else "qrnn_lm_jit",
            sources=sources,
            extra_cflags=flags + (["-DQRNN_LM_WITH_CUDA"] if cuda else []),
            extra_cuda_cflags=["-O3"] if cuda else None,
            extra_ldflags=shared_libstdcxx(),
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # compiler missing, build error, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the JIT build from {src} failed ({first})"
    return None


def load() -> bool:
    """Loads the kernels once; returns True when compiled ops are registered."""
    with _lock:
        if _state["loaded"] is not None:
            return _state["loaded"]
        if hasattr(torch.ops.qrnn_lm, "fo_pool") and _has_kernel("fo_pool", "CPU"):
            # already registered (e.g. imported by hand)
            _state.update(loaded=True, how="already loaded")
            return True
        why = _try_prebuilt()
        if why is None:
            _state.update(loaded=True, how="qrnn_lm._C")
            return True
        why_jit = _try_jit()
        if why_jit is None:
            _state.update(loaded=True, how="JIT build", why=why)
            return True
        _state.update(loaded=False, why=f"{why}; {why_jit}")
        warnings.warn(
            f"qrnn_lm: compiled fo-pooling kernels unavailable ({why}; {why_jit}); "
            "using the slow pure-PyTorch reference. Fix: run "
            "`pip install --no-build-isolation .` (or `-e .`) in the qrnn_lm "
            "source directory with the torch you run with.",
            RuntimeWarning, stacklevel=3)
        return False


def _has_kernel(op: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"qrnn_lm::{op}", key)
    except RuntimeError:
        return False


_devices_cache: frozenset | None = None


def compiled_devices() -> frozenset:
    """Device types served by compiled kernels in this process."""
    global _devices_cache
    if _devices_cache is None:
        devices = set()
        if load():
            if _has_kernel("fo_pool", "CPU"):
                devices.add("cpu")
            if _has_kernel("fo_pool", "CUDA"):
                devices.add("cuda")
            from . import ops
            ops._register_python_side()
        _devices_cache = frozenset(devices)
    return _devices_cache


def info() -> dict:
    """How the kernels were (or were not) loaded, for diagnostics."""
    compiled_devices()
    return dict(_state)
