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

Where things live (all importable from here): :class:`QRNN` and :class:`QRNNState`
in this module, its padded / packed input layouts in :mod:`qrnn_lm.layouts`,
:class:`LSTM` in :mod:`qrnn_lm.lstm`, :func:`pack_list`, :func:`unpack_to_list`,
:func:`detach_state` and :func:`reorder_state` in :mod:`qrnn_lm.sequences`.  Both
encoders check their arguments once, with :mod:`qrnn_lm.checks`, and run the
unchecked ops below that.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import checks
from .layouts import PackedLayout, PaddedLayout
from .lstm import LSTM
from .sequences import (  # noqa: F401  re-exported, _map_state included
    _map_state,
    _StateOps,
    detach_state,
    pack_list,
    reorder_state,
    unpack_to_list,
)

__all__ = [
    "QRNN",
    "LSTM",
    "QRNNState",
    "pack_list",
    "unpack_to_list",
    "detach_state",
    "reorder_state",
]


class QRNNState(NamedTuple):
    """State of a :class:`QRNN`: see the module docstring.

    ``c``: ``(num_layers * num_directions, B, H)``; ``inputs``: per layer
    ``(window - 1, B, I_l)``, empty tuple for ``window == 1``.
    """

    c: Tensor
    inputs: tuple


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
        c = checks.state_tensor(c, "c", (L * D, batch, H), x, "QRNN")
        if k == 1 or hist is None or len(hist) == 0:
            return c, None
        if len(hist) != L:
            raise ValueError(f"QRNN: state inputs must hold {L} tensors (one per layer), got {len(hist)}")
        hist = [
            checks.state_tensor(h, f"inputs[{l}]", (k - 1, batch, self.layer_input_size(l)), x, "QRNN")
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
        checks.module_input(input, self.input_size, self.weight_l0, "QRNN")
        x = input.transpose(0, 1) if self.batch_first else input
        T, B, _ = x.shape
        if lengths is not None:
            lengths = checks.module_lengths(lengths, T, B, x.device, "QRNN")
        c0, hist = self._unpack_state(state, x, B)
        x = x.contiguous()
        if lengths is not None and self.window > 1 and self.num_directions == 2:
            # the backward window must see zeros past each sequence's end
            x = x * (torch.arange(T, device=x.device).unsqueeze(1) < lengths).unsqueeze(2).to(x.dtype)
        out, c_n, new_hist = self._layers(x, PaddedLayout(T, lengths, self.window), c0, hist)
        out = out.transpose(0, 1) if self.batch_first else out
        return out, QRNNState(c_n, tuple(new_hist))

    def _forward_packed(self, packed: PackedSequence, state):
        checks.packed_sequence(packed, "QRNN")
        data, batch_sizes, sorted_idx, unsorted_idx = packed
        checks.module_input(data, self.input_size, self.weight_l0, "QRNN")
        c0, hist = self._unpack_state(state, data, int(batch_sizes[0]))
        # the state is in the caller's order, the packed rows in sorted order
        if sorted_idx is not None:
            if c0 is not None:
                c0 = c0.index_select(1, sorted_idx)
            if hist is not None:
                hist = [h.index_select(1, sorted_idx) for h in hist]
        layout = PackedLayout(batch_sizes, self.window, data.device)
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
