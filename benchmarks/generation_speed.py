"""Time of explaining a generation on SmolLM2 against one plain forward pass of prompt + answer.

Steps, each timed on its own in one process (warm: a first forward pass and a first generate run before timing):
the model's own generate (KV cache, logits), flowroutes.generate (that plus the lazy trace of prompt + answer[:-1]),
the routes of every answer token, the span's ALTI attribution and its routes-flow attribution. Prints seconds and
the ratio of each to the forward pass (the best of --repeats runs of each). Usage:
    .venv/bin/python benchmarks/generation_speed.py [--tokens 16] [--repeats 3] [--threads N] [--prompt TEXT]
On a machine whose cores other work keeps busy, torch's threads wait for each other on every small product (a
29 x 64 by 64 x 576 product took 12 ms on 2 threads of 2 busy cores, 0.03 ms on 1): --threads 1 measures the code
rather than that wait.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings


def best(fn, repeats: int) -> tuple[float, object]:
    """(the fastest of `repeats` runs in seconds, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16, help="answer tokens to generate (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step; the fastest counts (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and numba (default: their own, one per core)")
    parser.add_argument("--prompt", default="When Mary and John went to the store, John gave a drink to")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:  # before torch and numba start their thread pools (a numba kernel resets torch's count)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    import torch
    from transformers.utils import logging

    import flowroutes
    from flowroutes.generation import _generate, stop_ids
    from flowroutes.trace import tokenize

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    model = flowroutes.load_model()
    prompt_ids = tokenize(model, args.prompt)
    stops = stop_ids(model, None)
    answer = _generate(model, prompt_ids, args.tokens, False, None, 1.0, stops)[0]  # warm-up, and the answer
    full = torch.cat([prompt_ids, answer])[None]

    def forward():
        with torch.no_grad():
            model.model(input_ids=full, use_cache=False)

    forward()
    rows = []
    t_forward, _ = best(forward, args.repeats)
    rows.append(("forward pass of prompt + answer", t_forward))
    rows.append(("model.generate (KV cache, logits)",
                 best(lambda: _generate(model, prompt_ids, args.tokens, False, None, 1.0, stops), args.repeats)[0]))
    t_gen, g = best(lambda: flowroutes.generate(model, args.prompt, args.tokens), args.repeats)
    rows.append(("flowroutes.generate (+ lazy trace)", t_gen))
    # each of the following on a fresh Generation, so that nothing is memoised from an earlier run
    fresh = [flowroutes.generate(model, args.prompt, args.tokens) for _ in range(args.repeats)]
    it = iter(fresh)
    t_routes, _ = best(lambda: next(it).routes(list(range(g.n_answer))), args.repeats)
    rows.append((f"routes of all {g.n_answer} answer tokens", t_routes))
    it = iter(fresh)
    t_alti, _ = best(lambda: next(it).attribution(method="alti"), args.repeats)
    rows.append(("span attribution, alti (after the routes)", t_alti))
    fresh2 = [flowroutes.generate(model, args.prompt, args.tokens) for _ in range(args.repeats)]
    it = iter(fresh2)
    t_alti_cold, _ = best(lambda: next(it).attribution(method="alti"), args.repeats)
    rows.append(("span attribution, alti (rows not yet computed)", t_alti_cold))
    it = iter(fresh)
    t_flow, _ = best(lambda: next(it).attribution(method="routes"), args.repeats)
    rows.append(("span attribution, routes (routes walked)", t_flow))
    rows.append(("generate + all routes + alti + routes span", t_gen + t_routes + t_alti + t_flow))

    print(f"SmolLM2, prompt of {len(prompt_ids)} tokens, answer of {g.n_answer} ({g.answer_text!r}), "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    for name, t in rows:
        print(f"  {name:<48s} {t:8.3f} s   {t / t_forward:7.1f} x forward")


if __name__ == "__main__":
    main()
