"""The RNN language model: Embedding -> QRNN/LSTM stack -> softmax.

The recipe follows awd-lstm-lm (Merity et al. 2017): every layer is its own
single-layer RNN so that *locked* (variational) dropout -- one mask per
sequence, the same at every timestep -- can sit between layers; embedding
dropout removes whole word types for a step; the last layer's width equals
the embedding size when input and output embeddings are tied.

Two output layers:

- ``softmax="full"``: a Linear over all model outputs (kept words + buckets +
  specials), optionally tied to the input embedding.
- ``softmax="adaptive"``: :class:`torch.nn.AdaptiveLogSoftmaxWithLoss` (Grave
  et al. 2017).  Output ids are sorted by descending training frequency
  (DESIGN.md section 3), so cutoffs apply to the ids directly.  A tail cluster
  that no target of a step falls into gets no gradient (``grad is None`` after
  ``zero_grad(set_to_none=True)``); the optimizer must cope with that.

Inputs are either a Tensor of ids (T, B) -- the token-stream batching -- or a
PackedSequence of ids -- the sentence batching; the features come out in the
same layout.  ``state`` is the per-layer list of encoder states.

Mixed precision: under ``torch.autocast`` (CPU or CUDA) the embedding output
and the RNN layers run in the autocast dtype (bf16/fp16; the fo-pool kernels
accumulate in float32) and the returned state is float32.  On the CPU the
output layer (full or adaptive softmax) and the loss run in float32 with
autocast switched off: CPU autocast would run the adaptive softmax's
log_softmax in bf16, which it cannot mix with its float32 output buffer, and
the output layer and loss are the numerically delicate part of the step.  On
CUDA the output matmul keeps the autocast dtype (autocast runs log_softmax
and the loss in float32 there).  Weights stay float32 throughout.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from qrnn_lm import rnn as rnn_lib


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`RNNLanguageModel`; saved in checkpoints."""

    vocab_size: int                 # number of model outputs (kept words + buckets + specials)
    rnn: str = "qrnn"               # "qrnn" or "lstm"
    emsize: int = 400               # embedding size
    nhid: int = 1150                # hidden size of every layer but (when tied) the last
    nlayers: int = 3                # number of stacked single-layer RNNs
    window: int = 2                 # QRNN convolution width of the first layer (later layers: 1)
    zoneout: float = 0.0            # QRNN zoneout probability
    dropout: float = 0.4            # locked dropout on the last layer's output
    dropouth: float = 0.25          # locked dropout between RNN layers
    dropouti: float = 0.4           # locked dropout on the embedding output
    dropoute: float = 0.1           # fraction of word types removed from the embedding per step
    tied: bool = False              # tie input and output embeddings (full softmax only)
    softmax: str = "full"           # "full" or "adaptive"
    cutoffs: list = field(default_factory=list)  # adaptive softmax cluster boundaries
    div_value: float = 4.0          # adaptive softmax: size divisor per tail cluster

    def __post_init__(self):
        if self.rnn not in ("qrnn", "lstm"):
            raise ValueError(f"rnn must be 'qrnn' or 'lstm', got {self.rnn!r}")
        if self.softmax not in ("full", "adaptive"):
            raise ValueError(f"softmax must be 'full' or 'adaptive', got {self.softmax!r}")
        if self.tied and self.softmax != "full":
            raise ValueError("tied embeddings need the full softmax (use --softmax full or drop --tied)")
        if self.nlayers < 1 or self.emsize < 1 or self.nhid < 1 or self.vocab_size < 2:
            raise ValueError("nlayers, emsize and nhid must be >= 1 and the vocabulary must have >= 2 outputs")
        for name in ("dropout", "dropouth", "dropouti", "dropoute", "zoneout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.cutoffs = [int(c) for c in self.cutoffs]
        if self.softmax == "adaptive":
            if not self.cutoffs:
                self.cutoffs = default_cutoffs(self.vocab_size)
            if (any(b <= a for a, b in zip(self.cutoffs, self.cutoffs[1:]))
                    or self.cutoffs[0] <= 0 or self.cutoffs[-1] >= self.vocab_size):
                raise ValueError(f"adaptive softmax cutoffs must increase strictly within (0, {self.vocab_size}), "
                                 f"got {self.cutoffs}")
            if int(self.nhid // self.div_value ** len(self.cutoffs)) < 1:
                raise ValueError(f"adaptive softmax: the last cluster's projection would have nhid / div_value^"
                                 f"{len(self.cutoffs)} < 1 units; use fewer --cutoffs or a larger --nhid")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def default_cutoffs(vocab_size: int) -> list:
    """Cluster boundaries for the adaptive softmax: a head of the ~20k most
    frequent outputs (fewer for small vocabularies), then clusters growing 5x."""
    cutoffs, c = [], min(20000, max(1, vocab_size // 8))
    while c < vocab_size:
        cutoffs.append(c)
        c *= 5
    return cutoffs or [vocab_size // 2]


def _row_to_sequence(batch_sizes: torch.Tensor) -> torch.Tensor:
    """Index of the sequence that each row of PackedSequence.data belongs to:
    rows of timestep t are sequences 0 .. batch_sizes[t]-1."""
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    return torch.arange(int(batch_sizes.sum())) - torch.repeat_interleave(starts, batch_sizes)


def _autocast_dtype(device_type: str):
    """The dtype autocast computes in on this device type, or None when it is off."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _output_input(features: torch.Tensor):
    """-> (context, features) for the output layer: under CPU autocast, autocast
    off and the features in float32; otherwise (CUDA too) as they are."""
    if features.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False), features.float()
    return contextlib.nullcontext(), features


def _float_state(state):
    """bf16/fp16 tensors of an encoder state -> float32 (other dtypes unchanged)."""
    low = (torch.bfloat16, torch.float16)
    return rnn_lib._map_state(state, lambda t: t.float() if t.dtype in low else t)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence and feature, shared by all
    timesteps.  Works on (T, B, H) tensors and on PackedSequence data rows."""

    def forward(self, x: torch.Tensor, p: float, rows: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or p == 0.0:
            return x
        if rows is None:  # (T, B, H)
            mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p)
        else:             # packed (N, H); rows[n] = sequence of row n
            mask = x.new_empty(int(rows.max()) + 1, x.size(1)).bernoulli_(1 - p)[rows]
        return x * mask / (1 - p)


class RNNLanguageModel(nn.Module):
    """Embedding -> ``nlayers`` single-layer QRNN/LSTM -> full or adaptive softmax.

    ``forward(input, state=None) -> (features, state)``: ``input`` is a LongTensor
    of ids (T, B) or a PackedSequence of ids; ``features`` is (T, B, D) or a
    PackedSequence with (N, D) data, D = ``output_size``.  Use :meth:`nll` for
    the per-token negative log-likelihood and :meth:`log_probs` for the whole
    output distribution.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.encoder = nn.Embedding(c.vocab_size, c.emsize)
        self.lockdrop = LockedDropout()
        layers = []
        for layer in range(c.nlayers):
            n_in = c.emsize if layer == 0 else c.nhid
            n_out = c.emsize if (c.tied and layer == c.nlayers - 1) else c.nhid
            if c.rnn == "qrnn":
                layers.append(rnn_lib.QRNN(n_in, n_out, 1, window=c.window if layer == 0 else 1,
                                           zoneout=c.zoneout))
            else:
                layers.append(rnn_lib.LSTM(n_in, n_out, 1))
        self.rnns = nn.ModuleList(layers)
        self.output_size = n_out
        if c.softmax == "full":
            self.decoder = nn.Linear(n_out, c.vocab_size)
            if c.tied:
                self.decoder.weight = self.encoder.weight
        else:
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(n_out, c.vocab_size, c.cutoffs,
                                                         div_value=c.div_value)
        self._init_weights()

    def _init_weights(self):
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        if self.config.softmax == "full":
            nn.init.zeros_(self.decoder.bias)
            if not self.config.tied:
                nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    # -- encoder ------------------------------------------------------------
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        emb = self.encoder(ids)
        p = self.config.dropoute
        if self.training and p > 0:
            # Drop whole word types: a mask over the vocabulary gathered at the
            # ids (the same as masking embedding rows, without a V x E copy).
            keep = self.encoder.weight.new_empty(self.config.vocab_size).bernoulli_(1 - p) / (1 - p)
            emb = emb * keep[ids].unsqueeze(-1)
        dtype = _autocast_dtype(emb.device.type)
        # under autocast the layers compute in its dtype anyway; casting here
        # halves the traffic of the dropout and the QRNN windows
        return emb if dtype is None else emb.to(dtype)

    def forward(self, input, state=None, targets=None):
        """Run the stack.  Without ``targets`` return ``(features, state)``;
        with ``targets`` (ids shaped like ``input``, or a PackedSequence with
        the same batch_sizes; entries < 0 are ignored) return ``(nll, state)``
        where nll (M,) is the per-token loss of the M counted targets.  Keeping
        the loss inside forward lets DistributedDataParallel see every
        parameter that takes part."""
        packed = isinstance(input, PackedSequence)
        if packed:
            x = self._embed(input.data)
            rows = _row_to_sequence(input.batch_sizes).to(x.device) if self.training else None
        else:
            x, rows = self._embed(input), None
        x = self.lockdrop(x, self.config.dropouti, rows)
        state = state if state is not None else [None] * len(self.rnns)
        new_state = []
        for i, layer in enumerate(self.rnns):
            inp = PackedSequence(x, input.batch_sizes, input.sorted_indices, input.unsorted_indices) if packed else x
            out, s = layer(inp, state[i])
            x = out.data if packed else out
            new_state.append(s if _autocast_dtype(x.device.type) is None else _float_state(s))
            p = self.config.dropouth if i < len(self.rnns) - 1 else self.config.dropout
            x = self.lockdrop(x, p, rows)
        if targets is not None:
            t = targets.data if isinstance(targets, PackedSequence) else targets
            x, t = x.reshape(-1, x.size(-1)), t.reshape(-1)
            keep = t >= 0
            if not bool(keep.all()):
                x, t = x[keep], t[keep]
            return self.nll(x, t), new_state
        if packed:
            return PackedSequence(x, input.batch_sizes, input.sorted_indices, input.unsorted_indices), new_state
        return x, new_state

    def detach_state(self, state):
        """Cut the autograd graph behind ``state`` (truncated BPTT)."""
        return rnn_lib.detach_state(state)

    def reorder_state(self, state, index: torch.Tensor):
        """Select / reorder batch entries of ``state``."""
        return rnn_lib.reorder_state(state, index)

    # -- output layer -------------------------------------------------------
    def nll(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood (natural log) of each target.

        features (N, D), targets (N,) int64 -> (N,) float32.  Under CPU
        autocast this runs in float32 with autocast off (module docstring).
        """
        context, features = _output_input(features)
        with context:
            if self.config.softmax == "full":
                logits = self.decoder(features).float()
                return F.cross_entropy(logits, targets, reduction="none")
            # AdaptiveLogSoftmaxWithLoss's first output is log P(target) per row.
            return -self.decoder(features.float(), targets).output

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """log P(every output | history): features (N, D) -> (N, vocab_size) float32."""
        context, features = _output_input(features)
        with context:
            if self.config.softmax == "full":
                return F.log_softmax(self.decoder(features).float(), dim=-1)
            return self.decoder.log_prob(features.float())
