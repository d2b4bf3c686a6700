"""The explorer's graph people can work on (issue 23, item 2), in headless Chromium on a tall tiny model: a token
axis that stays in view and legible, pins, a selected subgraph with the rest faded or hidden, labelled supernodes
with summed edges, free-text notes, and all of it saved in routes JSON v3, loaded back and shared as a link.
Each test failed before its feature."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

import flowroutes
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
