"""Recurrent encoders with the ``nn.LSTM`` call convention: :class:`QRNN` and :class:`LSTM`.

Both take a Tensor ``(T, B, I)`` (``(B, T, I)`` with ``batch_first``) or a
``PackedSequence`` and return ``(output, state)`` with output of the same kind::

    rnn = QRNN(input_size, hidden_size, num_layers=2, window=2)
    output, state = rnn(pack_list(list_of_sequences))      # variable lengths, no padding
    output, state = rnn(next_chunk, rnn.detach_state(state))  # truncated BPTT

QRNN (Bradbury et al. 2016, arXiv 1611.01576).  Per layer and direction, the gate
pre-activations of *all* time steps come from one matmul over a causal window of
``window`` inputs::

    [z | f | o]_t = W [x_{t-k+1}; ...; x_{t-1}; x_t] + b
    c_t = sigmoid(f_t) * c_{t-1} + (1 - sigmoid(f_t)) * tanh(z_t)
    h_t = sigmoid(o_t) * c_t            (h_t = c_t with output_gate=False)

and the sequential part is the fused fo-pooling kernel of :mod:`qrnn_lm.ops`.
Packed input never computes on padding: the matmul runs on the packed rows and the
kernel walks ``batch_sizes``.

State and streaming exactness
-----------------------------
``QRNN`` state is a :class:`QRNNState` ``(c, inputs)``:

* ``c``: ``(num_layers * num_directions, B, H)``, the cell state of every layer and
  direction, indexed like ``nn.LSTM``'s ``c_n`` (layer ``l``, direction ``d`` at
  ``l * num_directions + d``);
* ``inputs``: a tuple with one ``(window - 1, B, I_l)`` tensor per layer, the last
  ``window - 1`` inputs that layer saw (``I_0 = input_size``,
  ``I_l = num_directions * hidden_size``); empty when ``window == 1``.

Unlike ``nn.LSTM`` there is no ``h``: the QRNN recurrence depends only on ``c``
(``h_n`` is the last step of the output).  State tensors are always time-major and in
the caller's batch order (also for a ``PackedSequence`` built with
``enforce_sorted=False``), so :func:`reorder_state` is one ``index_select`` on dim 1.

Running sequences in chunks and passing the returned state gives the same output
and state as one run over the whole sequences, for any window and number of layers
(in eval mode: dropout and zoneout draw fresh masks).

Bidirectional layers follow ``nn.LSTM``: the backward direction's entry of ``c`` is
used as its state *after the last step* (it runs from ``T - 1`` down to 0) and the
returned entry is its state after step 0.  Its window looks ahead
(``[x_{t+k-1}; ...; x_t]``: the forward window of the reversed sequence) and sees
zeros past a sequence's end.  The backward direction needs the future, so a chunked
bidirectional run is *not* equal to a whole run; use whole sequences with
``state=None`` for bidirectional encoders.  The forward direction's state is exact.

``LSTM`` subclasses ``nn.LSTM`` (cuDNN through packed sequences on GPU, same
parameters) with the same call convention; its state is ``nn.LSTM``'s ``(h, c)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import (
    PackedSequence,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    unpack_sequence,
)

from . import ops

__all__ = [
    "QRNN",
    "LSTM",
    "QRNNState",
    "pack_list",
    "unpack_to_list",
    "detach_state",
    "reorder_state",
]


# --------------------------------------------------------------------------- helpers


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


def _check_lengths(lengths, batch: int, steps: int, device: torch.device) -> Tensor:
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"lengths must have shape ({batch},) (one per batch entry), got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if not torch.compiler.is_compiling() and lengths.numel() > 0:
        lo, hi = torch.stack(torch.aminmax(lengths)).tolist()  # one device sync
        if lo < 0 or hi > steps:
            raise ValueError(
                f"lengths must lie in [0, {steps}] (the tensor has {steps} time steps), "
                f"got values in [{lo}, {hi}]"
            )
    return lengths.to(device=device, dtype=torch.long)


def _check_input(name: str, x: Tensor, input_size: int, weight: Tensor) -> None:
    if x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expected inputs with {input_size} features (input_size), got "
            f"{x.shape[-1]} (input shape {tuple(x.shape)})"
        )
    if x.device != weight.device:
        raise ValueError(
            f"{name} input is on {x.device} but the module's parameters are on "
            f"{weight.device}; move one of them"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} expects floating-point inputs, got {x.dtype} (embed ids first)")


def _check_packed(name: str, packed: PackedSequence) -> None:
    bs = packed.batch_sizes
    if bs.device.type != "cpu" or bs.dim() != 1 or bs.numel() == 0:
        raise ValueError(f"{name}: batch_sizes of a PackedSequence must be a non-empty 1-D CPU tensor")
    if packed.data.dim() != 2:
        raise ValueError(
            f"{name}: packed data must be (N, input_size), got shape {tuple(packed.data.shape)}"
        )
    if int(bs.sum()) != packed.data.shape[0]:
        raise ValueError(
            f"{name}: batch_sizes sum to {int(bs.sum())} but the packed data has "
            f"{packed.data.shape[0]} rows"
        )
    if int(bs[-1]) < 1 or (bs.numel() > 1 and bool((bs[1:] > bs[:-1]).any())):
        raise ValueError(f"{name}: batch_sizes must be positive and non-increasing")


def _state_tensor(name: str, what: str, t, shape: tuple, x: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: state {what} must be a tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(
            f"{name}: state {what} has shape {tuple(t.shape)}, expected {shape}; was it made "
            "for another batch size or model?"
        )
    if t.device != x.device:
        raise ValueError(f"{name}: state {what} is on {t.device} but the input is on {x.device}")
    return t


# --------------------------------------------------------------------------- QRNN


class QRNNState(NamedTuple):
    """State of a :class:`QRNN`: see the module docstring.

    ``c``: ``(num_layers * num_directions, B, H)``; ``inputs``: per layer
    ``(window - 1, B, I_l)``, empty tuple for ``window == 1``.
    """

    c: Tensor
    inputs: tuple


class _PackedWindows:
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


class _PaddedLayout:
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


class _PackedLayout:
    """Packed rows (N, I) with ``batch_sizes``: windows by gathering rows (_PackedWindows)."""

    def __init__(self, batch_sizes: Tensor, k: int, device: torch.device):
        self.batch_sizes, self.k = batch_sizes, k
        self.windows = _PackedWindows(batch_sizes, k, device) if k > 1 else None

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


class _StateOps:
    """``detach_state`` / ``reorder_state`` of the module, also as methods of the encoders."""

    detach_state = staticmethod(detach_state)
    reorder_state = staticmethod(reorder_state)


class QRNN(_StateOps, nn.Module):
    """Quasi-recurrent network with the ``nn.LSTM`` call convention.

    Args:
        input_size: features of the input ``I``.
        hidden_size: features of the state / output per direction ``H``.
        num_layers: stacked layers; layer ``l+1`` reads both directions of layer ``l``.
        bias: add a bias to the gate pre-activations.
        batch_first: Tensor input/output are ``(B, T, .)`` instead of ``(T, B, .)``.
            State tensors are time-major regardless (like ``nn.LSTM``).
        dropout: dropout on the inputs of layers 2..L (between layers, like ``nn.LSTM``).
        bidirectional: add a backward direction; outputs are ``[forward | backward]``.
        window: width ``k >= 1`` of the causal convolution over inputs (1 = linear).
        zoneout: in training, each cell unit keeps its previous state with this
            probability at each step (forget gate forced to 1); eval uses the
            expectation ``f' = zoneout + (1 - zoneout) * f``.
        output_gate: ``h = sigmoid(o) * c`` if True, else ``h = c`` (2 gates).

    Call: ``output, state = qrnn(input, state=None, *, lengths=None)``.
        ``input``: Tensor ``(T, B, I)`` / ``(B, T, I)`` or PackedSequence of ``(N, I)``.
        ``lengths`` (Tensor input only, optional): int ``(B,)`` in ``[0, T]``; steps at
        and after ``lengths[b]`` are padding: their output is 0 and the state is that
        after each sequence's own last step.  ``output``: same kind as ``input``, last
        dim ``num_directions * H``.  ``state``: :class:`QRNNState` (see module doc);
        a plain Tensor is accepted as ``c`` with zero input history.

    Parameters ``weight_l{l}[_reverse]`` ``(G*H, window*I_l)`` and ``bias_l{l}[_reverse]``
    ``(G*H,)`` with rows ``[z | f | o]`` (``G = 3``, or 2 without output gate); the
    column block ``j`` multiplies window slot ``j`` (slot ``k-1`` is the current input).
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
        window: int = 1,
        zoneout: float = 0.0,
        output_gate: bool = True,
    ):
        super().__init__()
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers), ("window", window)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"QRNN {name} must be a positive integer, got {v!r}")
        for name, v in (("dropout", dropout), ("zoneout", zoneout)):
            if not 0.0 <= float(v) < 1.0:
                raise ValueError(f"QRNN {name} must be in [0, 1), got {v!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.window = window
        self.zoneout = float(zoneout)
        self.output_gate = output_gate
        self.num_directions = 2 if bidirectional else 1
        self.num_gates = 3 if output_gate else 2
        for layer in range(num_layers):
            in_size = self.layer_input_size(layer)
            for d in range(self.num_directions):
                sfx = "_reverse" if d else ""
                self.register_parameter(
                    f"weight_l{layer}{sfx}",
                    nn.Parameter(torch.empty(self.num_gates * hidden_size, window * in_size)),
                )
                self.register_parameter(
                    f"bias_l{layer}{sfx}",
                    nn.Parameter(torch.empty(self.num_gates * hidden_size)) if bias else None,
                )
        self.reset_parameters()

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.num_directions * self.hidden_size

    def reset_parameters(self) -> None:
        # nn.Linear's default scale for the window's fan-in
        for layer in range(self.num_layers):
            bound = 1.0 / math.sqrt(self.window * self.layer_input_size(layer))
            for d in range(self.num_directions):
                w, b = self._params(layer, d)
                nn.init.uniform_(w, -bound, bound)
                if b is not None:
                    nn.init.uniform_(b, -bound, bound)

    def _params(self, layer: int, d: int):
        sfx = "_reverse" if d else ""
        return getattr(self, f"weight_l{layer}{sfx}"), getattr(self, f"bias_l{layer}{sfx}")

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("window", 1), ("zoneout", 0.0),
                              ("output_gate", True)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s

    def _unpack_state(self, state, x: Tensor, batch: int):
        """-> (c0 list per layer*direction or None, history list per layer or None)."""
        L, D, H, k = self.num_layers, self.num_directions, self.hidden_size, self.window
        if state is None:
            return None, None
        if isinstance(state, Tensor):
            c, hist = state, None
        elif isinstance(state, tuple) and len(state) == 2:
            c, hist = state
        else:
            raise ValueError(
                "QRNN state must be None, a QRNNState (c, inputs) returned by a previous call, "
                f"or a tensor c; got {type(state).__name__}"
            )
        if isinstance(hist, Tensor):
            raise ValueError(
                "QRNN state is a QRNNState (c, inputs), not nn.LSTM's (h, c); pass the state "
                "a QRNN returned, or just its c"
            )
        c = _state_tensor("QRNN", "c", c, (L * D, batch, H), x)
        if k == 1 or hist is None or len(hist) == 0:
            return c, None
        if len(hist) != L:
            raise ValueError(f"QRNN: state inputs must hold {L} tensors (one per layer), got {len(hist)}")
        hist = [
            _state_tensor("QRNN", f"inputs[{l}]", h, (k - 1, batch, self.layer_input_size(l)), x)
            for l, h in enumerate(hist)
        ]
        return c, hist

    # -- the recurrence
    def _pool(self, gates: Tensor, c0: Optional[Tensor], layout, reverse: bool):
        """Gate pre-activations (..., G*H) -> (h, c_n)."""
        if c0 is not None:
            c0 = c0.to(gates.dtype)  # autocast may have made the gates bf16/fp16
        if self.zoneout == 0.0:
            return layout.pool_fused(gates, c0, self.output_gate, reverse)
        H, p = self.hidden_size, self.zoneout
        z = torch.tanh(gates[..., :H])
        f = torch.sigmoid(gates[..., H : 2 * H])
        if self.training:
            f = f.masked_fill(torch.rand_like(f) < p, 1.0)
        else:
            f = f * (1.0 - p) + p
        c, c_n = layout.pool(f, z, c0, reverse)
        h = c * torch.sigmoid(gates[..., 2 * H :]) if self.output_gate else c
        return h, c_n

    def _drop(self, x: Tensor, layer: int) -> Tensor:
        if layer > 0 and self.dropout > 0.0 and self.training:
            return F.dropout(x, self.dropout, True)
        return x

    def forward(self, input, state=None, *, lengths: Optional[Tensor] = None):
        # Every argument is checked here, once; below, the unchecked ops run.
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("QRNN: lengths are only for Tensor input; a PackedSequence has its own")
            return self._forward_packed(input, state)
        if not isinstance(input, Tensor):
            raise ValueError(f"QRNN input must be a Tensor or PackedSequence, got {type(input).__name__}")
        if input.dim() != 3:
            raise ValueError(
                f"QRNN expects a 3-D input ({'B, T' if self.batch_first else 'T, B'}, "
                f"{self.input_size}), got shape {tuple(input.shape)}"
            )
        _check_input("QRNN", input, self.input_size, self.weight_l0)
        x = input.transpose(0, 1) if self.batch_first else input
        T, B, _ = x.shape
        if lengths is not None:
            lengths = _check_lengths(lengths, B, T, x.device)
        c0, hist = self._unpack_state(state, x, B)
        x = x.contiguous()
        if lengths is not None and self.window > 1 and self.num_directions == 2:
            # the backward window must see zeros past each sequence's end
            x = x * (torch.arange(T, device=x.device).unsqueeze(1) < lengths).unsqueeze(2).to(x.dtype)
        out, c_n, new_hist = self._layers(x, _PaddedLayout(T, lengths, self.window), c0, hist)
        out = out.transpose(0, 1) if self.batch_first else out
        return out, QRNNState(c_n, tuple(new_hist))

    def _forward_packed(self, packed: PackedSequence, state):
        _check_packed("QRNN", packed)
        data, batch_sizes, sorted_idx, unsorted_idx = packed
        _check_input("QRNN", data, self.input_size, self.weight_l0)
        c0, hist = self._unpack_state(state, data, int(batch_sizes[0]))
        # the state is in the caller's order, the packed rows in sorted order
        if sorted_idx is not None:
            if c0 is not None:
                c0 = c0.index_select(1, sorted_idx)
            if hist is not None:
                hist = [h.index_select(1, sorted_idx) for h in hist]
        layout = _PackedLayout(batch_sizes, self.window, data.device)
        out, c_n, new_hist = self._layers(data, layout, c0, hist)
        if unsorted_idx is not None:
            c_n = c_n.index_select(1, unsorted_idx)
            new_hist = [h.index_select(1, unsorted_idx) for h in new_hist]
        return PackedSequence(out, batch_sizes, sorted_idx, unsorted_idx), QRNNState(c_n, tuple(new_hist))

    def _layers(self, x: Tensor, layout, c0: Optional[Tensor], hist):
        """The layer loop, for either layout (x: (T, B, I) padded or (N, I) packed).

        -> (output, c_n (L*D, B, H), new input history per layer)."""
        D, k = self.num_directions, self.window
        c_n, new_hist = [], []
        for layer in range(self.num_layers):
            x = self._drop(x, layer)
            if k > 1:
                src, h = layout.extend(x, None if hist is None else hist[layer].to(x.dtype))
                new_hist.append(h)
            outs = []
            for d in range(D):
                w, b = self._params(layer, d)
                win = x if k == 1 else layout.window(src, x, reverse=d == 1)
                h, cn = self._pool(F.linear(win, w, b), None if c0 is None else c0[layer * D + d],
                                   layout, d == 1)
                outs.append(h)
                c_n.append(cn)
            x = outs[0] if D == 1 else torch.cat(outs, -1)
        return x, torch.stack(c_n, 0), new_hist


# --------------------------------------------------------------------------- LSTM


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
            _state_tensor("LSTM", "h", state[0], (self.num_layers * D, batch, h_size), x),
            _state_tensor("LSTM", "c", state[1], (self.num_layers * D, batch, self.hidden_size), x),
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
            _check_packed("LSTM", input)
            _check_input("LSTM", input.data, self.input_size, self.weight_ih_l0)
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
        _check_input("LSTM", input, self.input_size, self.weight_ih_l0)
        t_dim = 1 if self.batch_first else 0
        T, B = input.shape[t_dim], input.shape[1 - t_dim]
        state = self._check_state(state, input, B)
        input, state = self._cpu_autocast(input, state)
        if lengths is None:
            return super().forward(input, state)
        lengths = _check_lengths(lengths, B, T, input.device)
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
