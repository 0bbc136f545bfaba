#!/usr/bin/env bash
# Everything worth doing on a lent GPU, in one go: build the extension with
# the CUDA kernels, run the tests (the CUDA-parametrised ones run now), and
# every benchmark in benchmarks/, writing logs and JSON to $OUT (default
# benchmarks/results/gpu_<date>).  Each step's failure is logged and the
# script goes on; the exit code is non-zero if any step failed.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#   QUICK=1 ...        fewer repeats / shapes (when device time is short)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
export MAX_JOBS=${MAX_JOBS:-8}
export QRNN_LM_FORCE_CUDA=1
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  # build for the visible GPU only (fast); fall back to the CI list
  TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')" 2>/dev/null || echo "8.0;9.0")
  export TORCH_CUDA_ARCH_LIST
fi
status=0
step() {  # step NAME CMD...: run, log to $OUT/NAME.log, remember failures
  local name=$1; shift
  echo "== $name: $*"
  local t0=$(date +%s)
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "   ok ($(( $(date +%s) - t0 )) s)"
  else
    echo "   FAILED ($(( $(date +%s) - t0 )) s), see $OUT/$name.log"; tail -20 "$OUT/$name.log"
    status=1
  fi
}

{ date -u; nvidia-smi 2>&1 | head -15; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"; } >"$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

step build pip install -v --no-build-isolation -e .
step compiled python3 -c "import qrnn_lm.ops as o; d = o.compiled_devices(); print(d); assert d >= {'cpu', 'cuda'}, d"
step tests_cuda python3 -m pytest -q -rs tests/test_ops.py -k cuda
step tests_all python3 -m pytest -q -x tests
REP=""; [ -n "${QUICK:-}" ] && REP="--repeats 5"
step bench_fo_pool_cuda python3 benchmarks/bench_fo_pool.py --device cuda $REP --out "$OUT/bench_fo_pool_cuda.json"
step bench_fo_pool_cpu python3 benchmarks/bench_fo_pool.py --device cpu --threads "$(nproc)" --shapes 128x32x512 --dtypes float32 --out "$OUT/bench_fo_pool_cpu.json"
for b in bench_rnn bench_lm; do
  if [ -f "benchmarks/$b.py" ]; then
    # other benchmarks' flags: pass --device / --out only where they exist
    help=$(python3 "benchmarks/$b.py" --help 2>&1 || true)
    extra=()
    grep -q -- "--device" <<<"$help" && extra+=(--device cuda)
    grep -q -- "--out" <<<"$help" && extra+=(--out "$OUT/$b.json")
    step "$b" python3 "benchmarks/$b.py" "${extra[@]}"
  fi
done
echo "logs and JSON in $OUT"
exit $status
