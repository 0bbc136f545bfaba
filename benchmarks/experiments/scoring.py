"""Scoring a trained run: -log P of every test token, generated samples and
their rare words, parts of speech of generated text."""
from __future__ import annotations

import threading

from experiments_config import SAMPLE_TOKENS, SAMPLES


def token_nll(run_dir: str, data_dir: str, split_name: str = "test"):
    """-log P (nats) of every test token under the run's evaluated checkpoint
    (32 stream columns, windows of 70, state carried: the same for every run;
    train.py's own figure reads the split as one column, so it differs by the
    32 cold starts), and the test split itself."""
    import numpy as np
    import torch
    from qrnn_lm.data import StreamBatches, load_split
    from qrnn_lm.lm import build_model, load_checkpoint, load_vocab_dict
    ckpt = load_checkpoint(run_dir)
    vocab = load_vocab_dict(ckpt["vocab"], ckpt["path"])
    model = build_model(ckpt, vocab).eval()
    split = load_split(data_dir, split_name)
    b = StreamBatches(split.ids, vocab.eos_id, 32, 70, train=False)
    out, state = np.zeros(len(split.ids)), None
    with torch.no_grad():
        for offset, seq_len in b.plan(0):
            x, y = b.window(offset, seq_len)
            nll, state = model(x, state, targets=y)
            state = model.detach_state(state)
            t = np.arange(offset, offset + seq_len)[:, None]
            valid = t < b.col_len[None, :]
            out[(b.col_start[None, :] + t)[valid]] = nll.double().numpy()  # target of input k is ids[k]
    return out, split, vocab


def samples(run_dir: str) -> dict:
    """SAMPLES texts of SAMPLE_TOKENS tokens (seeds 1..SAMPLES, temperature 1),
    the fraction of sampled tokens that were bucket tokens (expanded to a word
    by P(word | bucket)), and any bucket name found in the text."""
    from qrnn_lm.lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir, device="cpu")
    vocab = lm.vocab
    names = sorted({b["name"] for b in vocab.buckets.values()})
    drawn = {"n": 0}
    sample_word = vocab.sample_word

    def counting(bucket_id, generator=None, **kw):  # every bucket the model sampled passes here
        drawn["n"] += 1
        return sample_word(bucket_id, generator, **kw)

    vocab.sample_word = counting
    out = []
    for seed in range(1, SAMPLES + 1):
        drawn["n"] = 0
        text = lm.generate("", max_tokens=SAMPLE_TOKENS, seed=seed)
        leaked = sorted({n for n in names if n in text})
        out.append({"seed": seed, "text": text, "rare_tokens": drawn["n"], "tokens": SAMPLE_TOKENS,
                    "leaked": leaked})
    nparams = sum(p.numel() for p in lm.model.parameters())
    return {"samples": out, "rare_fraction": sum(s["rare_tokens"] for s in out) / (SAMPLES * SAMPLE_TOKENS),
            "leaks": sum(len(s["leaked"]) for s in out), "params": nparams}

_TEST_POS1 = {}
_MECAB_LOCK = threading.Lock()  # one MeCab tagger for the runner's threads


def pos1_counts(lines) -> dict:
    """UniDic pos1 (名詞, 助詞, ...) counts of MeCab tokens of ``lines``."""
    from collections import Counter
    from qrnn_lm.tokenizers import MecabTokenizer
    with _MECAB_LOCK:
        tok = _TEST_POS1.setdefault("tok", MecabTokenizer())
        c = Counter()
        for line in lines:
            line = line.strip()
            if line:
                c.update(pos.split("-")[0] for _, pos in tok.tokenize(line))
    return dict(c)


def generation_pos(run_dir: str, test_counts: dict, n: int, tokens: int) -> dict:
    """``n`` samples of ``tokens`` tokens (seeds 1..n, temperature 1, no
    prompt), re-tokenized with MeCab: pos1 counts, Jensen-Shannon divergence
    (bits) from the test text's pos1 distribution, share of content words."""
    from qrnn_lm.lm import LanguageModel
    lm = LanguageModel.from_checkpoint(run_dir, device="cpu")
    names = sorted({b["name"] for b in lm.vocab.buckets.values()})
    texts = [lm.generate("", max_tokens=tokens, seed=seed) for seed in range(1, n + 1)]
    counts = pos1_counts(line for t in texts for line in t.split("\n"))
    return {"pos1": counts, "js_bits": js_divergence(counts, test_counts),
            "content_share": content_share(counts), "samples": n, "tokens_each": tokens,
            "leaks": sum(sum(name in t for name in names) for t in texts), "texts": texts[:3]}

CONTENT_POS1 = ("名詞", "動詞", "形容詞", "形状詞")  # nouns, verbs, adjectives (形状詞: adjectival nouns)


def content_share(counts: dict) -> float:
    n = sum(counts.values())
    return sum(counts.get(p, 0) for p in CONTENT_POS1) / n if n else float("nan")


def js_divergence(p: dict, q: dict) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) of two count dicts."""
    import math
    keys = sorted(set(p) | set(q))
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return float("nan")
    out = 0.0
    for k in keys:
        a, b = p.get(k, 0) / sp, q.get(k, 0) / sq
        m = (a + b) / 2
        if a:
            out += 0.5 * a * math.log2(a / m)
        if b:
            out += 0.5 * b * math.log2(b / m)
    return out
