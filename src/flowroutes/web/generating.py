"""The explorer's generate mode: one endpoint that generates an answer (greedy or sampled with a seed, optionally
in the chat template and with stop strings, or a given answer teacher-forced; made once per prompt, length and
options, kept by the model's slot) and answers, for a chosen answer token or span, its attribution to the prompt
and its routes; and one that says which options a model allows (its chat template) and this server's bounds.

Every number comes from `flowroutes.Generation` (its `attribution`, `routes`, probabilities); nothing is computed
here. Work per request is bounded as elsewhere: the prompt's limits, `Settings.max_new_tokens` (the given answer's
tokens too), the threshold's minimum, the edge budget and the model's queue; and the options' bounds below.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import FlowroutesError
from ..generation import check_target
from ..routes import strongest
from .answers import check_thresholds
from .store import PromptTooLong, Settings, Store

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 10.0  # sampling's temperature
MAX_SEED = 2**32 - 1  # seeds 0..MAX_SEED: exact as a JavaScript number and in a link
MAX_STOPS = 4  # stop strings per request (each one token of the model's tokenizer)
MAX_STOP_CHARS = 64


class GenerateQuery(BaseModel):
    model: str | None = None
    prompt: str
    max_new_tokens: int = 8
    method: Literal["alti", "routes"] = "alti"  # the attribution's definition (docs/generation.md)
    threshold: float = 0.04  # tau of the routes (and of method "routes")
    token: int | None = None  # an answer token k (0-based): its routes, and its attribution unless `span` is given
    span: list[int] | None = Field(None, min_length=2, max_length=2)  # answer tokens a..b-1; default: token k, else all
    sample: bool = False  # softmax sampling (needs a seed) instead of greedy decoding
    temperature: float | None = None  # sampling only; default 1
    seed: int | None = None  # sampling only, and then required: a sampled answer is reproducible
    stop: list[str] | None = None  # stop strings, one token each (besides the model's EOS)
    chat: bool = False  # the prompt in the tokenizer's chat template
    target: str | None = None  # a given answer, teacher-forced (stop reason "target")


def generate_options(settings: Settings, q: GenerateQuery) -> dict[str, Any]:
    """`flowroutes.generate`'s keywords for the query, or one FlowroutesError line (422; 413 for a given answer
    over the prompt's character limit) before any work. Options that would not be used are refused, not ignored."""
    options: dict[str, Any] = {}
    if q.target is not None:
        if q.sample or q.stop or q.temperature is not None or q.seed is not None:
            raise FlowroutesError("a given answer is teacher-forced: sample, temperature, seed and stop do not apply "
                                  "to it; send either the answer or those options")
        limit = settings.max_prompt_chars
        if len(q.target) > limit:
            raise PromptTooLong(f"the given answer has {len(q.target)} characters; this server accepts at most "
                                f"{limit}: shorten it")
        options["target"] = check_target(q.target)
    elif q.sample:
        t = 1.0 if q.temperature is None else q.temperature
        if not (math.isfinite(t) and MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):
            raise FlowroutesError(f"temperature must be a number in {MIN_TEMPERATURE}..{MAX_TEMPERATURE:g}, got {t}: "
                                  "try 1 (the model's own distribution)")
        if q.seed is None or not 0 <= q.seed <= MAX_SEED:
            got = "none" if q.seed is None else q.seed
            raise FlowroutesError(f"a sampled answer needs a seed, a whole number in 0..{MAX_SEED}, got {got}: give "
                                  "one, so that the answer can be made again")
        options.update(sample=True, temperature=float(t), seed=int(q.seed))
    elif q.temperature is not None or q.seed is not None:
        raise FlowroutesError("temperature and seed apply only when sampling: send sample: true (or drop them)")
    if q.stop:
        if len(q.stop) > MAX_STOPS:
            raise FlowroutesError(f"at most {MAX_STOPS} stop strings on this server, got {len(q.stop)}: keep the "
                                  "ones that matter")
        for s in q.stop:
            if not s or len(s) > MAX_STOP_CHARS:
                raise FlowroutesError(f"a stop string must be 1..{MAX_STOP_CHARS} characters (one token), got "
                                      f"{len(s)} characters")
        options["stop"] = list(q.stop)  # each one token: generate's own check, before the model runs
    if q.chat:
        options["chat"] = True
    return options


def add_generate_api(app: FastAPI, settings: Settings, store: Store) -> None:
    """POST /api/generate: the answer token by token (text, id, probability, the trace position predicting it),
    the attribution of the span (or token, or whole answer) to each prompt token, and token k's routes.
    GET /api/generate/options: whether a model's tokenizer has a chat template, and this server's bounds."""
    @app.get("/api/generate/options")
    def options_(model: str | None = None):
        slot = store.slot(model)
        has_chat = bool(getattr(slot.loaded.tokenizer, "chat_template", None))  # loads the model on first use
        return {"model": slot.name, "chat": has_chat,
                "chat_reason": None if has_chat else f"{slot.name}'s tokenizer has no chat template",
                "temperature": [MIN_TEMPERATURE, MAX_TEMPERATURE], "max_seed": MAX_SEED, "max_stops": MAX_STOPS,
                "max_stop_chars": MAX_STOP_CHARS, "max_new_tokens": settings.max_new_tokens}

    @app.post("/api/generate")
    def generate_(q: GenerateQuery):
        start = time.perf_counter()
        check_thresholds(settings, q)
        options = generate_options(settings, q)
        slot = store.slot(q.model)
        g, new = slot.generation(q.prompt, q.max_new_tokens, **options)
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
                "display": g.tokens[: n_prompt + g.n_answer - 1], "cached": not new, "prompt_text": g.prompt,
                "options": {"sample": g.sampled, "temperature": options.get("temperature"), "seed": g.seed,
                            "stop": options.get("stop", []), "chat": g.chat, "target": options.get("target")}}
        ms = (time.perf_counter() - start) * 1000
        body["server_ms"] = ms
        return JSONResponse(body, headers={"Server-Timing": f"generate;dur={ms:.1f}"})
