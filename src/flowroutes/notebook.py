"""The notebook widget: the explorer's routes graph, inspector, threshold/position controls and graph editing in a
Jupyter cell, on a trace the user already holds. Its JavaScript is the explorer page's own static/graph.js and
static/editing.js (with static/widget.js, sent as one ES module); a threshold or position set in the cell is
answered here, in the kernel, by `trace.routes`, and the edits made in it are checked by `flowroutes.edits`: no
server, no network.

Needs anywidget (`pip install 'flowroutes[notebook]'`), imported only when a widget is made. Computes nothing but
routes (numpy); never loads a model.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from .edits import Edits, ids_of
from .errors import FlowroutesError
from .routes import Routes

STATIC = Path(__file__).parent / "web" / "static"
MODULES = ("graph.js", "editing.js", "widget.js")  # the widget's JavaScript, in this order
MIN_THRESHOLD = 0.005  # the slider's lowest threshold (as the explorer's page)
MAX_THRESHOLD = 0.5  # and its highest
_SIBLING = "|".join(map(re.escape, MODULES))
_SIBLING_IMPORT = re.compile(rf'^import \{{[^}}]*\}} from "\./(?:{_SIBLING})";\n', re.MULTILINE)  # one line each


def esm() -> str:
    """The widget's one ES module (anywidget loads one file): graph.js, editing.js and widget.js as the page serves
    them, each file's imports of the ones before it dropped (they are in the same module now)."""
    return "".join(_SIBLING_IMPORT.sub("", (STATIC / name).read_text(encoding="utf-8")) for name in MODULES)


def _within(edits: Edits, nodes: set[str], edges: set[str]) -> tuple[Edits, int]:
    """The part of `edits` that routes with these ids hold (a supernode only with all its members), and how many
    ids, supernodes and notes were left out."""
    def keep(ids: list[str], known: set[str]) -> list[str]:
        return [i for i in ids if i in known]

    kept = Edits(keep(edits.selected_nodes, nodes), keep(edits.selected_edges, edges),
                 keep(edits.pinned_nodes, nodes), keep(edits.pinned_edges, edges),
                 [s for s in edits.supernodes if all(n in nodes for n in s.nodes)],
                 {k: v for k, v in edits.notes.items() if k in nodes or k in edges}, edits.focus)
    def size(e: Edits) -> int:
        return (len(e.selected_nodes) + len(e.selected_edges) + len(e.pinned_nodes) + len(e.pinned_edges)
                + len(e.supernodes) + len(e.notes))

    return kept, size(edits) - size(kept)


@functools.cache
def _widget_class():
    try:
        import anywidget
        import traitlets
    except ImportError:
        raise FlowroutesError("the notebook widget needs anywidget: pip install 'flowroutes[notebook]'") from None

    class RoutesWidget(anywidget.AnyWidget):
        """The routes of `trace` at `threshold` and `position`, drawn by static/graph.js, and what a person edited
        on them (static/editing.js). Setting `threshold` or `position` (from the cell's controls or from Python)
        recomputes `routes` with `trace.routes`; setting `edits` (from the cell or from Python) is checked against
        the routes drawn."""

        _esm = esm()
        _css = STATIC / "graph.css"
        routes = traitlets.Dict().tag(sync=True)  # Routes.to_dict() of what is drawn (without its edits)
        display = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the tokens as shown
        threshold = traitlets.Float(0.04).tag(sync=True)
        position = traitlets.Int(-1).tag(sync=True)
        adjustable = traitlets.Bool(True).tag(sync=True)  # false for a bare Routes: nothing to recompute from
        min_threshold = traitlets.Float(MIN_THRESHOLD).tag(sync=True)
        # Edits.to_dict() of the routes drawn (schema v3's `edits`); Any, so that anything not a valid edit set,
        # a dict or not, is refused by flowroutes.edits in one line
        edits = traitlets.Any().tag(sync=True)
        error = traitlets.Unicode("").tag(sync=True)  # one line, or ""
        note = traitlets.Unicode("").tag(sync=True)  # one line, or "": what a new threshold or position dropped

        def __init__(self, trace, routes: Routes, **kwargs):
            self._trace = trace
            self._restoring = False
            self._known = ids_of(routes)  # (node ids, edge ids) of the routes drawn: what edits may name
            drawn = {k: v for k, v in routes.to_dict().items() if k != "edits"}
            super().__init__(routes=drawn, display=list(routes.token_texts),
                             threshold=routes.attention_threshold, position=routes.position,
                             adjustable=trace is not None, edits=(routes.edits or Edits()).to_dict(), **kwargs)
            self.observe(self._recompute, names=["threshold", "position"])

        @traitlets.validate("edits")
        def _check_edits(self, proposal) -> dict[str, Any]:
            value = proposal["value"]
            if isinstance(value, Edits):
                value = value.to_dict()
            return Edits.from_dict(value, *self._known).to_dict()

        def set_state(self, sync_data) -> None:
            """The front end's changes; edits it sent are checked first (inside set_state's hold a refused value
            would stay set): a refusal is shown in `error` and the cell gets the edits kept."""
            if "edits" in sync_data:
                try:
                    Edits.from_dict(sync_data["edits"], *self._known)
                except FlowroutesError as err:
                    sync_data = {k: v for k, v in sync_data.items() if k != "edits"}
                    self.error = str(err)
                    self.send_state("edits")
            super().set_state(sync_data)

        def _recompute(self, change) -> None:
            if self._trace is None or self._restoring:
                return
            try:
                if not MIN_THRESHOLD <= self.threshold <= MAX_THRESHOLD:
                    raise FlowroutesError(f"threshold {self.threshold:g} is outside [{MIN_THRESHOLD}, {MAX_THRESHOLD}]")
                routes = self._trace.routes(self.threshold, self.position)
            except FlowroutesError as err:  # said in one line; the controls go back to the routes drawn
                self._restoring = True
                try:
                    self.threshold, self.position = self.routes["attention_threshold"], self.routes["position"]
                finally:
                    self._restoring = False
                self.error = str(err)
                return
            old = Edits.from_dict(self.edits, *self._known)
            drawn = routes.to_dict()
            if change["name"] == "position" and drawn["position"] != self.routes["position"]:
                # a new prediction, as a new trace on the page: its routes start without edits
                kept, note = Edits(), ("" if old.is_empty() else
                                       f"the edits of position {self.routes['position']} do not carry over to "
                                       f"position {drawn['position']}: cleared")
            else:
                kept, dropped = _within(old, *ids_of(routes))
                note = "" if not dropped else (f"{dropped} of the edits name nodes or edges that the routes at "
                                               f"threshold {routes.attention_threshold:g} lack: dropped")
            with self.hold_sync():
                self._known = ids_of(routes)
                self.error, self.note = "", note
                self.routes = drawn
                self.edits = kept.to_dict()

        @property
        def current(self) -> Routes:
            """The routes drawn now, with their edits, as a Routes (`to_json` writes schema v3 with them)."""
            return Routes.from_json({**self.routes, "edits": self.edits})

    return RoutesWidget


def widget(trace_or_routes, threshold: float = 0.04, position: int = -1):
    """An interactive widget of a trace's routes (threshold and position controls, click an edge or node to inspect
    it, select, pin, group and note them: `w.edits`), or of one `Routes` (fixed threshold and position; its edits,
    if any, to start from). Display it as a cell's last value."""
    cls = _widget_class()
    if isinstance(trace_or_routes, Routes):
        return cls(None, trace_or_routes)
    if not callable(getattr(trace_or_routes, "routes", None)):
        kind = type(trace_or_routes).__name__
        raise FlowroutesError(f"flowroutes.widget takes a Trace, LazyTrace or Routes, not {kind}")
    return cls(trace_or_routes, trace_or_routes.routes(threshold, position))
