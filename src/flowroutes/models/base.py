"""The adapter interface: where a model family keeps its norms, attention, value/output weights and FFN.

Everything downstream reaches into a model only through an adapter; a family is a small subclass that
names its modules and slices its value/output weights. Adapters never compute importances or run models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import FlowroutesError


@dataclass(frozen=True)
class BlockModules:
    """The modules of one decoder block whose inputs and outputs the capture hooks read.

    block:       input = x^l, output = x^{l+1}
    input_norm:  output = what the attention reads, LN(x^l); None when it reads x^l itself (OLMo 2)
    attention:   output[0] = its output before any post-norm, output[1] = weights [B, H, T, T]
    mid_input:   a module whose input is x^{lA} (sequential blocks); None for parallel blocks
    ffn:         output = the FFN update added to the residual; None when it must be derived as x^{l+1} - x^{lA}
    """

    block: nn.Module
    input_norm: nn.Module | None
    attention: nn.Module
    mid_input: nn.Module | None
    ffn: nn.Module | None


@dataclass(frozen=True)
class OVWeights:
    """Value and output weights of one block, split per head, as `x @ W` matrices.

    value:        [KV, d_model, d_head]   v_j = LN(x_j) @ value[kv]
    value_bias:   [KV, d_head] or None
    output:       [H, d_head, d_model]     head output = sum_j alpha_j v_j @ output[h]
    output_bias:  [d_model] or None
    """

    value: torch.Tensor
    value_bias: torch.Tensor | None
    output: torch.Tensor
    output_bias: torch.Tensor | None


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class Adapter:
    """Base class of the per-family adapters.

    The defaults describe a pre-norm decoder with separate q/k/v/o linear projections under
    `model.layers[l].self_attn` (Llama and its many relatives); families override names or methods.
    """

    #: `config.model_type` values this adapter handles
    model_types: tuple[str, ...] = ()
    #: human names of the families, for messages and docs
    family: str = ""

    layers_path = "model.layers"
    input_norm_name: str | None = "input_layernorm"
    attention_name = "self_attn"
    mid_input_name: str | None = "post_attention_layernorm"
    ffn_name: str | None = "mlp"
    value_name = "v_proj"  # inside the attention module
    output_name = "o_proj"  # inside the attention module: its input is the heads' outputs side by side
    final_norm_path = "model.norm"  # between the last block and the unembedding
    down_projection_name: str | None = "mlp.down_proj"  # inside the block: its input is the FFN's neurons
    #: the model's norms centre their input (LayerNorm: x - mean) or not (RMSNorm)
    centred_norms = True
    #: the model's norms scale by (w + norm_offset): Gemma's scale by (1 + w)
    norm_offset = 0.0

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        self.check_supported()

    def check_supported(self) -> None:
        """Raise FlowroutesError for a configuration of the family that cannot be decomposed."""

    def cfg(self, *names: str, default=None):
        for name in names:
            value = getattr(self.config, name, None)
            if value is not None:
                return value
        return default

    # --- shape facts -------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return _get(self.model, self.layers_path)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg("num_attention_heads", "n_head", "num_heads"))

    @property
    def n_kv_heads(self) -> int:
        return int(self.cfg("num_key_value_heads", default=self.n_heads))

    @property
    def d_model(self) -> int:
        return int(self.cfg("hidden_size", "n_embd", "d_model"))

    @property
    def head_dim(self) -> int:
        return int(self.cfg("head_dim", default=self.d_model // self.n_heads))

    @property
    def max_context(self) -> int:
        return int(self.cfg("max_position_embeddings", "n_positions", "seq_length", default=2048))

    def kv_head(self, head: int) -> int:
        """The value head that query head `head` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    @property
    def kv_heads(self) -> list[int]:
        """[H] the value head of every query head (what importance.head_values takes)."""
        return [self.kv_head(h) for h in range(self.n_heads)]

    def is_parallel(self, layer: int) -> bool:
        """Whether attention and FFN both read x^l (no x^{lA} node)."""
        return self.mid_input_name is None

    # --- modules and weights -----------------------------------------------------------------
    def block_modules(self, layer: int) -> BlockModules:
        block = self.layers[layer]

        def sub(name):
            return None if name is None else _get(block, name)

        return BlockModules(
            block=block,
            input_norm=sub(self.input_norm_name),
            attention=sub(self.attention_name),
            mid_input=None if self.is_parallel(layer) else sub(self.mid_input_name),
            ffn=sub(self.ffn_name),
        )

    def final_norm(self) -> nn.Module:
        """The norm between the last block and the unembedding (for logit-lens views)."""
        return _get(self.model, self.final_norm_path)

    def unembedding(self) -> torch.Tensor:
        """W_U as [V, d] (the output embedding, tied or not)."""
        return self.model.get_output_embeddings().weight

    def unembedding_module(self) -> nn.Module:
        """The output embedding module itself (logits = module(final_norm(x))), e.g. to hook its input."""
        return self.model.get_output_embeddings()

    def unembedding_bias(self) -> torch.Tensor | None:
        """The output embedding's bias [V] (GPT-J, Phi), or None."""
        return getattr(self.model.get_output_embeddings(), "bias", None)

    def down_projection(self, layer: int) -> tuple[nn.Module, torch.Tensor]:
        """(module whose input is the FFN neuron activations [T, F], neuron output rows W_out [F, d]).
        Raises FlowroutesError for FFNs without one projection (mixtures of experts)."""
        if self.down_projection_name is None:
            raise FlowroutesError(f"{self.family} has no single FFN down projection (mixture of experts?)")
        module = _get(self.layers[layer], self.down_projection_name)
        return module, (module.weight.T if isinstance(module, nn.Linear) else module.weight)

    def output_projection(self, layer: int) -> nn.Module:
        """The module of block `layer` whose input is the concatenated per-head outputs [B, T, H*dh]."""
        return _get(self.attention_module(layer), self.output_name)

    def attention_module(self, layer: int) -> nn.Module:
        return _get(self.layers[layer], self.attention_name)

    def ov_weights(self, layer: int) -> OVWeights:
        """Separate value and output projections (nn.Linear: y = x W^T + b)."""
        attn = self.attention_module(layer)
        v_proj, o_proj = _get(attn, self.value_name), _get(attn, self.output_name)
        return self.ov_from_rows(v_proj.weight, v_proj.bias, o_proj.weight, o_proj.bias)

    def ov_from_rows(self, w_v, b_v, w_o, b_o) -> OVWeights:
        """From nn.Linear weights: w_v [KV*dh, d] (value heads in row blocks), w_o [d, H*dh]."""
        kv, h, dh, d = self.n_kv_heads, self.n_heads, self.head_dim, w_o.shape[0]
        return OVWeights(
            value=w_v.T.reshape(d, kv, dh).permute(1, 0, 2),  # [KV, d, dh]
            value_bias=None if b_v is None else b_v.reshape(kv, dh),
            output=w_o.T.reshape(h, dh, d),  # [H, dh, d]
            output_bias=b_o,
        )

    def input_norm_bias(self, layer: int) -> torch.Tensor | None:
        """The additive term (beta) of the norm the attention reads through, or None (RMSNorm, no norm)."""
        if self.input_norm_name is None:
            return None
        return getattr(_get(self.layers[layer], self.input_norm_name), "bias", None)

    def attention_kwargs(self, kwargs: dict) -> dict:
        """The keyword arguments of an attention module's call as the capture makes it: modules that return their
        weights only when asked (GPT-Neo, BLOOM, Falcon) are asked."""
        if "output_attentions" in kwargs:
            return {**kwargs, "output_attentions": True}
        return kwargs

    def attention_post_scale(self, layer: int, raw: torch.Tensor) -> torch.Tensor | None:
        """For families that normalise the attention output before adding it (Gemma 2/3, OLMo 2): the
        norm linearised at its own scale, as a per-target diagonal [T, d] (appendix B.1). None otherwise."""
        return None


def rms_scale(norm: nn.Module, raw: torch.Tensor, weight_offset: float = 0.0) -> torch.Tensor:
    """The per-row diagonal of an RMSNorm applied to `raw` [T, d]: (w + offset) / sqrt(mean(raw^2) + eps)."""
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = norm.variance_epsilon
    x = raw if raw.dtype == torch.float64 else raw.float()
    inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # [T, 1]
    return inv * (norm.weight.to(x.dtype) + weight_offset)[None, :]


def unsupported(what: str) -> FlowroutesError:
    return FlowroutesError(f"{what} cannot be decomposed into information flow routes")
