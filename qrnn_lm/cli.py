"""``python -m qrnn_lm evaluate`` and ``python -m qrnn_lm generate``.

    python -m qrnn_lm evaluate --checkpoint runs/ja --file test.txt
    {"ppl": 61.2, "bpc": 1.93, "nll": 4.11, "tokens": 81234, "characters": 261150, ...}

    python -m qrnn_lm generate --checkpoint runs/ja --prompt "Debian は" --max-tokens 60 --seed 1

``--checkpoint`` is a run directory written by ``train.py --save`` (its best
checkpoint is used) or a checkpoint file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from qrnn_lm.errors import QrnnLmError


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise QrnnLmError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _run(fn, argv) -> int:
    try:
        return fn(argv)
    except QrnnLmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130


def _evaluate(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m qrnn_lm evaluate",
                                description="Perplexity and exact bits per character of a text file.")
    p.add_argument("--checkpoint", required=True, help="run directory (its best checkpoint) or checkpoint file")
    p.add_argument("--file", required=True, help="text to score, one paragraph a line")
    p.add_argument("--batch-size", type=int, default=10, help="columns scored in parallel (stream models)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    from qrnn_lm.lm import LanguageModel
    if not os.path.isfile(args.file):
        raise QrnnLmError(f"--file {args.file} does not exist.")
    try:
        with open(args.file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise QrnnLmError(f"cannot read --file {args.file} ({e.strerror}).") from None
    if not text.strip():
        raise QrnnLmError(f"--file {args.file} is empty; give it some text.")
    lm = LanguageModel.from_checkpoint(args.checkpoint, device=_device(args.device))
    result = lm.score(text, batch_size=args.batch_size)
    result.update(file=args.file, checkpoint=args.checkpoint)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _generate(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m qrnn_lm generate", description="Sample text from a checkpoint.")
    p.add_argument("--checkpoint", required=True, help="run directory (its best checkpoint) or checkpoint file")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-tokens", type=int, default=100, help="tokens to sample")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    from qrnn_lm.lm import LanguageModel
    lm = LanguageModel.from_checkpoint(args.checkpoint, device=_device(args.device))
    print(lm.generate(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p, seed=args.seed))
    return 0


def evaluate_main(argv=None) -> int:
    return _run(_evaluate, list(sys.argv[1:] if argv is None else argv))


def generate_main(argv=None) -> int:
    return _run(_generate, list(sys.argv[1:] if argv is None else argv))
