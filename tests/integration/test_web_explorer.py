"""The explorer, part two (issue 12), in headless Chromium on tiny models: every defect of the issue has a test
here that failed before its fix, and every new capability an end-to-end test (interventions checked against
`flowroutes.patching`, direct logit attribution against an independent computation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes import inspection as ins
from flowroutes.web.store import Settings
from tests.helpers.tolerances import DLA_REL, F64_REORDER, OTHER_PATH, REBUILD_REL, printed_to
from tests.helpers.web_helpers import ServerThread, renders, wait_render

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
    page.wait_for_function("document.body.dataset.ready === '1'")
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
    # another position: the panel and the selection go
    before = renders(page)
    page.select_option("#position", "3")
    wait_render(page, before)
    assert page.locator("#inspector h3").count() == 0 and page.locator("#graph svg .selected").count() == 0
    page.locator("#graph svg .edge-attention").first.click()
    page.wait_for_selector("tr.head-row")
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
    assert min(routes.edges[i].weight for i in drawn) >= weights[59]  # the same floats: SAME_ARITHMETIC


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
    assert "block 1," in page.get_attribute(f'#graph svg .edge[data-index="{i}"]', "aria-label")


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
        assert edge.get_attribute("tabindex") == "-1"  # focusable; the graph's one tab stop roves (test_web_tour)
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


# --- capability 2: explain any token or a logit difference ------------------------------------------------------
def independent_states(loaded, prompt):
    """From transformers' own forward pass, with hooks only on module inputs/outputs: the residual before the
    final norm at every layer [L+1, T, d], each block's attention output [L, T, d] and FFN output [L, T, d]."""
    model = loaded.model
    ids = torch.as_tensor(flowroutes.trace(loaded, prompt).input_ids)[None]
    got = {"attn": {}, "mlp": {}}
    hooks = [model.model.norm.register_forward_pre_hook(lambda m, a: got.__setitem__("top", a[0][0].detach()))]
    for layer, block in enumerate(model.model.layers):
        hooks.append(block.self_attn.register_forward_hook(
            lambda m, a, out, layer=layer: got["attn"].__setitem__(layer, out[0][0].detach())))
        hooks.append(block.mlp.register_forward_hook(
            lambda m, a, out, layer=layer: got["mlp"].__setitem__(layer, out[0].detach())))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    for h in hooks:
        h.remove()
    residual = torch.stack([*out.hidden_states[:-1], got["top"][None]])[:, 0]  # [L+1, T, d] (HF's last is normed)
    n = len(model.model.layers)
    return (residual.numpy(), np.stack([got["attn"][i].numpy() for i in range(n)]),
            np.stack([got["mlp"][i].numpy() for i in range(n)]), out.logits[0].numpy())


def test_explain_any_token_and_a_logit_difference(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    trace_prompt(page, server)
    edges = page.locator("#graph svg").get_attribute("data-edges")
    page.fill("#target", "w3")
    page.fill("#target-b", "w5")
    with page.expect_response(lambda r: r.url.endswith("/api/target")) as got:
        page.click("#run-target")
    d = got.value.json()
    page.wait_for_selector("#heat-dla")
    idle(page)
    assert page.inner_text("#target-title").startswith('Explaining the logit difference "w3" - "w5"')
    assert "do not change with the target" in page.inner_text("#target-view")
    assert page.locator("#graph svg").get_attribute("data-edges") == edges  # the routes are the same
    t, o = (reference.tokenizer.convert_tokens_to_ids(w) for w in ("w3", "w5"))
    residual, attn, mlp, logits = independent_states(reference, PROMPT)
    p = len(tr.tokens) - 1
    assert d["logit"] == pytest.approx(float(logits[p, t] - logits[p, o]), abs=OTHER_PATH)
    # the logit lens chart: the target's probability, rank and the difference at every residual x^0..x^L
    norm, head = reference.model.model.norm, reference.model.lm_head
    with torch.no_grad():
        lens = head(norm(torch.as_tensor(residual[:, p]))).numpy()  # [L+1, V]
    probs = np.exp(lens - lens.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    rows = [r for r in d["lens"] if r["kind"] == "residual"]
    assert [r["layer"] for r in rows] == list(range(tr.n_layers + 1))
    np.testing.assert_allclose([r["prob"] for r in rows], probs[:, t], atol=OTHER_PATH)
    np.testing.assert_allclose([r["difference"] for r in rows], lens[:, t] - lens[:, o], atol=OTHER_PATH)
    assert [r["rank"] for r in rows] == [int((pr > pr[t]).sum()) for pr in probs]
    assert page.locator("#lens-chart").get_attribute("data-points") == str(len(d["lens"]))
    # direct logit attribution: through the final norm linearised at x^L_p (RMSNorm: w / rms(x^L_p))
    x_top = residual[-1, p].astype(np.float64)
    eps = norm.variance_epsilon
    u = norm.weight.detach().double().numpy() / np.sqrt((x_top ** 2).mean() + eps)
    direction = (head.weight[t] - head.weight[o]).detach().double().numpy()

    def dla(v):
        return float((v.astype(np.float64) * u) @ direction)

    for layer in range(tr.n_layers):  # the heads plus the block's constant are its attention output
        block = sum(d["heads"][layer]) + d["attention_constant"][layer]
        assert block == pytest.approx(dla(attn[layer, p]), rel=DLA_REL)
        assert d["ffn"][layer] == pytest.approx(dla(mlp[layer, p]), rel=DLA_REL)
    assert d["embedding"] == pytest.approx(dla(residual[0, p]), rel=DLA_REL)
    total = np.sum(d["heads"]) + sum(d["ffn"]) + sum(d["attention_constant"]) + d["embedding"] + d["bias"]
    assert total == pytest.approx(d["logit"], rel=DLA_REL)
    # one head's share, by its own output: sum_j alpha[p, j] (LN(x_j) - beta) W_V W_O^h
    out = ins.head_output(reference, ins.capture_internals(reference, tr.input_ids), 1, 2, p)
    assert d["heads"][1][2] == pytest.approx(dla(out), rel=DLA_REL)
    # the components of the routes at the explained position are coloured by it
    f = edge_index(tr.routes(0.04), lambda e: e.kind == "ffn" and position_of(e.target) == p)
    assert page.get_attribute(f'#graph svg .edge[data-index="{f}"] rect', "fill") != "#e377c2"
    # a single target: its probability
    page.fill("#target-b", "")
    with page.expect_response(lambda r: r.url.endswith("/api/target")) as got:
        page.click("#run-target")
    assert got.value.json()["targets"][0]["prob"] == pytest.approx(float(probs[-1, t]), abs=OTHER_PATH)
    page.fill("#target", "w3 w5")
    page.click("#run-target")
    page.wait_for_selector("#error:not([hidden])")
    assert "is 2 tokens" in page.inner_text("#error")


# --- capability 1: interventions, the same numbers as flowroutes.patching ---------------------------------------
def patching_metric(loaded, prompt, target, other, layer=None, head=None, mode="zero", prompt_b=None):
    from flowroutes.patching.core import TaskBatch, run_metric
    from flowroutes.patching.methods import ablation_values

    tok = loaded.tokenizer.convert_tokens_to_ids
    ids = torch.as_tensor(flowroutes.trace(loaded, prompt).input_ids)[None]
    ids_b = ids if prompt_b is None else torch.as_tensor(flowroutes.trace(loaded, prompt_b).input_ids)[None]
    batch = TaskBatch(ids, ids_b, torch.tensor([ids.shape[1]]), [[tok(target)]], [[tok(other)]], "logit_diff", [None])
    if layer is None:
        return run_metric(loaded, batch).item()
    mask = torch.zeros(1, loaded.adapter.n_heads)
    mask[0, head] = 1
    return run_metric(loaded, batch, {layer: (mask, ablation_values(loaded, batch, mode)[0][layer])}).item()


def run_intervention(page, where, mode):
    page.locator(f"{where} .intervene-mode").select_option(mode)
    with page.expect_response(lambda r: r.url.endswith("/api/intervene")) as got:
        page.locator(f"{where} .intervene-run").click()
    page.wait_for_selector("#routes-diff svg")
    idle(page)
    return got.value.json()


def test_interventions_from_the_graph_equal_flowroutes_patching(page, server, reference):
    other = "w1 w2 w3 w2 w5 w6 w7 w1"
    tr = flowroutes.trace(reference, PROMPT)
    routes = tr.routes(0.04)
    p = len(tr.tokens) - 1
    trace_prompt(page, server, query=f"?target=w3&target_b=w5&prompt_b={other.replace(' ', '+')}")
    i = edge_index(routes, lambda e: e.kind == "attention" and position_of(e.target) == p)
    edge = routes.edges[i]
    head = max(edge.heads, key=edge.heads.get)
    page.locator(f'#graph svg .edge[data-index="{i}"]').click()
    page.wait_for_selector("tr.head-row")
    page.locator(f'tr.head-row[data-head="{head}"]').click()
    page.wait_for_selector("#head-view .intervene-bar")
    clean = patching_metric(reference, PROMPT, "w3", "w5")
    # zero the head
    d = run_intervention(page, "#head-view", "zero")
    assert d["before"]["difference"] == pytest.approx(clean, abs=OTHER_PATH)
    assert d["after"]["difference"] == pytest.approx(
        patching_metric(reference, PROMPT, "w3", "w5", edge.layer, head), abs=OTHER_PATH)
    assert page.inner_text("#intervention-title") == f"Zeroed: head L{edge.layer}H{head}"
    shown = page.locator("#intervention tr.row-after td.difference").inner_text()
    assert float(shown) == pytest.approx(d["after"]["difference"], abs=printed_to(4))  # shown with 4 decimals
    assert "change: probability" in page.inner_text("#intervention .change")
    # the new routes, side by side with the old: the zeroed head has no edge left, and they explain the new logits
    kept, lost = (int(page.get_attribute("#routes-diff", f"data-{k}")) for k in ("kept", "lost"))
    assert kept + lost == len(routes.edges)  # the diff holds every edge of the routes before
    assert [edge.layer, head] not in d["routes"]["active_heads"]
    assert d["routes"]["prediction"][0]["prob"] == pytest.approx(d["after"]["top"][0]["prob"], abs=OTHER_PATH)
    # patch it from prompt B
    d = run_intervention(page, "#head-view", "patch")
    assert d["after"]["difference"] == pytest.approx(
        patching_metric(reference, PROMPT, "w3", "w5", edge.layer, head, "patch", other), abs=OTHER_PATH)
    # mean-ablate it: its mean output over the prompt's positions
    d = run_intervention(page, "#head-view", "mean")
    assert d["after"]["difference"] != pytest.approx(d["before"]["difference"], abs=OTHER_PATH)
    # an FFN block, zeroed: the same as zeroing its output with a plain hook
    f = edge_index(routes, lambda e: e.kind == "ffn" and position_of(e.target) == p)
    layer = routes.edges[f].layer
    page.locator(f'#graph svg .edge[data-index="{f}"] rect').click()
    page.wait_for_selector("#inspector > .intervene-bar")
    d = run_intervention(page, "#inspector > .intervene-bar", "zero")
    hook = reference.model.model.layers[layer].mlp.register_forward_hook(lambda m, a, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            logits = reference.model(input_ids=torch.as_tensor(tr.input_ids)[None]).logits[0, p]
    finally:
        hook.remove()
    t, o = (reference.tokenizer.convert_tokens_to_ids(w) for w in ("w3", "w5"))
    assert d["after"]["difference"] == pytest.approx(float(logits[t] - logits[o]), abs=OTHER_PATH)
    assert all(e["kind"] != "ffn" or e["layer"] != layer or position_of(e["target"]) != p
               for e in d["routes"]["edges"]) or d["routes"]["edges"] == []
    # an attention edge, zeroed: its heads' messages from the source removed (a head whose only source it is
    # would equal zeroing the head at p)
    page.locator(f'#graph svg .edge[data-index="{i}"]').click()
    page.wait_for_selector("#inspector > .intervene-bar")
    assert page.locator("#head-view .intervene-bar").count() == 0, page.inner_text("#inspector")
    d = run_intervention(page, "#inspector > .intervene-bar", "zero")
    assert d["component"]["kind"] == "edge" and d["component"]["heads"] == sorted(int(h) for h in edge.heads)
    assert d["after"]["difference"] != pytest.approx(d["before"]["difference"], abs=OTHER_PATH)


def test_edge_intervention_removes_exactly_the_edges_message(reference):
    """The messages of every source j into p through head h add up to the head's output at p: removing them all
    leaves zero there (the value vectors and weights the edge intervention uses are the model's own)."""
    from flowroutes.patching.core import head_outputs
    from flowroutes.web.interventions import build, task_batch

    tr = flowroutes.trace(reference, "w1 w2 w3")
    it = ins.capture_internals(reference, tr.input_ids)
    ids = np.asarray(tr.input_ids)
    batch = task_batch(ids, None, 3, None)
    clean = head_outputs(reference, torch.as_tensor(ids)[None])[1]  # [1, T, H*dh]
    removed = torch.zeros_like(clean)
    for j in range(3):
        inter, _ = build(reference, it, ids, None, {"kind": "edge", "layer": 1, "source": j, "target": 2,
                                                     "heads": [3]}, "zero", batch)
        mask, values = inter[1]
        assert mask.tolist() == [[0.0, 0.0, 0.0, 1.0]]
        removed += clean - values  # this edge's message, alone
    dh = reference.adapter.head_dim
    clean_head = clean[0, 2, 3 * dh:4 * dh].numpy()
    np.testing.assert_allclose(removed[0, 2, 3 * dh:4 * dh].numpy(), clean_head,
                               atol=REBUILD_REL * np.abs(clean_head).max())
    assert float(removed[0, :2].abs().max()) == 0.0 and float(removed[0, 2, :3 * dh].abs().max()) == 0.0


# --- capability 3: inspect anything, with or without the final norm ----------------------------------------------
def click_state(page, position: int, level: int) -> None:
    """Click the spot of the state at `position` and graph level (2 l: x^l, 2 l + 1: x^{lA}), off the routes."""
    point = page.evaluate("""([p, level]) => {
        const svg = document.querySelector('#graph svg'), view = svg.querySelector('.viewport');
        const label = svg.querySelector(`text.token-label[data-position="${p}"]`);
        const axis = [...svg.querySelectorAll('text.axis-label')];
        const y0 = Number(axis[0].getAttribute('y')) - 4, y1 = Number(axis[1].getAttribute('y')) - 4;
        const pt = svg.createSVGPoint();
        pt.x = Number(label.getAttribute('x')); pt.y = y0 + (y1 - y0) * level / 2;
        const s = pt.matrixTransform(view.getScreenCTM());
        return [s.x, s.y, document.elementFromPoint(s.x, s.y).getAttribute('class')]; }""", [position, level])
    assert point[2] == "catcher"  # nothing of the routes is drawn there
    page.mouse.click(point[0], point[1])


def test_states_outside_the_routes_can_be_inspected_with_or_without_the_final_norm(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    routes = tr.routes(0.3)
    assert "x1@0" not in {n.id for n in routes.nodes}
    page.goto(server.url + "/?threshold=0.3&prompt=" + PROMPT.replace(" ", "+"))
    wait_render(page, 0)
    click_state(page, 0, 2)
    page.wait_for_selector("tr.lens-row")
    assert page.inner_text("#inspector-title") == "Logit lens of x1@0"
    assert "outside the routes" in page.inner_text("#inspector")
    residual, _, _, _ = independent_states(reference, PROMPT)
    with torch.no_grad():
        normed = reference.model.lm_head(reference.model.model.norm(torch.as_tensor(residual[1, 0]))).numpy()
        raw = reference.model.lm_head(torch.as_tensor(residual[1, 0])).numpy()
    first = page.locator("tr.lens-row").first.locator("td").all_inner_texts()
    assert first[1] == f'"{reference.tokenizer.decode([int(np.argmax(normed))])}"'
    page.uncheck("#normalize")
    click_state(page, 0, 2)
    page.wait_for_selector("#inspector-title:has-text('without the final norm')")
    page.wait_for_selector("tr.lens-row")
    first = page.locator("tr.lens-row").first.locator("td").all_inner_texts()
    assert first[1] == f'"{reference.tokenizer.decode([int(np.argmax(raw))])}"'
    probs = np.exp(raw - raw.max())
    assert float(first[2]) == pytest.approx(float(probs.max() / probs.sum()), abs=printed_to(4) + OTHER_PATH)
    assert "normalize=0" in page.url
    # a block outside the routes: the heads of block 0 into x0A@0
    click_state(page, 0, 1)
    page.wait_for_selector("tr.head-row")
    assert page.inner_text("#inspector-title").startswith("Heads of block 0, into x0A@0")


# --- capability 5: the Python lines of the current view ----------------------------------------------------------
def test_code_button_shows_lines_that_reproduce_the_view(page, server, reference, tmp_path, monkeypatch, capsys):
    trace_prompt(page, server, query="?target=w3&target_b=w5")
    page.check("#separate")
    before = renders(page)
    with page.expect_response(lambda r: r.url.endswith("/api/routes")) as got:
        page.fill("#attention-threshold", "0.03")
    wait_render(page, before)
    shown = got.value.json()["routes"]
    page.click("#show-code")
    code = page.inner_text("#code-text")
    monkeypatch.chdir(tmp_path)
    space: dict = {}
    exec(compile(code, "view.py", "exec"), space)  # noqa: S102 - the lines the page shows, run as a user would
    assert space["routes"].to_dict() == shown
    assert (tmp_path / "routes.svg").read_bytes()[:5] in (b"<?xml", b"<svg ")
    # after an intervention the lines reproduce its numbers with flowroutes.patching
    i = edge_index(flowroutes.trace(reference, PROMPT).routes(0.04, attention_threshold=0.03),
                   lambda e: e.kind == "attention")
    page.locator(f'#graph svg .edge[data-index="{i}"]').click()
    page.locator("tr.head-row").first.click()
    page.wait_for_selector("#head-view .intervene-bar")

    def check(d):
        page.click("#show-code")
        page.click("#show-code")
        code = page.inner_text("#code-text")
        capsys.readouterr()
        exec(compile(code, "view.py", "exec"), {})  # noqa: S102
        clean, after = (float(x) for x in capsys.readouterr().out.split())
        assert clean == pytest.approx(d["before"]["difference"], abs=OTHER_PATH)
        assert after == pytest.approx(d["after"]["difference"], abs=OTHER_PATH)

    check(run_intervention(page, "#head-view", "zero"))
    check(run_intervention(page, "#head-view", "mean"))
    page.locator("#graph svg .edge-ffn rect").first.click()
    page.wait_for_selector("#inspector > .intervene-bar")
    check(run_intervention(page, "#inspector > .intervene-bar", "zero"))


# --- capability 4: prompt sets, stepped through, with live head frequencies --------------------------------------
def test_prompt_sets_from_a_file_or_the_shipped_samples(page, server, reference, tmp_path):
    prompts = ["w1 w2 w3 w4", "w5 w6 w5 w6 w7", "w9 w8 w7", "w1 " * 120]  # the last is over the 64-token limit
    lines = [f'{{"prompt": "{prompts[0]}"}}', f'{{"text": "{prompts[1]}", "label": 3}}', f'"{prompts[2]}"',
             f'"{prompts[3].strip()}"']
    (tmp_path / "set.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    trace_prompt(page, server)
    before = renders(page)
    page.set_input_files("#set-file", str(tmp_path / "set.jsonl"))
    for k in (0, 1):  # a loaded set opens on its first prompt; then the next one
        if k:
            before = renders(page)
            page.click("#set-next")
        wait_render(page, before)
        assert page.input_value("#prompt") == prompts[k]
        assert page.inner_text("#set-position") == f"set.jsonl: {k + 1} of 4"
        want = flowroutes.trace(reference, prompts[k]).routes(0.04)
        assert page.locator("#graph svg").get_attribute("data-edges") == str(len(want.edges))
    page.click("#set-frequency")
    page.wait_for_function("document.querySelector('#set-progress') && "
                           "document.querySelector('#set-progress').textContent.includes('(done)')", timeout=120_000)
    assert page.inner_text("#set-progress").startswith("3 of 4 prompts traced, 1 skipped")
    got = np.array(json_attr(page, "#heat-set-frequency", "data-matrix"))
    want = np.zeros((3, 4))
    for p in prompts[:3]:
        for layer, h in flowroutes.trace(reference, p).routes(0.04).active_heads:
            want[layer, h] += 1 / 3
    np.testing.assert_allclose(got, want, atol=F64_REORDER)
    # a shipped sample (the names are the server's list: no path reaches the disk)
    page.select_option("#set-sample", "general")
    page.click("#set-load-sample")
    page.wait_for_function("document.querySelector('#set-position').textContent.startsWith('general: 1 of ')")
    idle(page)
    from flowroutes.analyses.data import read_texts

    n = int(page.inner_text("#set-position").split(" of ")[1])
    assert n == len([t for t in read_texts("sample:general", limit=50) if len(t) <= 4000])


def json_attr(page, selector, name):
    import json

    return json.loads(page.get_attribute(selector, name))


def test_bad_interventions_and_targets_are_one_line_refusals(server):
    for body, words in (
        ({"component": {"kind": "head", "layer": "x"}}, "bad request: component.layer"),
        ({"component": {"kind": "neuron", "layer": 0}}, "bad request: component.kind"),
        ({"component": {"kind": "head", "layer": 9, "head": 0}}, "layer 9 is out of range"),
        ({"component": {"kind": "head", "layer": 0, "head": 4}}, "head 4 is out of range"),
        ({"component": {"kind": "head", "layer": 0, "head": 0}, "mode": "patch"}, "needs a second prompt"),
        ({"component": {"kind": "head", "layer": 0, "head": 0}, "mode": "patch", "prompt_b": "w1 w2"},
         "the same number of tokens"),
        ({"component": {"kind": "edge", "layer": 0, "source": 3, "target": 2, "heads": [0]}}, "not an attention edge"),
        ({"component": {"kind": "edge", "layer": 0, "source": 1, "target": 2, "heads": [0]}, "mode": "mean"},
         "can only be zeroed"),
        ({"component": {"kind": "ffn", "layer": 0}, "target": "w1 w2"}, "is 2 tokens"),
        ({"component": {"kind": "ffn", "layer": 0}, "threshold": 0.001}, "below this server's minimum"),
    ):
        status, answer = server.post("/api/intervene", {"prompt": PROMPT, **body})
        assert status == 422 and words in answer["detail"], (body, answer)
    status, answer = server.post("/api/target", {"prompt": PROMPT, "target": "w3", "target_b": "w3"})
    assert status == 422 and "the same token" in answer["detail"]
    status, answer = server.post("/api/target", {"prompt": PROMPT, "target": "#100000"})
    assert status == 422 and "out of range" in answer["detail"]
    status, answer = server.post("/api/target", {"prompt": PROMPT, "target": "#3"})
    assert status == 200 and answer["targets"][0]["id"] == 3
    for path in ("/api/samples/..%2F..%2Fetc%2Fpasswd", "/api/samples/secret"):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(server.url + path, timeout=30)
            status = 200
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == 404, path


def test_inspect_answers_are_right_while_an_intervention_runs(server, reference, monkeypatch):
    """An intervention's trace zeroes a head's output projection for a moment; head maps and direct logit
    attribution asked for at the same time still read the model's own weights."""
    import importlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    tracing = importlib.import_module("flowroutes.trace")  # the module (the package's `trace` is the function)

    inside = threading.Event()
    plain = tracing.trace

    def slow_trace(*args, **kwargs):  # the intervened trace takes a while: the weights stay zeroed meanwhile
        inside.set()
        threading.Event().wait(0.5)
        return plain(*args, **kwargs)

    tr = flowroutes.trace(reference, PROMPT)
    it = ins.capture_internals(reference, tr.input_ids)
    want = ins.promoted_tokens(reference, ins.head_output(reference, it, 1, 2, 7))["promote"]
    status, before = server.post("/api/target", {"prompt": PROMPT, "target": "w3"})
    assert status == 200
    weight = reference.adapter.output_projection(1).weight.detach().clone()
    monkeypatch.setattr(tracing, "trace", slow_trace)

    def intervene(_):
        return server.post("/api/intervene", {"prompt": PROMPT, "component": {"kind": "head", "layer": 1, "head": 2}})

    def inspect(k):
        inside.wait(30)
        if k % 2:
            return server.post("/api/head", {"prompt": PROMPT, "layer": 1, "head": 2, "position": 7})
        return server.post("/api/target", {"prompt": PROMPT, "target": "w3"})

    with ThreadPoolExecutor(6) as pool:
        jobs = [pool.submit(intervene, k) for k in range(2)] + [pool.submit(inspect, k) for k in range(12)]
        answers = [j.result() for j in jobs]
    assert all(status == 200 for status, _ in answers), [a for s, a in answers if s != 200]
    for k, (_, answer) in enumerate(answers[2:]):
        if k % 2:
            assert answer["promote"] == want
        else:
            assert answer["heads"] == before["heads"]
    served = server.store.slot(None).loaded.adapter.output_projection(1).weight
    assert torch.equal(served.detach(), weight)  # restored (the fixture's model equals the reference's)


# === issue 24: the defects a full tour of the page found ==========================================================
def shown_code_routes(page, tmp_path, monkeypatch) -> dict:
    """Run the lines the code panel shows now, as a user would; the routes they build, as a dict."""
    monkeypatch.chdir(tmp_path)
    space: dict = {}
    exec(compile(page.inner_text("#code-text"), "view.py", "exec"), space)  # noqa: S102
    return space["routes"].to_dict()


# --- defect 2: the code panel follows the view, and loads the embedded model as load_model() ---------------------
def test_open_code_panel_follows_new_prompts_and_thresholds(page, server, tmp_path, monkeypatch):
    trace_prompt(page, server)
    page.click("#show-code")
    assert PROMPT in page.inner_text("#code-text")
    # a new threshold, with the panel open: the lines are the new view's
    before = renders(page)
    with page.expect_response(lambda r: r.url.endswith("/api/routes")) as got:
        page.fill("#threshold", "0.1")
    wait_render(page, before)
    assert "threshold=0.1," in page.inner_text("#code-text")
    assert shown_code_routes(page, tmp_path, monkeypatch) == got.value.json()["routes"]
    # a new prompt: the same
    before = renders(page)
    with page.expect_response(lambda r: r.url.endswith("/api/routes")) as got:
        page.fill("#prompt", "w4 w9 w4")
        page.click("#run")
    wait_render(page, before)
    assert PROMPT not in page.inner_text("#code-text")
    assert shown_code_routes(page, tmp_path, monkeypatch) == got.value.json()["routes"]
    # a prompt that fails: no lines of the old view stay
    page.fill("#prompt", "w1 " * 120)  # over the server's 64 tokens
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    idle(page)
    assert "w4 w9 w4" not in page.inner_text("#code-text")
    assert "tr.routes(" not in page.inner_text("#code-text")


def test_code_of_the_embedded_default_model_loads_it_offline(browser, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # what `flowroutes serve` configures without --model: the embedded SmolLM2 (loaded by the server)
    with ServerThread(Settings(models={"SmolLM2-135M-Instruct": None})) as srv:
        page = new_page(browser)
        try:
            page.goto(srv.url + "/")
            page.wait_for_function("document.body.dataset.ready === '1'")
            before = renders(page)
            page.fill("#prompt", "The cat sat on the")
            with page.expect_response(lambda r: r.url.endswith("/api/routes"), timeout=120_000) as got:
                page.click("#run")
            wait_render(page, before, timeout=120_000)
            page.click("#show-code")
            code = page.inner_text("#code-text")
            assert "model = flowroutes.load_model()" in code, code
            assert shown_code_routes(page, tmp_path, monkeypatch) == got.value.json()["routes"]
            assert not page.errors, page.errors
        finally:
            page.context.close()


# --- defect 5: no state carries over silently ----------------------------------------------------------------------
def dla_coloured(page) -> int:
    """How many FFN boxes of the main graph carry a direct-logit-attribution colour (not the plain pink)."""
    return page.locator("#graph svg rect.ffn-block").evaluate_all(
        "rs => rs.filter(r => r.getAttribute('fill') !== '#e377c2').length")


def explain(page, target, target_b=""):
    page.fill("#target", target)
    page.fill("#target-b", target_b)
    page.click("#run-target")
    idle(page)


def test_explain_targets_stay_with_their_prompt(page, server):
    trace_prompt(page, server)
    explain(page, "w3", "w5")
    assert page.inner_text("#target-title").startswith('Explaining the logit difference "w3" - "w5"')
    assert dla_coloured(page) > 0
    # a new prompt: the targets of the old one neither colour its graph nor stay in the form or the link
    retrace(page, "w5 w6 w7 w2 w9")
    assert page.locator("#graph svg rect.ffn-block").count() > 0 and dla_coloured(page) == 0
    assert page.input_value("#target") == "" and page.input_value("#target-b") == ""
    assert page.inner_text("#target-view") == "" and "target=" not in page.url
    # the same prompt traced again (or another threshold) keeps what is explained
    explain(page, "w3")
    before = renders(page)
    page.fill("#threshold", "0.05")
    wait_render(page, before)
    assert page.inner_text("#target-title").startswith('Explaining "w3"') and dla_coloured(page) > 0


def test_a_failed_explain_leaves_no_old_explanation(page, server):
    trace_prompt(page, server)
    explain(page, "w3", "w5")
    assert dla_coloured(page) > 0 and page.locator("#heat-dla").count() == 1
    explain(page, "w3 w5")  # two tokens: refused
    assert "is 2 tokens" in page.inner_text("#error")
    assert page.locator("#heat-dla").count() == 0 and page.locator("#target-title").count() == 0
    assert "w3 w5" in page.inner_text("#target-view")  # the panel says what failed, not what was shown before
    assert dla_coloured(page) == 0


# --- defect 4 (the page): summaries are read as words and numbers, never as raw JSON -----------------------------
def test_analyses_summaries_are_readable_not_raw_json(page, tiny_folder, tmp_path):
    import json

    from flowroutes.analyses.stats import Estimate

    est = Estimate(0.895833, 0.8, 0.92, 48, 48).to_dict()
    clustered = Estimate(0.0123, 0.0101, 0.0145, 1306, 48).to_dict()
    claim = {"claim": "subword merging", "section": "5.2", "estimate": Estimate(0.858, 0.803, 0.916, 60, 20).to_dict(),
             "verdict": "does not hold", "rule": "the lower bound of the 95% interval of the share is above 0.9"}
    summary = {
        "previous-token share": est,
        "small share": clustered,
        "texts_per_domain": {"code": 48, "math": 47},
        "general: most important heads": [{"head": "L3H1", "mean": est}, {"head": "L2H0", "mean": clustered}],
        "claims": [claim],
        "verdicts": {"holds": 3, "does not hold": 1, "cannot be tested": 0},
        "renormalised": True,
        "no interval": {"value": 0.5, "ci95": [None, None], "n": 1, "units": 1, "unit": "runs"},
        "shown_threshold": 0.16594171936692717,
        "timing": 90.686,
    }
    folder = tmp_path / "domains"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(summary))
    with ServerThread(Settings(models={"m": str(tiny_folder)}, analyses=[str(folder)])) as srv:
        page.goto(srv.url + "/?view=analyses")
        page.wait_for_selector("#analyses table.summary")
        text = page.inner_text("#analyses")
        for raw in ("{", "}", '"value"', "ci95", "0.16594171936692717", "true", "nan"):
            assert raw not in text, (raw, text)
        rows = dict(page.locator("#analyses table.summary > tbody > tr").evaluate_all(
            "trs => trs.map(tr => [tr.children[0].innerText, tr.children[1].innerText])"))
        assert rows["previous-token share"] == "0.896 [0.800, 0.920] (n=48 texts)"
        assert rows["small share"] == "0.012 [0.010, 0.015] (n=1,306 in 48 texts)"
        assert rows["shown_threshold"] == "0.166" and rows["timing"] == "90.7"
        assert rows["renormalised"] == "yes"
        assert rows["no interval"] == "0.500 (no interval: n=1 runs)"
        assert rows["verdicts"] == "3 hold, 1 does not hold, 0 cannot be tested"
        # nested objects are rows of their own: one row a key, lists of records a table with a header
        row = page.locator("#analyses table.summary > tbody > tr")
        nested = row.filter(has_text="texts_per_domain").locator("table tr")
        assert nested.all_inner_texts() == ["code\t48", "math\t47"]
        heads = row.filter(has_text="most important heads").locator("table tr")
        assert heads.all_inner_texts() == ["head\tmean", "L3H1\t0.896 [0.800, 0.920] (n=48 texts)",
                                           "L2H0\t0.012 [0.010, 0.015] (n=1,306 in 48 texts)"]
        verdict = page.locator("#analyses .verdict").first
        assert verdict.inner_text() == "does not hold" and "does-not-hold" in verdict.get_attribute("class")
        assert "0.858 [0.803, 0.916] (n=60 in 20 texts)" in rows["claims"]
        assert "the lower bound of the 95% interval of the share is above 0.9" in rows["claims"]
