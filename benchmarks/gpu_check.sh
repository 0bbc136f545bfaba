#!/usr/bin/env bash
# Everything worth doing on a GPU, in one go and in bounded time: build the
# extension with the CUDA kernels, run the CUDA tests (each unroll instance
# included), probe how C++ errors come back, time the kernels standalone
# over unroll factors (benchmarks/cuda/unroll_sweep.cu), run
# the benchmarks on the GPU, and train on the GPU through torchrun (NCCL)
# with bf16 autocast.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh      # about 6 minutes on an H200
#
# Each step has its own time limit; a failed step is logged and the script
# goes on (exit code non-zero if any step failed).  Logs and JSON collect in
# $WORK (default /tmp/qrnn_gpu_check), and after every step they are packed
# into $OUT/gpu_check.tar.gz with a running summary in $OUT/summary.txt, so
# whatever finished survives a kill.
#
#   DATA=dir        a prepared dataset for bench_lm speed and the training
#                   run (default .gpu_data/ja-debian-docs-mecab-pos if
#                   present; those steps are skipped without one)
#   SKIP="a b"      steps to skip (names as in the summary)
#   PROBE_ARGS      flags for cxx_error_probe.py (default --gdb)
#   DEADLINE=s      skip the steps that would start after this many seconds
#                   (default 900); each step's limit is cut to fit it
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_$(date -u +%Y%m%dT%H%M%SZ)}
WORK=${WORK:-/tmp/qrnn_gpu_check}
mkdir -p "$OUT" "$WORK"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
export MAX_JOBS=${MAX_JOBS:-16}
export QRNN_LM_FORCE_CUDA=1
export PYTHONUNBUFFERED=1
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  # build for the visible GPU only (fast); fall back to the CI list
  TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}.{n}')" 2>/dev/null || echo "8.0;9.0")
  export TORCH_CUDA_ARCH_LIST
fi
ARCH=sm_${TORCH_CUDA_ARCH_LIST//./}; ARCH=${ARCH%%;*}
DATA=${DATA:-.gpu_data/ja-debian-docs-mecab-pos}
NVCC=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc; [ -x "$NVCC" ] || NVCC=nvcc
DEADLINE=${DEADLINE:-900}
T0=$(date +%s)
status=0
say() { echo "$*" | tee -a "$SUMMARY"; }
pack() { tar -czf "$OUT/gpu_check.tar.gz.tmp" -C "$WORK" --exclude=./unroll_sweep . && mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"; }
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $WORK/NAME.log
  local name=$1 limit=$2; shift 2
  if [[ " ${SKIP:-} " == *" $name "* ]]; then say "== $name: skipped"; return; fi
  local t0=$(date +%s)
  local left=$(( DEADLINE - (t0 - T0) ))
  if [ "$left" -lt 20 ]; then say "== $name: skipped (past DEADLINE=$DEADLINE s)"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  if timeout -k 5 "$limit" "$@" >"$WORK/$name.log" 2>&1; then
    say "== $name: ok ($(( $(date +%s) - t0 )) s)"
  else
    local rc=$?
    say "== $name: FAILED rc=$rc ($(( $(date +%s) - t0 )) s; limit $limit s): $*"
    tail -25 "$WORK/$name.log" | tee -a "$SUMMARY"
    status=1
  fi
  pack
}

{ date -u; nvidia-smi 2>&1 | head -12
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; uname -r; "$NVCC" --version | tail -2; gcc --version | head -1; ld --version | head -1
  ldd --version | head -1; python3 -VV; } >"$WORK/device.txt" 2>&1
cat "$WORK/device.txt" >>"$SUMMARY"; grep -E "torch|NVIDIA H|Tesla|A100" "$WORK/device.txt" | head -3

# the standalone sweep compiles beside the extension build
( "$NVCC" -O3 -std=c++17 -arch="$ARCH" -Icsrc -Xptxas -v \
    benchmarks/cuda/unroll_sweep.cu -o "$WORK/unroll_sweep" >"$WORK/sweep_build.log" 2>&1 ) &
sweep_pid=$!
step build 300 python3 -m pip install -v --no-deps --no-build-isolation -e .
wait $sweep_pid || say "== sweep_build: FAILED (see sweep_build.log)"
step compiled 60 python3 -c "import qrnn_lm.ops as o; d = o.compiled_devices(); print(d); assert d >= {'cpu', 'cuda'}, d"
# the C++-error test runs on its own (a crash there must not stop the rest)
step tests_cuda 420 python3 -m pytest -q -rs tests/test_ops.py tests/test_rnn.py tests/test_train.py -k "cuda" \
  --deselect "tests/test_ops.py::test_bad_inputs_caught_in_cpp[cuda]"
step bench_fo_pool_cuda 240 python3 benchmarks/bench_fo_pool.py --device cuda --out "$WORK/bench_fo_pool_cuda.json"
step tests_cuda_cxx_errors 120 python3 -m pytest -q "tests/test_ops.py::test_bad_inputs_caught_in_cpp[cuda]"
step cxx_error_probe 200 python3 benchmarks/cuda/cxx_error_probe.py ${PROBE_ARGS:---gdb}
[ -x "$WORK/unroll_sweep" ] && step unroll_sweep 150 "$WORK/unroll_sweep"
step bench_rnn_cuda 240 python3 benchmarks/bench_rnn.py --device cuda --quick --min-time 1 --out "$WORK/bench_rnn_cuda_quick.json"
step bench_rnn_cuda_packed 240 python3 benchmarks/bench_rnn.py --device cuda --quick --packed --min-time 1 --out "$WORK/bench_rnn_cuda_packed_quick.json"
if [ -d "$DATA" ]; then
  step bench_lm_speed 240 python3 benchmarks/bench_lm.py speed --device cuda --data "$DATA" --steps 20
  rm -rf "$WORK/run"
  step train_torchrun_bf16 240 torchrun --standalone --nproc_per_node 1 train.py --data "$DATA" \
    --save "$WORK/run" --device cuda --amp bf16 --max-minutes 1 --no-progress --log-interval 100 \
    --emsize 400 --nhid 1150 --nlayers 3 --batch_size 64 --bptt 70 --softmax adaptive
  rm -f "$WORK"/run/*.pt  # keep the logs and metrics, not the weights
fi
step bench_lm_memory 240 python3 benchmarks/bench_lm.py memory --device cuda
cp benchmarks/results/bench_lm_cuda.json "$WORK/" 2>/dev/null
pack
say "results in $OUT/gpu_check.tar.gz (logs and JSON), summary in $SUMMARY"
exit $status
