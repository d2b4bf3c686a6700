"""The notebook widget (flowroutes.widget): its synced state is the Python API's routes, a threshold or position set
through it is answered by trace.routes, its JavaScript is the explorer's own graph.js and draws and inspects the
routes in Chromium, and a notebook that makes it shows a widget view."""

import json
import math
from pathlib import Path

import pytest

import flowroutes
from flowroutes import notebook
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.web_helpers import screenshot

pytest.importorskip("anywidget")

PROMPT = "w1 w2 w3 w4 w5 w6 w7 w8"
ROOT = Path(__file__).resolve().parents[2]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def model():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


@pytest.fixture(scope="module")
def tr(model):
    return flowroutes.trace(model, PROMPT)


def test_the_widget_state_is_the_routes_and_follows_threshold_and_position(tr, model):
    w = flowroutes.widget(tr)
    assert w.routes == tr.routes(0.04).to_dict() and w.display == tr.token_texts and w.adjustable
    assert w.position == len(tr.token_texts) - 1 and w.threshold == 0.04
    # as the front end sends a change: the widget's message handler sets the trait, Python answers with routes
    w.set_state({"threshold": 0.1})
    assert w.routes == tr.routes(0.1, -1).to_dict() and w.error == ""
    assert len(w.routes["edges"]) < len(tr.routes(0.04).edges)
    w.set_state({"position": 3})
    assert w.routes == tr.routes(0.1, 3).to_dict() and w.current.position == 3
    # a threshold outside the slider's range or a position outside the prompt: one line, and the routes drawn and
    # the controls stay those of the last good ones
    w.set_state({"threshold": 0.9})
    assert w.error == "threshold 0.9 is outside [0.005, 0.5]" and w.routes == tr.routes(0.1, 3).to_dict()
    assert (w.threshold, w.position) == (0.1, 3)
    w.set_state({"position": 99})
    assert w.error == "position 99 is out of range for a prompt of 8 tokens: use 0..7 or -8..-1"
    assert (w.threshold, w.position) == (0.1, 3) and w.routes == tr.routes(0.1, 3).to_dict()
    w.set_state({"threshold": 0.2})
    assert w.error == "" and w.routes == tr.routes(0.2, 3).to_dict()
    # the same from the trace's method, and a lazy trace answers with its own rows
    assert tr.widget(0.07, 2).routes == tr.routes(0.07, 2).to_dict()
    lazy = flowroutes.trace(model, PROMPT, lazy=True)
    lw = lazy.widget(0.05)
    lw.set_state({"threshold": 0.12})
    assert lw.routes == lazy.routes(0.12).to_dict() and lw.current.attention_threshold == 0.12
    # the JavaScript is the page's file, not a copy
    state = w.get_state()
    assert state["_esm"] == (notebook.STATIC / "graph.js").read_text()
    assert "/static/graph.js" in (notebook.STATIC / "index.html").read_text()


def test_a_routes_object_is_shown_with_fixed_controls(tr):
    routes = tr.routes(0.05, 4)
    w = routes.widget()
    assert w.routes == routes.to_dict() and not w.adjustable and w.position == 4 and w.threshold == 0.05
    w.set_state({"threshold": 0.2})
    assert w.routes == routes.to_dict()
    with pytest.raises(flowroutes.FlowroutesError, match="takes a Trace, LazyTrace or Routes, not str"):
        flowroutes.widget("routes")


# a host page that gives the module anywidget's model interface (get, set, save_changes, on, off): a save hands
# the changed traits to Python (window.pySave), which applies them with the widget's own set_state and answers with
# its whole synced state, as the kernel would
HOST = """<!doctype html><html><head><meta charset="utf-8"><style id="css"></style></head><body><div id="cell"></div>
<script type="module">
window.startWidget = async (state) => {
  document.getElementById("css").textContent = state._css;
  const values = { ...state }, handlers = {}, pending = {};
  const fire = (name) => (handlers[`change:${name}`] || []).forEach((cb) => cb());
  const model = {
    get: (k) => values[k],
    set: (k, v) => { values[k] = v; pending[k] = v; },
    save_changes: async () => {
      const changes = { ...pending };
      for (const k of Object.keys(pending)) delete pending[k];
      const answer = await window.pySave(JSON.stringify(changes));
      for (const [k, v] of Object.entries(JSON.parse(answer))) {
        if (JSON.stringify(values[k]) !== JSON.stringify(v)) { values[k] = v; fire(k); }
      }
    },
    on: (ev, cb) => { (handlers[ev] = handlers[ev] || []).push(cb); },
    off: (ev, cb) => { handlers[ev] = (handlers[ev] || []).filter((f) => f !== cb); },
  };
  const url = URL.createObjectURL(new Blob([state._esm], { type: "text/javascript" }));
  const mod = await import(url);
  mod.default.render({ model, el: document.getElementById("cell") });
};
window.hostReady = true;
</script></body></html>"""


def _synced(w) -> dict:
    return {k: v for k, v in w.get_state().items() if k in ("routes", "display", "threshold", "position", "error",
                                                             "adjustable", "min_threshold")}


def _renders(page) -> int:
    return int(page.evaluate("Number(document.querySelector('#cell').dataset.renders || 0)"))


def test_the_widget_draws_and_inspects_the_routes_in_chromium(browser, tr):
    w = flowroutes.widget(tr, threshold=0.05)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        page.expose_function("pySave", lambda changes: (w.set_state(json.loads(changes)), json.dumps(_synced(w)))[1])
        page.set_content(HOST)
        page.wait_for_function("window.hostReady === true")
        page.evaluate("(s) => window.startWidget(s)", w.get_state())
        page.wait_for_function("Number(document.querySelector('#cell').dataset.renders) >= 1")
        routes = tr.routes(0.05)
        cell = page.locator("#cell")
        assert cell.locator("svg.routes .edge").count() == len(routes.edges)
        assert cell.locator("svg.routes .node").count() == len(routes.nodes)
        assert cell.locator(".fw-threshold-value").inner_text() == "0.050"
        # click the strongest attention edge: the inspector shows its kind and weight, the Python routes' own
        i = max((k for k, e in enumerate(routes.edges) if e.kind == "attention"), key=lambda k: routes.edges[k].weight)
        edge = routes.edges[i]
        cell.locator(f'svg.routes .edge[data-index="{i}"]').dispatch_event("click")
        panel = cell.locator(".fw-inspector")
        assert panel.locator(".fw-title").inner_text() == f"attention edge {edge.source} -> {edge.target}"
        assert panel.locator(".fw-kind").inner_text() == "attention"
        assert float(panel.locator(".fw-weight").get_attribute("data-weight")) == edge.weight
        assert panel.locator(".fw-weight").inner_text() == f"{edge.weight:.4f}"
        heads = ", ".join(f"L{edge.layer}H{h} {v:.3f}" for h, v in sorted(edge.heads.items(), key=lambda hv: -hv[1]))
        assert panel.locator(".fw-heads").inner_text() == heads
        screenshot(page, "widget.png", clip=cell.bounding_box())  # docs/img/ with FLOWROUTES_UPDATE_SCREENSHOTS=1
        # the slider: Python recomputes, the cell draws the new routes
        before = _renders(page)
        cell.locator(".fw-threshold").fill("0.15")
        page.wait_for_function(f"Number(document.querySelector('#cell').dataset.renders) > {before}")
        assert w.threshold == 0.15 and w.routes == tr.routes(0.15).to_dict()
        assert cell.locator("svg.routes .edge").count() == len(tr.routes(0.15).edges)
        assert cell.locator(".fw-status").inner_text() == (f"{len(tr.routes(0.15).nodes)} nodes, "
                                                           f"{len(tr.routes(0.15).edges)} edges")
        # the position control: the routes of another prediction
        before = _renders(page)
        cell.locator(".fw-position").select_option("4")
        page.wait_for_function(f"Number(document.querySelector('#cell').dataset.renders) > {before}")
        other = tr.routes(0.15, 4)
        assert w.routes == other.to_dict()
        assert cell.locator("svg.routes .edge").count() == len(other.edges)
        assert cell.locator("svg.routes text.token-label.explained").get_attribute("data-position") == "4"
        # a node: what it is
        cell.locator('svg.routes .node[data-id="x0@4"]').dispatch_event("click")
        assert panel.locator(".fw-title").inner_text() == "x0@4"
        token = json.dumps(tr.token_texts[4])
        assert panel.locator(".fw-node").inner_text() == f"embedding, token {token} (position 4)"
        assert math.isclose(float(cell.locator(".fw-threshold").input_value()), 0.15)
    finally:
        page.close()


def test_a_notebook_that_makes_the_widget_shows_a_widget_view(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'src')!r}]"),
        nbformat.v4.new_code_cell("import flowroutes\nfrom tests.helpers.models import tiny_llama, word_tokenizer\n"
                                  "model = flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())\n"
                                  f"tr = flowroutes.trace(model, {PROMPT!r})"),
        nbformat.v4.new_code_cell("w = flowroutes.widget(tr, threshold=0.1)\nw"),
        nbformat.v4.new_code_cell("len(w.routes['edges']), len(tr.routes(0.1).edges)"),
    ]
    nbclient.NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"], outputs
    shown = [o for o in nb.cells[2].outputs if o.output_type == "execute_result"]
    assert len(shown) == 1 and WIDGET_MIME in shown[0]["data"]
    assert shown[0]["data"][WIDGET_MIME]["model_id"]
    n = len(flowroutes.trace(flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer()), PROMPT).routes(0.1).edges)
    assert nb.cells[3].outputs[0]["data"]["text/plain"] == f"({n}, {n})"
