"""Adapter for GPT-2 (pre-norm LayerNorm with beta, fused QKV Conv1D, biases everywhere).

Only says where things are; the maths lives in `flowroutes.importance`.
"""

from __future__ import annotations

import torch

from .base import Adapter, BlockModules, OVWeights


class GPT2Adapter(Adapter):
    model_types = ("gpt2",)
    family = "GPT-2"

    @property
    def _layers(self):
        return self.model.transformer.h

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def n_heads(self) -> int:
        return self.config.n_head

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.n_heads

    @property
    def max_context(self) -> int:
        return int(self.config.n_positions)

    def block_modules(self, layer: int) -> BlockModules:
        block = self._layers[layer]
        return BlockModules(
            block=block, input_norm=block.ln_1, attention=block.attn, mid_norm=block.ln_2, ffn=block.mlp
        )

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self._layers[layer].attn
        d, h, dh = self.config.n_embd, self.n_heads, self.head_dim
        # Conv1D computes x @ W + b with W: [d, 3d] laid out as [q | k | v]
        w_v = attn.c_attn.weight[:, 2 * d : 3 * d]  # [d, H*dh]
        b_v = attn.c_attn.bias[2 * d : 3 * d]  # [H*dh]
        value = w_v.reshape(d, h, dh).permute(1, 0, 2)  # [H, d, dh]
        output = attn.c_proj.weight.reshape(h, dh, d)  # [H, dh, d]
        return OVWeights(
            value=value, value_bias=b_v.reshape(h, dh), output=output, output_bias=attn.c_proj.bias
        )

    def input_norm_bias(self, layer: int) -> torch.Tensor | None:
        return self._layers[layer].ln_1.bias
