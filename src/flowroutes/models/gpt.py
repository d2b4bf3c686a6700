"""Adapters for the GPT lineage: GPT-2, GPT-Neo, GPT-J, GPT-NeoX/Pythia, OPT, BLOOM and Falcon.

Each names its modules and slices its value/output weights from its own layout (fused or separate).
"""

from __future__ import annotations

import torch

from ..errors import FlowroutesError
from .base import Adapter, OVWeights, unsupported


def _fused_per_head(weight, bias, n_heads: int, head_dim: int, part: int, parts: int = 3):
    """Value rows of a fused [H * parts * dh, d] projection laid out head by head ([q|k|v] per head)."""
    d = weight.shape[1]
    w = weight.reshape(n_heads, parts, head_dim, d)[:, part]  # [H, dh, d]
    b = None if bias is None else bias.reshape(n_heads, parts, head_dim)[:, part]  # [H, dh]
    return w, b


class FusedPerHeadAdapter(Adapter):
    """Families whose attention has one fused `query_key_value` laid out [q|k|v] per head and a `dense` output."""

    output_name = "dense"

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self.attention_module(layer)
        w, b = _fused_per_head(attn.query_key_value.weight, attn.query_key_value.bias, self.n_heads,
                               self.head_dim, part=2)
        return OVWeights(value=w.permute(0, 2, 1), value_bias=b, output=attn.dense.weight.T.reshape(
            self.n_heads, self.head_dim, -1), output_bias=attn.dense.bias)


class _TransformerHAdapter(Adapter):
    """The GPT-2 module layout that GPT-Neo and GPT-J share: `transformer.h[l]` with ln_1, attn, ln_2, mlp."""

    layers_path = "transformer.h"
    final_norm_path = "transformer.ln_f"
    input_norm_name = "ln_1"
    attention_name = "attn"
    mid_input_name = "ln_2"


class GPT2Adapter(_TransformerHAdapter):
    """GPT-2: LayerNorm with beta, fused QKV Conv1D (x @ W + b), biases everywhere."""

    model_types = ("gpt2",)
    family = "GPT-2"
    down_projection_name = "mlp.c_proj"
    output_name = "c_proj"

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self.attention_module(layer)
        d, h, dh = self.d_model, self.n_heads, self.head_dim
        w_v = attn.c_attn.weight[:, 2 * d : 3 * d]  # [d, H*dh], Conv1D layout [q | k | v]
        b_v = attn.c_attn.bias[2 * d : 3 * d]
        return OVWeights(
            value=w_v.reshape(d, h, dh).permute(1, 0, 2),  # [H, d, dh]
            value_bias=b_v.reshape(h, dh),
            output=attn.c_proj.weight.reshape(h, dh, d),  # [H, dh, d]
            output_bias=attn.c_proj.bias,
        )


class GPTNeoAdapter(GPT2Adapter):
    """GPT-Neo: GPT-2's block layout with global and local (windowed) attention layers, unscaled scores and
    separate q/k/v projections without bias."""

    model_types = ("gpt_neo",)
    family = "GPT-Neo"
    value_name = "attention.v_proj"
    output_name = "attention.out_proj"
    ov_weights = Adapter.ov_weights  # separate projections, not GPT-2's fused Conv1D


class GPTJAdapter(_TransformerHAdapter):
    """GPT-J: parallel blocks reading one LayerNorm; no attention biases."""

    model_types = ("gptj",)
    family = "GPT-J"
    down_projection_name = "mlp.fc_out"
    mid_input_name = None
    output_name = "out_proj"


class GPTNeoXAdapter(FusedPerHeadAdapter):
    """GPT-NeoX / Pythia: fused query_key_value laid out [q|k|v] per head; parallel when
    `use_parallel_residual` (attention and FFN read their own norms of x^l)."""

    model_types = ("gpt_neox",)
    family = "GPT-NeoX, Pythia"
    final_norm_path = "gpt_neox.final_layer_norm"
    down_projection_name = "mlp.dense_4h_to_h"
    layers_path = "gpt_neox.layers"
    attention_name = "attention"

    def is_parallel(self, layer: int) -> bool:
        return bool(self.cfg("use_parallel_residual", default=True))


class OPTAdapter(Adapter):
    """OPT (pre-norm checkpoints): the FFN is fc1 -> act -> fc2 inside the decoder layer."""

    model_types = ("opt",)
    family = "OPT"
    final_norm_path = "model.decoder.final_layer_norm"
    down_projection_name = "fc2"
    layers_path = "model.decoder.layers"
    input_norm_name = "self_attn_layer_norm"
    mid_input_name = "final_layer_norm"
    ffn_name = "fc2"
    output_name = "out_proj"

    def check_supported(self) -> None:
        if not self.cfg("do_layer_norm_before", default=True):
            raise unsupported("OPT with do_layer_norm_before=False (post-norm, e.g. opt-350m)")

    @property
    def n_heads(self) -> int:
        return int(self.config.num_attention_heads)


class BloomAdapter(FusedPerHeadAdapter):
    """BLOOM: ALiBi, fused query_key_value [q|k|v] per head; its attention and MLP modules add the
    residual themselves, so the FFN update is derived as x^{l+1} - x^{lA}."""

    model_types = ("bloom",)
    family = "BLOOM"
    final_norm_path = "transformer.ln_f"
    down_projection_name = "mlp.dense_4h_to_h"
    layers_path = "transformer.h"
    attention_name = "self_attention"
    ffn_name = None

    def check_supported(self) -> None:
        if self.cfg("apply_residual_connection_post_layernorm", default=False):
            raise unsupported("BLOOM with apply_residual_connection_post_layernorm=True")

    @property
    def max_context(self) -> int:
        return int(self.cfg("seq_length", default=2048))


class FalconAdapter(Adapter):
    """Falcon: fused query_key_value in three layouts (multi-head, multi-query, grouped "new decoder
    architecture"); parallel blocks unless `parallel_attn` is off; rotary or ALiBi."""

    model_types = ("falcon",)
    family = "Falcon"
    output_name = "dense"
    final_norm_path = "transformer.ln_f"
    down_projection_name = "mlp.dense_4h_to_h"
    layers_path = "transformer.h"
    attention_name = "self_attention"

    def attention_kwargs(self, kwargs: dict) -> dict:
        """Falcon picks its eager attention (the one that returns weights) only when asked, and is then handed the
        sdpa path's boolean mask: made additive, as eager attention reads it."""
        kwargs = super().attention_kwargs(kwargs)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            additive = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
            kwargs["attention_mask"] = additive.masked_fill(~mask, torch.finfo(torch.float32).min)
        return kwargs

    def check_supported(self) -> None:
        if self.cfg("alibi", default=False) and getattr(self.config, "_attn_implementation", None) != "eager":
            raise FlowroutesError(
                "Falcon with ALiBi computes different attention under sdpa and eager in transformers; "
                "load it with attn_implementation='eager' to trace the computation you run"
            )

    @property
    def _new_arch(self) -> bool:
        return bool(self.cfg("new_decoder_architecture", default=False))

    @property
    def input_norm_name(self):  # type: ignore[override]
        two_norms = self._new_arch and self.cfg("num_ln_in_parallel_attn", default=2) == 2
        return "ln_attn" if two_norms else "input_layernorm"

    def is_parallel(self, layer: int) -> bool:
        return self._new_arch or bool(self.cfg("parallel_attn", default=True))

    @property
    def n_kv_heads(self) -> int:
        if self._new_arch:
            return int(self.cfg("num_kv_heads", default=self.n_heads))
        return 1 if self.cfg("multi_query", default=True) else self.n_heads

    def ov_weights(self, layer: int) -> OVWeights:
        attn = self.attention_module(layer)
        h, kv, dh = self.n_heads, self.n_kv_heads, self.head_dim
        weight, bias = attn.query_key_value.weight, attn.query_key_value.bias
        d = weight.shape[1]
        if self._new_arch:  # per KV group: [q_1 .. q_{H/KV} | k | v]
            w = weight.reshape(kv, h // kv + 2, dh, d)[:, -1]
            b = None if bias is None else bias.reshape(kv, h // kv + 2, dh)[:, -1]
        elif kv == 1:  # [q_1 .. q_H | k | v]
            w = weight.reshape(h + 2, dh, d)[-1:]
            b = None if bias is None else bias.reshape(h + 2, dh)[-1:]
        else:  # per head [q | k | v]
            w, b = _fused_per_head(weight, bias, h, dh, part=2)
        return OVWeights(value=w.permute(0, 2, 1), value_bias=b,
                         output=attn.dense.weight.T.reshape(h, dh, d), output_bias=attn.dense.bias)
