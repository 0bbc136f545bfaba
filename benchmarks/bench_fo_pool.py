"""Benchmark of the fo-pooling kernels: time, achieved memory bandwidth, and
speed-up over Python loops over time.

For each (T, B, H) and dtype it times
  kernel     qrnn_lm.ops.fo_pool (compiled), forward; its backward op alone;
             forward+backward through autograd
  fused      qrnn_lm.ops.fo_pool_fused with output gate (gates (T, B, 3H))
  reference  qrnn_lm.ops.fo_pool_reference (the pure-PyTorch fallback)
  unbind     the best plain-autograd loop: ``c = torch.lerp(z_t, c, f_t)``
             over ``f.unbind(0)`` (one op per step; its backward allocates no
             full-size gradient per step, unlike indexing f[t])
and reports GB/s against a measured copy bandwidth.  Bytes counted are what
each kernel must read and write once (element size s, n = T*B*H):
  fo_pool forward   3 n s   (read f, z; write c)
  fo_pool backward  6 n s   (read grad_c, f, z, c; write grad_f, grad_z)
  fused forward     5 n s   (read 3 gates; write h, c)
  fused backward    8 n s   (read grad_h, 3 gates, c; write 3 gate grads)
Copy bandwidth: 2 * nbytes / time of ``dst.copy_(src)`` on a large buffer.
Times are the best of --repeats runs (see timeit).  Freed memory is kept
in the heap unless --default-malloc (see below).

    python benchmarks/bench_fo_pool.py                     # CPU, 2 threads
    python benchmarks/bench_fo_pool.py --device cuda
    python benchmarks/bench_fo_pool.py --shapes 128x32x512 --dtypes float32 --repeats 5

Writes benchmarks/results/fo_pool_<device>_<timestamp>.json (or --out).
"""
import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

# Fresh output memory costs a page fault per 4 KiB page, and on VMs that is
# expensive enough to dominate the CPU cases for every contender alike (even
# f.clone()).  glibc returns freed blocks of several MiB to the OS at once,
# so each call's outputs fault again.  By default the benchmark keeps freed
# memory in the heap (mallopt: no mmap, no trimming), as
# a long-running training process would see it; --default-malloc skips that.
# --thp additionally sets torch's THP_MEM_ALLOC_ENABLE=1 (2 MiB pages).
if "--default-malloc" not in sys.argv:
    try:
        import ctypes
        _libc = ctypes.CDLL("libc.so.6")
        _M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
        MALLOC_TUNED = bool(_libc.mallopt(_M_MMAP_MAX, 0)
                            and _libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except OSError:
        MALLOC_TUNED = False
else:
    MALLOC_TUNED = False
if "--thp" in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qrnn_lm import ops  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
DEFAULT_SHAPES = {
    "cpu": ["128x32x512", "64x16x256", "256x64x512"],
    # n = T*B*H >= 32M elements for the bandwidth target, plus a small LM-sized case
    "cuda": ["64x512x1024", "256x128x1024", "1024x32x1024", "128x64x512"],
}
DEFAULT_DTYPES = {"cpu": ["float32", "bfloat16"], "cuda": ["float32", "float16", "bfloat16"]}


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeats, warmup=1, inner=1):
    """Best wall time (s) of fn() over `repeats` runs.

    The minimum, not the median: on a shared machine the other processes
    only ever add time, and the best run is the closest to the kernel's cost.
    On CUDA each run times `inner` calls back to back between two events and
    divides: the host's per-call cost (Python, dispatcher, allocation) then
    overlaps the GPU's work, as in a training loop, instead of adding to a
    0.1 ms kernel.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(times)


def copy_bandwidth(device, nbytes, repeats):
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), device, repeats, warmup=2)
    return 2 * src.numel() * 4 / t / 1e9


def unbind_loop(f, z, c0):
    c, out = c0, []
    for ft, zt in zip(f.unbind(0), z.unbind(0)):
        c = torch.lerp(zt, c, ft)  # = f*c + (1-f)*z
        out.append(c)
    return torch.stack(out), c


def bench_case(device, T, B, H, dtype, repeats, slow_repeats, with_slow, inner=1):
    n = T * B * H
    es = torch.empty((), dtype=dtype).element_size()
    gen = torch.Generator(device=device).manual_seed(0)
    f = torch.rand(T, B, H, device=device, dtype=dtype, generator=gen) * 0.9 + 0.05
    z = torch.randn(T, B, H, device=device, dtype=dtype, generator=gen)
    c0 = torch.zeros(B, H, device=device, dtype=dtype)
    gates = torch.randn(T, B, 3 * H, device=device, dtype=dtype, generator=gen)
    gc = torch.randn(T, B, H, device=device, dtype=dtype, generator=gen)
    row = {"T": T, "B": B, "H": H, "dtype": str(dtype).replace("torch.", ""), "n": n}
    q = torch.ops.qrnn_lm

    def gbs(nbytes, t):
        return nbytes / t / 1e9

    with torch.no_grad():
        t = timeit(lambda: ops.fo_pool(f, z), device, repeats, inner=inner)
        row["kernel_fwd_ms"], row["kernel_fwd_GBs"] = t * 1e3, gbs(3 * n * es, t)
        c, c_n = ops.fo_pool(f, z)
        gcn = torch.zeros_like(c_n)
        t = timeit(lambda: q.fo_pool_backward(gc, gcn, f, z, c, None, None, False), device, repeats,
                   inner=inner)
        row["kernel_bwd_ms"], row["kernel_bwd_GBs"] = t * 1e3, gbs(6 * n * es, t)
        t = timeit(lambda: q.fo_pool_fused(gates, None, None, True, False), device, repeats,
                   inner=inner)
        row["fused_fwd_ms"], row["fused_fwd_GBs"] = t * 1e3, gbs(5 * n * es, t)
        h, cf, c_nf = q.fo_pool_fused(gates, None, None, True, False)
        t = timeit(lambda: q.fo_pool_fused_backward(gc, gcn, gates, cf, None, None, True, False),
                   device, repeats, inner=inner)
        row["fused_bwd_ms"], row["fused_bwd_GBs"] = t * 1e3, gbs(8 * n * es, t)

    # free what the no-grad measurements left behind, so the autograd runs
    # below see the same heap as a training step would
    del c, c_n, gcn, h, cf, c_nf, gates
    fg, zg = f.clone().requires_grad_(True), z.clone().requires_grad_(True)

    def fwd_bwd(fn):
        def run():
            fg.grad = zg.grad = None
            out, _ = fn(fg, zg, c0)
            out.backward(gc)
        return run

    row["kernel_fwdbwd_ms"] = timeit(fwd_bwd(lambda f, z, c0: ops.fo_pool(f, z, c0)),
                                     device, repeats, inner=inner) * 1e3
    if with_slow:
        with torch.no_grad():
            row["reference_fwd_ms"] = timeit(lambda: ops.fo_pool_reference(f, z), device,
                                             slow_repeats) * 1e3
            row["unbind_fwd_ms"] = timeit(lambda: unbind_loop(f, z, c0), device,
                                          slow_repeats) * 1e3
        row["reference_fwdbwd_ms"] = timeit(fwd_bwd(ops.fo_pool_reference), device,
                                            slow_repeats) * 1e3
        row["unbind_fwdbwd_ms"] = timeit(fwd_bwd(unbind_loop), device, slow_repeats) * 1e3
        row["speedup_fwdbwd_vs_unbind"] = row["unbind_fwdbwd_ms"] / row["kernel_fwdbwd_ms"]
        row["speedup_fwdbwd_vs_reference"] = row["reference_fwdbwd_ms"] / row["kernel_fwdbwd_ms"]
    return row


def cpu_has_avx2_fma():
    """Whether /proc/cpuinfo lists avx2 and fma (None where it cannot be read)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return "avx2" in flags and "fma" in flags
    except OSError:
        pass
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--shapes", nargs="*", help="TxBxH, e.g. 128x32x512")
    ap.add_argument("--dtypes", nargs="*", choices=sorted(DTYPES))
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per kernel measurement")
    ap.add_argument("--inner", type=int, default=10,
                    help="CUDA: calls per timed run, back to back (see timeit)")
    ap.add_argument("--slow-repeats", type=int, default=3, help="timed runs of the Python loops")
    ap.add_argument("--no-slow", action="store_true", help="skip the Python-loop baselines")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc malloc's trimming on (outputs page-fault every call)")
    ap.add_argument("--thp", action="store_true",
                    help="set THP_MEM_ALLOC_ENABLE=1 (huge pages for CPU tensors)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/fo_pool_<device>_<time>.json)")
    args = ap.parse_args(argv)

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if device not in ops.compiled_devices():
        print(f"error: no compiled kernel for {device} (compiled: {sorted(ops.compiled_devices())});"
              " build with `pip install --no-build-isolation -e .`", file=sys.stderr)
        return 2
    if device == "cpu":
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (20 if device == "cuda" else 10)
    shapes = [tuple(int(x) for x in s.split("x")) for s in (args.shapes or DEFAULT_SHAPES[device])]
    dtypes = [DTYPES[d] for d in (args.dtypes or DEFAULT_DTYPES[device])]

    copy_bytes = (1 << 30) if device == "cuda" else (256 << 20)
    copy_gbs = copy_bandwidth(device, copy_bytes, repeats)
    if device == "cuda":
        dev_name = torch.cuda.get_device_name()
    else:
        dev_name = platform.processor() or platform.machine()
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    dev_name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    print(f"device: {device} ({dev_name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads() if device == 'cpu' else '-'}")
    print(f"malloc tuned (no trimming): {MALLOC_TUNED}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}")
    print(f"measured copy bandwidth: {copy_gbs:.1f} GB/s ({copy_bytes >> 20} MiB buffer)\n")

    rows = []
    hdr = (f"{'T x B x H':>16} {'dtype':>8} | {'fwd ms':>7} {'GB/s':>6} {'%cp':>4} | "
           f"{'bwd ms':>7} {'GB/s':>6} {'%cp':>4} | {'fused fwd ms':>12} {'%cp':>4} | "
           f"{'fused bwd ms':>12} {'%cp':>4} | "
           f"{'f+b ms':>7} {'ref f+b':>8} {'unbind f+b':>10} {'x unbind':>8}")
    print(hdr)
    print("-" * len(hdr))
    for (T, B, H) in shapes:
        for dtype in dtypes:
            # the Python loops only in float32 (their cost is per-step overhead)
            slow = not args.no_slow and dtype in (torch.float32, torch.float64)
            r = bench_case(device, T, B, H, dtype, repeats, args.slow_repeats, slow,
                           inner=args.inner if device == "cuda" else 1)
            for k in ("kernel_fwd", "kernel_bwd", "fused_fwd", "fused_bwd"):
                r[k + "_pct_copy"] = 100 * r[k + "_GBs"] / copy_gbs
            rows.append(r)
            ref = f"{r['reference_fwdbwd_ms']:8.1f}" if slow else f"{'-':>8}"
            unb = f"{r['unbind_fwdbwd_ms']:10.1f}" if slow else f"{'-':>10}"
            spd = f"{r['speedup_fwdbwd_vs_unbind']:7.1f}x" if slow else f"{'-':>8}"
            print(f"{f'{T}x{B}x{H}':>16} {r['dtype']:>8} | {r['kernel_fwd_ms']:7.2f} "
                  f"{r['kernel_fwd_GBs']:6.1f} {r['kernel_fwd_pct_copy']:4.0f} | "
                  f"{r['kernel_bwd_ms']:7.2f} {r['kernel_bwd_GBs']:6.1f} "
                  f"{r['kernel_bwd_pct_copy']:4.0f} | "
                  f"{r['fused_fwd_ms']:12.2f} {r['fused_fwd_pct_copy']:4.0f} | "
                  f"{r['fused_bwd_ms']:12.2f} {r['fused_bwd_pct_copy']:4.0f} | "
                  f"{r['kernel_fwdbwd_ms']:7.2f} {ref} {unb} {spd}", flush=True)

    result = {
        "benchmark": "fo_pool",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "device_name": dev_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "malloc_tuned": MALLOC_TUNED,
        "cpu_count": os.cpu_count(),
        # which version of the CPU kernels ran: AVX2+FMA where the CPU has both,
        # unless QRNN_LM_CPU_BASELINE=1 forces baseline x86-64
        "cpu_avx2_fma": cpu_has_avx2_fma() if device == "cpu" else None,
        "QRNN_LM_CPU_BASELINE": os.environ.get("QRNN_LM_CPU_BASELINE"),
        "copy_GBs": copy_gbs,
        "repeats": repeats,
        "inner_calls_per_run": args.inner if device == "cuda" else 1,
        "bytes_counted": {"fo_pool_fwd": "3n", "fo_pool_bwd": "6n", "fused_fwd": "5n",
                          "fused_bwd": "8n"},
        "rows": rows,
    }
    out = Path(args.out) if args.out else (
        Path(__file__).resolve().parent / "results" /
        f"fo_pool_{device}_{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
