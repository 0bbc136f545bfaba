"""fo-pooling, the QRNN recurrence, as PyTorch ops.

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t        h_t = o_t * c_t

Public functions (see docs/DESIGN.md section 1):

* ``fo_pool(f, z, c0=None, lengths=None, *, reverse=False) -> (c, c_n)``
  padded layout, ``f``/``z`` (T, B, H);
* ``fo_pool_packed(f, z, batch_sizes, c0=None, *, reverse=False) -> (c, c_n)``
  packed layout (``PackedSequence.data`` rows (N, H) and its ``batch_sizes``);
* ``fo_pool_fused`` / ``fo_pool_fused_packed``: the same on gate
  *pre-activations* ``[z | f | o]`` (last dim G*H), returning ``(h, c_n)``;
* ``*_reference``: pure-PyTorch loops over time with the same signatures, the
  test oracles and the fallback when no compiled kernel is available
  (defined in :mod:`qrnn_lm.ops_reference`, re-exported here);
* ``compiled_devices()``: device types served by compiled kernels.

The compiled kernels live in ``csrc/`` and register the ``torch.ops.qrnn_lm``
namespace; this module validates arguments (with :mod:`qrnn_lm.checks`), wires
up autograd and the fake (meta) implementations that ``torch.compile`` needs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _ext, checks
from .ops_reference import (
    fo_pool_fused_packed_reference,
    fo_pool_fused_reference,
    fo_pool_packed_reference,
    fo_pool_reference,
)

Tensor = torch.Tensor

# Loads the kernels (once per process); the ops' Python side is registered
# at the bottom of this module when they exist.
_COMPILED: frozenset = _ext.compiled_devices()

__all__ = [
    "fo_pool",
    "fo_pool_packed",
    "fo_pool_fused",
    "fo_pool_fused_packed",
    "fo_pool_reference",
    "fo_pool_packed_reference",
    "fo_pool_fused_reference",
    "fo_pool_fused_packed_reference",
    "compiled_devices",
]


# --------------------------------------------------------------------------
# Public API: arguments are checked here; the ``_``-prefixed twins below
# skip the checks for callers that have validated their inputs already
# (qrnn_lm.rnn builds the gates itself).  The C++ ops check again.
# --------------------------------------------------------------------------

def compiled_devices() -> frozenset:
    """Device types ({"cpu"}, {"cpu", "cuda"}) served by compiled kernels here."""
    return _COMPILED


def fo_pool(f: Tensor, z: Tensor, c0: Optional[Tensor] = None,
            lengths: Optional[Tensor] = None, *,
            reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over padded sequences; see :func:`fo_pool_reference`.

    f, z: (T, B, H); c0: (B, H) or None; lengths: None or int64 (B,).
    Returns c (T, B, H) and c_n (B, H). Gradients flow to f, z and c0.
    """
    checks.fo_pool_args(f, z, c0, lengths, "fo_pool")
    return _fo_pool(f, z, c0, lengths, reverse)


def fo_pool_packed(f: Tensor, z: Tensor, batch_sizes: Tensor,
                   c0: Optional[Tensor] = None, *,
                   reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over packed rows; see :func:`fo_pool_packed_reference`.

    f, z: (N, H); batch_sizes: int64 (T,) on CPU; c0: (B, H) or None.
    Returns c (N, H) and c_n (B, H).
    """
    checks.fo_pool_packed_args(f, z, batch_sizes, c0, "fo_pool_packed")
    return _fo_pool_packed(f, z, batch_sizes, c0, reverse)


def fo_pool_fused(gates: Tensor, c0: Optional[Tensor] = None,
                  lengths: Optional[Tensor] = None, *, output_gate: bool = True,
                  reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on pre-activations; see :func:`fo_pool_fused_reference`.

    gates: (T, B, G*H) as ``[z | f | o]``. Returns h (T, B, H) and c_n (B, H).
    Gradients flow to gates (the pre-activations) and c0.
    """
    checks.fo_pool_fused_args(gates, c0, lengths, output_gate, "fo_pool_fused")
    return _fo_pool_fused(gates, c0, lengths, output_gate, reverse)


def fo_pool_fused_packed(gates: Tensor, batch_sizes: Tensor, c0: Optional[Tensor] = None,
                         *, output_gate: bool = True,
                         reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on packed pre-activations; see :func:`fo_pool_fused_packed_reference`.

    gates: (N, G*H); batch_sizes: int64 (T,) on CPU. Returns h (N, H), c_n (B, H).
    """
    checks.fo_pool_fused_packed_args(gates, batch_sizes, c0, output_gate,
                                     "fo_pool_fused_packed")
    return _fo_pool_fused_packed(gates, batch_sizes, c0, output_gate, reverse)


# Unchecked: the compiled op where this device has one, else the reference
# (which checks its own arguments: the slow path only).

def _fo_pool(f: Tensor, z: Tensor, c0: Optional[Tensor], lengths: Optional[Tensor],
             reverse: bool) -> Tuple[Tensor, Tensor]:
    if f.device.type not in _COMPILED:
        return fo_pool_reference(f, z, c0, lengths, reverse=reverse)
    if lengths is not None:
        lengths = lengths.to(f.device)
    return torch.ops.qrnn_lm.fo_pool(f, z, c0, lengths, reverse)


def _fo_pool_packed(f: Tensor, z: Tensor, batch_sizes: Tensor, c0: Optional[Tensor],
                    reverse: bool) -> Tuple[Tensor, Tensor]:
    if f.device.type not in _COMPILED:
        return fo_pool_packed_reference(f, z, batch_sizes, c0, reverse=reverse)
    return torch.ops.qrnn_lm.fo_pool_packed(f, z, batch_sizes, c0, reverse)


def _fo_pool_fused(gates: Tensor, c0: Optional[Tensor], lengths: Optional[Tensor],
                   output_gate: bool, reverse: bool) -> Tuple[Tensor, Tensor]:
    if gates.device.type not in _COMPILED:
        return fo_pool_fused_reference(gates, c0, lengths, output_gate=output_gate,
                                       reverse=reverse)
    if lengths is not None:
        lengths = lengths.to(gates.device)
    h, _, c_n = torch.ops.qrnn_lm.fo_pool_fused(gates, c0, lengths, output_gate, reverse)
    return h, c_n


def _fo_pool_fused_packed(gates: Tensor, batch_sizes: Tensor, c0: Optional[Tensor],
                          output_gate: bool, reverse: bool) -> Tuple[Tensor, Tensor]:
    if gates.device.type not in _COMPILED:
        return fo_pool_fused_packed_reference(gates, batch_sizes, c0,
                                              output_gate=output_gate, reverse=reverse)
    h, _, c_n = torch.ops.qrnn_lm.fo_pool_fused_packed(gates, batch_sizes, c0,
                                                       output_gate, reverse)
    return h, c_n


# --------------------------------------------------------------------------
# Fake implementations and autograd for the compiled ops
# --------------------------------------------------------------------------

def _packed_batch(c0: Optional[Tensor]):
    # B = batch_sizes[0] is data-dependent; c0 pins it when given
    if c0 is not None:
        return c0.shape[0]
    return torch.library.get_ctx().new_dynamic_size()


# ---- fake (meta) implementations: shapes only, for torch.compile ----

def _fo_pool_fake(f, z, c0, lengths, reverse):
    return torch.empty_like(f), f.new_empty(f.shape[1], f.shape[2])


def _fo_pool_packed_fake(f, z, batch_sizes, c0, reverse):
    return torch.empty_like(f), f.new_empty(_packed_batch(c0), f.shape[1])


def _plain_backward_fake(grad_c, grad_c_n, f, z, c, *layout_and_reverse):
    return torch.empty_like(f), torch.empty_like(f), torch.empty_like(grad_c_n)


def _fused_fake(gates, B, output_gate):
    H = gates.shape[-1] // (3 if output_gate else 2)
    out = gates.new_empty(*gates.shape[:-1], H)
    second = gates.new_empty(*gates.shape[:-1], H) if output_gate else gates.new_empty(0)
    return out, second, gates.new_empty(B, H)


def _fo_pool_fused_fake(gates, c0, lengths, output_gate, reverse):
    return _fused_fake(gates, gates.shape[1], output_gate)


def _fo_pool_fused_packed_fake(gates, batch_sizes, c0, output_gate, reverse):
    return _fused_fake(gates, _packed_batch(c0), output_gate)


def _fused_backward_fake(grad_h, grad_c_n, gates, c, *layout_and_flags):
    return torch.empty_like(gates), torch.empty_like(grad_c_n)


# ---- autograd: the backward of each op is itself a registered op ----
# Saved: the inputs and the states c (every c_{t-1} is needed and cannot be
# recovered stably from c_t); gate activations are recomputed from the
# pre-activations in registers instead of being stored.

def _register_autograd(name: str, n_data: int) -> None:
    """Autograd for op ``name`` through the op ``name + "_backward"``.

    Every op takes ``n_data`` differentiable tensors (f, z or gates), two
    layout arguments (``c0, lengths``, or ``batch_sizes, c0`` when packed)
    and flags (``[output_gate,] reverse``), and returns its first output
    (c, or h), [the states c,] c_n.  Its backward takes
    ``(grad_first, grad_c_n, *data, c, *layout, *flags)`` and returns the
    gradients of the data and of c0.
    """
    backward_op = getattr(torch.ops.qrnn_lm, name + "_backward")
    c0_at = n_data + (1 if name.endswith("_packed") else 0)
    fused = n_data == 1

    def setup_context(ctx, inputs, output):
        data, layout, flags = inputs[:n_data], inputs[n_data:n_data + 2], inputs[n_data + 2:]
        # the fused ops return (h, c, c_n), or (c, empty, c_n) without an output gate
        c = output[1] if fused and flags[0] else output[0]
        ctx.save_for_backward(*data, c, *layout)
        ctx.flags = flags
        ctx.has_c0 = inputs[c0_at] is not None
        ctx.state_shape = output[-1].shape

    def backward(ctx, grad_first, *grads):
        saved = ctx.saved_tensors
        c = saved[n_data]
        grad_first = torch.zeros_like(c) if grad_first is None else grad_first
        grad_c_n = grads[-1] if grads[-1] is not None else c.new_zeros(ctx.state_shape)
        *grad_data, grad_c0 = backward_op(grad_first, grad_c_n, *saved, *ctx.flags)
        out = grad_data + [None] * (2 + len(ctx.flags))
        out[c0_at] = grad_c0 if ctx.has_c0 else None
        return tuple(out)

    torch.library.register_autograd(f"qrnn_lm::{name}", backward, setup_context=setup_context)


if _COMPILED:
    for _name, _fake in (("fo_pool", _fo_pool_fake),
                         ("fo_pool_backward", _plain_backward_fake),
                         ("fo_pool_packed", _fo_pool_packed_fake),
                         ("fo_pool_packed_backward", _plain_backward_fake),
                         ("fo_pool_fused", _fo_pool_fused_fake),
                         ("fo_pool_fused_backward", _fused_backward_fake),
                         ("fo_pool_fused_packed", _fo_pool_fused_packed_fake),
                         ("fo_pool_fused_packed_backward", _fused_backward_fake)):
        torch.library.register_fake(f"qrnn_lm::{_name}", _fake)
    for _name, _n_data in (("fo_pool", 2), ("fo_pool_packed", 2),
                           ("fo_pool_fused", 1), ("fo_pool_fused_packed", 1)):
        _register_autograd(_name, _n_data)
    del _name, _fake, _n_data
