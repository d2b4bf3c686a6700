"""The figures of the domain analysis (figs. 10 and 16, appendix E): layer x head grids per domain, the
specificity maps, addition against subtraction, FFN importance per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from .stats import Estimate

if TYPE_CHECKING:
    from .domains import DomainEstimates

SHOWN = 0.015  # figs. 10, 16: non-general domains show only heads with mean importance above this


def head_figures(e: DomainEstimates, shown: dict[str, np.ndarray], drawn: list[str], real: set[str],
                 shape: tuple[int, int]) -> dict[str, tuple[Figure, str]]:
    figures = {
        "domains-heads": (grid([shown[g] for g in drawn], drawn, "viridis",
                               suptitle=f"mean head importance (non-general: only > {SHOWN})"),
                          f"Mean importance of every head per domain (fig. 10); for non-general domains only heads "
                          f"with mean importance above {SHOWN} are drawn, the general domain in full."),
    }
    names = [g for g in e.spec if g in real]
    if names:
        figures["domains-specificity"] = (
            grid([e.spec_values[g].reshape(shape) for g in names], names, "RdBu_r", diverging=True,
                 suptitle="specificity: domain mean - general mean"),
            "Each head's mean importance in a domain minus its mean importance in the general domain.")
    return figures


def arithmetic_figure(shown: dict[str, np.ndarray], arithmetic: dict) -> tuple[Figure, str]:
    return (
        grid([shown["addition"], shown["subtraction"], arithmetic["difference"]],
             ["addition", "subtraction", "addition - subtraction"], ["viridis", "viridis", "RdBu_r"],
             diverging=[False, False, True], marks={"orange": arithmetic["only_addition"],
                                                    "cyan": arithmetic["only_subtraction"]},
             suptitle=f"addition vs subtraction (orange: only addition > {SHOWN}; cyan: only subtraction)"),
        "Addition and subtraction heads (fig. 16 right, appendix E) and their difference; outlined heads have "
        f"mean importance above {SHOWN} for one of the two tasks only.")


def grid(mats: list[np.ndarray], titles: list[str], cmap: str | list[str], diverging: bool | list[bool] = False,
         ncols: int = 4, suptitle: str = "", marks: dict[str, np.ndarray] | None = None) -> Figure:
    """Layer x head heatmaps ([L, H] each, NaN drawn blank) in rows of `ncols`, one colour scale per kind
    (sequential panels share one, diverging panels another), so that domains can be compared."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    n = len(mats)
    cmaps = cmap if isinstance(cmap, list) else [cmap] * n
    div = diverging if isinstance(diverging, list) else [diverging] * n
    n_layers, n_heads = mats[0].shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(1.2 + ncols * (0.9 + 0.09 * n_heads), 0.9 + nrows * (0.8 + 0.07 * n_layers)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    limits = {}
    for kind in (False, True):
        values = [np.abs(m[np.isfinite(m)]) for m, d in zip(mats, div) if d == kind]
        values = np.concatenate(values) if values else np.zeros(0)
        limits[kind] = float(values.max()) if values.size and values.max() > 0 else 1.0
    for k, ax in enumerate(axes):
        if k >= n:
            ax.axis("off")
            continue
        lim = limits[div[k]]
        im = ax.imshow(mats[k], aspect="auto", origin="lower", interpolation="nearest",
                       cmap=colormaps[cmaps[k]].with_extremes(bad="white"), vmin=-lim if div[k] else 0.0, vmax=lim)
        ax.set_title(str(titles[k]).replace("$", r"\$"), fontsize=9)
        ax.set_xlabel("head", fontsize=7)
        if k % ncols == 0:
            ax.set_ylabel("layer", fontsize=7)
        ax.tick_params(labelsize=6)
        for colour, mask in (marks or {}).items():
            for layer, head in zip(*np.nonzero(mask)):
                ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=1.5))
        if k == n - 1 or div[k] != div[min(k + 1, n - 1)]:
            fig.colorbar(im, ax=ax, fraction=0.05)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def ffn_figure(ffn: dict[str, list[Estimate]]) -> Figure:
    """Mean FFN importance per layer, one line per domain with its 95% interval as a band."""
    from matplotlib import colormaps

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for i, (g, es) in enumerate(ffn.items()):
        layers = np.arange(len(es))
        colour = colormaps["tab10"](i % 10)
        ax.plot(layers, [e.value for e in es], marker="o", ms=3, color=colour, label=g.replace("$", r"\$"))
        ax.fill_between(layers, [e.low for e in es], [e.high for e in es], color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean FFN importance")
    ax.set_title("FFN importance per layer and domain (bands: 95% intervals over texts)", fontsize=10)
    ax.legend(fontsize=7)
    return fig

