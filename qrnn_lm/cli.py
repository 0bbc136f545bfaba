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
import math
import os
import sys

import torch

from qrnn_lm.errors import QrnnLmError, run_command


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise QrnnLmError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _run(fn, argv) -> int:
    _STDOUT["encoding"] = _text_safe_stdout()
    rc = run_command(fn, argv, out_of_memory="out of memory; use a smaller --batch-size or a shorter text.")
    if _STDOUT.get("lossy"):
        print(f"warning: stdout's encoding is {_STDOUT['encoding']}, so the characters it cannot show were "
              "written as '?'; set PYTHONIOENCODING=utf-8 or a UTF-8 locale to see them.", file=sys.stderr)
    return rc


_STDOUT: dict = {}


def _text_safe_stdout() -> str | None:
    """On a stdout that is not UTF-8 (PYTHONIOENCODING=ascii, LANG=C), make
    the characters it cannot show '?' instead of an error; returns that
    encoding (None for UTF-8)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("_", "-")
    if not encoding or encoding.startswith("utf") or not hasattr(sys.stdout, "reconfigure"):
        return None
    try:
        sys.stdout.reconfigure(errors="replace")
    except (AttributeError, ValueError, OSError):
        return None
    return encoding


def _write(text: str) -> None:
    """Write to stdout, noting text its encoding could not show."""
    encoding = _STDOUT.get("encoding")
    if encoding and not _STDOUT.get("lossy"):
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            _STDOUT["lossy"] = True
    sys.stdout.write(text)


def _evaluate(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m qrnn_lm evaluate",
                                description="Perplexity and exact bits per character of a text file.")
    p.add_argument("--checkpoint", required=True, help="run directory (its best checkpoint) or checkpoint file")
    p.add_argument("--file", required=True, help="text to score, one paragraph a line")
    p.add_argument("--batch-size", type=int, default=32,
                   help="as train.py's --eval-batch-size: stream models read the text as one column in "
                        "windows of this many x bptt tokens (speed only: the figure is the same); "
                        "sentence models score this many sentences at a time")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    from qrnn_lm.corpus import read_lines
    from qrnn_lm.lm import LanguageModel
    if args.batch_size < 1:
        raise QrnnLmError("--batch-size must be at least 1.")
    # read as `prepare` reads a corpus: .gz/.bz2 decompressed, UTF-8/16/32 decoded, binary refused
    text = "\n".join(read_lines(args.file, what="--file"))
    if not text.strip():
        raise QrnnLmError(f"--file {args.file} is empty; give it some text.")
    lm = LanguageModel.from_checkpoint(args.checkpoint, device=_device(args.device))
    result = lm.score(text, batch_size=args.batch_size)
    result.update(file=args.file, checkpoint=args.checkpoint)
    _write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


def _generate(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m qrnn_lm generate", description="Sample text from a checkpoint.")
    p.add_argument("--checkpoint", required=True, help="run directory (its best checkpoint) or checkpoint file")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-tokens", type=_count, default=100, help="tokens to sample (1e6 is accepted)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: all)")
    p.add_argument("--seed", type=_whole, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args(argv)
    from qrnn_lm.lm import LanguageModel
    LanguageModel.check_sampling(args.max_tokens, args.temperature, args.top_k, args.top_p)
    if args.seed is not None and not (isinstance(args.seed, int) and -2 ** 63 <= args.seed < 2 ** 64):
        shown = f"{args.seed:g}" if isinstance(args.seed, int) else args.seed
        raise QrnnLmError(f"--seed must be a whole number from -2**63 to 2**64-1, not {shown}.")
    lm = LanguageModel.from_checkpoint(args.checkpoint, device=_device(args.device))
    # tokens are printed as they are sampled; Ctrl-C stops and keeps what was printed
    n = 0
    try:
        for piece in lm.generate_stream(args.prompt, max_tokens=args.max_tokens,
                                        temperature=args.temperature, top_k=args.top_k,
                                        top_p=args.top_p, seed=args.seed):
            _write(piece)
            sys.stdout.flush()
            n += len(piece)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stdout.flush()
        print("interrupted: the text above is what was generated.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `generate ... | head`: the reader has what it wanted
        _silence_stdout()
        return 0
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def _count(value: str) -> int:
    """A non-negative whole number, also written as 1e6."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x) or x != int(x):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(x)


def _whole(value: str):
    """A whole number, also written 1e6; anything else is kept as given for a one-sentence error."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        x = float(value)
    except ValueError:
        return value
    return int(x) if x.is_integer() else value


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def evaluate_main(argv=None) -> int:
    return _run(_evaluate, list(sys.argv[1:] if argv is None else argv))


def generate_main(argv=None) -> int:
    return _run(_generate, list(sys.argv[1:] if argv is None else argv))
