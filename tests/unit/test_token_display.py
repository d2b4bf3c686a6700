"""What the page and the CLI show for tokens that are parts of a character (issue 24): hand-built byte-level and
byte-fallback tokenizers, the displays worked out by hand. Every prompt here hung `token_display` before."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from flowroutes.inspection import token_bytes, token_display
from tests.helpers.bpe import bpe, byte_fallback

TOKENIZERS = {"byte-level": lambda: bpe(years=False), "byte-fallback": lambda: byte_fallback(["word"])}


@pytest.fixture(params=sorted(TOKENIZERS))
def loaded(request):
    return SimpleNamespace(tokenizer=TOKENIZERS[request.param]())


def ids_of(loaded, text: str) -> list[int]:
    return loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def display(loaded, ids: list[int], seconds: float = 10.0) -> list[str]:
    """token_display of `ids`, in a thread that must end within `seconds` (it used to loop forever)."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(token_display(loaded, ids)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"token_display did not end within {seconds} s on {len(ids)} tokens"
    return out[0]


def shown(loaded, text: str, drop_last: int = 0) -> list[str]:
    """What is shown for the text's tokens, the last `drop_last` of them dropped."""
    ids = ids_of(loaded, text)
    return display(loaded, ids[:len(ids) - drop_last])


def test_a_replacement_character_in_the_text_is_one_whole_character(loaded):
    # U+FFFD is the bytes EF BF BD: three byte tokens here, which together are a whole character
    got = shown(loaded, "word \ufffd is")
    k = got.index("\ufffd(1/3)")
    assert got[k:k + 3] == ["\ufffd(1/3)", "\ufffd(2/3)", "\ufffd(3/3)"]
    assert got[k + 3:] == [" ", "i", "s"]
    assert shown(loaded, "\ufffd\ufffd")[-3:] == ["\ufffd(1/3)", "\ufffd(2/3)", "\ufffd(3/3)"]


def test_a_character_split_across_tokens_is_shown_whole_on_each(loaded):
    got = shown(loaded, "x \U0001F642")  # F0 9F 99 82
    assert got == ["x", " "] + [f"\U0001F642({k}/4)" for k in range(1, 5)]
    assert shown(loaded, "\u6f22")[-3:] == ["\u6f22(1/3)", "\u6f22(2/3)", "\u6f22(3/3)"]  # E6 BC A2


def test_a_character_cut_off_at_the_end_is_shown_as_its_bytes(loaded):
    assert shown(loaded, "x \U0001F642", drop_last=1) == ["x", " ", "<F0>", "<9F>", "<99>"]
    assert shown(loaded, "x \U0001F642", drop_last=3) == ["x", " ", "<F0>"]
    # a cut character before a whole one: the cut bytes alone, the next character whole
    ids = ids_of(loaded, "\U0001F642")[:2] + ids_of(loaded, "\u00e9")
    assert display(loaded, ids) == ["<F0>", "<9F>", "\u00e9(1/2)", "\u00e9(2/2)"]


def test_control_characters_and_plain_text_are_their_own_text(loaded):
    assert shown(loaded, "a\x00b\x1b") == ["a", "\x00", "b", "\x1b"]
    assert "".join(shown(loaded, "word word")) == "word word"


def test_token_bytes_names_a_partial_token_by_its_bytes(loaded):
    first, *_ = ids_of(loaded, "\U0001F642")
    assert token_bytes(loaded, first) == "<F0>"
    assert token_bytes(loaded, ids_of(loaded, "x")[0]) == "x"


def test_long_runs_of_broken_characters_stay_cheap(loaded):
    # 2000 lone continuation bytes (A9, each its own token): no run is ever whole, each is shown as its byte
    ids = ids_of(loaded, "\u00e9")[1:] * 2000
    assert display(loaded, ids) == ["<A9>"] * 2000
