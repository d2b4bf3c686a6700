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
    loaded: LoadedModel, input_ids: torch.Tensor, on_block: Callable[[BlockCapture], None]
) -> torch.Tensor:
    """Run `input_ids` [T] through the model, calling `on_block` once per block, bottom to top.

    Returns the logits [T, vocab] (float32). Raises FlowroutesError on NaN/Inf activations.
    """
    model, adapter = loaded.model, loaded.adapter
    state: dict[str, torch.Tensor] = {}
    handles = []

    def grab(tensor) -> torch.Tensor:
        return _first(tensor)[0].detach().float()  # drop the batch axis

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
            state["alpha"] = weights[0].detach().float()

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
            cap = BlockCapture(layer=layer, x_out=x_out, **state)
            state.clear()
            on_block(cap)

        handles += [
            mods.input_norm.register_forward_hook(on_input_norm),
            mods.attention.register_forward_hook(on_attention),
            mods.mid_norm.register_forward_pre_hook(on_mid_norm),
            mods.ffn.register_forward_hook(on_ffn),
            mods.block.register_forward_hook(on_block_out),
        ]
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), eager_attention(model):
            out = model(input_ids=input_ids[None].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out.logits[0].detach().float()
