"""The explorer, part two (issue 12), in headless Chromium on tiny models: every defect of the issue has a test
here that failed before its fix, and every new capability an end-to-end test (interventions checked against
`flowroutes.patching`, direct logit attribution against an independent computation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from web_helpers import ServerThread, chromium, renders, wait_render

import flowroutes
from flowroutes.web import internals as ins
from flowroutes.web.store import Settings

PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"
LONG = " ".join(f"w{(i * 7) % 90}" for i in range(40))


@pytest.fixture(scope="module")
def reference(tiny_folder):
    return flowroutes.load_model(str(tiny_folder))


@pytest.fixture(scope="module")
def server(tiny_folder):
    settings = Settings(models={str(tiny_folder): str(tiny_folder)}, max_prompt_tokens=64, cache_size=32,
                        max_drawn_edges=60)
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def new_page(browser, **options):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, **options)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    return page


@pytest.fixture
def page(browser):
    pg = new_page(browser)
    yield pg
    pg.context.close()
    assert not pg.errors, pg.errors  # no uncaught JavaScript error in any test


def trace_prompt(page, server, prompt=PROMPT, query=""):
    page.goto(server.url + "/" + query)
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    before = renders(page)
    page.fill("#prompt", prompt)
    page.click("#run")
    wait_render(page, before)


def retrace(page, prompt, wait_idle=True):
    """A new prompt traced on the same page (no reload)."""
    before = renders(page)
    page.fill("#prompt", prompt)
    page.click("#run")
    if wait_idle:
        wait_render(page, before)
    else:  # another request is held on purpose
        page.wait_for_function(f"Number(document.body.dataset.renders) > {before}")


def idle(page):
    page.wait_for_function("document.body.dataset.busy === '0'")


def inside(inner: dict, outer: dict) -> bool:
    return (inner["x"] >= outer["x"] - 0.5 and inner["y"] >= outer["y"] - 0.5
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5)


def edge_index(routes, test) -> int:
    return next(i for i, e in enumerate(routes.edges) if test(e))


def position_of(node_id: str) -> int:
    return int(node_id.split("@")[1])


# --- defect 1: a new trace never leaves the old one's panel ------------------------------------------------------
def test_a_new_trace_resets_the_inspector_and_drops_late_answers(page, server, reference):
    routes = flowroutes.trace(reference, PROMPT).routes(0.04)
    trace_prompt(page, server)
    i = edge_index(routes, lambda e: e.kind == "attention")
    page.locator(f'#graph svg .edge[data-index="{i}"]').click()
    page.wait_for_selector("tr.head-row")
    page.locator("tr.head-row").first.click()
    page.wait_for_selector("#head-title")
    # a shorter prompt: the panel and the selection go, nothing of PROMPT stays
    retrace(page, "w4 w9")
    assert page.locator("#inspector h3").count() == 0 and page.locator("tr.head-row").count() == 0
    assert page.locator("#graph svg .selected").count() == 0
    # an inspect answer that arrives after the next trace is dropped
    held = []
    page.route("**/api/heads", lambda route: held.append(route))
    short = flowroutes.trace(reference, "w4 w9").routes(0.04)
    node = next(n for n in short.nodes if n.kind == "attention")
    page.locator(f'#graph svg circle[data-id="{node.id}"]').dispatch_event("click")
    while not held:
        page.wait_for_timeout(20)
    retrace(page, PROMPT, wait_idle=False)
    held[0].continue_()
    page.unroute("**/api/heads")
    idle(page)
    assert page.locator("#inspector h3").count() == 0, page.inner_text("#inspector")
    # and a panel opened now is the new prompt's own
    page.locator(f'#graph svg .edge[data-index="{i}"]').click()
    page.wait_for_selector("tr.head-row")
    assert page.get_attribute("#inspector-title", "data-prompt") == PROMPT


# --- defect 2: self-attention edges are drawn apart and open their heads ----------------------------------------
def test_self_attention_edges_can_be_seen_and_clicked(page, server, reference):
    prompt = "w1 w2 w3"
    routes = flowroutes.trace(reference, prompt).routes(0.04)
    pairs = {(r.source, r.target): k for k, r in enumerate(routes.edges) if r.kind == "residual"}
    i = edge_index(routes, lambda e: e.kind == "attention" and position_of(e.source) == position_of(e.target)
                   and (e.source, e.target) in pairs)  # a token reading itself, beside its residual edge
    e = routes.edges[i]
    res = pairs[(e.source, e.target)]
    trace_prompt(page, server, prompt)
    middle = """(i) => { const g = document.querySelector(`#graph svg .edge[data-index="${i}"]`);
        const pt = g.getPointAtLength(g.getTotalLength() / 2).matrixTransform(g.getScreenCTM());
        return [pt.x, pt.y]; }"""
    arc, line = page.evaluate(middle, i), page.evaluate(middle, res)
    assert arc[0] < line[0] - 4  # beside the residual line, not under it
    # a click on the middle of the arc opens the heads of its block, for this token reading itself
    page.mouse.click(*arc)
    page.wait_for_selector("tr.head-row")
    p = position_of(e.target)
    assert page.inner_text("#inspector-title").startswith(f"Heads of block {e.layer}, ")
    assert f"({p}) -> " in page.inner_text("#inspector-title")
    assert "in routes" in page.inner_text("#inspector")


# --- defect 3: the graph opens on the explained position; pan, zoom, fit, collapse ------------------------------
def test_long_graphs_open_on_the_explained_position_and_pan_and_zoom(page, server):
    trace_prompt(page, server, LONG)
    frame = page.locator("#graph .graph-frame").bounding_box()
    marker = page.locator("#graph .explained-marker").bounding_box()
    assert inside(marker, frame)  # the red circle of the last token is on screen
    label = page.locator("#graph text.token-label.explained").bounding_box()
    assert frame["x"] <= label["x"] + label["width"] / 2 <= frame["x"] + frame["width"]
    transform = "() => document.querySelector('#graph .viewport').getAttribute('transform')"
    start = page.evaluate(transform)
    # fit: the whole graph inside the frame
    page.click("#graph .graph-tools .fit")
    whole = page.locator("#graph .viewport").bounding_box()
    assert inside(whole, page.locator("#graph svg").bounding_box())
    fitted = page.evaluate(transform)
    assert fitted != start
    # wheel zooms, drag pans, the keyboard pans
    box = page.locator("#graph svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    zoomed = page.evaluate(transform)
    assert float(zoomed.split("scale(")[1].rstrip(")")) > float(fitted.split("scale(")[1].rstrip(")"))
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    dragged = page.evaluate(transform)
    assert dragged != zoomed
    page.focus("#graph .graph-frame")
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(transform) != dragged
    # columns without routes collapse
    wide = float(page.get_attribute("#graph svg", "data-width"))
    before = renders(page)
    page.fill("#threshold", "0.3")
    wait_render(page, before)
    page.check("#collapse")
    assert float(page.get_attribute("#graph svg", "data-width")) < wide / 3
    marker = page.locator("#graph .explained-marker").bounding_box()
    assert inside(marker, page.locator("#graph .graph-frame").bounding_box())


# --- defect 4: large graphs draw the strongest edges one by one and say what the rest is ------------------------
def test_large_graphs_draw_the_strongest_edges_and_say_what_they_hide(page, server, reference):
    routes = flowroutes.trace(reference, LONG).routes(0.005)
    n = len(routes.edges)
    assert n > 200  # the server fixture draws 60 edges one by one
    trace_prompt(page, server, LONG, "?threshold=0.005")
    before = renders(page)
    page.fill("#threshold", "0.005")
    if renders(page) == before and page.input_value("#threshold") != "0.005":
        wait_render(page, before)
    assert page.locator("#graph svg").get_attribute("data-edges") == str(n)
    assert page.locator("#graph svg .edge").count() == 60
    hidden = sum(int(c) for c in page.locator("#graph svg path.bulk").evaluate_all(
        "ps => ps.map(p => p.dataset.count)"))
    assert hidden == n - 60
    assert f"the other {n - 60} are drawn faint" in page.inner_text("#graph .bulk-note")
    # the ones drawn one by one are the strongest
    drawn = page.locator("#graph svg .edge").evaluate_all("es => es.map(e => Number(e.dataset.index))")
    weights = sorted((e.weight for e in routes.edges), reverse=True)
    assert min(routes.edges[i].weight for i in drawn) >= weights[59] - 1e-12


# --- defect 5: controls that tell the truth ---------------------------------------------------------------------
def test_controls_say_what_they_do_and_links_are_clamped_with_a_note(page, server, reference):
    trace_prompt(page, server)
    assert page.is_enabled("#threshold")
    before = renders(page)
    page.check("#separate")
    wait_render(page, before)
    assert page.is_disabled("#threshold")  # the main slider does nothing with separate thresholds
    assert page.input_value("#attention-threshold") == "0.04" and page.input_value("#ffn-threshold") == "0.04"
    page.uncheck("#separate")
    assert page.is_enabled("#threshold")
    tr = flowroutes.trace(reference, PROMPT)
    page.goto(server.url + "/?prompt=" + PROMPT.replace(" ", "+") + "&threshold=2")
    wait_render(page, 0)
    assert page.inner_text("#threshold-value") == "0.500"
    note = page.inner_text("#note")
    assert "threshold=2" in note and "0.5" in note
    assert page.locator("#error").is_hidden()
    assert page.locator("#graph svg").get_attribute("data-edges") == str(len(tr.routes(0.5).edges))
    page.goto(server.url + "/?prompt=w1+w2&position=7&attention_threshold=abc")
    wait_render(page, 0)
    note = page.inner_text("#note")
    assert "position 7" in note and "attention_threshold=abc" in note
    assert page.locator("#error").is_hidden() and page.input_value("#position") == "1"


# --- defect 6: contrast sides say their own errors, can be inspected, tokens aligned ----------------------------
def test_contrast_names_each_sides_error_and_both_sides_are_inspectable(page, server, reference):
    page.goto(server.url + "/?view=contrast&position=5&prompt=" + PROMPT.replace(" ", "+") + "&prompt_b=w1+w2")
    page.wait_for_selector("#contrast-b .side-error")
    assert page.inner_text("#contrast-b .side-error").startswith("prompt B: position 5 is out of range")
    want = flowroutes.trace(reference, PROMPT).routes(0.04, 5)
    assert page.locator("#contrast-a svg .edge").count() == len(want.edges)
    assert page.locator("#error").is_hidden()
    # both sides drawn with predictions, clickable, and shared tokens in the same columns
    other = "w1 w9 w2 w3 w1 w5 w6 w7 w2"
    link = f"/?view=contrast&prompt={PROMPT.replace(' ', '+')}&prompt_b={other.replace(' ', '+')}"
    page.goto(server.url + link)
    page.wait_for_selector("#contrast-b svg")
    idle(page)
    for side in ("a", "b"):
        assert page.locator(f"#contrast-{side} .side-predictions .prediction").count() == 5
    xs = {side: page.locator(f"#contrast-{side} svg text.token-label").evaluate_all(
        "ts => ts.map(t => [Number(t.dataset.position), Number(t.getAttribute('x'))])") for side in ("a", "b")}
    a, b = dict(xs["a"]), dict(xs["b"])
    assert a[0] == b[0] and a[7] == b[8]  # "w1" and the final "w2" share their columns
    assert b[1] not in a.values()  # "w9" (only in B) gets a column of its own
    routes_b = flowroutes.trace(reference, other).routes(0.04)
    i = edge_index(routes_b, lambda e: e.kind == "attention")
    page.locator(f'#contrast-b svg .edge[data-index="{i}"]').click()
    page.wait_for_selector("tr.head-row")
    assert page.inner_text("#inspector-title").startswith("prompt B: Heads of block")
    assert page.get_attribute("#inspector-title", "data-prompt") == other


# --- defect 7: one layer numbering ------------------------------------------------------------------------------
def test_one_layer_numbering_on_the_page(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    routes = tr.routes(0.04)
    trace_prompt(page, server)
    labels = page.locator("#graph svg text.axis-label").evaluate_all("ts => ts.map(t => t.textContent)")
    assert labels[0] == "x0" and labels[-1] == f"x{tr.n_layers}"
    node = next(n for n in routes.nodes if n.kind == "attention" and n.layer == 1)
    page.locator(f'#graph svg circle[data-id="{node.id}"]').click()
    page.wait_for_selector("tr.head-row")
    assert page.inner_text("#inspector-title").startswith(f"Heads of block 1, into x1A@{node.position}")
    assert page.locator("tr.head-row td").first.inner_text().startswith("L1H")
    ranked = [int(h) for h in page.locator("tr.head-row").evaluate_all("rows => rows.map(r => r.dataset.head)")]
    assert ranked == np.argsort(-tr.attention[1, :, node.position, :].sum(-1), kind="stable").tolist()
    # the edge into it passes through block 1 too, and says so
    i = edge_index(routes, lambda e: e.target == node.id and e.kind == "attention")
    assert "block 1," in page.locator(f'#graph svg .edge[data-index="{i}"] title').text_content()


# --- defect 8: the page shows what it computes ------------------------------------------------------------------
def test_spinners_and_a_disabled_button_while_computing(page, server, reference):
    trace_prompt(page, server)
    held = []
    page.route("**/api/routes", lambda route: held.append(route))
    page.fill("#prompt", "w3 w4 w5")
    page.click("#run")
    while not held:
        page.wait_for_timeout(20)
    assert page.is_disabled("#run") and page.locator("#view-graph .spinner").is_visible()
    held.pop().continue_()
    wait_render(page, 1)
    assert page.is_enabled("#run") and page.locator(".spinner").count() == 0
    page.unroute("**/api/routes")
    page.route("**/api/heads", lambda route: held.append(route))
    node = next(n for n in flowroutes.trace(reference, "w3 w4 w5").routes(0.04).nodes if n.kind == "attention")
    page.locator(f'#graph svg circle[data-id="{node.id}"]').click()
    while not held:
        page.wait_for_timeout(20)
    assert page.locator("#inspector .spinner").is_visible()
    held.pop().continue_()
    page.wait_for_selector("tr.head-row")
    idle(page)
    assert page.locator(".spinner").count() == 0


# --- defect 9: heatmaps with a legend, a scale layer 0 cannot flatten, whole labels -----------------------------
def test_heatmaps_have_a_legend_a_choice_of_scale_and_whole_labels(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    trace_prompt(page, server, query="?view=heatmaps")
    page.click('#tabs button[data-view="heatmaps"]')
    page.wait_for_selector("#heat-ffn-map")
    idle(page)
    assert page.locator("#view-heatmaps .legend").count() == 3
    assert "0 .. " in page.inner_text("#view-heatmaps .legend-text >> nth=2")
    page.select_option("#heat-scale", "row")
    page.wait_for_function("document.querySelector('#heat-ffn-map') && "
                           "document.querySelector('#heat-ffn-map').dataset.scale === 'row'")
    pixel = """([id, i, j]) => { const c = document.querySelector(id), s = Number(c.dataset.cell);
        const x = Number(c.dataset.left) + j * s + s / 2, y = Number(c.dataset.top) + i * s + s / 2;
        return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }"""
    for layer in range(tr.n_layers):  # each layer's strongest token is the darkest colour
        j = int(np.argmax(tr.ffn[layer]))
        assert page.evaluate(pixel, ["#heat-ffn-map", layer, j]) == [8, 48, 107]
    assert "each row its own scale" in page.inner_text("#view-heatmaps .legend-text >> nth=2")
    # the column labels fit above the cells: the top margin holds the longest label rotated by 60 degrees
    widest = page.evaluate("""(labels) => { const c = document.createElement('canvas').getContext('2d');
        const cell = Number(document.querySelector('#heat-ffn-map').dataset.cell);
        c.font = `${Math.min(11, Math.max(7, cell - 2))}px sans-serif`;
        return Math.max(...labels.map(t => c.measureText(t).width)); }""", [f'"{t}"' for t in tr.token_texts])
    top = float(page.get_attribute("#heat-ffn-map", "data-top"))
    assert top >= widest * math.sin(math.pi / 3)
    page.select_option("#heat-scale", "log")
    page.wait_for_function("document.querySelector('#heat-ffn-map').dataset.scale === 'log'")
    assert "log scale" in page.inner_text("#view-heatmaps .legend-text >> nth=2")


# --- defect 10: keyboard and dark theme -------------------------------------------------------------------------
def test_keyboard_opens_edges_nodes_and_rows_and_dark_preference_is_honoured(browser, server, reference):
    routes = flowroutes.trace(reference, PROMPT).routes(0.04)
    page = new_page(browser, color_scheme="dark")
    try:
        trace_prompt(page, server)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        rgb = [int(x) for x in background[background.index("(") + 1:-1].split(",")[:3]]
        assert sum(rgb) < 150, background
        i = edge_index(routes, lambda e: e.kind == "attention")
        edge = page.locator(f'#graph svg .edge[data-index="{i}"]')
        assert edge.get_attribute("tabindex") == "0"
        edge.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("tr.head-row")
        row = page.locator("tr.head-row").first
        row.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("#head-title")
        top = f"x{routes.n_layers}@{routes.position}"
        page.locator(f'#graph svg circle[data-id="{top}"]').focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("tr.lens-row")
        assert not page.errors, page.errors
    finally:
        page.context.close()


# --- defect 11: characters spread over several tokens -----------------------------------------------------------
@pytest.fixture(scope="module")
def byte_model():
    """A tiny Llama over a byte-level BPE tokenizer without merges: every byte is a token, so an emoji is four."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    return flowroutes.load_model(LlamaForCausalLM(cfg).eval(), tokenizer=PreTrainedTokenizerFast(tokenizer_object=tok))


def test_emoji_are_shown_as_the_characters_they_form(page, byte_model):
    prompt = "hi \U0001F642 ok"
    ids = byte_model.tokenizer(prompt)["input_ids"]
    assert len(ids) == len(prompt.encode())  # the emoji is four tokens
    with ServerThread(Settings(models={"bytes": byte_model})) as srv:
        trace_prompt(page, srv, prompt)
        labels = page.locator("#graph svg text.token-label").evaluate_all("ts => ts.map(t => t.textContent)")
        options = page.locator("#position option").all_inner_texts()
        shown = " ".join(labels + options + [page.inner_text("#predictions")])
        assert "\ufffd" not in shown
        assert sum("\U0001F642" in t for t in labels) == 4 and '"\U0001F642(4/4)"' in labels
        # the heads panel's maps are labelled the same way
        head = page.evaluate("""() => fetch('/api/head', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({prompt: document.querySelector('#prompt').value, layer: 0, head: 0, position: -1})})
            .then(r => r.json())""")
        assert "\U0001F642(1/4)" in head["tokens"]
    assert ins.token_display(byte_model, ids)[3:7] == [f"\U0001F642({k}/4)" for k in range(1, 5)]
