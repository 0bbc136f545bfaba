"""LanguageModel: load a trained checkpoint, score text, generate text.

    from qrnn_lm import LanguageModel
    lm = LanguageModel.from_checkpoint("runs/ja")     # run dir -> its best checkpoint
    lm.score("今日は良い天気です。")                   # {"ppl": ..., "bpc": ..., ...}
    lm.generate("Debian は", max_tokens=50, seed=0)    # readable text, no bucket tokens

Checkpoints are plain dicts read with ``torch.load(weights_only=True)``, so a
checkpoint file can never run code; reading and writing them is
qrnn_lm/checkpoint.py (its names are also importable from here).  This module
scores text (``total_nll``, ``bits_per_char``) and holds ``LanguageModel``.
"""
from __future__ import annotations

import collections
import math
import numbers

import numpy as np
import torch

from qrnn_lm.checkpoint import (BEST, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LAST,  # noqa: F401 (old names)
                                build_model, inference_settings, load_checkpoint, load_vocab_dict,
                                resolve_checkpoint, save_checkpoint, vocab_tokens)
from qrnn_lm.errors import QrnnLmError
from qrnn_lm.model import RNNLanguageModel
from qrnn_lm.model_vectors import vectors_from_checkpoint  # noqa: F401 (old name)


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


def _usable_device(device) -> torch.device:
    """``device`` as a torch.device this torch can run on, else one QrnnLmError sentence."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise QrnnLmError(f"device {device!r} is not a torch device; use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise QrnnLmError(f"device {device!r} was asked for but this torch has no usable CUDA GPU; "
                              "use device='cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise QrnnLmError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                              "CUDA GPU(s); use 'cuda:0' or 'cpu'.")
    return dev


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
        self.mixture = None   # a qrnn_lm.ngram.Mixture: the run's n-gram mixed in (from_checkpoint)

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", ngram: bool = True) -> "LanguageModel":
        """``path``: a run directory written by ``--save`` (its best checkpoint
        is used) or a checkpoint file.  ``device``: where the model runs
        ("cpu", "cuda", "cuda:1", a torch.device).  ``ngram``: mix in the
        run's n-gram (``ngram.npz`` beside the checkpoint) when it has one."""
        device = _usable_device(device)
        ckpt = load_checkpoint(path)
        vocab = load_vocab_dict(ckpt["vocab"], ckpt["path"])
        model = build_model(ckpt, vocab)
        lm = cls(model, vocab, **inference_settings(ckpt), device=device)
        if ngram:
            from qrnn_lm.ngram import load_mixture
            identity = (ckpt.get("dataset") or {}).get("vocab_sha256") if isinstance(ckpt.get("dataset"), dict) \
                else None
            lm.mixture = load_mixture(ckpt["path"], len(vocab), identity)
        return lm

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
        if self.mixture is not None:   # per token: the network's loss mixed with the n-gram's
            from qrnn_lm.token_scores import token_losses
            nn, _, _, _ = token_losses(self, ids, batch_size=batch_size, top=0, mix=False)
            nll, n = float(self.mixture.token_nll(ids, self.vocab.eos_id, nn).sum()), len(ids)
        else:
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
        # the mixture's history: the last tokens read, the whole prompt included
        history = collections.deque(context, maxlen=self.mixture.history_len if self.mixture else 1)
        if sentences:  # a line starts from a zero state: feed only the current line
            last_eos = len(context) - 1 - context[::-1].index(eos)
            context = context[last_eos:]
        x = torch.tensor(context, dtype=torch.long, device=self.device).unsqueeze(1)
        for _ in range(max_tokens):
            feats, state = self.model(x, state)
            logp = self.model.log_probs(feats[-1, 0].unsqueeze(0))[0].float().cpu()
            if self.mixture is not None:
                logp = torch.from_numpy(self.mixture.next_log_probs(history, logp.double().numpy())).float()
            nxt = self._sample(logp, temperature, top_k, top_p, banned, gen)
            history.append(nxt)
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
