"""Every static HTML page flowroutes writes for people, in Chromium under axe-core (the axe-playwright-python
package's copy): the reproduce claims report and an analysis page it links, the page of every analysis as
`flowroutes analyze` writes it (run on a tiny model), the generation page of `flowroutes explain --generate`, the
compare-patching report, and the explorer's page with a trace drawn (each view, light and dark): no serious or
critical accessibility violation. The prompt tokens' text reads at every shade of their colour, and the glance
table's thumbnails load and open the full figure."""

from __future__ import annotations

import numpy as np
import pytest

import flowroutes
from flowroutes.analyses.base import registry
from flowroutes.analyses.run import analyze
from flowroutes.web.store import Settings
from tests.helpers.cli import run_cli
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.web_helpers import ServerThread
from tests.integration.test_web import trace_prompt
from tests.unit.test_reproduce_report import hand_built_claims, hand_built_results, write_hand_built

PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The hand-built results written as a reproduce run writes them, with the claims report."""
    results = hand_built_results()
    out = tmp_path_factory.mktemp("reproduce")
    write_hand_built(out, results, hand_built_claims(results))
    return out


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def assert_passes_axe(page) -> None:
    """No serious or critical axe-core violation on the page as it is now; each one found is named in a line."""
    from axe_playwright_python.sync_playwright import Axe

    found = [v for v in Axe().run(page).response["violations"] if v["impact"] in ("serious", "critical")]
    lines = [f"{v['id']} ({v['impact']}, {len(v['nodes'])} elements): {v['help']}; e.g. {v['nodes'][0]['html'][:160]}"
             for v in found]
    assert not lines, "\n".join(lines)


def assert_file_passes_axe(browser, path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(path.as_uri())
        assert_passes_axe(page)
    finally:
        page.close()


@pytest.mark.parametrize("page_path", ["report.html", "head-roles/report.html"])
def test_the_report_passes_axe(browser, written, page_path):
    assert_file_passes_axe(browser, written / page_path)


def corpus_file(folder):
    """Twelve texts of tiny-vocabulary words, a few with periods (which the word tokenizer reads as [UNK])."""
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{v}" for v in rng.integers(0, 90, 12 - i % 3)) + (" ." if i % 4 == 0 else "")
             for i in range(12)]
    path = folder / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


@pytest.mark.parametrize("name", list(registry()))
def test_every_analysis_page_passes_axe(browser, llama, tmp_path, name):
    spec = registry()[name]
    data = [str(corpus_file(tmp_path))] if spec.kind == "corpus" and name != "domains" else None
    # domains reads its shipped corpora (a few texts each); task-heads makes its own examples; svd reads weights
    analyze(name, llama, data=data, out=tmp_path / "out", spacy=False, progress=False, n_boot=50, limit=6, n=4)
    assert_file_passes_axe(browser, tmp_path / "out" / "report.html")


def test_the_generation_page_passes_axe(browser, capsys, tiny_folder, tmp_path):
    code, _, err = run_cli(capsys, "explain", "w1 w2 w3 w4 w5", "--generate", "4", "--model", str(tiny_folder),
                           "--out", str(tmp_path))
    assert code == 0, err
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto((tmp_path / "generation.html").as_uri())
        page.locator("#answer .tok").first.click()  # one answer token shown: its table and routes picture too
        assert page.locator(".pic").first.is_visible()
        assert_passes_axe(page)
    finally:
        page.close()


def contrast(fg, bg) -> float:
    """WCAG 2's contrast ratio of two sRGB colours (0..255 each), computed here apart from the pages' code."""
    def lum(rgb):
        lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


ALPHAS = [k / 100 for k in range(101)]


def readable_at_every_alpha(page, colour, base) -> list[float]:
    """The alphas of `colour` over `base` at which the text colour the page picks (its whiteReadsBetter) has a
    contrast under 4.5:1: axe checks only the alphas one answer happens to give."""
    white = page.evaluate("(alphas) => alphas.map((a) => whiteReadsBetter(a))", ALPHAS)
    bad = []
    for a, w in zip(ALPHAS, white):
        bg = [a * c + (1 - a) * b for c, b in zip(colour, base)]
        if contrast((255, 255, 255) if w else (0, 0, 0), bg) < 4.5:
            bad.append(a)
    return bad


def test_the_generation_pages_token_text_reads_at_every_colour(browser, capsys, tiny_folder, tmp_path):
    assert run_cli(capsys, "explain", "w1 w2 w3", "--generate", "2", "--model", str(tiny_folder), "--out",
                   str(tmp_path))[0] == 0
    page = browser.new_page()
    try:
        page.goto((tmp_path / "generation.html").as_uri())
        assert readable_at_every_alpha(page, (31, 119, 180), (255, 255, 255)) == []
    finally:
        page.close()


@pytest.mark.parametrize("scheme, base", [("light", (250, 250, 250)), ("dark", (21, 23, 26))])  # style.css's --bg
def test_generate_modes_token_text_reads_at_every_colour(browser, server, scheme, base):
    page = browser.new_page(color_scheme=scheme)
    try:
        page.goto(server.url + "/?view=generate")
        page.wait_for_function("document.body.dataset.ready === '1'")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == f"rgb{base}"
        assert readable_at_every_alpha(page, (214, 39, 40), base) == []
    finally:
        page.close()


def test_the_compare_patching_report_passes_axe(browser, capsys, tiny_folder, tmp_path):
    # the tiny model cannot do IOI (every name is [UNK]): --force writes the report with its warning
    code, _, err = run_cli(capsys, "compare-patching", "--model", str(tiny_folder), "--n", "4", "--out",
                           str(tmp_path), "--force", "--thresholds", "0.04", "--no-progress")
    assert code == 0, err
    assert_file_passes_axe(browser, tmp_path / "report.html")


@pytest.fixture(scope="module")
def server(tiny_folder, written):
    settings = Settings(models={str(tiny_folder): str(tiny_folder)}, max_prompt_tokens=64, cache_size=32,
                        analyses=[str(written / "head-roles")])
    with ServerThread(settings) as srv:
        yield srv


def show_graph(page):
    """The routes drawn and an edge inspected."""
    page.locator("#graph svg.routes .edge").first.dispatch_event("click")
    page.wait_for_selector("#inspector-title")


def show_contrast(page):
    page.fill("#prompt-b", "w1 w2 w3 w1 w5 w6 w7 w3")
    page.click("#run-contrast")
    page.wait_for_selector("#heat-contrast")


def show_heatmaps(page):
    page.wait_for_selector("#heat-heads canvas")


def show_analyses(page):
    page.wait_for_function("document.querySelector('img.analysis-figure')?.naturalWidth > 0")


def show_generate(page):
    """An answer generated, its first token clicked: the prompt coloured by its attribution, its routes drawn."""
    def answered(before):
        page.wait_for_function(f"Number(document.body.dataset.generateRenders || 0) > {before} && "
                               "document.body.dataset.busy === '0'")

    page.fill("#generate-prompt", "w1 w2 w3 w4 w5")
    page.fill("#generate-n", "3")
    before = int(page.evaluate("Number(document.body.dataset.generateRenders || 0)"))
    page.click("#run-generate")
    answered(before)
    page.locator('#generate-answer .answer-token[data-index="0"]').click()
    answered(before + 1)


VIEWS = {"graph": show_graph, "contrast": show_contrast, "heatmaps": show_heatmaps, "analyses": show_analyses,
         "generate": show_generate}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("scheme", ["light", "dark"])  # the page follows the system's colour scheme
def test_the_explorer_passes_axe(browser, server, scheme, view):
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, color_scheme=scheme)
    try:
        trace_prompt(page, server, PROMPT)
        page.click(f"#tabs button[data-view={view}]")
        VIEWS[view](page)
        assert_passes_axe(page)
    finally:
        page.close()


def test_a_thumbnail_loads_and_opens_the_full_figure(browser, written):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((written / "report.html").as_uri())
    thumb = page.locator("#glance img.thumb").first
    thumb.scroll_into_view_if_needed()
    width, shown = page.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().height]",
                                 thumb.element_handle())
    assert width > 100 and 0 < shown <= 80  # the full picture, drawn small
    with page.expect_navigation():
        thumb.click()
    assert page.url.endswith(".png") and (written / page.url.split(written.name + "/", 1)[1]).is_file()
    page.close()
