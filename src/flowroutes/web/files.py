"""The explorer's files: routes saved with their edits and opened back, the shipped samples and tasks, and the
analysis folders the server was started with (only files inside them, matched against their listing)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ..errors import FlowroutesError
from .answers import RoutesQuery, render, routes_of
from .store import NotFound, Settings, Store

MAX_SET = 500  # prompts in a set the page steps through
LINK_EDITS_MAX = 8000  # characters of a link's edits (base64url JSON), as the page writes them (editing.js)
BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.(png|svg)")


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


def add_edits_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """The page's edits (pins, subgraph, supernodes, notes), checked against the routes they were made on: saved
    into routes JSON v3 or a circuit-tracer graph, and restored from a saved routes file."""

    @app.post("/api/export")
    def export(q: ExportQuery):
        from ..circuit_tracer import to_circuit_tracer
        from ..edits import Edits, ids_of

        _, _, r = routes_of(store, q)
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
        _, _, r = routes_of(store, query)
        edits = Edits.from_dict(q.edits, *ids_of(r)) if q.version >= 3 and q.edits is not None else Edits()
        return JSONResponse({"model": slot.name, "prompt": q.prompt, "position": r.position,
                             "attention_threshold": q.attention_threshold, "ffn_threshold": q.ffn_threshold,
                             "renormalize": q.renormalize, "edits": edits.to_dict()})


def link_edits(text: str, routes):
    """The edits a download link carries (`?edits=`: base64url of their JSON, as the page's shared links write
    them), checked against `routes`; anything else is one FlowroutesError saying what is wrong."""
    from ..edits import Edits, ids_of

    if len(text) > LINK_EDITS_MAX:
        raise FlowroutesError(f"edits: {len(text)} characters, over the {LINK_EDITS_MAX} a link carries: save the "
                              "edits as JSON from the page instead")
    if not BASE64URL.fullmatch(text):
        raise FlowroutesError("edits: not base64url text (the page writes a link's edits as base64url of their JSON)")
    bare = text.rstrip("=")
    try:
        data = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise FlowroutesError("edits: not base64url of JSON edits (the page writes them; see docs/schema.md)") from None
    return Edits.from_dict(data, *ids_of(routes))


def _slot_for(store: Store, model: str):
    """The served model a saved file names (by the page's name for it, what it was loaded from, or the name its
    traces carry); otherwise the one-line unknown-model refusal."""
    if model in store.slots or not model:
        return store.slot(model or None)
    return next((slot for slot in store.slots.values() if slot.is_named(model)), None) or store.slot(model)


def add_samples_api(app: FastAPI, settings: Settings, store: Store) -> None:
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


def add_analyses_api(app: FastAPI, settings: Settings) -> None:
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

