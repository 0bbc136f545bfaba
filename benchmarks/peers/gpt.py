"""A small GPT (nanoGPT's model.py, unchanged) trained for a wall-clock budget
on a prepared dataset's ids, scored in the dataset's bits per character.

    python benchmarks/peers/gpt.py --data DATASET_DIR --save RUN_DIR --minutes 2 [--seed 1111]

Settings: nanoGPT's README recipe for a CPU (``--device=cpu --compile=False
--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--dropout=0.0``) on top of config/train_shakespeare_char.py (learning rate
1e-3 decaying to 1e-4 on a cosine, beta2 0.99, 100 warmup iterations) and
nanoGPT train.py's defaults (AdamW through the model's configure_optimizers,
weight decay 0.1, beta1 0.9, gradient clipping 1.0, bias=False).  The one
change: the cosine runs over the wall-clock budget instead of max_iters (the
fraction of the budget spent replaces it / lr_decay_iters).  The vocabulary is
the dataset's outputs, not padded (a padded softmax would give mass to ids that
are no outputs).  Batches are nanoGPT's get_batch: random windows of the
training stream ``[</s>] + ids``.  No validation inside the budget.

Scoring: every output token of a split's stream ``[</s>] + ids`` once, with
windows of block_size tokens sliding by ``--stride`` (default block_size / 2):
the first window scores all its tokens, every later one only the tokens the
previous one did not reach, so every token after the first block_size sees at
least block_size - stride tokens of context; then train.py's formula
(:func:`qrnn_lm.lm.bits_per_char`: the model's -log P over the output tokens
plus the rare words' -log P(word | bucket), over the split's characters).

Writes RUN_DIR/results.json with the fields train.py writes that
benchmarks/bench_budget.py reads.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
for _p in (REPO, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
BENCH = os.path.join(REPO, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
from peers.common import score_splits, split_figures, write_results  # noqa: E402

SETTINGS = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "batch_size": 12, "dropout": 0.0,
            "bias": False, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "weight_decay": 0.1,
            "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0}


def windows(n_targets: int, block: int, stride: int) -> list:
    """(start, first) per window over a stream of ``n_targets + 1`` ids: the
    window feeds stream[start:start+L] (L = min(block, n_targets)) and scores
    the targets stream[t] for first <= t <= start + L (each t in 1..n_targets
    exactly once)."""
    if not 1 <= stride <= block:
        raise ValueError("the stride must be between 1 and the block size")
    L = min(block, n_targets)
    starts = list(range(0, n_targets - L + 1, stride))
    if starts[-1] + L < n_targets:
        starts.append(n_targets - L)
    out, done = [], 0
    for a in starts:
        out.append((a, done + 1))
        done = a + L
    return out


@torch.no_grad()
def stream_nll(model, stream: np.ndarray, block: int, stride: int, batch: int = 32) -> tuple:
    """(sum of -ln P(stream[t] | stream[:t]) over t = 1..len-1, count) for a
    model called like nanoGPT's GPT: ``logits, _ = model(idx, targets)``
    with logits for every position when targets are given."""
    stream = torch.as_tensor(np.asarray(stream, dtype=np.int64))
    n = len(stream) - 1
    L = min(block, n)
    wins = windows(n, block, stride)
    total, count = 0.0, 0
    for b in range(0, len(wins), batch):
        chunk = wins[b:b + batch]
        idx = torch.stack([stream[a:a + L] for a, _ in chunk])
        tgt = torch.stack([stream[a + 1:a + L + 1] for a, _ in chunk])
        logits, _ = model(idx, tgt)
        logp = F.log_softmax(logits.float(), dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        t = torch.arange(1, L + 1).unsqueeze(0) + torch.tensor([a for a, _ in chunk]).unsqueeze(1)
        keep = t >= torch.tensor([f for _, f in chunk]).unsqueeze(1)
        total -= float(logp[keep].double().sum())
        count += int(keep.sum())
    return total, count


def score_split(model, split, eos_id: int, block: int, stride: int) -> dict:
    """train.py's evaluation figures for one split (stream ``[eos] + ids``)."""
    from qrnn_lm.data import eos_stream
    was = model.training
    model.eval()
    nll, n = stream_nll(model, eos_stream(np.asarray(split.ids), eos_id), block, stride)
    model.train(was)
    return split_figures(nll, split)


def lr_at(it: int, fraction: float, s: dict = SETTINGS) -> float:
    """nanoGPT's get_lr with the budget fraction spent in place of it / lr_decay_iters."""
    if it < s["warmup_iters"]:
        return s["learning_rate"] * (it + 1) / (s["warmup_iters"] + 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))
    return s["min_lr"] + coeff * (s["learning_rate"] - s["min_lr"])


def train(model, stream: np.ndarray, minutes: float, seed: int, s: dict = SETTINGS) -> dict:
    """nanoGPT's training loop (random windows, AdamW, clipping) for ``minutes``."""
    data = torch.as_tensor(np.asarray(stream, dtype=np.int64))
    block, bs = s["block_size"], s["batch_size"]
    if len(data) <= block:
        raise ValueError(f"the training split has {len(data) - 1} tokens, fewer than the block size {block}; "
                         "give it more text")
    gen = torch.Generator().manual_seed(seed)
    opt = model.configure_optimizers(s["weight_decay"], s["learning_rate"], (s["beta1"], s["beta2"]), "cpu")
    model.train()
    budget, t0, it = minutes * 60.0, time.time(), 0
    while True:
        spent = time.time() - t0
        if spent >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it, spent / budget, s)
        ix = torch.randint(len(data) - block, (bs,), generator=gen)
        x = torch.stack([data[i:i + block] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + block] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if s["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s["grad_clip"])
        opt.step()
        it += 1
    return {"step": it, "tokens": it * bs * block, "minutes": (time.time() - t0) / 60}


def run(data_dir: str, save: str, minutes: float, seed: int = 1111, stride: int | None = None) -> dict:
    from nanogpt_model import GPT, GPTConfig
    from qrnn_lm.data import eos_stream, load_split
    from qrnn_lm.vocab import Vocabulary
    s = SETTINGS
    stride = stride or s["block_size"] // 2
    vocab = Vocabulary.load(data_dir)
    train_split = load_split(data_dir, "train")
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=s["block_size"], vocab_size=len(vocab), n_layer=s["n_layer"],
                          n_head=s["n_head"], n_embd=s["n_embd"], dropout=s["dropout"], bias=s["bias"]))
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: GPT (nanoGPT model.py) {s['n_layer']}x{s['n_embd']}, {s['n_head']} heads, context "
          f"{s['block_size']}, full softmax over {len(vocab)} outputs, {nparams / 1e6:.2f}M parameters; device cpu",
          flush=True)
    res = train(model, eos_stream(np.asarray(train_split.ids), vocab.eos_id), minutes, seed, s)
    res["chosen"] = dict(s, eval_stride=stride)
    score_splits(data_dir, res, lambda name, split: score_split(model, split, vocab.eos_id, s["block_size"], stride))
    write_results(save, res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared dataset (train.py --data)")
    p.add_argument("--save", required=True, help="the run folder; results.json goes there")
    p.add_argument("--minutes", type=float, required=True, help="the training budget (wall clock)")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--stride", type=int, default=None, help="scoring windows' step (default block_size / 2)")
    args = p.parse_args(argv)
    from qrnn_lm.errors import QrnnLmError
    if args.minutes <= 0 or (args.stride is not None and not 1 <= args.stride <= SETTINGS["block_size"]):
        print(f"error: --minutes must be > 0 and --stride between 1 and {SETTINGS['block_size']}.", file=sys.stderr)
        return 2
    try:
        run(args.data, args.save, args.minutes, args.seed, args.stride)
    except (QrnnLmError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
