"""`trace`: one forward pass -> every edge importance of the information flow graph, as plain arrays.

The `Trace` holds raw importances (before any threshold) and the model's predictions; routes,
figures, the CLI and analyses only read it. Tokenisation follows the tokenizer's own defaults
(e.g. whether it prepends BOS) unless `add_special_tokens` or `input_ids` says otherwise.

This module is the API and its input checks; the work is done by engine.py (full traces) and lazy.py (rows on
demand); the result types are traces.py's `Trace` and lazy.py's `LazyTrace`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import checks
from .engine import Options, parallel_flags, trace_full
from .errors import FlowroutesError
from .importance import CHUNK_ELEMENTS
from .lazy import LazyTrace, LazyTraces, trace_lazy
from .models.loading import LoadedModel, load_model
from .predictions import PREDICTIONS
from .traces import Trace

__all__ = ["PREDICTIONS", "LazyTrace", "LazyTraces", "Trace", "tokenize", "trace"]


def tokenize(loaded: LoadedModel, prompt: str, add_special_tokens: bool | None = None) -> torch.Tensor:
    """The prompt's token ids [T], with the tokenizer's own defaults unless told otherwise."""
    checks.prompt(prompt)
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    ids = loaded.tokenizer(prompt, **kwargs)["input_ids"]
    return torch.as_tensor(ids, dtype=torch.long)


def trace(
    model: Any,
    prompt: str | list[str] | None = None,
    *,
    input_ids: Any = None,
    add_special_tokens: bool | None = None,
    top_k: int = 10,
    lazy: bool = False,
    batch_size: int = 8,
    kernel: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
    progress: bool = False,
    precision: str = "float32",
    prune: float = 0.0,
    predictions: str = "all",
):
    """Trace prompts: forward passes, then eq. 1 for every node of the information flow graph.

    model: a `LoadedModel` (from `load_model`) or anything `load_model` accepts.
    prompt: the text, or a list of texts (then a list of traces comes back, computed in batched forward
        passes of `batch_size` prompts; each equals its unbatched trace); or pass `input_ids` (a sequence of
        ints, or a list of them) to skip tokenisation.
    lazy: return a `LazyTrace` that computes attention rows only when routes ask for them (models with
        parallel blocks are traced in full: a `Trace` comes back).
    kernel: "auto" (fused numba kernel on CPU, fused Triton kernel on CUDA), "numba", "triton", "torch" (the
        chunked torch path), or "reference": the paper's equations part by part in float64 (`flowroutes.reference`;
        slow, every node, importances stored in float64).
    precision: "float32" (default, whatever the model's dtype), "float64" (importances computed and stored
        in float64, by the torch path), or "model": the head values f_h(x_j) = LN(x_j) W_V W_O by the model's own
        (half-precision) matrix products, rounded once to its dtype as its own activations are, the rest in
        float32 (importances within ~1e-3 of "float32"). Lazy traces of models whose attention can be recorded
        read the value vectors v_j = LN(x_j) W_V + b_V that the forward pass computed (in the model's dtype) and
        apply W_O^h in `precision`. On CPUs with fast bfloat16 products, "model" is the faster choice for a bfloat16
        model: the fused kernel reads its bfloat16 head values as they are.
    prune: a tolerance > 0 skips sub-edges whose proximity is bounded (alpha ||f||_1) too small to change any
        importance by more than it; every importance stays within `prune` of the exact one (0: exact).
    predictions: where the model's top-k next tokens are computed: "all" positions (default), only the "last"
        of each prompt, or "none"; the LM head runs only there. Positions left out have top_ids -1, top_probs
        NaN and no top_tokens. Importances do not depend on it.
    """
    _check_options(precision, prune, predictions, kernel, lazy)
    opts = Options(top_k, kernel, chunk_elements, precision, prune, predictions)
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if _several(prompt, input_ids):
        texts, id_lists = _several_inputs(loaded, prompt, input_ids, add_special_tokens)
        return _trace_several(loaded, texts, id_lists, lazy, batch_size, progress, opts)
    prompt, ids = _one_input(loaded, prompt, input_ids, add_special_tokens)
    return _trace_chunk(loaded, [prompt], [ids], lazy, opts)[0]


KERNELS = ("auto", "numba", "triton", "torch", "reference")


def _check_options(precision: str, prune: float, predictions: str, kernel: str = "auto", lazy: bool = False) -> None:
    if kernel not in KERNELS:
        raise FlowroutesError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
    if precision == "float64" and kernel in ("numba", "triton"):
        raise FlowroutesError(f"kernel={kernel!r} computes in float32: precision='float64' needs kernel='auto' or "
                              "'torch' (or 'reference')")
    if kernel == "reference" and (lazy or prune):
        raise FlowroutesError("kernel='reference' computes every node exactly: use it without lazy=True or prune")
    if predictions not in PREDICTIONS:
        raise FlowroutesError(f"predictions must be one of {', '.join(map(repr, PREDICTIONS))}, got {predictions!r}")
    if not 0.0 <= prune < 1.0:
        raise FlowroutesError(f"prune must be a tolerance in [0, 1), got {prune}: try 1e-4")
    if precision not in ("float32", "float64", "model"):
        raise FlowroutesError(f"precision must be 'float32', 'float64' or 'model', got {precision!r}")


def _several(prompt, input_ids) -> bool:
    """Whether the call traces a list of prompts (or of id sequences) rather than one."""
    return isinstance(prompt, (list, tuple)) or (
        input_ids is not None and len(input_ids) > 0 and not isinstance(input_ids[0], (int, np.integer))
        and not (isinstance(input_ids, (np.ndarray, torch.Tensor)) and np.ndim(input_ids) == 1)
    )


def _several_inputs(loaded, prompt, input_ids, add_special_tokens) -> tuple[list[str], list[torch.Tensor]]:
    """(texts, ids [T_b] per prompt) of a list of prompts or of id sequences."""
    if input_ids is not None:
        id_lists = [check_ids(loaded, torch.as_tensor(i, dtype=torch.long).reshape(-1)) for i in input_ids]
        return [loaded.tokenizer.decode(i.tolist()) for i in id_lists], id_lists
    texts = list(prompt)
    return texts, [check_ids(loaded, tokenize(loaded, t, add_special_tokens)) for t in texts]


def _one_input(loaded, prompt, input_ids, add_special_tokens) -> tuple[str, torch.Tensor]:
    """(text, ids [T]) of one prompt or id sequence."""
    if input_ids is None:
        return prompt, check_ids(loaded, tokenize(loaded, prompt, add_special_tokens))
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        raise FlowroutesError("input_ids is empty: give at least one token")
    return (loaded.tokenizer.decode(ids.tolist()) if prompt is None else prompt), check_ids(loaded, ids)


def _trace_several(loaded, texts, id_lists, lazy: bool, batch_size: int, progress: bool, opts: Options) -> list:
    """Traces of many prompts in batched forward passes of `batch_size`; batches of similar lengths waste little on
    padding, and the results come back in the caller's order."""
    order = sorted(range(len(texts)), key=lambda i: int(id_lists[i].numel()))
    out = (LazyTraces if lazy else list)([None] * len(texts))
    bar = _progress(len(texts), progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        traces = _trace_chunk(loaded, [texts[i] for i in chunk], [id_lists[i] for i in chunk], lazy, opts)
        for i, tr in zip(chunk, traces):
            out[i] = tr
        bar.update(len(chunk))
    bar.close()
    return out


def _trace_chunk(loaded, texts, id_lists, lazy: bool, opts: Options) -> list:
    """The traces of one batch (one forward pass); lazy ones where the model allows."""
    # a parallel block's FFN importance needs the whole node's normalisation: such models are traced in full
    if lazy and not any(parallel_flags(loaded.adapter)):
        return trace_lazy(loaded, texts, id_lists, opts)
    return trace_full(loaded, texts, id_lists, opts)


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", disable=not enabled, desc="tracing")


def check_ids(loaded: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """ids [T] if the model can read them, else one FlowroutesError line."""
    if ids.numel() == 0:
        raise FlowroutesError("the prompt has no tokens after tokenisation: give some text")
    if ids.numel() > loaded.adapter.max_context:
        raise FlowroutesError(
            f"the prompt has {ids.numel()} tokens but {loaded.name} reads at most {loaded.adapter.max_context}: "
            "shorten it"
        )
    return ids

