"""The explorer (`flowroutes serve`) end to end in headless Chromium on a tiny Llama folder, its API under
concurrent load, bad input, and the inspect computations checked against independent paths."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes import inspection as ins
from flowroutes.capture import eager_attention
from flowroutes.web.store import Settings
from tests.helpers.tolerances import OTHER_PATH, REBUILD_REL, printed_to
from tests.helpers.web_helpers import ServerThread, renders, wait_render

PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"
MAX_CHARS, MAX_TOKENS = 300, 40


def as_json(value):
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def reference(tiny_folder):
    """The tiny folder loaded by the plain API (an independent copy of the model the server loads)."""
    return flowroutes.load_model(str(tiny_folder))


@pytest.fixture(scope="module")
def server(tiny_folder):
    settings = Settings(models={str(tiny_folder): str(tiny_folder)}, max_prompt_tokens=MAX_TOKENS,
                        max_prompt_chars=MAX_CHARS, cache_size=32)
    with ServerThread(settings) as srv:
        yield srv


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught JavaScript error in any test


def trace_prompt(page, server, prompt=PROMPT):
    page.goto(server.url + "/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    before = renders(page)
    page.fill("#prompt", prompt)
    page.click("#run")
    wait_render(page, before)


def graph_counts(page) -> dict[str, int]:
    return {kind: page.locator(f"#graph svg .edge-{kind}").count() for kind in ("attention", "residual", "ffn")} | {
        "nodes": page.locator("#graph svg .node").count()}


def expected_counts(routes) -> dict[str, int]:
    return {kind: sum(e.kind == kind for e in routes.edges) for kind in ("attention", "residual", "ffn")} | {
        "nodes": len(routes.nodes)}


# --- graph view -------------------------------------------------------------------------------------------------
def test_graph_threshold_position_and_url_state(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    trace_prompt(page, server)
    routes = tr.routes(0.04)
    assert graph_counts(page) == expected_counts(routes)
    assert len(routes.edges) >= 10  # a graph worth looking at
    assert page.locator("#graph svg").get_attribute("data-edges") == str(len(routes.edges))
    # top next tokens with probabilities
    first = page.locator("#predictions .prediction").first.inner_text()
    assert first == f'"{tr.top_tokens[-1][0]}" {100 * tr.top_probs[-1][0]:.1f}%'
    assert page.locator("#predictions .prediction").count() == 5

    passes = server.store.slot(None).forward_passes
    before = renders(page)
    page.fill("#threshold", "0.1")  # the slider
    wait_render(page, before)
    higher = tr.routes(0.1)
    assert graph_counts(page) == expected_counts(higher)
    assert len(higher.edges) < len(routes.edges)
    assert "cached trace" in page.inner_text("#status")
    assert server.store.slot(None).forward_passes == passes  # no forward pass for a threshold change

    before = renders(page)
    page.select_option("#position", "3")
    wait_render(page, before)
    assert graph_counts(page) == expected_counts(tr.routes(0.1, 3))

    before = renders(page)
    page.check("#separate")
    wait_render(page, before)
    before = renders(page)
    page.fill("#attention-threshold", "0.02")
    wait_render(page, before)
    before = renders(page)
    page.uncheck("#renormalize")
    wait_render(page, before)
    want = tr.routes(0.1, 3, attention_threshold=0.02, ffn_threshold=0.04, renormalize=False)
    assert graph_counts(page) == expected_counts(want)
    assert server.store.slot(None).forward_passes == passes

    # the whole state is in the URL: a fresh page on that link draws the same graph
    link = page.url
    page.goto("about:blank")
    page.goto(link)
    wait_render(page, 0)
    assert graph_counts(page) == expected_counts(want)
    assert page.input_value("#position") == "3"
    assert page.input_value("#attention-threshold") == "0.02"
    assert not page.is_checked("#renormalize")


def test_click_edge_head_ffn_neuron_and_node(page, server, reference):
    tr = flowroutes.trace(reference, PROMPT)
    routes = tr.routes(0.04)
    trace_prompt(page, server)
    # the first attention edge drawn is routes.edges' first attention edge
    idx, edge = next((i, e) for i, e in enumerate(routes.edges) if e.kind == "attention")
    source = int(edge.source.split("@")[1])
    target = int(edge.target.split("@")[1])
    page.locator(f'#graph svg .edge[data-index="{idx}"]').click()
    page.wait_for_selector("tr.head-row")
    ranked = [int(h) for h in page.locator("tr.head-row").evaluate_all("rows => rows.map(r => r.dataset.head)")]
    want = np.argsort(-tr.attention[edge.layer, :, target, source], kind="stable").tolist()
    assert ranked == want

    head = ranked[1]
    with page.expect_response(lambda r: r.url.endswith("/api/head")) as got:
        page.locator(f'tr.head-row[data-head="{head}"]').click()
    data = got.value.json()
    page.wait_for_selector("#heat-attention")
    page.wait_for_selector("#heat-contribution")
    assert page.inner_text("#head-title") == f"L{edge.layer}H{head}"
    # attention map: the model's own weights from a separate eager forward pass
    ids = torch.as_tensor(tr.input_ids)[None]
    with torch.no_grad(), eager_attention(reference.model):
        out = reference.model(input_ids=ids, output_attentions=True)
    alpha = out.attentions[edge.layer][0, head].numpy()  # [T, T]
    np.testing.assert_allclose(np.array(data["attention"]), alpha, atol=printed_to(5))  # the JSON: 5 decimals
    np.testing.assert_allclose(np.array(data["contribution"]), tr.attention[edge.layer, head], atol=printed_to(5))
    # the canvas is painted: the strongest cell is dark blue, a cell above the diagonal (j > p) is white
    i, j = np.unravel_index(np.argmax(alpha), alpha.shape)
    pixel = """([i, j]) => { const c = document.querySelector('#heat-attention'), s = Number(c.dataset.cell);
        const x = Number(c.dataset.left) + j * s + s / 2, y = Number(c.dataset.top) + i * s + s / 2;
        return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }"""
    assert page.evaluate(pixel, [int(i), int(j)]) == [8, 48, 107]
    assert page.evaluate(pixel, [0, len(tr.tokens) - 1]) == [255, 255, 255]
    assert page.locator("#head-view .promote").count() == 8 and page.locator("#head-view .suppress").count() == 8

    # an FFN block: top neurons, then a neuron's promoted tokens
    f_idx, f_edge = next((i, e) for i, e in enumerate(routes.edges) if e.kind == "ffn")
    f_pos = int(f_edge.target.split("@")[1])
    with page.expect_response(lambda r: r.url.endswith("/api/ffn")) as got:
        page.locator(f'#graph svg .edge[data-index="{f_idx}"] rect').click()
    ffn = got.value.json()
    page.wait_for_selector("tr.neuron-row")
    assert page.locator("tr.neuron-row").count() == 12
    assert ffn["layer"] == f_edge.layer and ffn["position"] == f_pos
    assert ffn["importance"] == pytest.approx(float(tr.ffn[f_edge.layer, f_pos]))
    scores = [n["score"] for n in ffn["neurons"]]
    assert scores == sorted(scores, reverse=True)
    page.locator("tr.neuron-row").first.click()
    page.wait_for_selector("#neuron-view .promote")
    assert page.inner_text("#neuron-view h3").startswith(f"L{f_edge.layer}N{ffn['neurons'][0]['neuron']}")

    # the top residual node: its logit lens is the model's own prediction
    top = f"x{tr.n_layers}@{len(tr.tokens) - 1}"
    page.locator(f'#graph svg circle[data-id="{top}"]').click()
    page.wait_for_selector("tr.lens-row")
    cells = page.locator("tr.lens-row").first.locator("td").all_inner_texts()
    assert cells[1] == json.dumps(tr.top_tokens[-1][0]) and float(cells[2]) == pytest.approx(tr.top_probs[-1][0],
                                                                                             abs=printed_to(4))


def test_downloads_equal_the_cli(page, server, tiny_folder, tmp_path):
    from flowroutes.cli import main

    assert main(["trace", PROMPT, "--model", str(tiny_folder), "--threshold", "0.05", "--out", str(tmp_path)]) == 0
    trace_prompt(page, server)
    before = renders(page)
    page.fill("#threshold", "0.05")
    wait_render(page, before)
    with page.expect_download() as dl:
        page.click("#download-json")
    assert dl.value.suggested_filename == "routes.json"
    assert open(dl.value.path(), "rb").read() == (tmp_path / "routes.json").read_bytes()
    with page.expect_download() as dl:
        page.click("#download-svg")
    assert b"<svg" in open(dl.value.path(), "rb").read()[:500]
    with page.expect_download() as dl:
        page.click("#download-png")
    assert open(dl.value.path(), "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_contrast_and_heatmap_views(page, server, reference):
    other = "w1 w2 w3 w2 w5 w6 w7 w1"
    a, b = flowroutes.trace(reference, PROMPT).routes(0.04), flowroutes.trace(reference, other).routes(0.04)
    trace_prompt(page, server)
    page.click('#tabs button[data-view="contrast"]')
    page.fill("#prompt-b", other)
    with page.expect_response(lambda r: r.url.endswith("/api/contrast")) as got:
        page.click("#run-contrast")
    diff = np.array(got.value.json()["head_difference"])
    page.wait_for_selector("#heat-contrast")
    assert page.locator("#contrast-a svg .edge").count() == len(a.edges)
    assert page.locator("#contrast-b svg .edge").count() == len(b.edges)
    want = np.zeros((a.n_layers, a.n_heads))
    for (layer, h), w in a.head_weights().items():
        want[layer, h] += w
    for (layer, h), w in b.head_weights().items():
        want[layer, h] -= w
    np.testing.assert_allclose(diff, want, atol=printed_to(5))
    assert "prompt_b=" in page.url and "view=contrast" in page.url

    with page.expect_response(lambda r: r.url.endswith("/api/heatmaps")) as got:
        page.click('#tabs button[data-view="heatmaps"]')
    maps = got.value.json()
    page.wait_for_selector("#heat-ffn-map")
    tr = flowroutes.trace(reference, PROMPT)
    np.testing.assert_allclose(np.array(maps["ffn"]), tr.ffn, atol=printed_to(5))
    shown = np.array(maps["head_weights"])  # each rounded to 5 decimals
    assert shown.sum() == pytest.approx(sum(a.head_weights().values()), abs=shown.size * printed_to(5))
    assert page.locator("#view-graph").is_hidden()


def test_analyses_view_serves_only_configured_figures(page, tiny_folder, tmp_path):
    from matplotlib.figure import Figure

    folder = tmp_path / "ioi-heads"
    folder.mkdir()
    fig = Figure(figsize=(3, 2), dpi=100)
    fig.add_subplot().imshow(np.arange(12).reshape(3, 4))
    fig.savefig(folder / "frequency.png")
    (folder / "summary.json").write_text(json.dumps({"n_examples": 200, "top_heads": ["L23H0", "L23H1"]}))
    (tmp_path / "secret.png").write_bytes((folder / "frequency.png").read_bytes())
    (folder / "notes.txt").write_text("not a figure")
    with ServerThread(Settings(models={"m": str(tiny_folder)}, analyses=[str(folder)])) as srv:
        page.goto(srv.url + "/?view=analyses")
        page.wait_for_selector("img.analysis-figure")
        page.wait_for_function("document.querySelector('img.analysis-figure').naturalWidth > 0")
        assert page.evaluate("document.querySelector('img.analysis-figure').naturalWidth") == 300
        assert "n_examples" in page.inner_text("#analyses") and "200" in page.inner_text("#analyses")
        for bad in ("notes.txt", "..%2Fsecret.png", "..%2F..%2Fsecret.png", "summary.json"):
            status = page.evaluate(f"fetch('/api/analyses/0/{bad}').then(r => r.status)")
            assert status == 404, bad
        assert page.evaluate("fetch('/api/analyses/1/frequency.png').then(r => r.status)") == 404
        assert page.evaluate("fetch('/api/analyses/0/frequency.png').then(r => r.status)") == 200
        assert srv.store.slots["m"]._loaded is None  # no model was loaded for this view


# --- bad input --------------------------------------------------------------------------------------------------
def error_text(page) -> str:
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    return page.inner_text("#error")


def test_bad_input_shown_on_the_page(page, server):
    trace_prompt(page, server)
    assert page.locator("#graph svg").count() == 1
    before = renders(page)
    page.fill("#prompt", "w1 " * 150)  # 450 characters
    page.click("#run")
    wait_render(page, before)
    assert "at most 300" in error_text(page) and "HTTP 413" in error_text(page)
    assert page.locator("#graph svg").count() == 0  # the old graph does not pass for the new prompt's
    assert page.get_attribute("#download-json", "href") is None
    trace_prompt(page, server, " ".join(["w1"] * 60))  # 179 characters, 60 tokens
    assert "60 tokens" in error_text(page) and "at most 40" in error_text(page) and "HTTP 413" in error_text(page)
    page.fill("#prompt", "   ")
    page.click("#run")
    assert "empty" in error_text(page)
    # values from a link are clamped with a note (tests/test_web_explorer.py); the API still refuses them
    status, body = server.post("/api/routes", {"prompt": "w1 w2", "threshold": 1.5})
    assert status == 422 and "threshold must be in (0, 1)" in body["detail"]
    status, body = server.post("/api/routes", {"prompt": "w1 w2", "position": 7})
    assert status == 422 and "out of range" in body["detail"]


def test_a_server_with_a_token_works_from_its_printed_address(page, tiny_folder):
    with ServerThread(Settings(models={"m": str(tiny_folder)}, allowed_hosts=["*"], token="tok-123",
                               max_edges=5)) as srv:
        page.goto(srv.url + "/")
        assert "access token" in page.inner_text("body")  # without the token: nothing but the refusal
        page.goto(srv.url + "/?token=tok-123&prompt=" + PROMPT.replace(" ", "+"))
        wait_render(page, 0)  # the page, its script and every API call ride on the cookie the address set
        assert page.locator("#graph svg").count() == 1
        assert page.locator("#graph svg .edge").count() <= 5
        assert "the strongest of" in page.inner_text("#summary")  # over the edge budget, and the page says so
        assert "token" not in page.url  # the address bar no longer shows it
        with page.expect_download() as dl:
            page.click("#download-svg")
        assert b"<svg" in open(dl.value.path(), "rb").read()[:500]


def test_page_shows_an_error_when_the_server_is_gone(page, tiny_folder):
    with ServerThread(Settings(models={"m": str(tiny_folder)})) as srv:
        page.goto(srv.url + "/")
        page.wait_for_function("document.body.dataset.ready === '1'")
    page.fill("#prompt", PROMPT)
    page.click("#run")
    assert "cannot reach the flowroutes server" in error_text(page)


def test_api_bad_requests(server, tiny_folder):
    name = str(tiny_folder)
    status, body = server.post("/api/routes", {"model": "/etc/passwd", "prompt": PROMPT})
    assert status == 404 and "not configured" in body["detail"]
    assert list(server.store.slots) == [name]  # nothing was loaded from the browser's path
    status, body = server.post("/api/routes", {"model": name, "prompt": " "})
    assert status == 422 and "empty" in body["detail"]
    status, body = server.post("/api/routes", b"{not json")
    assert status == 422 and body["detail"].startswith("bad request")
    status, body = server.post("/api/routes", {"prompt": PROMPT, "threshold": "lots"})
    assert status == 422 and "threshold" in body["detail"]
    status, body = server.post("/api/head", {"prompt": PROMPT, "layer": 7, "head": 0, "position": 0})
    assert status == 422 and "layer 7 is out of range" in body["detail"]
    status, body = server.post("/api/heads", {"prompt": PROMPT, "layer": 0, "position": 1, "source": 4})
    assert status == 422 and "after target" in body["detail"]
    status, body = server.post("/api/neuron", {"prompt": PROMPT, "layer": 0, "position": 1, "neuron": 10_000})
    assert status == 422 and "neuron 10000 is out of range" in body["detail"]
    status, body = server.post("/api/lens", {"prompt": PROMPT, "layer": 3, "kind": "attention", "position": 1})
    assert status == 422 and "use 0..2" in body["detail"]  # x^{lA} exists for blocks 0..L-1


# --- concurrency ------------------------------------------------------------------------------------------------
def test_twenty_parallel_requests_all_correct(tiny_folder, reference):
    prompts = [" ".join(f"w{(k * 7 + i * 3) % 90}" for i in range(5 + k % 6)) for k in range(20)]
    queries = [{"prompt": p, "threshold": 0.03 + 0.01 * (k % 4), "position": -1 - (k % 3)}
               for k, p in enumerate(prompts)]
    want = [as_json(flowroutes.trace(reference, q["prompt"]).routes(q["threshold"], q["position"]).to_dict())
            for q in queries]
    # a queue of 20: every request waits its turn (the default queue of 8 would answer some with 503)
    with ServerThread(Settings(models={"m": str(tiny_folder)}, cache_size=64, max_queue=20)) as srv:
        start = threading.Barrier(20)

        def ask(q):
            start.wait()
            return srv.post("/api/routes", q)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, queries))
        assert [s for s, _ in answers] == [200] * 20
        assert [a["routes"] for _, a in answers] == want  # each answer is its own prompt's routes
        assert srv.store.slot("m").forward_passes == 20

        # 20 parallel inspect requests on one new prompt: one forward pass, every answer right
        prompt = "w5 w4 w3 w2 w1 w5"
        tr = flowroutes.trace(reference, prompt)
        start = threading.Barrier(20)

        def head(k):
            start.wait()
            return srv.post("/api/head", {"prompt": prompt, "layer": k % 3, "head": k % 4, "position": 5})

        with ThreadPoolExecutor(20) as pool:
            heads = list(pool.map(head, range(20)))
        for k, (status, body) in enumerate(heads):
            assert status == 200
            np.testing.assert_allclose(np.array(body["contribution"]), tr.attention[k % 3, k % 4], atol=printed_to(5))
        assert srv.store.slot("m").forward_passes == 21


# --- the inspect computations -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_internals_rebuild_the_model(family):
    from tests.helpers.models import TINY_MODELS, word_tokenizer

    loaded = flowroutes.load_model(TINY_MODELS[family](), tokenizer=word_tokenizer())
    tr = flowroutes.trace(loaded, PROMPT)
    it = ins.capture_internals(loaded, tr.input_ids)
    n_layers, n_heads, last = tr.n_layers, tr.n_heads, len(tr.tokens) - 1
    # the logit lens of the top residual is the model's prediction
    probs = ins.logit_lens(loaded, it.residual[n_layers, last])
    np.testing.assert_allclose(np.sort(probs)[::-1][:5], tr.top_probs[last][:5], atol=OTHER_PATH)
    # the heads' outputs plus the block's constant rebuild what the attention block added
    from flowroutes.importance import head_values

    for layer in range(n_layers):
        _, const = head_values(torch.as_tensor(it.normed[layer]), loaded.adapter.ov_weights(layer),
                               loaded.adapter.input_norm_bias(layer), loaded.adapter.kv_heads)
        total = sum(ins.head_output(loaded, it, layer, h, last) for h in range(n_heads)) + const.numpy()
        added = it.mid[layer, last] - it.residual[layer, last]
        np.testing.assert_allclose(total, added, atol=REBUILD_REL * np.abs(added).max())
        # neuron scores plus the bias's projection add up to |FFN output|; neuron outputs rebuild it
        got = ins.top_neurons(loaded, it, layer, last, k=10_000)
        module, w_out = loaded.adapter.down_projection(layer)
        y = it.ffn_out[layer, last]
        bias = module.bias.detach().numpy()
        assert sum(n["score"] for n in got["neurons"]) + bias @ y / np.linalg.norm(y) == pytest.approx(
            got["ffn_norm"], rel=REBUILD_REL)
        rebuilt = sum(ins.neuron_output(loaded, it, layer, last, i) for i in range(w_out.shape[0])) + bias
        np.testing.assert_allclose(rebuilt, y, atol=REBUILD_REL * np.abs(y).max())
    # promoted tokens: the largest entries of W_U (gamma * v), by a direct computation
    v = it.ffn_out[0, last]
    gamma = loaded.adapter.final_norm().weight.detach().numpy()
    scores = loaded.model.lm_head.weight.detach().numpy() @ (gamma * v)
    got = ins.promoted_tokens(loaded, v, k=3)
    assert [r["id"] for r in got["promote"]] == np.argsort(-scores)[:3].tolist()
    assert [r["id"] for r in got["suppress"]] == np.argsort(scores)[:3].tolist()


def test_lens_ranks_before():
    from tests.helpers.models import TINY_MODELS, word_tokenizer

    loaded = flowroutes.load_model(TINY_MODELS["llama"](), tokenizer=word_tokenizer())
    tr = flowroutes.trace(loaded, PROMPT)
    it = ins.capture_internals(loaded, tr.input_ids)
    rows = ins.lens_view(loaded, it.residual[2, 3], it.residual[1, 3], k=5)
    before = ins.logit_lens(loaded, it.residual[1, 3])
    for r in rows:
        assert r["rank_before"] == int((before > before[r["id"]]).sum())  # tokens strictly more likely before
    assert [r["rank"] for r in rows] == [0, 1, 2, 3, 4]


def test_flowroutes_serve_command(tiny_folder):
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "flowroutes", "serve", "--model", str(tiny_folder), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, conf = time.monotonic() + 90, None
        while conf is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=2) as res:
                    conf = json.loads(res.read())
            except OSError:
                time.sleep(0.2)
        assert conf is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert conf["models"] == [str(tiny_folder)] and conf["max_prompt_tokens"] == 256
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/routes",
                                     data=json.dumps({"prompt": PROMPT}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as res:
            body = json.loads(res.read())
        want = flowroutes.trace(flowroutes.load_model(str(tiny_folder)), PROMPT).routes()
        assert body["routes"] == as_json(want.to_dict())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as res:
            assert b"flowroutes explorer" in res.read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert f"http://127.0.0.1:{port}" in proc.stderr.read()


# --- the command ------------------------------------------------------------------------------------------------
