#!/usr/bin/env bash
# Routes vs EAP vs ACDC on compiled tracr programs: one command, from the repository root.
#   bash benchmarks/tracr/run.sh
# Builds the peers venv if it is missing (benchmarks/peers/setup.sh: tracr-pypi, jax, dm-haiku, auto-circuit,
# TransformerLens 2.9 live only there), then: compile (peers venv) -> routes (product venv, .venv or
# $FLOWROUTES_PYTHON) -> EAP/ACDC (peers venv) -> AUCs into benchmarks/tracr/results.json and docs/tracr.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
peers="$root/benchmarks/peers/.venv/bin/python"
product="${FLOWROUTES_PYTHON:-$root/.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
start=$(date +%s)
if [ ! -x "$peers" ] || ! "$peers" -c "import tracr, auto_circuit" 2>/dev/null; then
    bash "$root/benchmarks/peers/setup.sh"
fi
rm -rf "$here/work"
"$peers" "$here/compile.py" "$@" 2> >(grep -v -i "warning" >&2)
"$product" "$here/routes.py" 2> >(grep -v "Model config" >&2)
"$peers" "$here/peers.py" 2>/dev/null
"$product" "$here/score.py"
echo "benchmarks/tracr: done in $(( $(date +%s) - start )) s"
