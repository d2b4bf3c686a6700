"""The reproduce report (and an analysis's page it links) in Chromium under axe-core (the axe-playwright-python
package's copy): no serious or critical accessibility violation; the glance table's thumbnails load and open the
full figure."""

from __future__ import annotations

import pytest

from tests.unit.test_reproduce_report import hand_built_claims, hand_built_results, write_hand_built


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The hand-built results written as a reproduce run writes them, with the claims report."""
    results = hand_built_results()
    out = tmp_path_factory.mktemp("reproduce")
    write_hand_built(out, results, hand_built_claims(results))
    return out


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']}; e.g. {v['nodes'][0]['html'][:120]}"
            for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("page_path", ["report.html", "head-roles/report.html"])
def test_the_report_passes_axe(browser, written, page_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto((written / page_path).as_uri())
    assert serious_violations(page) == []
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
