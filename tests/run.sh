#!/usr/bin/env bash
# Sets up and runs the test suite on a fresh machine (Python >= 3.9 and a C++
# compiler), from the root of a checkout:
#
#   bash tests/run.sh                 # extra arguments go to pytest, e.g. -x -k lm
#
# 1. creates .venv if it is missing (an existing one is reused);
# 2. installs torch: TORCH_SPEC, default the CPU build torch==2.13.0+cpu --
#    from pip's configured sources if they have it, else from PyTorch's CPU
#    index (TORCH_INDEX); TORCH_SPEC=torch takes pip's default build instead
#    (on Linux the CUDA one);
# 3. installs the dependencies, pytest and the serve extra (fastapi, uvicorn;
#    httpx and playwright for its tests -- the browser test uses Debian's
#    chromium when installed, and is skipped with a reason otherwise);
# 4. builds the package as the README says: pip install --no-build-isolation -e .
# 5. runs python -m pytest -q tests; "no test collected" (pytest's exit 5) is a
#    failure, not a pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

if [ ! -x .venv/bin/python ]; then
  echo "== tests/run.sh: creating .venv"
  python3 -m venv .venv
fi
. .venv/bin/activate

echo "== tests/run.sh: torch ($TORCH_SPEC)"
if ! pip install -q "$TORCH_SPEC" 2>/dev/null; then
  echo "   not in pip's configured sources; trying $TORCH_INDEX"
  pip install -q "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX"
fi

echo "== tests/run.sh: dependencies and pytest"
pip install -q numpy sentencepiece fugashi unidic-lite faiss-cpu ninja tqdm mwparserfromhell gensim \
  matplotlib pytest setuptools wheel fastapi uvicorn httpx playwright

echo "== tests/run.sh: build (pip install --no-build-isolation -e .)"
pip install -q --no-build-isolation -e .
python -c "import qrnn_lm.ops as o; print('compiled kernels for:', sorted(o.compiled_devices()))"

echo "== tests/run.sh: python -m pytest -q tests $*"
rc=0
python -m pytest -q tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; the suite did not run." >&2
  exit 1
fi
exit "$rc"
