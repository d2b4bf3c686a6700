"""The explorer's graph people can work on (issue 23, item 2), in headless Chromium on a tall tiny model: a token
axis that stays in view and legible, pins, a selected subgraph with the rest faded or hidden, labelled supernodes
with summed edges, free-text notes, and all of it saved in routes JSON v3, loaded back and shared as a link.
Each test failed before its feature."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

import flowroutes
from flowroutes.edits import Edits, Supernode, edge_id, supernode_edges
from flowroutes.web.store import Settings
from tests.helpers.models import _randomise, word_tokenizer
from tests.helpers.web_helpers import ServerThread, renders, wait_render

LAYERS = 24
FORTY = " ".join(f"w{(i * 7) % 90}" for i in range(40))
SHORT = "w1 w2 w3 w1 w5 w6 w7 w2"


@pytest.fixture(scope="module")
def tall_folder(tmp_path_factory):
    """A 24-layer tiny Llama: a 40-token graph is taller and wider than a 1280 x 800 window."""
    folder = tmp_path_factory.mktemp("tall-llama")
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False)
    _randomise(LlamaForCausalLM(cfg), 1).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tall(tall_folder):
    return flowroutes.load_model(str(tall_folder))


@pytest.fixture(scope="module")
def server(tall_folder):
    with ServerThread(Settings(models={"tall": str(tall_folder)}, max_prompt_tokens=128)) as srv:
        yield srv


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    yield pg
    context.close()
    assert not pg.errors, pg.errors


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
        assert got[(s["source"], s["target"])] == pytest.approx(s["weight"], abs=1e-9)
    # the sum is the members' edges': e.g. everything into the group from one source
    into = next(s for s in want if s["target"] == "name movers")
    assert into["weight"] == pytest.approx(sum(e.weight for e in routes.edges
                                               if e.source == into["source"] and e.target in members), abs=1e-12)
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
