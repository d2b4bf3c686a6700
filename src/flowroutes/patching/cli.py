"""The `flowroutes compare-patching` subcommand: routes versus activation patching on IOI or greater-than.

Imports lightly (the model and torch load inside the handler); bad input raises FlowroutesError for cli.main.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare-patching",
        help="compare routes with head patching and an ACDC-style run; write figures, numbers and a report",
        description="Trace the task examples and their contrastive versions, run head-level activation patching "
        "and an ACDC-style pruning over heads on the same examples, and report rank agreement, top-k overlap, "
        "faithfulness curves (ablating heads outside the routes / the top-k heads / k random heads) and timings. "
        "Stops with an error when the model cannot do the task (accuracy near chance) unless --force.",
        epilog="example: flowroutes compare-patching --task ioi --n 32 --out ioi-patching/",
    )
    p.add_argument("--task", default="ioi", choices=["ioi", "greater-than", "greater-than-00"],
                   help="the task (greater-than contrasts with YY=01, greater-than-00 with YY=00)")
    p.add_argument("--model", default=None, metavar="M",
                   help="hub id (cached, else downloaded unless HF_HUB_OFFLINE is set), model folder or .gguf; "
                        "default: the embedded SmolLM2-135M-Instruct")
    p.add_argument("--out", default="flowroutes-patching", metavar="DIR",
                   help="output folder: patching*.parquet, summary.json, figures (PNG, SVG), report.html")
    p.add_argument("--n", type=int, default=32, help="number of generated examples (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generators and of the random heads")
    p.add_argument("--threshold", type=float, default=0.04, metavar="T",
                   help="tau of the routes for the activation frequencies (default 0.04)")
    p.add_argument("--thresholds", default="0.01,0.02,0.04,0.08,0.16", metavar="T,...",
                   help="taus of the faithfulness curve over the threshold")
    p.add_argument("--ablation", default="mean", choices=["mean", "zero", "patch"],
                   help="what an ablated head outputs: its data-set mean (default), zeros, or its contrastive output")
    p.add_argument("--acdc-threshold", type=float, default=0.05, metavar="A",
                   help="ACDC-style run: remove a head when the metric moves by less than A x the clean - "
                        "contrastive gap (default 0.05)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    p.add_argument("--min-accuracy", type=float, default=0.6, metavar="A",
                   help="stop when the answer beats the distractor in fewer than this share of examples (default 0.6)")
    p.add_argument("--force", action="store_true", help="compare even when the model cannot do the task")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors")
    p.set_defaults(func=cmd_compare_patching)


def _floats(text: str) -> tuple[float, ...]:
    from ..errors import FlowroutesError

    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise FlowroutesError(f"--thresholds must be comma-separated numbers, e.g. 0.02,0.04, not {text!r}") from None
    if not values:
        raise FlowroutesError("--thresholds is empty: give at least one tau, e.g. 0.04")
    return values


def cmd_compare_patching(args: argparse.Namespace) -> int:
    from .. import checks, formatting, report
    from ..commands import load_for_command, out_folder
    from ..errors import FlowroutesError

    checks.positive_int("--n", args.n)
    checks.positive_int("--batch-size", args.batch_size)
    thresholds = _floats(args.thresholds)
    checks.threshold("--threshold", args.threshold)
    for t in thresholds:
        checks.threshold("--thresholds", t)
    if not 0.0 <= args.acdc_threshold <= 1.0:  # NaN fails too
        raise FlowroutesError(f"--acdc-threshold is a share of the clean - contrastive gap in [0, 1], got "
                              f"{args.acdc_threshold}: try 0.05")
    if not 0.0 <= args.min_accuracy <= 1.0:
        raise FlowroutesError(f"--min-accuracy is a share of examples in [0, 1], got {args.min_accuracy}: try 0.6")
    out = out_folder(args.out)

    from .compare import compare_patching

    model = load_for_command(args.model)
    result = compare_patching(model, args.task, n=args.n, seed=args.seed, tau=args.threshold, thresholds=thresholds,
                              ablation=args.ablation, acdc_threshold=args.acdc_threshold, batch_size=args.batch_size,
                              min_accuracy=args.min_accuracy, force=args.force, progress=not args.no_progress)
    s = result.summary
    if "warning" in s:
        print(s["warning"])
    acc = s["accuracy (answer beats distractor)"]
    print(f"{s['task']} on {s['model']}: {s['examples']} examples, accuracy {acc:.0%}, "
          f"mean metric {formatting.number(s['mean_metric_clean'])} "
          f"(contrastive {formatting.number(s['mean_metric_contrastive'])})")
    shown = {k: v for k, v in s.items() if k.startswith(("spearman", "top-", "ACDC", "share of ACDC"))}
    print("\n".join(formatting.summary_lines(shown)))
    timings = {k.removesuffix("_s").replace("_", " "): report.duration(max(v) if isinstance(v, list) else v)
               for k, v in s["timings_s"].items() if k != "routes_task_runs_s"}
    print("\n".join(formatting.entry("timings", timings)))
    result.write(out)
    print("\n".join(result.wrote_lines(out)))
    return 0
