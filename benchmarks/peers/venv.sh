# Sourced by the peers' setup scripts: peer_venv DIR CHECK builds DIR/.venv (git-ignored) apart from the product's
# .venv, torch first and alone (`pip install torch==2.13.0` takes the CPU wheel where one is at hand, whereas a bare
# torch requirement resolved together with the rest may pull a multi-GB CUDA build), then DIR/requirements.txt, and
# runs the Python line CHECK in it.
peer_venv() {
    local dir="$1" check="$2" python="${PYTHON:-python3}"
    if [ ! -x "$dir/.venv/bin/python" ]; then
        "$python" -m venv "$dir/.venv"
    fi
    "$dir/.venv/bin/pip" install --quiet torch==2.13.0
    "$dir/.venv/bin/pip" install --quiet -r "$dir/requirements.txt"
    "$dir/.venv/bin/python" -c "$check"
}
