"""Time, in one process, routes for a batch of IOI prompts against head patching and the ACDC-style run.

Same prompts, same model, same batch size; prints seconds, forward passes and the ratios. Usage:
    .venv/bin/python benchmarks/patching_speed.py [--model M] [--n 50] [--batch-size 50] [--sample-heads K]
--sample-heads K times the two patching methods on K heads only and extrapolates them linearly to all L*H heads
(one batched pass per head, plus three fixed passes); the printout says so. Default: every head (slow on CPU).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--n", type=int, default=50, help="IOI prompts (default 50)")
    ap.add_argument("--batch-size", type=int, default=50, help="prompts per forward pass (default 50)")
    ap.add_argument("--sample-heads", type=int, default=None, metavar="K",
                    help="time the patching methods on K heads and extrapolate to every head")
    ap.add_argument("--tau", type=float, default=0.04)
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import numpy as np
    import torch

    import flowroutes
    from flowroutes.commands import quiet_transformers
    from flowroutes.patching import acdc_prune, head_patching, prepare, run_metric
    from flowroutes.tasks import ioi

    quiet_transformers()
    model = flowroutes.load_model(args.model)
    n_layers, n_heads = model.n_layers, model.n_heads
    total_heads = n_layers * n_heads
    examples = ioi(args.n, seed=0)
    batch = prepare(model, examples)
    prompts = [e.prompt for e in batch.examples]
    run_metric(model, batch.rows(0, args.batch_size))  # warm-up of the plain forward path
    threads = torch.get_num_threads()
    flowroutes.trace(model, prompts[:2], batch_size=2)  # warm-up of the trace path (numba compilation)
    torch.set_num_threads(threads)

    def routes() -> None:
        traces = flowroutes.trace(model, prompts, batch_size=args.batch_size)
        freq = np.zeros((n_layers, n_heads))
        for tr in traces:
            for layer, head in tr.routes(args.tau).active_heads:
                freq[layer, head] += 1 / len(traces)

    sample = None
    if args.sample_heads:
        rng = np.random.default_rng(0)
        flat = rng.choice(total_heads, size=min(args.sample_heads, total_heads), replace=False)
        sample = [(int(i // n_heads), int(i % n_heads)) for i in sorted(flat, reverse=True)]
    n_visited = total_heads if sample is None else len(sample)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    threads = torch.get_num_threads()
    t_routes = timed(routes)
    torch.set_num_threads(threads)  # the trace's numba kernels change torch's thread count; patching needs it back
    t_fwd = timed(lambda: [run_metric(model, batch.rows(s, s + args.batch_size))
                           for s in range(0, batch.n, args.batch_size)])
    t_patch = timed(lambda: head_patching(model, batch, args.batch_size, progress=False, heads=sample))
    t_acdc = timed(lambda: acdc_prune(model, batch, 0.05, args.batch_size, progress=False, heads=sample))
    chunks = -(-batch.n // args.batch_size)
    if sample is not None:  # per chunk: 3 fixed passes + one per head; extrapolate the per-head part
        def extrapolate(t):
            fixed = 3 * t_fwd
            return fixed + (t - fixed) * total_heads / n_visited
        t_patch_all, t_acdc_all = extrapolate(t_patch), extrapolate(t_acdc)
    else:
        t_patch_all, t_acdc_all = t_patch, t_acdc
    out = {
        "model": model.name, "prompts": batch.n, "batch_size": args.batch_size, "heads": total_heads,
        "torch_threads": torch.get_num_threads(), "heads_timed": n_visited,
        "seconds": {"routes (batched traces + routes)": round(t_routes, 3), "one forward pass": round(t_fwd, 3),
                    "head patching": round(t_patch_all, 3), "ACDC-style (heads as nodes)": round(t_acdc_all, 3)},
        "forward_passes": {"routes": chunks, "head patching": chunks * (total_heads + 3),
                           "ACDC-style": chunks * (total_heads + 3)},
        "ratio head patching / routes": round(t_patch_all / t_routes, 2),
        "ratio ACDC-style / routes": round(t_acdc_all / t_routes, 2),
        "ratio routes / one forward pass": round(t_routes / t_fwd, 2),
    }
    if sample is not None:
        out["note"] = (f"patching methods timed on {n_visited} of {total_heads} heads and extrapolated linearly "
                       "(every head costs one batched forward pass)")
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
