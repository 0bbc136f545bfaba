"""Does a C++ error raised inside a CUDA op come back as a Python exception?

Runs each case in a fresh Python process and reports how it ended (an
exception as expected, or a crash with its signal), to tell a fault in the
extension's CUDA code from one in the environment:

  qrnn_cpu        qrnn_lm op on CPU tensors, shapes mismatched (C++ check)
  qrnn_cuda       the same on CUDA tensors
  torch_cuda      torch's own C++ error on a CUDA tensor
  *_after_compile the same after a torch.compile'd function ran on CUDA

    python benchmarks/cuda/cxx_error_probe.py [--no-compile] [--gdb]

--gdb: for each crash, rerun the case under cuda-gdb (or gdb) in batch
mode and print the native backtrace.
"""
import os
import shutil
import subprocess
import sys

PRE_COMPILE = """
@torch.compile(fullgraph=True)
def fn(x):
    return torch.sigmoid(x) * 2
fn(torch.randn(8, device="cuda"))
"""
CASES = {
    "qrnn_cpu": "q.fo_pool(torch.rand(4, 3, 5), torch.rand(4, 2, 5), None, None, False)",
    "qrnn_cuda": "q.fo_pool(torch.rand(4, 3, 5, device='cuda'), torch.rand(4, 2, 5, device='cuda'), "
                 "None, None, False)",
    "torch_cuda": "torch.empty(2, device='cuda').view(3)",
}


def run(name, code, compiled, gdb):
    src = ("import torch\nfrom qrnn_lm import ops\nq = torch.ops.qrnn_lm\n"
           + (PRE_COMPILE if compiled else "")
           + f"try:\n    {code}\nexcept RuntimeError as e:\n    print('RuntimeError:', str(e).splitlines()[0])\n")
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", src], capture_output=True, text=True,
                       timeout=300)
    label = name + ("_after_compile" if compiled else "")
    if p.returncode == 0:
        print(f"{label:28} ok: {p.stdout.strip()[:100]}", flush=True)
        return True
    print(f"{label:28} CRASHED (exit {p.returncode}): {p.stderr.strip().splitlines()[:1]}", flush=True)
    debugger = shutil.which("cuda-gdb") or shutil.which("gdb")
    if gdb and debugger:
        g = subprocess.run([debugger, "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, "-c", src],
                           capture_output=True, text=True, timeout=300)
        frames = [line for line in g.stdout.splitlines() if line.startswith("#") or "SIGSEGV" in line]
        print(f"  native backtrace ({os.path.basename(debugger)}):\n    " + "\n    ".join(frames[:40]), flush=True)
    return False


def main():
    no_compile, gdb = "--no-compile" in sys.argv, "--gdb" in sys.argv
    ok = True
    for compiled in (False,) if no_compile else (False, True):
        for name, code in CASES.items():
            if compiled and name == "qrnn_cpu":
                continue
            ok &= run(name, code, compiled, gdb and name == "qrnn_cpu")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
