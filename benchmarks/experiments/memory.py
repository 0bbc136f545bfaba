"""Experiment 4, memory vs vocabulary: peak memory of one training step
against vocabulary size, each point ``benchmarks/bench_lm.py``'s own memory
measurement in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from experiments.runner import HERE, REPO, child_env
from experiments.store import log
from experiments_config import CUT, MEM_METHODS


def exp_memory(args, profile, store):
    bench = os.path.join(HERE, "bench_lm.py")
    for v in profile["mem_sizes"]:
        for method, _ in MEM_METHODS:
            key = f"{method}-{v}"
            if store.get("memory", key) and key not in args.redo:
                continue
            if method == "full":
                cfg = {"name": key, "vocab": v, "softmax": "full"}
            elif method == "buckets":
                cfg = {"name": key, "vocab": round(CUT * v) + 256 + 1, "softmax": "full"}
            else:
                cfg = {"name": key, "vocab": v, "softmax": "adaptive", "cutoffs": [round(0.08 * v), round(CUT * v)]}
            log(f"memory {key}")
            p = subprocess.run([sys.executable, bench, "_memory_worker", json.dumps(cfg)], capture_output=True,
                               text=True, env=child_env(args.threads), cwd=REPO)
            if p.returncode:
                row = dict(cfg, error=(p.stderr.strip().splitlines() or [str(p.returncode)])[-1])
            else:
                row = json.loads(p.stdout.strip().splitlines()[-1])
            row.update(method=method, types=v)
            store.put("memory", key, row)
