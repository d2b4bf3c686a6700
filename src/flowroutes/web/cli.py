"""`flowroutes serve`: start the local routes explorer. Imports FastAPI, uvicorn and torch only when it runs.

Binds 127.0.0.1 unless told otherwise; the page may load only the models named here or in the config file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import FlowroutesError

CONFIG_KEYS = {"models", "host", "port", "max_prompt_tokens", "max_prompt_chars", "cache_size", "analyses"}


def add_parser(subparsers) -> None:
    s = subparsers.add_parser(
        "serve",
        help="start the local web explorer of routes",
        description="Serve an interactive page (graph, thresholds, click-to-inspect heads, neurons and logit "
        "lens, downloads, contrastive view) for the models given with --model or in --config.",
        epilog="example: flowroutes serve --model path/to/model --port 8050, then open http://127.0.0.1:8050",
    )
    s.add_argument("--model", action="append", default=None, metavar="M",
                   help="a model the page may load (repeatable): a Hugging Face id in the local cache, a model "
                        "folder or a .gguf file; default: the embedded SmolLM2-135M-Instruct")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=None, help="port (default 8050)")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON or TOML file with any of: models (list), analyses (list), host, port, "
                        "max_prompt_tokens, max_prompt_chars, cache_size; command-line options win")
    s.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                   help="longest prompt accepted, in tokens (default 256); longer ones get HTTP 413")
    s.add_argument("--max-prompt-chars", type=int, default=None, metavar="N",
                   help="longest prompt accepted, in characters (default 4000)")
    s.add_argument("--cache-size", type=int, default=None, metavar="N",
                   help="how many traced prompts per model to keep in memory (default 4)")
    s.add_argument("--analyses", action="append", default=None, metavar="DIR",
                   help="a folder written by `flowroutes analyze --out DIR` whose figures the Analyses view shows "
                        "(repeatable)")
    s.add_argument("--no-preload", action="store_true", help="load models on first use instead of at start")
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    s.set_defaults(func=cmd_serve)


def read_config(path: str) -> dict:
    """The config file as a dict (JSON, or TOML when the name ends in .toml)."""
    file = Path(path)
    if not file.is_file():
        raise FlowroutesError(f"config file {path} not found: pass an existing JSON or TOML file")
    try:
        if file.suffix == ".toml":
            import tomllib

            data = tomllib.loads(file.read_text())
        else:
            data = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FlowroutesError(f"config file {path} is not valid {file.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise FlowroutesError(f"config file {path} must hold an object with keys such as 'models'")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise FlowroutesError(f"config file {path} has unknown keys {unknown}: use {sorted(CONFIG_KEYS)}")
    for key in ("models", "analyses"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise FlowroutesError(f"config file {path}: '{key}' must be a list of strings")
    return data


def settings_from_args(args: argparse.Namespace):
    """(Settings, host, port) from the options and the config file."""
    from .store import Settings

    conf = read_config(args.config) if args.config else {}

    def pick(name: str, default):
        value = getattr(args, name)
        return conf.get(name, default) if value is None else value

    models = args.model or conf.get("models") or []
    specs = {m: m for m in models} if models else {"SmolLM2-135M-Instruct": None}
    for key in ("max_prompt_tokens", "max_prompt_chars", "cache_size", "port"):
        value = pick(key, 1)
        if not isinstance(value, int) or value < 1:
            raise FlowroutesError(f"{key.replace('_', '-')} must be a positive integer, got {value!r}")
    analyses = args.analyses or conf.get("analyses") or []
    for folder in analyses:
        if not Path(folder).is_dir():
            raise FlowroutesError(f"analysis folder {folder} not found: pass a folder written by flowroutes analyze")
    settings = Settings(models=specs, max_prompt_tokens=pick("max_prompt_tokens", 256),
                        max_prompt_chars=pick("max_prompt_chars", 4000), cache_size=pick("cache_size", 4),
                        analyses=[str(Path(f).resolve()) for f in analyses])
    return settings, pick("host", "127.0.0.1"), pick("port", 8050)


def cmd_serve(args: argparse.Namespace) -> int:
    settings, host, port = settings_from_args(args)
    import uvicorn

    from ..cli import quiet_transformers
    from .app import create_app

    quiet_transformers()
    app = create_app(settings)
    if not args.no_preload:
        for slot in app.state.store.slots.values():
            print(f"loading {slot.name}...", file=sys.stderr)
            slot.loaded  # noqa: B018 - load now, so the first page view does not wait
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this address can run the models", file=sys.stderr)
    print(f"flowroutes explorer on http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
