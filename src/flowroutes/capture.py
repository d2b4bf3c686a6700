"""One forward pass with hooks: hands each block's activations to a callback, then lets them go.

Reads, per block l (0-based): x^{l-1} and LN(x^{l-1}) at the input norm, the attention weights,
x^{lA} at the norm before the FFN, the FFN output, and x^l. Computes nothing but the forward pass.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .errors import FlowroutesError
from .models.loading import LoadedModel


@dataclass
class BlockCapture:
    """What one decoder block did, for one prompt (no batch axis). All float32 (or the dtype that
    `run_with_capture` was asked for) on the device of the block."""

    layer: int
    x_in: torch.Tensor  # [T, d]     x^{l-1}, the residual the block reads
    normed: torch.Tensor  # [T, d]   what the attention reads: LN(x^{l-1}) (x^{l-1} itself without a norm)
    alpha: torch.Tensor  # [H, T, T] attention weights, alpha[h, p, j]
    attn_raw: torch.Tensor  # [T, d] the attention module's output (before any post-norm)
    x_mid: torch.Tensor | None  # [T, d] x^{lA}, after the attention block; None for parallel blocks
    ffn_out: torch.Tensor  # [T, d]  the FFN update added to the residual
    x_out: torch.Tensor  # [T, d]    x^l, the residual after the block
    attention_call: tuple | None = None  # (args, kwargs) of the attention module, to run it again

    @property
    def parallel(self) -> bool:
        return self.x_mid is None


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    """Run with the eager attention implementation (the only one that returns attention weights)."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        if setter is not None and before is not None:
            setter(before)
        else:
            config._attn_implementation = before


RECORD_IMPLEMENTATION = "flowroutes_record"
_recorded: contextvars.ContextVar[dict | None] = contextvars.ContextVar("flowroutes_recorded", default=None)


def _eager_function(module) -> Callable | None:
    """The family's own eager attention function (transformers' AttentionInterface models), or None."""
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def _recording_attention(module, query, key, value, attention_mask, **kwargs):
    """An attention implementation that keeps each module's inputs (for `attention_rows` later) and computes
    the output with sdpa, or with the family's eager function where sdpa cannot (soft-capping)."""
    store = _recorded.get()
    if store is not None:
        # the value vectors are not needed to recompute weights: an empty [B, KV, T, 0] stands in for them
        empty_value = value.new_empty((*value.shape[:-1], 0))
        store[module] = (query.detach(), key.detach(), empty_value, attention_mask, kwargs)
    if kwargs.get("softcap") is not None:
        out, _ = _eager_function(module)(module, query, key, value, attention_mask, **kwargs)
        return out, None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_recording() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(RECORD_IMPLEMENTATION, _recording_attention)
    AttentionMaskInterface.register(RECORD_IMPLEMENTATION, eager_mask)  # additive masks, as eager reads them


def can_record(loaded: LoadedModel) -> bool:
    """Whether every attention module goes through transformers' AttentionInterface with an eager function."""
    adapter = loaded.adapter
    return hasattr(loaded.model, "set_attn_implementation") and all(
        _eager_function(adapter.attention_module(layer)) is not None for layer in range(adapter.n_layers)
    )


@contextlib.contextmanager
def recording_attention(model) -> Iterator[dict]:
    """Run with the recording implementation; yields {attention module: its inputs}."""
    _register_recording()
    before = model.config._attn_implementation
    store: dict = {}
    token = _recorded.set(store)
    model.set_attn_implementation(RECORD_IMPLEMENTATION)
    try:
        yield store
    finally:
        model.set_attn_implementation(before)
        _recorded.reset(token)


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def run_with_capture(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    on_block: Callable[[BlockCapture], None],
    keep_attention_call: bool = False,
    record: bool = False,
    whole_batch: bool = False,
    logit_positions: torch.Tensor | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """Run `input_ids` [B, T] (or [T]) through the model, calling `on_block` once per block and prompt.

    Blocks come bottom to top; within a block, prompts in batch order (`BlockCapture` has no batch axis:
    `on_block` receives `(capture, batch_index)` when input_ids is 2-D). Returns the logits [(B,) T, vocab]
    (float32). Raises FlowroutesError on NaN/Inf activations. With `keep_attention_call`, each capture
    carries what `attention_rows` needs to run its attention module again. With `record` (see
    `can_record`), the forward pass runs sdpa and keeps each attention's inputs instead of its weights
    (`BlockCapture.alpha` is None; `attention_rows` computes the rows asked for). With `whole_batch`,
    `on_block` is called once per block with the batch axis kept ([B, ...] tensors). With `logit_positions`
    ([B, K] positions, [K] for 1-D input_ids), the LM head runs at those positions only and the logits are
    [(B,) K, vocab]. `dtype`: what the captured tensors are converted to (None: the model's own, e.g. to keep
    a half-precision model's activations at half the memory; consumers upcast them where they compute).
    """
    batched = input_ids.ndim == 2
    ids = input_ids if batched else input_ids[None]
    model, adapter = loaded.model, loaded.adapter
    state: dict[str, torch.Tensor] = {}
    handles = []

    n_batch, n_tok = ids.shape

    def grab(tensor) -> torch.Tensor:
        t = _first(tensor).detach()
        t = t.to(dtype or t.dtype, copy=True)  # a copy: modules may update in place later
        return t.reshape(n_batch, n_tok, -1) if t.ndim == 2 else t  # [B, T, d] (OPT flattens to [B*T, d])

    def hidden_arg(args, kwargs) -> torch.Tensor:
        return grab(args[0] if args else kwargs["hidden_states"])

    for layer in range(adapter.n_layers):
        mods = adapter.block_modules(layer)

        def on_block_in(_m, args, kwargs):
            state["x_in"] = hidden_arg(args, kwargs)

        def on_input_norm(_m, _args, out):
            state["normed"] = grab(out)

        def on_attention(_m, _args, out):
            weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
            if weights is None and record:
                state["alpha"] = None
                state["attn_raw"] = grab(out)
                return
            if weights is None:
                raise FlowroutesError(
                    "the model's attention implementation does not return attention weights; "
                    "load it with attn_implementation='eager'"
                )
            weights = weights.detach()
            state["alpha"] = weights.to(dtype or weights.dtype)  # [B, H, T, T]
            state["attn_raw"] = grab(out)

        def on_attention_call(_m, args, kwargs):
            if "output_attentions" in kwargs:  # modules that pick eager only when asked (Falcon)
                kwargs = {**kwargs, "output_attentions": True}
                mask = kwargs.get("attention_mask")
                if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:  # an sdpa mask: make it additive
                    additive = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
                    kwargs["attention_mask"] = additive.masked_fill(~mask, torch.finfo(torch.float32).min)
            state["call"] = (args, kwargs)
            return args, kwargs

        def on_mid(_m, args, kwargs):
            state["x_mid"] = hidden_arg(args, kwargs)

        def on_ffn(_m, _args, out):
            state["ffn_out"] = grab(out)

        def on_block_out(_m, _args, out, layer=layer):
            x_out = grab(out)
            if not torch.isfinite(x_out).all():
                raise FlowroutesError(
                    f"the model produced NaN or Inf activations in layer {layer} "
                    "(float16 overflow?); load it in float32 or bfloat16"
                )
            call = state.pop("call", None) if keep_attention_call else None
            inputs = recorded.pop(adapter.attention_module(layer), None) if record else None
            if inputs is not None:
                call = ("record", inputs)  # replaces (args, kwargs), which would keep the module's input alive
            x_mid = state.pop("x_mid", None)
            if "ffn_out" not in state:  # the FFN adds the residual itself (BLOOM): derive its update
                state["ffn_out"] = x_out.float() - x_mid.float()
            if "normed" not in state:  # the attention reads the residual itself (OLMo 2)
                state["normed"] = state["x_in"]
            if whole_batch:
                on_block(BlockCapture(layer=layer, x_out=x_out, attention_call=call, x_mid=x_mid,
                                      **{k: v for k, v in state.items() if k != "call"}))
                state.clear()
                return
            for b in range(x_out.shape[0]):
                cap = BlockCapture(layer=layer, x_out=x_out[b], attention_call=call,
                                   x_mid=None if x_mid is None else x_mid[b],
                                   **{k: (None if v is None else v[b]) for k, v in state.items() if k != "call"})
                on_block(cap, b) if batched else on_block(cap)
            state.clear()

        handles += [
            mods.block.register_forward_pre_hook(on_block_in, with_kwargs=True),
            mods.attention.register_forward_hook(on_attention),
            mods.attention.register_forward_pre_hook(on_attention_call, with_kwargs=True),
            mods.block.register_forward_hook(on_block_out),
        ]
        if mods.input_norm is not None:
            handles.append(mods.input_norm.register_forward_hook(on_input_norm))
        if mods.mid_input is not None:
            handles.append(mods.mid_input.register_forward_pre_hook(on_mid, with_kwargs=True))
        if mods.ffn is not None:
            handles.append(mods.ffn.register_forward_hook(on_ffn))
    device = next(model.parameters()).device
    recorded: dict = {}
    keep = None if logit_positions is None else logit_positions.reshape(n_batch, logit_positions.shape[-1]).to(device)
    slicing = keep is not None and "logits_to_keep" in inspect.signature(model.forward).parameters
    try:
        with torch.no_grad(), (recording_attention(model) if record else eager_attention(model)) as rec:
            recorded = rec if record else {}
            out = model(input_ids=ids.to(device), use_cache=False, **({"logits_to_keep": keep} if slicing else {}))
    finally:
        for h in handles:
            h.remove()
    logits = out.logits.detach()
    if keep is not None and not slicing:  # a model that cannot skip the LM head: pick the positions afterwards
        logits = torch.take_along_dim(logits, keep[..., None], dim=1)
    logits = logits.float()
    return logits if batched else logits[0]


def attention_rows(loaded: LoadedModel, layer: int, call: tuple, rows: torch.Tensor) -> torch.Tensor:
    """The attention weights [H, R, T] (float32) of block `layer` for the target positions `rows`.

    `call` is what the capture kept: ("record", inputs) -> the family's eager function on those query rows
    only; otherwise (args, kwargs) of the module -> the module run again in eager, all rows, then indexed.
    """
    module = loaded.adapter.attention_module(layer)
    if call[0] == "record":
        if call[1] is None:
            raise RuntimeError(f"no attention inputs were recorded for layer {layer}")
        query, key, value, mask, kwargs = call[1]
        rows_mask = None if mask is None else mask[:, :, rows.to(mask.device)]
        with torch.no_grad():
            _, weights = _eager_function(module)(module, query[:, :, rows.to(query.device)], key, value, rows_mask,
                                                 **kwargs)
        return weights[0].detach().float()
    args, kwargs = call
    with torch.no_grad(), eager_attention(loaded.model):
        out = module(*args, **kwargs)
    return out[1][0].detach().float()[:, rows]


def attention_rows_batch(loaded: LoadedModel, layer: int, call: tuple, prompts: torch.Tensor,
                         rows: torch.Tensor) -> torch.Tensor:
    """The attention weights [B', H, R, T] (float32) of block `layer` for prompts `prompts` [B'] of a captured batch
    and, for each, the target positions rows[b'] [B', R] (as `attention_rows` for one prompt): the family's eager
    function on those query rows only, or the module run again on the whole batch and indexed."""
    module = loaded.adapter.attention_module(layer)
    n_sel = prompts.shape[0]
    if call[0] == "record":
        if call[1] is None:
            raise RuntimeError(f"no attention inputs were recorded for layer {layer}")
        query, key, value, mask, kwargs = call[1]
        dev = query.device
        sel, pick = prompts.to(dev), rows.to(dev)
        q = query[sel[:, None], :, pick].transpose(1, 2)  # [B', H, R, dh]
        rows_mask = None
        if mask is not None:
            m = mask[sel.to(mask.device)] if mask.shape[0] > 1 else mask.expand(n_sel, *mask.shape[1:])
            rows_mask = m[torch.arange(n_sel, device=m.device)[:, None], :, pick.to(m.device)].transpose(1, 2)
        with torch.no_grad():
            _, weights = _eager_function(module)(module, q, key[sel], value[sel], rows_mask, **kwargs)
        return weights.detach().float()
    args, kwargs = call
    with torch.no_grad(), eager_attention(loaded.model):
        out = module(*args, **kwargs)
    weights = out[1].detach()[prompts.to(out[1].device)]  # [B', H, T, T]
    picked = weights[torch.arange(n_sel, device=weights.device)[:, None], :, rows.to(weights.device)]  # [B', R, H, T]
    return picked.transpose(1, 2).float()
