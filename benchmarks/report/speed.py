"""Section 3: kernel and layer speed tables from the benchmark JSON files."""
from __future__ import annotations

import json
import os

from report.tables import _f, _table


def speed_sections(results_dir: str) -> str:
    """Tables of the kernel/layer/LM benchmark JSON files, newest file per kind and device."""
    # benchmarks/results/*.json, and those of GPU runs in benchmarks/results/gpu_*/
    # (paths relative to results_dir)
    files = sorted(f for f in os.listdir(results_dir) if f.endswith(".json") and not f.startswith("experiments"))
    for sub in sorted(os.listdir(results_dir)):
        if sub.startswith("gpu_") and os.path.isdir(os.path.join(results_dir, sub)):
            files += sorted(f"{sub}/{f}" for f in os.listdir(os.path.join(results_dir, sub)) if f.endswith(".json"))
    return "\n".join(fo_pool_tables(results_dir, files) + rnn_layer_tables(results_dir, files)
                     + lm_tables(results_dir, files))


def fo_pool_tables(results_dir: str, files: list) -> list:
    base = os.path.basename
    out = []
    fo = {}
    for f in files:
        if base(f).startswith(("fo_pool_", "bench_fo_pool_")):
            d = json.load(open(os.path.join(results_dir, f)))
            fo[d.get("device", "cpu")] = (f, d)  # names sort by time stamp: keep the newest
    out.append("### fo-pooling kernels (`benchmarks/bench_fo_pool.py`)\n")
    for dev in ("cpu", "cuda"):
        if dev not in fo:
            out.append(f"**{dev.upper()}**: not measured on {'GPU' if dev == 'cuda' else 'CPU'}.\n")
            continue
        f, d = fo[dev]
        out.append(f"**{dev.upper()}** — {d.get('device_name')}, {d.get('date')}, torch {d.get('torch')}, "
                   f"threads {d.get('threads')}, copy bandwidth {d.get('copy_GBs', 0):.1f} GB/s "
                   f"(`benchmarks/results/{f}`)\n")
        rows = []
        for r in d.get("rows", []):
            rows.append([f"{r['T']}×{r['B']}×{r['H']}", r["dtype"], f"{r['kernel_fwd_ms']:.2f}",
                         f"{r['kernel_fwd_GBs']:.1f}", f"{r['kernel_bwd_ms']:.2f}", f"{r['kernel_bwd_GBs']:.1f}",
                         f"{r['kernel_fwdbwd_ms']:.2f}", _f(r.get("unbind_fwdbwd_ms"), "{:.1f}"),
                         _f(r.get("speedup_fwdbwd_vs_unbind"), "{:.1f}×")])
        out.append(_table(["T×B×H", "dtype", "fwd ms", "fwd GB/s", "bwd ms", "bwd GB/s", "fwd+bwd ms",
                           "Python loop fwd+bwd ms", "speed-up"], rows) + "\n")
    if "cuda" not in fo:
        out.append("GPU rows: not measured on GPU (no `fo_pool_cuda_*.json` in benchmarks/results/).\n")
    return out


def rnn_layer_tables(results_dir: str, files: list) -> list:
    base = os.path.basename
    out = ["### One QRNN layer vs one LSTM layer (`benchmarks/bench_rnn.py`)\n"]
    rnn_files = [f for f in files if base(f).startswith("bench_rnn_")]
    for f in rnn_files:
        d = json.load(open(os.path.join(results_dir, f)))
        m = d.get("meta", {})
        out.append(f"**{m.get('device', '?').upper()}** ({m.get('device_name')}), {m.get('date')}, {m.get('dtype')}, "
                   f"hidden {m.get('hidden')}, {m.get('input', 'tensor')} input, threads {m.get('threads')}: "
                   f"`{m.get('command', '')}` (`benchmarks/results/{f}`)\n")
        rows = [[r["batch"], r["length"], f"{r['qrnn_fwd_ms']:.2f}", f"{r['lstm_fwd_ms']:.2f}",
                 f"{r['speedup_fwd']:.2f}×", f"{r['qrnn_fwdbwd_ms']:.2f}", f"{r['lstm_fwdbwd_ms']:.2f}",
                 f"{r['speedup_fwdbwd']:.2f}×", f"{r['qrnn_over_matmul_fwdbwd']:.2f}"] for r in d.get("results", [])]
        out.append(_table(["batch", "length", "QRNN fwd ms", "LSTM fwd ms", "speed-up", "QRNN f+b ms",
                           "LSTM f+b ms", "speed-up", "QRNN / own matmul (f+b)"], rows) + "\n")
    if not any("cuda" in f for f in rnn_files):
        out.append("GPU rows: not measured on GPU (no `bench_rnn_cuda*.json` in benchmarks/results/).\n")
    return out


def lm_tables(results_dir: str, files: list) -> list:
    base = os.path.basename
    out = ["### Whole language model, training step (`benchmarks/bench_lm.py`)\n"]
    lm_files = [f for f in files if base(f).startswith("bench_lm_")]
    for f in lm_files:
        d = json.load(open(os.path.join(results_dir, f)))
        sp = d.get("speed", [])
        if sp:
            s0 = sp[0]
            out.append(f"**{d.get('device')}**, torch {d.get('torch')}: batch {s0['batch']} × bptt {s0['bptt']}, "
                       f"{s0['nlayers']} layers, emsize {s0['emsize']}, nhid {s0['nhid']}, vocabulary {s0['vocab']} "
                       f"(`benchmarks/results/{f}`)\n")
            rows = []
            for soft in ("full", "adaptive"):
                q = next((r for r in sp if r["softmax"] == soft and r["rnn"] == "qrnn"), None)
                l_ = next((r for r in sp if r["softmax"] == soft and r["rnn"] == "lstm"), None)
                if q and l_:
                    rows.append([soft, f"{q['tokens_per_s']:.0f}", f"{l_['tokens_per_s']:.0f}",
                                 f"{q['tokens_per_s'] / l_['tokens_per_s']:.2f}×",
                                 f"{q['params'] / 1e6:.1f}M / {l_['params'] / 1e6:.1f}M"])
            out.append(_table(["softmax", "QRNN-LM tok/s", "LSTM-LM tok/s", "ratio", "params QRNN / LSTM"], rows) + "\n")
        mem = d.get("memory", [])
        if mem:
            rows = [[r["name"], _f(r.get("params"), "{:,}"), _f(r.get("peak_bytes") and r["peak_bytes"] / 2 ** 30,
                                                                "{:.2f}"), r.get("method", r.get("error", ""))]
                    for r in mem]
            out.append(_table(["configuration (emsize = nhid = 650, 2 layers)", "parameters", "peak GiB", "how"],
                              rows) + "\n")
    if not any("cuda" in f for f in lm_files):
        out.append("GPU rows: not measured on GPU (no `bench_lm_cuda.json` in benchmarks/results/).\n")
    return out
