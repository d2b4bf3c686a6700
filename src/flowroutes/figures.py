"""Pictures of routes in the paper's figure-1 style: tokens along x, layers along y.

Residual-stream nodes are dots, attention edges are blue lines from source to target token (a token reading
itself: a short arc beside the residual line), FFN blocks are pink squares between x^{lA} and x^{l+1},
residual edges are grey verticals; widths and colours follow importance. A Routes' `edits` are drawn as the
explorer shows them (hidden, faded, supernodes with summed edges, pins, notes), so that `render_routes` and the
explorer's picture downloads are one picture. Reads `Routes` only; returns bytes (SVG or PNG) or draws on an Axes.
"""

from __future__ import annotations

import functools
import io
import math
import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from matplotlib import colormaps, font_manager, rc_context
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.patches import Rectangle

from . import formatting
from .edits import edge_id, ids_of, subgraph, supernode_edges
from .routes import Routes, level

ATTENTION_CMAP = "Blues"
FFN_COLOR = "#e377c2"
RESIDUAL_COLOR = "#7f7f7f"
NODE_COLOR = "#333333"
SUPERNODE_COLOR = "#7b3fa0"
FADED_ALPHA = 0.12  # the alpha of what focus "fade" leaves outside the subgraph (the explorer's opacity for it)
NOTE_CHARS = 40  # a note longer than this is drawn cut, with an ellipsis; the SVG's tooltip holds it whole


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


def draw_routes(routes: Routes, ax, labels: list[str] | None = None, top_label: str | None = None) -> dict[str, str]:
    """Draw `routes` on a matplotlib Axes, with what `routes.edits` asks (see `_Look`). `labels`: what to show for
    each token (default its text; the CLI passes `inspection.token_display`, which shows characters split over
    tokens whole); `top_label` the same for the top prediction. Returns the tooltips: SVG element id -> text."""
    if labels is not None and len(labels) != len(routes.tokens):
        raise ValueError(f"{len(labels)} labels for {len(routes.tokens)} tokens")
    n_tok, n_layers = len(routes.tokens), routes.n_layers
    look = _Look.of(routes)
    cmap = colormaps[ATTENTION_CMAP]

    # faint grid of every residual-stream state, for orientation
    for lv in range(0, 2 * n_layers + 1):
        ax.scatter(range(n_tok), [lv] * n_tok, s=2, color="#dddddd", zorder=0, linewidths=0)

    for i, e in enumerate(routes.edges):  # edge i is drawn as the artist with gid "edge-i" (an SVG element's id)
        key = edge_id(e.kind, e.source, e.target)
        if key in look.hidden or e.source in look.group or e.target in look.group:
            continue  # hidden, or drawn as a supernode's summed edge
        (x0, y0), (x1, y1) = look.at[e.source], look.at[e.target]
        faded = key in look.faded
        if e.kind == "attention":  # a token reading itself: an arc left of the residual line
            xs, ys = ([x0, x0 - 0.18, x1], [y0, (y0 + y1) / 2, y1]) if x0 == x1 else ([x0, x1], [y0, y1])
            ax.plot(xs, ys, color=cmap(0.35 + 0.65 * min(1.0, e.weight)), lw=_width(e.weight),
                    alpha=FADED_ALPHA if faded else 0.9, zorder=2, solid_capstyle="round", gid=f"edge-{i}")
        elif e.kind == "residual":
            ax.plot([x0, x1], [y0, y1], color=RESIDUAL_COLOR, lw=_width(e.weight), alpha=FADED_ALPHA if faded else 0.7,
                    zorder=1, gid=f"edge-{i}")
        else:  # ffn: a block drawn to the right of the residual line
            xm, ym = x0 + 0.22, (y0 + y1) / 2
            ax.plot([x0, xm, x1], [y0, ym, y1], color=FFN_COLOR, lw=_width(e.weight),
                    alpha=FADED_ALPHA if faded else 0.8, zorder=2, gid=f"edge-{i}")
            size = 0.14 + 0.2 * min(1.0, e.weight)
            ax.add_patch(Rectangle((xm - size / 2, ym - size * 1.6), size, size * 3.2, facecolor=FFN_COLOR,
                                   edgecolor="#a0327a", lw=0.6, zorder=3, alpha=FADED_ALPHA if faded else None,
                                   gid=f"ffn-block-{i}"))

    for gid, faded in (("nodes", False), ("nodes-faded", True)):  # the residual-stream states drawn on their own
        shown = [n for n in routes.nodes if n.id not in look.hidden and n.id not in look.group
                 and (n.id in look.faded) == faded]
        if shown:
            ax.scatter([n.position for n in shown], [level(n) for n in shown],
                       s=[16 if n.kind == "residual" else 9 for n in shown],
                       c=[NODE_COLOR if n.kind == "residual" else "#1f4e9c" for n in shown], zorder=4, linewidths=0,
                       alpha=FADED_ALPHA if faded else None, gid=gid)
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
    tips = _draw_edits(routes, ax, look) if routes.edits is not None else {}
    if routes.top_tokens:
        top = drawable(top_label if top_label is not None else routes.top_tokens[0])
        ax.annotate(f"'{top}' {routes.top_probs[0]:.0%}", (routes.position, top_y),
                    xytext=(0, 10), textcoords="offset points", ha="center", fontsize=10, color="#d62728")
    return tips


@dataclass
class _Look:
    """How `routes.edits` says to draw each node and edge, as the explorer shows them: with focus "hide" what is
    outside the subgraph (`edits.subgraph`) is not drawn, with "fade" it is drawn at FADED_ALPHA; the members of a
    supernode are drawn as one node at their centre, their edges as its summed edges (`edits.supernode_edges`)."""

    hidden: set[str]  # node and edge ids not drawn
    faded: set[str]  # node and edge ids drawn faded
    group: dict[str, str]  # member node id -> its supernode's label
    at: dict[str, tuple[float, float]]  # node id or supernode label -> where it is drawn (x = position, y = level)
    summed: list[dict[str, Any]]  # supernode_edges, each with "faded" and "hidden" added

    @classmethod
    def of(cls, routes: Routes) -> _Look:
        at = {n.id: (float(n.position), float(level(n))) for n in routes.nodes}
        edits = routes.edits
        if edits is None:
            return cls(set(), set(), {}, at, [])
        group = {n: s.label for s in edits.supernodes for n in s.nodes}
        for s in edits.supernodes:
            at[s.label] = (sum(at[n][0] for n in s.nodes) / len(s.nodes), sum(at[n][1] for n in s.nodes) / len(s.nodes))
        kept_nodes, kept_edges = subgraph(routes, edits)
        out = ({n.id for n in routes.nodes} - kept_nodes) | (set(ids_of(routes)[1]) - kept_edges)
        focusing = edits.focus != "all" and bool(kept_nodes)
        hidden = out if focusing and edits.focus == "hide" else set()
        faded = out if focusing and edits.focus == "fade" else set()
        summed = []
        for s in supernode_edges(routes, edits):
            kept = any(k in kept_edges for k in s["edges"])
            summed.append({**s, "hidden": focusing and not kept and edits.focus == "hide",
                           "faded": focusing and not kept and edits.focus == "fade"})
        return cls(hidden, faded, group, at, summed)

    def where(self, key: str, ends: dict[str, tuple[str, str]]) -> tuple[float, float]:
        """Where node or edge `key` is drawn: a node at its supernode's centre when grouped, an edge at its middle."""
        if key not in ends:
            return self.at[self.group.get(key, key)]
        (x0, y0), (x1, y1) = (self.at[self.group.get(n, n)] for n in ends[key])
        return (x0 + x1) / 2, (y0 + y1) / 2


def _cut(note: str) -> str:
    """A note as the picture writes it: on one line, at most NOTE_CHARS characters (cut with an ellipsis)."""
    text = " ".join(note.split())
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1].rstrip() + "\u2026"


def _draw_edits(routes: Routes, ax, look: _Look) -> dict[str, str]:
    """What a person edited in the explorer (`routes.edits`), beyond hiding and fading: each supernode as one
    labelled node with its summed edges, pinned nodes ringed in red (a pinned edge rings its ends, a grouped node
    its supernode), each note (cut) beside its node or at its edge's middle. Returns the tooltips by SVG id."""
    edits = routes.edits
    tips: dict[str, str] = {}
    ends = {edge_id(e.kind, e.source, e.target): (e.source, e.target) for e in routes.edges}
    for k, s in enumerate(look.summed):
        if s["hidden"]:
            continue
        (x0, y0), (x1, y1) = look.at[s["source"]], look.at[s["target"]]
        ax.plot([x0, x1], [y0, y1], color=SUPERNODE_COLOR, lw=_width(s["weight"]),
                alpha=FADED_ALPHA if s["faded"] else 0.85, zorder=2, solid_capstyle="round", gid=f"super-edge-{k}")
        tips[f"super-edge-{k}"] = (f"summed edge {s['source']} -> {s['target']}: weight {s['weight']:.4f} "
                                   f"({formatting.count(len(s['edges']), 'edge')})")
    for k, s in enumerate(edits.supernodes):
        x, y = look.at[s.label]
        ax.text(x, y, drawable(s.label), ha="center", va="center", fontsize=8, color="#3d1752", fontweight="bold",
                zorder=6, gid=f"supernode-{k}",
                bbox={"boxstyle": "round,pad=0.35", "facecolor": "#efe3f7", "edgecolor": SUPERNODE_COLOR, "lw": 1.2})
        tips[f"supernode-{k}"] = f"supernode {s.label}: {', '.join(s.nodes)}"
    pinned = [*edits.pinned_nodes, *(end for key in edits.pinned_edges for end in ends[key])]
    rings = list(dict.fromkeys(look.where(n, ends) for n in pinned))
    if rings:
        ax.scatter([x for x, _ in rings], [y for _, y in rings], s=60, facecolors="none", edgecolors="#d62728",
                   lw=1.2, zorder=5, gid="pins")
    for k, (key, note) in enumerate(edits.notes.items()):
        if key in look.hidden:
            continue
        ax.annotate(drawable(_cut(note)), look.where(key, ends), xytext=(6, 6), textcoords="offset points",
                    fontsize=7, color="#5c4100", alpha=FADED_ALPHA if key in look.faded else None, zorder=6,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "#fff4cc", "edgecolor": "#e9a100", "lw": 0.6,
                          "alpha": FADED_ALPHA if key in look.faded else None}, gid=f"note-{k}")
        tips[f"note-{k}"] = f"note on {key}: {note}"
    return tips


def _edits_caption(routes: Routes) -> str:
    """What the title says the edits changed ('' when nothing was hidden, faded or grouped)."""
    look = _Look.of(routes)
    total = len(routes.nodes) + len(routes.edges)
    parts = [f"{len(look.hidden)} of {total} nodes and edges hidden" if look.hidden else "",
             f"{len(look.faded)} of {total} nodes and edges faded" if look.faded else "",
             formatting.count(len(routes.edits.supernodes), "supernode") if routes.edits and routes.edits.supernodes
             else ""]
    parts = [p for p in parts if p]
    return f"; edited: {', '.join(parts)}" if parts else ""


def routes_figure(routes: Routes, labels: list[str] | None = None, top_label: str | None = None) -> Figure:
    """The routes picture as a matplotlib Figure (`labels`, `top_label`: see `draw_routes`)."""
    return _figure(routes, labels, top_label)[0]


def _figure(routes: Routes, labels: list[str] | None, top_label: str | None) -> tuple[Figure, dict[str, str]]:
    """The figure and its tooltips (SVG element id -> text)."""
    n_tok, n_layers = len(routes.tokens), routes.n_layers
    fig = Figure(figsize=(max(6.0, 0.75 * n_tok + 1.8), max(4.5, 0.2 * (2 * n_layers + 1) + 2.2)), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    tips = draw_routes(routes, ax, labels, top_label)
    tau = (f"tau={routes.attention_threshold:g}" if routes.attention_threshold == routes.ffn_threshold
           else f"tau_attn={routes.attention_threshold:g}, tau_ffn={routes.ffn_threshold:g}")
    ax.set_title(f"Information flow routes - {routes.model_name}, position {routes.position}, {tau}\n"
                 f"blue: attention   pink: FFN   grey: residual   ({len(routes.edges)} edges, "
                 f"{len(routes.active_heads)} active heads{_edits_caption(routes)})", fontsize=9)
    fig.tight_layout()
    return fig, tips


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def render_routes(routes: Routes, fmt: str = "svg", labels: list[str] | None = None,
                  top_label: str | None = None, max_pixels: float | None = None) -> bytes:
    """The routes picture as SVG or PNG bytes, with `routes.edits` drawn (`labels`, `top_label`: see
    `draw_routes`); a PNG of more than `max_pixels` pixels is drawn at a lower resolution. The SVG is the same
    bytes for the same routes (fixed ids, no date) and gives each supernode, summed edge and note a <title>
    tooltip."""
    if fmt not in {"svg", "png"}:
        raise ValueError(f"format must be 'svg' or 'png', got {fmt!r}")
    fig, tips = _figure(routes, labels, top_label)
    dpi = fig.dpi
    if max_pixels is not None:
        width, height = fig.get_size_inches()
        dpi = min(dpi, math.sqrt(max_pixels / (width * height)))
    buf = io.BytesIO()
    if fmt == "png":
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    with rc_context({"svg.hashsalt": "flowroutes"}):
        fig.savefig(buf, format="svg", dpi=dpi, metadata={"Date": None})
    svg = buf.getvalue().decode("utf-8")
    for gid, text in tips.items():  # matplotlib writes each artist with a gid as <g id="gid">: the title goes first
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{gid}">\n<title>{escape(_NOT_XML.sub("", text))}</title>', 1)
    return svg.encode("utf-8")
