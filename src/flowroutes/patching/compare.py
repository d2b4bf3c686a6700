"""Routes versus activation patching on one task: agreement, faithfulness curves, timings, figures, report.

`compare_patching(model, task)` runs the routes, head patching, the ACDC-style pruning and the ablations on
the same examples and returns a `report.Result` (tables, summary, figures, HTML). No CLI parsing.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from .. import checks, report
from ..errors import FlowroutesError
from ..models.loading import LoadedModel, load_model
from .core import accuracy, prepare, run_metric
from .methods import ABLATIONS, Patching, Pruning, ablated_metric, ablation_values, acdc_prune, head_patching

DEFAULT_THRESHOLDS = (0.01, 0.02, 0.04, 0.08, 0.16)


def active_masks(traces: list, tau: float, n_layers: int, n_heads: int) -> np.ndarray:
    """[N, L, H] bool: the head has a sub-edge in the routes of the last position of trace n at `tau`."""
    out = np.zeros((len(traces), n_layers, n_heads), dtype=bool)
    for i, tr in enumerate(traces):
        for layer, head in tr.routes(tau, position=-1).active_heads:
            out[i, layer, head] = True
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two [L, H] maps (NaN when one of them is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k largest entries (ties broken by the lower flat index)."""
    flat = np.ravel(scores)
    return np.lexsort((np.arange(flat.size), -flat))[:k]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) & top-k(b)| / k."""
    k = min(k, np.size(a))
    return len(set(top_k(a, k).tolist()) & set(top_k(b, k).tolist())) / k if k else float("nan")


def _ks(n_heads_total: int) -> list[int]:
    ks, k = [0], 1
    while k < n_heads_total:
        ks.append(k)
        k *= 2
    return ks + [n_heads_total]


def _mask_from(order: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape[0] * shape[1], dtype=bool)
    m[order[:k]] = True
    return m.reshape(shape)


def compare_patching(
    model: Any = None,
    task: str = "ioi",
    *,
    examples: list | None = None,
    n: int = 32,
    seed: int = 0,
    tau: float = 0.04,
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
    ks: list[int] | None = None,
    ablation: str = "mean",
    acdc_threshold: float = 0.05,
    random_repeats: int = 3,
    batch_size: int = 16,
    min_accuracy: float = 0.6,
    force: bool = False,
    progress: bool = True,
) -> report.Result:
    """Compare routes with head patching and ACDC-style pruning on `task` ("ioi", "greater-than",
    "greater-than-00") or on given `examples` (TaskExample objects). Raises FlowroutesError, before any
    comparison, when the model's accuracy (answer beats distractor) is below `min_accuracy` unless `force`."""
    import flowroutes

    from ..tasks import task_examples

    if ablation not in ABLATIONS:
        raise FlowroutesError(f"unknown ablation '{ablation}': choose one of {', '.join(ABLATIONS)}")
    checks.threshold("tau", tau)
    for t in thresholds:
        checks.threshold("thresholds", t)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if examples is None:
        examples = task_examples(task, n, seed, tokenizer=loaded.tokenizer)
    batch = prepare(loaded, examples)
    n_layers, n_heads = loaded.adapter.n_layers, loaded.adapter.n_heads
    timings: dict[str, float] = {}

    # 1. can the model do the task at all? (reported before any comparison)
    t0 = time.perf_counter()
    clean = np.concatenate([run_metric(loaded, batch.rows(s, s + batch_size)).numpy()
                            for s in range(0, batch.n, batch_size)])
    contrast = np.concatenate([run_metric(loaded, batch.rows(s, s + batch_size), contrastive=True).numpy()
                               for s in range(0, batch.n, batch_size)])
    acc = accuracy(clean)
    warning = ""
    if acc < min_accuracy:
        msg = (f"{loaded.name} cannot do the task '{task}': the answer beats the distractor in {acc:.0%} of "
               f"{batch.n} examples (chance 50%, required {min_accuracy:.0%}), so routes and patching would be "
               "compared on noise; use a larger model or another task (or force the comparison)")
        if not force:
            raise FlowroutesError(msg)
        warning = "WARNING: " + msg
    timings["clean_and_contrastive_passes_s"] = time.perf_counter() - t0

    # 2. routes
    t0 = time.perf_counter()
    traces = flowroutes.trace(loaded, [e.prompt for e in batch.examples], batch_size=batch_size, progress=progress)
    task_active = {t: active_masks(traces, t, n_layers, n_heads) for t in sorted({tau, *thresholds})}
    timings["routes_task_s"] = time.perf_counter() - t0
    con_traces = flowroutes.trace(loaded, [e.contrastive for e in batch.examples], batch_size=batch_size,
                                  progress=progress)
    con_active = active_masks(con_traces, tau, n_layers, n_heads)
    del traces, con_traces
    f_task = task_active[tau].mean(axis=0)  # [L, H]
    f_con = con_active.mean(axis=0)  # [L, H]
    f_diff = f_task - f_con

    # 3. patching baselines
    t0 = time.perf_counter()
    patching = head_patching(loaded, batch, batch_size, progress)
    timings["head_patching_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pruning = acdc_prune(loaded, batch, acdc_threshold, batch_size, progress)
    timings["acdc_style_s"] = time.perf_counter() - t0
    imp = patching.importance  # [L, H]

    # 4. agreement
    agreement = {
        "spearman(route frequency, |patching effect|)": spearman(f_task, np.abs(imp)),
        "spearman(route frequency task - contrastive, patching effect)": spearman(f_diff, imp),
    }
    for k in (5, 10, 20):
        if k <= n_layers * n_heads:
            agreement[f"top-{k} overlap (frequency vs |effect|)"] = top_k_overlap(f_task, np.abs(imp), k)
            agreement[f"top-{k} overlap (task - contrastive vs effect)"] = top_k_overlap(f_diff, imp, k)
    n_kept = int(pruning.kept.sum())
    if n_kept:
        agreement["ACDC-style kept heads"] = n_kept
        agreement["share of ACDC-style heads among the top route heads (same count)"] = top_k_overlap(
            f_task, pruning.kept.astype(float) + 1e-9 * np.abs(imp), n_kept)

    # 5. faithfulness
    t0 = time.perf_counter()
    values = ablation_values(loaded, batch, ablation, batch_size)
    full = float(clean.mean())
    base = ablated_metric(loaded, batch, np.ones((n_layers, n_heads), bool), values, batch_size).mean()
    rankings = {"routes: frequency": top_k(f_task, f_task.size),
                "routes: task - contrastive": top_k(f_diff, f_diff.size), "patching: effect": top_k(imp, imp.size)}
    rng = np.random.default_rng(seed)
    for r in range(random_repeats):
        rankings[f"random #{r}"] = rng.permutation(n_layers * n_heads)
    ks = sorted(set(ks if ks is not None else _ks(n_layers * n_heads)))
    k_rows: dict[str, list] = {"ranking": [], "k": [], "direction": [], "metric": [], "remaining": [],
                               "remaining_normalized": []}

    def normalized(value: float) -> float:  # 0 = every head ablated, 1 = clean
        return (value - float(base)) / (full - float(base)) if full != float(base) else float("nan")

    curve_total = len(rankings) * len(ks) * 2
    from tqdm.auto import tqdm

    bar = tqdm(total=curve_total, disable=not progress, desc="faithfulness over k", unit="point")
    seen: dict[bytes, float] = {  # the same set of ablated heads is run once (e.g. k = 0 for every ranking)
        np.packbits(np.ones((n_layers, n_heads), bool)).tobytes(): float(base),
        np.packbits(np.zeros((n_layers, n_heads), bool)).tobytes(): full}
    for name, order in rankings.items():
        for k in ks:
            mask = _mask_from(order, k, (n_layers, n_heads))
            for direction, ablate in (("ablate top-k", mask), ("keep only top-k", ~mask)):
                key = np.packbits(ablate).tobytes()
                if key not in seen:
                    seen[key] = float(ablated_metric(loaded, batch, ablate, values, batch_size).mean())
                value = seen[key]
                k_rows["ranking"].append(name)
                k_rows["k"].append(k)
                k_rows["direction"].append(direction)
                k_rows["metric"].append(value)
                k_rows["remaining"].append(value / full if full else float("nan"))
                k_rows["remaining_normalized"].append(normalized(value))
                bar.update(1)
    bar.close()
    t_rows: dict[str, list] = {"threshold": [], "kind": [], "mean_heads_kept": [], "metric": [], "remaining": [],
                               "remaining_normalized": []}
    for t, act in task_active.items():
        counts = act.reshape(len(act), -1).sum(axis=1)  # [N]
        rand = np.zeros_like(act)
        for i, c in enumerate(counts):
            rand[i].flat[rng.choice(n_layers * n_heads, size=int(c), replace=False)] = True
        for kind, kept in (("routes", act), ("random heads, same count", rand)):
            value = float(ablated_metric(loaded, batch, ~kept, values, batch_size).mean())
            t_rows["threshold"].append(t)
            t_rows["kind"].append(kind)
            t_rows["mean_heads_kept"].append(float(counts.mean()))
            t_rows["metric"].append(value)
            t_rows["remaining"].append(value / full if full else float("nan"))
            t_rows["remaining_normalized"].append(normalized(value))
    timings["faithfulness_s"] = time.perf_counter() - t0

    # 6. tables, summary, figures
    grid_l, grid_h = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    table = pa.table({
        "layer": pa.array(grid_l.ravel(), pa.int32()), "head": pa.array(grid_h.ravel(), pa.int32()),
        "route_frequency_task": f_task.ravel(), "route_frequency_contrastive": f_con.ravel(),
        "route_frequency_difference": f_diff.ravel(), "patching_effect": imp.ravel(),
        "patching_effect_normalized": patching.normalized.ravel(), "acdc_kept": pruning.kept.ravel(),
        "acdc_delta": pruning.delta.ravel(),
    })
    ex_table = pa.table({
        "prompt": [e.prompt for e in batch.examples], "contrastive": [e.contrastive for e in batch.examples],
        "answer": [e.answer for e in batch.examples], "wrong": [e.wrong for e in batch.examples],
        "metric_clean": clean, "metric_contrastive": contrast,
        "routes_active_heads": pa.array([np.flatnonzero(a.ravel()).astype(np.int32).tolist()
                                         for a in task_active[tau]], pa.list_(pa.int32())),
    })
    summary: dict[str, Any] = {}
    if warning:
        summary["warning"] = warning
    summary.update({
        "task": task, "model": loaded.name, "examples": batch.n, "pairs_dropped_length_mismatch": batch.dropped,
        "metric": "logit(answer) - logit(distractor)" if batch.kind == "logit_diff" else
                  "P(first digit > d1) - P(first digit < d1)",
        "accuracy (answer beats distractor)": acc, "mean_metric_clean": full,
        "mean_metric_contrastive": float(contrast.mean()), "tau": tau, "ablation": ablation,
        "mean_metric_all_heads_ablated": float(base),
        "mean_active_heads": float(task_active[tau].reshape(batch.n, -1).sum(axis=1).mean()),
        **agreement,
        "acdc_threshold (share of the clean - contrastive gap)": acdc_threshold,
        "acdc_metric_start_end": [pruning.metric_start, pruning.metric_end],
        "forward_passes": {"routes": -(-batch.n // batch_size), "head_patching": patching.forward_passes,
                           "acdc_style": pruning.forward_passes},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "speed_ratio_head_patching_vs_routes": timings["head_patching_s"] / timings["routes_task_s"],
        "speed_ratio_acdc_style_vs_routes": timings["acdc_style_s"] / timings["routes_task_s"],
        "top_route_heads [layer, head, freq]": _top(f_task), "top_patching_heads [layer, head, effect]": _top(imp),
    })
    figures = {
        "patching-heatmaps": (heatmap_figure(f_task, f_diff, patching, pruning, task, tau),
                              "Side by side (x: head, y: layer, 0-based): route activation frequency, its task - "
                              "contrastive difference, head patching effect (share of the clean - contrastive gap), "
                              "heads kept by the ACDC-style run."),
        "patching-scatter": (scatter_figure(f_task, imp, task),
                             "Every head: route activation frequency against patching effect."),
        "patching-faithfulness-k": (k_figure(k_rows, task, ablation),
                                    f"Share of the clean metric that remains when the top-k heads of each ranking are "
                                    f"{ablation}-ablated (left) or are the only heads left (right)."),
        "patching-faithfulness-threshold": (threshold_figure(t_rows, task, ablation),
                                            "Share of the metric that remains when every head outside each example's "
                                            "routes is ablated, against random heads of the same count."),
    }
    explanation = (
        (warning + " " if warning else "")
        + f"{batch.n} examples of '{task}' on {loaded.name}. Routes: a head is active when it has a sub-edge in the "
        f"routes of the last position (tau = {tau}); its frequency is the share of examples where it is active. "
        "Head patching: each head's output (the input of the attention output projection, all positions) is "
        "replaced by its output on the contrastive prompt, one head at a time; the effect is the drop of the "
        "metric. ACDC-style: a simplified ACDC over heads as nodes (not edges): heads are visited from the top "
        "layer down and stay replaced by their contrastive output when that moves the mean metric by less than "
        f"{acdc_threshold} of the clean - contrastive gap. Faithfulness: {ablation}-ablation of heads (mean: the "
        "head's mean output at the same position over the clean prompts of the data set); FFN blocks are never "
        "ablated."
    )
    extra = {"patching_faithfulness_k": pa.table(k_rows), "patching_faithfulness_threshold": pa.table(t_rows),
             "patching_examples": ex_table}
    return report.Result("patching", f"Routes versus patching: {task}", explanation, table, summary, figures, extra)


def _top(mat: np.ndarray, k: int = 8) -> list[list]:
    n_heads = mat.shape[1]
    return [[int(i // n_heads), int(i % n_heads), round(float(mat.ravel()[i]), 4)] for i in top_k(mat, k)]


def heatmap_figure(f_task: np.ndarray, f_diff: np.ndarray, patching: Patching, pruning: Pruning, task: str,
                   tau: float) -> Figure:
    """Four layer x head maps side by side: frequency, task - contrastive, patching effect / gap, ACDC-style kept."""
    mats = [f_task, f_diff, np.nan_to_num(patching.normalized), pruning.kept.astype(float)]
    titles = ["routes: frequency", "routes: task - contrastive", "patching: effect / gap", "ACDC-style: kept"]
    cmaps = ["viridis", "RdBu_r", "RdBu_r", "Greys"]
    n_layers, n_heads = f_task.shape
    fig = Figure(figsize=(4 * max(2.4, 0.3 * n_heads + 1.0), 1.6 + 0.2 * n_layers), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax, mat, title, cmap in zip(axes, mats, titles, cmaps):
        lim = float(np.max(np.abs(mat))) or 1.0
        im = ax.imshow(mat, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                       vmin=-lim if cmap == "RdBu_r" else 0.0, vmax=lim)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("head")
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(0, n_layers, max(1, n_layers // 10)))
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.08, pad=0.02).ax.tick_params(labelsize=6)
    axes[0].set_ylabel("layer")
    fig.suptitle(f"{task}: routes (tau = {tau}) versus patching", fontsize=10)
    return fig


def scatter_figure(f_task: np.ndarray, imp: np.ndarray, task: str) -> Figure:
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.subplots()
    ax.scatter(f_task.ravel(), imp.ravel(), s=10)
    for i in top_k(np.abs(imp), 5):
        layer, head = divmod(int(i), imp.shape[1])
        ax.annotate(f"L{layer}H{head}", (f_task.ravel()[i], imp.ravel()[i]), fontsize=7)
    ax.set_xlabel("route activation frequency")
    ax.set_ylabel("patching effect (metric drop)")
    ax.set_title(f"{task}: rho = {spearman(f_task, np.abs(imp)):.2f} (vs |effect|)", fontsize=10)
    return fig


def k_figure(rows: dict[str, list], task: str, ablation: str) -> Figure:
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2, sharey=True)
    names = list(dict.fromkeys(rows["ranking"]))
    for ax, direction in zip(axes, ("ablate top-k", "keep only top-k")):
        random_curves = []
        for name in names:
            sel = [i for i, (r, d) in enumerate(zip(rows["ranking"], rows["direction"]))
                   if r == name and d == direction]
            ks = np.array([rows["k"][i] for i in sel])
            vals = np.array([rows["remaining"][i] for i in sel])
            if name.startswith("random"):
                random_curves.append(vals)
                continue
            ax.plot(np.maximum(ks, 0.5), vals, marker="o", ms=3, label=name)
        if random_curves:
            ax.plot(np.maximum(ks, 0.5), np.mean(random_curves, axis=0), marker="o", ms=3, ls="--", color="grey",
                    label=f"random (mean of {len(random_curves)})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k heads (0 plotted at 0.5)")
        ax.set_title(direction, fontsize=9)
        ax.axhline(1.0, color="black", lw=0.5)
    axes[0].set_ylabel("metric remaining (ablated / clean)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{task}: faithfulness over k ({ablation}-ablation)", fontsize=10)
    return fig


def threshold_figure(rows: dict[str, list], task: str, ablation: str) -> Figure:
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for kind in dict.fromkeys(rows["kind"]):
        sel = [i for i, k in enumerate(rows["kind"]) if k == kind]
        ax.plot([rows["threshold"][i] for i in sel], [rows["remaining"][i] for i in sel], marker="o", ms=3,
                label=kind)
    sel = [i for i, k in enumerate(rows["kind"]) if k == "routes"]
    for i in sel:
        ax.annotate(f"{rows['mean_heads_kept'][i]:.0f}", (rows["threshold"][i], rows["remaining"][i]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("route threshold tau (labels: mean heads kept)")
    ax.set_ylabel("metric remaining (ablated / clean)")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.legend(fontsize=7)
    ax.set_title(f"{task}: heads outside the routes {ablation}-ablated", fontsize=10)
    return fig
