"""Time and peak memory of the plain forward pass vs flowroutes on SmolLM2, at several prompt lengths.

Each measurement runs in its own subprocess (so peak RSS is that measurement's own), all in one run of
this script; the table prints ratios to the forward pass. Usage:
    .venv/bin/python benchmarks/trace_speed.py [--tokens 64 256 1024 2048] [--modes forward trace routes] [--ioi]
        [--corpus 256]
Modes: forward = the model's own forward pass (sdpa attention); trace = full trace (every importance);
routes = lazy trace + routes of the last position (tau = 0.04). --ioi: 50 IOI prompts, routes of the last position
and head frequencies, from full batched traces (ioi50) and from one batched lazy trace (ioi50-lazy), vs the model's own
batched forward pass of the same prompts; --corpus N: batched traces (predictions "all" and "none") of N texts of the
shipped English sample vs the model's own forward pass with logits in the same batches; --loops T: routes asked one
by one (50 IOI prompts of one lazy batch; the last 32 positions of one lazy trace of T tokens) against asked together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from transformers.utils import logging; logging.set_verbosity_error(); logging.disable_progress_bar()
import flowroutes
mode, n_tok = sys.argv[1], int(sys.argv[2])
model = flowroutes.load_model()
text = ("The history of the city begins with a small settlement on the river, where traders met to exchange "
        "salt, grain and wool. Over the centuries it grew into a market town, then a regional capital. ") * 200
ids = model.tokenizer(text)["input_ids"][:n_tok]
ids_t = torch.tensor(ids)
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
def pad(prompts):
    from flowroutes.engine import pad_right
    return pad_right([torch.tensor(model.tokenizer(p)["input_ids"]) for p in prompts], 0)
def run():
    if mode == "forward":
        with torch.no_grad():
            model.model(input_ids=ids_t[None], use_cache=False)
    elif mode == "trace":
        flowroutes.trace(model, input_ids=ids)
    elif mode == "routes":  # lazy: only the rows the top-down walk from the last position reaches
        flowroutes.trace(model, input_ids=ids, lazy=True).routes(0.04)
    elif mode.startswith("ioi50"):  # 50 IOI prompts: last-position routes and head activation frequency
        from flowroutes.tasks import ioi
        prompts = [ex.prompt for ex in ioi(50, seed=0)]
        if mode == "ioi50-forward":  # the model's own batched forward pass (logits at every position)
            with torch.no_grad():
                model.model(input_ids=pad(prompts), use_cache=False)
            return
        if mode == "ioi50-lazy":  # one batched lazy trace, every prompt's routes walked together
            routes = flowroutes.trace(model, prompts, batch_size=50, lazy=True, predictions="last").routes(0.04)
        elif mode == "ioi50-loop":  # the same, as people write it: each prompt asked on its own
            routes = [tr.routes(0.04) for tr in flowroutes.trace(model, prompts, batch_size=50, lazy=True,
                                                                 predictions="last")]
        else:  # full batched traces, then each prompt's routes
            traces = flowroutes.trace(model, prompts, batch_size=50, predictions="last")
            routes = [tr.routes(0.04) for tr in traces]
        freq = torch.zeros(model.n_layers, model.n_heads)
        for r in routes:
            for layer, head in r.active_heads:
                freq[layer, head] += 1 / len(routes)
    elif mode.startswith("positions"):  # routes of the last 32 positions of one prompt of n_tok tokens
        last = list(range(n_tok - 32, n_tok))
        if mode == "positions-forward":
            with torch.no_grad():
                model.model(input_ids=ids_t[None], use_cache=False)
        elif mode == "positions-full":  # a full trace, then 32 walks
            tr = flowroutes.trace(model, input_ids=ids)
            routes = [tr.routes(0.04, position=p) for p in last]
        elif mode == "positions-batched":  # one lazy trace, the 32 walks together
            routes = flowroutes.trace(model, input_ids=ids, lazy=True).routes(0.04, position=last)
        else:  # positions-loop: one lazy trace, asked position by position
            tr = flowroutes.trace(model, input_ids=ids, lazy=True)
            routes = [tr.routes(0.04, position=p) for p in last]
    elif mode.startswith("corpus"):  # the shipped English sample, batches of 8 prompts of similar length
        from flowroutes.engine import pad_right
        lines = [t.strip() for t in open(flowroutes.__file__.rsplit("/", 1)[0] + "/data/english.txt") if t.strip()]
        id_lists = sorted((model.tokenizer(t)["input_ids"] for t in lines[:n_tok]), key=len)
        if mode == "corpus-forward":  # the model's own batched forward pass with logits, the same batches
            with torch.no_grad():
                for k in range(0, len(id_lists), 8):
                    model.model(input_ids=pad_right([torch.tensor(i) for i in id_lists[k:k + 8]], 0),
                                use_cache=False)
        else:
            flowroutes.trace(model, input_ids=id_lists, batch_size=8,
                             predictions="none" if mode == "corpus-trace-none" else "all")
run()  # warm-up
times = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
print(json.dumps({"mode": mode, "tokens": n_tok, "seconds": min(times),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_load_mib": base_rss / 1024}))
"""


def measure(mode: str, n_tok: int, repeats: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, str(n_tok), str(repeats)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return {"mode": mode, "tokens": n_tok, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="*", default=[64, 256, 1024, 2048])
    parser.add_argument("--modes", nargs="+", default=["forward", "trace", "routes"])
    parser.add_argument("--ioi", action="store_true", help="also time 50 IOI prompts end to end")
    parser.add_argument("--loops", type=int, default=0, metavar="T",
                        help="also time routes asked one by one against asked together (the natural loop: 50 IOI "
                             "prompts of one lazy batch; the last 32 positions of one prompt of T tokens)")
    parser.add_argument("--corpus", type=int, default=0, metavar="N",
                        help="also time batched traces of the first N texts of the shipped English sample")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'tokens':>6} {'mode':>8} {'seconds':>9} {'x forward':>9} {'peak RSS MiB':>12} {'+ over forward':>14}")
    for n_tok in args.tokens:
        base = None
        for mode in args.modes:
            r = measure(mode, n_tok, args.repeats)
            if "error" in r:
                print(f"{n_tok:>6} {mode:>8}  failed: {r['error']}")
                continue
            if mode == "forward":
                base = r
            ratio = r["seconds"] / base["seconds"] if base else float("nan")
            extra = r["peak_rss_mib"] - base["peak_rss_mib"] if base else float("nan")
            print(f"{n_tok:>6} {mode:>8} {r['seconds']:>9.3f} {ratio:>9.1f} {r['peak_rss_mib']:>12.0f} {extra:>14.0f}",
                  flush=True)
    batched = []
    if args.ioi:
        batched.append(("50 IOI prompts", 0, ["ioi50-forward", "ioi50", "ioi50-lazy"]))
    if args.loops:
        batched.append(("50 IOI prompts", 0, ["ioi50-forward", "ioi50-lazy", "ioi50-loop"]))
        batched.append((f"32 positions of {args.loops}", args.loops,
                        ["positions-forward", "positions-batched", "positions-loop", "positions-full"]))
    if args.corpus:
        batched.append((f"{args.corpus} English texts", args.corpus,
                        ["corpus-forward", "corpus-trace", "corpus-trace-none"]))
    for title, n, modes in batched:  # ratios to the model's own batched forward pass, measured in this run
        base = None
        for mode in modes:
            r = measure(mode, n, args.repeats)
            if "error" in r:
                print(f"{title} {mode}: failed: {r['error']}")
                continue
            base = base or r["seconds"]
            print(f"{title:>18} {mode:>18} {r['seconds']:>8.2f} s {r['seconds'] / base:>5.2f} x forward, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
