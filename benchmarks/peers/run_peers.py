"""Run the peer circuit-discovery tools, auto-circuit's edge-level ACDC and EAP, on the routes benchmark's IOI prompts.

Runs in the peers venv (benchmarks/peers/.venv, see setup.sh), never imports flowroutes. Inputs come from
`export.py` (product venv): the SmolLM2 folder and ioi_prompts.json (token ids exactly as flowroutes feeds them).
Writes one JSON (default benchmarks/peers/results.json) with, per method: wall seconds, process CPU seconds (what
other load on a shared machine changes least), forward passes (full, and partial: auto-circuit's ACDC restarts each
step at the edge's layer), backward passes, and per head the summed |attribution| of its edges, with the top edges.

Counting: HookedTransformer.forward and torch.autograd.backward are wrapped for the whole run, so every pass that
auto-circuit makes (ablation caches, run_with_cache, the per-edge steps) is counted where it happens.

ACDC cost: auto-circuit's ACDC visits every edge of the factorised graph once per threshold, one forward pass from
the edge's layer each. `--acdc sample` runs auto-circuit's own `acdc_prune_scores` on a stratified sample of
edges (--acdc-k per start layer, at the layers --acdc-layers; the graph, masks, caches and tensors are the full
model's), records the time of every step, fits the layers in between (fit_steps) and extrapolates to every
edge; `--acdc full` runs every edge (weeks on a 2-core CPU, see RESULTS.md); `--acdc prefix --acdc-budget S` runs
the real edge order for S seconds and reports how many steps it did, to check the extrapolation against.
Usage (peers venv):
    benchmarks/peers/.venv/bin/python benchmarks/peers/run_peers.py [--n 50] [--acdc sample] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


class OutOfBudget(Exception):
    """Raised from inside a forward pass when a timed ACDC prefix has used its budget."""


class Counter:
    """Forward and backward passes of the wrapped HookedTransformer, with per-step durations while recording."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.reset()
        self.deadline: float | None = None

    def reset(self) -> None:
        self.full = 0  # forward passes from the embeddings
        self.partial = 0  # forward passes started at a layer (ACDC's steps)
        self.layer_equivalents = 0.0  # partial passes counted as the share of the layers they run
        self.backward = 0
        self.forward_seconds = 0.0
        self.steps: list[tuple[int, float, float]] = []  # (start layer, wall, CPU seconds) of each partial pass
        self.spans: list[tuple[float, float, float, float]] = []  # wall and CPU clocks at begin and end

    def forward(self, start: int | None, seconds: float, cpu: float, begin: float, cpu_begin: float) -> None:
        self.forward_seconds += seconds
        if start is None:
            self.full += 1
            self.layer_equivalents += 1.0
        else:
            self.partial += 1
            self.layer_equivalents += (self.n_layers - start) / self.n_layers
            self.steps.append((start, seconds, cpu))
            self.spans.append((begin, begin + seconds, cpu_begin, cpu_begin + cpu))

    def snapshot(self) -> dict:
        return {"forward_full": self.full, "forward_partial": self.partial,
                "forward_layer_equivalents": round(self.layer_equivalents, 2), "backward": self.backward,
                "seconds_in_forward": round(self.forward_seconds, 3)}


def install_counters(counter: Counter) -> None:
    import torch
    from transformer_lens import HookedTransformer

    forward = HookedTransformer.forward
    backward = torch.autograd.backward

    def counted_forward(self, *args, **kwargs):
        if counter.deadline is not None and time.perf_counter() > counter.deadline:
            raise OutOfBudget
        start = kwargs.get("start_at_layer", None) if "start_at_layer" in kwargs else None
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return forward(self, *args, **kwargs)
        finally:
            counter.forward(None if start is None else int(start), time.perf_counter() - t0,
                            time.process_time() - c0, t0, c0)

    def counted_backward(*args, **kwargs):
        counter.backward += 1
        return backward(*args, **kwargs)

    HookedTransformer.forward = counted_forward
    torch.autograd.backward = counted_backward


def load_model(folder: Path, n_ctx: int):
    """SmolLM2 from the exported folder into a HookedTransformer, unprocessed (no folding: same function as HF).

    Two conversions of TransformerLens 2.9 are corrected here, in this process only: its Llama config conversion
    keeps rotary_base at 1e4 (SmolLM2 uses rope_theta 1e5, which transformers 5 writes under rope_parameters), and
    it accepts a local folder only under an official model name. n_ctx is capped (the causal mask buffers are
    n_ctx^2 per layer; the prompts are ~20 tokens).
    """
    import torch
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    config = json.loads((folder / "config.json").read_text())
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is None:
        raise SystemExit(f"{folder}/config.json has no rope_theta: re-export it with export.py")
    convert = loading.convert_hf_model_config
    official = loading.get_official_model_name

    def converted(name, **kwargs):
        cfg = convert(name, **kwargs)
        cfg["rotary_base"] = float(theta)
        cfg["n_ctx"] = min(int(cfg["n_ctx"]), n_ctx)
        return cfg

    loading.convert_hf_model_config = converted
    loading.get_official_model_name = lambda name: name if Path(name).is_dir() else official(name)

    # the tokenizer files come from transformers 5; rewrite them once in this venv's format (TL reloads by path)
    tok_dir = folder.parent / (folder.name + "-tokenizer-tf4")
    if not (tok_dir / "tokenizer_config.json").is_file():
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        special = {k: tc[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in tc}
        PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special).save_pretrained(tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    hf = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model = HookedTransformer.from_pretrained(
        str(folder), hf_model=hf, tokenizer=tokenizer, fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False, device="cpu", default_prepend_bos=False,
        default_padding_side="left")
    del hf
    model.tokenizer.padding_side = "left"
    model.eval()
    return model


def make_patchable(model):
    """auto-circuit's factorised edge graph: every head (Q, K and V inputs apart), MLP, embeddings, output."""
    import torch
    from auto_circuit.utils.graph_utils import patchable_model

    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    if model.cfg.n_key_value_heads is not None:
        model.set_ungroup_grouped_query_attention(True)  # auto-circuit expects one K and one V input per head
    for p in model.parameters():
        p.requires_grad_(False)
    return patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True,
                           device=torch.device("cpu"))


def load_prompts(path: Path, n: int, pad_id: int):
    """The IOI pairs as left-padded id tensors (auto-circuit reads the logits at the last position)."""
    import torch

    data = json.loads(path.read_text())
    rows = data["examples"][:n]
    if len(rows) < n:
        raise SystemExit(f"{path} holds {len(rows)} examples, fewer than --n {n}: re-export with --n")
    t_max = max(len(r["ids"]) for r in rows)
    clean = torch.full((n, t_max), pad_id, dtype=torch.long)
    corrupt = torch.full((n, t_max), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r["ids"]) != len(r["contrastive_ids"]):
            raise SystemExit(f"example {i}: prompt and contrastive prompt differ in length")
        if pad_id in r["ids"] or pad_id in r["contrastive_ids"]:
            raise SystemExit(f"example {i} contains the pad token {pad_id}")
        clean[i, t_max - len(r["ids"]):] = torch.tensor(r["ids"])
        corrupt[i, t_max - len(r["ids"]):] = torch.tensor(r["contrastive_ids"])
    answers = [torch.tensor(r["answer_id"]) for r in rows]
    wrong = [torch.tensor(r["wrong_id"]) for r in rows]
    return data, rows, clean, corrupt, answers, wrong


def loader(clean, corrupt, answers, wrong, batch_size: int):
    from auto_circuit.data import PromptDataLoader, PromptDataset

    if clean.shape[0] % batch_size:
        raise SystemExit(f"batch size {batch_size} must divide the {clean.shape[0]} prompts (auto-circuit drops "
                         "the last partial batch)")
    return PromptDataLoader(PromptDataset(clean, corrupt, answers, wrong), seq_len=None, diverge_idx=0,
                            batch_size=batch_size, shuffle=False)


def logit_diffs(model, tokens, answers, wrong):
    import torch

    with torch.inference_mode():
        logits = model(tokens)[:, -1]  # [N, V]
    a = torch.stack([logits[i, answers[i][0]] for i in range(len(answers))])
    b = torch.stack([logits[i, wrong[i][0]] for i in range(len(wrong))])
    return (a - b).tolist()


def head_summary(model, scores: dict, n_layers: int, n_heads: int, top_edges: int) -> dict:
    """Per head: the summed |score| of the edges it sends (src) and of the edges into its Q, K, V (dest); and the
    `top_edges` edges of largest |score| (src, dest, score), from which circuits of any size are cut."""
    import numpy as np

    out_score = np.zeros((n_layers, n_heads))
    in_score = np.zeros((n_layers, n_heads))
    flat = []
    for edge in model.edges:
        s = float(scores[edge.dest.module_name][edge.patch_idx])
        if not np.isfinite(s):
            continue
        if edge.src.head_idx is not None:
            out_score[int(edge.src.module_name.split(".")[1]), edge.src.head_idx] += abs(s)
        if edge.dest.head_idx is not None:
            in_score[int(edge.dest.module_name.split(".")[1]), edge.dest.head_idx] += abs(s)
        flat.append((abs(s), s, edge.src.name, edge.dest.name))
    flat.sort(key=lambda x: -x[0])
    return {"head_out_score": out_score.round(6).tolist(), "head_in_score": in_score.round(6).tolist(),
            "n_edges_scored": len(flat),
            "top_edges": [[src, dest, round(s, 6)] for _, s, src, dest in flat[:top_edges]]}


def run_eap(model, data_loader, counter: Counter, kind: str) -> tuple[dict, float, float]:
    import torch
    from auto_circuit.prune_algos.edge_attribution_patching import edge_attribution_patching_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.types import AblationType

    counter.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "mask-gradient":  # auto-circuit's fast EAP: d metric / d edge mask at mask 0, patches = corrupt
        scores = mask_gradient_prune_scores(model, data_loader, None, grad_function="logit",
                                            answer_function="avg_diff", mask_val=0.0,
                                            ablation_type=AblationType.RESAMPLE, clean_corrupt="corrupt")
    else:  # Syed et al.'s algorithm as auto-circuit replicates it (gradient and activation caches, edge loop)
        scores = edge_attribution_patching_prune_scores(model, data_loader, None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for p in model.parameters():
        p.requires_grad_(False)
    torch.set_grad_enabled(True)
    return scores, wall, cpu


def acdc_faithfulness(first_batch):
    """ACDC's faithfulness as the IOI logit difference: |mean LD(patched) - mean LD(clean)| over the batch.

    auto-circuit's ACDC compares log-softmaxed outputs (KL divergence or MSE); log-softmax shifts each row by a
    constant, so the logit difference answer - wrong is read off the log-probs unchanged."""
    from auto_circuit.utils.tensor_ops import batch_answer_diffs

    def faith(out_logprobs, clean_logprobs):
        return (batch_answer_diffs(out_logprobs, first_batch).mean()
                - batch_answer_diffs(clean_logprobs, first_batch).mean()).abs()

    return faith


def edge_block(edge) -> int:
    """The layer ACDC restarts its forward pass at for this edge (as auto-circuit computes it)."""
    return int(edge.dest.module_name.split(".")[1])


def block_sources(model) -> dict[int, int]:
    """Per block: the sources summed over its destination modules (each patched module forms a [srcs, B, T, d]
    difference on every pass: the part of a step's cost that grows with depth)."""
    out: dict[int, int] = defaultdict(int)
    for w in model.dest_wrappers:
        out[int(w.module_name.split(".")[1])] += w.in_srcs.stop - w.in_srcs.start
    return dict(out)


def fit_steps(measured: dict[int, float], sources: dict[int, int], n_layers: int) -> dict[int, float]:
    """Step seconds at every start layer s, least squares on the measured ones with the cost model
    S(s) = c0 + c1 (L - s) + c2 sum_{b >= s} sources(b): a fixed part, a part per block run, a part per patched
    source tensor. Measured layers keep their measured value; the fit fills the others."""
    import numpy as np

    def features(start: int) -> list[float]:
        return [1.0, float(n_layers - start), float(sum(v for b, v in sources.items() if b >= start))]

    xs = sorted(measured)
    coef, *_ = np.linalg.lstsq(np.array([features(x) for x in xs]), np.array([measured[x] for x in xs]), rcond=None)
    return {b: (measured[b] if b in measured else max(float(np.dot(coef, features(b))), 0.0))
            for b in range(n_layers)}


def run_acdc(model, data_loader, counter: Counter, args) -> dict:
    import auto_circuit.prune_algos.ACDC as acdc_module
    import numpy as np

    first = next(iter(data_loader))
    if args.acdc_metric == "logit_diff":
        acdc_module.multibatch_kl_div = acdc_faithfulness(first)
    all_edges = model.edges
    by_block: dict[int, list] = defaultdict(list)
    for e in sorted(all_edges, key=lambda e: (edge_block(e), e.name)):
        by_block[edge_block(e)].append(e)
    edges_per_block = {b: len(v) for b, v in sorted(by_block.items())}
    tau = args.acdc_tau_base * 10.0 ** args.acdc_tau_exp
    out: dict = {"mode": args.acdc, "tau": tau, "taus_run": 1, "metric": args.acdc_metric,
                 "edges_total": len(all_edges), "edges_per_start_layer": edges_per_block,
                 "auto_circuit_default_taus": 20}
    if args.acdc == "sample":
        rng = random.Random(0)
        layers = sorted(by_block) if not args.acdc_layers else [int(x) for x in args.acdc_layers.split(",")]
        sample = [e for b in layers for e in rng.sample(by_block[b], min(args.acdc_k, len(by_block[b])))]
        model.edges = set(sample)
        out["sampled_start_layers"] = layers
        out["sampled_edges"] = [e.name for e in sample]
    counter.reset()
    if args.acdc == "prefix":
        counter.deadline = time.perf_counter() + args.acdc_budget
    t0, c0 = time.perf_counter(), time.process_time()
    scores = None
    try:
        scores = acdc_module.acdc_prune_scores(model, data_loader, None, tao_exps=[args.acdc_tau_exp],
                                               tao_bases=[args.acdc_tau_base], faithfulness_target="kl_div")
        finished = True
    except OutOfBudget:
        finished = False
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    counter.deadline = None
    model.edges = all_edges
    steps, spans = list(counter.steps), list(counter.spans)
    # caches, clean run, edge sorting: once per tau; then per step, the time outside the forward pass
    setup = (spans[0][0] - t0) if spans else wall
    setup_cpu = (spans[0][2] - c0) if spans else cpu
    gap = float(np.median([b[0] - a[1] for a, b in zip(spans, spans[1:])])) if len(spans) > 1 else 0.0
    gap_cpu = float(np.median([b[2] - a[3] for a, b in zip(spans, spans[1:])])) if len(spans) > 1 else 0.0
    out.update({"finished": finished, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                "passes": counter.snapshot(), "steps_run": len(steps), "setup_seconds": round(setup, 3),
                "setup_cpu_seconds": round(setup_cpu, 3), "seconds_between_steps_median": round(gap, 5),
                "cpu_seconds_between_steps_median": round(gap_cpu, 5)})
    per_block: dict[int, list[float]] = defaultdict(list)
    per_block_cpu: dict[int, list[float]] = defaultdict(list)
    for block, sec, sec_cpu in steps:
        per_block[block].append(sec)
        per_block_cpu[block].append(sec_cpu)
    measured = {b: float(np.mean(v)) for b, v in sorted(per_block.items())}
    measured_cpu = {b: float(np.mean(v)) for b, v in sorted(per_block_cpu.items())}
    out["step_seconds_measured"] = {b: round(v, 3) for b, v in measured.items()}
    out["step_cpu_seconds_measured"] = {b: round(v, 3) for b, v in measured_cpu.items()}
    if args.acdc == "sample":
        n_layers = model.cfg.n_layers
        step = fit_steps(measured, block_sources(model), n_layers)
        step_cpu = fit_steps(measured_cpu, block_sources(model), n_layers)
        total = setup + sum(n * (step[b] + gap) for b, n in edges_per_block.items())
        total_cpu = setup_cpu + sum(n * (step_cpu[b] + gap_cpu) for b, n in edges_per_block.items())
        out["step_seconds_used"] = {b: round(v, 3) for b, v in step.items()}
        out["step_cpu_seconds_used"] = {b: round(v, 3) for b, v in step_cpu.items()}
        out["extrapolated_one_tau"] = {
            "wall_seconds": round(total, 1), "hours": round(total / 3600, 2), "cpu_seconds": round(total_cpu, 1),
            "forward_full": counter.full, "forward_partial": len(all_edges),
            "forward_layer_equivalents": round(counter.full + sum(n * (n_layers - b) / n_layers
                                                                  for b, n in edges_per_block.items()), 1),
            "backward": 0,
            "how": "setup as measured + sum over start layers s of edges(s) x (step seconds at s + median seconds "
                   "between steps); step seconds measured at the sampled layers, fitted elsewhere (fit_steps)"}
    if args.acdc == "prefix":
        done: dict[int, int] = defaultdict(int)
        for block, *_ in steps:
            done[block] += 1
        out["steps_by_start_layer"] = dict(sorted(done.items()))
    if finished and args.acdc == "full":
        out["scores"] = scores
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=str(HERE / "work" / "smollm2"))
    ap.add_argument("--prompts", default=str(HERE / "ioi_prompts.json"))
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--eap", default="mask-gradient",
                    help="comma list of EAP implementations to run: mask-gradient (auto-circuit's fast one), "
                         "reference (its replication of Syed et al.); empty: none")
    ap.add_argument("--eap-batch-size", type=int, default=5,
                    help="prompts per EAP pass (the mask-gradient graph keeps one [srcs, B, T, d] tensor per "
                         "destination module for the backward pass: ~0.8 GB per prompt on SmolLM2)")
    ap.add_argument("--eap-ref-batch-size", type=int, default=25)
    ap.add_argument("--acdc", choices=("sample", "prefix", "full", "none"), default="sample")
    ap.add_argument("--acdc-k", type=int, default=1, help="sampled edges per start layer (--acdc sample)")
    ap.add_argument("--acdc-layers", default="0,3,6,9,12,15,18,21,24,27,29",
                    help="start layers sampled (--acdc sample; empty: every layer)")
    ap.add_argument("--acdc-budget", type=float, default=300.0, help="seconds (--acdc prefix)")
    ap.add_argument("--acdc-tau-base", type=int, default=5)
    ap.add_argument("--acdc-tau-exp", type=int, default=-2, help="tau = base x 10^exp (default 0.05)")
    ap.add_argument("--acdc-metric", choices=("logit_diff", "kl_div"), default="logit_diff")
    ap.add_argument("--acdc-batch-size", type=int, default=None, help="ACDC uses the first batch only "
                    "(default: all --n prompts in one batch)")
    ap.add_argument("--top-edges", type=int, default=2000)
    args = ap.parse_args()

    import importlib.metadata as md
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_load = time.perf_counter()
    model = load_model(Path(args.model_dir), args.n_ctx)
    load_seconds = time.perf_counter() - t_load
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    data, rows, clean, corrupt, answers, wrong = load_prompts(Path(args.prompts), args.n,
                                                              int(model.tokenizer.pad_token_id))
    # the same numbers as flowroutes' forward pass, left padding included
    ld = logit_diffs(model, clean, answers, wrong)
    ld_c = logit_diffs(model, corrupt, answers, wrong)
    ref = [r["logit_diff"] for r in rows]
    check = {"max_abs_logit_diff_vs_flowroutes": max(abs(a - b) for a, b in zip(ld, ref) if b is not None),
             "mean_logit_diff_clean": sum(ld) / len(ld), "mean_logit_diff_contrastive": sum(ld_c) / len(ld_c)}
    print(json.dumps(check))

    model = make_patchable(model)
    counter = Counter(n_layers)
    install_counters(counter)
    results: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_start": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "versions": {p: md.version(p) for p in ("torch", "transformers", "transformer-lens", "auto-circuit")},
        "model": data.get("model"), "model_dir": args.model_dir, "prompts": args.n, "source": data.get("source"),
        "n_layers": n_layers, "n_heads": n_heads, "graph_edges": len(model.edges),
        "graph_nodes": {"src": len(model.srcs), "dest": len(model.dests)},
        "load_seconds": round(load_seconds, 1), "check": check, "methods": {},
    }
    for kind in [k for k in args.eap.split(",") if k]:
        bs = args.eap_batch_size if kind == "mask-gradient" else args.eap_ref_batch_size
        scores, wall, cpu = run_eap(model, loader(clean, corrupt, answers, wrong, bs), counter, kind)
        entry = {"wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "batch_size": bs,
                 "passes": counter.snapshot(),
                 **head_summary(model, scores, n_layers, n_heads, args.top_edges)}
        results["methods"][f"EAP ({kind})"] = entry
        print(kind, json.dumps({k: entry[k] for k in ("wall_seconds", "cpu_seconds", "passes")}))
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.acdc != "none":
        bs = args.acdc_batch_size or args.n
        acdc = run_acdc(model, loader(clean[:bs], corrupt[:bs], answers[:bs], wrong[:bs], bs), counter, args)
        acdc["prompts"] = bs
        scores = acdc.pop("scores", None)
        if scores is not None:  # ACDC keeps the edges whose score stayed inf (never removed)
            kept = [e for e in model.edges if float(scores[e.dest.module_name][e.patch_idx]) == float("inf")]
            heads = sorted({(int(n.module_name.split(".")[1]), n.head_idx) for e in kept for n in (e.src, e.dest)
                            if n.head_idx is not None})
            acdc.update({"circuit_edges": [[e.src.name, e.dest.name] for e in kept],
                         "circuit_heads": [list(h) for h in heads]})
        results["methods"]["ACDC"] = acdc
        print("ACDC", json.dumps({k: v for k, v in acdc.items() if k != "edges_per_start_layer"}))
    results["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
