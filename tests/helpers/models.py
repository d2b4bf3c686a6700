"""Tiny random-init models built from transformers config classes, with a word-level tokenizer.

Biases and norm weights are randomised so that every constant term of the decomposition is non-zero.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 97


def word_tokenizer(vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """Words 'w0'..'w{n-2}' and '[UNK]'; any other word maps to [UNK]."""
    vocab = {f"w{i}": i for i in range(vocab_size - 1)}
    vocab["[UNK]"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and ("norm" in name or "ln" in name) and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=gen))
            elif param.ndim == 1:  # biases, norm betas
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.15 * torch.randn(param.shape, generator=gen))
    return model.eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=3, n_head=4, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return _randomise(GPT2LMHeadModel(cfg), seed)


def tiny_llama(seed: int = 0, *, kv_heads: int = 2, bias: bool = True, vocab_size: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                      attention_bias=bias, mlp_bias=bias, tie_word_embeddings=False)
    return _randomise(LlamaForCausalLM(cfg), seed)


TINY_MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}
