"""Mixed precision for training: which autocast to run, and the CPU default.

* :func:`autocast_for` turns an ``--amp`` value (``off``, ``bf16``, ``fp16``)
  into a factory of autocast contexts for a device type;
* :func:`cpu_bf16_feature` / :func:`cpu_has_native_bf16` tell whether the CPU
  computes bf16 natively (AVX-512 BF16 or AMX), from /proc/cpuinfo's flags;
* :func:`measure_bf16_speedup` times a few interleaved float32 and bf16
  training steps of the actual model (no side effects on it);
  :func:`probe_batch` cuts a batch of a run's shape from its token ids, and
  ``QRNN_LM_AMP_PROBE=0`` (:func:`probe_allowed`) switches measuring off;
* :func:`choose_amp` is the defaults rule: on the CPU, bf16 only when the CPU
  has native bf16 *and* a bf16 step measured at least
  :data:`MIN_SPEEDUP` times faster; on CUDA off, as before.  It returns the
  choice and a sentence saying why, for the log and the run's record.

Without native bf16 a CPU emulates it with float32 conversions, and bf16
autocast is slower than float32 there; with it, the RNN layers' matmuls and
the fo-pool kernels (bf16 storage, float32 accumulation) get faster while the
output layer and loss stay float32 (see :mod:`qrnn_lm.model`).  fp16 autocast
on the CPU is refused: it needs a loss scaler and has no fast CPU path.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import platform
import statistics
import time
from typing import Callable, Optional, Tuple, Union

import torch

from .errors import QrnnLmError

AMP_CHOICES = ("off", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIN_SPEEDUP = 1.1   # bf16 must make a step at least this much faster to be the CPU default
PROBE_ENV = "QRNN_LM_AMP_PROBE"   # =0: never time bf16 (a CPU run left without --amp trains in float32)

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def amp_dtype(amp: Optional[str]) -> Optional[torch.dtype]:
    """``"bf16"`` -> torch.bfloat16, ``"fp16"`` -> torch.float16, ``"off"``/None -> None."""
    if amp in (None, "off"):
        return None
    if amp not in AMP_DTYPES:
        raise QrnnLmError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}.")
    return AMP_DTYPES[amp]


def autocast_for(device_type: str, amp: Optional[str]) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``--amp`` on ``device_type`` ("cpu", "cuda").

    ``with autocast_for("cpu", "bf16")(): ...`` runs under bf16 autocast;
    ``"off"`` (or None) gives ``contextlib.nullcontext``.  fp16 on the CPU,
    and autocast on other device types, raise :class:`QrnnLmError`.
    """
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext
    if device_type == "cpu" and amp == "fp16":
        raise QrnnLmError("--amp fp16 needs a CUDA device (the CPU has no fast float16 path); "
                          "use --amp bf16 or --amp off on the CPU.")
    if device_type not in ("cpu", "cuda"):
        raise QrnnLmError(f"--amp {amp} works on cpu and cuda devices, not {device_type}; use --amp off.")
    return functools.partial(torch.autocast, device_type, dtype=dtype)


# --------------------------------------------------------------------------
# native bf16 on the CPU
# --------------------------------------------------------------------------

def _cpuinfo_flags(cpuinfo: str) -> set:
    """The feature flags of the first ``flags`` line of /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def _read_cpuinfo() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_bf16_feature(cpuinfo: Optional[str] = None) -> Optional[str]:
    """``"AMX"`` or ``"AVX-512 BF16"`` when the CPU computes bf16 natively, else None.

    ``cpuinfo``: the text of /proc/cpuinfo (read from this machine when None).
    Without /proc/cpuinfo (not Linux) the answer comes from torch's own CPU
    probe on x86, and is None on other processors.
    """
    if cpuinfo is None:
        if platform.machine().lower() not in _X86:
            return None
        cpuinfo = _read_cpuinfo()
        if cpuinfo is None:
            return _torch_bf16_feature()
    flags = _cpuinfo_flags(cpuinfo)
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    return None


def _torch_bf16_feature() -> Optional[str]:
    cpu = getattr(torch, "cpu", None)
    probes = (("AMX", "_is_amx_tile_supported"), ("AVX-512 BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        try:
            if getattr(cpu, probe)():
                return name
        except Exception:  # a private probe that moved or failed: no native bf16 known
            continue
    return None


def cpu_has_native_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether the CPU has AVX-512 BF16 or AMX (see :func:`cpu_bf16_feature`)."""
    return cpu_bf16_feature(cpuinfo) is not None


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def _train_step(model: torch.nn.Module, x, y, autocast) -> None:
    with autocast():
        nll, _ = model(x, targets=y)
        loss = nll.mean()
    loss.backward()
    for p in model.parameters():
        p.grad = None


def _timed(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def measure_bf16_speedup(model: Union[torch.nn.Module, Callable[[], torch.nn.Module]], batch: tuple, *,
                         steps: int = 6, max_seconds: float = 4.0) -> float:
    """How many times faster a bf16-autocast training step is than a float32 one on the CPU.

    ``model``: an ``RNNLanguageModel`` (copied, so it and its gradients are
    untouched) or a function that builds one; ``batch``: ``(input, targets)``
    as the model's forward takes them (ids (T, B), or PackedSequences).
    After one warm-up step of each, runs up to ``steps`` rounds of one float32
    and one bf16 forward+backward (the order alternating between rounds), and
    stops early once ``max_seconds`` have passed after two rounds.  Returns
    median float32 time / median bf16 time.  The global RNG state is restored
    afterwards, so a training run stays reproducible.
    """
    x, y = batch
    with torch.random.fork_rng(devices=[]):
        net = model() if not isinstance(model, torch.nn.Module) else copy.deepcopy(model)
        net.train()
        fp32 = functools.partial(_train_step, net, x, y, contextlib.nullcontext)
        bf16 = functools.partial(_train_step, net, x, y, autocast_for("cpu", "bf16"))
        fp32()
        bf16()
        times = {fp32: [], bf16: []}
        start = time.perf_counter()
        for r in range(max(1, steps)):
            for step in ((fp32, bf16) if r % 2 == 0 else (bf16, fp32)):
                times[step].append(_timed(step))
            if r >= 1 and time.perf_counter() - start > max_seconds:
                break
    return statistics.median(times[fp32]) / statistics.median(times[bf16])


def probe_allowed() -> bool:
    """False when the environment variable ``QRNN_LM_AMP_PROBE`` is 0 (or off, no, false)."""
    return os.environ.get(PROBE_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def probe_batch(ids, batch_size: int, bptt: int) -> tuple:
    """``(input, targets)`` ids (T, B) from the start of a token sequence
    (e.g. the training split's ids), at most ``bptt`` x ``batch_size``: the
    shape of a training batch, to time a step on."""
    b = max(1, min(batch_size, len(ids) - 1))
    t = max(1, min(bptt, (len(ids) - 1) // b))
    data = torch.as_tensor(ids[: b * t + 1].astype("int64"))
    return data[:-1].view(b, t).t().contiguous(), data[1:].view(b, t).t().contiguous()


# --------------------------------------------------------------------------
# the defaults rule
# --------------------------------------------------------------------------

def choose_amp(device_type: str, measured: Union[None, float, Callable[[], float]] = None, *,
               requested: Optional[str] = None,
               native: Union[None, bool, str] = None) -> Tuple[str, str]:
    """The ``--amp`` to use and one sentence saying why.

    ``requested``: the user's ``--amp`` (None when not given), used as given
    (fp16 on the CPU is refused, see :func:`autocast_for`).  Otherwise: on CUDA
    "off" (the default so far); on the CPU "bf16" only when the CPU computes
    bf16 natively (``native``: a bool or feature name, probed when None) and
    ``measured`` -- the bf16 speed-up, or a function returning it (called only
    on such CPUs, e.g. wrapping :func:`measure_bf16_speedup`) -- is at least
    :data:`MIN_SPEEDUP`; else "off".
    """
    if requested is not None:
        autocast_for(device_type, requested)  # refuses what cannot run
        return requested, f"{requested}: --amp {requested} as given"
    if device_type != "cpu":
        return "off", f"off: the default on {device_type}; pass --amp bf16 to train under bf16 autocast"
    feature = cpu_bf16_feature() if native is None else native
    if feature is True:
        feature = "native bf16"
    if not feature:
        return "off", "off: this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 autocast is slower"
    ratio = measured() if callable(measured) else measured
    if ratio is None:
        return "off", f"off: the CPU has {feature} but no bf16 step was timed; pass --amp bf16 to use it"
    if ratio >= MIN_SPEEDUP:
        return "bf16", f"bf16: CPU has {feature} and a bf16 step measured {ratio:.2f}x faster"
    return "off", (f"off: CPU has {feature} but a bf16 step measured {ratio:.2f}x the float32 speed "
                   f"(bf16 needs {MIN_SPEEDUP}x)")
