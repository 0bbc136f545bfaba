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

Tensor = torch.Tensor

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
# Public API
# --------------------------------------------------------------------------

def compiled_devices() -> frozenset:
    """Device types ({"cpu"}, {"cpu", "cuda"}) served by compiled kernels here."""
    from . import _ext
    return _ext.compiled_devices()


def _use_kernel(t: Tensor) -> bool:
    return t.device.type in compiled_devices()


def fo_pool(f: Tensor, z: Tensor, c0: Optional[Tensor] = None,
            lengths: Optional[Tensor] = None, *,
            reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over padded sequences; see :func:`fo_pool_reference`.

    f, z: (T, B, H); c0: (B, H) or None; lengths: None or int64 (B,).
    Returns c (T, B, H) and c_n (B, H). Gradients flow to f, z and c0.
    """
    _check_padded(f, z, c0, lengths, "fo_pool")
    if not _use_kernel(f):
        return fo_pool_reference(f, z, c0, lengths, reverse=reverse)
    if lengths is not None:
        lengths = lengths.to(f.device)
    return torch.ops.qrnn_lm.fo_pool(f, z, c0, lengths, reverse)


def fo_pool_packed(f: Tensor, z: Tensor, batch_sizes: Tensor,
                   c0: Optional[Tensor] = None, *,
                   reverse: bool = False) -> Tuple[Tensor, Tensor]:
    """fo-pooling over packed rows; see :func:`fo_pool_packed_reference`.

    f, z: (N, H); batch_sizes: int64 (T,) on CPU; c0: (B, H) or None.
    Returns c (N, H) and c_n (B, H).
    """
    _check_packed(f, z, batch_sizes, c0, "fo_pool_packed")
    if not _use_kernel(f):
        return fo_pool_packed_reference(f, z, batch_sizes, c0, reverse=reverse)
    return torch.ops.qrnn_lm.fo_pool_packed(f, z, batch_sizes, c0, reverse)


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
    if not _use_kernel(gates):
        return fo_pool_fused_reference(gates, c0, lengths, output_gate=output_gate,
                                       reverse=reverse)
    if lengths is not None:
        lengths = lengths.to(gates.device)
    h, _, c_n = torch.ops.qrnn_lm.fo_pool_fused(gates, c0, lengths, output_gate, reverse)
    return h, c_n


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
    if not _use_kernel(gates):
        return fo_pool_fused_packed_reference(gates, batch_sizes, c0,
                                              output_gate=output_gate, reverse=reverse)
    h, _, c_n = torch.ops.qrnn_lm.fo_pool_fused_packed(gates, batch_sizes, c0,
                                                       output_gate, reverse)
    return h, c_n


# --------------------------------------------------------------------------
# Fake implementations and autograd for the compiled ops
# --------------------------------------------------------------------------

_registered = False


def _packed_batch(c0: Optional[Tensor]):
    # B = batch_sizes[0] is data-dependent; c0 pins it when given
    if c0 is not None:
        return c0.shape[0]
    return torch.library.get_ctx().new_dynamic_size()


def _zeros_if_none(g: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def _register_python_side() -> None:
    """Registers fake impls and autograd formulas once the C++ ops exist."""
    global _registered
    if _registered:
        return
    _registered = True
    reg_fake = torch.library.register_fake
    reg_autograd = torch.library.register_autograd

    # ---- fake (meta) implementations: shapes only, for torch.compile ----
    @reg_fake("qrnn_lm::fo_pool")
    def _(f, z, c0, lengths, reverse):
        return torch.empty_like(f), f.new_empty(f.shape[1], f.shape[2])

    @reg_fake("qrnn_lm::fo_pool_backward")
    def _(grad_c, grad_c_n, f, z, c, c0, lengths, reverse):
        return torch.empty_like(f), torch.empty_like(f), f.new_empty(f.shape[1], f.shape[2])

    @reg_fake("qrnn_lm::fo_pool_packed")
    def _(f, z, batch_sizes, c0, reverse):
        return torch.empty_like(f), f.new_empty(_packed_batch(c0), f.shape[1])

    @reg_fake("qrnn_lm::fo_pool_packed_backward")
    def _(grad_c, grad_c_n, f, z, c, batch_sizes, c0, reverse):
        return torch.empty_like(f), torch.empty_like(f), torch.empty_like(grad_c_n)

    def _fused_fake(gates, B, output_gate):
        H = gates.shape[-1] // (3 if output_gate else 2)
        out = gates.new_empty(*gates.shape[:-1], H)
        second = gates.new_empty(*gates.shape[:-1], H) if output_gate else gates.new_empty(0)
        return out, second, gates.new_empty(B, H)

    @reg_fake("qrnn_lm::fo_pool_fused")
    def _(gates, c0, lengths, output_gate, reverse):
        return _fused_fake(gates, gates.shape[1], output_gate)

    @reg_fake("qrnn_lm::fo_pool_fused_backward")
    def _(grad_h, grad_c_n, gates, c, c0, lengths, output_gate, reverse):
        return torch.empty_like(gates), torch.empty_like(grad_c_n)

    @reg_fake("qrnn_lm::fo_pool_fused_packed")
    def _(gates, batch_sizes, c0, output_gate, reverse):
        return _fused_fake(gates, _packed_batch(c0), output_gate)

    @reg_fake("qrnn_lm::fo_pool_fused_packed_backward")
    def _(grad_h, grad_c_n, gates, c, batch_sizes, c0, output_gate, reverse):
        return torch.empty_like(gates), torch.empty_like(grad_c_n)

    # ---- autograd: the backward of each op is itself a registered op ----
    # Saved: the inputs and the states c (every c_{t-1} is needed and cannot
    # be recovered stably from c_t); gate activations are recomputed from
    # the pre-activations in registers instead of being stored.
    def _setup_plain(ctx, inputs, output):
        f, z, c0, lengths, reverse = inputs
        ctx.save_for_backward(f, z, output[0], c0, lengths)
        ctx.reverse = reverse

    def _backward_plain(ctx, grad_c, grad_c_n):
        f, z, c, c0, lengths = ctx.saved_tensors
        grad_c = _zeros_if_none(grad_c, c)
        grad_c_n = _zeros_if_none(grad_c_n, f.new_empty(f.shape[1], f.shape[2]))
        gf, gz, gc0 = torch.ops.qrnn_lm.fo_pool_backward(grad_c, grad_c_n, f, z, c, c0,
                                                          lengths, ctx.reverse)
        return gf, gz, (gc0 if c0 is not None else None), None, None

    reg_autograd("qrnn_lm::fo_pool", _backward_plain, setup_context=_setup_plain)

    def _setup_packed(ctx, inputs, output):
        f, z, batch_sizes, c0, reverse = inputs
        ctx.save_for_backward(f, z, output[0], batch_sizes, c0)
        ctx.reverse = reverse
        ctx.batch = output[1].shape[0]

    def _backward_packed(ctx, grad_c, grad_c_n):
        f, z, c, batch_sizes, c0 = ctx.saved_tensors
        grad_c = _zeros_if_none(grad_c, c)
        grad_c_n = _zeros_if_none(grad_c_n, f.new_empty(ctx.batch, f.shape[1]))
        gf, gz, gc0 = torch.ops.qrnn_lm.fo_pool_packed_backward(
            grad_c, grad_c_n, f, z, c, batch_sizes, c0, ctx.reverse)
        return gf, gz, None, (gc0 if c0 is not None else None), None

    reg_autograd("qrnn_lm::fo_pool_packed", _backward_packed, setup_context=_setup_packed)

    def _setup_fused(ctx, inputs, output):
        gates, c0, lengths, output_gate, reverse = inputs
        h, c, _ = output
        # without an output gate the op returns c as its first output
        ctx.save_for_backward(gates, c if output_gate else h, c0, lengths)
        ctx.flags = (output_gate, reverse)

    def _backward_fused(ctx, grad_h, _grad_c, grad_c_n):
        gates, c, c0, lengths = ctx.saved_tensors
        grad_h = _zeros_if_none(grad_h, c)
        grad_c_n = _zeros_if_none(grad_c_n, c.new_empty(c.shape[1], c.shape[2]))
        gg, gc0 = torch.ops.qrnn_lm.fo_pool_fused_backward(grad_h, grad_c_n, gates, c, c0,
                                                            lengths, *ctx.flags)
        return gg, (gc0 if c0 is not None else None), None, None, None

    reg_autograd("qrnn_lm::fo_pool_fused", _backward_fused, setup_context=_setup_fused)

    def _setup_fused_packed(ctx, inputs, output):
        gates, batch_sizes, c0, output_gate, reverse = inputs
        h, c, c_n = output
        ctx.save_for_backward(gates, c if output_gate else h, batch_sizes, c0)
        ctx.flags = (output_gate, reverse)
        ctx.batch = c_n.shape[0]

    def _backward_fused_packed(ctx, grad_h, _grad_c, grad_c_n):
        gates, c, batch_sizes, c0 = ctx.saved_tensors
        grad_h = _zeros_if_none(grad_h, c)
        grad_c_n = _zeros_if_none(grad_c_n, c.new_empty(ctx.batch, c.shape[1]))
        gg, gc0 = torch.ops.qrnn_lm.fo_pool_fused_packed_backward(
            grad_h, grad_c_n, gates, c, batch_sizes, c0, *ctx.flags)
        return gg, None, (gc0 if c0 is not None else None), None, None

    reg_autograd("qrnn_lm::fo_pool_fused_packed", _backward_fused_packed,
                 setup_context=_setup_fused_packed)


from . import _ext  # noqa: E402

_ext.compiled_devices()
