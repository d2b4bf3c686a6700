"""Tiny random-init configurations of every supported family (biases and norm weights where it has them)."""

from __future__ import annotations

import transformers as tf

from tests.helpers.models import VOCAB, _randomise

D, L, H, FF = 48, 2, 4, 96
_llama_like = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=FF, num_hidden_layers=L, num_attention_heads=H,
                   max_position_embeddings=64, tie_word_embeddings=False)

#: family -> (transformers config class, kwargs, test name shown in the README table)
FAMILIES = {
    "gpt2": (tf.GPT2Config, dict(vocab_size=VOCAB, n_positions=64, n_embd=D, n_layer=L, n_head=H)),
    "gpt_neo": (tf.GPTNeoConfig, dict(vocab_size=VOCAB, hidden_size=D, num_layers=L, num_heads=H,
                                      attention_types=[[["global", "local"], 1]], window_size=3,
                                      max_position_embeddings=64, intermediate_size=FF)),
    "gptj": (tf.GPTJConfig, dict(vocab_size=VOCAB, n_embd=D, n_layer=L, n_head=H, rotary_dim=6, n_positions=64)),
    "gpt_neox": (tf.GPTNeoXConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                                        intermediate_size=FF, max_position_embeddings=64, rotary_pct=0.5)),
    "gpt_neox_sequential": (tf.GPTNeoXConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L,
                                                   num_attention_heads=H, intermediate_size=FF,
                                                   max_position_embeddings=64, use_parallel_residual=False)),
    "opt": (tf.OPTConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                               ffn_dim=FF, max_position_embeddings=64, word_embed_proj_dim=D)),
    "bloom": (tf.BloomConfig, dict(vocab_size=VOCAB, hidden_size=D, n_layer=L, n_head=H)),
    "falcon": (tf.FalconConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                                     bias=True, max_position_embeddings=64)),
    "falcon_new_arch": (tf.FalconConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L,
                                              num_attention_heads=H, num_kv_heads=2, new_decoder_architecture=True,
                                              max_position_embeddings=64)),
    "falcon_alibi_sequential": (tf.FalconConfig, dict(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=L,
                                                      num_attention_heads=H, alibi=True, parallel_attn=False,
                                                      multi_query=False, bias=True, max_position_embeddings=64)),
    "llama": (tf.LlamaConfig, dict(_llama_like, num_key_value_heads=2, attention_bias=True, mlp_bias=True)),
    "mistral": (tf.MistralConfig, dict(_llama_like, num_key_value_heads=2, sliding_window=3)),
    "mixtral": (tf.MixtralConfig, dict(_llama_like, num_key_value_heads=2, num_local_experts=4,
                                       num_experts_per_tok=2)),
    "qwen2": (tf.Qwen2Config, dict(_llama_like, num_key_value_heads=2)),
    "qwen3": (tf.Qwen3Config, dict(_llama_like, num_key_value_heads=2, head_dim=12)),
    "gemma": (tf.GemmaConfig, dict(_llama_like, num_key_value_heads=2, head_dim=12)),
    "gemma2": (tf.Gemma2Config, dict(_llama_like, num_key_value_heads=2, head_dim=12, sliding_window=3,
                                     attn_logit_softcapping=50.0, final_logit_softcapping=30.0)),
    "gemma3_text": (tf.Gemma3TextConfig, dict(_llama_like, num_key_value_heads=2, head_dim=12, sliding_window=3)),
    "phi": (tf.PhiConfig, dict(_llama_like, partial_rotary_factor=0.5, qk_layernorm=True)),
    "phi3": (tf.Phi3Config, dict(_llama_like, num_key_value_heads=2, pad_token_id=0)),
    "olmo": (tf.OlmoConfig, dict(_llama_like, clip_qkv=8.0)),
    "olmo2": (tf.Olmo2Config, dict(_llama_like, num_key_value_heads=2)),
    "stablelm": (tf.StableLmConfig, dict(_llama_like, num_key_value_heads=2, partial_rotary_factor=0.5,
                                         use_qkv_bias=True)),
    "stablelm_parallel": (tf.StableLmConfig, dict(_llama_like, num_key_value_heads=2, partial_rotary_factor=0.5,
                                                  use_parallel_residual=True)),
}


def tiny_family(name: str, seed: int = 0):
    import torch

    cls, kwargs = FAMILIES[name]
    torch.manual_seed(seed)
    # transformers' Falcon computes ALiBi differently under sdpa and eager: such models are traced in eager
    extra = {"attn_implementation": "eager"} if name.startswith("falcon_alibi") else {}
    model = tf.AutoModelForCausalLM.from_config(cls(**kwargs), **extra)
    return _randomise(model, seed)
