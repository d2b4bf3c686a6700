"""One forward pass with hooks: hands each block's activations to a callback, then lets them go.

Reads, per block l (0-based): x^{l-1} and LN(x^{l-1}) at the input norm, the attention weights,
x^{lA} at the norm before the FFN, the FFN output, and x^l. Computes nothing but the forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .errors import FlowroutesError
from .models.loading import LoadedModel


@dataclass
class BlockCapture:
    """What one decoder block did, for one prompt (no batch axis). All float32 on the model's device."""

    layer: int
    x_in: torch.Tensor  # [T, d]     x^{l-1}, the residual the block reads
    normed: torch.Tensor  # [T, d]   LN(x^{l-1}), what the attention reads
    alpha: torch.Tensor  # [H, T, T] attention weights, alpha[h, p, j]
    x_mid: torch.Tensor  # [T, d]    x^{lA}, the residual after the attention block
    ffn_out: torch.Tensor  # [T, d]  FFN(LN(x^{lA}))
    x_out: torch.Tensor  # [T, d]    x^l, the residual after the block
    attention_call: tuple | None = None  # (args, kwargs) of the attention module, to run it again


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


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def run_with_capture(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    on_block: Callable[[BlockCapture], None],
    keep_attention_call: bool = False,
) -> torch.Tensor:
    """Run `input_ids` [B, T] (or [T]) through the model, calling `on_block` once per block and prompt.

    Blocks come bottom to top; within a block, prompts in batch order (`BlockCapture` has no batch axis:
    `on_block` receives `(capture, batch_index)` when input_ids is 2-D). Returns the logits [(B,) T, vocab]
    (float32). Raises FlowroutesError on NaN/Inf activations. With `keep_attention_call`, each capture
    carries what `recompute_attention_weights` needs to run its attention module again.
    """
    batched = input_ids.ndim == 2
    ids = input_ids if batched else input_ids[None]
    model, adapter = loaded.model, loaded.adapter
    state: dict[str, torch.Tensor] = {}
    handles = []

    def grab(tensor) -> torch.Tensor:
        return _first(tensor).detach().float()  # [B, T, d]

    for layer in range(adapter.n_layers):
        mods = adapter.block_modules(layer)

        def on_input_norm(_m, args, out):
            state["x_in"], state["normed"] = grab(args), grab(out)

        def on_attention(_m, _args, out):
            weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
            if weights is None:
                raise FlowroutesError(
                    "the model's attention implementation does not return attention weights; "
                    "load it with attn_implementation='eager'"
                )
            state["alpha"] = weights.detach().float()  # [B, H, T, T]

        def on_attention_call(_m, args, kwargs):
            state["call"] = (args, kwargs)

        def on_mid_norm(_m, args):
            state["x_mid"] = grab(args)

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
            for b in range(x_out.shape[0]):
                cap = BlockCapture(layer=layer, x_out=x_out[b], attention_call=call,
                                   **{k: v[b] for k, v in state.items() if k != "call"})
                on_block(cap, b) if batched else on_block(cap)
            state.clear()

        handles += [
            mods.input_norm.register_forward_hook(on_input_norm),
            mods.attention.register_forward_hook(on_attention),
            mods.attention.register_forward_pre_hook(on_attention_call, with_kwargs=True),
            mods.mid_norm.register_forward_pre_hook(on_mid_norm),
            mods.ffn.register_forward_hook(on_ffn),
            mods.block.register_forward_hook(on_block_out),
        ]
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), eager_attention(model):
            out = model(input_ids=ids.to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    logits = out.logits.detach().float()
    return logits if batched else logits[0]


def recompute_attention_weights(loaded: LoadedModel, layer: int, call: tuple) -> torch.Tensor:
    """Run block `layer`'s attention module again on its captured inputs; its weights [H, T, T] (float32)."""
    args, kwargs = call
    module = loaded.adapter.block_modules(layer).attention
    with torch.no_grad(), eager_attention(loaded.model):
        out = module(*args, **kwargs)
    return out[1][0].detach().float()
