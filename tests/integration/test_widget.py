"""The notebook widget (flowroutes.widget): its synced state is the Python API's routes, a threshold or position set
through it is answered by trace.routes, its JavaScript is the explorer's own graph.js and draws and inspects the
routes in Chromium, and a notebook that makes it shows a widget view."""

import json
import math
from pathlib import Path

import pytest

import flowroutes
from flowroutes import Routes, notebook
from flowroutes.edits import Edits, Supernode, edge_id, ids_of, supernode_edges
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.tolerances import F64_REORDER
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
    # the JavaScript is the page's files, not a copy: graph.js and editing.js whole (bar the import of the one by
    # the other) in the one module, which imports nothing; the page imports the same two files
    esm = w.get_state()["_esm"]
    for name in ("graph.js", "editing.js", "widget.js"):
        own = [line for line in (notebook.STATIC / name).read_text().splitlines() if not line.startswith("import ")]
        assert "\n".join(own) in esm
    assert not [line for line in esm.splitlines() if line.startswith("import ")]
    page = (notebook.STATIC / "index.html").read_text()
    assert 'from "/static/graph.js"' in page and 'from "/static/editing.js"' in page


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
# its whole synced state, as the kernel would; window.pyPush(state) is the kernel's update after a change made in
# Python; window.inflight counts the saves not answered yet
HOST = """<!doctype html><html><head><meta charset="utf-8"><style id="css"></style></head><body><div id="cell"></div>
<script type="module">
window.inflight = 0;
window.startWidget = async (state) => {
  document.getElementById("css").textContent = state._css;
  const values = { ...state }, handlers = {}, pending = {};
  const fire = (name) => (handlers[`change:${name}`] || []).forEach((cb) => cb());
  const apply = (answer) => {
    for (const [k, v] of Object.entries(answer)) {
      if (JSON.stringify(values[k]) !== JSON.stringify(v)) { values[k] = v; fire(k); }
    }
  };
  window.pyPush = apply;
  const model = {
    get: (k) => values[k],
    set: (k, v) => { values[k] = v; pending[k] = v; },
    save_changes: async () => {
      const changes = { ...pending };
      for (const k of Object.keys(pending)) delete pending[k];
      window.inflight++;
      try { apply(JSON.parse(await window.pySave(JSON.stringify(changes)))); } finally { window.inflight--; }
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
                                                             "adjustable", "min_threshold", "edits", "note")}


def _start(page, w) -> None:
    """Open the host page on `page` and start widget `w` in its cell, its saves answered by `w` itself."""
    page.expose_function("pySave", lambda changes: (w.set_state(json.loads(changes)), json.dumps(_synced(w)))[1])
    page.set_content(HOST)
    page.wait_for_function("window.hostReady === true")
    page.evaluate("(s) => window.startWidget(s)", w.get_state())
    page.wait_for_function("Number(document.querySelector('#cell').dataset.renders) >= 1")


def _renders(page) -> int:
    return int(page.evaluate("Number(document.querySelector('#cell').dataset.renders || 0)"))


def test_the_widget_draws_and_inspects_the_routes_in_chromium(browser, tr):
    w = flowroutes.widget(tr, threshold=0.05)
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        _start(page, w)
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


def _members(routes) -> list[str]:
    """Two attention nodes of the explained column with the most edges: the supernode the tests make."""
    att = [n.id for n in routes.nodes if n.kind == "attention" and n.position == routes.position]
    degree = {n: sum(n in (e.source, e.target) for e in routes.edges) for n in att}
    return sorted(att, key=lambda n: -degree[n])[:2]


def test_edits_are_checked_by_flowroutes_edits_and_follow_threshold_and_position(tr):
    w = flowroutes.widget(tr, threshold=0.05)
    routes, high = tr.routes(0.05), tr.routes(0.2)
    top = f"x3@{routes.position}"
    gone = sorted({n.id for n in routes.nodes} - {n.id for n in high.nodes})  # at 0.05, not at 0.2
    members = gone[:2]
    assert len(members) == 2 and top in {n.id for n in high.nodes}
    assert w.edits == Edits().to_dict() and w.current.edits.is_empty() and "edits" not in w.current.to_dict()
    # from Python: a partial dict or an Edits, stored as flowroutes.edits writes them (ids once each)
    w.edits = {"pins": {"nodes": [top, top]}, "supernodes": [{"label": "movers", "nodes": members}]}
    want = {"selection": {"nodes": [], "edges": []}, "pins": {"nodes": [top], "edges": []},
            "supernodes": [{"label": "movers", "nodes": members}], "notes": {}, "focus": "all"}
    assert w.edits == want
    w.edits = Edits(pinned_nodes=[top], supernodes=[Supernode("movers", members)], notes={top: "the prediction"})
    want["notes"] = {top: "the prediction"}
    assert w.edits == want
    # w.current carries them: schema v3, read back as the same Edits, and a widget of it starts from them
    saved = w.current.to_dict()
    assert saved["version"] == 3 and saved["edits"] == want
    assert Routes.from_json(w.current.to_json()).edits == Edits.from_dict(want, *ids_of(routes))
    assert flowroutes.widget(Routes.from_json(saved)).edits == want
    # refused in one FlowroutesError line, the edits kept as they were
    for bad, line in [({"pins": {"nodes": ["x9@9"]}}, "edits.pins.nodes: 'x9@9' is not in these routes"),
                      (5, "edits: expected an object with selection, pins, supernodes, notes and focus"),
                      ({"focus": "blur"}, "edits.focus: expected one of all, fade, hide"),
                      ({"supernodes": [{"label": "one", "nodes": [top]}]},
                       "edits.supernodes[0]: a supernode groups at least two nodes")]:
        with pytest.raises(flowroutes.FlowroutesError) as err:
            w.edits = bad
        assert str(err.value) == line and w.edits == want
    # from the cell (set_state, as the front end sends them): the same check, the refusal in `error`
    w.set_state({"edits": {"supernodes": [{"label": "x0@0", "nodes": members}]}})
    assert w.error == "edits.supernodes[0].label: 'x0@0' is a node's id: choose a name" and w.edits == want
    w.set_state({"edits": {**want, "focus": "fade"}})
    assert w.edits == {**want, "focus": "fade"}
    # a higher threshold: what its routes lack (the supernode) is dropped, with a note; what they hold stays
    w.set_state({"threshold": 0.2})
    assert w.routes == high.to_dict() and w.edits == {**want, "supernodes": [], "focus": "fade"}
    assert w.note == "1 of the edits name nodes or edges that the routes at threshold 0.2 lack: dropped"
    w.set_state({"threshold": 0.15})
    assert w.note == "" and w.edits["pins"]["nodes"] == [top]
    # another position: a new prediction starts without edits, as on the page
    w.set_state({"position": 4})
    assert w.edits == Edits().to_dict() and w.current.position == 4
    assert w.note == "the edits of position 7 do not carry over to position 4: cleared"


def _settle(page) -> None:
    """Waits until every save the cell made has been answered by Python."""
    page.wait_for_function("window.inflight === 0")


def _shown(cell, selector: str) -> list[str]:
    """data-id (or data-label) of the items matching `selector` that are displayed."""
    return cell.locator(selector).evaluate_all(
        "xs => xs.filter(x => getComputedStyle(x).display !== 'none').map(x => x.dataset.id || x.dataset.label)")


def test_the_widget_edits_the_graph_in_chromium_and_python_reads_and_sets_them(browser, tr):
    w = flowroutes.widget(tr, threshold=0.05)
    routes = tr.routes(0.05)
    top = f"x3@{routes.position}"
    members = _members(routes)
    edge = max((e for e in routes.edges if e.kind == "attention" and not {e.source, e.target} & set(members)),
               key=lambda e: e.weight)
    page = browser.new_page(viewport={"width": 1300, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        _start(page, w)
        cell = page.locator("#cell")

        def click(selector, shift=False):
            cell.locator(selector).first.dispatch_event("click", {"shiftKey": shift})
            _settle(page)

        # click selects, shift-click adds: Python reads the selection
        click(f'svg.routes circle[data-id="{members[0]}"]')
        click(f'svg.routes circle[data-id="{members[1]}"]', shift=True)
        assert w.edits["selection"] == {"nodes": members, "edges": []}
        # pinned, then grouped into a labelled supernode
        cell.locator(".fw-pin").click()
        _settle(page)
        assert w.edits["pins"] == {"nodes": members, "edges": []}
        cell.locator(".fw-group-label").fill("name movers")
        cell.locator(".fw-group").click()
        _settle(page)
        assert _shown(cell, "svg.routes .supernode") == ["name movers"]
        assert not set(_shown(cell, "svg.routes circle.node")) & set(members)
        # notes on the top node and on an edge, then the rest faded
        click(f'svg.routes circle[data-id="{top}"]')
        cell.locator(".fw-note-text").fill("the prediction")
        cell.locator(".fw-note-set").click()
        _settle(page)
        click(f'svg.routes .edge[data-key="{edge_id(edge.kind, edge.source, edge.target)}"]')
        cell.locator(".fw-note-text").fill("copies the earlier name")
        cell.locator(".fw-note-set").click()
        _settle(page)
        cell.locator(".fw-focus").select_option("fade")
        _settle(page)
        key = edge_id(edge.kind, edge.source, edge.target)
        want = {"selection": {"nodes": [], "edges": [key]}, "pins": {"nodes": members, "edges": []},
                "supernodes": [{"label": "name movers", "nodes": members}],
                "notes": {top: "the prediction", key: "copies the earlier name"}, "focus": "fade"}
        assert w.edits == want == Edits.from_dict(want, *ids_of(routes)).to_dict()
        count = cell.locator(".fw-edit-count")
        assert count.inner_text() == "0 nodes and 1 edges selected, 2 pinned, 1 supernodes, 2 notes"
        screenshot(page, "widget-edited.png", clip=cell.bounding_box())  # docs/img/ as above
        # w.current is schema v3 with these edits; the summed edges drawn are flowroutes.edits.supernode_edges'
        saved = w.current.to_dict()
        assert saved["version"] == 3 and saved["edits"] == want
        summed = supernode_edges(routes, w.current.edits)
        drawn = cell.locator("svg.routes line.super-edge").evaluate_all(
            "ls => ls.map(l => [l.dataset.source, l.dataset.target, Number(l.dataset.weight)])")
        assert len(drawn) == len(summed) >= 2
        got = {(s, t): v for s, t, v in drawn}
        for s in summed:
            assert got[(s["source"], s["target"])] == pytest.approx(s["weight"], abs=F64_REORDER)
        # a refusal in the cell is one line and sends nothing
        click(f'svg.routes circle[data-id="{top}"]', shift=True)
        cell.locator(".fw-note-set").click()
        assert cell.locator(".fw-error").inner_text() == "a note goes on one node or edge: 2 are selected (click one)"
        assert w.edits["selection"] == {"nodes": [top], "edges": [key]}
        # set from Python: only the pinned top node and what feeds it are drawn
        feeding = {e.source for e in routes.edges if e.target == top}
        high = tr.routes(0.2)
        gone = sorted({n.id for n in routes.nodes} - {n.id for n in high.nodes})  # at 0.05, not at 0.2
        pinned = [top, *sorted(feeding), gone[0]]
        w.edits = {"pins": {"nodes": pinned}, "focus": "hide"}
        before = int(page.evaluate("Number(document.querySelector('#cell').dataset.edited || 0)"))
        page.evaluate("(s) => window.pyPush(s)", _synced(w))
        page.wait_for_function(f"Number(document.querySelector('#cell').dataset.edited) > {before}")
        assert sorted(_shown(cell, "svg.routes circle.node")) == sorted(pinned)
        between = [e for e in routes.edges if e.source in pinned and e.target in pinned]
        assert cell.locator("svg.routes .edge").evaluate_all(
            "gs => gs.filter(g => getComputedStyle(g).display !== 'none').length") == len(between)
        assert cell.locator("svg.routes .supernode").count() == 0 and cell.locator(".fw-focus").input_value() == "hide"
        assert count.inner_text() == f"0 nodes and 0 edges selected, {len(pinned)} pinned, 0 supernodes, 0 notes"
        # a new threshold from the slider: the pin its routes lack is dropped, and the cell says so
        before = _renders(page)
        cell.locator(".fw-threshold").fill("0.2")
        page.wait_for_function(f"Number(document.querySelector('#cell').dataset.renders) > {before}")
        _settle(page)
        assert w.edits["pins"]["nodes"] == pinned[:-1]
        assert cell.locator(".fw-note").inner_text() == ("1 of the edits name nodes or edges that the routes at "
                                                         "threshold 0.2 lack: dropped")
        assert sorted(_shown(cell, "svg.routes circle.node")) == sorted(w.edits["pins"]["nodes"])
        assert not errors, errors
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
