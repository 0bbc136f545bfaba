#!/usr/bin/env bash
# How the files in this directory were made, at commit 56df9d7 (the layout
# before the package was split into smaller modules).  They are checked in so
# that tests/test_legacy.py can hold today's code to the formats that commit
# wrote: a prepared dataset (data/) and a run directory (run/: last.pt,
# best.pt, metrics.jsonl, results.json).  Do not re-run this on newer code:
# the point is that the files come from the old one.
#
#   git checkout 56df9d7 && bash tests/data/legacy/make.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
rm -rf text data run
mkdir text
# a few hundred lines of simple Japanese, written out by a fixed rule
"$PY" - <<'PYEOF'
import random
rng = random.Random(56)
subj = ["猫", "犬", "鳥", "私", "彼女", "先生", "学生", "子供", "母", "友達"]
obj = ["本", "魚", "手紙", "歌", "花", "水", "パン", "写真", "地図", "お茶"]
verb = ["読む", "見る", "食べる", "書く", "買う", "送る", "飲む", "探す", "描く", "歌う"]
place = ["公園", "学校", "駅", "図書館", "海", "山", "家", "店"]
time = ["朝", "昼", "夜", "今日", "昨日", "毎日"]
def sentence():
    k = rng.randrange(3)
    if k == 0:
        return f"{rng.choice(subj)}は{rng.choice(obj)}を{rng.choice(verb)}。"
    if k == 1:
        return f"{rng.choice(time)}、{rng.choice(subj)}は{rng.choice(place)}で{rng.choice(obj)}を{rng.choice(verb)}。"
    return f"{rng.choice(subj)}と{rng.choice(subj)}が{rng.choice(place)}へ行く。"
for split, n in (("train", 300), ("valid", 40), ("test", 40)):
    with open(f"text/{split}.txt", "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write("".join(sentence() for _ in range(rng.randint(1, 2))) + "\n")
PYEOF
"$PY" -m qrnn_lm prepare --train text/train.txt --valid text/valid.txt --test text/test.txt \
  --out data --tokenizer char --vocab-size 60 --rare unk --quiet
"$PY" ../../../train.py --data data --save run --seed 1 --device cpu \
  --emsize 8 --nhid 8 --nlayers 1 --max-steps 4 --bptt 8 --batch_size 2 --eval-batch-size 2 \
  --log-interval 1 --no-progress
rm -f run/loss.png   # written only when matplotlib is installed; not part of the format
