"""The `flowroutes analyze <analysis>` subcommand: parses flags, calls `analyses.run.analyze`, prints a summary.

Imports lightly (heavy modules load inside the handler); bad input raises FlowroutesError for cli.main to print.
"""

from __future__ import annotations

import argparse

ANALYSIS_HELP = {
    "task-heads": "head activation frequency on IOI / greater-than and their contrastive versions (figs. 6, 7)",
    "vectors": "component importance vectors per prediction, t-SNE by POS / subword, k-NN separability (fig. 8)",
    "bottom-to-top": "activation frequency of every head at a small tau, FFN importance per layer, roles (fig. 9a)",
    "head-roles": "previous-token and subword-merging heads, from contributions (sec. 4.3)",
    "domains": "mean component importance per domain and the most domain-specific heads (fig. 10)",
    "svd": "top tokens of each head's W_OV right singular vectors (fig. 11)",
    "periods": "positions whose residual stream passes most layers untouched, e.g. periods acting as BOS (app. D)",
}


def add_parser(subparsers) -> None:
    a = subparsers.add_parser(
        "analyze",
        help="run one of the paper's data-set-scale analyses and write a table, figures and an HTML report",
        description="Analyses: " + "; ".join(f"{k}: {v}" for k, v in ANALYSIS_HELP.items()) + ".",
        epilog="example: flowroutes analyze task-heads --task ioi --n 200 --out ioi-heads/",
    )
    a.add_argument("analysis", help=f"one of: {', '.join(ANALYSIS_HELP)}")
    a.add_argument("--model", default=None, metavar="M",
                   help="hub id (local cache), model folder or .gguf; default: the embedded SmolLM2-135M-Instruct")
    a.add_argument("--data", nargs="+", default=None, metavar="SRC",
                   help="corpus analyses: .txt (one text per line), .jsonl, .parquet files or sample:NAME (english, "
                        "code, russian, italian, spanish, addition, subtraction); DOMAIN=SRC names a domain. "
                        "Default: the shipped samples")
    a.add_argument("--field", default="text", help="JSONL field / Parquet column with the text (default: text)")
    a.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N texts per data source")
    a.add_argument("--out", default="flowroutes-analysis", metavar="DIR",
                   help="output folder: <analysis>.parquet, figures (PNG, SVG), report.html, shards/ (resumable)")
    a.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="tau for the routes (default 0.04 for task-heads, 0.01 for bottom-to-top)")
    a.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "greater-than-00"],
                   help="task-heads: the task (greater-than uses YY=01 as contrast, greater-than-00 uses YY=00)")
    a.add_argument("--n", type=int, default=100, help="task-heads: number of generated examples (default 100)")
    a.add_argument("--seed", type=int, default=0, help="random seed of the generators and t-SNE")
    a.add_argument("--long", choices=["skip", "truncate"], default="skip",
                   help="texts longer than --max-tokens: skip them (counted in the summary) or truncate them")
    a.add_argument("--max-tokens", type=int, default=None, metavar="N", help="default: the model's context length")
    a.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    a.add_argument("--shard-size", type=int, default=32, help="items per resumable shard (default 32)")
    a.add_argument("--no-spacy", action="store_true", help="no spaCy: regex words, POS tags 'X'")
    a.add_argument("--heads", default="", metavar="L.H,...", help="svd: heads to show, e.g. 3.1,5.0 (0-based)")
    a.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="spread shards over a Ray cluster: 'local' starts one on this machine")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    a.set_defaults(func=cmd_analyze)


def _heads(text: str) -> list[tuple[int, int]]:
    from ..errors import FlowroutesError

    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            layer, head = (int(x) for x in part.split("."))
        except ValueError:
            raise FlowroutesError(f"--heads: '{part}' is not LAYER.HEAD (e.g. 3.1)") from None
        out.append((layer, head))
    return out


def cmd_analyze(args) -> int:
    from ..cli import quiet_transformers
    from ..errors import FlowroutesError
    from .run import ANALYSES, Options, analyze

    if args.analysis not in ANALYSES:
        raise FlowroutesError(f"unknown analysis '{args.analysis}': choose one of {', '.join(ANALYSES)}")
    for name in ("n", "batch_size", "shard_size", "limit", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < (2 if name == "max_tokens" else 1):
            raise FlowroutesError(f"--{name.replace('_', '-')} must be a positive integer"
                                  + (" of at least 2" if name == "max_tokens" else "") + f", not {value}")
    quiet_transformers()
    opts = Options(threshold=args.threshold, task=args.task, n=args.n, seed=args.seed, limit=args.limit,
                   text_field=args.field, long=args.long, max_tokens=args.max_tokens, batch_size=args.batch_size,
                   shard_size=args.shard_size, spacy=not args.no_spacy, heads=_heads(args.heads),
                   progress=not args.no_progress, ray=args.ray)
    result = analyze(args.analysis, args.model, data=args.data, out=args.out, options=opts)
    print(f"{result.title}: {result.table.num_rows} rows")
    for key, value in list(result.summary.items())[:12]:
        text = str(value)
        print(f"  {key}: {text[:160] + ' ...' if len(text) > 160 else text}")
    print(f"wrote {args.out}/report.html")
    return 0
