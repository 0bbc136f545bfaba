"""Language-model benchmarks: training speed QRNN-LM vs LSTM-LM, and peak
memory of one training step with a 250k-word vocabulary.

    python benchmarks/bench_lm.py speed  [--data DIR] [--steps 10] [--device cpu]
    python benchmarks/bench_lm.py memory [--device cpu]
    python benchmarks/bench_lm.py all

speed: the shared Japanese corpus (../shared/data/ja-debian-docs, prepared
with MeCab + POS buckets unless --data is given), stream batching, batch 32 x
bptt 70, QRNN-LM and LSTM-LM of equal size (same emsize / nhid / nlayers),
full and adaptive softmax; tokens/s of whole training steps (forward,
backward, clipping, optimizer) from the median step time, the two models'
steps interleaved so that load from other processes hits both alike.

memory: one SGD training step at batch 32 x bptt 70, emsize = nhid = 650,
2 layers, on synthetic Zipfian ids, for (a) a full softmax over 250k words,
(b) 100k kept words + 256 buckets with a full softmax, (c) an adaptive softmax
over 250k words, (d) adaptive over 100k + buckets.  On CUDA the peak is
torch.cuda.max_memory_allocated; on CPU each configuration runs in its own
subprocess and the peak is its ru_maxrss minus the RSS after setup-free
imports (torch itself), i.e. model + gradients + activations + step.

Results are printed and written to benchmarks/results/bench_lm_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from qrnn_lm.model import ModelConfig, RNNLanguageModel  # noqa: E402
from qrnn_lm.train import train_step  # noqa: E402

SHARED = os.path.join(REPO, "..", "shared", "data", "ja-debian-docs")


# ---------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------
def prepared_corpus(args) -> str:
    if args.data:
        return args.data
    out = os.path.join(args.cache, "ja-debian-docs-mecab-pos")
    if not os.path.isfile(os.path.join(out, "vocab.json")):
        from qrnn_lm import prepare
        rc = prepare.main(["--train", os.path.join(SHARED, "train.txt"), "--valid", os.path.join(SHARED, "valid.txt"),
                           "--test", os.path.join(SHARED, "test.txt"), "--out", out, "--tokenizer", "mecab",
                           "--vocab-size", "20000", "--rare", "pos", "--workers", "2"])
        if rc:
            sys.exit(rc)
    return out


class Trainer:
    """One model's training steps on the stream batches (state carried)."""

    def __init__(self, model, batches, device):
        self.model, self.device = model.train(), device
        self.opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1.2e-6)
        self.it, self.state = batches.epoch(0), None

    def step(self) -> tuple:
        """-> (seconds, target tokens) of one step: forward, backward, clip, SGD
        (train.py's ``train_step``)."""
        _, x, y = next(self.it)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x, y = x.to(self.device), y.to(self.device)
        _, ntok, self.state = train_step(self.model, self.opt, x, y, self.state, clip=0.25)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, ntok


def bench_speed(args, device) -> list:
    """QRNN and LSTM steps interleaved (so load from other processes hits both
    alike); tokens/s from the median step time."""
    from qrnn_lm.data import StreamBatches, load_split
    from qrnn_lm.vocab import Vocabulary
    data = prepared_corpus(args)
    vocab = Vocabulary.load(data)
    split = load_split(data, "train")
    rows = []
    for softmax in ("full", "adaptive"):
        trainers, params = {}, {}
        for rnn in ("qrnn", "lstm"):
            torch.manual_seed(0)
            cfg = ModelConfig(vocab_size=len(vocab), rnn=rnn, emsize=args.emsize, nhid=args.nhid,
                              nlayers=args.nlayers, softmax=softmax, window=2)
            model = RNNLanguageModel(cfg).to(device)
            params[rnn] = sum(p.numel() for p in model.parameters())
            batches = StreamBatches(split.ids, vocab.eos_id, 32, 70, train=True, random_length=False)
            trainers[rnn] = Trainer(model, batches, device)
        times = {"qrnn": [], "lstm": []}
        for i in range(args.warmup + args.steps):
            for rnn, tr in trainers.items():
                sec, ntok = tr.step()
                if i >= args.warmup:
                    times[rnn].append(sec)
        for rnn in ("qrnn", "lstm"):
            tps = ntok / float(np.median(times[rnn]))
            rows.append({"softmax": softmax, "rnn": rnn, "tokens_per_s": tps, "vocab": len(vocab),
                         "params": params[rnn], "emsize": args.emsize, "nhid": args.nhid,
                         "nlayers": args.nlayers, "batch": 32, "bptt": 70, "steps": args.steps,
                         "step_seconds": times[rnn]})
            print(f"  {softmax:8s} {rnn:5s} {tps:10.0f} tok/s  ({params[rnn] / 1e6:.1f}M params)", flush=True)
        q, l_ = rows[-2]["tokens_per_s"], rows[-1]["tokens_per_s"]
        print(f"  {softmax:8s} QRNN-LM / LSTM-LM = {q / l_:.2f}x", flush=True)
    return rows


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------
MEMORY_CONFIGS = [
    {"name": "full softmax, 250k words", "vocab": 250_000, "softmax": "full"},
    {"name": "100k kept + 256 buckets, full softmax", "vocab": 100_000 + 256 + 1, "softmax": "full"},
    {"name": "adaptive softmax, 250k words", "vocab": 250_000, "softmax": "adaptive", "cutoffs": [20000, 100000]},
    {"name": "100k kept + 256 buckets, adaptive", "vocab": 100_000 + 256 + 1, "softmax": "adaptive",
     "cutoffs": [20000, 60000]},
]


def zipf_ids(vocab: int, shape, seed=0) -> torch.Tensor:
    """Ids drawn from P(rank r) proportional to 1/r (a word-frequency law)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    return torch.from_numpy(rng.choice(vocab, size=shape, p=p / p.sum())).long()


def memory_step(cfg: dict, device: torch.device) -> dict:
    """Run one SGD training step of the given configuration; report peak memory."""
    def rss_bytes():  # current RSS from /proc (Linux)
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    base = rss_bytes()
    torch.manual_seed(0)
    mc = ModelConfig(vocab_size=cfg["vocab"], rnn=cfg.get("rnn", "qrnn"), emsize=650, nhid=650, nlayers=2,
                     softmax=cfg["softmax"], cutoffs=cfg.get("cutoffs", []))
    x, y = zipf_ids(cfg["vocab"], (70, 32), 1), zipf_ids(cfg["vocab"], (70, 32), 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = RNNLanguageModel(mc).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1.2e-6)
    train_step(model, opt, x.to(device), y.to(device), clip=0.25)
    out = dict(cfg, params=sum(p.numel() for p in model.parameters()), device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
        out["peak_bytes"] = torch.cuda.max_memory_allocated()
        out["method"] = "torch.cuda.max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["peak_bytes"] = peak - base
        out["method"] = "ru_maxrss of a fresh process minus its RSS after imports"
    return out


def bench_memory(args, device) -> list:
    rows = []
    for cfg in MEMORY_CONFIGS:
        if device.type == "cuda":
            r = memory_step(cfg, device)
        else:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "_memory_worker", json.dumps(cfg)],
                               capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
            if p.returncode:
                print(p.stderr[-2000:], file=sys.stderr)
                r = dict(cfg, error=p.stderr.strip().splitlines()[-1] if p.stderr.strip() else str(p.returncode))
            else:
                r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(r)
        if "peak_bytes" in r:
            print(f"  {r['name']:40s} {r['peak_bytes'] / 2**30:6.2f} GiB  ({r['params'] / 1e6:.0f}M params)", flush=True)
        else:
            print(f"  {r['name']:40s} failed: {r['error']}", flush=True)
    return rows


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_memory_worker"]:
        print(json.dumps(memory_step(json.loads(argv[1]), torch.device("cpu"))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["speed", "memory", "all"])
    p.add_argument("--data", help="a prepared dataset (default: prepare the shared corpus with MeCab)")
    p.add_argument("--cache", default=os.path.join(os.path.expanduser("~/.cache"), "qrnn_lm", "bench"),
                   help="where the prepared corpus is kept")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--emsize", type=int, default=400)
    p.add_argument("--nhid", type=int, default=1150)
    p.add_argument("--nlayers", type=int, default=3)
    args = p.parse_args(argv)
    dev = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                       else "cpu")
    result = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores, "
              f"{torch.get_num_threads()} threads)", "torch": torch.__version__}
    if args.what in ("speed", "all"):
        print(f"training speed, batch 32 x bptt 70, {args.nlayers} layers, emsize {args.emsize}, nhid {args.nhid}:")
        result["speed"] = bench_speed(args, dev)
    if args.what in ("memory", "all"):
        print("peak memory of one training step, batch 32 x bptt 70, emsize = nhid = 650, 2 layers, SGD:")
        result["memory"] = bench_memory(args, dev)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"bench_lm_{dev.type}.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(result)
    with open(path, "w") as f:
        json.dump(old, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
