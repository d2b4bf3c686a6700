"""One forward pass with hooks: hands each block's activations to a callback, then lets them go.

Reads, per block l (0-based): x^l and LN(x^l) at the input norm, the attention weights,
x^{lA} at the norm before the FFN, the FFN output, and x^{l+1}. Computes nothing but the forward pass.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import deadline
from .errors import FlowroutesError
from .models.loading import LoadedModel


@dataclass(frozen=True)
class ModuleCall:
    """The attention module's own inputs, kept to run it again in eager mode (all query rows)."""

    args: tuple
    kwargs: dict


@dataclass(frozen=True)
class RecordedAttention:
    """What the recording attention implementation kept of one attention call: enough to compute the weights of
    chosen query rows with the family's eager function, without the module's input or its values."""

    query: torch.Tensor  # [B, H, T, dh]
    key: torch.Tensor  # [B, KV, T, dh]
    values: torch.Tensor  # [B, KV, T, dh] the value vectors v_j the model computed (the head values read them)
    mask: torch.Tensor | None  # additive, [B or 1, 1, T, T]
    kwargs: dict


AttentionCall = ModuleCall | RecordedAttention


@dataclass
class BlockCapture:
    """What one decoder block did. Tensors are [T, ...] for a 1-D `input_ids` and [B, T, ...] (the batch axis first)
    for a 2-D one; float32 (or the dtype that `run_with_capture` was asked for) on the device of the block."""

    layer: int
    x_in: torch.Tensor  # [(B,) T, d]     x^l, the residual the block reads
    normed: torch.Tensor  # [(B,) T, d]   what the attention reads: LN(x^l) (x^l itself without a norm)
    alpha: torch.Tensor | None  # [(B,) H, T, T] attention weights alpha[h, p, j]; None when recorded
    attn_raw: torch.Tensor  # [(B,) T, d] the attention module's output (before any post-norm)
    x_mid: torch.Tensor | None  # [(B,) T, d] x^{lA}, after the attention block; None for parallel blocks
    ffn_out: torch.Tensor  # [(B,) T, d]  the FFN update added to the residual
    x_out: torch.Tensor  # [(B,) T, d]    x^l, the residual after the block
    attention_call: AttentionCall | None = None  # what `attention_rows_batch` needs to compute weights again

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
    """An attention implementation that keeps each module's inputs (for `attention_rows_batch` later) and computes
    the output with sdpa, or with the family's eager function where sdpa cannot (soft-capping)."""
    store = _recorded.get()
    if store is not None:
        store[module] = RecordedAttention(_own(query), _own(key), _own(value), attention_mask, kwargs)
    if kwargs.get("softcap") is not None:
        out, _ = _eager_function(module)(module, query, key, value, attention_mask, **kwargs)
        return out, None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _own(t: torch.Tensor) -> torch.Tensor:
    """`t` detached, copied when it is a view into a larger tensor (a fused QKV projection), which it would keep."""
    t = t.detach()
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


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
    """Run with the recording implementation; yields {attention module: RecordedAttention}."""
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


class _BlockHooks:
    """The hooks of one forward pass: they gather each block's activations and hand a `BlockCapture` to `on_block`
    when the block's output comes by. `recorded` is the recording implementation's {module: RecordedAttention}."""

    def __init__(self, loaded: LoadedModel, shape: tuple[int, int], on_block: Callable[[BlockCapture], None],
                 keep_attention_call: bool, record: bool, dtype: torch.dtype | None):
        self.adapter, self.on_block = loaded.adapter, on_block
        self.n_batch, self.n_tok = shape
        self.keep_attention_call, self.record, self.dtype = keep_attention_call, record, dtype
        self.state: dict = {}
        self.recorded: dict = {}
        self.handles: list = []

    def grab(self, tensor) -> torch.Tensor:
        """A detached copy ([B, T, d]) in the capture dtype: modules may update their tensors in place later."""
        t = _first(tensor).detach()
        t = t.to(self.dtype or t.dtype, copy=True)
        return t.reshape(self.n_batch, self.n_tok, -1) if t.ndim == 2 else t  # OPT flattens to [B*T, d]

    def register(self) -> None:
        for layer in range(self.adapter.n_layers):
            mods = self.adapter.block_modules(layer)
            self.handles += [
                mods.block.register_forward_pre_hook(self.block_input, with_kwargs=True),
                mods.attention.register_forward_hook(self.attention_output),
                mods.attention.register_forward_pre_hook(self.attention_input, with_kwargs=True),
                mods.block.register_forward_hook(lambda _m, _a, out, layer=layer: self.block_output(layer, out)),
            ]
            if mods.input_norm is not None:
                self.handles.append(mods.input_norm.register_forward_hook(self.input_norm_output))
            if mods.mid_input is not None:
                self.handles.append(mods.mid_input.register_forward_pre_hook(self.mid_input, with_kwargs=True))
            if mods.ffn is not None:
                self.handles.append(mods.ffn.register_forward_hook(self.ffn_output))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def hidden_arg(self, args, kwargs) -> torch.Tensor:
        return self.grab(args[0] if args else kwargs["hidden_states"])

    def block_input(self, _m, args, kwargs):
        deadline.check()  # a request past its time limit stops here, between blocks
        self.state["x_in"] = self.hidden_arg(args, kwargs)

    def input_norm_output(self, _m, _args, out):
        self.state["normed"] = self.grab(out)

    def mid_input(self, _m, args, kwargs):
        self.state["x_mid"] = self.hidden_arg(args, kwargs)

    def ffn_output(self, _m, _args, out):
        self.state["ffn_out"] = self.grab(out)

    def attention_input(self, _m, args, kwargs):
        kwargs = self.adapter.attention_kwargs(kwargs)  # e.g. asking for the weights, a family's own mask
        if self.keep_attention_call:
            self.state["call"] = ModuleCall(args, kwargs)
        return args, kwargs

    def attention_output(self, _m, _args, out):
        weights = out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None
        if weights is None and not self.record:
            raise FlowroutesError(
                "the model's attention implementation does not return attention weights; "
                "load it with attn_implementation='eager'"
            )
        self.state["alpha"] = None if weights is None else weights.detach().to(self.dtype or weights.dtype)
        self.state["attn_raw"] = self.grab(out)

    def block_output(self, layer: int, out) -> None:
        x_out = self.grab(out)
        if not torch.isfinite(x_out).all():
            raise FlowroutesError(
                f"the model produced NaN or Inf activations in layer {layer} "
                "(float16 overflow?); load it in float32 or bfloat16"
            )
        state, self.state = self.state, {}
        call = state.pop("call", None)
        recorded = self.recorded.pop(self.adapter.attention_module(layer), None) if self.record else None
        if recorded is not None:
            call = recorded  # replaces the module call, which would keep the module's input alive
        x_mid = state.pop("x_mid", None)
        if "ffn_out" not in state:  # the FFN adds the residual itself (BLOOM): derive its update
            state["ffn_out"] = x_out.float() - x_mid.float()
        if "normed" not in state:  # the attention reads the residual itself (OLMo 2)
            state["normed"] = state["x_in"]
        cap = BlockCapture(layer=layer, x_out=x_out, x_mid=x_mid, attention_call=call, **state)
        self.on_block(cap)


def _logits(model, ids: torch.Tensor, keep: torch.Tensor | None, recording: Callable) -> torch.Tensor:
    """The forward pass; logits [B, T, V], or [B, K, V] at positions `keep` [B, K] (the LM head runs only there
    when the model can skip it), as float32."""
    slicing = keep is not None and "logits_to_keep" in inspect.signature(model.forward).parameters
    device = next(model.parameters()).device
    with torch.no_grad(), recording():
        out = model(input_ids=ids.to(device), use_cache=False, **({"logits_to_keep": keep} if slicing else {}))
    logits = out.logits.detach()
    if keep is not None and not slicing:  # a model that cannot skip the LM head: pick the positions afterwards
        logits = torch.take_along_dim(logits, keep[..., None], dim=1)
    return logits.float()


def run_with_capture(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    on_block: Callable[[BlockCapture], None],
    keep_attention_call: bool = False,
    record: bool = False,
    logit_positions: torch.Tensor | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor:
    """Run `input_ids` [B, T] (or [T]) through the model, calling `on_block(capture)` once per block, bottom to top.

    The capture's tensors have the batch axis of `input_ids` ([B, T, ...] or [T, ...]). Returns the logits
    [(B,) T, vocab] (float32). Raises FlowroutesError on NaN/Inf activations.
    keep_attention_call: each capture carries the attention module's `ModuleCall`, for `attention_rows_batch`.
    record (see `can_record`): the forward pass runs sdpa and keeps each attention's `RecordedAttention` instead of
        its weights (`BlockCapture.alpha` is None; `attention_rows_batch` computes the rows asked for).
    logit_positions: [B, K] positions ([K] for 1-D input_ids): the LM head runs there only; logits [(B,) K, vocab].
    dtype: what the captured tensors are converted to (None: the model's own, e.g. to keep a half-precision
        model's activations at half the memory; consumers upcast them where they compute).
    """
    batched = input_ids.ndim == 2
    ids = input_ids if batched else input_ids[None]  # [B, T]

    def unbatched(cap: BlockCapture) -> None:  # a 1-D prompt: the batch axis goes
        for name in ("x_in", "normed", "alpha", "attn_raw", "x_mid", "ffn_out", "x_out"):
            value = getattr(cap, name)
            setattr(cap, name, None if value is None else value[0])
        on_block(cap)

    hooks = _BlockHooks(loaded, tuple(ids.shape), on_block if batched else unbatched, keep_attention_call, record,
                        dtype)
    keep = None  # [B, K] positions where the LM head runs
    if logit_positions is not None:
        device = next(loaded.model.parameters()).device
        keep = logit_positions.reshape(ids.shape[0], logit_positions.shape[-1]).to(device)

    @contextlib.contextmanager
    def recording():
        if not record:
            with eager_attention(loaded.model):
                yield
            return
        with recording_attention(loaded.model) as store:
            hooks.recorded = store
            yield

    hooks.register()
    try:
        logits = _logits(loaded.model, ids, keep, recording)
    finally:
        hooks.remove()
    return logits if batched else logits[0]


@contextlib.contextmanager
def capturing_steps(loaded: LoadedModel, on_block: Callable[[BlockCapture], None]) -> Iterator[Callable]:
    """Generation with a KV cache, every step captured: yields step(input_ids [1, t], past) -> (the logits of the
    step's last position [vocab] float32, the cache to pass as `past` next time; None the first time). The hooks of
    `run_with_capture(record=True, dtype=None)` and the recording attention are set once for all the steps.

    Each step's captures have [1, t, ...] tensors; their `RecordedAttention` has the step's queries [1, H, t, dh] and
    the keys, values [1, KV, t', dh] and mask [1, 1, t, t'] (or None) of all t' positions the attention read, cached
    ones included. The LM head runs only at the step's last position where the model can skip it."""
    model = loaded.model
    hooks = _BlockHooks(loaded, (1, 1), on_block, True, True, None)
    device = next(model.parameters()).device
    params = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"  # transformers 5.24 renamed it
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def step(input_ids: torch.Tensor, past):
        hooks.n_batch, hooks.n_tok = input_ids.shape
        out = model(input_ids=input_ids.to(device), use_cache=True, **{cache_name: past}, **last_only)
        cache = getattr(out, "cache", None)
        return out.logits.detach()[0, -1].float(), cache if cache is not None else out.past_key_values

    hooks.register()
    try:
        with torch.no_grad(), recording_attention(model) as store:
            hooks.recorded = store
            yield step
    finally:
        hooks.remove()


def attention_rows_batch(loaded: LoadedModel, layer: int, call: AttentionCall, prompts: torch.Tensor,
                         rows: torch.Tensor) -> torch.Tensor:
    """The attention weights [B', H, R, T] (float32) of block `layer` for prompts `prompts` [B'] of a captured batch
    and, for each, the target positions rows[b'] [B', R]: with a `RecordedAttention`, the family's eager function on
    those query rows only; with a `ModuleCall`, the module run again on the whole batch and indexed."""
    module = loaded.adapter.attention_module(layer)
    n_sel = prompts.shape[0]
    if isinstance(call, RecordedAttention):
        dev = call.query.device
        sel, pick = prompts.to(dev), rows.to(dev)
        q = call.query[sel[:, None], :, pick].transpose(1, 2)  # [B', H, R, dh]
        rows_mask = None
        if call.mask is not None:
            mask = call.mask
            m = mask[sel.to(mask.device)] if mask.shape[0] > 1 else mask.expand(n_sel, *mask.shape[1:])
            rows_mask = m[torch.arange(n_sel, device=m.device)[:, None], :, pick.to(m.device)].transpose(1, 2)
        with torch.no_grad():
            no_values = call.values[..., :0][sel]  # [B', KV, T, 0]: the weights do not need the values
            _, weights = _eager_function(module)(module, q, call.key[sel], no_values, rows_mask, **call.kwargs)
        return weights.detach().float()
    if not isinstance(call, ModuleCall):
        raise RuntimeError(f"nothing was kept to compute the attention weights of layer {layer} again")
    with torch.no_grad(), eager_attention(loaded.model):
        out = module(*call.args, **call.kwargs)
    weights = out[1].detach()[prompts.to(out[1].device)]  # [B', H, T, T]
    picked = weights[torch.arange(n_sel, device=weights.device)[:, None], :, rows.to(weights.device)]  # [B', R, H, T]
    return picked.transpose(1, 2).float()
