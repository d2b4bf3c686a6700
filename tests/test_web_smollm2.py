"""The explorer on the real SmolLM2 in headless Chromium: the IOI prompt's routes, inspect views, contrast and
heatmaps; saves the screenshots (docs/img/web-*.png with FLOWROUTES_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from web_helpers import ServerThread, chromium, renders, screenshot, wait_render

import flowroutes
from flowroutes.web.store import Settings

pytestmark = pytest.mark.slow

IOI = "When Mary and John went to the store, John gave a drink to"
IOI_B = "When Mary and John went to the store, Mary gave a drink to"
NAME = "SmolLM2-135M-Instruct"


def counts(page, where="#graph") -> dict[str, int]:
    return {k: page.locator(f"{where} svg .edge-{k}").count() for k in ("attention", "residual", "ffn")}


def expected(routes) -> dict[str, int]:
    return {k: sum(e.kind == k for e in routes.edges) for k in ("attention", "residual", "ffn")}


def test_ioi_in_the_browser(smollm2, ioi_trace, capsys):
    with ServerThread(Settings(models={NAME: smollm2})) as srv, chromium() as browser:
        page = browser.new_page(viewport={"width": 1600, "height": 1320})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(srv.url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length > 0")
        page.fill("#prompt", IOI)
        page.click("#run")
        wait_render(page, 0, timeout=120_000)
        routes = ioi_trace.routes(0.04)
        assert counts(page) == expected(routes)
        assert page.locator("#graph svg .node").count() == len(routes.nodes)
        assert page.locator("#predictions .prediction").first.inner_text().startswith('" Mary" 9')  # 92%
        screenshot(page, "web-graph.png")
        with page.expect_download() as dl:
            page.click("#download-json")
        with open(dl.value.path(), encoding="utf-8") as fh:
            assert fh.read() == routes.to_json()  # what `flowroutes trace` writes as routes.json

        before = renders(page)
        page.fill("#threshold", "0.08")
        wait_render(page, before)
        assert counts(page) == expected(ioi_trace.routes(0.08))
        assert sum(counts(page).values()) < len(routes.edges)
        before = renders(page)
        page.fill("#threshold", "0.04")
        wait_render(page, before)

        # the strongest attention edge between two different tokens; its top head's maps
        idx, edge = max(((i, e) for i, e in enumerate(routes.edges)
                         if e.kind == "attention" and e.source.split("@")[1] != e.target.split("@")[1]),
                        key=lambda ie: ie[1].weight)
        page.locator(f'#graph svg .edge[data-index="{idx}"]').click()
        page.wait_for_selector("tr.head-row")
        top_head = max(edge.heads, key=edge.heads.get)
        with page.expect_response(lambda r: r.url.endswith("/api/head")) as got:
            page.locator(f'tr.head-row[data-head="{top_head}"]').click()
        data = got.value.json()
        page.wait_for_selector("#heat-contribution")
        np.testing.assert_allclose(np.array(data["contribution"]), ioi_trace.attention[edge.layer, top_head], atol=1e-5)
        screenshot(page, "web-inspect-head.png")

        f_idx = max((i for i, e in enumerate(routes.edges) if e.kind == "ffn"), key=lambda i: routes.edges[i].weight)
        page.locator(f'#graph svg .edge[data-index="{f_idx}"] rect').click()
        page.wait_for_selector("tr.neuron-row")
        page.locator("tr.neuron-row").first.click()
        page.wait_for_selector("#neuron-view .promote")
        screenshot(page, "web-inspect-ffn.png")

        top = f"x{ioi_trace.n_layers}@{len(ioi_trace.tokens) - 1}"
        page.locator(f'#graph svg circle[data-id="{top}"]').click()
        page.wait_for_selector("tr.lens-row")
        assert page.locator("tr.lens-row").first.locator("td").nth(1).inner_text() == '" Mary"'

        page.click('#tabs button[data-view="contrast"]')
        page.fill("#prompt-b", IOI_B)
        page.click("#run-contrast")
        page.wait_for_selector("#heat-contrast", timeout=120_000)
        other = flowroutes.trace(smollm2, IOI_B).routes(0.04)
        assert counts(page, "#contrast-b") == expected(other)
        screenshot(page, "web-contrast.png", full_page=True)
        page.click('#tabs button[data-view="heatmaps"]')
        page.wait_for_selector("#heat-ffn-map")
        screenshot(page, "web-heatmaps.png", full_page=True)
        assert not errors, errors

        # server time of a threshold change on a 64-token prompt (reported, not asserted)
        ids = flowroutes.trace(smollm2, IOI).input_ids.tolist()
        long_prompt = smollm2.tokenizer.decode((ids * 5)[:64])
        srv.post("/api/routes", {"prompt": long_prompt})
        times, walls = [], []
        for tau in (0.03, 0.05, 0.08, 0.02):
            start = time.perf_counter()
            status, body = srv.post("/api/routes", {"prompt": long_prompt, "threshold": tau})
            walls.append(1000 * (time.perf_counter() - start))
            assert status == 200 and body["cached"]
            times.append(body["server_ms"])
        n_tok = len(body["routes"]["tokens"])
        with capsys.disabled():
            print(f"\nthreshold change on a {n_tok}-token prompt: server {', '.join(f'{t:.0f}' for t in times)} ms, "
                  f"round trip {', '.join(f'{t:.0f}' for t in walls)} ms")
