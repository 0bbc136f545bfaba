"""Section 7: the GPU runs stored in benchmarks/results/gpu_*/ (written by
benchmarks/gpu_check.sh): the fo-pooling kernels against the copy bandwidth,
the layer speed-ups, one minute of training through torchrun."""
from __future__ import annotations

import os

from report.stored import fo_pool_command, layer_ranges, load_stored, span
from report.tables import REPO, _rel, _table

GPU_CHECK = "OUT=dir bash benchmarks/gpu_check.sh"
# B·H from which one thread per column keeps the GPU busy (~1000 columns per SM on an H200's 132 SMs)
WIDE_COLUMNS = 131072
TORCHRUN = ("torchrun --standalone --nproc_per_node 1 train.py --data DIR --device cuda --amp bf16 --max-minutes 1 "
            "--emsize 400 --nhid 1150 --nlayers 3 --batch_size 64 --bptt 70 --softmax adaptive")


def gpu_folders(results_dir: str) -> list:
    if not os.path.isdir(results_dir):
        return []
    return [os.path.join(results_dir, f) for f in sorted(os.listdir(results_dir))
            if f.startswith("gpu_") and os.path.isdir(os.path.join(results_dir, f))]


def gpu_section(results_dir: str, md_dir: str = os.path.join(REPO, "docs")) -> list:
    """One subsection per ``gpu_*`` folder of ``results_dir``; links are relative to ``md_dir``."""
    L = ["## 7. GPU runs\n"]
    folders = gpu_folders(results_dir)
    if not folders:
        return L + [f"Not measured on a GPU: no `{_rel(results_dir)}/gpu_*/` folder; `{GPU_CHECK}` on a machine "
                    "with a GPU writes the JSON files (copy them into `benchmarks/results/gpu_<device>_<date>/`).\n"]
    for folder in folders:
        readme = os.path.join(folder, "README.md")
        about = "."
        if os.path.exists(readme):
            about = (f"; its [README]({os.path.relpath(readme, md_dir)}) says which kernel code each file measured "
                     "and holds the build and test logs' findings.")
        L.append(f"### `{_rel(folder)}/`\n")
        L.append(f"Written by `{GPU_CHECK}`{about} QRNN-LM against LSTM-LM training tokens/s and peak memory on "
                 "this GPU are in section 3's tables.\n")
        L += gpu_fo_pool(folder) + gpu_layers(folder) + torchrun_lines(folder)
    return L


def gpu_fo_pool(folder: str) -> list:
    path = os.path.join(folder, "bench_fo_pool_cuda.json")
    d, missing = load_stored(path, "python benchmarks/bench_fo_pool.py --device cuda")
    if d is None:
        return ["fo-pooling kernels: " + missing]
    rows = d.get("rows", [])
    L = [f"fo-pooling kernels on {d.get('device_name')}, {d.get('date')}, torch {d.get('torch')}: "
         f"`{fo_pool_command(d)}` (`{_rel(path)}`). Share of the copy bandwidth measured in the same run "
         f"({d.get('copy_GBs', 0):,.0f} GB/s, bytes read + written), counting the bytes each kernel must read and "
         "write once; times in section 3.\n",
         _table(["T×B×H", "columns B·H", "dtype", "forward", "backward", "fused fwd", "fused bwd",
                 "fwd+bwd vs `unbind` loop"],
                [[f"{r['T']}×{r['B']}×{r['H']}", f"{r['B'] * r['H']:,}", r["dtype"]]
                 + [f"{r[k + '_pct_copy']:.0f}%" for k in ("kernel_fwd", "kernel_bwd", "fused_fwd", "fused_bwd")]
                 + [f"{r['speedup_fwdbwd_vs_unbind']:.0f}×" if "speedup_fwdbwd_vs_unbind" in r else "–"]
                 for r in rows]) + "\n"]
    for wide, where in ((True, f"with at least {WIDE_COLUMNS:,} columns"), (False, "with fewer columns")):
        sel = [r for r in rows if (r["B"] * r["H"] >= WIDE_COLUMNS) == wide]
        parts = []
        for dtype in dict.fromkeys(r["dtype"] for r in sel):
            rs = [r for r in sel if r["dtype"] == dtype]
            parts.append(f"{dtype} forward {span([r['kernel_fwd_pct_copy'] for r in rs], '{:.0f}')}%, backward "
                         f"{span([r['kernel_bwd_pct_copy'] for r in rs], '{:.0f}')}%")
        if parts:
            L.append(f"- Shapes {where}: " + "; ".join(parts) + ".")
    slow = [r["speedup_fwdbwd_vs_unbind"] for r in rows if "speedup_fwdbwd_vs_unbind" in r]
    if slow:
        L.append(f"- Forward+backward through autograd: {span(slow, '{:.0f}')}× faster than the `unbind` loop.")
    return L + [""]


def gpu_layers(folder: str) -> list:
    paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
             if f.startswith("bench_rnn_cuda") and f.endswith(".json")]
    if not paths:
        return ["One QRNN layer against cuDNN `nn.LSTM`: not in this folder; "
                "`python benchmarks/bench_rnn.py --device cuda --quick` writes the JSON.\n"]
    return ["One QRNN layer against cuDNN `nn.LSTM`, the range over section 3's tables:\n"] + layer_ranges(paths) + [""]


def torchrun_lines(folder: str) -> list:
    path = os.path.join(folder, "train_torchrun_bf16_results.json")
    d, missing = load_stored(path, TORCHRUN)
    if d is None:
        return ["One minute of training through torchrun: " + missing]
    v, t = d.get("valid", {}), d.get("test", {})
    log = os.path.join(folder, "train_torchrun_bf16.log")
    return [f"One minute of training through torchrun (one process, NCCL, bf16 autocast): `{TORCHRUN}` (as "
            f"`benchmarks/gpu_check.sh` runs it, less its `--save` and logging flags; `{_rel(path)}` is the run's "
            "results.json).\n",
            _table(["steps", "valid ppl", "valid BPC", "test ppl", "test BPC", "test tokens"],
                   [[f"{d.get('step'):,}", f"{v.get('ppl', 0):.2f}", f"{v.get('bpc', 0):.4f}", f"{t.get('ppl', 0):.2f}",
                     f"{t.get('bpc', 0):.4f}", f"{t.get('tokens', 0):,}"]]) + "\n",
            "results.json holds no tokens/s; train.py's log of the run"
            + (f" (`{_rel(log)}`)" if os.path.exists(log) else "") + " prints them per log interval.\n"]
