"""Time, in one process, routes for a batch of IOI prompts against head patching and the ACDC-style run, and
set them beside the peer tools' real edge-level ACDC and EAP (auto-circuit, benchmarks/peers/).

Same prompts (`flowroutes.tasks.ioi(N, seed=0)`), same model, same batch size; prints seconds, forward passes and
the ratios, then one table: ACDC / routes, EAP / routes, head patching / routes, with the head-level agreement of
each method's circuit with the routes' most frequent heads. Usage:
    .venv/bin/python benchmarks/patching_speed.py [--model M] [--n 50] [--batch-size 50] [--sample-heads K]
        [--peers benchmarks/peers/results.json] [--json FILE]
--sample-heads K times the two patching methods on K heads only and extrapolates them linearly to all L*H heads
(one batched pass per head, plus three fixed passes); the printout says so. Default: every head (slow on CPU).
The routes are timed along every path the API offers for a list of prompts: batched traces (`predictions="last"`:
the LM head only where the routes read it), lazy traces one prompt at a time, and lazy traces of the whole list
where `trace(..., lazy=True)` accepts one; the ratios use the fastest. The peers' numbers come from their own
JSON (run_peers.py, another venv, same machine); how ACDC's were obtained (sampled steps, extrapolated) is in it
and printed here.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers" / "results.json"


def head_scores_of(entry: dict, n_layers: int, n_heads: int):
    """A peer method's [L, H] head score (edges sent + edges received, summed |attribution|), or None."""
    import numpy as np

    if "head_out_score" not in entry:
        return None
    return np.asarray(entry["head_out_score"]) + np.asarray(entry["head_in_score"])


def heads_of_top_edges(entry: dict, size: int) -> tuple[set[tuple[int, int]], int]:
    """The heads touched by the smallest top-|score| edge prefix that holds at least `size` heads, and its edges."""
    heads: set[tuple[int, int]] = set()
    used = 0
    for src, dest, _ in entry.get("top_edges", []):
        used += 1
        for name in (src, dest):
            if name.startswith("A"):  # "A{layer}.{head}" or "A{layer}.{head}.Q"
                layer, head = name[1:].split(".")[:2]
                heads.add((int(layer), int(head)))
        if len(heads) >= size:
            break
    return heads, used


def agreement(routes_set: set, routes_freq, scores, k: int) -> dict:
    """top-k overlap of two head rankings, and the Jaccard index of the routes' set with the top-k heads."""
    import numpy as np

    from flowroutes.patching.scores import top_k, top_k_overlap

    n_heads = routes_freq.shape[1]
    mine = {(int(i // n_heads), int(i % n_heads)) for i in top_k(np.asarray(scores), k)}
    return {"top_k_overlap": round(top_k_overlap(routes_freq, np.asarray(scores), k), 3),
            "jaccard": round(len(mine & routes_set) / max(len(mine | routes_set), 1), 3)}


def jaccard(a: set, b: set) -> float:
    return round(len(a & b) / max(len(a | b), 1), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--n", type=int, default=50, help="IOI prompts (default 50)")
    ap.add_argument("--batch-size", type=int, default=50, help="prompts per forward pass (default 50)")
    ap.add_argument("--sample-heads", type=int, default=None, metavar="K",
                    help="time the patching methods on K heads and extrapolate to every head")
    ap.add_argument("--tau", type=float, default=0.03, help="routes threshold (default 0.03)")
    ap.add_argument("--freq", type=float, default=0.5,
                    help="the routes' heads: active in at least this share of the prompts (default 0.5)")
    ap.add_argument("--peers", default=str(PEERS), help="run_peers.py's JSON (skipped when missing)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import numpy as np
    import torch

    import flowroutes
    from flowroutes.commands import quiet_transformers
    from flowroutes.errors import FlowroutesError
    from flowroutes.patching import acdc_prune, head_patching, prepare, run_metric
    from flowroutes.tasks import ioi

    quiet_transformers()
    model = flowroutes.load_model(args.model)
    n_layers, n_heads = model.n_layers, model.n_heads
    total_heads = n_layers * n_heads
    examples = ioi(args.n, seed=0, tokenizer=model.tokenizer)
    batch = prepare(model, examples)
    prompts = [e.prompt for e in batch.examples]
    threads = torch.get_num_threads()

    def restore_threads() -> None:  # the trace's numba kernels change torch's thread count; patching needs it back
        torch.set_num_threads(threads)

    def frequencies(routes_list) -> np.ndarray:
        freq = np.zeros((n_layers, n_heads))
        for r in routes_list:
            for layer, head in r.active_heads:
                freq[layer, head] += 1 / len(routes_list)
        return freq

    def batched():
        traces = flowroutes.trace(model, prompts, batch_size=args.batch_size, predictions="last")
        return frequencies([tr.routes(args.tau) for tr in traces])

    def lazy_each():
        return frequencies([flowroutes.trace(model, p, lazy=True, predictions="last").routes(args.tau)
                            for p in prompts])

    def lazy_list():
        traces = flowroutes.trace(model, prompts, lazy=True, batch_size=args.batch_size, predictions="last")
        return frequencies([tr.routes(args.tau) for tr in traces])

    paths = {"batched traces": batched, "lazy traces, one prompt at a time": lazy_each,
             "lazy traces of the list": lazy_list}
    not_offered: dict[str, str] = {}
    run_metric(model, batch.rows(0, args.batch_size))  # warm-up of the plain forward path
    for name, fn in list(paths.items()):  # warm-ups (numba compilation) on two prompts
        saved = prompts[:]
        prompts[:] = saved[:2]
        try:
            fn()
        except FlowroutesError as exc:
            not_offered[name] = str(exc)
            del paths[name]
        finally:
            prompts[:] = saved
        restore_threads()

    sample = None
    if args.sample_heads:
        rng = np.random.default_rng(0)
        flat = rng.choice(total_heads, size=min(args.sample_heads, total_heads), replace=False)
        sample = [(int(i // n_heads), int(i % n_heads)) for i in sorted(flat, reverse=True)]
    n_visited = total_heads if sample is None else len(sample)

    def timed(fn):  # (wall seconds, process CPU seconds, value): CPU time is what other load changes least
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        return time.perf_counter() - t0, time.process_time() - c0, value

    t_paths, c_paths, freqs = {}, {}, {}
    for name, fn in paths.items():
        t_paths[name], c_paths[name], freqs[name] = timed(fn)
        restore_threads()
    fastest = min(t_paths, key=t_paths.get)
    t_routes, c_routes, freq = t_paths[fastest], c_paths[fastest], freqs[fastest]
    t_fwd, c_fwd, _ = timed(lambda: [run_metric(model, batch.rows(s, s + args.batch_size))
                                     for s in range(0, batch.n, args.batch_size)])
    t_patch, c_patch, patching = timed(lambda: head_patching(model, batch, args.batch_size, progress=False,
                                                             heads=sample))
    t_acdc, c_acdc, pruning = timed(lambda: acdc_prune(model, batch, 0.05, args.batch_size, progress=False,
                                                       heads=sample))
    chunks = -(-batch.n // args.batch_size)
    if sample is not None:  # per chunk: 3 fixed passes + one per head; extrapolate the per-head part
        def extrapolate(t, fwd):
            fixed = 3 * fwd
            return fixed + (t - fixed) * total_heads / n_visited
        t_patch_all, t_acdc_all = extrapolate(t_patch, t_fwd), extrapolate(t_acdc, t_fwd)
        c_patch_all, c_acdc_all = extrapolate(c_patch, c_fwd), extrapolate(c_acdc, c_fwd)
    else:
        t_patch_all, t_acdc_all, c_patch_all, c_acdc_all = t_patch, t_acdc, c_patch, c_acdc
    out = {
        "model": model.name, "prompts": batch.n, "batch_size": args.batch_size, "heads": total_heads,
        "torch_threads": threads, "heads_timed": n_visited, "tau": args.tau,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": {**{f"routes ({k})": round(v, 3) for k, v in t_paths.items()},
                    "one forward pass": round(t_fwd, 3),
                    "head patching": round(t_patch_all, 3), "ACDC-style (heads as nodes)": round(t_acdc_all, 3)},
        "cpu_seconds": {**{f"routes ({k})": round(v, 3) for k, v in c_paths.items()},
                        "one forward pass": round(c_fwd, 3), "head patching": round(c_patch_all, 3),
                        "ACDC-style (heads as nodes)": round(c_acdc_all, 3)},
        "load_average": os.getloadavg(),
        "routes path timed for the ratios": fastest,
        "routes paths not offered": not_offered,
        "forward_passes": {"routes": chunks, "head patching": chunks * (total_heads + 3),
                           "ACDC-style": chunks * (total_heads + 3)},
        "ratio head patching / routes": round(t_patch_all / t_routes, 2),
        "ratio ACDC-style / routes": round(t_acdc_all / t_routes, 2),
        "ratio routes / one forward pass": round(t_routes / t_fwd, 2),
    }
    if sample is not None:
        out["note"] = (f"patching methods timed on {n_visited} of {total_heads} heads and extrapolated linearly "
                       "(every head costs one batched forward pass)")

    # --- agreement with the routes' most frequent heads, and the peers --------------------------------------------
    routes_set = {(int(a), int(b)) for a, b in zip(*np.nonzero(freq >= args.freq))}
    k = max(len(routes_set), 1)
    rows = [{"method": f"routes ({fastest})", "seconds": t_routes, "cpu": c_routes, "forward": f"{chunks}",
             "backward": "0",
             "top_k_overlap": 1.0, "jaccard": 1.0, "how": "measured"}]
    imp = np.abs(patching.importance)
    if sample is None:
        rows.append({"method": "head patching (flowroutes.patching)", "seconds": t_patch_all, "cpu": c_patch_all,
                     "forward": str(chunks * (total_heads + 3)), "backward": "0",
                     **agreement(routes_set, freq, imp, k), "how": "measured"})
        kept = {(int(a), int(b)) for a, b in zip(*np.nonzero(pruning.kept))}
        rows.append({"method": "ACDC-style, heads as nodes (flowroutes.patching)", "seconds": t_acdc_all,
                     "cpu": c_acdc_all,
                     "forward": str(chunks * (total_heads + 3)), "backward": "0",
                     "top_k_overlap": None, "jaccard": jaccard(kept, routes_set),
                     "how": f"measured; circuit: the {len(kept)} heads kept at threshold 0.05"})
    peers_path = Path(args.peers)
    if peers_path.is_file():
        peers = json.loads(peers_path.read_text())
        out["peers"] = {key: peers.get(key) for key in ("machine", "date", "versions", "model", "prompts",
                                                         "graph_edges", "check")}
        for name, entry in peers.get("methods", {}).items():
            passes = entry.get("passes", {})
            if name == "ACDC":
                ext = entry.get("extrapolated_one_tau")
                if ext:
                    seconds, cpu = ext["wall_seconds"], ext.get("cpu_seconds")
                    fwd = (f"{ext['forward_full']} + {ext['forward_partial']} partial "
                           f"(= {ext['forward_layer_equivalents']:.0f} full)")
                    how = (f"extrapolated from {entry['steps_run']} measured steps on {entry['prompts']} prompts "
                           f"(one threshold, tau={entry['tau']}); no circuit")
                else:
                    seconds, cpu = entry["wall_seconds"], entry.get("cpu_seconds")
                    fwd = f"{passes.get('forward_full')} + {passes.get('forward_partial')} partial"
                    how = "measured" if entry.get("finished") else "NOT finished"
                circuit = {tuple(h) for h in entry.get("circuit_heads", [])}
                agree = {"top_k_overlap": None, "jaccard": jaccard(circuit, routes_set) if circuit else None}
            else:
                seconds, cpu = entry["wall_seconds"], entry.get("cpu_seconds")
                fwd = str(passes.get("forward_full"))
                scores = head_scores_of(entry, n_layers, n_heads)
                agree = agreement(routes_set, freq, scores, k) if scores is not None else {}
                heads, used = heads_of_top_edges(entry, k)
                agree["jaccard_top_edges"] = jaccard(heads, routes_set)
                how = (f"measured, batches of {entry.get('batch_size')}; circuit: top {used} edges "
                       f"({len(heads)} heads)")
            rows.append({"method": f"{name} (auto-circuit)", "seconds": seconds, "cpu": cpu, "forward": fwd,
                         "backward": str(passes.get("backward", 0)), **agree, "how": how})
    else:
        out["peers"] = f"{peers_path} not found: run benchmarks/peers/ (see its RESULTS.md)"
    for r in rows:
        r["ratio to routes"] = round(r["seconds"] / t_routes, 1)
        r["CPU ratio to routes"] = round(r["cpu"] / c_routes, 1) if r.get("cpu") is not None else None
        r["seconds"] = round(r["seconds"], 2)
        r["cpu"] = round(r["cpu"], 2) if r.get("cpu") is not None else None
    out["routes heads"] = {"share": args.freq, "count": len(routes_set), "k": k,
                           "chance top-k overlap": round(k / total_heads, 3)}
    out["table"] = rows
    print(json.dumps(out, indent=1))
    print(f"\nroutes' heads: active in >= {args.freq:.0%} of the {batch.n} prompts at tau={args.tau}: {len(routes_set)}"
          f" (top-k overlap by chance: {k / total_heads:.2f})")
    print("| method | wall s | ratio to routes | CPU s | CPU ratio | forward passes | backward | top-k overlap | "
          "Jaccard | how |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        jac = r.get("jaccard")
        if r.get("jaccard_top_edges") is not None:
            jac = f"{jac} (edges: {r['jaccard_top_edges']})"
        cpu_ratio = "" if r["CPU ratio to routes"] is None else f"{r['CPU ratio to routes']}x"
        print(f"| {r['method']} | {r['seconds']} | {r['ratio to routes']}x | {r['cpu']} | {cpu_ratio} | "
              f"{r['forward']} | {r['backward']} | "
              f"{r.get('top_k_overlap')} | {jac} | {r['how']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
