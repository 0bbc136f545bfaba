"""``python -m qrnn_lm <command> ...``

Commands:
  prepare   tokenize a corpus and build a vocabulary with rare-word buckets
  train     train a language model (the same as ``python train.py``)
  evaluate  perplexity and bits per character of a checkpoint on a text file
  generate  sample text from a checkpoint
  serve     a local web page to generate, score and inspect text (docs/SERVE.md)
"""
import importlib
import sys

# command -> (module, function); each function takes argv (list of str) and
# returns an exit code.
COMMANDS = {
    "prepare": ("qrnn_lm.prepare", "main"),
    "train": ("qrnn_lm.train", "main"),
    "evaluate": ("qrnn_lm.cli", "evaluate_main"),
    "generate": ("qrnn_lm.cli", "generate_main"),
    "serve": ("qrnn_lm.serve", "main"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"qrnn_lm: unknown command {command!r}; choose one of: "
              f"{', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module, func = COMMANDS[command]
    try:
        return getattr(importlib.import_module(module), func)(rest)
    except KeyboardInterrupt:  # Ctrl-C while torch loads, before the command's own handler
        print("interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
