"""The explorer's HTTP API (FastAPI) and static page. Every answer is JSON except downloads and the page.

Routes come from the cached Trace of (model, prompt): a threshold or position change costs no forward pass.
Errors answer {"detail": one line}: 400 bad Host, 401 missing token, 403 cross-site, 404 unknown model or file,
413 prompt or body too long, 422 other bad input, 503 busy (with Retry-After) or past the request's time limit,
500 a bug (logged with an id).

Work per request is bounded: thresholds below `Settings.min_threshold` are refused, a routes answer keeps at most
`max_edges` edges (the strongest, and says so), pictures are drawn one at a time and only up to `max_render_edges`
edges and `max_render_pixels` pixels, forward passes queue per model up to `max_queue` requests, and a request
still working after `time_limit_s` is stopped at its next check (`flowroutes.deadline`), its locks released.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..deadline import TimeLimitExceeded
from ..errors import FlowroutesError
from ..routes import strongest
from .generating import add_generate_api
from .guard import HostCheck, SameOrigin, TimeLimit, TokenCheck
from .store import Busy, NotFound, PromptTooLong, Settings, Store

STATIC = Path(__file__).parent / "static"
MAX_SET = 500  # prompts in a set the page steps through
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(png|svg)")
log = logging.getLogger("flowroutes.web")


class RoutesQuery(BaseModel):
    model: str | None = None
    prompt: str
    position: int = -1
    threshold: float = 0.04
    attention_threshold: float | None = None
    ffn_threshold: float | None = None
    renormalize: bool = True


class ContrastQuery(RoutesQuery):
    prompt_b: str


class PromptQuery(BaseModel):
    model: str | None = None
    prompt: str
    normalize: bool = True  # promoted tokens and lens through the final norm (off: raw W_U)


class HeadsQuery(PromptQuery):
    layer: int  # 0-based block
    position: int  # target position p of x^{lA}_p (l = layer)
    source: int | None = None  # source position j; None: summed over sources


class HeadQuery(PromptQuery):
    layer: int
    head: int
    position: int


class BlockQuery(PromptQuery):
    layer: int
    position: int


class NeuronQuery(BlockQuery):
    neuron: int


class LensQuery(PromptQuery):
    layer: int = Field(description="residual: 0..L (x^l, the input of block l); attention: 0..L-1 (x^{lA})")
    kind: Literal["residual", "attention"] = "residual"
    position: int
    normalize: bool = True  # the final norm before the unembedding (off: raw W_U x)


class TargetQuery(PromptQuery):
    position: int = -1
    target: str | int | None = None  # a token's text (one token) or id; None: the top prediction
    target_b: str | int | None = None  # explain the logit difference target - target_b
    normalize: bool = True


class Component(BaseModel):
    """What an intervention changes: a head (layer, head), an FFN block (layer) or an attention edge
    x^layer_source -> x^{layer A}_target through `heads`."""

    kind: Literal["head", "ffn", "edge"]
    layer: int
    head: int | None = None
    source: int | None = None
    target: int | None = None
    heads: list[int] = Field(default_factory=list, max_length=1024)


class InterveneQuery(RoutesQuery):
    component: Component
    mode: Literal["zero", "mean", "patch"] = "zero"
    prompt_b: str | None = None
    target: str | int | None = None
    target_b: str | int | None = None


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


class ExportQuery(RoutesQuery):
    """The routes of the query with the edits made on the page: routes JSON v3, a circuit-tracer graph, or the
    picture with the pins, supernodes and notes drawn."""

    edits: dict = Field(default_factory=dict)
    format: Literal["json", "circuit-tracer", "svg", "png"] = "json"


class OpenQuery(BaseModel):
    """A saved routes file's header (versions 1 to 3) and its edits: the page retraces it and restores them."""

    schema_: str = Field(alias="schema")
    version: int
    model: str = ""
    prompt: str
    position: int
    attention_threshold: float
    ffn_threshold: float
    renormalize: bool = True
    edits: dict | None = None


def _routes(store: Store, q: RoutesQuery, prompt: str | None = None):
    """(slot, trace, routes) of the query (of `prompt` instead of q.prompt when given)."""
    check_thresholds(store.settings, q)
    slot = store.slot(q.model)
    tr = slot.entry(q.prompt if prompt is None else prompt).trace
    return slot, tr, tr.routes(q.threshold, q.position, attention_threshold=q.attention_threshold,
                               ffn_threshold=q.ffn_threshold, renormalize=q.renormalize)


def render(routes, fmt: str, settings: Settings, gate: threading.Semaphore) -> bytes:
    """The routes picture (as `flowroutes trace` draws it), within the render budget: at most
    `max_render_edges` edges and `max_render_pixels` pixels (a lower resolution beyond), one picture at a time,
    waiting at most `render_wait_s` for the one being drawn."""
    if len(routes.edges) > settings.max_render_edges:
        raise FlowroutesError(f"these routes have {len(routes.edges)} edges; this server draws at most "
                              f"{settings.max_render_edges}: raise the threshold, or use `flowroutes trace`")
    if not gate.acquire(timeout=settings.render_wait_s):
        raise Busy(f"another picture has been drawing for over {settings.render_wait_s:g} s: try again shortly",
                   retry_after=max(1, int(settings.render_wait_s)))
    try:
        from ..figures import routes_figure

        fig = routes_figure(routes)
        width, height = fig.get_size_inches()
        dpi = min(fig.dpi, math.sqrt(settings.max_render_pixels / (width * height)))
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        return buf.getvalue()
    finally:
        gate.release()


def _check_block(tr, layer: int, position: int, head: int | None = None) -> int:
    if not 0 <= layer < tr.n_layers:
        raise FlowroutesError(f"layer {layer} is out of range: use 0..{tr.n_layers - 1}")
    if head is not None and not 0 <= head < tr.n_heads:
        raise FlowroutesError(f"head {head} is out of range: use 0..{tr.n_heads - 1}")
    return tr.resolve_position(position)


def _block(store, q, head: int | None = None):
    """What an inspect view of block q.layer needs: (model slot, trace, checked position, internals)."""
    slot = store.slot(q.model)
    tr = slot.entry(q.prompt).trace
    p = _check_block(tr, q.layer, q.position, head)
    return slot, tr, p, slot.internals(q.prompt)


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


def _matrix(a: np.ndarray, digits: int = 5) -> list:
    return np.round(a.astype(np.float64), digits).tolist()



def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application serving `settings.models`: the guards, the error answers, then each group of
    endpoints, and the static files last."""
    store = Store(settings)
    app = FastAPI(title="flowroutes explorer", docs_url=None, redoc_url=None, openapi_url=None,
                  max_body_size=settings.body_limit)
    app.state.store = store
    app.state.render_gate = threading.Semaphore(1)  # one picture at a time: drawing is slow
    _add_guards(app, settings)
    _add_error_answers(app, settings)
    _add_page(app, settings, store)
    _add_routes_api(app, settings, store)
    _add_inspect_api(app, store)
    _add_readout_api(app, store)
    _add_intervene_api(app, settings, store)
    _add_edits_api(app, settings, store)
    _add_contrast_api(app, settings, store)
    _add_samples_api(app, settings, store)
    _add_analyses_api(app, settings)
    add_generate_api(app, settings, store)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_guards(app: FastAPI, settings: Settings) -> None:
    """Cross-site refusal, the token (when set) and the Host check; the last added runs first."""
    app.add_middleware(SameOrigin)
    if settings.token:
        app.add_middleware(TokenCheck, token=settings.token)
    app.add_middleware(HostCheck, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(TimeLimit, seconds=settings.time_limit_s)  # outermost: the limit counts from arrival


def _add_error_answers(app: FastAPI, settings: Settings) -> None:
    """Every error answers {"detail": one line} with its status (see the module's docstring)."""

    @app.exception_handler(FlowroutesError)
    def on_bad_input(_request: Request, exc: FlowroutesError):
        if isinstance(exc, Busy):
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})
        if isinstance(exc, TimeLimitExceeded):
            return JSONResponse({"detail": str(exc)}, status_code=503)
        status = 413 if isinstance(exc, PromptTooLong) else 404 if isinstance(exc, NotFound) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    def on_http(_request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            detail = (f"the request body is over {settings.body_limit} bytes, more than any accepted prompt needs: "
                      "send a shorter prompt")
        elif exc.status_code == 404:
            detail = "not found: this server serves the explorer page and its /api/ endpoints"
        else:
            detail = str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def on_invalid(_request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    def on_crash(request: Request, exc: Exception):
        # the details (paths, values) go to the server's log, never to the browser
        error_id = uuid.uuid4().hex[:10]
        log.error("internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error {error_id}: the server's log has the details"},
                            status_code=500)


def _load_sources(settings: Settings) -> dict[str, str | None]:
    """What the page's code writes in `flowroutes.load_model(...)` for each model: its configured string (a hub
    id, folder or .gguf), or None for the embedded default (`load_model()`); models passed in as objects are left
    out (the page then names them in a comment)."""
    return {name: spec for name, spec in settings.models.items() if spec is None or isinstance(spec, str)}


def _add_page(app: FastAPI, settings: Settings, store: Store) -> None:
    """The explorer page and its configuration."""

    # cheap endpoints are async: they answer on the event loop even when every worker thread waits for a model
    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    async def config():
        return JSONResponse({"models": list(store.slots), "default": store.default,
                             "max_prompt_tokens": settings.max_prompt_tokens,
                             "max_prompt_chars": settings.max_prompt_chars,
                             "min_threshold": settings.min_threshold, "max_edges": settings.max_edges,
                             "max_drawn_edges": settings.max_drawn_edges,
                             "max_new_tokens": settings.max_new_tokens, "sources": _load_sources(settings)})


def _add_routes_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """Routes of one prompt: as JSON for the page, as a download (JSON, SVG, PNG), as layer x head heatmaps."""
    renders = app.state.render_gate

    @app.post("/api/routes")
    def routes(q: RoutesQuery):
        start = time.perf_counter()
        check_thresholds(settings, q)
        slot = store.slot(q.model)
        passes = slot.forward_passes
        _, tr, r = _routes(store, q)
        active = [list(h) for h in r.active_heads]  # of the whole routes, before any cut (prompt-set frequencies)
        r, cut = strongest(r, settings.max_edges)
        body = {
            "routes": r.to_dict(),
            "active_heads": active,
            "truncated": cut,
            "model": slot.name,
            "positions": positions(slot, tr),
            "display": display_texts(slot, tr),
            "prediction": predictions(slot, tr, r.position),
            "cached": slot.forward_passes == passes,
        }
        ms = (time.perf_counter() - start) * 1000
        body["server_ms"] = ms
        return JSONResponse(body, headers={"Server-Timing": f"routes;dur={ms:.1f}"})

    @app.get("/api/download")
    def download(prompt: str, format: Literal["json", "svg", "png"] = "json", model: str | None = None,
                 position: int = -1, threshold: float = 0.04, attention_threshold: float | None = Query(None),
                 ffn_threshold: float | None = Query(None), renormalize: bool = True):
        q = RoutesQuery(model=model, prompt=prompt, position=position, threshold=threshold,
                        attention_threshold=attention_threshold, ffn_threshold=ffn_threshold, renormalize=renormalize)
        _, _, r = _routes(store, q)
        headers = {"Content-Disposition": f'attachment; filename="routes.{format}"'}
        if format == "json":
            if len(r.edges) > settings.max_edges:  # a download is the whole graph or nothing
                raise FlowroutesError(f"these routes have {len(r.edges)} edges; this server sends at most "
                                      f"{settings.max_edges}: raise the threshold, or use `flowroutes trace`")
            data, media = r.to_json().encode(), "application/json"
        else:
            data = render(r, format, settings, renders)
            media = "image/svg+xml" if format == "svg" else "image/png"
            headers["Content-Security-Policy"] = "sandbox"
        return Response(data, media_type=media, headers=headers)

    @app.post("/api/heatmaps")
    def heatmaps(q: RoutesQuery):
        _, tr, r = _routes(store, q)
        heads = np.zeros((r.n_layers, r.n_heads))  # [L, H] summed importance in the routes
        for (layer, h), w in r.head_weights().items():
            heads[layer, h] = w
        into = tr.attention[:, :, r.position, :].sum(axis=-1)  # [L, H] raw importance into x^A_p
        return JSONResponse({"tokens": display_texts(store.slot(q.model), tr), "head_weights": _matrix(heads),
                             "head_importance": _matrix(into), "ffn": _matrix(tr.ffn)})  # ffn: [L, T]


def _add_inspect_api(app: FastAPI, store: Store) -> None:
    """Inside one block: heads ranked by importance, one head, the FFN block, one neuron."""
    from .. import inspection as ins

    @app.post("/api/heads")
    def heads(q: HeadsQuery):
        tr = store.slot(q.model).entry(q.prompt).trace
        p = _check_block(tr, q.layer, q.position)
        if q.source is None:
            imp = tr.attention[q.layer, :, p, :].sum(axis=-1)  # [H]
        else:
            j = tr.resolve_position(q.source)
            if j > p:
                raise FlowroutesError(f"source {j} comes after target {p}: attention only reads earlier tokens")
            imp = tr.attention[q.layer, :, p, j]  # [H]
        order = np.argsort(-imp, kind="stable")
        return JSONResponse({"layer": q.layer, "position": p, "source": q.source,
                             "heads": [{"head": int(h), "importance": float(imp[h])} for h in order]})

    @app.post("/api/head")
    def head(q: HeadQuery):
        slot, tr, p, it = _block(store, q, q.head)
        with slot.holding():  # reads W_O, which an intervention's trace changes for a moment
            out = ins.head_output(slot.loaded, it, q.layer, q.head, p)
        return JSONResponse({"layer": q.layer, "head": q.head, "position": p, "tokens": display_texts(slot, tr),
                             "attention": _matrix(it.alpha[q.layer, q.head]),  # [T, T] alpha[p, j]
                             "contribution": _matrix(tr.attention[q.layer, q.head]),  # [T, T] importance x_j -> x^A_p
                             **ins.promoted_tokens(slot.loaded, out, normalize=q.normalize)})

    @app.post("/api/ffn")
    def ffn(q: BlockQuery):
        slot, tr, p, it = _block(store, q)
        return JSONResponse({"layer": q.layer, "position": p, "importance": float(tr.ffn[q.layer, p]),
                             **ins.top_neurons(slot.loaded, it, q.layer, p),
                             **ins.promoted_tokens(slot.loaded, it.ffn_out[q.layer, p], normalize=q.normalize)})

    @app.post("/api/neuron")
    def neuron(q: NeuronQuery):
        slot, tr, p, it = _block(store, q)
        vec = ins.neuron_output(slot.loaded, it, q.layer, p, q.neuron)
        return JSONResponse({"layer": q.layer, "position": p, "neuron": q.neuron,
                             "activation": float(it.neurons[q.layer, p, q.neuron]),
                             **ins.promoted_tokens(slot.loaded, vec, normalize=q.normalize)})


def _add_readout_api(app: FastAPI, store: Store) -> None:
    """What the residual stream says: the logit lens of one node, and a target's direct logit attribution."""
    from .. import inspection as ins

    @app.post("/api/lens")
    def lens(q: LensQuery):
        slot = store.slot(q.model)
        tr = slot.entry(q.prompt).trace
        n_layers = tr.n_layers
        high = n_layers - 1 if q.kind == "attention" else n_layers
        if not 0 <= q.layer <= high:
            raise FlowroutesError(f"layer {q.layer} is out of range for a {q.kind} node: use 0..{high}")
        p = tr.resolve_position(q.position)
        it = slot.internals(q.prompt)
        if q.kind == "attention":  # x^{lA}: compared with x^l, the block's input
            now, before, name = it.mid[q.layer, p], it.residual[q.layer, p], f"x{q.layer}"
        else:  # x^l: compared with x^{(l-1)A}, or x^{l-1} for a parallel block
            now = it.residual[q.layer, p]
            if q.layer == 0:
                before, name = None, None
            elif tr.is_parallel(q.layer - 1):
                before, name = it.residual[q.layer - 1, p], f"x{q.layer - 1}"
            else:
                before, name = it.mid[q.layer - 1, p], f"x{q.layer - 1}A"
        return JSONResponse({"layer": q.layer, "kind": q.kind, "position": p, "before": name,
                             "top": ins.lens_view(slot.loaded, now, before, normalize=q.normalize)})

    @app.post("/api/target")
    def target(q: TargetQuery):
        slot = store.slot(q.model)
        tr = slot.entry(q.prompt).trace
        p = tr.resolve_position(q.position)
        loaded = slot.loaded
        t = int(tr.top_ids[p][0]) if q.target in (None, "") else resolve_token(loaded, q.target, "the target")
        o = None if q.target_b in (None, "") else resolve_token(loaded, q.target_b, "the second target")
        if o == t:
            raise FlowroutesError("the two targets are the same token: choose two different tokens")
        it = slot.internals(q.prompt)
        direction = ins.target_direction(loaded, t, o)
        with slot.holding():  # reads W_O, which an intervention's trace changes for a moment
            dla = ins.direct_logit_attribution(loaded, it, p, direction)
        logits = it.logits[p].astype(np.float64)
        logit = float(logits[t] - (logits[o] if o is not None else 0.0))
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        show = [{"id": i, "token": ins.token_bytes(loaded, i), "prob": float(probs[i]),
                 "rank": int((probs > probs[i]).sum())} for i in ([t] if o is None else [t, o])]
        return JSONResponse({"position": p, "targets": show, "difference": o is not None, "logit": logit,
                             "lens": ins.lens_chart(loaded, it, p, t, o, normalize=q.normalize), **dla,
                             "note": "the routes do not depend on the target: eq. 1 compares each part with the "
                                     "sum it builds, not with any token's logit"})


def _add_intervene_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """One intervention (zero, mean or patch a head, an FFN block or an edge): the prediction before and after,
    and the routes of the intervened model."""
    from .. import inspection as ins

    @app.post("/api/intervene")
    def intervene_(q: InterveneQuery):
        from .interventions import build, logits_at, task_batch, traced_as_intervened

        start = time.perf_counter()
        check_thresholds(settings, q)
        slot = store.slot(q.model)
        tr = slot.entry(q.prompt).trace
        p = tr.resolve_position(q.position)
        loaded = slot.loaded
        ids = np.asarray(tr.input_ids)
        ids_b = None
        if q.mode == "patch":
            if not q.prompt_b or not q.prompt_b.strip():
                raise FlowroutesError("patching needs a second prompt (prompt B) to patch from: type one")
            ids_b = np.asarray(slot.entry(q.prompt_b).trace.input_ids)
        t = int(tr.top_ids[p][0]) if q.target in (None, "") else resolve_token(loaded, q.target, "the target")
        o = None if q.target_b in (None, "") else resolve_token(loaded, q.target_b, "the second target")
        it = slot.internals(q.prompt)

        def work(model):
            from ..trace import trace as run_trace

            batch = task_batch(ids, ids_b, t, o)
            heads, ffn = build(model, it, ids, ids_b, q.component.model_dump(exclude_none=True), q.mode, batch)
            after = logits_at(model, ids, heads, ffn, p)
            from ..patching.core import intervene_ffn

            with traced_as_intervened(model, heads), intervene_ffn(model, ffn):
                new = run_trace(model, q.prompt, top_k=settings.top_k)
            return after, new

        after, new = slot.exclusive(work)
        before = it.logits[p].astype(np.float64)  # [V]

        r = new.routes(q.threshold, p, attention_threshold=q.attention_threshold, ffn_threshold=q.ffn_threshold,
                       renormalize=q.renormalize)
        r, cut = strongest(r, settings.max_edges)
        ms = (time.perf_counter() - start) * 1000
        return JSONResponse({"position": p, "target": ins.token_bytes(loaded, t),
                             "target_b": None if o is None else ins.token_bytes(loaded, o),
                             "component": q.component.model_dump(exclude_none=True), "mode": q.mode,
                             "before": _prediction(loaded, before, t, o),
                             "after": _prediction(loaded, after.astype(np.float64), t, o), "routes": r.to_dict(),
                             "truncated": cut,
                             "server_ms": ms})


def _add_edits_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """The page's edits (pins, subgraph, supernodes, notes), checked against the routes they were made on: saved
    into routes JSON v3 or a circuit-tracer graph, and restored from a saved routes file."""

    @app.post("/api/export")
    def export(q: ExportQuery):
        from ..circuit_tracer import to_circuit_tracer
        from ..edits import Edits, ids_of

        _, _, r = _routes(store, q)
        if len(r.edges) > settings.max_edges:  # a saved file is the whole graph or nothing
            raise FlowroutesError(f"these routes have {len(r.edges)} edges; this server sends at most "
                                  f"{settings.max_edges}: raise the threshold, or use `flowroutes trace`")
        r.edits = Edits.from_dict(q.edits, *ids_of(r))
        headers = {"Content-Disposition": f'attachment; filename="routes.{q.format}"'}
        if q.format in ("svg", "png"):
            headers["Content-Security-Policy"] = "sandbox"
            return Response(render(r, q.format, settings, app.state.render_gate),
                            media_type="image/svg+xml" if q.format == "svg" else "image/png", headers=headers)
        if q.format == "json":
            data = r.to_json().encode()
        else:
            graph = to_circuit_tracer(r)
            data = json.dumps(graph, ensure_ascii=False).encode()
            headers["Content-Disposition"] = f'attachment; filename="{graph["metadata"]["slug"]}.json"'
        return Response(data, media_type="application/json", headers=headers)

    @app.post("/api/open")
    def open_(q: OpenQuery):
        from ..edits import Edits, ids_of
        from ..routes import READABLE_VERSIONS, SCHEMA

        if q.schema_ != SCHEMA:
            raise FlowroutesError("not a flowroutes routes file (its 'schema' field is missing or different)")
        if q.version not in READABLE_VERSIONS:
            raise FlowroutesError(f"routes schema version {q.version} is not readable by this flowroutes (reads "
                                  f"versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade flowroutes")
        slot = _slot_for(store, q.model)
        query = RoutesQuery(model=slot.name, prompt=q.prompt, position=q.position,
                            threshold=q.attention_threshold, attention_threshold=q.attention_threshold,
                            ffn_threshold=q.ffn_threshold, renormalize=q.renormalize)
        _, _, r = _routes(store, query)
        edits = Edits.from_dict(q.edits, *ids_of(r)) if q.version >= 3 and q.edits is not None else Edits()
        return JSONResponse({"model": slot.name, "prompt": q.prompt, "position": r.position,
                             "attention_threshold": q.attention_threshold, "ffn_threshold": q.ffn_threshold,
                             "renormalize": q.renormalize, "edits": edits.to_dict()})


def _slot_for(store: Store, model: str):
    """The served model a saved file names (by the page's name for it, what it was loaded from, or the name its
    traces carry); otherwise the one-line unknown-model refusal."""
    if model in store.slots or not model:
        return store.slot(model or None)
    return next((slot for slot in store.slots.values() if slot.is_named(model)), None) or store.slot(model)


def _prediction(loaded, logits: np.ndarray, t: int, o: int | None) -> dict:
    """The target t under `logits` [V]: its logit, probability and rank, the top 5 tokens, and the logit
    difference t - o when o is given."""
    from ..inspection import token_bytes

    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    out = {"logit": float(logits[t]), "prob": float(probs[t]), "rank": int((probs > probs[t]).sum()),
           "top": [{"token": token_bytes(loaded, int(i)), "prob": float(probs[i])}
                   for i in np.argsort(-probs, kind="stable")[:5]]}
    if o is not None:
        out["difference"] = float(logits[t] - logits[o])
    return out


def _add_contrast_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """The routes of two prompts side by side, and their layer x head difference."""

    @app.post("/api/contrast")
    def contrast(q: ContrastQuery):
        check_thresholds(settings, q)
        slot = store.slot(q.model)
        out = {"a": None, "b": None, "errors": {"a": None, "b": None}, "sides": {"a": None, "b": None}}
        weights, cuts = {}, {}
        for side, prompt in (("a", q.prompt), ("b", q.prompt_b)):
            try:
                tr = slot.entry(prompt).trace
                r = tr.routes(q.threshold, q.position, attention_threshold=q.attention_threshold,
                              ffn_threshold=q.ffn_threshold, renormalize=q.renormalize)
            except Busy:
                raise
            except FlowroutesError as exc:  # one side's problem, named; the other side is still drawn
                if isinstance(exc, (PromptTooLong, NotFound)):
                    raise
                out["errors"][side] = f"prompt {side.upper()}: {exc}"
                continue
            weights[side] = r.head_weights()
            cut, cuts[side] = strongest(r, settings.max_edges)
            out[side] = cut.to_dict()
            out["sides"][side] = {"display": display_texts(slot, tr), "prediction": predictions(slot, tr, r.position),
                                  "token_ids": [int(i) for i in np.asarray(tr.input_ids)]}
        diff = None
        if len(weights) == 2:
            diff = np.zeros((out["a"]["n_layers"], out["a"]["n_heads"]))  # [L, H] head weight in A minus in B
            for (layer, h), w in weights["a"].items():
                diff[layer, h] += w
            for (layer, h), w in weights["b"].items():
                diff[layer, h] -= w
            diff = _matrix(diff)
        out["head_difference"] = diff
        out["truncated"] = {"a": cuts.get("a"), "b": cuts.get("b")} if any(cuts.values()) else None
        return JSONResponse(out)


def _add_samples_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """The shipped samples and tasks, by name."""

    @app.get("/api/samples")
    async def samples():
        from ..tasks import TASKS
        from ..texts import SAMPLES

        return JSONResponse({"samples": [*TASKS, *SAMPLES], "max_set": MAX_SET})

    @app.get("/api/samples/{name}")
    def sample(name: str, n: int = 50, model: str | None = None):
        """The first n prompts of a shipped sample or task (by name only: no path reaches the disk)."""
        from ..tasks import TASKS, task_examples
        from ..texts import SAMPLES, read_texts

        if not 1 <= n <= MAX_SET:
            raise FlowroutesError(f"n must be in 1..{MAX_SET}, got {n}")
        if name in TASKS:
            prompts = [ex.prompt for ex in task_examples(name, n, tokenizer=store.slot(model).loaded.tokenizer)]
        elif name in SAMPLES:
            prompts = read_texts(f"sample:{name}", limit=n)
        else:
            raise NotFound(f"no sample {name!r}: choose one of {', '.join((*TASKS, *SAMPLES))}")
        limit = settings.max_prompt_chars
        return JSONResponse({"name": name, "prompts": [p for p in prompts if len(p) <= limit][:n]})


def _add_analyses_api(app: FastAPI, settings: Settings) -> None:
    """The summaries and figures of the analysis folders the server was started with."""

    @app.get("/api/analyses")
    async def analyses():
        out = []
        for i, name in enumerate(settings.analyses):
            folder = Path(name)
            summary = _summary_of(folder)
            short = {k: (v if len(json.dumps(v)) <= 300 else json.dumps(v)[:300] + " ...") for k, v in summary.items()}
            out.append({"id": i, "name": folder.name, "summary": short,
                        "figures": [f for f in _analysis_figures(folder) if f.endswith(".png")]})
        return JSONResponse({"analyses": out})

    @app.get("/api/analyses/{index}/{name}")
    async def analysis_figure(index: int, name: str):
        # only a file listed in a configured folder; the name is matched against the listing, never joined blindly,
        # and a link that leads out of the folder is not listed
        if not 0 <= index < len(settings.analyses) or name not in _analysis_figures(Path(settings.analyses[index])):
            raise NotFound(f"no figure {name!r} in analysis {index}")
        path = _inside(Path(settings.analyses[index]), name)
        if path is None:
            raise NotFound(f"no figure {name!r} in analysis {index}")
        # an SVG may hold scripts: sandboxed, it cannot run them with this server's origin
        headers = {"Content-Security-Policy": "sandbox"} if name.endswith(".svg") else None
        return FileResponse(path, headers=headers)


def _inside(folder: Path, name: str) -> Path | None:
    """folder/name resolved, if it is a regular file inside the folder (a link out of it is refused)."""
    root = Path(os.path.realpath(folder))
    path = Path(os.path.realpath(root / name))
    return path if path.is_relative_to(root) and path.is_file() else None


def _analysis_figures(folder: Path) -> list[str]:
    """The PNG and SVG files of an analysis folder (a link out of it is not listed)."""
    try:
        names = sorted(f.name for f in folder.iterdir())
    except OSError:
        return []
    return [n for n in names if FIGURE_NAME.fullmatch(n) and _inside(folder, n) is not None]


def _summary_of(folder: Path) -> dict:
    """The folder's summary.json, or {} when there is none, or {"error": ...} when it is not a JSON object."""
    path = _inside(folder, "summary.json")
    if path is None:
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {"error": "summary.json is not valid JSON"}
    return summary if isinstance(summary, dict) else {"error": "summary.json does not hold an object"}
