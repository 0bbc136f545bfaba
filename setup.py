"""Builds qrnn_lm and its compiled fo-pooling extension ``qrnn_lm._C``.

    pip install --no-build-isolation .        # or -e . for development

The CPU kernels are always built.  The CUDA kernels are built when a CUDA
toolkit (CUDA_HOME / nvcc) and a CUDA build of torch are present -- a visible
GPU is not needed, so wheels can be built on CPU-only machines.

The CPU kernels are compiled for baseline x86-64 (portable wheels), with a
second, AVX2+FMA version of their loops picked at run time on CPUs that have
it (csrc/fo_pool.cpp; QRNN_LM_CPU_BASELINE=1 at run time forces the baseline
version, -DQRNN_LM_NO_MULTIVERSION at build time leaves the AVX2 one out).

Environment switches:
  QRNN_LM_FORCE_CUDA=1   build the CUDA kernels (fail if impossible)
  QRNN_LM_SKIP_CUDA=1    build the CPU kernels only
  QRNN_LM_DEBUG=1        -O0 -g host code, -G device code
  TORCH_CUDA_ARCH_LIST   GPU architectures, e.g. "8.0;9.0" (torch's variable);
                         default: the visible GPUs, or with none visible every
                         architecture the installed torch was built for that
                         nvcc supports, +PTX on the newest (cuda_arch_default)
  MAX_JOBS               parallel compile jobs (ninja)

Use --no-build-isolation: an isolated build compiles against whatever torch
pip resolves, which may not be the torch you run with, and an extension
built against another torch cannot be loaded (qrnn_lm then JIT-builds or
falls back to the slow reference, with a warning).
"""
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
BUILD_INFO = {}

sys.path.insert(0, str(ROOT))
from qrnn_lm._build import (cxx_flags, env_flag, fix_cuda_home,  # noqa: E402  (no torch import)
                            nvcc_flags, shared_libstdcxx, sources)


def nvcc_available(cuda_home) -> bool:
    return bool(cuda_home) and (Path(cuda_home) / "bin" / "nvcc").exists() \
        or shutil.which("nvcc") is not None


def cuda_arch_default(torch, cuda_home):
    """Sees that torch has GPU architectures to compile for; returns None when
    it has, else why the CUDA kernels cannot be built.

    torch compiles for TORCH_CUDA_ARCH_LIST, or else for the visible GPUs,
    and fails (IndexError in _get_cuda_arch_flags) with neither.  Without a
    visible GPU and without the variable (or with "native"), the default is
    every architecture the installed torch was built for (sm_XX in
    torch.cuda.get_arch_list()) that this nvcc can compile for, with PTX for
    the newest so later GPUs can JIT it; for torch 2.14.1+cu130 and nvcc
    13.0: "7.5;8.0;8.6;9.0;10.0;12.0+PTX".  The choice is printed and set in
    TORCH_CUDA_ARCH_LIST for this build."""
    import re
    import subprocess

    wanted = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if wanted and wanted != "native":
        return None
    try:
        if torch.cuda.device_count() > 0:
            return None
    except Exception:  # a broken driver counts as no GPU
        pass
    why_unset = ("TORCH_CUDA_ARCH_LIST is \"native\"" if wanted else
                 "TORCH_CUDA_ARCH_LIST is not set")
    torch_sm = {int(m.group(1)) for a in torch.cuda.get_arch_list()
                for m in [re.fullmatch(r"sm_(\d+)", a)] if m}
    nvcc = str(Path(cuda_home) / "bin" / "nvcc") if cuda_home else "nvcc"
    if not Path(nvcc).exists():
        nvcc = shutil.which("nvcc") or nvcc
    try:
        out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True,
                             timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    nvcc_sm = {int(x) for x in re.findall(r"\bsm_(\d+)\b", out)}
    archs = sorted(torch_sm & nvcc_sm)
    if not archs:
        return (f"no GPU is visible, {why_unset}, and no architecture is both in torch's "
                f"list {sorted(torch_sm)} and in {nvcc} --list-gpu-code {sorted(nvcc_sm)}; "
                "set TORCH_CUDA_ARCH_LIST (e.g. \"8.6\") to build them")
    arch_list = ";".join(f"{a // 10}.{a % 10}" for a in archs) + "+PTX"
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    print(f"qrnn_lm: no GPU is visible and {why_unset}: compiling the CUDA kernels for "
          f"TORCH_CUDA_ARCH_LIST=\"{arch_list}\" (the architectures torch "
          f"{torch.__version__} was built for that nvcc supports); set it to build fewer")
    return None


def extensions():
    import torch
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    if fix_cuda_home(cpp_extension):  # nvcc on PATH is a wrapper: its real toolkit
        print(f"qrnn_lm: CUDA toolkit at {cpp_extension.CUDA_HOME} (where nvcc on PATH runs)")
    CUDA_HOME = cpp_extension.CUDA_HOME

    if env_flag("QRNN_LM_SKIP_CUDA"):
        with_cuda, why = False, "QRNN_LM_SKIP_CUDA is set"
    elif env_flag("QRNN_LM_FORCE_CUDA"):
        if torch.version.cuda is None:
            raise RuntimeError("QRNN_LM_FORCE_CUDA=1 but the installed torch "
                               f"{torch.__version__} is a CPU-only build")
        if not nvcc_available(CUDA_HOME):
            raise RuntimeError("QRNN_LM_FORCE_CUDA=1 but no CUDA toolkit was found; "
                               "set CUDA_HOME")
        with_cuda, why = True, "QRNN_LM_FORCE_CUDA is set"
    elif torch.version.cuda is None:
        with_cuda, why = False, f"torch {torch.__version__} is a CPU-only build"
    elif not nvcc_available(CUDA_HOME):
        with_cuda, why = False, "no CUDA toolkit found (set CUDA_HOME)"
    else:
        with_cuda, why = True, f"CUDA toolkit at {CUDA_HOME}"
    if with_cuda:
        no_arch = cuda_arch_default(torch, CUDA_HOME)
        if no_arch and env_flag("QRNN_LM_FORCE_CUDA"):
            raise RuntimeError(f"QRNN_LM_FORCE_CUDA=1 but {no_arch}")
        if no_arch:
            with_cuda, why = False, no_arch
    print(f"qrnn_lm: building the CPU kernels{' and the CUDA kernels' if with_cuda else ''}"
          f" ({why}) against torch {torch.__version__}")

    BUILD_INFO.update(torch=torch.__version__, cuda=with_cuda)
    # sources, flags and link arguments: qrnn_lm/_build.py (shared with the JIT build)
    srcs = [str(p.relative_to(ROOT)) for p in sources(CSRC, with_cuda)]
    if with_cuda:
        return [CUDAExtension("qrnn_lm._C", srcs,
                              extra_compile_args={"cxx": cxx_flags(True), "nvcc": nvcc_flags()},
                              extra_link_args=shared_libstdcxx())]
    return [CppExtension("qrnn_lm._C", srcs, extra_compile_args={"cxx": cxx_flags(False)},
                         extra_link_args=shared_libstdcxx())]


class BuildPyWithSources(build_py):
    """Ships csrc/ inside the package (qrnn_lm/_csrc) for the JIT fallback."""

    def run(self):
        super().run()
        dest = Path(self.build_lib) / "qrnn_lm" / "_csrc"
        dest.mkdir(parents=True, exist_ok=True)
        for p in CSRC.iterdir():
            if p.suffix in (".cpp", ".cu", ".h", ".cuh"):
                shutil.copy2(p, dest / p.name)


def main():
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtWithInfo(BuildExtension.with_options(use_ninja=True)):
        """Records, next to the built module, the torch it was built against;
        the loader JIT-rebuilds instead of loading it under another torch."""

        def run(self):
            super().run()
            out = Path(self.get_ext_fullpath("qrnn_lm._C")).parent / "_build_info.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(BUILD_INFO) + "\n")

    setup(
        ext_modules=extensions(),
        cmdclass={"build_ext": BuildExtWithInfo,
                  "build_py": BuildPyWithSources},
    )


if __name__ == "__main__":
    main()
