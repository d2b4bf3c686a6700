"""The explorer after a new user's tour (issue 24, defects 3 and 7), in headless Chromium: long prompts on a tall
model (labels in view, a readable fit, collapsed columns, panning that keeps the graph on screen, heatmap labels),
one tab stop with arrow walks, heatmap clicks that select in the graph, marked cells, a diffed intervention graph,
captions that stay out of the inspector, a landing page that shows a graph and a set that opens on its first
prompt. Each test failed before its fix."""

from __future__ import annotations

import pytest

import flowroutes
from flowroutes.web.store import Settings
from tests.helpers.web_helpers import TALL_LAYERS as LAYERS
from tests.helpers.web_helpers import ServerThread, page_without_errors, renders, save_tall_llama, wait_render

LONG = " ".join(f"w{(i * 7) % 90}" for i in range(150))
SHORT = "w1 w2 w3 w1 w5 w6 w7 w2"
IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def tall_folder(tmp_path_factory):
    """A 24-layer tiny Llama with a 256-token context: graphs taller and wider than the page."""
    return save_tall_llama(tmp_path_factory.mktemp("tall-llama"), seed=0, context=256)


@pytest.fixture(scope="module")
def tall(tall_folder):
    return flowroutes.load_model(str(tall_folder))


@pytest.fixture(scope="module")
def server(tall_folder):
    with ServerThread(Settings(models={"tall": str(tall_folder)}, max_prompt_tokens=256)) as srv:
        yield srv


@pytest.fixture
def page(browser):
    with page_without_errors(browser, 1440, 1000) as pg:
        yield pg


def open_trace(page, server, prompt, threshold=0.04, view="graph"):
    page.goto(f"{server.url}/?threshold={threshold}&view={view}")
    page.wait_for_function("document.body.dataset.ready === '1'")
    before = renders(page)
    page.fill("#prompt", prompt)
    page.click("#run")
    wait_render(page, before)


def viewport_scale(page, where="#graph") -> float:
    t = page.get_attribute(f"{where} .viewport", "transform")
    return float(t.split("scale(")[1].rstrip(")"))


def visible(page, selector) -> list[dict]:
    """Bounding boxes of the elements of `selector` that are displayed."""
    return page.locator(selector).evaluate_all(
        "es => es.filter(e => getComputedStyle(e).display !== 'none').map(e => { const r = e.getBoundingClientRect();"
        " return { x: r.x, y: r.y, width: r.width, height: r.height }; })")


def within(box, frame, slack=1.0) -> bool:
    return (box["x"] >= frame["x"] - slack and box["y"] >= frame["y"] - slack
            and box["x"] + box["width"] <= frame["x"] + frame["width"] + slack
            and box["y"] + box["height"] <= frame["y"] + frame["height"] + slack)


# --- defect 3: long prompts --------------------------------------------------------------------------------------
def test_a_long_graph_opens_with_token_and_layer_labels_in_view(page, server):
    open_trace(page, server, LONG)
    svg = page.locator("#graph svg").bounding_box()
    assert float(page.get_attribute("#graph svg", "data-height")) > svg["height"]  # taller than the page
    assert float(page.get_attribute("#graph svg", "data-width")) > 3 * svg["width"]  # and much wider
    layers = [b for b in visible(page, "#graph text.axis-label") if within(b, svg)]
    assert len(layers) >= 5
    explained = page.locator("#graph text.token-label.explained").bounding_box()
    assert within(explained, svg)
    tokens = [b for b in visible(page, "#graph text.token-label") if within(b, svg)]
    assert len(tokens) >= 10
    # the labels follow the graph while it pans
    page.focus("#graph .graph-frame")
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    assert len([b for b in visible(page, "#graph text.axis-label") if within(b, svg)]) >= 5
    assert len([b for b in visible(page, "#graph text.token-label") if within(b, svg)]) >= 10


def test_fit_keeps_a_long_graph_readable(page, server):
    open_trace(page, server, LONG)
    page.click("#graph .graph-tools .fit")
    svg = page.locator("#graph svg").bounding_box()
    height = float(page.get_attribute("#graph svg", "data-height"))
    scale = viewport_scale(page)
    # the graph keeps at least half its size (or its whole height fills the view): never a thin strip
    assert scale >= min(0.5, svg["height"] / height) - 1e-6
    assert page.locator("#graph .viewport").bounding_box()["height"] >= 0.45 * svg["height"]
    assert within(page.locator("#graph .explained-marker").bounding_box(), svg)


def test_collapsing_empty_columns_leaves_little_empty_width(page, server, tall):
    open_trace(page, server, LONG, threshold=0.3)
    routes = flowroutes.trace(tall, LONG).routes(0.3)
    used = {n.position for n in routes.nodes}
    assert len(used) < 40  # most of the 150 columns hold no node of the routes
    page.check("#collapse")
    width = float(page.get_attribute("#graph svg", "data-width"))
    column = float(page.get_attribute("#graph svg", "data-column-width"))
    empty = width - 58 - len(used) * column  # 48 px of axis on the left, 10 on the right
    assert empty / width < 0.3, (empty, width)
    # each run of empty columns is one gap, marked with how many columns it hides
    hidden = sum(int(t.split()[0]) for t in page.locator("#graph text.gap-label").evaluate_all(
        "ts => ts.map(t => t.getAttribute('aria-label'))"))
    assert hidden == len(routes.tokens) - len(used)


def test_panning_never_runs_the_graph_out_of_view(page, server):
    open_trace(page, server, LONG)
    svg = page.locator("#graph svg").bounding_box()
    page.focus("#graph .graph-frame")
    for keys in (["ArrowLeft"] * 200 + ["ArrowUp"] * 40, ["ArrowRight"] * 400 + ["ArrowDown"] * 80):
        for key in keys:
            page.keyboard.press(key)
        graph = page.locator("#graph .viewport").bounding_box()
        overlap_w = min(graph["x"] + graph["width"], svg["x"] + svg["width"]) - max(graph["x"], svg["x"])
        overlap_h = min(graph["y"] + graph["height"], svg["y"] + svg["height"]) - max(graph["y"], svg["y"])
        assert overlap_w >= min(graph["width"], svg["width"]) * 0.95
        assert overlap_h >= min(graph["height"], svg["height"]) * 0.95


def test_large_heatmaps_keep_their_labels(page, server, tall):
    n_tokens = len(flowroutes.trace(tall, LONG).tokens)
    open_trace(page, server, LONG, view="heatmaps")
    page.wait_for_selector("#heat-ffn-map")
    ffn = page.locator("#heat-ffn-map")
    assert int(ffn.get_attribute("data-col-labels-drawn")) == n_tokens  # 14 px cells: every token named
    assert int(ffn.get_attribute("data-row-labels-drawn")) == LAYERS
    assert float(ffn.get_attribute("data-top")) > 20
    # a head's maps over 150 tokens have 3 px cells: every k-th label, k chosen so that the labels do not overlap
    page.click('#tabs button[data-view="graph"]')
    page.locator(f'#graph svg circle[data-id="x{LAYERS - 1}A@{n_tokens - 1}"]').dispatch_event("click")
    page.wait_for_selector("tr.head-row")
    page.locator("tr.head-row").first.click()
    page.wait_for_selector("#heat-attention")
    heat = page.locator("#heat-attention")
    cell, every = int(heat.get_attribute("data-cell")), int(heat.get_attribute("data-label-every"))
    drawn = int(heat.get_attribute("data-row-labels-drawn"))
    assert every * cell >= 8 and drawn == -(-n_tokens // every) and drawn >= 20
    assert int(heat.get_attribute("data-col-labels-drawn")) == drawn


# --- defect 7 ------------------------------------------------------------------------------------------------------
def test_one_tab_stop_then_arrows_walk_the_routes_from_the_explained_position(page, server, tall):
    routes = flowroutes.trace(tall, SHORT).routes(0.04)
    open_trace(page, server, SHORT)
    stops = page.locator("#graph [tabindex='0'], #graph button").count()
    assert stops <= 6, stops  # the frame, its four buttons and one item of the graph (was one per edge and node)
    assert len(routes.edges) + len(routes.nodes) > 50
    top = f"x{LAYERS}@{routes.position}"
    page.focus("#graph .graph-frame")
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.id") == top:
            break
    assert page.evaluate("document.activeElement.dataset.id") == top
    page.keyboard.press("ArrowDown")  # the strongest edge into the explained state
    label = page.evaluate("document.activeElement.getAttribute('aria-label')")
    into = [e for e in routes.edges if e.target == top]
    strongest = max(into, key=lambda e: e.weight)
    assert f"{strongest.source} -> {top}" in label
    page.keyboard.press("ArrowDown")  # its source
    assert page.evaluate("document.activeElement.dataset.id") == strongest.source
    page.keyboard.press("Home")
    assert page.evaluate("document.activeElement.dataset.id") == top
    page.keyboard.press("Enter")
    page.wait_for_selector("tr.lens-row")
    # the item reached is the graph's tab stop now
    assert page.locator("#graph [tabindex='0'].node, #graph [tabindex='0'].edge").count() == 1


def cell_click(page, selector, row, col):
    canvas = page.locator(selector)
    left, top = float(canvas.get_attribute("data-left")), float(canvas.get_attribute("data-top"))
    cell = float(canvas.get_attribute("data-cell"))
    canvas.click(position={"x": left + col * cell + cell / 2, "y": top + row * cell + cell / 2})


def test_a_heatmap_click_selects_that_head_in_the_graph(page, server, tall):
    routes = flowroutes.trace(tall, SHORT).routes(0.04)
    layer, head = max(routes.head_weights(), key=routes.head_weights().get)
    theirs = [e for e in routes.edges if e.kind == "attention" and e.layer == layer and head in e.heads]
    open_trace(page, server, SHORT, view="heatmaps")
    page.wait_for_selector("#heat-routes-heads")
    cell_click(page, "#heat-routes-heads", layer, head)
    page.wait_for_selector("#head-title")
    assert page.is_visible("#view-graph") and not page.is_visible("#view-heatmaps")
    selected = page.locator("#graph svg .edge.selected").evaluate_all("es => es.map(e => Number(e.dataset.index))")
    assert sorted(selected) == sorted(routes.edges.index(e) for e in theirs)
    assert page.inner_text("#head-title") == f"L{layer}H{head}"
    assert f"{len(theirs)} sub-edge" in page.inner_text("#inspector .picked-head")
    # an FFN cell selects that block's FFN edge at that token
    ffn = next(e for e in routes.edges if e.kind == "ffn")
    p = int(ffn.target.split("@")[1])
    page.click('#tabs button[data-view="heatmaps"]')
    page.wait_for_selector("#heat-ffn-map")
    cell_click(page, "#heat-ffn-map", ffn.layer, p)
    page.wait_for_selector("table.neurons")
    selected = page.locator("#graph svg .edge.selected").evaluate_all("es => es.map(e => Number(e.dataset.index))")
    assert selected == [routes.edges.index(ffn)]


ORANGE = [255, 140, 0]


def test_head_maps_mark_the_inspected_edge(page, server, tall):
    routes = flowroutes.trace(tall, SHORT).routes(0.04)
    edge = next(e for e in routes.edges if e.kind == "attention" and e.source.split("@")[1] != e.target.split("@")[1])
    s, t = (int(x.split("@")[1]) for x in (edge.source, edge.target))
    open_trace(page, server, SHORT)
    page.locator(f'#graph svg .edge[data-index="{routes.edges.index(edge)}"]').dispatch_event("click")
    page.wait_for_selector("tr.head-row")
    page.locator("tr.head-row").first.click()
    page.wait_for_selector("#heat-contribution")
    pixel = """([id, x, y]) => Array.from(document.querySelector(id).getContext('2d')
        .getImageData(x, y, 1, 1).data.slice(0, 3))"""
    for heat in ("#heat-attention", "#heat-contribution"):
        canvas = page.locator(heat)
        assert canvas.get_attribute("data-mark") == f"{t},{s}"
        left, top, cell = (float(canvas.get_attribute(k)) for k in ("data-left", "data-top", "data-cell"))
        x0, y0 = left + s * cell, top + t * cell
        assert page.evaluate(pixel, [heat, x0 + 1, y0 + cell / 2]) == ORANGE  # the outline's left side
        assert page.evaluate(pixel, [heat, x0 + cell / 2, y0 + cell / 2]) != ORANGE  # the cell itself keeps its colour
        other = left + ((s + 1) % len(routes.tokens)) * cell + 1
        assert page.evaluate(pixel, [heat, other, y0 + cell / 2]) != ORANGE


def test_an_intervention_shows_one_full_size_graph_diffed_against_the_routes_before(page, server, tall):
    routes = flowroutes.trace(tall, SHORT).routes(0.04)
    layer, head = max(routes.head_weights(), key=routes.head_weights().get)
    edge = next(e for e in routes.edges if e.kind == "attention" and e.layer == layer and head in e.heads)
    open_trace(page, server, SHORT)
    page.locator(f'#graph svg .edge[data-index="{routes.edges.index(edge)}"]').dispatch_event("click")
    page.wait_for_selector("tr.head-row")
    page.locator(f'tr.head-row[data-head="{head}"]').click()
    page.wait_for_selector("#head-view .intervene-bar")
    page.locator("#head-view .intervene-mode").select_option("zero")
    with page.expect_response(lambda r: r.url.endswith("/api/intervene")) as got:
        page.locator("#head-view .intervene-run").click()
    page.wait_for_selector("#routes-diff svg")
    after = got.value.json()["routes"]["edges"]

    before = {(e.kind, e.layer, e.source, e.target) for e in routes.edges}
    now = {(e["kind"], e["layer"], e["source"], e["target"]) for e in after}
    gained, lost, kept = now - before, before - now, now & before
    assert lost  # zeroing the strongest head removes its sub-edges
    box = page.locator("#routes-diff")
    counts = [int(box.get_attribute(f"data-{k}")) for k in ("gained", "lost", "kept")]
    assert counts == [len(gained), len(lost), len(kept)]
    assert page.locator("#routes-diff svg .edge-lost").count() == len(lost)
    assert page.locator("#routes-diff svg .edge-gained").count() == len(gained)
    dashed = page.locator("#routes-diff svg .edge-lost").evaluate_all(
        "es => es.every(e => (e.getAttribute('stroke-dasharray') || e.querySelector('[stroke-dasharray]')))")
    assert dashed
    text = page.inner_text("#intervention .diff-summary")
    assert f"{len(gained)} edges gained" in text and f"{len(lost)} lost" in text
    assert f"L{layer}H{head}" in text.split("no longer active:")[1]
    # full size: as wide as the main graph, and not shrunk
    assert box.bounding_box()["width"] >= 0.9 * page.locator("#graph svg").bounding_box()["width"]
    assert viewport_scale(page, "#routes-diff") >= 0.5


def test_the_logit_attribution_caption_stays_out_of_the_inspector(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    try:
        open_trace(page, server, SHORT)
        page.fill("#target", "w3")
        page.click("#run-target")
        page.wait_for_selector("#heat-dla")
        page.wait_for_function("document.body.dataset.busy === '0'")
        edge = page.locator("#inspector").bounding_box()["x"]
        boxes = page.locator("#target-view *").evaluate_all(
            "es => es.map(e => { const r = e.getBoundingClientRect(); return [e.tagName, e.className, r.right]; })")
        over = [b for b in boxes if b[2] > edge + 0.5]
        assert not over, over
    finally:
        context.close()


def test_the_landing_page_shows_the_example_graph(page, server, tall):
    page.goto(server.url + "/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.input_value("#prompt") == IOI
    want = flowroutes.trace(tall, IOI).routes(0.04)
    assert page.get_attribute("#graph svg.routes", "data-edges") == str(len(want.edges))
    assert page.locator("#graph svg .explained-marker").count() == 1
