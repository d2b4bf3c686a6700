"""`flowroutes serve`: start the local routes explorer. Imports FastAPI, uvicorn and torch only when it runs.

Binds 127.0.0.1 unless told otherwise; the page may load only the models named here or in the config file.
Every option and config value is checked before any model loads; a bad one is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from .. import checks
from ..errors import FlowroutesError

#: config keys (JSON / TOML) and the type each must have; command-line options of the same name win
CONFIG_TYPES = {"models": list, "analyses": list, "host": str, "port": int, "max_prompt_tokens": int,
                "max_prompt_chars": int, "cache_size": int, "cache_mb": int, "min_threshold": float, "max_edges": int,
                "max_drawn_edges": int, "max_new_tokens": int, "max_queue": int, "time_limit": int, "no_auth": bool}
CONFIG_KEYS = set(CONFIG_TYPES)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def add_parser(subparsers) -> None:
    s = subparsers.add_parser(
        "serve",
        help="start the local web explorer of routes",
        description="Serve an interactive page (graph, thresholds, click-to-inspect heads, neurons and logit "
        "lens, downloads, contrastive view) for the models given with --model or in --config.",
        epilog="example: flowroutes serve --model path/to/model --port 8050, then open http://127.0.0.1:8050",
    )
    s.add_argument("--model", action="append", default=None, metavar="M",
                   help="a model the page may load (repeatable): a Hugging Face id (the local cache, else downloaded "
                        "unless HF_HUB_OFFLINE is set), a model folder or a .gguf file; default: the embedded "
                        "SmolLM2-135M-Instruct")
    s.add_argument("--host", default=None,
                   help="address to bind (default 127.0.0.1: this machine only); any other address needs the "
                        "access token printed at start (or --no-auth)")
    s.add_argument("--port", type=int, default=None, help="port, 1..65535 (default 8050)")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a JSON or TOML file with any of: models (list), analyses (list), host, port, "
                        "max_prompt_tokens, max_prompt_chars, cache_size, cache_mb, min_threshold, max_edges, "
                        "max_drawn_edges, max_new_tokens, max_queue, no_auth; command-line options win")
    s.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                   help="longest prompt accepted, in tokens (default 256); longer ones get HTTP 413")
    s.add_argument("--max-prompt-chars", type=int, default=None, metavar="N",
                   help="longest prompt accepted, in characters (default 4000)")
    s.add_argument("--cache-size", type=int, default=None, metavar="N",
                   help="how many traced prompts per model to keep in memory (default 4)")
    s.add_argument("--cache-mb", type=int, default=None, metavar="MB",
                   help="memory for cached traces per model, in MB (default 1024); the least recently used "
                        "prompts are dropped beyond it")
    s.add_argument("--min-threshold", type=float, default=None, metavar="T",
                   help="lowest route threshold the page may ask for (default 0.005); lower ones get HTTP 422")
    s.add_argument("--max-edges", type=int, default=None, metavar="N",
                   help="most edges per routes answer (default 5000): beyond it the strongest are sent, and the "
                        "page says so")
    s.add_argument("--max-drawn-edges", type=int, default=None, metavar="N",
                   help="edges the page draws one by one, clickable (default 1500): the others are drawn faint "
                        "in one path, and the page says how many")
    s.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="longest answer the generate mode may ask for, in tokens (default 32); more get HTTP 422")
    s.add_argument("--max-queue", type=int, default=None, metavar="N",
                   help="requests that may wait for one model's forward pass (default 8); more get HTTP 503")
    s.add_argument("--time-limit", type=int, default=None, metavar="S",
                   help="seconds a request may work or wait (default 60): past them it is stopped at its next "
                        "block, its model freed for the next request, and the page told so (HTTP 503)")
    s.add_argument("--no-auth", action="store_true", default=None,
                   help="with a --host other than loopback, serve without the access token (anyone who can reach "
                        "the address can use the models)")
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
    for key, value in data.items():
        kind = CONFIG_TYPES[key]
        ok = (isinstance(value, bool) if kind is bool else  # true / false, never 0 / 1
              isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
              isinstance(value, kind) and not isinstance(value, bool))
        if not ok:
            want = {bool: "true or false", float: "a number", int: "an integer", str: "a string",
                    list: "a list of strings"}[kind]
            raise FlowroutesError(f"config file {path}: '{key}' must be {want}, got {value!r}")
    return data


def _positive(name: str, value, upper: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (upper is not None and value > upper):
        span = f"1..{upper}" if upper is not None else "a positive integer"
        raise FlowroutesError(f"--{name.replace('_', '-')} must be {span}, got {value!r}")
    return value


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def settings_from_args(args: argparse.Namespace):
    """(Settings, host, port) from the options and the config file, all checked (FlowroutesError otherwise)."""
    from .store import LOOPBACK_HOSTS, MAX_CACHE_SIZE, Settings

    conf = read_config(args.config) if args.config else {}

    def pick(name: str, default):
        value = getattr(args, name, None)
        return conf.get(name, default) if value is None else value

    models = args.model or conf.get("models") or []
    specs = {m: m for m in models} if models else {"SmolLM2-135M-Instruct": None}
    numbers = {key: _positive(key, pick(key, default), upper) for key, default, upper in (
        ("max_prompt_tokens", 256, None), ("max_prompt_chars", 4000, None), ("cache_size", 4, MAX_CACHE_SIZE),
        ("cache_mb", 1024, 1 << 30), ("max_edges", 5000, None), ("max_drawn_edges", 1500, None),
        ("max_new_tokens", 32, 1024), ("max_queue", 8, None),
        ("time_limit", 60, 24 * 3600), ("port", 8050, 65535))}
    tau = pick("min_threshold", 0.005)
    checks.threshold("--min-threshold", tau)
    host = pick("host", "127.0.0.1")
    if not isinstance(host, str) or (host.strip() != host):
        raise FlowroutesError(f"--host must be an address or a host name, got {host!r}")
    no_auth = bool(pick("no_auth", False))
    analyses = args.analyses or conf.get("analyses") or []
    for folder in analyses:
        if not Path(folder).is_dir():
            raise FlowroutesError(f"analysis folder {folder} not found: pass a folder written by flowroutes analyze")
    if host in WILDCARD_HOSTS:
        allowed = ["*"]  # any name reaches it: the token is what protects it
    else:
        allowed = list(LOOPBACK_HOSTS) + ([host] if host not in LOOPBACK_HOSTS else [])
    token = None if is_loopback(host) or no_auth else secrets.token_urlsafe(24)
    settings = Settings(models=specs, max_prompt_tokens=numbers["max_prompt_tokens"],
                        max_prompt_chars=numbers["max_prompt_chars"], cache_size=numbers["cache_size"],
                        cache_bytes=numbers["cache_mb"] << 20, min_threshold=float(tau),
                        max_edges=numbers["max_edges"], max_drawn_edges=numbers["max_drawn_edges"],
                        max_new_tokens=numbers["max_new_tokens"], max_queue=numbers["max_queue"],
                        time_limit_s=float(numbers["time_limit"]),
                        analyses=[str(Path(f).resolve()) for f in analyses], allowed_hosts=allowed, token=token)
    return settings, host, numbers["port"]


def cmd_serve(args: argparse.Namespace) -> int:
    settings, host, port = settings_from_args(args)
    from ..commands import quiet_transformers
    from .app import create_app

    quiet_transformers()
    app = create_app(settings)
    if not args.no_preload:
        for slot in app.state.store.slots.values():
            print(f"loading {slot.name}...", file=sys.stderr)
            slot.loaded  # noqa: B018 - load now, so the first page view does not wait
    shown = "127.0.0.1" if host in WILDCARD_HOSTS else f"[{host}]" if ":" in host else host
    if not is_loopback(host):
        who = "anyone who can reach this address" + (" and knows the token" if settings.token else "")
        print(f"warning: serving on {host or 'every address'}: {who} can run the models", file=sys.stderr)
    query = f"/?token={settings.token}" if settings.token else ""
    print(f"flowroutes explorer on http://{shown}:{port}{query}", file=sys.stderr)
    serve(app, host, port, settings.time_limit_s)
    return 0


def serve(app, host: str, port: int, time_limit_s: float | None) -> None:
    """Serve `app` until SIGINT / SIGTERM. Running requests then get the time limit to finish (they stop at their
    next check) ..."""
    import uvicorn

    grace = None if time_limit_s is None else max(1, int(time_limit_s))
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=grace)
    _abandon_stuck_workers()


def _abandon_stuck_workers() -> None:
    """... and a worker thread still busy after that (inside one call that never checks the limit) is not
    waited for: the process ends now instead of at that call's end."""
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        print("stopped with a request still running in a worker thread", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
