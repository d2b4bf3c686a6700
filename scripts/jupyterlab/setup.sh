#!/usr/bin/env bash
# Build JupyterLab's environment, scripts/jupyterlab/.venv (git-ignored), apart from the product's .venv: JupyterLab
# and the widget front ends, all pinned in requirements.txt (no torch: the kernel is the product's .venv).
#   bash scripts/jupyterlab/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$here/.venv/bin/jupyter" labextension list 2>&1 | grep -q anywidget \
    || { echo "scripts/jupyterlab/.venv has no anywidget lab extension: rerun this script" >&2; exit 1; }
echo "JupyterLab venv ready: $here/.venv"
