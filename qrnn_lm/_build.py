"""How the fo-pooling extension is compiled: sources, compiler flags and link
arguments, in one place for ``setup.py`` (the ``qrnn_lm._C`` extension) and
the JIT build in :mod:`qrnn_lm._ext`.

Imports neither torch nor the rest of the package, so that ``setup.py`` can
import it before deciding what to build.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEBUG_ENV = "QRNN_LM_DEBUG"  # 1: -O0 -g host code, -G device code


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def sources(csrc: Path, cuda: bool) -> list:
    """The C++ sources (always) and the CUDA ones (with ``cuda``), sorted, as Paths."""
    found = sorted(csrc.glob("*.cpp"))
    if cuda:
        found += sorted(csrc.glob("*.cu"))
    return found


def cxx_flags(cuda: bool) -> list:
    """Host compiler flags; ``QRNN_LM_DEBUG=1`` gives an unoptimised debug build."""
    # -fno-trapping-math lets GCC vectorise the branch-free exp in the fused
    # CPU kernels (no code here relies on floating-point traps)
    flags = ["-O0", "-g"] if env_flag(DEBUG_ENV) else ["-O3", "-fno-trapping-math"]
    return flags + (["-DQRNN_LM_WITH_CUDA"] if cuda else [])


def nvcc_flags() -> list:
    return ["-O0", "-G", "-g"] if env_flag(DEBUG_ENV) else ["-O3", "-lineinfo"]


def shared_libstdcxx() -> list:
    """Link arguments naming the shared C++ runtime (libstdc++.so.6) by path.

    Where g++ finds only libstdc++.a (an image without the libstdc++.so
    link) or LDFLAGS asks for -static-libstdc++, the module would carry its
    own copy of libstdc++, and two copies in one process break iostreams:
    formatting an error message then crashes or loses its numbers (e.g. on
    Ubuntu 24.04 / GCC 13 images).  Naming the shared library makes every
    libstdc++ symbol resolve to the one torch uses.  These are the link
    arguments of both builds."""
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
