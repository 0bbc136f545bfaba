#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine, CPU only, about 10 minutes:
# install qrnn_lm into ./.venv, extract a real Japanese corpus from Debian's
# Japanese documentation, train a small QRNN language model for a few
# minutes, print test perplexity / bits per character, and sample text.
#
#   bash examples/quickstart.sh
#
# Settings (environment): TORCH_SPEC (default "torch"; e.g. torch==2.13.0),
# MINUTES (training time, default 5), OUT (default runs/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-torch}
MINUTES=${MINUTES:-5}
OUT=${OUT:-runs/quickstart}
DOCS="manpages-ja manpages-ja-dev debian-reference-ja developers-reference-ja debian-policy-ja
      maint-guide-ja aptitude-doc-ja debian-faq-ja debian-edu-doc-ja"

echo "== 1/5 Debian's Japanese documentation (the corpus)"
if ! dpkg -s manpages-ja >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $DOCS >/dev/null
fi

echo "== 2/5 install qrnn_lm (compiles the C++ kernels; CUDA too where a toolkit is found)"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q "$TORCH_SPEC" numpy setuptools wheel ninja
if command -v nvcc >/dev/null && python -c "import torch, sys; sys.exit(not torch.version.cuda)"; then
  echo "   (CUDA torch and nvcc: the CUDA kernels are compiled too, for the GPUs torch supports"
  echo "   when none is visible -- some minutes on 2 cores; QRNN_LM_SKIP_CUDA=1 skips them)"
fi
pip install -q --no-build-isolation -e .   # -e: train.py below runs from this checkout
python -c "import qrnn_lm.ops as o; print('compiled kernels for:', sorted(o.compiled_devices()))"

echo "== 3/5 tokenize with MeCab; keep 5k words, rare words in buckets by POS and character class"
[ -f data/debian-ja/vocab.json ] || python -m qrnn_lm prepare --corpus debian-ja \
  --out data/debian-ja --tokenizer mecab --vocab-size 5000 --rare pos+script \
  --workers 2 --quiet

echo "== 4/5 train for $MINUTES minutes on the defaults (model, lr schedule etc. chosen for the budget)"
RESUME=()
[ -f "$OUT/last.pt" ] && RESUME=(--resume)   # again: says the run is finished (a larger MINUTES trains on)
python train.py "${RESUME[@]}" --data data/debian-ja --max-minutes "$MINUTES" --log-interval 100 \
  --no-progress --save "$OUT"

echo "== 5/5 sample (rare-word buckets are expanded to real words)"
python -m qrnn_lm generate --checkpoint "$OUT" --prompt "パッケージをインストールするには" \
  --max-tokens 60 --top-k 40 --seed 1
