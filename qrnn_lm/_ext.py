"""Loads the compiled fo-pooling kernels (the ``torch.ops.qrnn_lm`` ops) and
reports which devices they serve.  The Python side of the ops (argument
checks, autograd, fake implementations) is :mod:`qrnn_lm.ops`, which imports
this module; this one imports nothing of the package but :mod:`qrnn_lm._build`.

Order of attempts, once per process:

1. ``import qrnn_lm._C``, the extension built by ``pip install``; skipped when
   ``qrnn_lm/_build_info.json`` says it was built against another torch
   (loading it would fail on missing symbols or, worse, misbehave);
2. a JIT build of the CPU sources in ``csrc/`` with
   ``torch.utils.cpp_extension.load`` (plus the CUDA sources only when a GPU
   is visible and a toolkit exists), with the flags of ``setup.py``
   (:mod:`qrnn_lm._build`); ``QRNN_LM_NO_JIT=1`` skips it;
3. otherwise the pure-PyTorch references, with one warning saying why and how
   to fix it.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import torch

from . import _build

_lock = threading.Lock()
_devices: frozenset | None = None

_PKG = Path(__file__).resolve().parent


def _csrc_dir() -> Path | None:
    # source checkout (editable install or PYTHONPATH) first, then the copy
    # that setup.py ships inside the package
    for d in (_PKG.parent / "csrc", _PKG / "_csrc"):
        if (d / "fo_pool.cpp").is_file():
            return d
    return None


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
    """Builds and loads the kernels from csrc/; returns None on success, else the reason."""
    if _build.env_flag("QRNN_LM_NO_JIT"):
        return "QRNN_LM_NO_JIT is set"
    src = _csrc_dir()
    if src is None:
        return "the csrc/ sources are not available for a JIT build"
    from torch.utils import cpp_extension
    cuda = bool(torch.cuda.is_available() and torch.version.cuda and cpp_extension.CUDA_HOME)
    if cuda:
        _build.fix_cuda_home(cpp_extension)  # nvcc on PATH may be a wrapper script
    try:
        cpp_extension.load(
            name="qrnn_lm_jit_cuda" if cuda else "qrnn_lm_jit",
            sources=[str(p) for p in _build.sources(src, cuda)],
            extra_cflags=_build.cxx_flags(cuda),
            extra_cuda_cflags=_build.nvcc_flags() if cuda else None,
            extra_ldflags=_build.shared_libstdcxx(),
            is_python_module=False,
            verbose=False,
        )
    except Exception as e:  # compiler missing, build error, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"the JIT build from {src} failed ({first})"
    return None


def _has_kernel(op: str, key: str) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"qrnn_lm::{op}", key)
    except RuntimeError:
        return False


def _load() -> bool:
    """Registers the compiled ops; True on success, else one warning and False."""
    if hasattr(torch.ops.qrnn_lm, "fo_pool") and _has_kernel("fo_pool", "CPU"):
        return True  # already registered (e.g. qrnn_lm._C imported by hand)
    why = _try_prebuilt()
    if why is None:
        return True
    why_jit = _try_jit()
    if why_jit is None:
        return True
    warnings.warn(
        f"qrnn_lm: compiled fo-pooling kernels unavailable ({why}; {why_jit}); "
        "using the slow pure-PyTorch reference. Fix: run "
        "`pip install --no-build-isolation .` (or `-e .`) in the qrnn_lm "
        "source directory with the torch you run with.",
        RuntimeWarning, stacklevel=3)
    return False


def compiled_devices() -> frozenset:
    """Device types ("cpu", "cuda") served by compiled kernels in this process;
    the first call loads them (empty when they cannot be loaded)."""
    global _devices
    with _lock:
        if _devices is None:
            devices = set()
            if _load():
                devices.update(d for d, key in (("cpu", "CPU"), ("cuda", "CUDA"))
                               if _has_kernel("fo_pool", key))
            _devices = frozenset(devices)
        return _devices
