"""The `flowroutes` command: a thin layer over the API. Bad input (options included): one line on stderr, exit
code 2, before any model loads.

Tracebacks only with --debug. Output files are written atomically (temp file, fsync, then rename); existing
outputs are replaced only with --force.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import checks, explain_cli, formatting
from .commands import load_for_command, out_folder, require_extra
from .errors import FlowroutesError
from .fileio import write_atomic

#: modules that add subcommands: each has `add_parser(subparsers)`, which calls `set_defaults(func=...)` with a
#: function taking the parsed args and returning an exit code. Each names the extra of the package its commands
#: need and the commands it adds: without that extra, the commands are still listed and say in one line what to
#: install.
COMMAND_MODULES = {
    "flowroutes.analyses.cli": ("analyses", ("analyze", "reproduce")),
    "flowroutes.patching.cli": ("analyses", ("compare-patching",)),
    "flowroutes.web.cli": ("web", ("serve",)),
}
#: the extra of the package each of those commands needs
COMMAND_EXTRAS = {command: extra for extra, commands in COMMAND_MODULES.values() for command in commands}

DEFAULT_PROMPT_HINT = 'flowroutes trace "When Mary and John went to the store, John gave a drink to"'


class ArgumentParser(argparse.ArgumentParser):
    """argparse, whose errors are one line (`flowroutes: error: ...`) and exit code 2, like every other error.
    Subcommand parsers are made of the same class."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"flowroutes: error: {text} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="flowroutes",
        description="Explain a language model's next-token prediction by its information flow routes "
        "(Ferrando & Voita, 2024).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser(
        "trace",
        help="trace one prompt and write its routes (JSON, SVG, PNG)",
        description="Run one forward pass, compute every edge importance (eq. 1), extract the routes of "
        "the prediction at --position, print a summary and write routes.json, routes.svg, routes.png.",
        epilog=f"example: {DEFAULT_PROMPT_HINT} --out routes/",
    )
    t.add_argument("prompt", help="the text whose next-token prediction is explained")
    t.add_argument("--model", default=None, metavar="M",
                   help="a Hugging Face model id (the local cache, else downloaded unless HF_HUB_OFFLINE is set), "
                        "a model folder or a .gguf file; default: the embedded SmolLM2-135M-Instruct")
    t.add_argument("--threshold", type=float, default=0.04, metavar="T",
                   help="minimum edge importance tau kept in the routes, in (0, 1) (default 0.04, as in the paper)")
    t.add_argument("--attention-threshold", type=float, default=None, metavar="T",
                   help="tau for attention sub-edges only (default: --threshold)")
    t.add_argument("--ffn-threshold", type=float, default=None, metavar="T",
                   help="tau for FFN and FFN-residual edges only (default: --threshold)")
    t.add_argument("--no-renormalize", action="store_true",
                   help="keep the raw importances of kept attention sub-edges instead of renormalising them "
                        "to sum to 1 (appendix B.2)")
    t.add_argument("--position", type=int, default=-1, metavar="P",
                   help="token position whose prediction is explained, 0-based; negative counts from the end "
                        "(default -1, the last token)")
    t.add_argument("--no-special-tokens", action="store_true",
                   help="tokenize without the tokenizer's special tokens (e.g. BOS); default: the tokenizer's own "
                        "behaviour")
    t.add_argument("--out", default="flowroutes-out", metavar="DIR",
                   help="folder for routes.json, routes.svg and routes.png (created if missing; "
                        "default ./flowroutes-out)")
    t.add_argument("--top", type=int, default=5, metavar="K", help="how many active heads to list (default 5)")
    t.add_argument("--max-edges", type=int, default=None, metavar="N",
                   help="keep at most N edges, the strongest paths to the prediction whole (the explorer's cut; "
                        "default: every edge of the routes)")
    t.add_argument("--force", action="store_true", help="replace routes.* files already in --out")
    t.add_argument("--format", choices=("flowroutes", "circuit-tracer"), default="flowroutes",
                   help="flowroutes: routes.json, .svg, .png; circuit-tracer: <slug>.json and graph-metadata.json, "
                        "the graph files circuit-tracer's local viewer serves (docs/interop.md)")
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    t.set_defaults(func=cmd_trace)
    c = sub.add_parser("cache", help="list the model cache (dequantized GGUFs); --prune or --clear it",
                       description="List the entries of the model cache ($FLOWROUTES_CACHE, else "
                       "~/.cache/flowroutes): each GGUF's dequantized copy, its size, and whether a model file on "
                       "this machine still uses it.")
    what = c.add_mutually_exclusive_group()
    what.add_argument("--prune", action="store_true", help="remove the entries no model file uses any more")
    what.add_argument("--clear", action="store_true", help="remove every entry (the next load rebuilds its own)")
    c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    c.set_defaults(func=cmd_cache)
    explain_cli.add_parser(sub)  # flowroutes explain: an answer of many tokens (docs/generation.md)
    for name, (extra, commands) in COMMAND_MODULES.items():  # further commands live with their feature
        try:
            importlib.import_module(name).add_parser(sub)
        except ImportError:  # its extra is not installed: main() says which to install
            for command in commands:
                stub = sub.add_parser(command, help=f"(needs the [{extra}] extra)", add_help=False)
                stub.add_argument("rest", nargs=argparse.REMAINDER)
                stub.set_defaults(func=None)
    return parser


def cmd_trace(args: argparse.Namespace) -> int:
    # check what can be checked before the (slow) model load
    checks.prompt(args.prompt)
    checks.threshold("--threshold", args.threshold)
    checks.threshold("--attention-threshold", args.attention_threshold)
    checks.threshold("--ffn-threshold", args.ffn_threshold)
    if args.top < 0:
        raise FlowroutesError(f"--top must be 0 or more, got {args.top}")
    if args.max_edges is not None:
        checks.positive_int("--max-edges", args.max_edges)
    names = ("routes.json", "routes.svg", "routes.png")
    if args.format == "circuit-tracer":
        from .circuit_tracer import slug_for

        names = (f"{slug_for(args.prompt, args.position, args.model or '')}.json",)
    out = out_folder(args.out, names, args.force)
    _check_position_early(args)

    from .figures import render_routes
    from .trace import trace

    model = load_for_command(args.model)
    tr = trace(model, args.prompt, add_special_tokens=False if args.no_special_tokens else None)
    routes = tr.routes(
        args.threshold,
        args.position,
        attention_threshold=args.attention_threshold,
        ffn_threshold=args.ffn_threshold,
        renormalize=not args.no_renormalize,
    )
    cut = None
    if args.max_edges is not None:
        from .routes import strongest

        routes, cut = strongest(routes, args.max_edges)
    pos = routes.position
    from .inspection import token_bytes, token_display

    labels = token_display(model, tr.input_ids)  # characters split over tokens shown whole, cut ones as bytes
    tops = [token_bytes(model, int(i)) for i in tr.top_ids[pos][:5]]
    print(f"model: {tr.model_name}   tokens: {tr.n_tokens}   position: {pos} ({formatting.token(labels[pos])})")
    print("top next tokens:")
    for token, prob in zip(tops, tr.top_probs[pos][:5]):
        print(f"  {prob:7.2%}  {formatting.token(token)}")
    n_att = sum(e.kind == "attention" for e in routes.edges)
    print(f"routes: {len(routes.nodes)} nodes, {len(routes.edges)} edges ({n_att} attention), "
          f"{len(routes.active_heads)} active heads  [tau_attn={routes.attention_threshold:g}, "
          f"tau_ffn={routes.ffn_threshold:g}]")
    if cut:
        print(f"cut to the {cut['kept']} strongest of {cut['edges']} edges (--max-edges {cut['max_edges']})")
    if tr.n_degenerate:
        print(f"note: {tr.n_degenerate} node(s) had all-zero proximities; their parts share importance equally")
    weights = list(routes.head_weights().items())[: args.top]
    if weights:
        print("most important active heads (summed renormalised importance in the routes):")
        for (layer, head), w in weights:
            print(f"  L{layer}H{head}  {w:.3f}")

    if args.format == "circuit-tracer":
        from .circuit_tracer import write_circuit_tracer

        path = write_circuit_tracer(routes, out, names[0][: -len(".json")])
        print(formatting.wrote(path, f"circuit-tracer's graph of position {pos}, {len(routes.edges)} edges"))
        print(formatting.wrote(out / "graph-metadata.json", "circuit-tracer's list of graphs"))
        print(f"to view: circuit-tracer's serve(data_dir=\"{out}\")")
        return 0
    svg, png = (render_routes(routes, fmt, labels, tops[0] if tops else None) for fmt in ("svg", "png"))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "routes.json", routes.to_json().encode())
    write_atomic(out / "routes.svg", svg)
    write_atomic(out / "routes.png", png)
    print(formatting.wrote(out / "routes.json", f"routes of position {pos}, {len(routes.edges)} edges"))
    for name in ("routes.svg", "routes.png"):
        print(formatting.wrote(out / name, "the routes' picture"))
    return 0


def _megabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def cmd_cache(args: argparse.Namespace) -> int:
    import time

    from .models import cache

    root = cache.cache_root()
    if args.clear or args.prune:
        gone = cache.clear() if args.clear else cache.prune()
        print(f"removed {len(gone)} entr{'y' if len(gone) == 1 else 'ies'} "
              f"({_megabytes(sum(e.size for e in gone))}) from {root}")
        return 0
    found = cache.entries()
    print(f"model cache: {root} ({len(found)} entr{'y' if len(found) == 1 else 'ies'}, "
          f"{_megabytes(sum(e.size for e in found))})")
    for e in found:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(f"  {e.state:<10} {_megabytes(e.size):>8}  {e.folder.name}  (last used {when})")
        for source in e.sources:
            print(f"  {'':<10} {'':>8}    from {source}")
    unused = [e for e in found if e.removable]
    if unused:
        print(f"`flowroutes cache --prune` removes the {len(unused)} unused or damaged "
              f"({_megabytes(sum(e.size for e in unused))})")
    return 0


def _check_position_early(args: argparse.Namespace) -> None:
    """--position against the prompt's tokens, before the weights load, when the tokenizer comes cheaply (a model
    folder or a cached GGUF); otherwise the trace checks it, with the same message."""
    from .models.loading import tokenizer_only

    tok = tokenizer_only(args.model)
    if tok is None:
        return
    kwargs = {"add_special_tokens": False} if args.no_special_tokens else {}
    n = len(tok(args.prompt, **kwargs)["input_ids"])
    if not -n <= args.position < n:
        raise FlowroutesError(f"position {args.position} is out of range for a prompt of {n} tokens: use "
                              f"0..{n - 1} or -{n}..-1")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command in COMMAND_EXTRAS:
            require_extra(COMMAND_EXTRAS[args.command], f"flowroutes {args.command}")
        if args.func is None:  # its extra is there, yet its module did not import
            raise FlowroutesError(f"flowroutes {args.command} cannot start: rerun with --debug to see why")
        return args.func(args)
    except FlowroutesError as exc:
        if args.debug:
            raise
        print(f"flowroutes: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flowroutes: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line unless --debug
        if args.debug:
            raise
        print(f"flowroutes: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
