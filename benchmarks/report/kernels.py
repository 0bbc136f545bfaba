"""Section 6: the CPU fo-pooling kernels run by run, against the measured
copy bandwidth and the memory floor, and the range of the layer speed-ups
(the JSON files of benchmarks/bench_fo_pool.py and bench_rnn.py)."""
from __future__ import annotations

from report.stored import ELEMENT_BYTES, fo_pool_command, layer_ranges, load_stored, span, stored_files, threads
from report.tables import _f, _rel, _table

# passes over the data that forward (read f, z; write c) and backward (read
# grad_c, f, z, c; write grad_f, grad_z) of fo_pool need at the least
FLOOR_PASSES = 9


def floor_ms(r: dict, copy_gbs: float) -> float:
    """Time of the FLOOR_PASSES passes over the row's n elements at the copy bandwidth."""
    return FLOOR_PASSES * r["n"] * ELEMENT_BYTES[r["dtype"]] / (copy_gbs * 1e9) * 1e3


def _kernel_name(d: dict) -> str:
    if d.get("QRNN_LM_CPU_BASELINE"):
        return "portable (QRNN_LM_CPU_BASELINE)"
    return {True: "AVX2+FMA", False: "portable"}.get(d.get("cpu_avx2_fma"), "not recorded")


def _pct(r: dict, k: str) -> str:
    return f"{r[k + '_ms']:.2f} ({r[k + '_pct_copy']:.0f}%)"


def cpu_kernel_section(results_dir: str) -> list:
    L = ["## 6. CPU fo-pooling kernels, run by run\n"]
    runs = []
    for path in stored_files(results_dir, "fo_pool_cpu_"):
        d, missing = load_stored(path, "python benchmarks/bench_fo_pool.py")
        runs.append((path, d)) if d else L.append(missing)
    if not runs:
        return L + [f"Not measured: no `{_rel(results_dir)}/fo_pool_cpu_*.json`; "
                    "`python benchmarks/bench_fo_pool.py` writes one.\n"] + cpu_layer_lines(results_dir)
    L.append("Every stored CPU run of `benchmarks/bench_fo_pool.py` (section 3 shows the newest). Times are the "
             "best of the run's repeats; in brackets the share of the copy bandwidth measured in the same run "
             "(bytes each kernel must read and write once: forward 3n, backward 6n, fused forward 5n, fused "
             f"backward 8n elements). \"floor\" is {FLOOR_PASSES} passes over the data (forward + backward) at that "
             "copy bandwidth. The fused kernel takes the gates before their activations (tanh/sigmoid inside, "
             "output gate applied). Runs (the command is rebuilt from each JSON's fields):\n")
    for i, (path, d) in enumerate(runs, 1):
        L.append(f"{i}. {d.get('date')}, {d.get('device_name')}, torch {d.get('torch')}, {threads(d.get('threads'))} "
                 f"of {d.get('cpu_count')} CPUs, kernel: {_kernel_name(d)}: `{fo_pool_command(d)}` "
                 f"(`{_rel(path)}`)")
    L.append("")
    rows = []
    for i, (path, d) in enumerate(runs, 1):
        for r in d.get("rows", []):
            floor = floor_ms(r, d["copy_GBs"])
            rows.append([i, f"{d['copy_GBs']:.1f}", f"{r['T']}×{r['B']}×{r['H']}", r["dtype"],
                         _pct(r, "kernel_fwd"), _pct(r, "kernel_bwd"), _pct(r, "fused_fwd"), _pct(r, "fused_bwd"),
                         f"{r['kernel_fwdbwd_ms']:.2f}", f"{floor:.2f}", f"{r['kernel_fwdbwd_ms'] / floor:.2f}×",
                         _f(r.get("speedup_fwdbwd_vs_unbind"), "{:.1f}×"),
                         _f(r.get("speedup_fwdbwd_vs_reference"), "{:.1f}×")])
    L.append(_table(["run", "copy GB/s", "T×B×H", "dtype", "fwd ms", "bwd ms", "fused fwd ms", "fused bwd ms",
                     "fwd+bwd ms (autograd)", "floor ms", "fwd+bwd / floor", "vs `unbind` loop",
                     "vs reference loop"], rows) + "\n")
    L.append("A share above 100% (fwd+bwd / floor below 1×) means the case ran faster than the copy measured in "
             "the same run: its data fit in cache, or the copy was measured while the cores were busy.\n")
    return L + cpu_kernel_findings(runs) + cpu_layer_lines(results_dir)


def cpu_kernel_findings(runs: list) -> list:
    """Across runs: the spread of the same case, and whether the portable kernel was measured."""
    groups = {}
    for _, d in runs:
        for r in d.get("rows", []):
            if "speedup_fwdbwd_vs_unbind" in r:
                key = (f"{r['T']}×{r['B']}×{r['H']}", r["dtype"], d.get("threads"))
                groups.setdefault(key, []).append((r, d["copy_GBs"]))
    L = []
    for (shape, dtype, n_threads), rs in groups.items():
        if len(rs) > 1:
            L.append(f"- {shape} {dtype}, {threads(n_threads)}, {len(rs)} runs: forward+backward "
                     f"{span([r['kernel_fwdbwd_ms'] for r, _ in rs], '{:.2f}')} ms, "
                     f"{span([r['speedup_fwdbwd_vs_unbind'] for r, _ in rs])}× faster than the `unbind` loop, "
                     f"{span([r['speedup_fwdbwd_vs_reference'] for r, _ in rs])}× the reference loop, "
                     f"{span([r['kernel_fwdbwd_ms'] / floor_ms(r, c) for r, c in rs], '{:.2f}')}× the floor.")
    if not any(d.get("QRNN_LM_CPU_BASELINE") or d.get("cpu_avx2_fma") is False for _, d in runs):
        L.append("- No stored run measured the portable (baseline x86-64) kernels; "
                 "`QRNN_LM_CPU_BASELINE=1 python benchmarks/bench_fo_pool.py --threads 1 --shapes 128x8x320 "
                 "--dtypes float32 --no-slow` does.")
    return (["Across runs (the cores were shared with other work, so times vary between runs):\n"] + L + [""]
            if L else [])


def cpu_layer_lines(results_dir: str) -> list:
    paths = stored_files(results_dir, "bench_rnn_cpu")
    if not paths:
        return ["One QRNN layer against one LSTM layer: not measured on CPU; "
                "`python benchmarks/bench_rnn.py --quick --threads 1` writes the JSON.\n"]
    return (["One QRNN layer against one `nn.LSTM` layer on CPU, the range over section 3's tables:\n"]
            + layer_ranges(paths) + [""])
