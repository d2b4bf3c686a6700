"""Routes versus activation patching on one task: agreement, faithfulness curves, timings, figures, report.

`compare_patching(model, task)` runs the routes, head patching, the ACDC-style pruning and the ablations on
the same examples and returns a `report.Result` (tables, summary, figures, HTML). No CLI parsing.

The data's path, one step each: `check_task` (can the model do the task? clean / contrastive metric) ->
`route_frequencies` (which heads the routes use) -> `head_patching`, `acdc_prune` (the baselines, `methods`) ->
`ablation_curves` (faithfulness over k and over the route threshold) -> `comparison_report` (tables, summary,
figures, text). N examples, L layers, H heads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from .. import checks, report
from ..errors import FlowroutesError
from ..models.loading import LoadedModel, load_model
from .core import TaskBatch, accuracy, prepare, run_metric
from .figures import heatmap_figure, k_figure, scatter_figure, threshold_figure
from .methods import ABLATIONS, Patching, Pruning, ablated_metric, ablation_values, acdc_prune, head_patching
from .scores import route_masks, spearman, top_k, top_k_overlap

DEFAULT_THRESHOLDS = (0.01, 0.02, 0.04, 0.08, 0.16)


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


@dataclass
class TaskCheck:
    """Can the model do the task? clean / contrastive: [N] metric on each prompt and on its contrastive prompt;
    accuracy: share of examples whose answer beats the distractor; warning: "" or, when forced, why the
    comparison runs on noise."""

    clean: np.ndarray
    contrastive: np.ndarray
    accuracy: float
    warning: str
    seconds: float


@dataclass
class RouteFrequencies:
    """Which heads the routes use. active: tau -> [N, L, H] bool, the head has a sub-edge in the routes of
    example n's last position; task / contrastive: [L, H] share of examples (prompts / contrastive prompts) where
    the head is active at `tau`; difference = task - contrastive."""

    tau: float
    active: dict[float, np.ndarray]
    task: np.ndarray
    contrastive: np.ndarray
    difference: np.ndarray
    forward_passes: int
    seconds: float  # the task prompts' routes only: the cost compared with patching


@dataclass
class AblationCurves:
    """Faithfulness. full / base: mean metric of the clean model and with every head ablated; over_k: columns of
    one row per (ranking, k, direction); over_threshold: columns of one row per (route threshold, routes or random
    heads of the same count). Each row has the metric, its share of `full` and its place between base and full."""

    ablation: str
    full: float
    base: float
    over_k: dict[str, list]
    over_threshold: dict[str, list]
    seconds: float


@dataclass
class Comparison:
    """Everything one comparison measured, before it becomes tables, summary, figures and text."""

    task: str
    model: str
    batch: TaskBatch
    check: TaskCheck
    routes: RouteFrequencies
    patching: Patching
    pruning: Pruning
    curves: AblationCurves
    timings: dict[str, float]


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

    check = check_task(loaded, batch, task, batch_size, min_accuracy, force)  # reported before any comparison
    warm_up(loaded, batch)  # the engine's first-call costs are not the routes' (they read 15.7x for 259 passes)
    routes = route_frequencies(loaded, batch, tau, thresholds, batch_size, progress)
    patching, patching_s = _timed(head_patching, loaded, batch, batch_size, progress)
    pruning, pruning_s = _timed(acdc_prune, loaded, batch, acdc_threshold, batch_size, progress)
    curves = ablation_curves(loaded, batch, check, routes, patching, ablation=ablation, ks=ks,
                             random_repeats=random_repeats, seed=seed, batch_size=batch_size, progress=progress)
    # the routes timed again after patching: the slower of the two runs makes the speed ratios (a machine whose
    # load changes during the long patching runs cannot inflate them)
    routes_again = route_frequencies(loaded, batch, tau, thresholds, batch_size, False, contrastive=False).seconds
    timings = {"clean_and_contrastive_passes_s": check.seconds, "routes_task_s": max(routes.seconds, routes_again),
               "routes_task_runs_s": [routes.seconds, routes_again], "head_patching_s": patching_s,
               "acdc_style_s": pruning_s, "faithfulness_s": curves.seconds}
    return comparison_report(Comparison(task, loaded.name, batch, check, routes, patching, pruning, curves, timings))


def warm_up(loaded: LoadedModel, batch: TaskBatch) -> None:
    """One untimed lazy trace of the first prompt and its routes, so that one-off costs of a process's first trace
    (allocator growth, lazily built kernels and caches) are not timed as the routes'. Found on a planted model of
    known pass cost (each pass sleeping 50 ms, 256 heads): the ACDC-style run made 259 passes against the routes'
    1, and the ratio read 15.7 with the cold first run timed, 170 with it warm."""
    import flowroutes

    flowroutes.trace(loaded, [batch.examples[0].prompt], batch_size=1, progress=False, lazy=True,
                     predictions="last").routes(0.5)


def _timed(step: Callable, *args) -> tuple[Any, float]:
    """(step(*args), its wall-clock seconds)."""
    t0 = time.perf_counter()
    out = step(*args)
    return out, time.perf_counter() - t0


def check_task(loaded: LoadedModel, batch: TaskBatch, task: str, batch_size: int, min_accuracy: float,
               force: bool) -> TaskCheck:
    """The clean and contrastive metric of every example; raises FlowroutesError when the accuracy is below
    `min_accuracy` (a warning instead when `force`)."""
    t0 = time.perf_counter()
    chunks = [batch.rows(s, s + batch_size) for s in range(0, batch.n, batch_size)]
    clean = np.concatenate([run_metric(loaded, c).numpy() for c in chunks])  # [N]
    contrast = np.concatenate([run_metric(loaded, c, contrastive=True).numpy() for c in chunks])  # [N]
    acc = accuracy(clean)
    warning = ""
    if acc < min_accuracy:
        msg = (f"{loaded.name} cannot do the task '{task}': the answer beats the distractor in {acc:.0%} of "
               f"{batch.n} examples (chance 50%, required {min_accuracy:.0%}), so routes and patching would be "
               "compared on noise; use a larger model or another task (or force the comparison)")
        if not force:
            raise FlowroutesError(msg)
        warning = "WARNING: " + msg
    return TaskCheck(clean, contrast, acc, warning, time.perf_counter() - t0)


def route_frequencies(loaded: LoadedModel, batch: TaskBatch, tau: float, thresholds: tuple[float, ...],
                      batch_size: int, progress: bool, contrastive: bool = True) -> RouteFrequencies:
    """Routes of the last position of every prompt (at `tau` and every threshold) and of every contrastive
    prompt (at `tau`; with `contrastive` False their frequency is NaN), reduced to which heads are active. Batched
    lazy traces: one forward pass per batch, the rows the routes reach computed for the whole batch at once, and
    shared by every threshold. `seconds` times the task prompts' routes only."""
    import flowroutes

    n_layers, n_heads = loaded.adapter.n_layers, loaded.adapter.n_heads

    def lazy(prompts):
        return flowroutes.trace(loaded, prompts, batch_size=batch_size, progress=progress, lazy=True,
                                predictions="last")

    t0 = time.perf_counter()
    traces = lazy([e.prompt for e in batch.examples])
    active = {t: route_masks(traces.routes(t), n_layers, n_heads) for t in sorted({tau, *thresholds})}  # [N, L, H]
    seconds = time.perf_counter() - t0
    del traces
    f_task = active[tau].mean(axis=0)  # [L, H]
    if contrastive:
        f_con = route_masks(lazy([e.contrastive for e in batch.examples]).routes(tau), n_layers, n_heads).mean(axis=0)
    else:
        f_con = np.full_like(f_task, np.nan)
    return RouteFrequencies(tau, active, f_task, f_con, f_task - f_con, -(-batch.n // batch_size), seconds)


def agreement(routes: RouteFrequencies, patching: Patching, pruning: Pruning) -> dict[str, float]:
    """Rank correlations and top-k overlaps of route frequencies with patching effects, and the share of the
    ACDC-style heads among the top route heads."""
    f_task, f_diff, imp = routes.task, routes.difference, patching.importance  # [L, H] each
    out = {
        "spearman(route frequency, |patching effect|)": spearman(f_task, np.abs(imp)),
        "spearman(route frequency task - contrastive, patching effect)": spearman(f_diff, imp),
    }
    for k in (5, 10, 20):
        if k <= f_task.size:
            out[f"top-{k} overlap (frequency vs |effect|)"] = top_k_overlap(f_task, np.abs(imp), k)
            out[f"top-{k} overlap (task - contrastive vs effect)"] = top_k_overlap(f_diff, imp, k)
    n_kept = int(pruning.kept.sum())
    if n_kept:
        out["ACDC-style kept heads"] = n_kept
        out["share of ACDC-style heads among the top route heads (same count)"] = top_k_overlap(
            f_task, pruning.kept.astype(float) + 1e-9 * np.abs(imp), n_kept)
    return out


def ablation_curves(loaded: LoadedModel, batch: TaskBatch, check: TaskCheck, routes: RouteFrequencies,
                    patching: Patching, *, ablation: str, ks: list[int] | None, random_repeats: int, seed: int,
                    batch_size: int, progress: bool) -> AblationCurves:
    """The metric left when heads are `ablation`-ablated: the top-k heads of each ranking (routes, patching,
    random) or all but them, and every head outside each example's routes (or as many random heads)."""
    t0 = time.perf_counter()
    shape = routes.task.shape  # (L, H)
    values = ablation_values(loaded, batch, ablation, batch_size)

    def metric(ablate: np.ndarray) -> float:  # ablate: [L, H] or [N, L, H] bool
        return float(ablated_metric(loaded, batch, ablate, values, batch_size).mean())

    full, base = float(check.clean.mean()), metric(np.ones(shape, bool))
    rng = np.random.default_rng(seed)  # random rankings first, then the random heads per threshold
    rankings = {"routes: frequency": top_k(routes.task, routes.task.size),
                "routes: task - contrastive": top_k(routes.difference, routes.difference.size),
                "patching: effect": top_k(patching.importance, patching.importance.size)}
    for r in range(random_repeats):
        rankings[f"random #{r}"] = rng.permutation(routes.task.size)
    ks = sorted(set(ks if ks is not None else _ks(routes.task.size)))
    over_k = _curves_over_k(metric, rankings, ks, shape, full, base, progress)
    over_threshold = _curves_over_threshold(metric, routes.active, rng, full, base)
    return AblationCurves(ablation, full, base, over_k, over_threshold, time.perf_counter() - t0)


def _add_metric(rows: dict[str, list], value: float, full: float, base: float) -> None:
    """Append a metric, its share of the clean metric and its place between base (0) and clean (1)."""
    rows["metric"].append(value)
    rows["remaining"].append(value / full if full else float("nan"))
    rows["remaining_normalized"].append((value - base) / (full - base) if full != base else float("nan"))


def _curves_over_k(metric: Callable[[np.ndarray], float], rankings: dict[str, np.ndarray], ks: list[int],
                   shape: tuple[int, int], full: float, base: float, progress: bool) -> dict[str, list]:
    from tqdm.auto import tqdm

    rows: dict[str, list] = {"ranking": [], "k": [], "direction": [], "metric": [], "remaining": [],
                             "remaining_normalized": []}
    bar = tqdm(total=len(rankings) * len(ks) * 2, disable=not progress, desc="faithfulness over k", unit="point")
    seen: dict[bytes, float] = {  # the same set of ablated heads is run once (e.g. k = 0 for every ranking)
        np.packbits(np.ones(shape, bool)).tobytes(): base, np.packbits(np.zeros(shape, bool)).tobytes(): full}
    for name, order in rankings.items():
        for k in ks:
            mask = _mask_from(order, k, shape)  # [L, H]
            for direction, ablate in (("ablate top-k", mask), ("keep only top-k", ~mask)):
                key = np.packbits(ablate).tobytes()
                if key not in seen:
                    seen[key] = metric(ablate)
                rows["ranking"].append(name)
                rows["k"].append(k)
                rows["direction"].append(direction)
                _add_metric(rows, seen[key], full, base)
                bar.update(1)
    bar.close()
    return rows


def _curves_over_threshold(metric: Callable[[np.ndarray], float], active: dict[float, np.ndarray],
                           rng: np.random.Generator, full: float, base: float) -> dict[str, list]:
    rows: dict[str, list] = {"threshold": [], "kind": [], "mean_heads_kept": [], "metric": [], "remaining": [],
                             "remaining_normalized": []}
    for t, act in active.items():  # act: [N, L, H]
        counts = act.reshape(len(act), -1).sum(axis=1)  # [N]
        rand = np.zeros_like(act)
        for i, c in enumerate(counts):
            rand[i].flat[rng.choice(act.shape[1] * act.shape[2], size=int(c), replace=False)] = True
        for kind, kept in (("routes", act), ("random heads, same count", rand)):
            rows["threshold"].append(t)
            rows["kind"].append(kind)
            rows["mean_heads_kept"].append(float(counts.mean()))
            _add_metric(rows, metric(~kept), full, base)
    return rows


def comparison_report(c: Comparison) -> report.Result:
    """The comparison as a report: one row per head, one per example, the faithfulness tables, summary,
    figures and the text explaining them."""
    extra = {"patching_faithfulness_k": pa.table(c.curves.over_k),
             "patching_faithfulness_threshold": pa.table(c.curves.over_threshold),
             "patching_examples": _examples_table(c)}
    return report.Result("patching", f"Routes versus patching: {c.task}", _explanation(c), _heads_table(c),
                         _summary(c), _figures(c), extra)


def _heads_table(c: Comparison) -> pa.Table:
    n_layers, n_heads = c.routes.task.shape
    grid_l, grid_h = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
    return pa.table({
        "layer": pa.array(grid_l.ravel(), pa.int32()), "head": pa.array(grid_h.ravel(), pa.int32()),
        "route_frequency_task": c.routes.task.ravel(), "route_frequency_contrastive": c.routes.contrastive.ravel(),
        "route_frequency_difference": c.routes.difference.ravel(), "patching_effect": c.patching.importance.ravel(),
        "patching_effect_normalized": c.patching.normalized.ravel(), "acdc_kept": c.pruning.kept.ravel(),
        "acdc_delta": c.pruning.delta.ravel(),
    })


def _examples_table(c: Comparison) -> pa.Table:
    examples = c.batch.examples
    return pa.table({
        "prompt": [e.prompt for e in examples], "contrastive": [e.contrastive for e in examples],
        "answer": [e.answer for e in examples], "wrong": [e.wrong for e in examples],
        "metric_clean": c.check.clean, "metric_contrastive": c.check.contrastive,
        "routes_active_heads": pa.array([np.flatnonzero(a.ravel()).astype(np.int32).tolist()
                                         for a in c.routes.active[c.routes.tau]], pa.list_(pa.int32())),
        # each example's head patching effects [L * H] (clean - patched metric), so that intervals can resample
        # the patching side too
        "patching_effects": pa.array([e.ravel().tolist() for e in c.patching.effect], pa.list_(pa.float64())),
    })


def _summary(c: Comparison) -> dict[str, Any]:
    batch, routes, timings = c.batch, c.routes, c.timings
    summary: dict[str, Any] = {"warning": c.check.warning} if c.check.warning else {}
    summary.update({
        "task": c.task, "model": c.model, "examples": batch.n, "pairs_dropped_length_mismatch": batch.dropped,
        "metric": "logit(answer) - logit(distractor)" if batch.kind == "logit_diff" else
                  "P(first digit > d1) - P(first digit < d1)",
        "accuracy (answer beats distractor)": c.check.accuracy, "mean_metric_clean": c.curves.full,
        "mean_metric_contrastive": float(c.check.contrastive.mean()), "tau": routes.tau,
        "ablation": c.curves.ablation, "mean_metric_all_heads_ablated": c.curves.base,
        "mean_active_heads": float(routes.active[routes.tau].reshape(batch.n, -1).sum(axis=1).mean()),
        **agreement(routes, c.patching, c.pruning),
        "acdc_threshold (share of the clean - contrastive gap)": c.pruning.threshold,
        "acdc_metric_start_end": [c.pruning.metric_start, c.pruning.metric_end],
        "forward_passes": {"routes": routes.forward_passes, "head_patching": c.patching.forward_passes,
                           "acdc_style": c.pruning.forward_passes},
        "timings_s": {k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v])
                      for k, v in timings.items()},
        "speed_ratio_head_patching_vs_routes": timings["head_patching_s"] / timings["routes_task_s"],
        "speed_ratio_acdc_style_vs_routes": timings["acdc_style_s"] / timings["routes_task_s"],
        "top_route_heads [layer, head, freq]": _top(routes.task),
        "top_patching_heads [layer, head, effect]": _top(c.patching.importance),
    })
    return summary


def _figures(c: Comparison) -> dict[str, tuple[Figure, str]]:
    task, ablation, routes = c.task, c.curves.ablation, c.routes
    return {
        "patching-heatmaps": (heatmap_figure(routes.task, routes.difference, c.patching, c.pruning, task, routes.tau),
                              "Side by side (x: head, y: layer, 0-based): route activation frequency, its task - "
                              "contrastive difference, head patching effect (share of the clean - contrastive gap), "
                              "heads kept by the ACDC-style run."),
        "patching-scatter": (scatter_figure(routes.task, c.patching.importance, task),
                             "Every head: route activation frequency against patching effect."),
        "patching-faithfulness-k": (k_figure(c.curves.over_k, task, ablation),
                                    f"Share of the clean metric that remains when the top-k heads of each ranking are "
                                    f"{ablation}-ablated (left) or are the only heads left (right)."),
        "patching-faithfulness-threshold": (threshold_figure(c.curves.over_threshold, task, ablation),
                                            "Share of the metric that remains when every head outside each example's "
                                            "routes is ablated, against random heads of the same count."),
    }


def _explanation(c: Comparison) -> str:
    warning, ablation = c.check.warning, c.curves.ablation
    return (
        (warning + " " if warning else "")
        + f"{c.batch.n} examples of '{c.task}' on {c.model}. Routes: a head is active when it has a sub-edge in the "
        f"routes of the last position (tau = {c.routes.tau}); its frequency is the share of examples where it is "
        "active. Head patching: each head's output (the input of the attention output projection, all positions) is "
        "replaced by its output on the contrastive prompt, one head at a time; the effect is the drop of the "
        "metric. ACDC-style: a simplified ACDC over heads as nodes (not edges): heads are visited from the top "
        "layer down and stay replaced by their contrastive output when that moves the mean metric by less than "
        f"{c.pruning.threshold} of the clean - contrastive gap. Faithfulness: {ablation}-ablation of heads (mean: the "
        "head's mean output at the same position over the clean prompts of the data set); FFN blocks are never "
        "ablated."
    )


def _top(mat: np.ndarray, k: int = 8) -> list[list]:
    n_heads = mat.shape[1]
    return [[int(i // n_heads), int(i % n_heads), round(float(mat.ravel()[i]), 4)] for i in top_k(mat, k)]

