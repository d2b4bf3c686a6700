#!/usr/bin/env bash
# One run on a GPU machine: what is installed, the GPU tests, the kernel benchmark; logs go to $OUT.
# Uses the machine's own python3 (torch, triton, numba); the project's transformers pin travels as a wheel in
# .whl/ when present (pip download --no-deps transformers==5.24.0 -d .whl) and is installed offline.
# Usage (from the repository root): bash benchmarks/gpu_check.sh [benchmark arguments]
set -u
OUT=${OUT:-/tmp/flowroutes-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
{
  nvidia-smi -L
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', \
torch.cuda.is_available(), torch.cuda.get_device_name(0))"
  $PY -m pip list 2>/dev/null | grep -i -E "^(torch|triton|transformers|numba|numpy|tokenizers|huggingface.hub) "
} 2>&1 | tee "$OUT/env.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! $PY -c "import transformers, flowroutes; print('transformers', transformers.__version__)" 2>&1 | tee -a "$OUT/env.txt"; then
  echo "the carried transformers does not import here: using the machine's own" | tee -a "$OUT/env.txt"
  export PYTHONPATH="$PWD/src"
fi
timeout 200 $PY -m pytest -q -p no:cacheprovider -rs tests/unit/test_gpu_kernel.py tests/integration/test_gpu_kernel.py 2>&1 | tee "$OUT/test.txt"
timeout 240 $PY benchmarks/gpu_kernel.py --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.txt"
