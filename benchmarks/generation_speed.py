"""Time and memory of explaining a generation on SmolLM2, against the model's own greedy generation with its KV
cache and against one plain forward pass of prompt + answer (issue 20's two targets).

Steps, each timed on its own in one process (warm: a first run of each before timing), the fastest of --repeats:
the model's own `generate` (KV cache, logits), `flowroutes.generate` (that generation with every pass captured,
and its lazy trace), the routes of every answer token, the span's ALTI attribution and its routes-flow
attribution. Prints seconds, the ratio of each to the forward pass and to the model's own generation, and (with
--memory) the peak memory each of the two generations adds to the process, sampled every 2 ms. Usage:
    .venv/bin/python benchmarks/generation_speed.py [--tokens 16] [--repeats 3] [--threads N]
        [--prompt TEXT | --prompt-tokens N] [--memory]
On a machine whose cores other work keeps busy, torch's threads wait for each other on every small product (a
29 x 64 by 64 x 576 product took 12 ms on 2 threads of 2 busy cores, 0.03 ms on 1): --threads 1 measures the code
rather than that wait.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import threading
import time
import warnings
from pathlib import Path


def best(fn, repeats: int) -> tuple[float, object]:
    """(the fastest of `repeats` runs in seconds, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def rss() -> int:
    """The process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_added(fn) -> int:
    """The most resident memory `fn()` added to the process while it ran, sampled every 2 ms (bytes)."""
    import gc

    gc.collect()
    base, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        fn()
    finally:
        done.set()
        watcher.join()
    return max(peak[0], rss()) - base


def english_prompt(tok, n_tokens: int) -> str:
    """A prompt of about `n_tokens` tokens: English passages of the shipped corpus and an instruction, in the
    model's chat template."""
    import flowroutes

    corpus = Path(flowroutes.__file__).parent / "data" / "corpora" / "english.jsonl.gz"
    text = ""
    for line in gzip.open(corpus, "rt", encoding="utf-8"):
        text = (text + "\n\n" + json.loads(line)["text"]) if text else json.loads(line)["text"]
        if len(tok(text)["input_ids"]) >= n_tokens:
            break
    ids = tok(text, add_special_tokens=False)["input_ids"][: max(1, n_tokens - 30)]
    message = tok.decode(ids) + "\n\nSummarize the text above in a few sentences."
    return tok.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16, help="answer tokens to generate (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step; the fastest counts (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and numba (default: their own, one per core)")
    parser.add_argument("--prompt", default="When Mary and John went to the store, John gave a drink to")
    parser.add_argument("--prompt-tokens", type=int, default=None,
                        help="instead of --prompt: an English prompt of about this many tokens (chat template)")
    parser.add_argument("--memory", action="store_true",
                        help="also the peak memory each generation adds, each in a fresh process")
    parser.add_argument("--memory-job", choices=["own", "ours"], help=argparse.SUPPRESS)  # one such process
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
    prompt = english_prompt(model.tokenizer, args.prompt_tokens) if args.prompt_tokens else args.prompt
    prompt_ids = tokenize(model, prompt)
    stops = stop_ids(model, None)
    answer = _generate(model, prompt_ids, args.tokens, False, None, 1.0, stops)[0]  # warm-up, and the answer
    full = torch.cat([prompt_ids, answer])[None]

    def forward():
        with torch.no_grad():
            model.model(input_ids=full, use_cache=False)

    def own_generate():
        return _generate(model, prompt_ids, args.tokens, False, None, 1.0, stops)

    def ours():
        return flowroutes.generate(model, prompt, args.tokens)

    if args.memory_job:  # warm on a short text (numba compiles), then the job itself
        short = tokenize(model, "Hello")
        _generate(model, short, 2, False, None, 1.0, stops)
        flowroutes.generate(model, "Hello", 2).routes([0, 1])
        job = own_generate if args.memory_job == "own" else lambda: ours().routes(list(range(len(answer))))
        print(peak_added(job))
        return
    forward()
    g = ours()  # warm: numba compiles on first use
    g.routes(list(range(g.n_answer)))
    g.attribution(method="alti")
    rows = []
    t_forward, _ = best(forward, args.repeats)
    rows.append(("forward pass of prompt + answer", t_forward))
    t_own, _ = best(own_generate, args.repeats)
    rows.append(("model.generate (KV cache, logits)", t_own))
    t_gen, g = best(ours, args.repeats)
    rows.append(("flowroutes.generate (captured passes, lazy trace)", t_gen))
    # each of the following on a fresh Generation, so that nothing is memoised from an earlier run
    fresh = [ours() for _ in range(args.repeats)]
    it = iter(fresh)
    t_routes, _ = best(lambda: next(it).routes(list(range(g.n_answer))), args.repeats)
    rows.append((f"routes of all {g.n_answer} answer tokens", t_routes))
    it = iter(fresh)
    t_flow, _ = best(lambda: next(it).attribution(method="routes"), args.repeats)
    rows.append(("span attribution, routes (routes walked)", t_flow))
    it = iter(fresh)
    t_alti, _ = best(lambda: next(it).attribution(method="alti"), args.repeats)
    rows.append(("span attribution, alti (after the routes)", t_alti))
    fresh2 = [ours() for _ in range(args.repeats)]
    it = iter(fresh2)
    t_alti_cold, _ = best(lambda: next(it).attribution(method="alti"), args.repeats)
    rows.append(("span attribution, alti (rows not yet computed)", t_alti_cold))
    rows.append(("generate + routes of every token + routes span", t_gen + t_routes + t_flow))
    rows.append(("generate + routes of every token + both spans", t_gen + t_routes + t_flow + t_alti))

    print(f"SmolLM2, prompt of {len(prompt_ids)} tokens, answer of {g.n_answer} ({g.answer_text[:60]!r}), "
          f"{torch.get_num_threads()} threads, best of {args.repeats}; decoded from its own passes: "
          f"{g.trace.meta.get('decoded', False)}")
    print(f"  {'step':<52s} {'seconds':>8s}  {'x forward':>9s}  {'x model.generate':>16s}")
    for name, t in rows:
        print(f"  {name:<52s} {t:8.3f}  {t / t_forward:9.2f}  {t / t_own:16.2f}")
    if args.memory:
        import subprocess
        import sys

        added = {}
        for job in ("own", "ours"):
            cmd = [sys.executable, __file__, "--memory-job", job, "--tokens", str(args.tokens), "--prompt", prompt]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            added[job] = int(out.split()[-1]) / 2**20
        weights = sum(p.numel() * p.element_size() for p in model.model.parameters()) / 2**20
        print(f"  peak memory each adds to a process holding the model ({weights:.0f} MiB of weights), fresh "
              f"processes: model.generate {added['own']:.0f} MiB, flowroutes.generate + routes of every token "
              f"{added['ours']:.0f} MiB; with the weights, {(weights + added['ours']) / (weights + added['own']):.2f}x")


if __name__ == "__main__":
    main()
