"""Helpers for the explorer's tests (no tests here): a uvicorn server in a thread on a free port, headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# docs/img when FLOWROUTES_UPDATE_SCREENSHOTS=1 (to refresh the README's pictures); otherwise an ignored folder,
# so that running the tests leaves the working tree clean
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "img" if os.environ.get("FLOWROUTES_UPDATE_SCREENSHOTS")
               else Path(__file__).resolve().parents[2] / "test-artifacts")


class ServerThread:
    """`flowroutes.web.app.create_app(settings)` served by uvicorn on 127.0.0.1:<free port>."""

    def __init__(self, settings):
        import uvicorn

        from flowroutes.web.app import create_app

        self.app = create_app(settings)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self):
        return self.app.state.store

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def post(self, path: str, body) -> tuple[int, dict]:
        """(status, JSON answer) of a POST; `body` a dict (sent as JSON) or raw bytes."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@contextlib.contextmanager
def chromium():
    """A headless Debian Chromium driven by Playwright (never `playwright install`). Skips the test when
    Chromium or Playwright is missing, except under CI (environment variable CI set), where that fails."""
    import pytest

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(CHROMIUM):
        why = "browser tests need Debian's chromium at /usr/bin/chromium and playwright==1.65.2"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_render(page, before: int, timeout: float = 60_000) -> None:
    """Wait until the page has drawn an answer after `before` renders and is idle."""
    page.wait_for_function(
        f"Number(document.body.dataset.renders) > {before} && document.body.dataset.busy === '0'", timeout=timeout
    )


def renders(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.renders || 0)"))


def screenshot(page, name: str, **kwargs) -> Path:
    """Save a screenshot to SCREENSHOTS/<name> atomically."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=SCREENSHOTS, prefix=f".{name}.", suffix=".png")
    os.close(fd)
    try:
        page.screenshot(path=tmp, **kwargs)
        os.chmod(tmp, 0o644)
        os.replace(tmp, SCREENSHOTS / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return SCREENSHOTS / name


TALL_LAYERS = 24


def save_tall_llama(folder: Path, seed: int, context: int) -> Path:
    """A 24-layer tiny random Llama (and the word tokenizer) saved in `folder`: graphs taller and wider than a
    1280 x 800 window. `context`: its max_position_embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.helpers.models import _randomise, word_tokenizer

    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=TALL_LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                      tie_word_embeddings=False)
    _randomise(LlamaForCausalLM(cfg), seed).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder



@contextlib.contextmanager
def page_without_errors(browser, width: int, height: int):
    """A fresh page of `width` x `height`; on leaving, asserts that no script error happened on it."""
    context = browser.new_context(viewport={"width": width, "height": height})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not pg.errors, pg.errors
