#!/usr/bin/env bash
# Compile-only check of the CUDA kernels (no GPU needed), so CUDA code never
# lands unbuilt: builds qrnn_lm._C with csrc/*.cu against a CUDA build of
# torch in its own venv, into a temporary directory (the working tree and
# the installed CPU build are left alone).  Fails loudly on compile errors.
# Like a new user's build: no CUDA_HOME or TORCH_CUDA_ARCH_LIST unless you set
# them, so setup.py picks the toolkit and its default architectures (all that
# torch and nvcc share, about 4 minutes on 2 cores; TORCH_CUDA_ARCH_LIST=8.0
# takes about half that).  .ci/run does the same build as part of running
# examples/quickstart.sh.
#
#   QRNN_LM_CUDA_VENV   venv to use or create (default .venv-cuda; reused if
#                       it already holds a CUDA torch)
#   TORCH_SPEC          torch to install there (default: torch, as the quickstart)
#   CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS   as usual
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=${QRNN_LM_CUDA_VENV:-.venv-cuda}
TORCH_SPEC=${TORCH_SPEC:-torch}

have_cuda_torch() {
  "$VENV/bin/python" -c "import torch, setuptools, ninja; assert torch.version.cuda" 2>/dev/null
}
if ! have_cuda_torch; then
  echo "cuda_compile_check: creating $VENV with $TORCH_SPEC (a CUDA build)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy ninja setuptools wheel
  have_cuda_torch || { echo "cuda_compile_check: $VENV has no CUDA torch" >&2; exit 1; }
fi

BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT
export PATH="$VENV/bin:$PATH"
export QRNN_LM_FORCE_CUDA=1
export MAX_JOBS=${MAX_JOBS:-2}
"$VENV/bin/python" -c "import torch; print('cuda_compile_check: torch', torch.__version__, 'CUDA', torch.version.cuda, 'arch list', '${TORCH_CUDA_ARCH_LIST:-(default)}')"
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
