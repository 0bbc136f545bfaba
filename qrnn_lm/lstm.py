"""``LSTM``: ``nn.LSTM`` with the call convention of :class:`qrnn_lm.rnn.QRNN`.

Same parameters and ``(h, c)`` state as ``nn.LSTM`` (cuDNN through packed
sequences on GPU); adds ``lengths`` for padded Tensor input (length 0 allowed),
clear errors for bad input (:mod:`qrnn_lm.checks`) and the ``detach_state`` /
``reorder_state`` methods.  Re-exported from :mod:`qrnn_lm.rnn`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import checks
from .sequences import _StateOps

__all__ = ["LSTM"]


class LSTM(_StateOps, nn.LSTM):
    """``nn.LSTM`` (cuDNN on GPU, same parameters and ``(h, c)`` state) with the QRNN call convention.

    ``output, (h_n, c_n) = lstm(input, state=None, *, lengths=None)``: ``input`` a Tensor
    or PackedSequence, ``lengths`` optional for Tensor input (padded steps give output 0
    and do not change the state; length 0 is allowed).  State ``(h, c)`` tensors are
    ``(num_layers * num_directions, B, H)`` in the caller's batch order.
    ``detach_state`` / ``reorder_state`` work as for :class:`QRNN`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ):
        super().__init__(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
            dropout=dropout, bidirectional=bidirectional,
        )

    def _check_state(self, state, x: Tensor, batch: int):
        if state is None:
            return None
        if not (isinstance(state, tuple) and len(state) == 2):
            raise ValueError(f"LSTM state must be None or a tuple (h, c), got {type(state).__name__}")
        D = 2 if self.bidirectional else 1
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (
            checks.state_tensor(state[0], "h", (self.num_layers * D, batch, h_size), x, "LSTM"),
            checks.state_tensor(state[1], "c", (self.num_layers * D, batch, self.hidden_size), x, "LSTM"),
        )

    @staticmethod
    def _cpu_autocast(x: Tensor, state):
        # oneDNN's LSTM fails on CPUs without native bf16 when autocast hands it float32
        # inputs ("could not create a primitive descriptor"); inputs and state already in
        # the autocast dtype take a path that works everywhere.
        if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
            return x, state
        dtype = torch.get_autocast_dtype("cpu")
        if state is not None:
            state = (state[0].to(dtype), state[1].to(dtype))
        return x.to(dtype), state

    def forward(self, input, state=None, *, lengths: Optional[Tensor] = None):
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("LSTM: lengths are only for Tensor input; a PackedSequence has its own")
            checks.packed_sequence(input, "LSTM")
            checks.module_input(input.data, self.input_size, self.weight_ih_l0, "LSTM")
            state = self._check_state(state, input.data, int(input.batch_sizes[0]))
            data, state = self._cpu_autocast(input.data, state)
            return super().forward(input._replace(data=data), state)
        if not isinstance(input, Tensor):
            raise ValueError(f"LSTM input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() != 3:
            raise ValueError(
                f"LSTM expects a 3-D input ({'B, T' if self.batch_first else 'T, B'}, "
                f"{self.input_size}), got shape {tuple(input.shape)}"
            )
        checks.module_input(input, self.input_size, self.weight_ih_l0, "LSTM")
        t_dim = 1 if self.batch_first else 0
        T, B = input.shape[t_dim], input.shape[1 - t_dim]
        state = self._check_state(state, input, B)
        input, state = self._cpu_autocast(input, state)
        if lengths is None:
            return super().forward(input, state)
        lengths = checks.module_lengths(lengths, T, B, input.device, "LSTM")
        # cuDNN (through packing) cannot run length-0 sequences: run them for one step and
        # put back their output 0 and initial state afterwards
        empty = lengths == 0
        packed = pack_padded_sequence(
            input, lengths.clamp(min=1).cpu(), batch_first=self.batch_first, enforce_sorted=False
        )
        out, (h_n, c_n) = super().forward(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=T)
        if bool(empty.any()):
            keep = ~empty.view((1, B, 1) if not self.batch_first else (B, 1, 1))
            out = out * keep.to(out.dtype)
            if state is None:
                h0, c0 = torch.zeros_like(h_n), torch.zeros_like(c_n)
            else:
                h0, c0 = state[0].to(h_n.dtype), state[1].to(c_n.dtype)
            m = empty.view(1, B, 1)
            h_n, c_n = torch.where(m, h0, h_n), torch.where(m, c0, c_n)
        return out, (h_n, c_n)
