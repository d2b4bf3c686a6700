"""What the explorer's endpoints share: the routes query and its checks, the routes of a query from the cached
trace, the picture within the render budget, tokens and predictions as the page shows them."""

from __future__ import annotations

import threading

import numpy as np
from pydantic import BaseModel

from ..errors import FlowroutesError
from .store import Busy, Settings, Store


class RoutesQuery(BaseModel):
    model: str | None = None
    prompt: str
    position: int = -1
    threshold: float = 0.04
    attention_threshold: float | None = None
    ffn_threshold: float | None = None
    renormalize: bool = True


class PromptQuery(BaseModel):
    model: str | None = None
    prompt: str
    normalize: bool = True  # promoted tokens and lens through the final norm (off: raw W_U)


def check_thresholds(settings: Settings, q) -> None:
    """Refuse, before any forward pass, thresholds outside (0, 1) or below the server's minimum."""
    for name, value in (("threshold", q.threshold), ("attention_threshold", getattr(q, "attention_threshold", None)),
                        ("ffn_threshold", getattr(q, "ffn_threshold", None))):
        if value is None:
            continue
        if not 0.0 < value < 1.0:
            raise FlowroutesError(f"{name} must be in (0, 1), got {value}: try 0.04 (the paper's default)")
        if value < settings.min_threshold:
            raise FlowroutesError(f"{name} {value:g} is below this server's minimum of {settings.min_threshold:g}: "
                                  "raise it (`flowroutes trace` draws any threshold)")


def routes_of(store: Store, q: RoutesQuery, prompt: str | None = None):
    """(slot, trace, routes) of the query (of `prompt` instead of q.prompt when given)."""
    check_thresholds(store.settings, q)
    slot = store.slot(q.model)
    tr = slot.entry(q.prompt if prompt is None else prompt).trace
    return slot, tr, tr.routes(q.threshold, q.position, attention_threshold=q.attention_threshold,
                               ffn_threshold=q.ffn_threshold, renormalize=q.renormalize)


def render(routes, fmt: str, settings: Settings, gate: threading.Semaphore) -> bytes:
    """The routes picture (as `flowroutes trace` draws it, with `routes.edits`), within the render budget: at most
    `max_render_edges` edges and `max_render_pixels` pixels (a lower resolution beyond), one picture at a time,
    waiting at most `render_wait_s` for the one being drawn."""
    if len(routes.edges) > settings.max_render_edges:
        raise FlowroutesError(f"these routes have {len(routes.edges)} edges; this server draws at most "
                              f"{settings.max_render_edges}: raise the threshold, or use `flowroutes trace`")
    if not gate.acquire(timeout=settings.render_wait_s):
        raise Busy(f"another picture has been drawing for over {settings.render_wait_s:g} s: try again shortly",
                   retry_after=max(1, int(settings.render_wait_s)))
    try:
        from ..figures import render_routes

        return render_routes(routes, fmt, max_pixels=settings.max_render_pixels)
    finally:
        gate.release()


def display_texts(slot, tr) -> list[str]:
    """Each token as the page shows it: characters spread over several tokens (emoji) shown whole."""
    return slot.display(tr)


def positions(slot, tr) -> list[dict]:
    """Per position: its token (as shown) and the model's top prediction there (as shown)."""
    from ..inspection import token_bytes

    shown = display_texts(slot, tr)
    return [{"position": p, "token": shown[p], "top": token_bytes(slot.loaded, int(tr.top_ids[p][0]))
             if "\ufffd" in tr.top_tokens[p][0] else tr.top_tokens[p][0], "prob": float(tr.top_probs[p][0])}
            for p in range(len(tr.token_texts))]


def predictions(slot, tr, p: int, k: int = 5) -> list[dict]:
    from ..inspection import token_bytes

    return [{"token": token_bytes(slot.loaded, int(i)), "id": int(i), "prob": float(pr)}
            for i, pr in zip(tr.top_ids[p][:k], tr.top_probs[p][:k])]


def resolve_token(loaded, value, what: str) -> int:
    """A token id from the page: an id, or a text that is exactly one token of this tokenizer."""
    vocab = loaded.adapter.unembedding().shape[0]
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("#").isdigit()
                                  and value.strip().startswith("#")):
        tid = int(str(value).strip().lstrip("#"))
        if not 0 <= tid < vocab:
            raise FlowroutesError(f"{what} token id {tid} is out of range: use 0..{vocab - 1}")
        return tid
    ids = loaded.tokenizer(value, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = " + ".join(repr(loaded.tokenizer.decode([i])) for i in ids) or "nothing"
        raise FlowroutesError(f"{what} {value!r} is {len(ids)} tokens for this tokenizer ({pieces}): choose one token "
                              "(a leading space often matters), or give its id as #123")
    return int(ids[0])


def matrix(a: np.ndarray, digits: int = 5) -> list:
    return np.round(a.astype(np.float64), digits).tolist()

