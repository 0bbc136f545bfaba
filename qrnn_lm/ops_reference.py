"""Pure-PyTorch fo-pooling: the test oracles and the fallback of :mod:`qrnn_lm.ops`.

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t        h_t = o_t * c_t

Plain loops over time with the signatures of the public ops (``fo_pool`` ...),
re-exported from :mod:`qrnn_lm.ops`.  :mod:`qrnn_lm.ops` runs them on devices
without a compiled kernel; the tests compare the kernels against them in
float64.  Half-precision inputs are computed in float32, as the kernels do.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import checks

Tensor = torch.Tensor

__all__ = [
    "fo_pool_reference",
    "fo_pool_packed_reference",
    "fo_pool_fused_reference",
    "fo_pool_fused_packed_reference",
]


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
    checks.fo_pool_args(f, z, c0, lengths, "fo_pool_reference")
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
    checks.fo_pool_packed_args(f, z, batch_sizes, c0, "fo_pool_packed_reference")
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
    checks.fused_gates(gates, output_gate, "fo_pool_fused_reference")
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
    checks.fused_gates(gates, output_gate, "fo_pool_fused_packed_reference")
    dtype = gates.dtype
    z, f, o = _split_gates(_acc(gates), output_gate)
    c, c_n = fo_pool_packed_reference(f, z, batch_sizes, _acc(c0), reverse=reverse)
    h = c * o if output_gate else c
    return h.to(dtype), c_n.to(dtype)
