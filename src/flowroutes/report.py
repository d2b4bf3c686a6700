"""Figures (matplotlib Figure objects, no pyplot state) and the self-contained HTML report of an analysis.

Writes files atomically; never computes importances. Heatmaps are layer x head, 0-based.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import formatting


@dataclass
class Result:
    """What an analysis returns: its rows, summary numbers, figures and the text explaining them."""

    name: str
    title: str
    explanation: str
    table: object  # pyarrow.Table of the raw rows
    summary: dict = field(default_factory=dict)
    figures: dict[str, tuple[Figure, str]] = field(default_factory=dict)  # name -> (figure, caption)
    extra_tables: dict[str, object] = field(default_factory=dict)  # name -> pyarrow.Table
    data: dict = field(default_factory=dict, repr=False)  # in-memory arrays other analyses' claims read; not written
    paper: str = ""  # the sentence of the paper the analysis implements
    paper_size: str = ""  # the sample the paper used (the summary gives the one actually run)

    def write(self, out: Path) -> list[Path]:
        """Write table.parquet (+ extra tables), each figure as PNG and SVG, summary.json and report.html."""
        from .fileio import write_atomic, write_parquet_atomic

        out.mkdir(parents=True, exist_ok=True)
        written = []
        write_parquet_atomic(self.table, out / f"{self.name}.parquet")
        written.append(out / f"{self.name}.parquet")
        for name, table in self.extra_tables.items():
            assert name != self.name, "an extra table would overwrite the main table"
            write_parquet_atomic(table, out / f"{name}.parquet")
            written.append(out / f"{name}.parquet")
        images = {}
        for name, (fig, _caption) in self.figures.items():
            png, svg = figure_bytes(fig, "png"), figure_bytes(fig, "svg")
            write_atomic(out / f"{name}.png", png)
            write_atomic(out / f"{name}.svg", svg)
            written += [out / f"{name}.png", out / f"{name}.svg"]
            images[name] = png
        write_atomic(out / "summary.json", json.dumps(self.summary, indent=1, default=_json_default).encode())
        write_atomic(out / "report.html", self.html(images).encode("utf-8"))
        written += [out / "summary.json", out / "report.html"]
        return written

    def __repr__(self) -> str:
        from .display import result_text

        return result_text(self)

    def _repr_html_(self) -> str:
        """The notebook display: the summary's numbers for people and each figure inline (display.py)."""
        from .display import result_html

        return result_html(self)

    def wrote_lines(self, out: Path) -> list[str]:
        """What `write` wrote into `out`, a line per kind of file, for the terminal."""
        out = Path(out)
        lines = [formatting.wrote(out / f"{self.name}.parquet", f"its {self.table.num_rows:,} rows")]
        lines += [formatting.wrote(out / f"{name}.parquet", f"{table.num_rows:,} rows")
                  for name, table in self.extra_tables.items()]
        if self.figures:
            pngs = [out / f"{n}.png" for n in self.figures]
            lines.append(formatting.wrote_many(pngs, "figure", "as PNG and SVG", out))
        lines.append(formatting.wrote(out / "summary.json", "the summary's numbers"))
        figures = formatting.count(len(self.figures), "figure")
        lines.append(formatting.wrote(out / "report.html", f"the report: summary and {figures}"))
        return lines

    def html(self, images: dict[str, bytes]) -> str:
        parts = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
            "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
            f"<p>{html.escape(self.explanation)}</p>",
            (f"<blockquote>{html.escape(self.paper)}</blockquote>" if self.paper else ""),
            (f"<p><i>The paper's sample:</i> {html.escape(self.paper_size)}</p>" if self.paper_size else ""),
            "<h2>Summary</h2><table>",
        ]
        for key, value in self.summary.items():
            parts.append(f"<tr><th>{html.escape(str(key))}</th><td>{value_html(value)}</td></tr>")
        parts.append("</table>")
        for name, (_fig, caption) in self.figures.items():
            data = base64.b64encode(images[name]).decode("ascii")
            parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
                         f"src='data:image/png;base64,{data}'><p>{html.escape(caption)}</p>")
        parts.append(f"<p><small>Raw numbers: {html.escape(self.name)}.parquet; figures also as PNG and SVG."
                     "</small></p></body></html>")
        return "\n".join(parts)


#: a summary list longer than this shows its first items and how many more there are
LIST_MAX = 12


def value_html(value) -> str:
    """A summary value for people: numbers to 3-4 significant digits, estimates as 'value [low, high] (n)', a
    dict as a small table, a list of dicts as a table with a column per key, other lists as comma-separated
    items; never a raw dict, JSON or 'nan'. The words are formatting's (the terminal's too)."""
    if formatting.is_estimate(value):
        return html.escape(formatting.plain(value))
    if isinstance(value, dict):
        if not value:
            return "none"
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{value_html(v)}</td></tr>"
                       for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        if not items:
            return "none"
        more = f" {formatting.more(len(items) - LIST_MAX)}" if len(items) > LIST_MAX else ""
        items = items[:LIST_MAX]
        if all(isinstance(v, dict) for v in items):
            keys = list(dict.fromkeys(k for v in items for k in v))
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
            body = "".join("<tr>" + "".join(f"<td>{value_html(v.get(k, '-'))}</td>" for k in keys)
                           + "</tr>" for v in items)
            return f"<table><tr>{head}</tr>{body}</table>{html.escape(more)}"
        return ", ".join(value_html(v) for v in items) + html.escape(more)
    return html.escape(formatting.scalar(value))


def duration(seconds: float | None) -> str:
    """'3.2 s', '48 s', '13 min 14 s', '1 h 2 min'."""
    if seconds is None or not np.isfinite(seconds):
        return "not timed"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _plain(text: str) -> str:
    """Text shown as is: a '$' in user data would otherwise start matplotlib's mathtext."""
    return str(text).replace("$", r"\$")


def _json_default(obj):
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def freq_table(mats: dict[str, np.ndarray]):
    """One row per head (layer, head, 0-based) with a column per [L, H] matrix."""
    import pyarrow as pa

    first = next(iter(mats.values()))
    n_layers, n_heads = first.shape
    cols = {"layer": np.repeat(np.arange(n_layers), n_heads), "head": np.tile(np.arange(n_heads), n_layers)}
    for name, mat in mats.items():
        cols[name] = np.asarray(mat, dtype=np.float64).ravel()
    return pa.table(cols)


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def heatmaps(mats: list[np.ndarray], titles: list[str], cmap: list[str] | None = None,
             marks: dict[str, np.ndarray] | None = None, suptitle: str = "", shared: bool = False) -> Figure:
    """Layer x head heatmaps side by side ([L, H] each); `marks` outlines cells (colour -> [L, H] bool);
    `shared`: one colour scale for all panels, so that they can be compared."""
    n = len(mats)
    n_layers, n_heads = mats[0].shape
    fig = Figure(figsize=(2.2 + 0.32 * n_heads * n, 1.2 + 0.2 * n_layers))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for k, (ax, mat, title) in enumerate(zip(axes, mats, titles)):
        cm = (cmap[k] if cmap else "viridis")
        diverging = cm in ("RdBu_r", "coolwarm")
        lim = float(np.nanmax(np.abs(np.stack(mats) if shared else mat))) or 1.0
        im = ax.imshow(mat, aspect="auto", cmap=cm, origin="lower", interpolation="nearest",
                       vmin=-lim if diverging else 0.0, vmax=lim)
        ax.set_title(_plain(title), fontsize=9)
        ax.set_xlabel("head")
        if k == 0:
            ax.set_ylabel("layer")
        ax.set_xticks(range(n_heads))
        ax.tick_params(labelsize=6)
        if not shared or k == n - 1:
            fig.colorbar(im, ax=ax, fraction=0.05)
        for colour, mask in (marks or {}).items():
            for layer, head in zip(*np.nonzero(mask)):
                ax.add_patch(_rect(head, layer, colour))
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def _rect(x, y, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=2)


def layer_lines(series: dict[str, np.ndarray], ylabel: str, title: str,
                bands: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Figure:
    """One line per series over layers; `bands` (name -> (low, high)) shades 95% intervals."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for name, values in series.items():
        line = ax.plot(np.arange(len(values)), values, marker="o", ms=3, label=_plain(name))[0]
        if bands and name in bands:
            low, high = bands[name]
            ax.fill_between(np.arange(len(values)), low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return fig


def scatter_by_label(points: np.ndarray, labels: list[str], title: str, max_classes: int = 12) -> Figure:
    """2-D points coloured by label; the rarest labels beyond `max_classes` are grouped as 'other'."""
    import collections

    counts = collections.Counter(labels)
    keep = {lab for lab, _ in counts.most_common(max_classes)}
    labs = np.array([lab if lab in keep else "other" for lab in labels])
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for i, lab in enumerate(sorted(set(labs))):
        sel = labs == lab
        ax.scatter(points[sel, 0], points[sel, 1], s=6, label=_plain(f"{lab} ({int(sel.sum())})"), color=_colour(i))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def _colour(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)


def text_table(rows: list[list[str]], title: str) -> Figure:
    """A figure that is a table of short strings (e.g. top tokens per singular vector)."""
    widths = np.array([max(len(str(row[k])) for row in rows) for k in range(len(rows[0]))], dtype=float) + 2
    fig = Figure(figsize=(min(1 + 0.075 * widths.sum(), 16), 0.6 + 0.25 * len(rows)))
    ax = fig.subplots()
    ax.axis("off")
    cells = [[str(c).replace("$", r"\$") for c in row] for row in rows[1:]]  # '$' would start mathtext
    tab = ax.table(cellText=cells, colLabels=rows[0], loc="center", cellLoc="left",
                   colWidths=list(widths / widths.sum()))
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    ax.set_title(title, fontsize=10)
    return fig
