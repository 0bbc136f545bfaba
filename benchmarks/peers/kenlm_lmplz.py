"""KenLM's modified Kneser-Ney n-gram (``lmplz``, scored with KenLM's
``query``) over a prepared dataset's ids, in the dataset's bits per character.

    python benchmarks/peers/kenlm_lmplz.py --data DATASET_DIR --save RUN_DIR --lmplz /path/to/lmplz [--order 5]

KenLM is not part of this project: build it yourself (github.com/kpu/kenlm,
cmake) and pass its ``lmplz``; ``query`` is looked for beside it.  Every id
becomes a word (its decimal number) and every ``</s>`` of the stream ends a
line, so KenLM predicts the same outputs, ``</s>`` included, as train.py's
models; its -log P over the test output tokens plus the rare words' -log
P(word | bucket), over the characters, gives the BPC
(:func:`qrnn_lm.lm.bits_per_char`).  Two differences from
benchmarks/peers/kneser_ney.py: KenLM's context restarts at every line
(``<s>``), and ids never seen in training share KenLM's ``<unk>``
probability (their count is in results.json as ``oov``).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
BENCH = os.path.join(REPO, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
from peers.common import score_splits, split_figures, write_results  # noqa: E402


def write_lines(ids: np.ndarray, eos_id: int, path: str) -> int:
    """One line per ``</s>``-ended piece of ``ids``; returns the lines written."""
    ids = np.asarray(ids)
    if len(ids) == 0 or int(ids[-1]) != eos_id:
        raise ValueError(f"the split does not end with </s> (id {eos_id}); prepare the dataset again")
    ends = np.flatnonzero(ids == eos_id)
    with open(path, "w", encoding="utf-8") as f:
        start = 0
        for e in ends:
            f.write(" ".join(map(str, ids[start:e].tolist())) + "\n")
            start = e + 1
    return len(ends)


def query_log10(query: str, model: str, text: str) -> tuple:
    """(sum of log10 P over every word and </s> of ``text``, OOV tokens) by KenLM's query."""
    with open(text, encoding="utf-8") as f:
        out = subprocess.run([query, "-v", "sentence", model], stdin=f, capture_output=True, text=True, check=True)
    total, oov = 0.0, 0
    words = out.stdout.split()
    for i, w in enumerate(words[:-3]):   # "Total: <log10> OOV: <count>", once per line of text
        if w == "Total:" and words[i + 2] == "OOV:":
            total += float(words[i + 1])
            oov += int(words[i + 3])
    return total, oov


def run(data_dir: str, save: str, lmplz: str, order: int = 5) -> dict:
    from qrnn_lm.data import load_split
    from qrnn_lm.vocab import Vocabulary
    query = os.path.join(os.path.dirname(os.path.abspath(lmplz)), "query")
    for tool in (lmplz, query):
        if not os.access(tool, os.X_OK):
            raise ValueError(f"{tool} is not an executable; build KenLM (lmplz and query) and pass its lmplz")
    vocab = Vocabulary.load(data_dir)
    os.makedirs(save, exist_ok=True)
    train = load_split(data_dir, "train")
    write_lines(train.ids, vocab.eos_id, os.path.join(save, "train.txt"))
    arpa = os.path.join(save, "model.arpa")
    t0 = time.time()
    with open(os.path.join(save, "train.txt"), encoding="utf-8") as fin, open(arpa, "w", encoding="utf-8") as fout:
        subprocess.run([lmplz, "-o", str(order), "--discount_fallback", "-S", "20%", "-T", save],
                       stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, check=True)
    train_s = time.time() - t0
    print(f"model: KenLM lmplz modified Kneser-Ney {order}-gram over the ids ({len(vocab)} outputs); "
          f"built in {train_s:.1f} s", flush=True)
    res = {"step": 0, "tokens": train.tokens, "minutes": train_s / 60, "train_seconds": round(train_s, 2),
           "chosen": {"order": order, "smoothing": "KenLM lmplz (modified Kneser-Ney, interpolated)"}}
    def score(name, split):
        text = os.path.join(save, f"{name}.txt")
        write_lines(split.ids, vocab.eos_id, text)
        log10, oov = query_log10(query, arpa, text)
        return split_figures(-log10 * math.log(10), split, oov=oov)
    score_splits(data_dir, res, score)
    os.remove(arpa)
    res["wall_seconds"] = round(time.time() - t0, 2)
    write_results(save, res)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared dataset (train.py --data)")
    p.add_argument("--save", required=True, help="the run folder; results.json goes there")
    p.add_argument("--lmplz", required=True, help="KenLM's lmplz (its query beside it)")
    p.add_argument("--order", type=int, default=5)
    args = p.parse_args(argv)
    from qrnn_lm.errors import QrnnLmError
    try:
        run(args.data, args.save, args.lmplz, args.order)
    except (QrnnLmError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"error: KenLM's {os.path.basename(e.cmd[0])} failed (exit {e.returncode}); run it by hand to see why.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
