"""Helpers shared by the encoders (:mod:`qrnn_lm.rnn`) and the models that use them.

* :func:`pack_list` / :func:`unpack_to_list`: a list of variable-length sequences
  to a ``PackedSequence`` and back, in the caller's order;
* :func:`detach_state` / :func:`reorder_state`: truncated BPTT and batch
  selection on any recurrent state (QRNN, LSTM, ``nn.LSTM``), by mapping a
  function over the state's tensors (:func:`_map_state`).

All are re-exported from :mod:`qrnn_lm.rnn`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_sequence, unpack_sequence

__all__ = ["pack_list", "unpack_to_list", "detach_state", "reorder_state"]


def pack_list(seqs: Sequence[Tensor]) -> PackedSequence:
    """Pack a list of ``(L_i,)`` or ``(L_i, I)`` tensors, any order, any lengths >= 1.

    The Chainer ``NStepLSTM`` habit: ``rnn(pack_list(seqs))``.  The original order is
    kept in the PackedSequence (``enforce_sorted=False``), so :func:`unpack_to_list`
    returns the sequences in the order given here.
    """
    if isinstance(seqs, Tensor) or not isinstance(seqs, (list, tuple)):
        raise ValueError(f"pack_list expects a list of tensors, got {type(seqs).__name__}")
    if len(seqs) == 0:
        raise ValueError("pack_list got an empty list; give at least one sequence")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if not isinstance(s, Tensor):
            raise ValueError(f"pack_list: item {i} is a {type(s).__name__}, not a tensor")
        if s.dim() not in (1, 2):
            raise ValueError(
                f"pack_list: item {i} has shape {tuple(s.shape)}; expected (L,) or (L, I)"
            )
        if s.shape[0] == 0:
            raise ValueError(
                f"pack_list: item {i} is empty; a PackedSequence cannot hold length-0 sequences"
            )
        if s.shape[1:] != first.shape[1:] or s.dtype != first.dtype or s.device != first.device:
            raise ValueError(
                f"pack_list: item {i} ({tuple(s.shape)}, {s.dtype}, {s.device}) does not match "
                f"item 0 ({tuple(first.shape)}, {first.dtype}, {first.device}) in trailing "
                "shape, dtype or device"
            )
    return pack_sequence(list(seqs), enforce_sorted=False)


def unpack_to_list(packed: PackedSequence) -> list[Tensor]:
    """Inverse of :func:`pack_list`: the list of ``(L_i, ...)`` tensors, in original order."""
    if not isinstance(packed, PackedSequence):
        raise ValueError(f"unpack_to_list expects a PackedSequence, got {type(packed).__name__}")
    return unpack_sequence(packed)


def _map_state(state, fn):
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(_map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    raise ValueError(f"a recurrent state holds tensors and tuples, not {type(state).__name__}")


def detach_state(state):
    """Detach every tensor of a state (QRNN, LSTM or ``nn.LSTM``), for truncated BPTT."""
    return _map_state(state, lambda t: t.detach())


def reorder_state(state, index: Tensor):
    """Select / reorder the batch entries of a state (QRNN, LSTM or ``nn.LSTM``).

    ``index`` is an int64 tensor of batch positions; every state tensor has its batch
    on dim 1, so this is ``t.index_select(1, index)`` throughout.
    """
    index = torch.as_tensor(index, dtype=torch.long)
    return _map_state(state, lambda t: t.index_select(1, index.to(t.device)))


class _StateOps:
    """``detach_state`` / ``reorder_state`` of the module, also as methods of the encoders."""

    detach_state = staticmethod(detach_state)
    reorder_state = staticmethod(reorder_state)
