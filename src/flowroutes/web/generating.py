"""The explorer's generate mode: one endpoint that generates a greedy answer (once per prompt and length, kept by
the model's slot) and answers, for a chosen answer token or span, its attribution to the prompt and its routes.

Every number comes from `flowroutes.Generation` (its `attribution`, `routes`, probabilities); nothing is computed
here. Work per request is bounded as elsewhere: the prompt's limits, `Settings.max_new_tokens`, the threshold's
minimum, the edge budget and the model's queue.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..routes import strongest
from .answers import check_thresholds
from .store import Settings, Store


class GenerateQuery(BaseModel):
    model: str | None = None
    prompt: str
    max_new_tokens: int = 8
    method: Literal["alti", "routes"] = "alti"  # the attribution's definition (docs/generation.md)
    threshold: float = 0.04  # tau of the routes (and of method "routes")
    token: int | None = None  # an answer token k (0-based): its routes, and its attribution unless `span` is given
    span: list[int] | None = Field(None, min_length=2, max_length=2)  # answer tokens a..b-1; default: token k, else all


def add_generate_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """POST /api/generate: the answer token by token (text, id, probability, the trace position predicting it),
    the attribution of the span (or token, or whole answer) to each prompt token, and token k's routes."""
    @app.post("/api/generate")
    def generate_(q: GenerateQuery):
        start = time.perf_counter()
        check_thresholds(settings, q)
        slot = store.slot(q.model)
        g, new = slot.generation(q.prompt, q.max_new_tokens)
        k = None if q.token is None else g.position(q.token) - g.n_prompt + 1  # checked, a negative k resolved
        if q.span is not None:
            a, b = g.check_span(q.span)
        else:  # token k's own attribution, else the whole answer's
            a, b = g.check_span(None if k is None else (k, k + 1))

        def work(_loaded):  # the lazy trace's rows read the model's weights: under its lock, as every pass
            scores = g.attribution(span=(a, b), method=q.method, tau=q.threshold)
            return scores, None if k is None else g.routes(k, q.threshold)

        scores, routes = slot.exclusive(work)
        cut = None
        if routes is not None:
            routes, cut = strongest(routes, settings.max_edges)
        n_prompt = g.n_prompt
        answer = [{"index": i, "token": g.answer_tokens[i], "id": int(g.answer_ids[i]),
                   "prob": float(g.answer_probs[i]), "position": g.position(i)} for i in range(g.n_answer)]
        body = {"model": slot.name, "prompt_tokens": g.prompt_tokens, "answer": answer, "answer_text": g.answer_text,
                "stop_reason": g.stop_reason, "method": q.method, "threshold": q.threshold, "span": [a, b],
                "attribution": [float(s) for s in scores], "token": k,
                "routes": None if routes is None else routes.to_dict(), "truncated": cut,
                "display": g.tokens[: n_prompt + g.n_answer - 1], "cached": not new}
        ms = (time.perf_counter() - start) * 1000
        body["server_ms"] = ms
        return JSONResponse(body, headers={"Server-Timing": f"generate;dur={ms:.1f}"})
