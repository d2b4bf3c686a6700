"""Fixtures with models: the real SmolLM2, tiny random-init families, a tiny model saved as a local folder; and
the browser."""

import pytest

import flowroutes
from tests.helpers.models import TINY_MODELS, word_tokenizer
from tests.helpers.web_helpers import chromium


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded default model, loaded once per test session."""
    return flowroutes.load_model()


@pytest.fixture(scope="session")
def ioi_trace(smollm2):
    return flowroutes.trace(smollm2, "When Mary and John went to the store, John gave a drink to")


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny(request):
    """A LoadedModel for each tiny random-init family."""
    return flowroutes.load_model(TINY_MODELS[request.param](), tokenizer=word_tokenizer())


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny Llama saved as a local model folder (safetensors + tokenizer), for CLI tests."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    TINY_MODELS["llama"]().save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, one per test module."""
    with chromium() as b:
        yield b
