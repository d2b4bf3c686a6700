"""The comparison's figures: layer x head maps, routes frequency against patching effect, faithfulness over k and
over the route threshold."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .methods import Patching, Pruning
from .scores import spearman, top_k


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

