"""The adapter interface: where a model family keeps its norms, attention, value/output weights and FFN.

Everything downstream reaches into a model only through an adapter; one small subclass per family.
Adapters never compute importances and never run the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BlockModules:
    """The modules of one decoder block whose inputs and outputs the capture hooks read."""

    block: nn.Module  # output = x^l (the residual after the block)
    input_norm: nn.Module  # input = x^{l-1}, output = LN(x^{l-1}) read by the attention
    attention: nn.Module  # output[0] = attention block output, output[1] = weights [B, H, T, T]
    mid_norm: nn.Module  # input = x^{lA} (the residual after the attention block)
    ffn: nn.Module  # output = FFN(...) added to x^{lA}


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


class Adapter:
    """Base class of the per-family adapters. Subclasses fill in the abstract methods."""

    #: `config.model_type` values this adapter handles
    model_types: tuple[str, ...] = ()
    #: human name of the family, for messages and docs
    family: str = ""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # --- shape facts -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        raise NotImplementedError

    @property
    def n_heads(self) -> int:
        raise NotImplementedError

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads

    @property
    def max_context(self) -> int:
        raise NotImplementedError

    def kv_head(self, head: int) -> int:
        """The value head that query head `head` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    # --- modules and weights -----------------------------------------------------------------
    def block_modules(self, layer: int) -> BlockModules:
        raise NotImplementedError

    def ov_weights(self, layer: int) -> OVWeights:
        raise NotImplementedError

    def input_norm_bias(self, layer: int) -> torch.Tensor | None:
        """The additive term (beta) of the norm the attention reads through, or None (RMSNorm)."""
        raise NotImplementedError
