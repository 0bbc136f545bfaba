"""bf16 autocast on the CPU: speed and quality of the default CPU model, float32 vs bf16.

    python benchmarks/bench_amp_cpu.py                   # speed and quality, the real figures
    python benchmarks/bench_amp_cpu.py --part speed      # speed only (a minute or two)
    python benchmarks/bench_amp_cpu.py --quick           # a smoke run on a slice of the corpus

The model is the default CPU one: QRNN 2 x 256, emsize 128, window 2, adaptive
softmax over the ~5k outputs of the shared Japanese corpus
(../shared/data/ja-debian-docs) prepared with MeCab and a 5000-word
vocabulary (``--data``; prepared there first when missing), stream batches of
32 x 35.  bf16 means the model's forward under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (RNN layers in bf16, output
layer and loss in float32, float32 weights; see qrnn_lm.model).

(a) speed: the float32 and bf16 models train side by side, ``--rounds``
rounds of ``--round-steps`` steps each (forward, backward, clipping, AdamW),
the two alternating which goes first, so that load from other processes hits
both alike; ms per step is the median over rounds, and the ratio is float32 /
bf16 (process CPU time per step is recorded too: with ``--threads 1`` it is
less sensitive to other processes than wall time).  The short in-process measurement that the defaults rule uses
(qrnn_lm.amp.measure_bf16_speedup) is run too and recorded beside it.

(b) quality at equal steps: per seed, the same model trained ``--steps``
steps in float32 and in bf16 (same initial weights, same batches, same
dropout draws), then validation and test bits per character, both models
evaluated in float32 and the bf16 model also under bf16 autocast (as training
would evaluate it); mean +- sd over seeds and the paired difference (bf16 -
float32, per seed).

The loop here is its own (it uses only the model and the batching), so it
does not depend on the training script.  Results are printed and written to
benchmarks/results/bench_amp_cpu.json (--quick: /tmp/bench_amp_cpu_quick.json); --part speed or
--part quality replaces that part of an existing file and keeps the other.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from qrnn_lm import amp  # noqa: E402
from qrnn_lm.data import StreamBatches, load_split  # noqa: E402
from qrnn_lm.model import ModelConfig, RNNLanguageModel  # noqa: E402
from qrnn_lm.vocab import Vocabulary  # noqa: E402

CORPUS_CANDIDATES = [os.path.join(REPO, "..", "shared", "data", "ja-debian-docs"),
                     os.path.join(REPO, "..", "..", "shared", "data", "ja-debian-docs")]
MODEL = dict(rnn="qrnn", emsize=128, nhid=256, nlayers=2, window=2, softmax="adaptive",
             dropout=0.2, dropouth=0.1, dropouti=0.1, dropoute=0.05)
BATCH, BPTT, LR, CLIP = 32, 35, 3e-3, 0.25
MODES = {"fp32": contextlib.nullcontext, "bf16": amp.autocast_for("cpu", "bf16")}


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def prepare_data(args) -> str:
    """The prepared dataset: --data, prepared from the corpus first when missing
    (--quick: from the first --quick-chars characters of each split)."""
    if os.path.isfile(os.path.join(args.data, "vocab.json")):
        return args.data
    corpus = args.corpus or next((c for c in CORPUS_CANDIDATES if os.path.isdir(c)), None)
    if corpus is None:
        sys.exit("error: the shared corpus ja-debian-docs was not found; give it with --corpus DIR.")
    src = {s: os.path.join(corpus, f"{s}.txt") for s in ("train", "valid", "test")}
    if args.quick:
        os.makedirs(args.data + ".src", exist_ok=True)
        for s, path in src.items():
            with open(path, encoding="utf-8") as f:
                text = f.read(args.quick_chars if s == "train" else args.quick_chars // 5)
            src[s] = os.path.join(args.data + ".src", f"{s}.txt")
            with open(src[s], "w", encoding="utf-8") as f:
                f.write(text[:text.rfind("\n") + 1])
    from qrnn_lm import prepare
    print(f"preparing {args.data} from {corpus} (MeCab, 5000 words) ...", flush=True)
    rc = prepare.main(["--train", src["train"], "--valid", src["valid"], "--test", src["test"], "--out", args.data,
                       "--tokenizer", "mecab", "--vocab-size", "5000", "--quiet"])
    if rc:
        sys.exit(rc)
    return args.data


class Run:
    """One model training on stream batches: its own AdamW, carried state, batch iterator."""

    def __init__(self, cfg: ModelConfig, split, eos_id: int, mode: str, seed: int, total_steps: int):
        torch.manual_seed(seed)
        self.model = RNNLanguageModel(cfg).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=1.2e-6)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
        self.batches = StreamBatches(split.ids, eos_id, BATCH, BPTT, train=True)
        self.epoch, self.it, self.state = 0, self.batches.epoch(0), None
        self.autocast = MODES[mode]
        self.rng = torch.Generator().manual_seed(seed)  # dropout draws, the same for both modes

    def next_batch(self):
        try:
            return next(self.it)[1:]
        except StopIteration:
            self.epoch += 1
            self.it, self.state = self.batches.epoch(self.epoch), None
            return next(self.it)[1:]

    def step(self) -> float:
        x, y = self.next_batch()
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng.get_state())
        self.state = self.model.detach_state(self.state)
        with self.autocast():
            nll, self.state = self.model(x, self.state, targets=y)
            loss = nll.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.sched.step()
        self.rng.set_state(torch.get_rng_state())
        torch.set_rng_state(saved)
        return loss.item()


@torch.no_grad()
def bpc(model, split, eos_id: int, autocast) -> float:
    """Bits per character of a split (bucketed words add their log P(word | bucket))."""
    model.eval()
    nll_sum, state = 0.0, None
    for _, x, y in StreamBatches(split.ids, eos_id, 10, 70, train=False).epoch(0):
        with autocast():
            nll, state = model(x, state, targets=y)
        nll_sum += float(nll.double().sum())
    model.train()
    rare = float(np.sum(split.rare_logp, dtype=np.float64))
    return (nll_sum - rare) / (split.characters * math.log(2))


# ---------------------------------------------------------------------------
# (a) speed, (b) quality
# ---------------------------------------------------------------------------
def bench_speed(args, cfg, split, eos_id) -> dict:
    runs = {m: Run(cfg, split, eos_id, m, seed=0, total_steps=10 ** 6) for m in MODES}
    for run in runs.values():  # warm-up
        for _ in range(2):
            run.step()
    ms = {m: [] for m in MODES}
    cpu_ms = {m: [] for m in MODES}  # process CPU time: less sensitive to other processes' load
    for r in range(args.rounds):
        for m in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.round_steps):
                runs[m].step()
            ms[m].append(1000 * (time.perf_counter() - t0) / args.round_steps)
            cpu_ms[m].append(1000 * (time.process_time() - c0) / args.round_steps)
    med = {m: statistics.median(v) for m, v in ms.items()}
    cpu_med = {m: statistics.median(v) for m, v in cpu_ms.items()}
    x, y = runs["fp32"].next_batch()
    quick = amp.measure_bf16_speedup(runs["fp32"].model, (x, y))
    out = {"ms_per_step_rounds": ms, "ms_per_step_median": med, "ratio_fp32_over_bf16": med["fp32"] / med["bf16"],
           "cpu_ms_per_step_rounds": cpu_ms, "cpu_ms_per_step_median": cpu_med,
           "cpu_time_ratio_fp32_over_bf16": cpu_med["fp32"] / cpu_med["bf16"],
           "rounds": args.rounds, "round_steps": args.round_steps, "measure_bf16_speedup": quick,
           "choose_amp": list(amp.choose_amp("cpu", quick))}
    print(f"speed: fp32 {med['fp32']:.1f} ms/step, bf16 {med['bf16']:.1f} ms/step, ratio "
          f"{out['ratio_fp32_over_bf16']:.2f}x (median of {args.rounds} x {args.round_steps} steps, interleaved; "
          f"CPU-time ratio {out['cpu_time_ratio_fp32_over_bf16']:.2f}x); in-process measurement {quick:.2f}x -> "
          f"{out['choose_amp'][1]}", flush=True)
    return out


def _mean_sd(v: list) -> dict:
    return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}


def bench_quality(args, cfg, splits, eos_id) -> dict:
    rows = []
    for seed in range(1, args.seeds + 1):
        row = {"seed": seed}
        for mode in MODES:
            run = Run(cfg, splits["train"], eos_id, mode, seed, args.steps)
            t0 = time.perf_counter()
            losses = [run.step() for _ in range(args.steps)]
            row[f"{mode}_train_seconds"] = time.perf_counter() - t0
            row[f"{mode}_final_train_loss"] = statistics.mean(losses[-20:])
            row[f"{mode}_finite"] = all(math.isfinite(v) for v in losses)
            for name in ("valid", "test"):
                row[f"{mode}_{name}_bpc"] = bpc(run.model, splits[name], eos_id, contextlib.nullcontext)
                if mode == "bf16":
                    row[f"bf16_{name}_bpc_bf16_eval"] = bpc(run.model, splits[name], eos_id, MODES["bf16"])
        for name in ("valid", "test"):
            row[f"diff_{name}_bpc"] = row[f"bf16_{name}_bpc"] - row[f"fp32_{name}_bpc"]
        print(f"  seed {seed}: valid bpc fp32 {row['fp32_valid_bpc']:.4f} bf16 {row['bf16_valid_bpc']:.4f} "
              f"(bf16 eval {row['bf16_valid_bpc_bf16_eval']:.4f}); test bpc fp32 {row['fp32_test_bpc']:.4f} "
              f"bf16 {row['bf16_test_bpc']:.4f}", flush=True)
        rows.append(row)
    summary = {k: _mean_sd([r[k] for r in rows]) for k in rows[0] if k.endswith("bpc") or k.endswith("eval")}
    for name in ("valid", "test"):
        s = summary[f"diff_{name}_bpc"]
        print(f"quality ({args.steps} steps, {len(rows)} seeds): {name} bpc fp32 "
              f"{summary[f'fp32_{name}_bpc']['mean']:.4f} +- {summary[f'fp32_{name}_bpc']['sd']:.4f}, bf16 "
              f"{summary[f'bf16_{name}_bpc']['mean']:.4f} +- {summary[f'bf16_{name}_bpc']['sd']:.4f}, "
              f"paired bf16 - fp32 {s['mean']:+.4f} +- {s['sd']:.4f}", flush=True)
    return {"steps": args.steps, "seeds": args.seeds, "runs": rows, "summary": summary}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["speed", "quality", "all"], default="all")
    p.add_argument("--data", default=None, help="prepared dataset (default /tmp/jadata; prepared when missing)")
    p.add_argument("--corpus", default=None, help="the ja-debian-docs directory (default ../shared/data/...)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--round-steps", type=int, default=20)
    p.add_argument("--steps", type=int, default=600, help="training steps per quality run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="smoke run: a corpus slice, 2 x 3 steps, 10 steps, 1 seed")
    p.add_argument("--quick-chars", type=int, default=200_000)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.round_steps, args.steps, args.seeds = 2, 3, 10, 1
    args.data = args.data or ("/tmp/jadata-quick" if args.quick else "/tmp/jadata")
    out = args.out or ("/tmp/bench_amp_cpu_quick.json" if args.quick
                       else os.path.join(HERE, "results", "bench_amp_cpu.json"))
    if args.threads:
        torch.set_num_threads(args.threads)
    data = prepare_data(args)
    vocab = Vocabulary.load(data)
    splits = {s: load_split(data, s) for s in ("train", "valid", "test")}
    cfg = ModelConfig(vocab_size=len(vocab), **MODEL)
    result = {"model": {**cfg.to_dict(), "batch": BATCH, "bptt": BPTT, "optimizer": "adamw", "lr": LR,
                        "clip": CLIP}, "data": os.path.abspath(data), "quick": args.quick,
              "train_tokens": splits["train"].tokens, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu_bf16_feature": amp.cpu_bf16_feature(), "machine": platform.machine(),
              "loadavg_start": os.getloadavg(), "speed": None, "quality": None}
    print(f"model: QRNN 2x256, emsize 128, adaptive softmax over {len(vocab)} outputs; batch {BATCH} x {BPTT}; "
          f"{torch.get_num_threads()} threads; native bf16: {result['cpu_bf16_feature']}; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.part in ("speed", "all"):
        result["speed"] = bench_speed(args, cfg, splits["train"], vocab.eos_id)
    if args.part in ("quality", "all"):
        result["quality"] = bench_quality(args, cfg, splits, vocab.eos_id)
    result["loadavg_end"] = os.getloadavg()
    if args.part != "all" and os.path.exists(out):   # keep the part not rerun (and its run's metadata)
        with open(out, encoding="utf-8") as f:
            kept = json.load(f)
        other = "quality" if args.part == "speed" else "speed"
        if kept.get(other) is not None:
            result[other] = kept[other]
            result[f"{other}_run"] = {k: kept[k] for k in ("loadavg_start", "loadavg_end", "torch", "threads")
                                      if k in kept}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
