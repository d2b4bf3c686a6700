"""Generation with a KV cache whose every step is captured: the prompt's pass, then one pass per answer token, each
with the lazy engine's hooks; the lazy trace of prompt + answer[:-1] is put together from those passes, so that
explaining a generation costs no forward pass beyond the generation's own (docs/generation.md, "Cost").

Per block and step the capture keeps what the lazy trace keeps of a whole pass (`_Steps`): x^{lA}, the post-norm
diagonal, the attention's queries and the step's new keys and values, and the nodes that need only each position's
own vectors (the FFN nodes and the residual edges of eq. 1). The attention of step s read the keys of every
position up to its own; the trace's attention rows read the same keys (as the cache holds them) through the causal
mask. Models whose cached
attention is not plainly causal over every earlier position (a sliding window that bites, attention that cannot be
recorded, parallel blocks) are not decoded here: `generation.generate` then generates with the model's own
`generate` and traces prompt + answer[:-1] in one more pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import deadline
from .capture import BlockCapture, RecordedAttention, can_record, capturing_steps
from .engine import Options, batched_kernel, ffn_nodes_of, parallel_flags
from .errors import FlowroutesError
from .lazy import LazyTrace, ffn_arrays, lazy_batch, lazy_traces, residual_proximities

#: what `generate` traces with: `flowroutes.trace`'s defaults (top 10 predictions, exact float32); the LM head runs
#: only where the answer is predicted, so the prompt's other positions get no predictions
OPTIONS = Options(top_k=10, kernel="auto", chunk_elements=1 << 23, precision="float32", prune=0.0, predictions="all")


class NotCausal(Exception):
    """A step's attention read something other than every earlier position (a sliding window, a trimmed cache):
    this model is traced by one more pass instead."""


def can_decode(loaded, n_positions: int) -> bool:
    """Whether `decode` can trace this model's generation of `n_positions` positions (prompt + answer[:-1]):
    recordable attention, sequential blocks, and no sliding window shorter than that (`decode` checks every
    step's mask as well)."""
    window = getattr(loaded.model.config, "sliding_window", None)
    return (can_record(loaded) and not any(parallel_flags(loaded.adapter))
            and not (isinstance(window, int) and window < n_positions))


class _Steps:
    """What the capture keeps of each step, per block, put together into one `_LazyBatch` at the end.

    The prompt's pass (a step of more than one position) has its per-position nodes computed at once: the FFN nodes
    and (for the fused CPU kernel) the residual edges' proximities, so that of its x^l, FFN update and x^{l+1}
    nothing is kept. The one-token steps keep theirs and get them computed together at the end (one kernel call per
    block instead of one per block and step). Every step keeps x^{lA}, the post-norm diagonal, the queries and the
    new keys and values ([1, t, ...] pieces)."""

    def __init__(self, loaded, max_positions: int):
        self.adapter = loaded.adapter
        n = self.adapter.n_layers
        self.parts: list[dict[str, list]] = [{name: [] for name in (
            "x_mid", "scale", "query", "key", "values",  # every step's
            "residual", "x_in",  # the computed positions' residual proximities (fused kernel), or their x^l
            "step_x_in", "step_ffn_out", "step_x_out")}  # the one-token steps', until the end
            for _ in range(n)]
        self.per_node = ffn_arrays(n, 1, max_positions)  # [L, 1, max_positions], filled as the steps come
        self.done = [0] * n  # per block, the positions whose FFN nodes (and residual edges) are computed
        self.fused = batched_kernel(OPTIONS.kernel, "float32", next(loaded.model.parameters()).device)
        self.kwargs: list[dict | None] = [None] * n
        self.start = 0  # the position of this step's first token
        self.dtype: torch.dtype | None = None  # the queries' (and the additive mask's) dtype

    def block(self, cap: BlockCapture) -> None:  # tensors [1, t, ...] in the model's dtype
        call, layer = cap.attention_call, cap.layer
        if not isinstance(call, RecordedAttention):
            raise NotCausal
        n_new, seen = cap.x_in.shape[1], call.key.shape[2]
        if seen != self.start + n_new or (call.mask is not None and not _is_causal(call.mask, self.start)):
            raise NotCausal
        part = self.parts[layer]
        part["x_mid"].append(cap.x_mid)
        part["scale"].append(self.adapter.attention_post_scale(layer, cap.attn_raw.float()))
        part["query"].append(call.query)
        part["key"].append(call.key[:, :, -n_new:].clone())  # a view would keep every step's whole cache alive
        part["values"].append(call.values[:, :, -n_new:].clone())
        self.kwargs[layer] = self.kwargs[layer] or call.kwargs
        self.dtype = call.query.dtype
        if n_new > 1 and self.done[layer] == self.start:  # the prompt's pass: its nodes now
            ffn_nodes_of(layer, cap.x_mid, cap.ffn_out, cap.x_out, self.per_node, torch.float32, start=self.start)
            if self.fused:
                part["residual"].append(residual_proximities(cap.x_in, cap.x_mid))
            else:
                part["x_in"].append(cap.x_in)
            self.done[layer] = self.start + n_new
            return
        for name in ("x_in", "ffn_out", "x_out"):
            part[f"step_{name}"].append(getattr(cap, name))

    def lazy(self, loaded, prompt: str, ids: torch.Tensor, logits: torch.Tensor) -> LazyTrace:
        """The lazy trace of the positions the steps passed through, ids [T], with the logits [K, V] of its last K
        positions (those that predict the answer's tokens; the others get no predictions, as `predictions="none"`
        leaves them)."""
        n_tok = int(ids.numel())
        batch, _ = lazy_batch(loaded, [n_tok], OPTIONS)
        mask = torch.full((1, 1, n_tok, n_tok), torch.finfo(self.dtype).min, dtype=self.dtype).triu(1)  # additive
        for layer, part in enumerate(self.parts):  # each block's pieces joined along the positions, then let go
            whole = {name: torch.cat(part.pop(name), dim=2 if name in ("query", "key", "values") else 1)
                     for name in ("query", "key", "values", "x_mid")}
            scales = part.pop("scale")
            done = self.done[layer]
            if done < n_tok:  # the one-token steps' nodes, all at once
                rest = {name: torch.cat(part.pop(f"step_{name}"), dim=1) for name in ("x_in", "ffn_out", "x_out")}
                ffn_nodes_of(layer, whole["x_mid"][:, done:], rest["ffn_out"], rest["x_out"], self.per_node,
                             torch.float32, start=done)
                if self.fused:
                    part["residual"].append(residual_proximities(rest["x_in"], whole["x_mid"][:, done:]))
                else:
                    part["x_in"].append(rest["x_in"])
            residual = np.concatenate(part.pop("residual"), axis=1) if self.fused else None  # [1, T]
            x_in = None if self.fused else torch.cat(part.pop("x_in"), dim=1)
            call = RecordedAttention(whole["query"], whole["key"], whole["values"], mask.to(whole["query"].device),
                                     self.kwargs[layer])
            batch.keep_parts(layer, x_in, whole["x_mid"], call, None,
                             None if scales[0] is None else torch.cat(scales, dim=1), residual=residual)
        keep = torch.arange(n_tok - logits.shape[0], n_tok)[None]  # [1, K]
        tr = lazy_traces(loaded, [prompt], [ids], logits[None], keep, OPTIONS, batch, self.per_node)[0]
        tr.meta |= {"decoded": True, "predictions": "answer"}  # from a generation's cached passes; see `lazy`
        return tr


def _is_causal(mask: torch.Tensor, start: int) -> bool:
    """Whether an additive mask [.., t, t'] of queries at start.. lets each query read exactly the keys 0..its own."""
    n_q, n_k = mask.shape[-2:]
    allowed = torch.arange(n_k)[None, :] <= torch.arange(start, start + n_q)[:, None]  # [t, t']
    return bool(((mask == 0) == allowed.to(mask.device)).all())


def decode(loaded, prompt_ids: torch.Tensor, max_new_tokens: int,
           choose: Callable[[torch.Tensor], int], stops: list[int]):
    """Generate up to `max_new_tokens` tokens after prompt_ids [P] with a KV cache, `choose(logits [V] float32)`
    picking each; stop after a token of `stops`. Returns (answer [K] long, probs [K] float64: softmax of the raw
    logits at each chosen token, stop reason, the LazyTrace of prompt + answer[:-1] from the steps' own passes), or
    None when the model's cached attention is not plainly causal (`NotCausal`)."""
    n_prompt = int(prompt_ids.numel())
    limit = loaded.adapter.max_context
    if n_prompt + max_new_tokens - 1 > limit:
        raise FlowroutesError(f"the prompt has {n_prompt} tokens and {max_new_tokens} more were asked for, but "
                              f"{loaded.name} reads at most {limit}: ask for at most {limit - n_prompt + 1}")
    steps = _Steps(loaded, n_prompt + max_new_tokens - 1)
    answer: list[int] = []
    probs: list[float] = []
    logit_rows: list[torch.Tensor] = []
    past, step_ids = None, prompt_ids[None]
    reason = "length"
    try:
        with capturing_steps(loaded, steps.block) as step:
            while True:
                deadline.check()
                last, past = step(step_ids, past)  # [V]
                steps.start += step_ids.shape[1]
                logit_rows.append(last.cpu())
                token = int(choose(last))
                answer.append(token)
                probs.append(float(torch.softmax(last.double(), dim=-1)[token]))
                if token in stops:
                    reason = "stop"
                    break
                if len(answer) == max_new_tokens:
                    break
                step_ids = torch.tensor([[token]], dtype=torch.long)
    except NotCausal:
        return None
    del past
    ids = torch.cat([prompt_ids, torch.tensor(answer[:-1], dtype=torch.long)])
    tr = steps.lazy(loaded, loaded.tokenizer.decode(ids.tolist()), ids, torch.stack(logit_rows))
    return torch.tensor(answer, dtype=torch.long), np.array(probs), reason, tr
