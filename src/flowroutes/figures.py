"""Pictures of routes in the paper's figure-1 style: tokens along x, layers along y.

Residual-stream nodes are dots, attention edges are blue lines from source to target token (a token reading
itself: a short arc beside the residual line), FFN blocks are pink squares between x^{lA} and x^{l+1},
residual edges are grey verticals; widths and colours follow importance. Reads `Routes` only; returns bytes
(SVG or PNG) or draws on an Axes.
"""

from __future__ import annotations

import functools
import io

from matplotlib import colormaps, font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Rectangle

from .edits import edge_id
from .routes import Routes, level

ATTENTION_CMAP = "Blues"
FFN_COLOR = "#e377c2"
RESIDUAL_COLOR = "#7f7f7f"
NODE_COLOR = "#333333"


def _width(weight: float) -> float:
    return 0.4 + 3.6 * max(0.0, min(1.0, weight))


@functools.lru_cache(maxsize=1)
def _glyphs() -> frozenset[int]:
    """The code points the figures' font draws."""
    return frozenset(FT2Font(font_manager.findfont(font_manager.FontProperties())).get_charmap())


def drawable(text: str) -> str:
    """`text` with each character the font has no glyph for written as its code point ('U+1F642'), so that no
    label draws as an empty box; a newline as '\\n'."""
    glyphs = _glyphs()
    return "".join("\\n" if c == "\n" else c if ord(c) in glyphs or c == " " else f"U+{ord(c):04X}" for c in text)


def draw_routes(routes: Routes, ax, labels: list[str] | None = None, top_label: str | None = None) -> None:
    """Draw `routes` on a matplotlib Axes. `labels`: what to show for each token (default its text; the CLI passes
    `inspection.token_display`, which shows characters split over tokens whole); `top_label` the same for the
    top prediction."""
    if labels is not None and len(labels) != len(routes.tokens):
        raise ValueError(f"{len(labels)} labels for {len(routes.tokens)} tokens")
    n_tok, n_layers = len(routes.tokens), routes.n_layers
    levels = {n.id: level(n) for n in routes.nodes}
    pos = {n.id: n.position for n in routes.nodes}
    cmap = colormaps[ATTENTION_CMAP]

    # faint grid of every residual-stream state, for orientation
    for lv in range(0, 2 * n_layers + 1):
        ax.scatter(range(n_tok), [lv] * n_tok, s=2, color="#dddddd", zorder=0, linewidths=0)

    for i, e in enumerate(routes.edges):  # edge i is drawn as the artist with gid "edge-i" (an SVG element's id)
        x0, y0, x1, y1 = pos[e.source], levels[e.source], pos[e.target], levels[e.target]
        if e.kind == "attention" and x0 == x1:  # a token reading itself: an arc left of the residual line
            xs = [x0, x0 - 0.18, x1]
            ax.plot(xs, [y0, (y0 + y1) / 2, y1], color=cmap(0.35 + 0.65 * min(1.0, e.weight)), lw=_width(e.weight),
                    alpha=0.9, zorder=2, solid_capstyle="round", gid=f"edge-{i}")
        elif e.kind == "attention":
            ax.plot([x0, x1], [y0, y1], color=cmap(0.35 + 0.65 * min(1.0, e.weight)), lw=_width(e.weight),
                    alpha=0.9, zorder=2, solid_capstyle="round", gid=f"edge-{i}")
        elif e.kind == "residual":
            ax.plot([x0, x1], [y0, y1], color=RESIDUAL_COLOR, lw=_width(e.weight), alpha=0.7, zorder=1,
                    gid=f"edge-{i}")
        else:  # ffn: a block drawn to the right of the residual line
            xm, ym = x0 + 0.22, (y0 + y1) / 2
            ax.plot([x0, xm, x1], [y0, ym, y1], color=FFN_COLOR, lw=_width(e.weight), alpha=0.8, zorder=2,
                    gid=f"edge-{i}")
            size = 0.14 + 0.2 * min(1.0, e.weight)
            ax.add_patch(Rectangle((xm - size / 2, ym - size * 1.6), size, size * 3.2, facecolor=FFN_COLOR,
                                   edgecolor="#a0327a", lw=0.6, zorder=3, gid=f"ffn-block-{i}"))

    xs = [n.position for n in routes.nodes]
    ys = [levels[n.id] for n in routes.nodes]
    colors = [NODE_COLOR if n.kind == "residual" else "#1f4e9c" for n in routes.nodes]
    sizes = [16 if n.kind == "residual" else 9 for n in routes.nodes]
    ax.scatter(xs, ys, s=sizes, c=colors, zorder=4, linewidths=0)
    top_y = 2 * n_layers
    ax.scatter([routes.position], [top_y], s=80, facecolors="none", edgecolors="#d62728", lw=1.5, zorder=5)

    ax.set_xticks(range(n_tok))
    ax.set_xticklabels([drawable(t) for t in (labels if labels is not None else routes.token_texts)], rotation=45,
                       ha="right", fontsize=9)
    step = 1 if n_layers <= 16 else 2
    ticks = list(range(0, n_layers + 1, step))
    ax.set_yticks([2 * t for t in ticks])
    ax.set_yticklabels(["x0 (emb)" if t == 0 else f"x{t}" for t in ticks], fontsize=8)
    ax.set_ylabel("residual x^l: the input of block l")
    ax.set_xlim(-0.7, n_tok - 0.3)
    ax.set_ylim(-0.8, top_y + 1.2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if routes.edits is not None:
        _draw_edits(routes, ax, pos, levels)
    if routes.top_tokens:
        top = drawable(top_label if top_label is not None else routes.top_tokens[0])
        ax.annotate(f"'{top}' {routes.top_probs[0]:.0%}", (routes.position, top_y),
                    xytext=(0, 10), textcoords="offset points", ha="center", fontsize=10, color="#d62728")


def _draw_edits(routes: Routes, ax, pos: dict[str, int], levels: dict[str, int]) -> None:
    """What a person edited in the explorer (`routes.edits`): pinned nodes ringed in red (a pinned edge rings its
    ends), each supernode outlined around its members with its label, each note written beside its node or at
    its edge's middle."""
    edits = routes.edits
    by_id = {edge_id(e.kind, e.source, e.target): e for e in routes.edges}
    pinned = list(edits.pinned_nodes) + [end for k in edits.pinned_edges for end in (by_id[k].source, by_id[k].target)]
    if pinned:
        ax.scatter([pos[n] for n in pinned], [levels[n] for n in pinned], s=60, facecolors="none",
                   edgecolors="#d62728", lw=1.2, zorder=5)
    for s in edits.supernodes:
        xs, ys = [pos[n] for n in s.nodes], [levels[n] for n in s.nodes]
        x0, y0 = min(xs) - 0.25, min(ys) - 0.6
        ax.add_patch(Rectangle((x0, y0), max(xs) - min(xs) + 0.5, max(ys) - min(ys) + 1.2, facecolor="#7b3fa0",
                               alpha=0.12, edgecolor="#7b3fa0", lw=1.2, zorder=1))
        ax.annotate(drawable(s.label), (x0, max(ys) + 0.6), xytext=(0, 2), textcoords="offset points", fontsize=8,
                    color="#3d1752", fontweight="bold", zorder=6)
    for key, note in edits.notes.items():
        if key in pos:
            at = (pos[key], levels[key])
        else:
            e = by_id[key]
            at = ((pos[e.source] + pos[e.target]) / 2, (levels[e.source] + levels[e.target]) / 2)
        ax.annotate(drawable(note), at, xytext=(6, 6), textcoords="offset points", fontsize=7, color="#5c4100",
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "#fff4cc", "edgecolor": "#e9a100", "lw": 0.6},
                    zorder=6)


def routes_figure(routes: Routes, labels: list[str] | None = None, top_label: str | None = None) -> Figure:
    n_tok, n_layers = len(routes.tokens), routes.n_layers
    fig = Figure(figsize=(max(6.0, 0.75 * n_tok + 1.8), max(4.5, 0.2 * (2 * n_layers + 1) + 2.2)), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    draw_routes(routes, ax, labels, top_label)
    tau = (f"tau={routes.attention_threshold:g}" if routes.attention_threshold == routes.ffn_threshold
           else f"tau_attn={routes.attention_threshold:g}, tau_ffn={routes.ffn_threshold:g}")
    ax.set_title(f"Information flow routes - {routes.model_name}, position {routes.position}, {tau}\n"
                 f"blue: attention   pink: FFN   grey: residual   ({len(routes.edges)} edges, "
                 f"{len(routes.active_heads)} active heads)", fontsize=9)
    fig.tight_layout()
    return fig


def render_routes(routes: Routes, fmt: str = "svg", labels: list[str] | None = None,
                  top_label: str | None = None) -> bytes:
    """The routes picture as SVG or PNG bytes (`labels`, `top_label`: see `draw_routes`)."""
    if fmt not in {"svg", "png"}:
        raise ValueError(f"format must be 'svg' or 'png', got {fmt!r}")
    buf = io.BytesIO()
    routes_figure(routes, labels, top_label).savefig(buf, format=fmt)
    return buf.getvalue()
