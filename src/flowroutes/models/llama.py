"""Adapter for the Llama family: Llama 1/2/3, SmolLM2, Mistral, Qwen2 (pre-norm RMSNorm, GQA).

Only says where things are; the maths lives in `flowroutes.importance`.
"""

from __future__ import annotations

import torch

from .base import Adapter, BlockModules, OVWeights


class LlamaAdapter(Adapter):
    model_types = ("llama", "mistral", "qwen2")
    family = "Llama (Llama, SmolLM2, Mistral, Qwen2)"

    @property
    def _layers(self):
        return self.model.model.layers

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.n_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads

    @property
    def max_context(self) -> int:
        return int(self.config.max_position_embeddings)

    def block_modules(self, layer: int) -> BlockModules:
        block = self._layers[layer]
        return BlockModules(
            block=block,
            input_norm=block.input_layernorm,
            attention=block.self_attn,
            mid_norm=block.post_attention_layernorm,
            ffn=block.mlp,
        )

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self._layers[layer].self_attn
        dh, kv, h = self.head_dim, self.n_kv_heads, self.n_heads
        w_v = attn.v_proj.weight  # [KV*dh, d]  (nn.Linear: y = x W^T + b)
        w_o = attn.o_proj.weight  # [d, H*dh]
        d = w_o.shape[0]
        value = w_v.T.reshape(d, kv, dh).permute(1, 0, 2)  # [KV, d, dh]
        output = w_o.T.reshape(h, dh, d)  # [H, dh, d]
        b_v = attn.v_proj.bias
        return OVWeights(
            value=value,
            value_bias=None if b_v is None else b_v.reshape(kv, dh),
            output=output,
            output_bias=attn.o_proj.bias,
        )

    def input_norm_bias(self, layer: int) -> torch.Tensor | None:
        return None  # RMSNorm has no beta
