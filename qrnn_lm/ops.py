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
  test oracles and the fallback when no compiled kernel is available;
* ``compiled_devices()``: device types served by compiled kernels.

The compiled kernels live in ``csrc/`` and register the ``torch.ops.qrnn_lm``
namespace; this module validates arguments, wires up autograd and the fake
(meta) implementations that ``torch.compile`` needs.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _ext

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

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------
# References (pure PyTorch): test oracles and fallback
# --------------------------------------------------------------------------

def _acc(t: Optional[Tensor]) -> Optional[Tensor]:
    """Half-precision inputs are computed in float32 (as the kernels do)."""
    if t is not None and t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def fo_pool_reference(f: Tensor, z: Tensor, c0: Optional[Tensor] = None,
                      lengths: Optional[Tensor] = None, *,
                      reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over padded sequences, as a plain loop over time.

    Args:
        f: (T, B, H) forget gate values in (0, 1).
        z: (T, B, H) candidate values.
        c0: (B, H) initial state, or None for zeros.
        lengths: None (all sequences have length T) or int64 (B,) with
            0 <= lengths[b] <= T, in any order.
        reverse: run each sequence from t = lengths[b] - 1 down to 0.

    Returns:
        c: (T, B, H) with c[t, b] = f*c_prev + (1-f)*z for t < lengths[b],
            and 0 at padding positions t >= lengths[b].
        c_n: (B, H) the state after each sequence's own last step (c0[b] or
            0 when lengths[b] == 0).

    Padding positions are never read: whatever they hold (NaN and inf
    included), ``c`` is 0 there, ``c_n`` and every valid step are unaffected
    and the gradients at padding are 0, as in the compiled kernels.  Inside
    a sequence IEEE arithmetic applies unchanged: a NaN in ``f``, ``z`` or
    ``c0`` makes that sequence's ``c`` NaN from that step on (and ``c_n``),
    an infinite ``z`` gives inf, or NaN where multiplied by 0 (``f == 1``);
    other sequences and columns are unaffected.
    """
    _check_padded(f, z, c0, lengths, "fo_pool_reference")
    dtype = f.dtype
    f, z, c0 = _acc(f), _acc(z), _acc(c0)
    T, B, H = f.shape
    c = c0 if c0 is not None else f.new_zeros(B, H)
    mask = None
    if lengths is not None:
        steps = torch.arange(T, device=f.device).unsqueeze(1)
        mask = (steps < lengths.to(f.device).unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        # Mask the inputs before computing: a NaN at padding would otherwise
        # reach valid steps through the gradient (0 * NaN).
        f = torch.where(mask, f, torch.zeros_like(f))
        z = torch.where(mask, z, torch.zeros_like(z))
    order = range(T - 1, -1, -1) if reverse else range(T)
    fs, zs = f.unbind(0), z.unbind(0)
    out = [None] * T
    for t in order:
        new = fs[t] * c + (1 - fs[t]) * zs[t]
        if mask is None:
            c = new
            out[t] = new
        else:
            c = torch.where(mask[t], new, c)
            out[t] = torch.where(mask[t], new, torch.zeros_like(new))
    out_c = torch.stack(out, 0) if T > 0 else f.new_zeros(0, B, H)
    return out_c.to(dtype), c.to(dtype)


def fo_pool_packed_reference(f: Tensor, z: Tensor, batch_sizes: Tensor,
                             c0: Optional[Tensor] = None, *,
                             reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over a packed batch, as a plain loop over time.

    Args:
        f, z: (N, H) rows of ``PackedSequence.data``.
        batch_sizes: int64 (T,) on CPU, non-increasing, summing to N
            (``PackedSequence.batch_sizes``); step t covers rows
            ``sum(batch_sizes[:t]) + b`` for b < batch_sizes[t].
        c0: (B, H) with B = batch_sizes[0], in packed (sorted) order, or None.
        reverse: run each sequence from its last step down to its first.

    Returns:
        c: (N, H) state after every step, in the packed layout.
        c_n: (B, H) state after each sequence's own last step.

    The packed layout has no padding; non-finite values behave as in
    :func:`fo_pool_reference` (IEEE arithmetic within their own sequence).
    """
    _check_packed(f, z, batch_sizes, c0, "fo_pool_packed_reference")
    dtype = f.dtype
    f, z, c0 = _acc(f), _acc(z), _acc(c0)
    sizes = [int(s) for s in batch_sizes.tolist()]
    B = sizes[0] if sizes else 0
    H = f.shape[1]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    c = c0 if c0 is not None else f.new_zeros(B, H)
    out = [None] * len(sizes)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    for t in order:
        bs, lo = sizes[t], offsets[t]
        ft, zt = f[lo:lo + bs], z[lo:lo + bs]
        new = ft * c[:bs] + (1 - ft) * zt
        c = torch.cat([new, c[bs:]], 0)
        out[t] = new
    out_c = torch.cat(out, 0) if out else f.new_zeros(0, H)
    return out_c.to(dtype), c.to(dtype)


def _split_gates(gates: Tensor, output_gate: bool):
    G = 3 if output_gate else 2
    H = gates.shape[-1] // G
    zp, fp = gates[..., :H], gates[..., H:2 * H]
    o = torch.sigmoid(gates[..., 2 * H:3 * H]) if output_gate else None
    return torch.tanh(zp), torch.sigmoid(fp), o


def fo_pool_fused_reference(gates: Tensor, c0: Optional[Tensor] = None,
                            lengths: Optional[Tensor] = None, *,
                            output_gate: bool = True,
                            reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on gate pre-activations, padded layout.

    Args:
        gates: (T, B, G*H) pre-activations laid out as ``[z | f | o]`` chunks
            of H (G = 3 with output gate, 2 without); z = tanh, f = sigmoid,
            o = sigmoid are applied here.
        c0, lengths, reverse: as in :func:`fo_pool_reference`.
        output_gate: whether the third chunk (o) exists.

    Returns:
        h: (T, B, H) = o * c (or c without output gate); 0 at padding.
        c_n: (B, H) final state per sequence.

    Padding positions are never read (NaN/inf there give 0 outputs and 0
    gradients), as in the compiled kernels.  In valid steps +-inf
    pre-activations saturate (tanh -> +-1, sigmoid -> 0 or 1) and give finite
    results; a NaN makes the outputs that depend on it NaN, here only through
    its own gate, whereas the compiled kernels compute a column's three
    activations together and make that column's state NaN from that step on.
    Either way other columns and other sequences are unaffected.
    """
    _check_fused(gates, output_gate, "fo_pool_fused_reference")
    dtype = gates.dtype
    gates = _acc(gates)
    if lengths is not None:
        T = gates.shape[0]
        steps = torch.arange(T, device=gates.device).unsqueeze(1)
        mask = (steps < lengths.to(gates.device).unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        gates = torch.where(mask, gates, torch.zeros_like(gates))
    z, f, o = _split_gates(gates, output_gate)
    c, c_n = fo_pool_reference(f, z, _acc(c0), lengths, reverse=reverse)
    h = c * o if output_gate else c
    return h.to(dtype), c_n.to(dtype)


def fo_pool_fused_packed_reference(gates: Tensor, batch_sizes: Tensor,
                                   c0: Optional[Tensor] = None, *,
                                   output_gate: bool = True,
                                   reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on gate pre-activations, packed layout.

    ``gates`` is (N, G*H) packed rows; otherwise as
    :func:`fo_pool_fused_reference` and :func:`fo_pool_packed_reference`.
    Returns h (N, H) and c_n (B, H).
    """
    _check_fused(gates, output_gate, "fo_pool_fused_packed_reference")
    dtype = gates.dtype
    z, f, o = _split_gates(_acc(gates), output_gate)
    c, c_n = fo_pool_packed_reference(f, z, batch_sizes, _acc(c0), reverse=reverse)
    h = c * o if output_gate else c
    return h.to(dtype), c_n.to(dtype)


# --------------------------------------------------------------------------
# Argument validation (one clear ValueError per problem)
# --------------------------------------------------------------------------

def _is_compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - older torch
        return False


def _check_float(name: str, t: Tensor, fn: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float16, bfloat16, float32 or float64, "
                         f"got {t.dtype}")


def _check_c0(c0: Optional[Tensor], B: int, H: int, ref: Tensor, fn: str) -> None:
    if c0 is None:
        return
    _check_float("c0", c0, fn)
    if c0.dim() != 2 or tuple(c0.shape) != (B, H):
        raise ValueError(f"{fn}: c0 must have shape (B, H) = ({B}, {H}), got {tuple(c0.shape)}")
    if c0.dtype != ref.dtype:
        raise ValueError(f"{fn}: c0 has dtype {c0.dtype} but the inputs have {ref.dtype}")
    if c0.device != ref.device:
        raise ValueError(f"{fn}: c0 is on {c0.device} but the inputs are on {ref.device}")


def _check_lengths(lengths: Optional[Tensor], T: int, B: int, ref: Tensor, fn: str) -> None:
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"{fn}: lengths must be an int64 Tensor of shape (B,), "
                         f"got {type(lengths).__name__}")
    if lengths.dtype != torch.int64:
        raise ValueError(f"{fn}: lengths must have dtype int64, got {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"{fn}: lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != ref.device:
        raise ValueError(f"{fn}: lengths is on {lengths.device}; put it on the CPU or on "
                         f"{ref.device} with the inputs")
    if B > 0 and not _is_compiling():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > T:
            raise ValueError(f"{fn}: lengths must lie in [0, T={T}], got values in [{lo}, {hi}]")


def _check_gates_pair(f, z, fn: str, dim: int, shape: str) -> None:
    """f and z: float tensors of rank ``dim`` with one shape, dtype and device."""
    _check_float("f", f, fn)
    _check_float("z", z, fn)
    if f.dim() != dim:
        raise ValueError(f"{fn}: f must have shape {shape}, got {f.dim()} dimensions")
    if z.shape != f.shape:
        raise ValueError(f"{fn}: z has shape {tuple(z.shape)} but f has {tuple(f.shape)}")
    if z.dtype != f.dtype:
        raise ValueError(f"{fn}: z has dtype {z.dtype} but f has {f.dtype}")
    if z.device != f.device:
        raise ValueError(f"{fn}: z is on {z.device} but f is on {f.device}")


def _check_padded(f, z, c0, lengths, fn: str) -> None:
    _check_gates_pair(f, z, fn, 3, "(T, B, H)")
    T, B, H = f.shape
    _check_c0(c0, B, H, f, fn)
    _check_lengths(lengths, T, B, f, fn)


def _check_batch_sizes(batch_sizes: Tensor, N: int, fn: str) -> None:
    if not isinstance(batch_sizes, torch.Tensor):
        raise ValueError(f"{fn}: batch_sizes must be an int64 CPU Tensor, "
                         f"got {type(batch_sizes).__name__}")
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu" \
            or batch_sizes.dim() != 1:
        raise ValueError(f"{fn}: batch_sizes must be a 1-d int64 CPU tensor (as in "
                         f"PackedSequence), got {batch_sizes.dim()}-d {batch_sizes.dtype} "
                         f"on {batch_sizes.device}")
    if _is_compiling():
        return
    if batch_sizes.numel() > 0:
        if int(batch_sizes.min()) < 1:
            raise ValueError(f"{fn}: batch_sizes must be positive")
        if batch_sizes.numel() > 1 and bool((batch_sizes[1:] > batch_sizes[:-1]).any()):
            raise ValueError(f"{fn}: batch_sizes must be non-increasing (as produced by "
                             f"torch.nn.utils.rnn.pack_*)")
    total = int(batch_sizes.sum())
    if total != N:
        raise ValueError(f"{fn}: batch_sizes sum to {total} but the data has {N} rows")


def _check_packed(f, z, batch_sizes, c0, fn: str) -> None:
    _check_gates_pair(f, z, fn, 2, "(N, H) (packed rows)")
    _check_batch_sizes(batch_sizes, f.shape[0], fn)
    if c0 is not None:
        B = int(batch_sizes[0]) if batch_sizes.numel() > 0 and not _is_compiling() \
            else c0.shape[0]
        _check_c0(c0, B, f.shape[1], f, fn)


def _check_fused(gates, output_gate, fn: str) -> int:
    _check_float("gates", gates, fn)
    G = 3 if output_gate else 2
    if gates.shape[-1] % G != 0 if gates.dim() > 0 else True:
        raise ValueError(f"{fn}: the last dim of gates must be {G}*H ([z | f{' | o' if output_gate else ''}]), "
                         f"got shape {tuple(gates.shape)}")
    return gates.shape[-1] // G


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
    _check_padded(f, z, c0, lengths, "fo_pool")
    return _fo_pool(f, z, c0, lengths, reverse)


def fo_pool_packed(f: Tensor, z: Tensor, batch_sizes: Tensor,
                   c0: Optional[Tensor] = None, *,
                   reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over packed rows; see :func:`fo_pool_packed_reference`.

    f, z: (N, H); batch_sizes: int64 (T,) on CPU; c0: (B, H) or None.
    Returns c (N, H) and c_n (B, H).
    """
    _check_packed(f, z, batch_sizes, c0, "fo_pool_packed")
    return _fo_pool_packed(f, z, batch_sizes, c0, reverse)


def fo_pool_fused(gates: Tensor, c0: Optional[Tensor] = None,
                  lengths: Optional[Tensor] = None, *, output_gate: bool = True,
                  reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on pre-activations; see :func:`fo_pool_fused_reference`.

    gates: (T, B, G*H) as ``[z | f | o]``. Returns h (T, B, H) and c_n (B, H).
    Gradients flow to gates (the pre-activations) and c0.
    """
    H = _check_fused(gates, output_gate, "fo_pool_fused")
    if gates.dim() != 3:
        raise ValueError(f"fo_pool_fused: gates must have shape (T, B, G*H), got "
                         f"{gates.dim()} dimensions")
    T, B = gates.shape[:2]
    _check_c0(c0, B, H, gates, "fo_pool_fused")
    _check_lengths(lengths, T, B, gates, "fo_pool_fused")
    return _fo_pool_fused(gates, c0, lengths, output_gate, reverse)


def fo_pool_fused_packed(gates: Tensor, batch_sizes: Tensor, c0: Optional[Tensor] = None,
                         *, output_gate: bool = True,
                         reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling on packed pre-activations; see :func:`fo_pool_fused_packed_reference`.

    gates: (N, G*H); batch_sizes: int64 (T,) on CPU. Returns h (N, H), c_n (B, H).
    """
    H = _check_fused(gates, output_gate, "fo_pool_fused_packed")
    if gates.dim() != 2:
        raise ValueError(f"fo_pool_fused_packed: gates must have shape (N, G*H), got "
                         f"{gates.dim()} dimensions")
    _check_batch_sizes(batch_sizes, gates.shape[0], "fo_pool_fused_packed")
    if c0 is not None:
        B = int(batch_sizes[0]) if batch_sizes.numel() > 0 and not _is_compiling() \
            else c0.shape[0]
        _check_c0(c0, B, H, gates, "fo_pool_fused_packed")
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
