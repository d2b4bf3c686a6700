"""Time and peak memory of the plain forward pass vs flowroutes on SmolLM2, at several prompt lengths.

Each measurement runs in its own subprocess (so peak RSS is that measurement's own), all in one run of
this script; the table prints ratios to the forward pass. Usage:
    .venv/bin/python benchmarks/trace_speed.py [--tokens 64 256 1024 2048] [--modes forward trace routes] [--ioi]
Modes: forward = the model's own forward pass (sdpa attention); trace = full trace (every importance);
routes = lazy trace + routes of the last position (tau = 0.04).
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
def run():
    if mode == "forward":
        with torch.no_grad():
            model.model(input_ids=ids_t[None], use_cache=False)
    elif mode == "trace":
        flowroutes.trace(model, input_ids=ids)
    elif mode == "routes":  # lazy: only the rows the top-down walk from the last position reaches
        flowroutes.trace(model, input_ids=ids, lazy=True).routes(0.04)
    elif mode == "ioi50":  # 50 IOI prompts: batched traces, last-position routes, head activation frequency
        from flowroutes.analyses.tasks import ioi
        prompts = [ex.prompt for ex in ioi(50, seed=0)]
        traces = flowroutes.trace(model, prompts, batch_size=25)
        freq = torch.zeros(model.n_layers, model.n_heads)
        for tr in traces:
            for layer, head in tr.routes(0.04).active_heads:
                freq[layer, head] += 1 / len(traces)
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
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--modes", nargs="+", default=["forward", "trace", "routes"])
    parser.add_argument("--ioi", action="store_true", help="also time 50 IOI prompts end to end")
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
    if args.ioi:
        r = measure("ioi50", 0, args.repeats)
        print(r.get("error") or f"50 IOI prompts (batched traces + routes + head frequency): {r['seconds']:.2f} s "
              f"after the model is loaded, peak RSS {r['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
