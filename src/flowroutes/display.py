"""How routes, traces and analysis results show themselves: HTML for Jupyter (`_repr_html_`) and a short
plain-text repr for the console. Token text is always escaped.

Reads results only and computes nothing heavy: a lazy trace's display never computes attention rows, a full
trace's walks its last position's routes (numpy, milliseconds) to draw them. No torch, no model.
"""

from __future__ import annotations

import base64
import html
import re

import numpy as np

from .routes import Routes

TOP_TOKENS = 5  # predictions shown
TOP_HEADS = 5  # heads shown
TRACE_TAU = 0.04  # the threshold of the routes a full trace draws (the paper's and `Trace.routes`' default)
SUMMARY_LINES = 5  # summary entries in an analysis result's plain repr
LINE_MAX = 110  # characters of one plain-text line before it is cut
DRAW_MAX_EDGES = 1500  # routes with more edges are drawn cut to their strongest (Routes.strongest)


def short(text: str, limit: int = LINE_MAX) -> str:
    """`text` on one line, cut to `limit` characters with '...' when longer."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tau_text(routes: Routes) -> str:
    a, f = routes.attention_threshold, routes.ffn_threshold
    return f"tau={a:g}" if a == f else f"tau_attn={a:g}, tau_ffn={f:g}"


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


# --- routes ------------------------------------------------------------------------------------------------------
_GEOMETRY = re.compile(r'\b(x|y|d|width|height|transform|points)="([^"]*)"')
_DECIMALS = re.compile(r"(\d\.\d)\d+")


def routes_svg(routes: Routes) -> str:
    """The routes picture (figures.render_routes) as an SVG element to inline in HTML: text kept as text (a third
    of the bytes of glyph paths), the XML prolog dropped, geometry rounded to 0.1 px. Edge i of `routes.edges` is
    the element with id "edge-i"."""
    import matplotlib

    from .figures import render_routes

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        svg = render_routes(routes, "svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]
    svg = _GEOMETRY.sub(lambda m: m.group(1) + '="' + _DECIMALS.sub(r"\1", m.group(2)) + '"', svg)
    return "\n".join(line.lstrip() for line in svg.splitlines())


def _explained(routes: Routes) -> str:
    """"position 15 ' to' -> ' Mary' (p=0.923)"."""
    what = f"position {routes.position} {routes.token_texts[routes.position]!r}"
    return what + (f" -> {routes.top_tokens[0]!r} (p={routes.top_probs[0]:.3f})" if routes.top_tokens else "")


def _strongest_heads(routes: Routes) -> str:
    heads = list(routes.head_weights().items())[:TOP_HEADS]
    return ", ".join(f"{head_name(*h)} {w:.2f}" for h, w in heads) or "none"


def routes_caption(routes: Routes) -> str:
    """One sentence for people: what is explained, at which threshold, how big the routes are, which heads
    carry most (`head_weights`: a head's summed importance in the routes)."""
    return (f"Routes of {routes.model_name or 'the model'} at {_explained(routes)}, {tau_text(routes)}: "
            f"{len(routes.nodes)} nodes, {len(routes.edges)} edges, {len(routes.active_heads)} active heads; "
            f"strongest heads: {_strongest_heads(routes)}")


def routes_html(routes: Routes) -> str:
    """The picture and its caption; routes of more than DRAW_MAX_EDGES edges are drawn cut to their strongest, and
    the caption says so."""
    drawn, note = routes.strongest(DRAW_MAX_EDGES), ""
    if drawn is not routes:
        note = (f" (drawn: the strongest {len(drawn.edges):,} of its {len(routes.edges):,} edges, "
                f"routes.strongest({DRAW_MAX_EDGES}))")
    return (f'<figure style="margin: 0; overflow-x: auto">{routes_svg(drawn)}'
            f"<figcaption>{html.escape(routes_caption(routes) + note)}</figcaption></figure>")


def routes_text(routes: Routes) -> str:
    """Four lines: the size, what is explained, the strongest heads, the prompt."""
    return "\n".join([
        short(f"<flowroutes.Routes of {routes.model_name or 'the model'}: {len(routes.nodes)} nodes, "
              f"{len(routes.edges)} edges, {len(routes.active_heads)} active heads, {tau_text(routes)}>"),
        "  explains " + short(_explained(routes), LINE_MAX - 11),
        "  strongest heads: " + short(_strongest_heads(routes), LINE_MAX - 19),
        "  prompt: " + short(repr(routes.prompt), LINE_MAX - 10)])


# --- traces ------------------------------------------------------------------------------------------------------
def predictions(trace, position: int = -1, k: int = TOP_TOKENS) -> list[tuple[str, float]]:
    """The model's top-k next tokens at `position` with their probabilities ([] where not predicted)."""
    p = trace.resolve_position(position)
    return [(t, float(q)) for t, q in zip(trace.top_tokens[p][:k], trace.top_probs[p][:k])]


def head_importances(trace, position: int = -1) -> np.ndarray | None:
    """[L, H]: each head's importance for x^{lA}_position, the sum of its sub-edges into that node (eq. 1, before
    any threshold); None for a lazy trace that has not computed those rows (display computes none)."""
    p = trace.resolve_position(position)
    if hasattr(trace, "missing_rows") and any(trace.missing_rows(layer, [p]) for layer in range(trace.n_layers)):
        return None
    return np.stack([trace.attention_rows(layer, [p])[0][:, 0].sum(axis=-1) for layer in range(trace.n_layers)])


def top_heads(importances: np.ndarray, k: int = TOP_HEADS) -> list[tuple[int, int, float]]:
    """The k (layer, head, importance) with the largest importance, largest first."""
    order = np.argsort(-importances, axis=None, kind="stable")[:k]
    return [(int(l_), int(h), float(importances[l_, h])) for l_, h in zip(*np.unravel_index(order, importances.shape))]


def _trace_title(trace, lazy: bool) -> str:
    kind = "LazyTrace" if lazy else "Trace"
    return (f"{kind} of {trace.model_name}: {trace.n_tokens} tokens, {trace.n_layers} layers x {trace.n_heads} heads")


def _lazy_state(trace) -> str:
    rows = trace.n_layers * trace.n_tokens
    return (f"{trace.n_computed_rows:,} of {rows:,} attention rows computed (routes() computes the rows it "
            "reaches, full() all)")


def trace_text(trace, lazy: bool = False) -> str:
    """A few lines: the size, the prompt, the top predictions at the last position, the strongest heads there."""
    preds = predictions(trace)
    lines = [f"<flowroutes.{_trace_title(trace, lazy)}>", "  prompt: " + short(repr(trace.prompt), LINE_MAX - 10),
             "  next token: " + (", ".join(f"{t!r} {p:.3f}" for t, p in preds) if preds else "not predicted")]
    imp = head_importances(trace)
    if imp is not None:
        lines.append("  heads into the last position: " + ", ".join(f"{head_name(l_, h)} {w:.3f}"
                                                                  for l_, h, w in top_heads(imp)))
    if lazy:
        lines.append("  " + _lazy_state(trace))
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; the cells are HTML already (escape text before)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="flowroutes"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def trace_html(trace, lazy: bool = False) -> str:
    """The prompt, a table of the top predictions and one of the strongest heads at the last position, side by
    side; then, for a full trace, the last position's routes (tau = TRACE_TAU) drawn."""
    esc = html.escape
    last = trace.n_tokens - 1
    preds = predictions(trace)
    pred_table = (_table(["next token", "p"], [[f"<code>{esc(repr(t))}</code>", f"{p:.3f}"] for t, p in preds])
                  if preds else "<p>not predicted (traced with predictions='none')</p>")
    imp = head_importances(trace)
    head_table = ("<p>not computed yet</p>" if imp is None else
                  _table(["head", "importance"], [[head_name(l_, h), f"{w:.3f}"] for l_, h, w in top_heads(imp)]))
    parts = [f'<div class="flowroutes-trace"><b>{esc(_trace_title(trace, lazy))}</b>',
             f"<div>prompt: <code>{esc(repr(trace.prompt))}</code></div>",
             '<div style="display: flex; gap: 2em; align-items: flex-start">',
             f"<div>at the last position ({last}, <code>{esc(repr(trace.token_texts[last]))}</code>){pred_table}</div>",
             f"<div>heads into x<sup>lA</sup><sub>{last}</sub> (sum of their sub-edges){head_table}</div></div>"]
    if lazy:
        parts.append(f"<div>{esc(_lazy_state(trace))}</div>")
    else:
        parts.append(routes_html(trace.routes(TRACE_TAU)))
    return "".join(parts) + "</div>"


def _first_prediction(trace) -> str:
    preds = predictions(trace, k=1)
    return f"{preds[0][0]!r} {preds[0][1]:.3f}" if preds else "not predicted"


def traces_text(traces) -> str:
    """One line per trace (its prompt and top prediction), the first TOP_TOKENS of them and a count of the rest."""
    model = traces[0].model_name if len(traces) else "no model"
    lines = [f"<flowroutes.LazyTraces: {len(traces)} lazy traces of {model}>"]
    for i, tr in enumerate(traces[:TOP_TOKENS]):
        tail = f" -> {_first_prediction(tr)}"
        lines.append(f"  [{i}] " + short(repr(tr.prompt), LINE_MAX - len(tail) - 6 - len(str(i))) + tail)
    if len(traces) > TOP_TOKENS:
        lines.append(f"  ... ({len(traces) - TOP_TOKENS} more)")
    return "\n".join(lines)


def traces_html(traces) -> str:
    """A table of the traces: prompt, tokens, the top next token at the last position; computes no row."""
    esc = html.escape
    rows = [[str(i), f"<code>{esc(repr(tr.prompt))}</code>", str(tr.n_tokens), esc(_first_prediction(tr))]
            for i, tr in enumerate(traces)]
    return (f"<div><b>{len(traces)} lazy traces</b> (each computes its attention rows when its routes are asked for)"
            f"{_table(['', 'prompt', 'tokens', 'next token, p'], rows)}</div>")


# --- generations -------------------------------------------------------------------------------------------------
def generation_text(g) -> str:
    """A few lines: the sizes, the prompt, the answer, its first tokens with their probabilities."""
    shown = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(g.answer_tokens[:TOP_TOKENS], g.answer_probs))
    more = f" ... ({g.n_answer - TOP_TOKENS} more)" if g.n_answer > TOP_TOKENS else ""
    return "\n".join([
        short(f"<flowroutes.Generation of {g.model_name}: a prompt of {g.n_prompt} tokens, an answer of "
              f"{g.n_answer} ({g.stop_reason})>"),
        "  prompt: " + short(repr(g.prompt), LINE_MAX - 10),
        "  answer: " + short(repr(g.answer_text), LINE_MAX - 10),
        "  p(answer tokens): " + short(shown + more, LINE_MAX - 19)])


# --- analysis results --------------------------------------------------------------------------------------------
def result_text(result) -> str:
    """The title, SUMMARY_LINES summary entries, estimates first (one line each, 'value [low, high] (n)'), the
    figures' names."""
    from .formatting import plain

    items = sorted(result.summary.items(), key=lambda kv: not hasattr(kv[1], "interval_text"))  # stable
    lines = [f"<flowroutes analysis {result.name!r}: {short(result.title, LINE_MAX - 30)}>"]
    lines += ["  " + short(f"{k}: {plain(v)}", LINE_MAX - 2) for k, v in items[:SUMMARY_LINES]]
    if len(items) > SUMMARY_LINES:
        lines.append(f"  ... ({len(items) - SUMMARY_LINES} more in .summary)")
    if result.figures:
        lines.append("  figures: " + short(", ".join(result.figures), LINE_MAX - 11))
    return "\n".join(lines)


def result_html(result) -> str:
    """The title and explanation, the summary as a table of numbers for people, each figure inline (PNG) with its
    caption."""
    from .report import figure_bytes, value_html

    esc = html.escape
    rows = "".join(f"<tr><th style='text-align: left'>{esc(str(k))}</th><td>{value_html(v)}</td></tr>"
                   for k, v in result.summary.items())
    parts = [f'<div class="flowroutes-result"><h3>{esc(result.title)}</h3><p>{esc(result.explanation)}</p>',
             f'<table class="flowroutes">{rows}</table>']
    for name, (fig, caption) in result.figures.items():
        data = base64.b64encode(figure_bytes(fig, "png")).decode("ascii")
        parts.append(f'<figure style="margin: 1em 0"><img alt="{esc(name)}" style="max-width: 100%" '
                     f'src="data:image/png;base64,{data}"><figcaption><b>{esc(name)}</b>: {esc(caption)}'
                     "</figcaption></figure>")
    return "".join(parts) + "</div>"
