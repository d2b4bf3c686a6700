"""The explorer's graph people can work on (issue 23, item 2), in headless Chromium on a tall tiny model: a token
axis that stays in view and legible, pins, a selected subgraph with the rest faded or hidden, labelled supernodes
with summed edges, free-text notes, and all of it saved in routes JSON v3, loaded back, shared as a link and drawn
in the picture downloads as `render_routes` draws it. Each test failed before its feature."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

import flowroutes
from flowroutes import Routes
from flowroutes.circuit_tracer import to_circuit_tracer
from flowroutes.edits import Edits, Supernode, edge_id, ids_of, supernode_edges
from flowroutes.figures import render_routes
from flowroutes.web.store import Settings
from tests.helpers.tolerances import F64_REORDER
from tests.helpers.web_helpers import TALL_LAYERS as LAYERS
from tests.helpers.web_helpers import (
    ServerThread,
    page_without_errors,
    renders,
    save_tall_llama,
    screenshot,
    wait_render,
)

FORTY = " ".join(f"w{(i * 7) % 90}" for i in range(40))
SHORT = "w1 w2 w3 w1 w5 w6 w7 w2"


@pytest.fixture(scope="module")
def tall_folder(tmp_path_factory):
    """A 24-layer tiny Llama: a 40-token graph is taller and wider than a 1280 x 800 window."""
    return save_tall_llama(tmp_path_factory.mktemp("tall-llama"), seed=1, context=128)


@pytest.fixture(scope="module")
def tall(tall_folder):
    return flowroutes.load_model(str(tall_folder))


@pytest.fixture(scope="module")
def server(tall_folder):
    with ServerThread(Settings(models={"tall": str(tall_folder)}, max_prompt_tokens=128)) as srv:
        yield srv


@pytest.fixture
def page(browser):
    with page_without_errors(browser, 1280, 800) as pg:
        yield pg


def open_trace(page, server, prompt, query="threshold=0.04"):
    page.goto(f"{server.url}/?{query}")
    page.wait_for_function("document.body.dataset.ready === '1'")
    before = renders(page)
    page.fill("#prompt", prompt)
    page.click("#run")
    wait_render(page, before)


def in_window(box: dict, width: int = 1280, height: int = 800) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def font_px(page, selector: str) -> float:
    """The on-screen font size of the first element matching `selector` (its CSS size times its scale)."""
    return page.evaluate("""(sel) => { const t = document.querySelector(sel);
        const m = t.getScreenCTM(); return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b); }""",
                         selector)


# --- the token axis ------------------------------------------------------------------------------------------------
def test_a_forty_token_graph_opens_with_its_token_axis_in_the_window(page, server):
    open_trace(page, server, FORTY)
    assert page.evaluate("window.scrollY") == 0
    assert in_window(page.locator("#graph .explained-marker").bounding_box())
    assert in_window(page.locator("#graph svg").bounding_box())  # the frame ran 30 px past the window's bottom
    label = page.locator("#graph text.token-label.explained")
    assert in_window(label.bounding_box())
    shown = page.locator("#graph text.token-label").evaluate_all(
        "ts => ts.filter(t => t.style.display !== 'none').length")
    assert shown >= 10
    # legible at any zoom: zoomed far out and far in, the labels keep their 12 px on screen
    box = page.locator("#graph svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 3)
    for _ in range(12):
        page.mouse.wheel(0, 300)
    assert font_px(page, "#graph text.token-label.explained") >= 11.99
    for _ in range(24):
        page.mouse.wheel(0, -300)
    assert font_px(page, "#graph text.token-label.explained") >= 11.99
    page.click("#graph .graph-tools .centre")
    assert in_window(label.bounding_box())


def test_the_token_axis_sticks_to_the_windows_bottom_edge(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 520})
    page = context.new_page()
    open_trace(page, server, FORTY)
    svg = page.locator("#graph svg").bounding_box()
    assert svg["y"] + svg["height"] > 520  # the frame is taller than what the window shows of it
    label = page.locator("#graph text.token-label.explained")
    assert in_window(label.bounding_box(), height=520)
    # scrolled down by 60 px: the labels follow the window's edge, still on screen and still below the nodes
    axis = float(page.get_attribute("#graph svg", "data-axis-y"))
    page.evaluate("window.scrollBy(0, 60)")
    page.wait_for_function(f"Number(document.querySelector('#graph svg').dataset.axisY) > {axis}")
    assert in_window(label.bounding_box(), height=520)
    context.close()


def test_the_contrast_views_labels_are_readable_and_clear_of_the_graph(page, server):
    other = SHORT.replace("w5", "w9")
    page.goto(f"{server.url}/?view=contrast&prompt={SHORT.replace(' ', '+')}&prompt_b={other.replace(' ', '+')}")
    page.wait_for_selector("#contrast-b svg")
    for side in "ab":
        frame = page.locator(f"#contrast-{side} svg").bounding_box()
        label = page.locator(f"#contrast-{side} text.token-label.explained")
        assert font_px(page, f"#contrast-{side} text.token-label.explained") >= 11.99
        box = label.bounding_box()
        assert frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"]
        # the label starts below the lowest row of nodes (x0), not over it
        lowest = page.locator(f"#contrast-{side} circle.node").evaluate_all(
            "cs => Math.max(...cs.map(c => c.getBoundingClientRect().bottom))")
        assert box["y"] >= lowest


# --- pins, a selected subgraph, the rest faded or hidden -----------------------------------------------------------
def routes_of(tall, prompt=SHORT, threshold=0.04):
    return flowroutes.trace(tall, prompt).routes(threshold)


def click(page, selector, shift=False):
    page.locator(selector).first.dispatch_event("click", {"shiftKey": shift})


def selected(page) -> tuple[set, set]:
    return (set(page.locator("#graph circle.node.in-selection").evaluate_all("cs => cs.map(c => c.dataset.id)")),
            set(page.locator("#graph .edge.in-selection").evaluate_all("gs => gs.map(g => g.dataset.key)")))


def key(e) -> str:
    return edge_id(e.kind, e.source, e.target)


def test_pins_a_selected_subgraph_and_the_rest_faded_or_hidden(page, server, tall):
    routes = routes_of(tall)
    open_trace(page, server, SHORT)
    top = f"x{LAYERS}@7"
    below = sorted({e.source for e in routes.edges if e.target == top})
    # click selects one, shift-click adds and removes
    click(page, f'#graph circle[data-id="{top}"]')
    assert selected(page) == ({top}, set())
    click(page, f'#graph circle[data-id="{below[0]}"]', shift=True)
    first = next(e for e in routes.edges if e.target == top)
    click(page, f'#graph .edge[data-key="{key(first)}"]', shift=True)
    assert selected(page) == ({top, below[0]}, {key(first)})
    click(page, f'#graph circle[data-id="{below[0]}"]', shift=True)
    assert selected(page) == ({top}, {key(first)})
    # a shift-drag box from the empty right of the last column: every node inside, and the edges between them
    page.click("#edit-clear")
    centres = page.locator("#graph circle.node").evaluate_all("""cs => cs.map(c => {
        const r = c.getBoundingClientRect(); return [c.dataset.id, r.x + r.width / 2, r.y + r.height / 2]; })""")
    col7 = [c for c in centres if c[0].endswith("@7")]
    x0, y0 = max(c[1] for c in col7) + 28, min(c[2] for c in col7) + 40  # below the fit / zoom buttons
    x1, y1 = x0 - 200, y0 + 160
    assert page.evaluate(f"document.elementFromPoint({x0}, {y0}).classList.contains('catcher')")
    inside = {i for i, x, y in centres if x1 <= x <= x0 and y0 <= y <= y1}
    assert len(inside) >= 3
    page.keyboard.down("Shift")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()
    page.keyboard.up("Shift")
    between = {key(e) for e in routes.edges if e.source in inside and e.target in inside}
    assert selected(page) == (inside, between)
    # pinned; then everything else faded, hidden, shown again
    page.click("#edit-pin")
    assert set(page.locator("#graph circle.node.pinned").evaluate_all("cs => cs.map(c => c.dataset.id)")) == inside
    assert page.locator("#graph .edge.pinned").count() == len(between)
    others = (len(routes.nodes) - len(inside)) + (len(routes.edges) - len(between))
    page.select_option("#edit-focus", "fade")
    assert page.locator("#graph .node.faded, #graph .edge.faded").count() == others
    assert int(page.get_attribute("#graph svg", "data-faded")) == others
    page.select_option("#edit-focus", "hide")
    assert page.locator("#graph .node.focus-hidden, #graph .edge.focus-hidden").count() == others
    assert page.locator("#graph .edge.focus-hidden").first.evaluate("g => getComputedStyle(g).display") == "none"
    page.select_option("#edit-focus", "all")
    assert page.locator("#graph .faded, #graph .focus-hidden").count() == 0
    # the selection cleared, the pins stay
    page.click("#edit-clear")
    assert selected(page) == (set(), set()) and page.locator("#graph circle.node.pinned").count() == len(inside)
    # the keyboard: the graph's tab stop is the top state (clicked last); s selects it, Down walks to its strongest
    # incoming edge, p pins that
    assert page.get_attribute(f'#graph circle[data-id="{top}"]', "tabindex") == "0"
    page.focus(f'#graph circle[data-id="{top}"]')
    page.keyboard.press("s")
    page.keyboard.press("ArrowDown")
    strongest = max((e for e in routes.edges if e.target == top), key=lambda e: e.weight)
    assert page.evaluate("document.activeElement.dataset.key") == key(strongest)
    page.keyboard.press("p")
    assert selected(page) == ({top}, set())
    assert page.locator(f'#graph .edge.pinned[data-key="{key(strongest)}"]').count() == 1
    page.keyboard.press("p")
    assert page.locator(f'#graph .edge.pinned[data-key="{key(strongest)}"]').count() == 0
    # a threshold change keeps the edits: the pins still drawn are still pinned
    before = renders(page)
    page.fill("#threshold", "0.03")
    wait_render(page, before)
    still = {n.id for n in routes_of(tall, threshold=0.03).nodes} & inside
    assert set(page.locator("#graph circle.node.pinned").evaluate_all("cs => cs.map(c => c.dataset.id)")) == still


# --- supernodes ---------------------------------------------------------------------------------------------------
def group_members(routes) -> list[str]:
    """Two attention nodes of the explained column with the most edges: the group the tests make."""
    att = [n.id for n in routes.nodes if n.kind == "attention" and n.position == routes.position]
    degree = {n: sum(n in (e.source, e.target) for e in routes.edges) for n in att}
    return sorted(att, key=lambda n: -degree[n])[:2]


def make_group(page, members, label="name movers"):
    click(page, f'#graph circle[data-id="{members[0]}"]')
    for m in members[1:]:
        click(page, f'#graph circle[data-id="{m}"]', shift=True)
    page.fill("#edit-group-label", label)
    page.click("#edit-group")


def test_a_supernode_is_drawn_as_one_node_with_the_summed_edges(page, server, tall):
    routes = routes_of(tall)
    members = group_members(routes)
    open_trace(page, server, SHORT)
    make_group(page, members)
    assert page.locator('#graph .supernode[data-label="name movers"]').count() == 1
    assert page.locator("#graph text.supernode-label").text_content() == "name movers"
    for m in members:  # the members are drawn as the one node, their edges as the summed ones
        assert page.locator(f'#graph circle[data-id="{m}"]').evaluate("c => getComputedStyle(c).display") == "none"
    want = supernode_edges(routes, Edits(supernodes=[Supernode("name movers", members)]))
    drawn = page.locator("#graph line.super-edge").evaluate_all(
        "ls => ls.map(l => [l.dataset.source, l.dataset.target, Number(l.dataset.weight)])")
    assert len(drawn) == len(want) >= 2
    got = {(s, t): w for s, t, w in drawn}
    for s in want:
        assert got[(s["source"], s["target"])] == pytest.approx(s["weight"], abs=F64_REORDER)
    # the sum is the members' edges': e.g. everything into the group from one source
    into = next(s for s in want if s["target"] == "name movers")
    assert into["weight"] == pytest.approx(sum(e.weight for e in routes.edges
                                               if e.source == into["source"] and e.target in members), abs=F64_REORDER)
    # a click on the supernode selects its members; ungroup draws them again
    click(page, "#graph .supernode")
    assert selected(page)[0] == set(members)
    page.click("#edit-ungroup")
    assert page.locator("#graph .supernode, #graph line.super-edge").count() == 0
    assert page.locator(f'#graph circle[data-id="{members[0]}"]').evaluate("c => getComputedStyle(c).display") != "none"
    # refusals: one node, or no label
    click(page, f'#graph circle[data-id="{members[0]}"]')
    page.fill("#edit-group-label", "alone")
    page.click("#edit-group")
    assert page.inner_text("#error").startswith("a supernode groups at least two nodes")


# --- notes ---------------------------------------------------------------------------------------------------------
def test_notes_on_nodes_and_edges_show_on_hover(page, server, tall):
    routes = routes_of(tall)
    edge = max((e for e in routes.edges if e.kind == "attention"), key=lambda e: e.weight)
    open_trace(page, server, SHORT)
    click(page, f'#graph .edge[data-key="{key(edge)}"]')
    page.fill("#edit-note", "copies the earlier name")
    page.click("#edit-note-set")
    item = page.locator(f'#graph .edge[data-key="{key(edge)}"]')
    item.dispatch_event("mouseover")
    assert item.locator("title").text_content().endswith(" | note: copies the earlier name")
    assert item.get_attribute("aria-label").startswith("attention edge ")
    top = f"x{LAYERS}@7"
    click(page, f'#graph circle[data-id="{top}"]')
    page.fill("#edit-note", "the prediction")
    page.click("#edit-note-set")
    assert page.get_attribute(f'#graph circle[data-id="{top}"]', "aria-label").endswith(" | note: the prediction")
    # two selected: refused with one line
    click(page, f'#graph .edge[data-key="{key(edge)}"]', shift=True)
    page.click("#edit-note-set")
    assert page.inner_text("#error") == "a note goes on one node or edge: 2 are selected (click one)"


# --- saved, opened, shared -----------------------------------------------------------------------------------------
def edit_everything(page, routes) -> dict:
    """A supernode, a pin, two notes, a selection and the rest faded; returns the edits they make."""
    members = group_members(routes)
    make_group(page, members)
    top = f"x{LAYERS}@7"
    edge = max((e for e in routes.edges if e.kind == "attention" and not {e.source, e.target} & set(members)),
               key=lambda e: e.weight)
    click(page, f'#graph circle[data-id="{top}"]')
    page.click("#edit-pin")
    page.fill("#edit-note", "the prediction")
    page.click("#edit-note-set")
    click(page, f'#graph .edge[data-key="{key(edge)}"]')
    page.fill("#edit-note", "copies the earlier name")
    page.click("#edit-note-set")
    click(page, f'#graph circle[data-id="{top}"]', shift=True)
    page.select_option("#edit-focus", "fade")
    return {"selection": {"nodes": [top], "edges": [key(edge)]}, "pins": {"nodes": [top], "edges": []},
            "supernodes": [{"label": "name movers", "nodes": members}],
            "notes": {top: "the prediction", key(edge): "copies the earlier name"}, "focus": "fade"}


def edits_on(page) -> dict:
    return page.evaluate("editsJson(current.routes)")


def download(page, button, tmp_path, name):
    data, path = download_bytes(page, button, tmp_path, name)
    return json.loads(data), path


def download_bytes(page, button, tmp_path, name):
    with page.expect_download() as d:
        page.click(button)
    path = tmp_path / name
    d.value.save_as(path)
    return path.read_bytes(), path


def test_edits_round_trip_through_a_saved_file_a_circuit_tracer_graph_and_a_link(browser, page, server, tall,
                                                                                tmp_path):
    routes = routes_of(tall)
    open_trace(page, server, SHORT)
    want = edit_everything(page, routes)
    assert edits_on(page) == want
    page.click("#graph .graph-tools .fit")
    screenshot(page, "web-edited.png", full_page=True)  # docs/img with FLOWROUTES_UPDATE_SCREENSHOTS=1
    # routes JSON v3: the same routes, with exactly these edits
    saved, path = download(page, "#edit-save", tmp_path, "routes.json")
    assert saved["version"] == 3 and saved["edits"] == want
    back = Routes.from_json(saved)
    assert back.edits == Edits.from_dict(want, *ids_of(routes))
    assert [(e.source, e.target, e.kind) for e in back.edges] == [(e.source, e.target, e.kind) for e in routes.edges]
    # circuit-tracer: pins and supernodes in qParams, as flowroutes.circuit_tracer writes them for these edits
    graph, _ = download(page, "#edit-circuit-tracer", tmp_path, "graph.json")
    assert graph["qParams"]["supernodes"] == [["name movers", *want["supernodes"][0]["nodes"]]]
    assert graph["qParams"]["pinnedIds"] == to_circuit_tracer(back)["qParams"]["pinnedIds"] == [f"x{LAYERS}@7"]
    # with edits on the graph, the download links carry them (the pictures: the next test)
    with page.expect_download() as d:
        page.click("#download-svg")
    sent = urllib.parse.parse_qs(urllib.parse.urlsplit(d.value.url).query)
    assert urllib.parse.urlsplit(d.value.url).path == "/api/download" and sent["format"] == ["svg"]
    assert json.loads(base64.urlsafe_b64decode(sent["edits"][0] + "===")) == want
    # a shared link restores them on a fresh page
    link = page.url
    assert "edits=" in link and len(link) < 4000
    fresh = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    fresh.goto(link)
    fresh.wait_for_function("document.body.dataset.ready === '1'")
    assert edits_on(fresh) == want
    assert fresh.locator('#graph .supernode[data-label="name movers"]').count() == 1
    assert int(fresh.get_attribute("#graph svg", "data-faded")) > 0
    assert fresh.input_value("#edit-focus") == "fade"
    fresh.context.close()
    # the saved file opened on a page showing another prompt: its prompt traced again, its edits restored
    other = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    open_trace(other, server, "w4 w9")
    before = renders(other)
    other.set_input_files("#edit-open", str(path))
    wait_render(other, before)
    other.wait_for_function("document.querySelector('#graph .supernode') !== null")
    assert other.input_value("#prompt") == SHORT and edits_on(other) == want
    # version 2 and version 1 files (no edits) open too
    for version in (2, 1):
        old = {k: v for k, v in saved.items() if k != "edits"}
        old["version"] = version
        if version == 1:  # attention nodes numbered 1..L
            old["nodes"] = [{**n, "layer": n["layer"] + 1} if n["kind"] == "attention" else n for n in old["nodes"]]
        file = tmp_path / f"v{version}.json"
        file.write_text(json.dumps(old), encoding="utf-8")
        before = renders(other)
        other.set_input_files("#edit-open", str(file))
        wait_render(other, before)
        assert other.input_value("#prompt") == SHORT and other.inner_text("#error") == ""
        assert edits_on(other)["supernodes"] == [] and other.locator("#graph .supernode").count() == 0
    other.context.close()


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_the_picture_downloads_draw_the_edits_as_python_does(page, server, tall, tmp_path):
    routes = routes_of(tall)
    members = group_members(routes)
    top = f"x{LAYERS}@7"
    # pinned: the top and the state it reads, and the states the first member writes to; the rest hidden
    below = sorted({e.source for e in routes.edges if e.target == top} | {e.target for e in routes.edges
                                                                          if e.source == members[0]})
    open_trace(page, server, SHORT)
    click(page, f'#graph circle[data-id="{top}"]')
    for n in below:
        click(page, f'#graph circle[data-id="{n}"]', shift=True)
    page.click("#edit-pin")
    make_group(page, members)
    page.select_option("#edit-focus", "hide")
    made = edits_on(page)
    assert made["supernodes"] == [{"label": "name movers", "nodes": members}] and made["focus"] == "hide"
    assert "edits=" in page.get_attribute("#download-svg", "href")
    # the SVG behind the link is the picture Python draws of the same routes with the same edits, byte for byte
    routes.edits = Edits.from_dict(made, *ids_of(routes))
    svg, _ = download_bytes(page, "#download-svg", tmp_path, "routes.svg")
    assert svg == render_routes(routes, "svg")
    # and it drew the edits: of the members' edges only the summed ones, of the others those between kept nodes
    kept = {top, *below, *members}  # the pinned and the selected nodes: the subgraph, with the edges between them
    drawn = set(re.findall(r'<g id="((?:edge|super-edge|supernode)-\d+)">', svg.decode()))
    want = {f"edge-{i}" for i, e in enumerate(routes.edges)
            if e.source in kept and e.target in kept and not {e.source, e.target} & set(members)}
    assert {d for d in drawn if d.startswith("edge-")} == want and 0 < len(want) < len(routes.edges) / 4
    summed = supernode_edges(routes, routes.edits)
    shown = {f"super-edge-{k}" for k, s in enumerate(summed)
             if any(e.source in kept and e.target in kept for e in routes.edges if key(e) in s["edges"])}
    assert {d for d in drawn if d.startswith("super-edge-")} == shown and 0 < len(shown) < len(summed)
    assert {d for d in drawn if d.startswith("supernode-")} == {"supernode-0"}
    png, _ = download_bytes(page, "#download-png", tmp_path, "routes.png")
    assert png == render_routes(routes, "png", max_pixels=Settings(models={}).max_render_pixels)
    # without edits the links are the plain picture again
    page.select_option("#edit-focus", "all")
    page.click("#edit-ungroup")  # the members are still selected
    click(page, f'#graph circle[data-id="{top}"]')
    for n in below:
        click(page, f'#graph circle[data-id="{n}"]', shift=True)
    page.click("#edit-pin")  # all pinned: unpinned
    page.click("#edit-clear")
    assert edits_on(page) == {"selection": {"nodes": [], "edges": []}, "pins": {"nodes": [], "edges": []},
                              "supernodes": [], "notes": {}, "focus": "all"}
    assert "edits=" not in page.get_attribute("#download-svg", "href")
    svg, _ = download_bytes(page, "#download-svg", tmp_path, "plain.svg")
    assert svg == render_routes(routes_of(tall), "svg")


def test_edits_too_large_for_a_link_are_posted_and_give_the_same_picture(page, server, tall, tmp_path):
    routes = routes_of(tall)
    open_trace(page, server, SHORT)
    ids = [n.id for n in routes.nodes][:8]
    notes = {n: f"{n} " + "long note " * 99 for n in ids}  # 8 notes of 1000 characters: over a link's 8000
    page.evaluate("""(notes) => { for (const [k, v] of Object.entries(notes)) editor.edits.notes.set(k, v);
                                  editor.paint(); writeUrl(); }""", notes)
    assert edits_on(page)["notes"] == notes and page.evaluate("editsParam()") is None
    assert "edits=" not in page.get_attribute("#download-svg", "href")
    with page.expect_request("**/api/export") as asked:
        svg, _ = download_bytes(page, "#download-svg", tmp_path, "routes.svg")
    assert json.loads(asked.value.post_data)["edits"]["notes"] == notes
    routes.edits = Edits(notes=notes)
    assert svg == render_routes(routes, "svg")
    cut = f"{ids[0]} long note long note long note long\u2026"  # at most 40 characters drawn, the tooltip whole
    assert f"<!-- {cut} -->".encode() in svg and f"<title>note on {ids[0]}: {notes[ids[0]]}</title>".encode() in svg


def get(server, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=120) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize(("edits", "detail"), [
    ("A" * 8001, "edits: 8001 characters, over the 8000 a link carries: save the edits as JSON from the page instead"),
    ("%%%", "edits: not base64url text (the page writes a link's edits as base64url of their JSON)"),
    ("e3+0", "edits: not base64url text (the page writes a link's edits as base64url of their JSON)"),
    (base64.urlsafe_b64encode(b"\xff\xfe{}").decode(), "edits: not base64url of JSON edits (the page writes them; "
                                                       "see docs/schema.md)"),
    ("A", "edits: not base64url of JSON edits (the page writes them; see docs/schema.md)"),
    (b64("[" * 5000), "edits: not base64url of JSON edits (the page writes them; see docs/schema.md)"),
    (b64("[]"), "edits: expected an object with selection, pins, supernodes, notes and focus"),
    (b64('{"pins": {"nodes": ["x99@1"]}}'), "edits.pins.nodes: 'x99@1' is not in these routes"),
    (b64('{"focus": "blink"}'), "edits.focus: expected one of all, fade, hide"),
])
def test_a_download_links_bad_edits_are_one_line_refusals(server, edits, detail):
    for fmt in ("svg", "png", "json"):
        status, body = get(server, f"/api/download?model=tall&prompt={SHORT.replace(' ', '+')}&format={fmt}"
                                   f"&edits={urllib.parse.quote(edits)}")
        assert (status, json.loads(body)) == (422, {"detail": detail}), fmt


def test_a_download_link_with_edits_gives_them_in_the_json_and_the_picture(server, tall):
    routes = routes_of(tall)
    top = f"x{LAYERS}@7"
    edits = {"pins": {"nodes": [top]}, "focus": "fade", "notes": {top: "the prediction"}}
    query = f"/api/download?model=tall&prompt={SHORT.replace(' ', '+')}&edits={b64(json.dumps(edits))}"
    status, body = get(server, query + "&format=json")
    assert status == 200 and Routes.from_json(body.decode()).edits == Edits.from_dict(edits, *ids_of(routes))
    status, svg = get(server, query + "&format=svg")
    routes.edits = Edits.from_dict(edits, *ids_of(routes))
    assert status == 200 and svg == render_routes(routes, "svg") and b"<title>note on " in svg


@pytest.mark.parametrize(("edits", "note"), [
    ("%%%not-base64", "the link's edits are not base64url text: ignored"),
    (b64("{not json"), "the link's edits are not valid JSON: ignored"),
    (b64('{"pins": 5}'), "the link's edits are malformed (pins is not {nodes, edges}): ignored"),
    (b64('{"supernodes": [{"label": 7, "nodes": []}]}'),
     "the link's edits are malformed (supernodes[0] has no label of 1 to 120 characters): ignored"),
    ("A" * 9000, "the link's edits are over 8000 characters: ignored"),
    (b64('{"pins": {"nodes": ["x99@99", "x24@7"]}}'), "1 of the link's edits name nodes or edges these routes lack: "
                                                       "left out"),
])
def test_hostile_or_broken_link_edits_are_ignored_with_a_note(page, server, edits, note):
    page.goto(f"{server.url}/?prompt={SHORT.replace(' ', '+')}&edits={urllib.parse.quote(edits)}")
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.inner_text("#note") == note
    assert page.locator("#graph circle.node").count() > 0 and page.inner_text("#error") == ""
    pinned = page.locator("#graph circle.node.pinned").evaluate_all("cs => cs.map(c => c.dataset.id)")
    assert pinned == (["x24@7"] if "x99@99" in base64.urlsafe_b64decode(edits + "===").decode("latin-1") else [])


def test_the_server_checks_edits_and_saved_files_with_one_line_refusals(server, tall):
    routes = routes_of(tall)
    query = {"model": "tall", "prompt": SHORT, "threshold": 0.04}
    status, body = server.post("/api/export", {**query, "edits": {"pins": {"nodes": ["x99@1"]}}})
    assert status == 422 and body["detail"] == "edits.pins.nodes: 'x99@1' is not in these routes"
    status, body = server.post("/api/export", {**query, "edits": {"focus": "all"}, "format": "pdf"})
    assert status == 422
    head = {k: routes.to_dict()[k] for k in ("schema", "version", "prompt", "position", "attention_threshold",
                                             "ffn_threshold", "renormalize")}
    status, body = server.post("/api/open", {**head, "model": routes.model_name, "version": 9})
    assert status == 422 and body["detail"].startswith("routes schema version 9 is not readable")
    status, body = server.post("/api/open", {**head, "model": "elsewhere"})
    assert status == 404 and body["detail"].startswith("model 'elsewhere' is not configured on this server")
    status, body = server.post("/api/open", {**head, "model": "tall", "edits": {"notes": {"x0@0": "n" * 2000}}})
    assert status == 422 and "expected text of at most 1000 characters" in body["detail"]
    big = json.dumps({**head, "model": "tall", "edits": {"notes": {"x0@0": "n" * 100_000}}}).encode()
    req = urllib.request.Request(server.url + "/api/open", data=big, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413  # bodies stay bounded
    status, body = server.post("/api/open", {**head, "model": routes.model_name})
    assert status == 200 and body["model"] == "tall" and body["edits"]["supernodes"] == []
