"""Word vectors from a trained model (``prepare --vectors RUN``): the mean
last hidden state before each occurrence of a word in the training stream,
or, without the stream, the input embeddings of the words the checkpoint
kept.  The checkpoint is read through :func:`qrnn_lm.checkpoint.load_checkpoint`."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .checkpoint import build_model, load_checkpoint, load_vocab_dict
from .errors import QrnnLmError


def vectors_from_checkpoint(path: str, words: Sequence[str], stream=None, types=None, *,
                            window: int = 256, columns: int = 32,
                            max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Word vectors from a trained qrnn_lm checkpoint (a file or a run directory).

    With ``stream`` (int (N,) type ids of the training text, 0 = ``</s>``) and
    ``types`` (the (surface, POS) of each type id; ``types[0]`` unused): the
    *context vector* of each word, the mean over its occurrences of the
    model's last hidden state just before it -- what the model has seen when
    it must predict the word.  The model reads the text as the checkpoint's
    vocabulary maps it (any vocabulary of the same tokenizer), in ``columns``
    contiguous columns of windows of ``window`` tokens with the state carried,
    like evaluation; ``max_tokens`` reads only the start of the text.  Words
    that never occur (or only first in a column) have no vector.

    Without ``stream``: the input embeddings of ``words`` (only words the
    checkpoint's model kept have one; useful with a model trained on a larger
    ``--vocab-size``).  Returns (float32 (n, d) L2-normalised, has_vector
    bool (n,)).
    """
    hint = "give a checkpoint written by train.py or a word2vec/fastText .vec text file"
    what = f"cannot read word vectors from --vectors {path}"
    ckpt = load_checkpoint(path, weights_for="--vectors")
    old = load_vocab_dict(ckpt["vocab"], path)
    if stream is None:
        return _embedding_vectors(ckpt["model"], old, words, what, hint)
    if not isinstance(ckpt.get("config"), dict):
        raise QrnnLmError(f"{what}: it has no model config, so its model cannot be run; {hint}.")
    model = build_model(ckpt, old).eval()
    row_of = {w: i for i, w in enumerate(words)}
    type_row = np.full(len(types), -1, dtype=np.int64)
    type_id = np.full(len(types), old.eos_id, dtype=np.int64)
    for g in range(1, len(types)):
        type_id[g] = old.lookup(*types[g])[0]
        type_row[g] = row_of.get(types[g][0], -1)
    n = len(stream) if max_tokens is None else min(len(stream), max_tokens)
    col_len = n // columns
    if col_len < 2:
        raise QrnnLmError(f"the training text is too short ({n} tokens) for context vectors.")
    grid = np.asarray(stream[:col_len * columns]).reshape(columns, col_len).T  # (T, B)
    sums, counts = _context_sums(model, len(words), type_id[grid], type_row[grid], window)
    has = (counts > 0).numpy()
    x = (sums / counts.clamp_min(1)[:, None]).float().numpy()
    # centre: the mean state is shared by all words and would dominate cosine distances
    if has.any():
        x[has] -= x[has].mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    has &= norm[:, 0] > 0
    return x / np.maximum(norm, 1e-12), has


@torch.no_grad()
def _context_sums(model, nrows: int, ids: np.ndarray, rows: np.ndarray, window: int) -> tuple:
    """Sum and count, per output row, of the model's last hidden state just
    before each position of ``ids`` (T, B) whose ``rows`` entry is >= 0."""
    d = model.output_size
    sums = torch.zeros(nrows, d, dtype=torch.float64)
    counts = torch.zeros(nrows, dtype=torch.float64)
    col_len, hidden = ids.shape[0], None
    for t0 in range(0, col_len - 1, window):
        t1 = min(col_len - 1, t0 + window)
        feats, hidden = model(torch.from_numpy(ids[t0:t1]), hidden)
        r = torch.from_numpy(rows[t0 + 1:t1 + 1]).reshape(-1)
        keep = r >= 0
        if bool(keep.any()):
            sums.index_add_(0, r[keep], feats.reshape(-1, d)[keep].double())
            counts.index_add_(0, r[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    return sums, counts


def _embedding_vectors(state, old, words, what, hint):
    weight = state.get("encoder.weight")
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] == len(old)):
        cands = [v for k, v in state.items() if isinstance(v, torch.Tensor) and k.endswith("weight")
                 and v.dim() == 2 and v.shape[0] == len(old)]
        if not cands:
            raise QrnnLmError(f"{what}: it has no input embedding matrix with {len(old)} rows; {hint}.")
        weight = cands[0]
    if not weight.is_floating_point() or weight.shape[1] == 0:
        raise QrnnLmError(f"{what}: its embedding matrix is empty or not floating point; {hint}.")
    w = weight.float().numpy()
    x = np.zeros((len(words), w.shape[1]), dtype=np.float32)
    has = np.zeros(len(words), dtype=bool)
    for i, word in enumerate(words):
        j = old.word_to_id.get(word)
        if j is not None:
            x[i], has[i] = w[j], True
    n = np.linalg.norm(x, axis=1, keepdims=True)
    has &= n[:, 0] > 0
    return x / np.maximum(n, 1e-12), has
