"""LanguageModel: load a trained checkpoint, score text, generate text.

    from qrnn_lm import LanguageModel
    lm = LanguageModel.from_checkpoint("runs/ja")     # run dir -> its best checkpoint
    lm.score("今日は良い天気です。")                   # {"ppl": ..., "bpc": ..., ...}
    lm.generate("Debian は", max_tokens=50, seed=0)    # readable text, no bucket tokens

Checkpoints are plain dicts read with ``torch.load(weights_only=True)``, so a
checkpoint file can never run code.  This module also holds the checkpoint
file helpers that train.py uses (atomic save, checked load) and
:func:`vectors_from_checkpoint` (word vectors for ``prepare --vectors``).
"""
from __future__ import annotations

import math
import numbers
import os
import pickle
import zipfile
from typing import Sequence

import numpy as np
import torch

from qrnn_lm.errors import QrnnLmError
from qrnn_lm.model import ModelConfig, RNNLanguageModel

CHECKPOINT_FORMAT = "qrnn_lm.checkpoint"
CHECKPOINT_VERSION = 1
BEST, LAST = "best.pt", "last.pt"


# ---------------------------------------------------------------------------
# checkpoint files
# ---------------------------------------------------------------------------
def save_checkpoint(ckpt: dict, path: str) -> None:
    """Write ``ckpt`` to ``path`` atomically: a temp file in the same folder,
    flushed to disk, then renamed over ``path`` -- a crash or Ctrl-C mid-write
    never leaves a half-written checkpoint under the real name."""
    ckpt = dict(ckpt, format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def resolve_checkpoint(path: str) -> str:
    """A run directory -> its best checkpoint (else its last); a file -> itself."""
    if os.path.isdir(path):
        for name in (BEST, LAST):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise QrnnLmError(f"the run directory {path} holds no checkpoint ({BEST} or {LAST}); "
                          "train with --save DIR first or give a checkpoint file.")
    if not os.path.isfile(path):
        raise QrnnLmError(f"checkpoint {path} does not exist; give a run directory written by --save or a .pt file.")
    return path


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load and check a checkpoint file (or the best one of a run directory)."""
    path = resolve_checkpoint(path)
    if os.path.getsize(path) == 0:
        raise QrnnLmError(f"checkpoint {path} is empty (0 bytes); use another checkpoint or train again.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise QrnnLmError(f"{path} is not a qrnn_lm checkpoint: it holds objects other than tensors and plain "
                          "data, and was not loaded because that could run code.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        what = "truncated or damaged" if zipfile.is_zipfile(path) or "zip" in str(e).lower() else "not a checkpoint file"
        raise QrnnLmError(f"cannot read checkpoint {path}: the file is {what}; "
                          "use another checkpoint (e.g. last.pt beside it) or train again.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise QrnnLmError(f"{path} is not a qrnn_lm checkpoint (no model, config and vocabulary in it); "
                          "give a file written by train.py --save.")
    for key in ("model", "config", "vocab"):
        if key not in ckpt:
            raise QrnnLmError(f"checkpoint {path} has no {key!r} entry; it is incomplete, train again.")
    ckpt["path"] = path
    return ckpt


def vocab_tokens(vocab) -> list:
    """The output vocabulary as a list of strings, for comparing two vocabularies."""
    return [vocab.id_to_token(i) for i in range(len(vocab))]


def build_model(ckpt: dict, vocab) -> RNNLanguageModel:
    """The model of a loaded checkpoint, with its weights, after checking it
    belongs to ``vocab``."""
    try:
        config = ModelConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} has an invalid model config ({e}).") from None
    if config.vocab_size != len(vocab):
        raise QrnnLmError(f"checkpoint {ckpt.get('path')} predicts {config.vocab_size} outputs but its vocabulary "
                          f"has {len(vocab)}: it mixes two vocabularies; use a checkpoint written by train.py.")
    model = RNNLanguageModel(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise QrnnLmError(f"the weights in checkpoint {ckpt.get('path')} do not fit its model config; "
                          "the file is damaged or from another version, train again.") from None
    return model


def load_vocab_dict(d: dict, path: str = "checkpoint"):
    from qrnn_lm.vocab import Vocabulary
    Vocabulary._check_dict(d, f"the vocabulary stored in {path}",
                           "use another checkpoint or train again")
    try:
        return Vocabulary.from_dict(d)
    except QrnnLmError:
        raise
    except Exception as e:  # a malformed dict can fail in many ways; say where it came from
        raise QrnnLmError(f"the vocabulary stored in {path} cannot be read ({type(e).__name__}); "
                          "the checkpoint is damaged or from another version.") from None


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
    path_file = resolve_checkpoint(path)
    try:
        size = os.path.getsize(path_file)
    except OSError as e:
        raise QrnnLmError(f"{what} ({e.strerror or e}).") from None
    if size == 0:
        raise QrnnLmError(f"{what}: it is empty (0 bytes); {hint}.")
    try:
        ckpt = torch.load(path_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message would suggest loading it unsafely: never pass it on
        if "can still be loaded" in str(e):
            raise QrnnLmError(f"{what}: it holds Python objects other than tensors and plain data "
                              f"and was not loaded, because loading it could run code; {hint}.") from None
        raise QrnnLmError(f"{what}: it is not a torch checkpoint; {hint}.") from None
    except Exception:  # truncated zip, random bytes, another format: never a traceback
        raise QrnnLmError(f"{what}: it is truncated, damaged or not a torch checkpoint; {hint}.") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("vocab"), dict) \
            or not isinstance(ckpt.get("model"), dict):
        raise QrnnLmError(f"{what}: it is not a qrnn_lm checkpoint (no model and vocabulary in it); {hint}.")
    old = load_vocab_dict(ckpt["vocab"], path)
    state = ckpt["model"]
    if stream is None:
        return _embedding_vectors(state, old, words, what, hint)
    if not isinstance(ckpt.get("config"), dict):
        raise QrnnLmError(f"{what}: it has no model config, so its model cannot be run; {hint}.")
    ckpt["path"] = path_file
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
    d = model.output_size
    sums = torch.zeros(len(words), d, dtype=torch.float64)
    counts = torch.zeros(len(words), dtype=torch.float64)
    grid = np.asarray(stream[:col_len * columns]).reshape(columns, col_len).T  # (T, B)
    hidden = None
    with torch.no_grad():
        for t0 in range(0, col_len - 1, window):
            t1 = min(col_len - 1, t0 + window)
            x = torch.from_numpy(type_id[grid[t0:t1]])
            feats, hidden = model(x, hidden)
            rows = torch.from_numpy(type_row[grid[t0 + 1:t1 + 1]]).reshape(-1)
            keep = rows >= 0
            if bool(keep.any()):
                f = feats.reshape(-1, d)[keep].double()
                sums.index_add_(0, rows[keep], f)
                counts.index_add_(0, rows[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    has = (counts > 0).numpy()
    x = (sums / counts.clamp_min(1)[:, None]).float().numpy()
    # centre: the mean state is shared by all words and would dominate cosine distances
    if has.any():
        x[has] -= x[has].mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    has &= norm[:, 0] > 0
    return x / np.maximum(norm, 1e-12), has


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


# ---------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------
@torch.no_grad()
def total_nll(model: RNNLanguageModel, batches, device, stream: bool) -> tuple:
    """Sum of -log P (nats, float64) and count of the targets of all batches.

    ``batches`` is a StreamBatches/SentenceBatches built with ``train=False``;
    stream batches carry the recurrent state from window to window, sentence
    batches start each line from a zero state."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    try:
        for _, x, y in batches.epoch(0):
            nll, new_state = model(x.to(device), state if stream else None, targets=y.to(device))
            if stream:
                state = model.detach_state(new_state)
            total += float(nll.double().sum())
            count += int(nll.numel())
    finally:
        model.train(was_training)
    return total, count


def bits_per_char(nll_sum: float, rare_logp_sum: float, characters: int) -> float:
    """Exact BPC through the bucket factorisation (DESIGN.md section 3):
    (sum -log P_model(id) - sum log P(word | bucket)) / (C ln 2)."""
    if characters <= 0:
        return float("nan")
    return (nll_sum - rare_logp_sum) / (characters * math.log(2))


def _safe_exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


class LanguageModel:
    """A trained model with its vocabulary, ready to score and generate."""

    def __init__(self, model: RNNLanguageModel, vocab, *, batching: str = "stream", bptt: int = 70,
                 max_len: int | None = None, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.batching = batching
        self.bptt = bptt
        self.max_len = max_len or 4 * bptt  # sentence models: the longest piece, as in training
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu") -> "LanguageModel":
        """``path``: a run directory written by ``--save`` (its best checkpoint
        is used) or a checkpoint file."""
        ckpt = load_checkpoint(path)
        vocab = load_vocab_dict(ckpt["vocab"], ckpt["path"])
        model = build_model(ckpt, vocab)
        args = ckpt.get("args") or {}
        return cls(model, vocab, batching=args.get("batching", "stream"), bptt=int(args.get("bptt") or 70),
                   max_len=args.get("max_len"), device=device)

    # -- score -------------------------------------------------------------
    def encode_text(self, text: str) -> tuple:
        """Text (one paragraph a line) -> (ids, rare_logp, characters) with
        ``</s>`` after every line, as ``prepare`` writes a split."""
        ids, lps, chars = self.vocab.encode_lines(text, final_eos=True)
        if not chars:
            raise QrnnLmError("the text to score is empty; give at least one non-empty line.")
        return ids.astype(np.int64), lps.astype(np.float64), chars

    def score(self, text: str, batch_size: int = 32) -> dict:
        """Perplexity over the model's tokens and exact bits per character of ``text``.

        Scored as train.py scores a split, so the figures match its valid/test
        ones: a stream model reads the text as one column with the state
        carried, in windows of ``batch_size`` × bptt tokens (the window changes
        speed, not the figure); a sentence model scores ``batch_size``
        sentences at a time.  Returns ``{"ppl", "bpc", "nll", "tokens",
        "characters"}`` (nll: mean nats per token)."""
        from qrnn_lm.data import SentenceBatches, StreamBatches
        ids, rare_logp, chars = self.encode_text(text)
        if self.batching == "sentences":
            batches = SentenceBatches(ids, self.vocab.eos_id, batch_size=max(batch_size, 1), max_len=self.max_len,
                                      train=False)
        else:
            batches = StreamBatches(ids, self.vocab.eos_id, 1, self.bptt * max(batch_size, 1), train=False)
        nll, n = total_nll(self.model, batches, self.device, stream=self.batching != "sentences")
        return {"ppl": _safe_exp(nll / n), "bpc": bits_per_char(nll, float(rare_logp.sum()), chars),
                "nll": nll / n, "tokens": n, "characters": chars}

    # -- generate ----------------------------------------------------------
    @staticmethod
    def check_sampling(max_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
        """QrnnLmError naming the first sampling setting that is out of range."""
        bad = []
        if not isinstance(max_tokens, numbers.Integral) or max_tokens < 0:
            bad.append(f"--max-tokens {max_tokens} (need a whole number >= 0)")
        if not math.isfinite(temperature) or temperature <= 0:
            bad.append(f"--temperature {temperature} (need a finite number > 0)")
        if not isinstance(top_k, numbers.Integral) or top_k < 0:
            bad.append(f"--top-k {top_k} (need a whole number >= 0)")
        if not (math.isfinite(top_p) and 0 < top_p <= 1):
            bad.append(f"--top-p {top_p} (need 0 < p <= 1)")
        if bad:
            raise QrnnLmError("invalid sampling settings: " + "; ".join(bad) + ".")

    @torch.no_grad()
    def _sample_words(self, prompt: str, max_tokens: int, temperature: float, top_k: int,
                      top_p: float, seed: int | None):
        """Yield sampled words one at a time (``</s>`` included, buckets expanded)."""
        self.check_sampling(max_tokens, temperature, top_k, top_p)
        gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        eos = self.vocab.eos_id
        context = [eos]
        for line_no, line in enumerate(prompt.split("\n")):
            if line_no:
                context.append(eos)
            if line:
                context.extend(int(i) for i in self.vocab.encode(line)[0])
        sentences = self.batching == "sentences"
        banned = self._banned_ids()
        state = None
        if sentences:  # a line starts from a zero state: feed only the current line
            last_eos = len(context) - 1 - context[::-1].index(eos)
            context = context[last_eos:]
        x = torch.tensor(context, dtype=torch.long, device=self.device).unsqueeze(1)
        for _ in range(max_tokens):
            feats, state = self.model(x, state)
            logp = self.model.log_probs(feats[-1, 0].unsqueeze(0))[0].float().cpu()
            nxt = self._sample(logp, temperature, top_k, top_p, banned, gen)
            if self.vocab.is_bucket(nxt):
                yield self.vocab.sample_word(nxt, gen)
            else:
                yield self.vocab.id_to_token(nxt)  # </s> included: decode makes it a newline
            if nxt == eos and sentences:
                state = None
            x = torch.tensor([[nxt]], dtype=torch.long, device=self.device)

    def generate(self, prompt: str = "", max_tokens: int = 100, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None) -> str:
        """Sample up to ``max_tokens`` tokens after ``prompt`` and return prompt +
        continuation as text.  Bucket tokens are replaced by a concrete word drawn
        from P(word | bucket); ``</s>`` ends a line."""
        words = list(self._sample_words(prompt, max_tokens, temperature, top_k, top_p, seed))
        return prompt + self.vocab.decode(words)

    def generate_stream(self, prompt: str = "", max_tokens: int = 100, temperature: float = 1.0,
                        top_k: int = 0, top_p: float = 1.0, seed: int | None = None):
        """:meth:`generate` as it happens: yields ``prompt``, then pieces of text
        as tokens are sampled; the pieces join to what :meth:`generate` returns
        with the same arguments."""
        self.check_sampling(max_tokens, temperature, top_k, top_p)
        yield prompt
        decoder = _StreamDecoder(self.vocab)
        for word in self._sample_words(prompt, max_tokens, temperature, top_k, top_p, seed):
            piece = decoder.push(word)
            if piece:
                yield piece
        piece = decoder.finish()
        if piece:
            yield piece

    def _banned_ids(self) -> list:
        """Special outputs other than </s> (e.g. padding) that must never be sampled."""
        banned = []
        for i in range(min(len(self.vocab), 16)):
            tok = self.vocab.id_to_token(i)
            if i != self.vocab.eos_id and not self.vocab.is_bucket(i) and tok in ("<pad>", "<s>", "<bos>", "<mask>"):
                banned.append(i)
        return banned

    @staticmethod
    def _sample(logp: torch.Tensor, temperature: float, top_k: int, top_p: float, banned: list,
                gen: torch.Generator) -> int:
        logits = logp / temperature
        if banned:
            logits[banned] = -float("inf")
        if 0 < top_k < logits.numel():
            kth = torch.topk(logits, top_k).values[-1]
            logits[logits < kth] = -float("inf")
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cum = torch.softmax(sorted_logits, -1).cumsum(-1)
            drop = cum - torch.softmax(sorted_logits, -1) >= top_p  # keep the smallest prefix reaching top_p
            logits[order[drop]] = -float("inf")
        probs = torch.softmax(logits, -1)
        return int(torch.multinomial(probs, 1, generator=gen))


class _StreamDecoder:
    """Incremental ``vocab.decode``: text is released as soon as later words can
    no longer change it (an unfinished UTF-8 byte sequence is held back).  A line
    is re-detokenized from its last few words only, so a long line costs linear
    time."""

    REDO, KEEP = 256, 8

    def __init__(self, vocab):
        from qrnn_lm.vocab import EOS
        self.vocab, self.eos = vocab, EOS
        self.seg: list = []   # words of the current line still being detokenized
        self.sent = 0         # characters of detokenize(seg) already released

    def push(self, word: str) -> str:
        if word == self.eos:
            out = self.finish() + "\n"
            return out
        self.seg.append(word)
        text = self.vocab.tokenizer.detokenize(self.seg)
        stable = text.rstrip("\ufffd")
        new = stable[self.sent:]
        self.sent = max(self.sent, len(stable))
        if len(self.seg) > self.REDO and stable == text:
            self.seg = self.seg[-self.KEEP:]
            self.sent = len(self.vocab.tokenizer.detokenize(self.seg))
        return new

    def finish(self) -> str:
        out = self.vocab.tokenizer.detokenize(self.seg)[self.sent:] if self.seg else ""
        self.seg, self.sent = [], 0
        return out
