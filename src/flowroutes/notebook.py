"""The notebook widget: the explorer's routes graph, inspector and threshold/position controls in a Jupyter cell, on
a trace the user already holds. Its JavaScript is the explorer page's own static/graph.js; a threshold or position
set in the cell is answered here, in the kernel, by `trace.routes`: no server, no network.

Needs anywidget (`pip install 'flowroutes[notebook]'`), imported only when a widget is made. Computes nothing but
routes (numpy); never loads a model.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .errors import FlowroutesError
from .routes import Routes

STATIC = Path(__file__).parent / "web" / "static"
MIN_THRESHOLD = 0.005  # the slider's lowest threshold (as the explorer's page)
MAX_THRESHOLD = 0.5  # and its highest


@functools.cache
def _widget_class():
    try:
        import anywidget
        import traitlets
    except ImportError:
        raise FlowroutesError("the notebook widget needs anywidget: pip install 'flowroutes[notebook]'") from None

    class RoutesWidget(anywidget.AnyWidget):
        """The routes of `trace` at `threshold` and `position`, drawn by static/graph.js. Setting `threshold` or
        `position` (from the cell's controls or from Python) recomputes `routes` with `trace.routes`."""

        _esm = STATIC / "graph.js"
        _css = STATIC / "graph.css"
        routes = traitlets.Dict().tag(sync=True)  # Routes.to_dict() of what is drawn
        display = traitlets.List(traitlets.Unicode()).tag(sync=True)  # the tokens as shown
        threshold = traitlets.Float(0.04).tag(sync=True)
        position = traitlets.Int(-1).tag(sync=True)
        adjustable = traitlets.Bool(True).tag(sync=True)  # false for a bare Routes: nothing to recompute from
        min_threshold = traitlets.Float(MIN_THRESHOLD).tag(sync=True)
        error = traitlets.Unicode("").tag(sync=True)  # one line, or ""

        def __init__(self, trace, routes: Routes, **kwargs):
            self._trace = trace
            self._restoring = False
            super().__init__(routes=routes.to_dict(), display=list(routes.token_texts),
                             threshold=routes.attention_threshold, position=routes.position,
                             adjustable=trace is not None, **kwargs)
            self.observe(self._recompute, names=["threshold", "position"])

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
            self.error = ""
            self.routes = routes.to_dict()

        @property
        def current(self) -> Routes:
            """The routes drawn now, as a Routes."""
            return Routes.from_json(self.routes)

    return RoutesWidget


def widget(trace_or_routes, threshold: float = 0.04, position: int = -1):
    """An interactive widget of a trace's routes (threshold and position controls, click an edge or node to inspect
    it), or of one `Routes` (fixed threshold and position). Display it as a cell's last value."""
    cls = _widget_class()
    if isinstance(trace_or_routes, Routes):
        return cls(None, trace_or_routes)
    if not callable(getattr(trace_or_routes, "routes", None)):
        kind = type(trace_or_routes).__name__
        raise FlowroutesError(f"flowroutes.widget takes a Trace, LazyTrace or Routes, not {kind}")
    return cls(trace_or_routes, trace_or_routes.routes(threshold, position))
