"""The two input layouts of :class:`qrnn_lm.rnn.QRNN`: windows and pooling per layout.

A QRNN layer with window ``k`` multiplies each step's last ``k`` inputs
(``[x_{t-k+1}; ...; x_t]``, the layer's input history before the first step) by
one weight; the layouts build those windowed inputs for all steps at once and
call the matching (unchecked) fo-pooling op:

* :class:`PaddedLayout`: time-major ``(T, B, I)`` with optional ``lengths``,
  windows by slicing;
* :class:`PackedLayout`: ``PackedSequence`` rows ``(N, I)`` with
  ``batch_sizes``, windows by gathering rows (:class:`PackedWindows`), never
  computing on padding.

The QRNN checks every argument before it builds a layout.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import ops


class PackedWindows:
    """Row indices that build windowed inputs from packed rows, from ``batch_sizes`` alone.

    Rows are gathered from ``src = cat([history rows ((k-1)*B), packed rows (N), one zero
    row])``, history in sorted batch order, history row ``(j, b)`` at ``j*B + b``.  Packed
    row of (step t, sorted entry b) is ``offsets[t] + b``; it exists iff
    ``b < batch_sizes[t]``, so every earlier step of an existing row exists too.
    """

    def __init__(self, batch_sizes: Tensor, k: int, device: torch.device):
        bs = batch_sizes.to(torch.long)
        steps, batch, n = bs.numel(), int(bs[0]), int(bs.sum())
        offsets = torch.cumsum(bs, 0) - bs
        t = torch.repeat_interleave(torch.arange(steps), bs)
        b = torch.arange(n) - offsets[t]
        base, zero_row = (k - 1) * batch, (k - 1) * batch + n
        fwd, bwd = [], []
        for j in range(k):
            shift = k - 1 - j  # slot j holds x_{t - shift} (forward) / x_{t + shift} (backward)
            s = t - shift
            fwd.append(torch.where(s >= 0, base + offsets[s.clamp(min=0)] + b, (k - 1 + s) * batch + b))
            s = t + shift
            sc = s.clamp(max=steps - 1)
            ok = (s < steps) & (b < bs[sc])
            bwd.append(torch.where(ok, base + offsets[sc] + b, zero_row))
        self.forward = torch.stack(fwd, 1).reshape(-1).to(device)
        self.backward = torch.stack(bwd, 1).reshape(-1).to(device)
        # the last k-1 entries of [history; x_0 .. x_{L_b - 1}] of every sequence b
        lengths = (bs.unsqueeze(1) > torch.arange(batch)).sum(0)
        p = lengths.unsqueeze(0) + torch.arange(k - 1).unsqueeze(1)  # (k-1, B) positions
        q = (p - (k - 1)).clamp(min=0)
        hb = torch.arange(batch).expand_as(p)
        self.history = torch.where(p < k - 1, p * batch + hb, base + offsets[q.clamp(max=steps - 1)] + hb)
        self.history = self.history.reshape(-1).to(device)
        self.batch, self.rows = batch, n


class PaddedLayout:
    """Time-major padded input (T, B, I) with optional ``lengths``: windows by slicing."""

    def __init__(self, steps: int, lengths: Optional[Tensor], k: int):
        self.steps, self.lengths, self.k = steps, lengths, k

    def extend(self, x: Tensor, h0: Optional[Tensor]):
        """-> (source of the windows, the layer's new input history (k-1, B, I))."""
        T, k = self.steps, self.k
        if h0 is None:
            h0 = x.new_zeros(k - 1, x.shape[1], x.shape[2])
        xe = torch.cat([h0, x], 0)  # (k-1+T, B, I): index j+t holds x_{t+j-(k-1)}
        if self.lengths is None:
            return xe, xe[T:]
        pos = self.lengths.unsqueeze(0) + torch.arange(k - 1, device=x.device).unsqueeze(1)
        return xe, xe.gather(0, pos.unsqueeze(2).expand(k - 1, x.shape[1], x.shape[2]))

    def window(self, xe: Tensor, x: Tensor, reverse: bool) -> Tensor:
        T, k = self.steps, self.k
        if not reverse:
            return torch.cat([xe[j : j + T] for j in range(k)], 2)
        xr = torch.cat([x, x.new_zeros(k - 1, x.shape[1], x.shape[2])], 0)
        return torch.cat([xr[k - 1 - j : k - 1 - j + T] for j in range(k)], 2)

    def pool_fused(self, gates, c0, output_gate: bool, reverse: bool):
        return ops._fo_pool_fused(gates, c0, self.lengths, output_gate, reverse)

    def pool(self, f, z, c0, reverse: bool):
        return ops._fo_pool(f, z, c0, self.lengths, reverse)


class PackedLayout:
    """Packed rows (N, I) with ``batch_sizes``: windows by gathering rows (PackedWindows)."""

    def __init__(self, batch_sizes: Tensor, k: int, device: torch.device):
        self.batch_sizes, self.k = batch_sizes, k
        self.windows = PackedWindows(batch_sizes, k, device) if k > 1 else None

    def extend(self, x: Tensor, h0: Optional[Tensor]):
        k, B, I = self.k, self.windows.batch, x.shape[1]
        h0 = x.new_zeros((k - 1) * B, I) if h0 is None else h0.reshape(-1, I)
        src = torch.cat([h0, x, x.new_zeros(1, I)], 0)
        return src, src.index_select(0, self.windows.history).view(k - 1, B, I)

    def window(self, src: Tensor, x: Tensor, reverse: bool) -> Tensor:
        idx = self.windows.backward if reverse else self.windows.forward
        return src.index_select(0, idx).view(x.shape[0], self.k * x.shape[1])

    def pool_fused(self, gates, c0, output_gate: bool, reverse: bool):
        return ops._fo_pool_fused_packed(gates, self.batch_sizes, c0, output_gate, reverse)

    def pool(self, f, z, c0, reverse: bool):
        return ops._fo_pool_packed(f, z, self.batch_sizes, c0, reverse)
