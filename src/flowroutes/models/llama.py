"""Adapters for decoders with separate q/k/v/o projections under `model.layers[l].self_attn`.

Llama 1/2/3 (and SmolLM2), Mistral, Mixtral, Qwen2, Qwen3, Gemma, OLMo, StableLM, Phi, Phi-3, and the
post-norm variants Gemma 2, Gemma 3 and OLMo 2. Only names modules and slices weights.
"""

from __future__ import annotations

import torch

from .base import Adapter, OVWeights, rms_scale


class LlamaAdapter(Adapter):
    """Pre-norm, sequential; RMSNorm (or LayerNorm); grouped-query attention. Mixtral's sparse MoE block is
    one FFN; Qwen3's q/k norms and Gemma's (1 + w) norm act before what the decomposition reads."""

    model_types = ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo")
    family = "Llama, Mistral, Qwen2, Qwen3, Gemma, OLMo"

    @property
    def centred_norms(self) -> bool:
        """RMSNorms, except OLMo's LayerNorm without parameters."""
        return self.config.model_type == "olmo"

    @property
    def norm_offset(self) -> float:
        """Gemma's RMSNorm scales by (1 + w)."""
        return 1.0 if self.config.model_type == "gemma" else 0.0


class MixtralAdapter(LlamaAdapter):
    """Mixtral: the sparse mixture of experts is one FFN block (no single down projection)."""

    model_types = ("mixtral",)
    family = "Mixtral"
    down_projection_name = None


class StableLmAdapter(LlamaAdapter):
    """StableLM: LayerNorm with bias; `use_parallel_residual` makes blocks parallel (one shared norm)."""

    model_types = ("stablelm",)
    family = "StableLM"
    centred_norms = True

    def is_parallel(self, layer: int) -> bool:
        return bool(self.cfg("use_parallel_residual", default=False))


class PhiAdapter(LlamaAdapter):
    """Phi-1/1.5/2: parallel blocks, one LayerNorm, biases, output projection named `dense`."""

    model_types = ("phi",)
    family = "Phi"
    centred_norms = True
    mid_input_name = None
    output_name = "dense"
    final_norm_path = "model.final_layernorm"
    down_projection_name = "mlp.fc2"


class Phi3Adapter(LlamaAdapter):
    """Phi-3: fused qkv_proj rows [q (H*dh) | k (KV*dh) | v (KV*dh)]."""

    model_types = ("phi3",)
    family = "Phi-3"

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self.attention_module(layer)
        q_rows = self.n_heads * self.head_dim
        kv_rows = self.n_kv_heads * self.head_dim
        w = attn.qkv_proj.weight[q_rows + kv_rows : q_rows + 2 * kv_rows]
        b = None if attn.qkv_proj.bias is None else attn.qkv_proj.bias[q_rows + kv_rows : q_rows + 2 * kv_rows]
        return self.ov_from_rows(w, b, attn.o_proj.weight, attn.o_proj.bias)


class Gemma2Adapter(LlamaAdapter):
    """Gemma 2 and Gemma 3 (text): RMSNorms (1 + w) before and after both the attention and the FFN.

    x^{lA} = x^l + N_post(Attn(N_in(x^l))): the post-attention norm is linearised at its own scale,
    a per-target diagonal, so each sub-edge is alpha f_h(x_j) scaled coordinate-wise (appendix B.1)."""

    model_types = ("gemma2", "gemma3_text")
    family = "Gemma 2, Gemma 3"
    mid_input_name = "pre_feedforward_layernorm"
    ffn_name = "post_feedforward_layernorm"  # its output is the FFN update
    norm_offset = 1.0

    def attention_post_scale(self, layer: int, raw: torch.Tensor) -> torch.Tensor:
        return rms_scale(self.layers[layer].post_attention_layernorm, raw, self.norm_offset)


class Olmo2Adapter(Gemma2Adapter):
    """OLMo 2: no norm before the blocks, RMSNorm (w) after them; the attention reads x^l itself."""

    model_types = ("olmo2",)
    family = "OLMo 2"
    input_norm_name = None
    mid_input_name = "mlp"  # the FFN reads x^{lA} directly
    norm_offset = 0.0
