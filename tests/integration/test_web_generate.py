"""The explorer's generate mode (issue 20, item 3) in headless Chromium on a tiny Llama folder: the answer, its
probabilities, each token's routes and the prompt's colours are those `flowroutes.generate` gives in Python for the
same model (exactly: the same float64 numbers, the same routes)."""

from __future__ import annotations

import pytest

import flowroutes
from flowroutes.web.store import Settings
from tests.helpers.web_helpers import ServerThread

PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"
N = 5


@pytest.fixture(scope="module")
def reference(tiny_folder):
    return flowroutes.load_model(str(tiny_folder))


@pytest.fixture(scope="module")
def server(tiny_folder):
    with ServerThread(Settings(models={"tiny": str(tiny_folder)}, max_prompt_tokens=64, max_new_tokens=8)) as srv:
        yield srv


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught JavaScript error


def generated(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.generateRenders || 0)"))


def wait_generated(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.generateRenders) > {before} && "
                           "document.body.dataset.busy === '0'", timeout=120_000)


def open_generate(page, server, prompt=PROMPT, n=N):
    page.goto(server.url + "/?view=generate")  # a link without a prompt: nothing traced before the generation
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.click('#tabs button[data-view="generate"]')
    page.fill("#generate-prompt", prompt)
    page.fill("#generate-n", str(n))
    before = generated(page)
    page.click("#run-generate")
    wait_generated(page, before)


def click_token(page, k: int, shift: bool = False) -> None:
    before = generated(page)
    page.locator(f'#generate-answer .answer-token[data-index="{k}"]').click(modifiers=["Shift"] if shift else [])
    wait_generated(page, before)


def each(page, selector: str, expression: str) -> list:
    """`expression` (of an element e) for each element matching `selector`, in order."""
    return page.eval_on_selector_all(selector, f"els => els.map(e => {expression})")


def shown_scores(page) -> list[float]:
    return each(page, "#generate-prompt-view .prompt-token", "Number(e.dataset.score)")


def shown_alphas(page) -> list[float]:
    return each(page, "#generate-prompt-view .prompt-token", "Number(e.dataset.alpha)")


def shown_routes(page) -> dict:
    return page.evaluate("""() => ({
        position: Number(document.querySelector('#generate-summary').dataset.position),
        edges: Number(document.querySelector('#generate-graph svg.routes').dataset.edges),
        nodes: [...document.querySelectorAll('#generate-graph svg circle[data-id]')].map(c => c.dataset.id).sort(),
        explained: Number(document.querySelector('#generate-graph text.token-label.explained').dataset.position)})""")


def test_answer_tokens_routes_and_prompt_colours_equal_the_python_generation(page, server, reference):
    g = flowroutes.generate(reference, PROMPT, N)
    passes = server.store.slot("tiny").forward_passes
    open_generate(page, server)
    # the answer, token by token, with its probabilities
    texts = each(page, "#generate-answer .answer-token .answer-text", "e.textContent")
    assert texts == [f'"{t}"' for t in g.answer_tokens]
    probs = each(page, "#generate-answer .answer-token", "Number(e.dataset.prob)")
    assert probs == g.answer_probs.tolist()
    # before any click: the prompt coloured by the whole answer's ALTI attribution, the strongest at full colour
    whole = g.attribution()
    assert shown_scores(page) == whole.tolist()
    assert shown_alphas(page) == [round(float(s / whole.max()), 3) for s in whole]
    assert page.locator("#generate-graph svg").count() == 0
    # a click on answer token 2: the routes of position P + 1, and the prompt coloured by that token's attribution
    k = 2
    click_token(page, k)
    one = g.attribution(span=(k, k + 1))
    routes = g.routes(k, 0.04)
    assert routes.position == g.position(k) == len(g.prompt_ids) + k - 1
    assert shown_scores(page) == one.tolist() == g.matrix()[k].tolist()
    assert shown_routes(page) == {"position": routes.position, "edges": len(routes.edges),
                                  "nodes": sorted(n.id for n in routes.nodes), "explained": routes.position}
    assert page.locator("#generate-answer .answer-token.explained").get_attribute("data-index") == str(k)
    # another token draws its own routes
    click_token(page, 4)
    assert shown_routes(page)["position"] == g.position(4) and shown_scores(page) == g.matrix()[4].tolist()
    # shift-click spans from the last clicked token, in either direction; its routes stay drawn
    click_token(page, 1, shift=True)
    assert shown_scores(page) == g.attribution(span=(1, 5)).tolist()
    spanned = each(page, "#generate-answer .answer-token.in-span", "e.dataset.index")
    assert spanned == ["1", "2", "3", "4"] and shown_routes(page)["position"] == g.position(4)
    assert "answer tokens 1..4" in page.inner_text("#generate-caption")
    # the code button's lines, run as a user would, give the numbers on screen
    page.click("#show-code")
    space: dict = {}
    exec(compile(page.inner_text("#code-text"), "view.py", "exec"), space)  # noqa: S102 - the page's own lines
    assert space["scores"].tolist() == shown_scores(page)
    r = space["routes"]
    assert shown_routes(page) == {"position": r.position, "edges": len(r.edges), "nodes": sorted(n.id for n in r.nodes),
                                  "explained": r.position}
    page.click("#show-code")
    # the other attribution: the flow through the routes, at the page's threshold
    before = generated(page)
    page.select_option("#generate-method", "routes")
    wait_generated(page, before)
    assert shown_scores(page) == g.attribution(span=(1, 5), method="routes", tau=0.04).tolist()
    # a new threshold redraws the routes (and the routes flow) at it
    before = generated(page)
    page.evaluate("""() => { const s = document.querySelector('#threshold'); s.value = '0.1';
                             s.dispatchEvent(new Event('input', {bubbles: true})); }""")
    wait_generated(page, before)
    high = g.routes(4, 0.1)
    assert shown_routes(page)["edges"] == len(high.edges) < len(g.routes(4, 0.04).edges)
    assert shown_scores(page) == g.attribution(span=(1, 5), method="routes", tau=0.1).tolist()
    # the generation itself was made once, however many clicks
    assert server.store.slot("tiny").forward_passes == passes + 1
    assert "kept generation" in page.inner_text("#generate-status")


def test_generate_mode_refusals_are_one_line_and_leave_nothing_stale(page, server):
    open_generate(page, server, n=3)
    assert page.locator("#generate-answer .answer-token").count() == 3
    page.fill("#generate-n", "9")  # over this server's --max-new-tokens (8): said before any request
    page.click("#run-generate")
    assert page.inner_text("#error") == "tokens must be a whole number in 1..8 on this server, got 9"
    page.fill("#generate-n", "2")
    page.fill("#generate-prompt", " ".join(["w3"] * 70))  # over --max-prompt-tokens (64): the server's 413
    before = generated(page)
    page.click("#run-generate")
    wait_generated(page, before)
    assert "this server accepts at most 64" in page.inner_text("#error") and "(HTTP 413)" in page.inner_text("#error")
    assert page.locator("#generate-answer .answer-token").count() == 0
    assert page.locator("#generate-prompt-view .prompt-token").count() == 0
