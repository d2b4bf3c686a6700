"""The explorer's HTTP API (FastAPI) and static page. Every answer is JSON except downloads and the page.

Routes come from the cached Trace of (model, prompt): a threshold or position change costs no forward pass.
Errors answer {"detail": one line}: 400 bad Host, 401 missing token, 403 cross-site, 404 unknown model or file,
413 prompt or body too long, 422 other bad input, 503 busy (with Retry-After) or past the request's time limit,
500 a bug (logged with an id).

Work per request is bounded: thresholds below `Settings.min_threshold` are refused, a routes answer keeps at most
`max_edges` edges (the strongest, and says so), pictures are drawn one at a time and only up to `max_render_edges`
edges and `max_render_pixels` pixels, forward passes queue per model up to `max_queue` requests, and a request
still working after `time_limit_s` is stopped at its next check (`flowroutes.deadline`), its locks released.

Here: the application, its guards and error answers, the page and the routes endpoints. The other endpoints, by
group: views.py (inspect, logit lens and target, interventions, contrast), files.py (saved routes with their edits,
samples, analysis folders), generating.py (the generate mode); what they share is in answers.py.
"""

from __future__ import annotations

import logging
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..deadline import TimeLimitExceeded
from ..errors import FlowroutesError
from ..routes import strongest
from .answers import RoutesQuery, check_thresholds, display_texts, matrix, positions, predictions, render, routes_of
from .files import add_analyses_api, add_edits_api, add_samples_api, link_edits
from .generating import add_generate_api
from .guard import HostCheck, SameOrigin, TimeLimit, TokenCheck
from .store import Busy, NotFound, PromptTooLong, Settings, Store
from .views import add_contrast_api, add_inspect_api, add_intervene_api, add_readout_api

STATIC = Path(__file__).parent / "static"


log = logging.getLogger("flowroutes.web")


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
    add_inspect_api(app, store)
    add_readout_api(app, store)
    add_intervene_api(app, settings, store)
    add_edits_api(app, settings, store)
    add_contrast_api(app, settings, store)
    add_samples_api(app, settings, store)
    add_analyses_api(app, settings)
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
    """Routes of one prompt: as JSON for the page, as a download (JSON, SVG, PNG; with the page's edits when its
    link carries them), as layer x head heatmaps."""
    renders = app.state.render_gate

    @app.post("/api/routes")
    def routes(q: RoutesQuery):
        start = time.perf_counter()
        check_thresholds(settings, q)
        slot = store.slot(q.model)
        passes = slot.forward_passes
        _, tr, r = routes_of(store, q)
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
                 ffn_threshold: float | None = Query(None), renormalize: bool = True, edits: str = ""):
        """The whole routes of the query, with the page's edits when the link carries them (`edits`: base64url
        JSON, see `files.link_edits`), as routes JSON or the picture that draws them."""
        q = RoutesQuery(model=model, prompt=prompt, position=position, threshold=threshold,
                        attention_threshold=attention_threshold, ffn_threshold=ffn_threshold, renormalize=renormalize)
        _, _, r = routes_of(store, q)
        if edits:
            r.edits = link_edits(edits, r)
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
        _, tr, r = routes_of(store, q)
        heads = np.zeros((r.n_layers, r.n_heads))  # [L, H] summed importance in the routes
        for (layer, h), w in r.head_weights().items():
            heads[layer, h] = w
        into = tr.attention[:, :, r.position, :].sum(axis=-1)  # [L, H] raw importance into x^A_p
        return JSONResponse({"tokens": display_texts(store.slot(q.model), tr), "head_weights": matrix(heads),
                             "head_importance": matrix(into), "ffn": matrix(tr.ffn)})  # ffn: [L, T]

