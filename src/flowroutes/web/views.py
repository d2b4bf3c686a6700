"""The explorer's views of one prompt beyond its routes: inspecting heads, FFN blocks and neurons, the logit lens and
direct logit attribution of a target, interventions, and two prompts' routes side by side."""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import FlowroutesError
from ..routes import strongest
from .answers import PromptQuery, RoutesQuery, check_thresholds, display_texts, matrix, predictions, resolve_token
from .store import Busy, NotFound, PromptTooLong, Settings, Store


class ContrastQuery(RoutesQuery):
    prompt_b: str


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


def check_block(tr, layer: int, position: int, head: int | None = None) -> int:
    if not 0 <= layer < tr.n_layers:
        raise FlowroutesError(f"layer {layer} is out of range: use 0..{tr.n_layers - 1}")
    if head is not None and not 0 <= head < tr.n_heads:
        raise FlowroutesError(f"head {head} is out of range: use 0..{tr.n_heads - 1}")
    return tr.resolve_position(position)


def block_of(store, q, head: int | None = None):
    """What an inspect view of block q.layer needs: (model slot, trace, checked position, internals)."""
    slot = store.slot(q.model)
    tr = slot.entry(q.prompt).trace
    p = check_block(tr, q.layer, q.position, head)
    return slot, tr, p, slot.internals(q.prompt)


def add_inspect_api(app: FastAPI, store: Store) -> None:
    """Inside one block: heads ranked by importance, one head, the FFN block, one neuron."""
    from .. import inspection as ins

    @app.post("/api/heads")
    def heads(q: HeadsQuery):
        tr = store.slot(q.model).entry(q.prompt).trace
        p = check_block(tr, q.layer, q.position)
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
        slot, tr, p, it = block_of(store, q, q.head)
        with slot.holding():  # reads W_O, which an intervention's trace changes for a moment
            out = ins.head_output(slot.loaded, it, q.layer, q.head, p)
        return JSONResponse({"layer": q.layer, "head": q.head, "position": p, "tokens": display_texts(slot, tr),
                             "attention": matrix(it.alpha[q.layer, q.head]),  # [T, T] alpha[p, j]
                             "contribution": matrix(tr.attention[q.layer, q.head]),  # [T, T] importance x_j -> x^A_p
                             **ins.promoted_tokens(slot.loaded, out, normalize=q.normalize)})

    @app.post("/api/ffn")
    def ffn(q: BlockQuery):
        slot, tr, p, it = block_of(store, q)
        return JSONResponse({"layer": q.layer, "position": p, "importance": float(tr.ffn[q.layer, p]),
                             **ins.top_neurons(slot.loaded, it, q.layer, p),
                             **ins.promoted_tokens(slot.loaded, it.ffn_out[q.layer, p], normalize=q.normalize)})

    @app.post("/api/neuron")
    def neuron(q: NeuronQuery):
        slot, tr, p, it = block_of(store, q)
        vec = ins.neuron_output(slot.loaded, it, q.layer, p, q.neuron)
        return JSONResponse({"layer": q.layer, "position": p, "neuron": q.neuron,
                             "activation": float(it.neurons[q.layer, p, q.neuron]),
                             **ins.promoted_tokens(slot.loaded, vec, normalize=q.normalize)})


def add_readout_api(app: FastAPI, store: Store) -> None:
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


def add_intervene_api(app: FastAPI, settings: Settings, store: Store) -> None:
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


def add_contrast_api(app: FastAPI, settings: Settings, store: Store) -> None:
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
            diff = matrix(diff)
        out["head_difference"] = diff
        out["truncated"] = {"a": cuts.get("a"), "b": cuts.get("b")} if any(cuts.values()) else None
        return JSONResponse(out)

