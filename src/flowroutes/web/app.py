"""The explorer's HTTP API (FastAPI) and static page. Every answer is JSON except downloads and the page.

Routes come from the cached Trace of (model, prompt): a threshold or position change costs no forward pass.
Errors answer {"detail": one line}: 404 unknown model, 413 prompt too long, 422 other bad input.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..errors import FlowroutesError
from .store import NotFound, PromptTooLong, Settings, Store

STATIC = Path(__file__).parent / "static"
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(png|svg)")


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


class HeadsQuery(PromptQuery):
    layer: int  # 0-based block
    position: int  # target position p of x^{(layer+1)A}_p
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
    layer: int = Field(description="residual: 0..L (x^l); attention: 1..L (x^{lA})")
    kind: Literal["residual", "attention"] = "residual"
    position: int


def _routes(store: Store, q: RoutesQuery, prompt: str | None = None):
    """(slot, trace, routes) of the query (of `prompt` instead of q.prompt when given)."""
    slot = store.slot(q.model)
    tr = slot.entry(q.prompt if prompt is None else prompt).trace
    return slot, tr, tr.routes(q.threshold, q.position, attention_threshold=q.attention_threshold,
                               ffn_threshold=q.ffn_threshold, renormalize=q.renormalize)


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


def _matrix(a: np.ndarray, digits: int = 5) -> list:
    return np.round(a.astype(np.float64), digits).tolist()


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application serving `settings.models`."""
    from . import internals as ins

    store = Store(settings)
    app = FastAPI(title="flowroutes explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.exception_handler(FlowroutesError)
    def on_bad_input(_request: Request, exc: FlowroutesError):
        status = 413 if isinstance(exc, PromptTooLong) else 404 if isinstance(exc, NotFound) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    def on_invalid(_request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
        return JSONResponse({"detail": "bad request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(Exception)
    def on_crash(_request: Request, exc: Exception):
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def config():
        return JSONResponse({"models": list(store.slots), "default": store.default,
                             "max_prompt_tokens": settings.max_prompt_tokens,
                             "max_prompt_chars": settings.max_prompt_chars})

    @app.post("/api/routes")
    def routes(q: RoutesQuery):
        start = time.perf_counter()
        slot = store.slot(q.model)
        passes = slot.forward_passes
        _, tr, r = _routes(store, q)
        body = {
            "routes": r.to_dict(),
            "model": slot.name,
            "positions": [{"position": p, "token": t, "top": tr.top_tokens[p][0], "prob": float(tr.top_probs[p][0])}
                          for p, t in enumerate(tr.token_texts)],
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
        if format == "json":
            data, media = r.to_json().encode(), "application/json"
        else:
            from ..figures import render_routes

            data, media = render_routes(r, format), "image/svg+xml" if format == "svg" else "image/png"
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="routes.{format}"'})

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
        out = ins.head_output(slot.loaded, it, q.layer, q.head, p)
        return JSONResponse({"layer": q.layer, "head": q.head, "position": p, "tokens": tr.token_texts,
                             "attention": _matrix(it.alpha[q.layer, q.head]),  # [T, T] alpha[p, j]
                             "contribution": _matrix(tr.attention[q.layer, q.head]),  # [T, T] importance x_j -> x^A_p
                             **ins.promoted_tokens(slot.loaded, out)})

    @app.post("/api/ffn")
    def ffn(q: BlockQuery):
        slot, tr, p, it = _block(store, q)
        return JSONResponse({"layer": q.layer, "position": p, "importance": float(tr.ffn[q.layer, p]),
                             **ins.top_neurons(slot.loaded, it, q.layer, p),
                             **ins.promoted_tokens(slot.loaded, it.ffn_out[q.layer, p])})

    @app.post("/api/neuron")
    def neuron(q: NeuronQuery):
        slot, tr, p, it = _block(store, q)
        vec = ins.neuron_output(slot.loaded, it, q.layer, p, q.neuron)
        return JSONResponse({"layer": q.layer, "position": p, "neuron": q.neuron,
                             "activation": float(it.neurons[q.layer, p, q.neuron]),
                             **ins.promoted_tokens(slot.loaded, vec)})

    @app.post("/api/lens")
    def lens(q: LensQuery):
        slot = store.slot(q.model)
        tr = slot.entry(q.prompt).trace
        n_layers = tr.n_layers
        low = 1 if q.kind == "attention" else 0
        if not low <= q.layer <= n_layers:
            raise FlowroutesError(f"layer {q.layer} is out of range for a {q.kind} node: use {low}..{n_layers}")
        p = tr.resolve_position(q.position)
        it = slot.internals(q.prompt)
        now = it.mid[q.layer - 1, p] if q.kind == "attention" else it.residual[q.layer, p]
        before = it.residual[q.layer - 1, p] if q.layer >= 1 else None
        return JSONResponse({"layer": q.layer, "kind": q.kind, "position": p,
                             "before": None if before is None else f"x{q.layer - 1}",
                             "top": ins.lens_view(slot.loaded, now, before)})

    @app.post("/api/contrast")
    def contrast(q: ContrastQuery):
        _, _, a = _routes(store, q)
        _, _, b = _routes(store, q, prompt=q.prompt_b)
        diff = np.zeros((a.n_layers, a.n_heads))  # [L, H] head weight in A minus in B
        for (layer, h), w in a.head_weights().items():
            diff[layer, h] += w
        for (layer, h), w in b.head_weights().items():
            diff[layer, h] -= w
        return JSONResponse({"a": a.to_dict(), "b": b.to_dict(), "head_difference": _matrix(diff)})

    @app.post("/api/heatmaps")
    def heatmaps(q: RoutesQuery):
        _, tr, r = _routes(store, q)
        heads = np.zeros((r.n_layers, r.n_heads))  # [L, H] summed importance in the routes
        for (layer, h), w in r.head_weights().items():
            heads[layer, h] = w
        into = tr.attention[:, :, r.position, :].sum(axis=-1)  # [L, H] raw importance into x^A_p
        return JSONResponse({"tokens": tr.token_texts, "head_weights": _matrix(heads),
                             "head_importance": _matrix(into), "ffn": _matrix(tr.ffn)})  # ffn: [L, T]

    def analysis_figures(folder: Path) -> list[str]:
        return sorted(f.name for f in folder.iterdir() if f.is_file() and FIGURE_NAME.fullmatch(f.name))

    @app.get("/api/analyses")
    def analyses():
        out = []
        for i, name in enumerate(settings.analyses):
            folder = Path(name)
            summary = {}
            if (folder / "summary.json").is_file():
                try:
                    summary = json.loads((folder / "summary.json").read_text())
                except ValueError:
                    summary = {"error": "summary.json is not valid JSON"}
            short = {k: (v if len(json.dumps(v)) <= 300 else json.dumps(v)[:300] + " ...") for k, v in summary.items()}
            out.append({"id": i, "name": folder.name, "summary": short,
                        "figures": [f for f in analysis_figures(folder) if f.endswith(".png")]})
        return JSONResponse({"analyses": out})

    @app.get("/api/analyses/{index}/{name}")
    def analysis_figure(index: int, name: str):
        # only a file listed in a configured folder; the name is matched against the listing, never joined blindly
        if not 0 <= index < len(settings.analyses) or name not in analysis_figures(Path(settings.analyses[index])):
            raise NotFound(f"no figure {name!r} in analysis {index}")
        return FileResponse(Path(settings.analyses[index]) / name)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
