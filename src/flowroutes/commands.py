"""What every command (the CLI's, the web server's, the analyses', the patching comparison's) does the same way:
quiet transformers, check an --out folder before slow work, load a model, and refuse in one line when an
optional extra is missing. Library code does not import this module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .errors import FlowroutesError

#: what each extra of the package brings, by the modules that show it is installed
EXTRAS = {
    "web": ("fastapi", "uvicorn"),
    "analyses": ("pyarrow", "sklearn", "scipy", "spacy"),
    "ray": ("ray",),
}


def require_extra(extra: str, command: str) -> None:
    """Refuse `command` in one line when a module of the extra `extra` is not installed."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise FlowroutesError(f"{command} needs the [{extra}] extra ({', '.join(missing)} missing): "
                              f"pip install 'flowroutes[{extra}]'")


def quiet_transformers() -> None:
    """Keep transformers' progress bars and warnings off stderr, so errors stay one line."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)


def out_folder(path: str, outputs: tuple[str, ...] = (), force: bool = False) -> Path:
    """The --out folder, refused (before any slow work) when no file can be written there, or when it already holds
    one of the command's `outputs` and --force was not given."""
    from .fileio import writable_folder

    out = writable_folder(path)
    there = [name for name in outputs if (out / name).exists()]
    if there and not force:
        raise FlowroutesError(f"{out} already holds {', '.join(there)}: pass --force to replace them, or another --out")
    return out


def load_for_command(model: str | None):
    """Load --model (None: the default) quietly, saying so when a person is watching."""
    from .models import load_model

    quiet_transformers()
    if sys.stderr.isatty():
        print(f"loading {model or 'the default model (SmolLM2-135M-Instruct)'}...", file=sys.stderr)
    return load_model(model)
