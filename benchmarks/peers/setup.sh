#!/usr/bin/env bash
# Build the peers' environment, benchmarks/peers/.venv (git-ignored), apart from the product's .venv:
# auto-circuit 1.0.1 + TransformerLens 2.9.0 + transformers 4.46.3, all pinned in requirements.txt.
# torch goes first and alone: `pip install torch==2.13.0` takes the CPU wheel where one is at hand, whereas a
# bare torch requirement resolved together with the rest may pull a multi-GB CUDA build.
# Then export the model and the prompts from the product venv, and run the peers:
#   bash benchmarks/peers/setup.sh
#   .venv/bin/python benchmarks/peers/export.py                      # product venv
#   benchmarks/peers/.venv/bin/python benchmarks/peers/run_peers.py  # peers venv
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/venv.sh"
peer_venv "$here" "import auto_circuit, transformer_lens; from transformer_lens import HookedTransformer"
echo "peers venv ready: $here/.venv"
