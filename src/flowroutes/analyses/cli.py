"""The `flowroutes analyze <analysis>` and `flowroutes reproduce` subcommands: parse and validate flags (before any
model loads), call `analyses.run.analyze` / `analyses.reproduce.reproduce`, print a summary.

Imports lightly (heavy modules load inside the handler); bad input raises FlowroutesError for cli.main to print.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from .base import registry

    specs = registry()
    a = subparsers.add_parser(
        "analyze",
        help="run one of the paper's data-set-scale analyses and write a table, figures and an HTML report",
        description="Analyses: " + "; ".join(f"{k}: {v.help}" for k, v in specs.items()) + ".",
        epilog="example: flowroutes analyze task-heads --task ioi --n 200 --out ioi-heads/",
    )
    a.add_argument("analysis", help=f"one of: {', '.join(specs)}")
    a.add_argument("--model", default=None, metavar="M",
                   help="hub id (cached, else downloaded unless HF_HUB_OFFLINE is set), model folder or .gguf; "
                        "default: the embedded SmolLM2-135M-Instruct")
    a.add_argument("--data", nargs="+", default=None, metavar="SRC",
                   help="corpus analyses: .txt (one text per line), .jsonl, .parquet files, corpus:NAME (general, "
                        "english, code, russian, italian, spanish) or sample:NAME (those and addition, subtraction); "
                        "DOMAIN=SRC names a domain. Default: the shipped corpora")
    a.add_argument("--field", default="text", help="JSONL field / Parquet column with the text (default: text)")
    a.add_argument("--limit", type=int, default=None, metavar="N", help="use at most N texts per data source")
    a.add_argument("--out", default="flowroutes-analysis", metavar="DIR",
                   help="output folder: <analysis>.parquet, figures (PNG, SVG), report.html, shards/ (resumable)")
    a.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="tau (default 0.03 for task-heads as in figs. 6-7; for bottom-to-top 0.01 x 33 / (heads + 1), "
                        "fig. 9a's 0.01 on 32 heads)")
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
    r = subparsers.add_parser(
        "reproduce",
        help="run every analysis of the paper and the patching comparison; one report with a verdict per claim",
        description="Runs the paper's programme on one model (task heads, vectors, bottom-to-top, head roles, "
                    "periods, domains, SVD, routes vs patching) and writes OUT/report.html and OUT/claims.json: a "
                    "row per claim of the paper with the number on this model, its 95% interval and a verdict. "
                    "Resumable: rerun the same command after an interruption.",
        epilog="example: flowroutes reproduce --size quick --out reproduce/",
    )
    r.add_argument("--model", default=None, metavar="M",
                   help="hub id (cached, else downloaded unless HF_HUB_OFFLINE is set), model folder or .gguf; "
                        "default: the embedded SmolLM2-135M-Instruct")
    r.add_argument("--size", default="quick", choices=["quick", "paper"],
                   help="quick: 48 texts per domain, 48 task examples, 16 patching examples (minutes on a CPU); "
                        "paper: every shipped text (the paper used 1000 per domain), 200 task examples, 50 for "
                        "patching")
    r.add_argument("--out", default="flowroutes-reproduce", metavar="DIR", help="output folder (resumable)")
    r.add_argument("--data", nargs="+", default=None, metavar="DOMAIN=SRC",
                   help="replace the default source of these domains (general, english, code, russian, italian, "
                        "spanish, addition, subtraction); SRC: a .txt, .jsonl or .parquet file, sample:NAME, "
                        "corpus:NAME or hf:NAME[:SPLIT][?config=CONFIG&field=FIELD] (a local datasets cache, or a "
                        "dataset folder; field default: text). Default: the shipped corpora")
    r.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass (default 8)")
    r.add_argument("--no-patching", action="store_true", help="skip the routes-vs-patching comparison")
    r.add_argument("--no-progress", action="store_true", help="no progress lines")
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    r.set_defaults(func=cmd_reproduce)


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
    from pathlib import Path

    from .. import checks, formatting
    from ..commands import quiet_transformers
    from ..errors import FlowroutesError
    from .run import Options, analysis, analyze, check_out, check_ray_address

    analysis(args.analysis)  # an unknown name fails here, before anything loads
    check_out(args.out)
    if args.ray is not None:
        check_ray_address(args.ray)
    checks.threshold("--threshold", args.threshold)
    for name in ("n", "batch_size", "shard_size", "limit", "max_tokens"):
        if getattr(args, name) is not None:
            checks.positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_tokens is not None and args.max_tokens < 2:
        raise FlowroutesError(f"--max-tokens must be at least 2 (a token and its next), not {args.max_tokens}")
    quiet_transformers()
    opts = Options(threshold=args.threshold, task=args.task, n=args.n, seed=args.seed, limit=args.limit,
                   text_field=args.field, long=args.long, max_tokens=args.max_tokens, batch_size=args.batch_size,
                   shard_size=args.shard_size, spacy=not args.no_spacy, heads=_heads(args.heads),
                   progress=not args.no_progress, ray=args.ray)
    result = analyze(args.analysis, args.model, data=args.data, out=args.out, options=opts)
    print(f"{result.title}: {result.table.num_rows:,} rows")
    print("\n".join(formatting.summary_lines(result.summary)))
    print("\n".join(result.wrote_lines(Path(args.out))))
    return 0


def cmd_reproduce(args) -> int:
    from pathlib import Path

    from .. import checks
    from ..commands import quiet_transformers
    from .reproduce import claims_text, reproduce, wrote_lines
    from .run import Options, check_out, domain_sources

    checks.positive_int("--batch-size", args.batch_size)
    domain_sources(args.data)  # a bad DOMAIN=SRC fails here, before anything loads
    check_out(args.out)
    quiet_transformers()
    doc = reproduce(args.model, size=args.size, out=args.out, options=Options(batch_size=args.batch_size),
                    progress=not args.no_progress, patching=not args.no_patching, data=args.data)
    print(claims_text(doc))
    print("\n".join(wrote_lines(doc, Path(args.out))))
    return 0
