"""Does torch.compile pay on the CPU, and how many threads should a step use?

    python benchmarks/bench_compile_cpu.py            # the real figures (a few minutes)
    python benchmarks/bench_compile_cpu.py --quick    # a smoke run on a slice of the corpus

The model and batches are the default CPU ones (QRNN 2 x 256, emsize 128,
adaptive softmax, stream batches of 32 x 35 on the shared Japanese corpus,
prepared as benchmarks/bench_amp_cpu.py prepares it).  Each step is the
package's own ``qrnn_lm.train.train_step`` (forward, backward, clipping, AdamW).

(a) compile: for float32 and bf16 autocast, an eager model and
``torch.compile(model)`` (same initial weights): the wall time of the first
``--first-steps`` steps (the compiled model's first step pays the compilation,
later steps may recompile for a new shape), then ``--rounds`` rounds of
``--round-steps`` steps with the modes interleaved; ms per step is the median
over rounds.  From these: the compilation's cost in seconds (first steps
minus as many steady steps) and the budget in minutes from which the compiled
step would be ahead (cost / time saved per second of training), or "never"
when the compiled step is not faster.

(b) threads: the eager bf16 step with 1 and with 2 intra-op threads
(``torch.set_num_threads``), interleaved the same way.

Printed and written to benchmarks/results/bench_compile_cpu.json (--quick:
/tmp/bench_compile_cpu_quick.json).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from bench_amp_cpu import BATCH, BPTT, CLIP, LR, MODEL, prepare_data  # noqa: E402
from qrnn_lm import amp  # noqa: E402
from qrnn_lm.data import StreamBatches, load_split  # noqa: E402
from qrnn_lm.model import ModelConfig, RNNLanguageModel  # noqa: E402
from qrnn_lm.train import train_step  # noqa: E402
from qrnn_lm.vocab import Vocabulary  # noqa: E402

PRECISION = {"fp32": contextlib.nullcontext, "bf16": amp.autocast_for("cpu", "bf16")}


class Stepper:
    """One model (eager or compiled) with its optimizer, batches and carried state."""

    def __init__(self, cfg, split, eos_id, precision: str, compiled: bool, seed: int = 0):
        torch.manual_seed(seed)
        self.model = RNNLanguageModel(cfg).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.01)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.autocast = PRECISION[precision]
        self.batches = StreamBatches(split.ids, eos_id, BATCH, BPTT, train=True)
        self.epoch, self.it, self.state = 0, self.batches.epoch(0), None
        self.threads = None

    def batch(self):
        try:
            return next(self.it)[1:]
        except StopIteration:
            self.epoch += 1
            self.it, self.state = self.batches.epoch(self.epoch), None
            return next(self.it)[1:]

    def step(self) -> float:
        x, y = self.batch()
        if self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        _, _, self.state = train_step(self.forward, self.opt, x, y, self.state, clip=CLIP, autocast=self.autocast)
        return time.perf_counter() - t0


def interleaved(steppers: dict, rounds: int, round_steps: int) -> dict:
    """Median ms per step of each stepper over ``rounds`` rounds, the order
    rotating between rounds so that outside load hits them all alike."""
    names, ms = list(steppers), {n: [] for n in steppers}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            ms[n].append(1000.0 * sum(steppers[n].step() for _ in range(round_steps)) / round_steps)
    return {n: statistics.median(v) for n, v in ms.items()}


def bench_compile(args, cfg, split, eos_id) -> dict:
    out = {}
    for precision in PRECISION:
        steppers, first = {}, {}
        for compiled in (False, True):
            name = "compiled" if compiled else "eager"
            try:
                steppers[name] = Stepper(cfg, split, eos_id, precision, compiled)
                first[name] = [steppers[name].step() for _ in range(args.first_steps)]
            except Exception as e:  # compilation can fail (no compiler, an unsupported op): that is a result
                print(f"{precision} {name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                      flush=True)
                out[precision] = {"error": f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                break
        if precision in out:
            continue
        med = interleaved(steppers, args.rounds, args.round_steps)
        row = {"first_steps_s": first, "ms_per_step": med, "eager_over_compiled": med["eager"] / med["compiled"]}
        cost = sum(first["compiled"]) - args.first_steps * med["compiled"] / 1000.0
        row["compile_cost_s"] = cost
        saved_per_s = 1.0 - med["compiled"] / med["eager"]   # seconds saved per second of eager training
        row["break_even_minutes"] = cost / saved_per_s / 60.0 if saved_per_s > 0 else None
        out[precision] = row
        be = row["break_even_minutes"]
        print(f"{precision}: eager {med['eager']:.1f} ms/step, compiled {med['compiled']:.1f} ms/step "
              f"({row['eager_over_compiled']:.2f}x); compilation {cost:.1f} s; ahead after "
              f"{'never' if be is None else f'{be:.1f} min'}", flush=True)
    return out


def bench_threads(args, cfg, split, eos_id) -> dict:
    steppers = {}
    for n in sorted({1, args.max_threads}):
        steppers[n] = Stepper(cfg, split, eos_id, "bf16", False)
        steppers[n].threads = n
        steppers[n].step()
    med = interleaved(steppers, args.rounds, args.round_steps)
    torch.set_num_threads(args.max_threads)
    print("threads: " + ", ".join(f"{n}: {v:.1f} ms/step" for n, v in med.items()), flush=True)
    return {"ms_per_step": {str(n): v for n, v in med.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="prepared dataset (default /tmp/jadata; prepared when missing)")
    p.add_argument("--corpus", default=None, help="the ja-debian-docs directory (default ../shared/data/...)")
    p.add_argument("--first-steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--round-steps", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="smoke run: a corpus slice, 2 rounds of 3 steps")
    p.add_argument("--quick-chars", type=int, default=200_000)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.round_steps, args.first_steps = 2, 3, 2
    args.data = args.data or ("/tmp/jadata-quick" if args.quick else "/tmp/jadata")
    out = args.out or ("/tmp/bench_compile_cpu_quick.json" if args.quick
                       else os.path.join(HERE, "results", "bench_compile_cpu.json"))
    args.max_threads = torch.get_num_threads()
    data = prepare_data(args)
    vocab = Vocabulary.load(data)
    split = load_split(data, "train")
    cfg = ModelConfig(vocab_size=len(vocab), **MODEL)
    result = {"model": {**cfg.to_dict(), "batch": BATCH, "bptt": BPTT}, "torch": torch.__version__,
              "threads": args.max_threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
              "cpu_bf16_feature": amp.cpu_bf16_feature(), "quick": args.quick,
              "date": time.strftime("%Y-%m-%d"), "loadavg_start": os.getloadavg(),
              "rounds": args.rounds, "round_steps": args.round_steps, "first_steps": args.first_steps}
    result["compile"] = bench_compile(args, cfg, split, vocab.eos_id)
    result["threads_bf16"] = bench_threads(args, cfg, split, vocab.eos_id)
    result["loadavg_end"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
