#!/usr/bin/env bash
# Build FlashTrace's environment, benchmarks/peers/flashtrace/.venv (git-ignored): flashtrace 0.1.1 (MIT) and its
# dependencies, all pinned in requirements.txt, apart from the product's .venv (FlashTrace is a peer, not a
# dependency). torch goes first and alone: `pip install torch==2.13.0` takes the CPU wheel where one is at hand,
# whereas a bare torch requirement resolved together with the rest may pull a multi-GB CUDA build.
#   bash benchmarks/peers/flashtrace/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../venv.sh"
peer_venv "$here" "from flashtrace import FlashTrace"
echo "FlashTrace venv ready: $here/.venv"
