"""FlashTrace 0.1.1 and flowroutes side by side: time of explaining a given answer, as a ratio to one forward pass of
prompt + answer measured in the same process, and the agreement of their prompt-token scores (issue 20, item 4).

Four steps, each its own process, one environment each (run.sh runs them in order):
  prepare     (product venv) the SmolLM2 weights as an HF folder (the same float32 tensors flowroutes traces) and
              the cases: per prompt length P a prompt of exactly P tokens (the chat template around English
              man-page passages and "Summarize the text above in a few sentences."), per answer length K the
              model's greedy answer of K tokens (EOS held back until then), written as token ids and text that
              round-trip exactly through the tokenizer, so both tools explain the very same tokens.
  flowroutes  (product venv, never imports flashtrace) times `flowroutes.generate(prompt, target=answer)` (one
              lazily traced pass of prompt + answer[:-1], which also gives the answer's probabilities), the routes
              of every answer token, the span's ALTI and routes-flow attributions; and ALTI span attribution alone.
  flashtrace  (benchmarks/peers/flashtrace/.venv, never imports flowroutes) times FlashTrace's `ifr-span`,
              `flashtrace` (multi-hop, hops=1, no reasoning span) and `ifr-matrix`, teacher-forced on the same
              answer (`target=`), the model loaded with attn_implementation="eager" (FlashTrace reads attention).
  report      (either venv; numpy only) merges both, computes Spearman and top-10 overlap, writes the results
              JSON and prints the markdown table.

Each timed job runs --repeats times (fresh objects each time, nothing memoised across repeats), interleaved with
the forward pass it is divided by; the medians count. Wall and process CPU seconds are both recorded.

Which positions: flowroutes explains answer token k at the position that predicts it, P + k - 1; FlashTrace's
answer token k is its own position P + k (FlashTrace appends EOS to a target, so its K answer positions are
P .. P + K - 1). Agreement is reported two ways: "same answer" (each tool's own attribution of the K-token answer:
flowroutes span 0:K, FlashTrace output_span (0, K-1)) and "same positions" (the nodes P .. P + K - 2 in both:
flowroutes span 1:K, FlashTrace output_span (0, K-2)).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / "work"  # git-ignored, shared with benchmarks/peers/export.py
INSTRUCTION = "\n\nSummarize the text above in a few sentences."


def clocked(fn, *args, **kwargs):
    """(wall seconds, CPU seconds of this process, result) of one call of fn(*args, **kwargs)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0, out


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "loadavg_at_start": list(os.getloadavg())}


def forward_fn(model, ids):
    import torch

    full = torch.as_tensor(ids, dtype=torch.long)[None]

    def forward():
        with torch.no_grad():
            return model(input_ids=full, use_cache=False).logits

    return forward


def summarise(samples: list[tuple[float, float]]) -> dict:
    walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
    return {"wall_s": [round(w, 4) for w in walls], "cpu_s": [round(c, 4) for c in cpus],
            "median_wall_s": round(statistics.median(walls), 4), "median_cpu_s": round(statistics.median(cpus), 4)}


# --- prepare (product venv) -------------------------------------------------------------------------------------
def prepare(args) -> None:
    import torch

    import flowroutes
    from flowroutes.commands import quiet_transformers

    quiet_transformers()
    loaded = flowroutes.load_model()
    tok = loaded.tokenizer
    sys.path.insert(0, str(HERE.parent))
    from weights import hf_folder  # benchmarks/peers/weights.py

    folder = hf_folder(loaded, WORK / "smollm2")
    corpus = Path(flowroutes.__file__).parent / "data" / "corpora" / "english.jsonl.gz"
    records = [json.loads(line)["text"] for line in gzip.open(corpus, "rt", encoding="utf-8")]
    random.Random(0).shuffle(records)
    eos = tok.eos_token_id

    def chat(text: str) -> str:  # the instruct model's own template, the assistant's turn opened
        return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)

    overhead = len(tok(chat(INSTRUCTION), add_special_tokens=False)["input_ids"])
    skip = {tuple(map(int, s.split("x"))) for s in args.skip}
    cases = []
    for n_prompt in args.prompts:
        wanted = [k for k in args.answers if (n_prompt, k) not in skip]
        if not wanted:
            continue
        passage, ids = "", []
        for text in records:  # whole passages until the prompt is long enough
            passage = (passage + "\n\n" + text) if passage else text
            ids = tok(passage, add_special_tokens=False)["input_ids"]
            if len(ids) + overhead >= n_prompt:
                break
        for cut in range(n_prompt - overhead + 2, 0, -1):  # cut the passage to P tokens in all, round trip exact
            prompt = chat(tok.decode(ids[:cut]) + INSTRUCTION)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            if len(p_ids) == n_prompt and tok(prompt)["input_ids"] == p_ids:
                break
        else:
            raise SystemExit(f"no prompt of exactly {n_prompt} tokens")
        longest = max(wanted)
        with torch.no_grad():  # greedy, EOS forbidden until the longest answer is out
            out = loaded.model.generate(torch.as_tensor([p_ids]), max_new_tokens=longest, min_new_tokens=longest,
                                        do_sample=False, pad_token_id=eos)
        greedy = out[0, n_prompt:].tolist()
        for n_answer in wanted:
            answer, text = round_trip(tok, greedy, n_answer)
            cases.append({"n_prompt": n_prompt, "n_answer": n_answer, "prompt": prompt, "prompt_ids": p_ids,
                          "answer": text, "answer_ids": answer, "answer_is_greedy": answer == greedy[:n_answer],
                          "eos_id": eos})
    skipped = [{"n_prompt": p, "n_answer": k, "why": args.skip_why} for p, k in sorted(skip)]
    Path(args.cases).write_text(json.dumps({"model": loaded.name, "model_folder": str(folder), "cases": cases,
                                            "not_run": skipped}, indent=1) + "\n")
    print(f"cases: {args.cases} ({len(cases)} to run, {len(skipped)} not run); model folder: {folder}")


def round_trip(tok, greedy: list[int], n: int) -> tuple[list[int], str]:
    """n answer ids and their text, such that the text tokenizes back to the ids, and text + EOS to ids + [EOS]
    (FlashTrace takes a target as text and appends EOS): the greedy ids when they round-trip, else the first n ids
    of the greedy text re-tokenized (a cut inside a word or a run of newlines may not round-trip)."""
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    for extra in range(0, 16):
        ids = greedy[:n] if extra == 0 else enc(tok.decode(greedy[: n + extra]))[:n]
        text = tok.decode(ids)
        if len(ids) == n and enc(text) == ids and enc(text + tok.eos_token) == ids + [tok.eos_token_id]:
            return ids, text
    raise SystemExit(f"no answer of {n} tokens that round-trips through the tokenizer")


# --- flowroutes (product venv) ----------------------------------------------------------------------------------
def run_flowroutes(args) -> None:
    import flowroutes
    from flowroutes.commands import quiet_transformers
    from flowroutes.generation import Generation

    quiet_transformers()
    spec = json.loads(Path(args.cases).read_text())
    loaded = flowroutes.load_model()

    def make(case) -> Generation:  # the public call: one lazily traced pass gives the trace and the probabilities
        g = flowroutes.generate(loaded, case["prompt"], target=case["answer"])
        assert g.prompt_ids.tolist() == case["prompt_ids"] and g.answer_ids.tolist() == case["answer_ids"]
        return g

    out = {"tool": "flowroutes", "version": flowroutes.__version__, "model": loaded.name, "tau": args.tau,
           "machine": machine(), "repeats": args.repeats, "cells": []}
    first = True
    for case in spec["cases"]:
        K = case["n_answer"]
        forward = forward_fn(loaded.model, case["prompt_ids"] + case["answer_ids"])
        forward()  # warm
        if first:  # warm every code path once (numba compiles on first use)
            g = make(case)
            g.routes(list(range(K)), args.tau)
            g.attribution(method="alti"), g.attribution(method="routes", tau=args.tau)
            first = False
        samples = {name: [] for name in ("forward", "trace", "routes_all", "alti_span", "routes_span", "total",
                                         "total_routes",
                                         "alti_span_alone")}
        for _ in range(args.repeats):
            samples["forward"].append(clocked(forward)[:2])
            w0, c0, g = clocked(make, case)
            w1, c1, _ = clocked(g.routes, list(range(K)), args.tau)
            w2, c2, alti = clocked(g.attribution, method="alti")
            w3, c3, flow = clocked(g.attribution, method="routes", tau=args.tau)
            samples["trace"].append((w0, c0))
            samples["routes_all"].append((w1, c1))
            samples["alti_span"].append((w2, c2))
            samples["routes_span"].append((w3, c3))
            samples["total"].append((w0 + w1 + w2 + w3, c0 + c1 + c2 + c3))
            samples["total_routes"].append((w0 + w1 + w3, c0 + c1 + c3))  # the routes-flow span, without ALTI
            w4, c4, _ = clocked(lambda c=case: make(c).attribution(method="alti"))
            samples["alti_span_alone"].append((w4, c4))
        logits = forward()[0, -1]
        cell = {k: case[k] for k in ("n_prompt", "n_answer")}
        cell["times"] = {name: summarise(s) for name, s in samples.items()}
        cell["scores"] = {
            "alti_answer": alti.tolist(), "routes_answer": flow.tolist(),
            "alti_positions": g.matrix("alti")[1:K].mean(axis=0).tolist(),
            "routes_positions": g.matrix("routes", args.tau)[1:K].mean(axis=0).tolist(),
            "reached": g.reached(args.tau).tolist()}
        cell["last_logits_check"] = {"sum": float(logits.sum()), "max": float(logits.max())}
        out["cells"].append(cell)
        print(f"flowroutes P={case['n_prompt']} K={K}: forward {cell['times']['forward']['median_wall_s']} s, "
              f"total {cell['times']['total']['median_wall_s']} s", flush=True)
    out["machine"]["loadavg_at_end"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(out) + "\n")


# --- flashtrace (peer venv) -------------------------------------------------------------------------------------
def run_flashtrace(args) -> None:
    import torch
    import transformers
    from flashtrace import FlashTrace
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    from importlib.metadata import version

    spec = json.loads(Path(args.cases).read_text())
    folder = spec["model_folder"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tracer = FlashTrace(model, tok)
    out = {"tool": "flashtrace", "version": version("flashtrace"), "transformers": transformers.__version__,
           "machine": machine(), "repeats": args.repeats, "cells": []}
    methods = ("ifr-span", "flashtrace", "ifr-matrix")
    first = True
    for case in spec["cases"]:
        K = case["n_answer"]
        assert tok(case["prompt"], add_special_tokens=False)["input_ids"] == case["prompt_ids"]
        assert tok(case["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"] == case["answer_ids"] + [
            case["eos_id"]]

        def job(method, span=(0, K - 1), case=case):
            return lambda: tracer.trace(prompt=case["prompt"], target=case["answer"], output_span=span, method=method)

        forward = forward_fn(model, case["prompt_ids"] + case["answer_ids"])
        forward()
        if first:
            for m in methods:
                job(m)()
            first = False
        samples = {name: [] for name in ("forward",) + methods}
        results = {}
        for _ in range(args.repeats):
            samples["forward"].append(clocked(forward)[:2])
            for m in methods:
                w, c, results[m] = clocked(job(m))
                samples[m].append((w, c))
        res = results["ifr-span"]
        assert len(res.prompt_tokens) == case["n_prompt"] and len(res.generation_tokens) == K + 1
        positions = job("ifr-span", (0, K - 2))() if K > 1 else res
        logits = forward()[0, -1]
        cell = {k: case[k] for k in ("n_prompt", "n_answer")}
        cell["times"] = {name: summarise(s) for name, s in samples.items()}
        cell["scores"] = {"ifr_span_answer": list(res.scores), "ifr_span_positions": list(positions.scores),
                          "flashtrace_answer": list(results["flashtrace"].scores),
                          "ifr_matrix_answer": list(results["ifr-matrix"].scores)}
        cell["last_logits_check"] = {"sum": float(logits.sum()), "max": float(logits.max())}
        out["cells"].append(cell)
        print(f"flashtrace P={case['n_prompt']} K={K}: forward {cell['times']['forward']['median_wall_s']} s, "
              + ", ".join(f"{m} {cell['times'][m]['median_wall_s']} s" for m in methods), flush=True)
    out["machine"]["loadavg_at_end"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(out) + "\n")


# --- report (numpy only) ----------------------------------------------------------------------------------------
def ranks(x):
    """Ranks from 1, ties given their average rank."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        r[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b) -> float:
    import numpy as np

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den else float("nan")


def top_overlap(a, b, n: int = 10) -> int:
    import numpy as np

    top = lambda x: set(np.argsort(-np.asarray(x, dtype=float), kind="mergesort")[:n].tolist())  # noqa: E731
    return len(top(a) & top(b))


def agreement(a, b) -> dict:
    """Spearman over all prompt tokens, and over all but the first (the attention sink that both put first), and
    the top-10 overlap (of 10)."""
    return {"spearman": round(spearman(a, b), 3), "spearman_without_first": round(spearman(a[1:], b[1:]), 3),
            "top10": top_overlap(a, b), "top10_without_first": top_overlap(a[1:], b[1:])}


def report(args) -> None:
    ours = json.loads(Path(args.ours).read_text())
    peer = json.loads(Path(args.peer).read_text())
    spec = json.loads(Path(args.cases).read_text())
    theirs = {(c["n_prompt"], c["n_answer"]): c for c in peer["cells"]}
    cells = []
    for o in ours["cells"]:
        f = theirs[(o["n_prompt"], o["n_answer"])]
        fo, ff = o["times"]["forward"]["median_wall_s"], f["times"]["forward"]["median_wall_s"]
        ratio = lambda t, base: round(t["median_wall_s"] / base, 2)  # noqa: E731
        cpu_ratio = lambda t, base: round(t["median_cpu_s"] / base, 2)  # noqa: E731
        fo_c, ff_c = o["times"]["forward"]["median_cpu_s"], f["times"]["forward"]["median_cpu_s"]
        s_o, s_f = o["scores"], f["scores"]
        cells.append({
            "n_prompt": o["n_prompt"], "n_answer": o["n_answer"],
            "forward_s": {"flowroutes_process": fo, "flashtrace_process": ff},
            "x_forward": {
                "flowroutes routes of every answer token + span attribution (alti and routes)":
                    ratio(o["times"]["total"], fo),
                "flowroutes routes of every answer token + span attribution (routes)":
                    ratio(o["times"]["total_routes"], fo),
                "flowroutes span attribution alone (alti)": ratio(o["times"]["alti_span_alone"], fo),
                "flashtrace ifr-span": ratio(f["times"]["ifr-span"], ff),
                "flashtrace flashtrace (multi-hop)": ratio(f["times"]["flashtrace"], ff),
                "flashtrace ifr-matrix": ratio(f["times"]["ifr-matrix"], ff)},
            "x_forward_cpu": {
                "flowroutes routes of every answer token + span attribution (alti and routes)":
                    cpu_ratio(o["times"]["total"], fo_c),
                "flowroutes routes of every answer token + span attribution (routes)":
                    cpu_ratio(o["times"]["total_routes"], fo_c),
                "flowroutes span attribution alone (alti)": cpu_ratio(o["times"]["alti_span_alone"], fo_c),
                "flashtrace ifr-span": cpu_ratio(f["times"]["ifr-span"], ff_c),
                "flashtrace flashtrace (multi-hop)": cpu_ratio(f["times"]["flashtrace"], ff_c),
                "flashtrace ifr-matrix": cpu_ratio(f["times"]["ifr-matrix"], ff_c)},
            "flowroutes_steps_x_forward": {k: ratio(v, fo) for k, v in o["times"].items()},
            "agreement_with_ifr_span": {
                "same answer": {"alti": agreement(s_o["alti_answer"], s_f["ifr_span_answer"]),
                                "routes": agreement(s_o["routes_answer"], s_f["ifr_span_answer"])},
                "same positions": {"alti": agreement(s_o["alti_positions"], s_f["ifr_span_positions"]),
                                   "routes": agreement(s_o["routes_positions"], s_f["ifr_span_positions"])}},
            "agreement_same_answer_with_ifr_matrix": {  # FlashTrace's own two readings, and ours against the mean one
                "ifr-span": agreement(s_f["ifr_span_answer"], s_f["ifr_matrix_answer"]),
                "alti": agreement(s_o["alti_answer"], s_f["ifr_matrix_answer"]),
                "routes": agreement(s_o["routes_answer"], s_f["ifr_matrix_answer"])},
            "flowroutes_reached_mean": round(sum(s_o["reached"]) / len(s_o["reached"]), 3),
            "logits_check": {"flowroutes": o["last_logits_check"], "flashtrace": f["last_logits_check"]},
        })
    result = {"benchmark": "flowroutes vs FlashTrace, issue 20 item 4", "command": args.command,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "model": ours["model"],
              "flowroutes": ours["version"], "flashtrace": peer["version"],
              "flashtrace_transformers": peer["transformers"], "tau": ours["tau"],
              "repeats": {"flowroutes": ours["repeats"], "flashtrace": peer["repeats"]}, "statistic": "median",
              "machine": {"flowroutes_process": ours["machine"], "flashtrace_process": peer["machine"]},
              "cells": cells, "not_run": spec["not_run"], "raw": {"flowroutes": ours, "flashtrace": peer}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(result: dict) -> str:
    lines = ["| prompt + answer | forward (s) | flowroutes routes of every token + routes span "
             "| flowroutes routes of every token + both spans | flowroutes span (ALTI) "
             "| FlashTrace ifr-span | FlashTrace multi-hop | FlashTrace ifr-matrix | Spearman ALTI / routes vs "
             "ifr-span (same positions) | top-10 overlap ALTI / routes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["cells"]:
        x = c["x_forward"]
        a = c["agreement_with_ifr_span"]["same positions"]
        fw = c["forward_s"]
        lines.append(
            f"| {c['n_prompt']} + {c['n_answer']} | {fw['flowroutes_process']:.2f} / {fw['flashtrace_process']:.2f} "
            f"| {x.get('flowroutes routes of every answer token + span attribution (routes)', '-')}x "
            f"| {x['flowroutes routes of every answer token + span attribution (alti and routes)']}x "
            f"| {x['flowroutes span attribution alone (alti)']}x | {x['flashtrace ifr-span']}x "
            f"| {x['flashtrace flashtrace (multi-hop)']}x | {x['flashtrace ifr-matrix']}x "
            f"| {a['alti']['spearman']} / {a['routes']['spearman']} | {a['alti']['top10']} / {a['routes']['top10']} |")
    for s in result["not_run"]:
        lines.append(f"| {s['n_prompt']} + {s['n_answer']} | not run: {s['why']} | | | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--prompts", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--answers", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--skip", nargs="*", default=[], help="cells PxK not to run, e.g. 1024x256")
    p.add_argument("--skip-why", default="not run")
    p.add_argument("--cases", default=str(WORK / "flashtrace_cases.json"))
    for name in ("flowroutes", "flashtrace"):
        p = sub.add_parser(name)
        p.add_argument("--cases", default=str(WORK / "flashtrace_cases.json"))
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--out", default=str(WORK / f"flashtrace_{name}.json"))
        if name == "flowroutes":
            p.add_argument("--tau", type=float, default=0.04)
    p = sub.add_parser("report")
    p.add_argument("--cases", default=str(WORK / "flashtrace_cases.json"))
    p.add_argument("--ours", default=str(WORK / "flashtrace_flowroutes.json"))
    p.add_argument("--peer", default=str(WORK / "flashtrace_flashtrace.json"))
    p.add_argument("--out", default=str(HERE / "results.json"))
    p.add_argument("--command", default="make bench-flashtrace")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    {"prepare": prepare, "flowroutes": run_flowroutes, "flashtrace": run_flashtrace, "report": report}[args.step](args)


if __name__ == "__main__":
    main()
