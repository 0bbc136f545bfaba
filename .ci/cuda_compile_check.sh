#!/usr/bin/env bash
# Compile-only check of the CUDA kernels (no GPU needed), so CUDA code never
# lands unbuilt: builds qrnn_lm._C with csrc/*.cu against a CUDA build of
# torch in its own venv, into a temporary directory (the working tree and
# the installed CPU build are left alone).  Fails loudly on compile errors.
#
#   QRNN_LM_CUDA_VENV   venv to use or create (default .venv-cuda; reused if
#                       it already holds a CUDA torch)
#   CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS   as usual
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=${QRNN_LM_CUDA_VENV:-.venv-cuda}
TORCH_VERSION=2.14.1

have_cuda_torch() {
  "$VENV/bin/python" -c "import torch, setuptools, ninja; assert torch.version.cuda" 2>/dev/null
}
if ! have_cuda_torch; then
  echo "cuda_compile_check: creating $VENV with torch==$TORCH_VERSION (CUDA build)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy ninja setuptools wheel
  have_cuda_torch || { echo "cuda_compile_check: $VENV has no CUDA torch" >&2; exit 1; }
fi

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
export PATH="$VENV/bin:$PATH"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
export QRNN_LM_FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-2}
"$VENV/bin/python" -c "import torch; print('cuda_compile_check: torch', torch.__version__, 'CUDA', torch.version.cuda, 'arch', '$TORCH_CUDA_ARCH_LIST')"
start=$(date +%s)
if ! "$VENV/bin/python" setup.py -q build_ext --build-temp "$BUILD/temp" --build-lib "$BUILD/lib"; then
  echo "cuda_compile_check: FAILED to compile the CUDA extension" >&2
  exit 1
fi
so=$(ls "$BUILD"/lib/qrnn_lm/_C*.so)
# the .so must contain the CUDA kernels, not just the CPU ones (no `grep -q`
# in a pipe: with pipefail its early exit fails the pipe)
kernels=$( (nm -C "$so" 2>/dev/null || true) | grep -c 'fo_pool_fwd_kernel' || true)
if [ "${kernels:-0}" -eq 0 ]; then
  echo "cuda_compile_check: $so has no CUDA kernels" >&2
  exit 1
fi
echo "cuda_compile_check: OK ($(basename "$so"), $(( $(date +%s) - start )) s)"
