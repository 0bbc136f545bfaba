"""Argument checks of the tensor API: one ``ValueError`` sentence per problem.

Two callers share them:

* :mod:`qrnn_lm.ops` checks the arguments of the public ``fo_pool*`` functions
  and of their ``*_reference`` twins (``*_args``, :func:`fused_gates`);
* the encoders of :mod:`qrnn_lm.rnn` (``QRNN``, ``LSTM``) check their input,
  ``lengths``, ``PackedSequence`` and state once, at their own boundary
  (:func:`module_input`, :func:`module_lengths`, :func:`packed_sequence`,
  :func:`state_tensor`), and then call the unchecked ops.

Every message starts with ``where`` (the function or module that was called).
Checks that read tensor values (the range of ``lengths``, ``batch_sizes``) are
skipped while ``torch.compile`` traces.  The compiled C++ ops check again with
``TORCH_CHECK`` (a ``RuntimeError``) for callers of ``torch.ops.qrnn_lm``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def is_compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - older torch
        return False


# --------------------------------------------------------------------------
# lengths and batch_sizes (ops and encoders)
# --------------------------------------------------------------------------

def _lengths_shape_and_range(lengths: Tensor, steps: int, batch: int, where: str) -> None:
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{where}: lengths must have shape (B,) = ({batch},) (one per batch "
                         f"entry), got {tuple(lengths.shape)}")
    if lengths.numel() > 0 and not is_compiling():
        lo, hi = torch.stack(torch.aminmax(lengths)).tolist()  # one device sync
        if lo < 0 or hi > steps:
            raise ValueError(f"{where}: lengths must lie in [0, {steps}] (the input has {steps} "
                             f"time steps), got values in [{lo}, {hi}]")


def lengths(lengths: Optional[Tensor], steps: int, batch: int, ref: Tensor, where: str) -> None:
    """``lengths`` of an op: None, or an int64 ``(B,)`` tensor in ``[0, T]``
    on the CPU or on ``ref``'s device, in any order."""
    if lengths is None:
        return
    if not isinstance(lengths, Tensor):
        raise ValueError(f"{where}: lengths must be an int64 Tensor of shape (B,), "
                         f"got {type(lengths).__name__}")
    if lengths.dtype != torch.int64:
        raise ValueError(f"{where}: lengths must have dtype int64, got {lengths.dtype}")
    if lengths.device.type != "cpu" and lengths.device != ref.device:
        raise ValueError(f"{where}: lengths is on {lengths.device}; put it on the CPU or on "
                         f"{ref.device} with the inputs")
    _lengths_shape_and_range(lengths, steps, batch, where)


def module_lengths(lengths, steps: int, batch: int, device: torch.device, where: str) -> Tensor:
    """``lengths`` given to an encoder: any integer tensor (or list) of shape
    ``(B,)`` in ``[0, T]``; returned as int64 on ``device``."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"{where}: lengths must be an integer tensor, got {lengths.dtype}")
    _lengths_shape_and_range(lengths, steps, batch, where)
    return lengths.to(device=device, dtype=torch.long)


def batch_sizes(batch_sizes: Tensor, rows: int, where: str) -> None:
    """``PackedSequence.batch_sizes``: int64 on the CPU, positive, non-increasing,
    summing to the number of packed rows."""
    if not isinstance(batch_sizes, Tensor):
        raise ValueError(f"{where}: batch_sizes must be an int64 CPU Tensor, "
                         f"got {type(batch_sizes).__name__}")
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu" \
            or batch_sizes.dim() != 1:
        raise ValueError(f"{where}: batch_sizes must be a 1-d int64 CPU tensor (as in "
                         f"PackedSequence), got {batch_sizes.dim()}-d {batch_sizes.dtype} "
                         f"on {batch_sizes.device}")
    if is_compiling():
        return
    if batch_sizes.numel() > 0:
        if int(batch_sizes.min()) < 1:
            raise ValueError(f"{where}: batch_sizes must be positive (every step holds at "
                             "least one sequence)")
        if batch_sizes.numel() > 1 and bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
            raise ValueError(f"{where}: batch_sizes must be non-increasing (as produced by "
                             "torch.nn.utils.rnn.pack_*)")
    total = int(batch_sizes.sum())
    if total != rows:
        raise ValueError(f"{where}: batch_sizes sum to {total} but the data has {rows} rows")


def _packed_batch(batch_sizes: Tensor, c0: Tensor) -> int:
    """B = batch_sizes[0]; while compiling it is data-dependent, so c0 defines it."""
    if batch_sizes.numel() > 0 and not is_compiling():
        return int(batch_sizes[0])
    return c0.shape[0]


# --------------------------------------------------------------------------
# op arguments: f, z, c0, gates
# --------------------------------------------------------------------------

def float_tensor(name: str, t, where: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{where}: {name} must be float16, bfloat16, float32 or float64, "
                         f"got {t.dtype}")


def c0(c0: Optional[Tensor], batch: int, hidden: int, ref: Tensor, where: str) -> None:
    """Initial state: None, or ``(B, H)`` with the dtype and device of the inputs."""
    if c0 is None:
        return
    float_tensor("c0", c0, where)
    if c0.dim() != 2 or tuple(c0.shape) != (batch, hidden):
        raise ValueError(f"{where}: c0 must have shape (B, H) = ({batch}, {hidden}), "
                         f"got {tuple(c0.shape)}")
    if c0.dtype != ref.dtype:
        raise ValueError(f"{where}: c0 has dtype {c0.dtype} but the inputs have {ref.dtype}")
    if c0.device != ref.device:
        raise ValueError(f"{where}: c0 is on {c0.device} but the inputs are on {ref.device}")


def gates_pair(f, z, where: str, dim: int, shape: str) -> None:
    """f and z: float tensors of rank ``dim`` with one shape, dtype and device."""
    float_tensor("f", f, where)
    float_tensor("z", z, where)
    if f.dim() != dim:
        raise ValueError(f"{where}: f must have shape {shape}, got {f.dim()} dimensions")
    if z.shape != f.shape:
        raise ValueError(f"{where}: z has shape {tuple(z.shape)} but f has {tuple(f.shape)}")
    if z.dtype != f.dtype:
        raise ValueError(f"{where}: z has dtype {z.dtype} but f has {f.dtype}")
    if z.device != f.device:
        raise ValueError(f"{where}: z is on {z.device} but f is on {f.device}")


def fused_gates(gates, output_gate: bool, where: str, dim: Optional[int] = None) -> int:
    """Pre-activations ``[z | f | o]`` (G*H last dim, G = 3, or 2 without output
    gate), of rank ``dim`` when given; returns H."""
    float_tensor("gates", gates, where)
    G = 3 if output_gate else 2
    if gates.dim() == 0 or gates.shape[-1] % G != 0:
        raise ValueError(f"{where}: the last dim of gates must be {G}*H "
                         f"([z | f{' | o' if output_gate else ''}]), got shape {tuple(gates.shape)}")
    if dim is not None and gates.dim() != dim:
        layout = "(T, B, G*H)" if dim == 3 else "(N, G*H)"
        raise ValueError(f"{where}: gates must have shape {layout}, got {gates.dim()} dimensions")
    return gates.shape[-1] // G


def fo_pool_args(f, z, c0_, lengths_, where: str) -> None:
    """Padded layout: f, z (T, B, H); c0 (B, H) or None; lengths (B,) or None."""
    gates_pair(f, z, where, 3, "(T, B, H)")
    T, B, H = f.shape
    c0(c0_, B, H, f, where)
    lengths(lengths_, T, B, f, where)


def fo_pool_packed_args(f, z, batch_sizes_, c0_, where: str) -> None:
    """Packed layout: f, z (N, H); batch_sizes (T,) on CPU; c0 (B, H) or None."""
    gates_pair(f, z, where, 2, "(N, H) (packed rows)")
    batch_sizes(batch_sizes_, f.shape[0], where)
    if c0_ is not None:
        c0(c0_, _packed_batch(batch_sizes_, c0_), f.shape[1], f, where)


def fo_pool_fused_args(gates, c0_, lengths_, output_gate: bool, where: str) -> None:
    """Padded pre-activations: gates (T, B, G*H); c0 and lengths as for fo_pool."""
    H = fused_gates(gates, output_gate, where, dim=3)
    T, B = gates.shape[:2]
    c0(c0_, B, H, gates, where)
    lengths(lengths_, T, B, gates, where)


def fo_pool_fused_packed_args(gates, batch_sizes_, c0_, output_gate: bool, where: str) -> None:
    """Packed pre-activations: gates (N, G*H); batch_sizes and c0 as for fo_pool_packed."""
    H = fused_gates(gates, output_gate, where, dim=2)
    batch_sizes(batch_sizes_, gates.shape[0], where)
    if c0_ is not None:
        c0(c0_, _packed_batch(batch_sizes_, c0_), H, gates, where)


# --------------------------------------------------------------------------
# encoder arguments: input, PackedSequence, state
# --------------------------------------------------------------------------

def module_input(x: Tensor, input_size: int, weight: Tensor, where: str) -> None:
    """Encoder input (a Tensor or PackedSequence.data) against the first weight."""
    if x.shape[-1] != input_size:
        raise ValueError(f"{where} expected inputs with {input_size} features (input_size), got "
                         f"{x.shape[-1]} (input shape {tuple(x.shape)})")
    if x.device != weight.device:
        raise ValueError(f"{where} input is on {x.device} but the module's parameters are on "
                         f"{weight.device}; move one of them")
    if not x.is_floating_point():
        raise ValueError(f"{where} expects floating-point inputs, got {x.dtype} (embed ids first)")
    if x.dtype != weight.dtype and not _autocast_covers(x, weight):
        module = "module.double()" if x.dtype == torch.float64 else f"module.to({x.dtype})"
        raise ValueError(f"{where} input has dtype {x.dtype} but the module's parameters have "
                         f"{weight.dtype}; convert the input with input.to({weight.dtype}) or "
                         f"the module with {module}")


def _autocast_covers(x: Tensor, weight: Tensor) -> bool:
    # autocast runs the matmuls in its own dtype whatever the float32/half input
    # dtypes are; float64 it leaves alone
    return (torch.is_autocast_enabled(x.device.type)
            and torch.float64 not in (x.dtype, weight.dtype))


def packed_sequence(packed: PackedSequence, where: str) -> None:
    """A PackedSequence given to an encoder: (N, I) data and valid batch_sizes."""
    if packed.data.dim() != 2:
        raise ValueError(f"{where}: packed data must be (N, input_size), got shape "
                         f"{tuple(packed.data.shape)}")
    batch_sizes(packed.batch_sizes, packed.data.shape[0], where)
    if packed.batch_sizes.numel() == 0:
        raise ValueError(f"{where}: the PackedSequence has no steps (empty batch_sizes); "
                         "give at least one sequence of length >= 1")


def state_tensor(t, what: str, shape: tuple, x: Tensor, where: str) -> Tensor:
    """One tensor of an encoder state: the expected shape, on the input's device."""
    if not isinstance(t, Tensor):
        raise ValueError(f"{where}: state {what} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{where}: state {what} has shape {tuple(t.shape)}, expected {shape}; "
                         "was it made for another batch size or model?")
    if t.device != x.device:
        raise ValueError(f"{where}: state {what} is on {t.device} but the input is on {x.device}")
    return t
