"""Building without a GPU: setup.py's default CUDA architectures, and the JIT
fallback's choice of sources."""
import importlib.util
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _setup_module():
    spec = importlib.util.spec_from_file_location("qrnn_lm_setup", ROOT / "setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # main() only runs under __main__
    return mod


def _fake_torch(arch_list, gpus=0):
    cuda = types.SimpleNamespace(device_count=lambda: gpus, get_arch_list=lambda: arch_list)
    return types.SimpleNamespace(cuda=cuda, __version__="9.9.9+cu999")


def _fake_cuda_home(tmp_path, codes):
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n" + "".join(f"echo {c}\n" for c in codes))
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return str(tmp_path / "cuda")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="shell-script nvcc stand-in")
def test_no_gpu_no_arch_list_builds_for_torch_and_nvcc_archs(tmp_path, monkeypatch, capsys):
    """With a CUDA torch, nvcc, no GPU and no TORCH_CUDA_ARCH_LIST, torch's
    _get_cuda_arch_flags died (IndexError); the default list is the
    architectures both torch and nvcc know, +PTX on the newest."""
    setup = _setup_module()
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    home = _fake_cuda_home(tmp_path, ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"])
    fake = _fake_torch(["sm_70", "sm_80", "sm_90", "sm_90a", "sm_100", "compute_100"])
    assert setup.cuda_arch_default(fake, home) is None
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0;10.0+PTX"
    assert "8.0;9.0;10.0+PTX" in capsys.readouterr().out
    # torch accepts it (and, with no list and no GPU, fails as it did)
    from torch.utils.cpp_extension import _get_cuda_arch_flags
    flags = _get_cuda_arch_flags()
    assert "-gencode=arch=compute_80,code=sm_80" in flags
    assert "-gencode=arch=compute_100,code=compute_100" in flags
    if torch.cuda.device_count() == 0:
        monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
        with pytest.raises(IndexError):
            _get_cuda_arch_flags()
    # "native" without a GPU is the same as unset
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "native")
    assert setup.cuda_arch_default(fake, home) is None
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0;10.0+PTX"


def test_given_list_or_visible_gpu_left_to_torch(tmp_path, monkeypatch):
    setup = _setup_module()
    home = _fake_cuda_home(tmp_path, ["sm_80"])
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.6")
    assert setup.cuda_arch_default(_fake_torch(["sm_80"]), home) is None
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.6"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert setup.cuda_arch_default(_fake_torch(["sm_80"], gpus=1), home) is None
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ


def test_no_common_arch_says_why(tmp_path, monkeypatch):
    setup = _setup_module()
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    home = _fake_cuda_home(tmp_path, ["sm_100", "sm_120"])
    why = setup.cuda_arch_default(_fake_torch(["sm_50", "sm_60"]), home)
    assert "set TORCH_CUDA_ARCH_LIST" in why and "no GPU is visible" in why
    assert "TORCH_CUDA_ARCH_LIST" not in os.environ
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc anywhere
    why = setup.cuda_arch_default(_fake_torch(["sm_80"]), str(tmp_path / "no-cuda"))
    assert why is not None and "TORCH_CUDA_ARCH_LIST" not in os.environ


def test_jit_fallback_compiles_cuda_only_with_a_visible_gpu(monkeypatch):
    """The JIT build would hit the same missing-architecture failure, so it
    adds the .cu sources only when a GPU is visible (torch then reads its
    architecture from it)."""
    from torch.utils import cpp_extension

    from qrnn_lm import _ext
    seen = {}
    monkeypatch.delenv("QRNN_LM_NO_JIT", raising=False)
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: seen.update(kw))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _ext._try_jit() is None
    assert seen["sources"] and all(s.endswith(".cpp") for s in seen["sources"])
    assert "-DQRNN_LM_WITH_CUDA" not in seen["extra_cflags"]


def test_cuda_home_behind_an_nvcc_wrapper(tmp_path, monkeypatch):
    """nvcc on PATH as a wrapper script (/usr/local/bin/nvcc exec'ing the
    toolkit's): torch took /usr/local for the toolkit and the link failed
    (cannot find -lcudart); the real root comes from nvcc --dryrun."""
    from qrnn_lm._build import fix_cuda_home
    real = tmp_path / "cuda-13.0"
    (real / "bin").mkdir(parents=True)
    (real / "bin" / "nvcc").write_text("#!/bin/sh\necho '#$ TOP=%s/bin/..'\n" % real)
    (real / "lib").mkdir()
    (real / "lib" / "libcudart.so").write_text("")
    wrap = tmp_path / "local"
    (wrap / "bin").mkdir(parents=True)
    (wrap / "bin" / "nvcc").write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    for p in (real / "bin" / "nvcc", wrap / "bin" / "nvcc"):
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    ext = types.SimpleNamespace(CUDA_HOME=str(wrap))
    assert fix_cuda_home(ext) == str(real)
    assert ext.CUDA_HOME == str(real) and os.environ["CUDA_HOME"] == str(real)
    # a toolkit that has its libraries, or a CUDA_HOME given by the user, is kept
    assert fix_cuda_home(types.SimpleNamespace(CUDA_HOME=str(real))) is None
    monkeypatch.setenv("CUDA_HOME", str(wrap))
    ext = types.SimpleNamespace(CUDA_HOME=str(wrap))
    assert fix_cuda_home(ext) is None and ext.CUDA_HOME == str(wrap)
