"""TransformerLens models as flowroutes sources: a 4.x `TransformerBridge` or a 2.x/3.x `HookedTransformer`.

Both become a plain transformers model that computes the same function with the same residual stream, so the
existing adapters trace it exactly:

- a **TransformerBridge** wraps a transformers model and replaces its submodules with bridge components. Its
  weights are read back (the wrapped parameters, `._original_component` removed from their names) into a fresh
  model of the wrapped class and config (the tensors are shared). The fresh model must predict what the bridge
  predicts, which is checked on a probe input: a bridge in compatibility mode whose processed weights live in
  the wrapped parameters (Llama-like models) passes and is traced in TransformerLens' processed coordinates; one
  whose processed weights live elsewhere (GPT-2's split q/k/v) is refused with what to do.
- a **HookedTransformer** holds its own weights (`W_Q [H, d, dh]`, `W_O [H, dh, d]`, ...). They are written into the
  matching transformers architecture: GPT-2 (`GPT2LMHeadModel`) for LayerNorm models with learned positions and a
  plain MLP, Llama (`LlamaForCausalLM`) for RMSNorm models with rotary positions and a gated MLP. Folded norms
  (`LNPre`, `RMSPre`) become norms with unit weights and zero biases. Anything these two cannot express exactly
  (local attention, soft-capping, partial or adjacent-pair rotary, NTK rope scaling, a gated MLP's bias after the
  product, a scaled attention other than 1/sqrt(d_head), ...) is refused with the reason.

transformer_lens is never imported here: objects are recognised by the module and name of their classes.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch

from ..errors import FlowroutesError

_WRAPPED = "._original_component"


def transformer_lens_kind(obj: Any) -> str | None:
    """'bridge' for a TransformerBridge, 'hooked' for a HookedTransformer, None for anything else."""
    for cls in type(obj).__mro__:
        if not str(getattr(cls, "__module__", "")).startswith("transformer_lens"):
            continue
        if cls.__name__ == "TransformerBridge":
            return "bridge"
        if cls.__name__ == "HookedTransformer":
            return "hooked"
    return None


def from_transformer_lens(obj: Any, tokenizer: Any = None) -> tuple[torch.nn.Module, Any, str]:
    """(transformers model, tokenizer, name) computing what the TransformerLens model `obj` computes."""
    kind = transformer_lens_kind(obj)
    if kind == "bridge":
        model, name = bridge_to_hf(obj), str(getattr(obj.cfg, "model_name", "") or "transformer-bridge")
    elif kind == "hooked":
        model, name = hooked_to_hf(obj), str(getattr(obj.cfg, "model_name", "") or "hooked-transformer")
    else:
        raise FlowroutesError(f"{type(obj).__name__} is not a TransformerBridge or HookedTransformer")
    tok = tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
    if tok is None:
        raise FlowroutesError(f"this {type(obj).__name__} has no tokenizer: pass load_model(model, tokenizer=tok)")
    return model, tok, name


def _no_init():
    try:
        from transformers.modeling_utils import no_init_weights
    except ImportError:  # pragma: no cover - every supported transformers has it
        return contextlib.nullcontext()
    return no_init_weights()


def _fresh(cls, config) -> torch.nn.Module:
    with _no_init():
        model = cls(config)
    return model


def _check_logits(model: torch.nn.Module, reference, vocab: int, what: str, hint: str) -> None:
    """Run both on a few token ids; refuse when the converted model does not predict the same distribution."""
    ids = (torch.arange(8) * 7919 + 3) % vocab
    device = next(model.parameters()).device
    with torch.no_grad():
        # log-probabilities: centring the unembedding (TransformerLens' default) shifts each position's logits
        want = torch.log_softmax(reference(ids[None].to(device)).float(), -1)
        got = torch.log_softmax(model(input_ids=ids[None].to(device)).logits.float(), -1)
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if not err < 1e-3:
        raise FlowroutesError(
            f"the transformers copy of this {what} does not predict what it predicts (relative error {err:.1e}); "
            + hint
        )


# --- TransformerBridge (TransformerLens 4.x) ------------------------------------------------------------------
def bridge_to_hf(bridge: Any) -> torch.nn.Module:
    """A fresh transformers model of the bridged class and config holding the bridge's current weights (the
    tensors are shared, not copied)."""
    original = bridge.__dict__.get("original_model", None) or getattr(bridge, "original_model", None)
    if not isinstance(original, torch.nn.Module) or not hasattr(original, "config"):
        raise FlowroutesError("this TransformerBridge does not wrap a transformers model (original_model)")
    if getattr(original, "hf_device_map", None):
        raise FlowroutesError("a TransformerBridge dispatched over several devices cannot be traced; load it on one")
    weights: dict[str, torch.Tensor] = {}
    for name, tensor in original.state_dict().items():
        weights.setdefault(name.replace(_WRAPPED, ""), tensor)
    config = copy.deepcopy(original.config)
    model = _fresh(type(original), config)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in weights]
    if missing:
        raise FlowroutesError(f"cannot find the bridge's weights for {missing[:3]} (an unsupported bridge layout)")
    model.load_state_dict({k: weights[k] for k in wanted}, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    model.to(next(original.parameters()).device)
    model.eval()

    def bridge_logits(ids):
        return bridge(ids, return_type="logits")

    hint = ("its processed weights (enable_compatibility_mode) live outside the wrapped model's parameters: "
            "pass the bridge before enable_compatibility_mode(), or with no_processing=True")
    _check_logits(model, bridge_logits, int(model.get_output_embeddings().weight.shape[0]), "TransformerBridge",
                  hint)
    return model


# --- HookedTransformer (TransformerLens 2.x / 3.x) ------------------------------------------------------------
def _cfg(ht: Any, name: str, default=None):
    value = getattr(ht.cfg, name, default)
    return default if value is None else value


def _refuse_unless(ok: bool, why: str) -> None:
    if not ok:
        raise FlowroutesError(f"this HookedTransformer cannot be traced: {why}")


def _nonzero(t: torch.Tensor | None) -> bool:
    return t is not None and bool((t != 0).any())


def _attn_weights(attn) -> tuple[torch.Tensor, ...]:
    """W_Q [H,d,dh], W_K [KV,d,dh], W_V [KV,d,dh], W_O [H,dh,d], b_Q [H,dh], b_K [KV,dh], b_V [KV,dh], b_O [d]."""
    grouped = hasattr(attn, "_W_K")
    w_k = attn._W_K if grouped else attn.W_K
    w_v = attn._W_V if grouped else attn.W_V
    b_k = attn._b_K if grouped else attn.b_K
    b_v = attn._b_V if grouped else attn.b_V
    return attn.W_Q, w_k, w_v, attn.W_O, attn.b_Q, b_k, b_v, attn.b_O


def _rows(w: torch.Tensor) -> torch.Tensor:
    """[heads, d, dh] (x @ W per head) -> nn.Linear weight [heads*dh, d]."""
    return w.permute(0, 2, 1).reshape(-1, w.shape[1])


def _norm_params(norm, d: int, ref: torch.Tensor, has_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a TransformerLens norm; folded norms (LNPre, RMSPre) have unit weight and zero bias."""
    w = getattr(norm, "w", None)
    b = getattr(norm, "b", None)
    weight = w.detach() if w is not None else torch.ones(d, dtype=ref.dtype, device=ref.device)
    if not has_bias:
        _refuse_unless(b is None or not _nonzero(b), "an RMSNorm with a bias")
        return weight, None
    bias = b.detach() if b is not None else torch.zeros(d, dtype=ref.dtype, device=ref.device)
    return weight, bias


def _common_checks(ht: Any) -> None:
    _refuse_unless(not _cfg(ht, "attn_only", False), "it has no MLPs (attn_only)")
    _refuse_unless(not _cfg(ht, "use_local_attn", False), "it uses local attention")
    _refuse_unless(not _cfg(ht, "parallel_attn_mlp", False), "parallel attention and MLP are not converted yet")
    _refuse_unless(not _cfg(ht, "attn_scores_soft_cap", -1.0) > 0, "attention soft-capping")
    _refuse_unless(not _cfg(ht, "output_logits_soft_cap", -1.0) > 0, "output soft-capping")
    _refuse_unless(not _cfg(ht, "use_qk_norm", False), "query/key norms")
    _refuse_unless(_cfg(ht, "use_attn_scale", True), "unscaled attention scores")
    d_head = int(ht.cfg.d_head)
    _refuse_unless(abs(float(_cfg(ht, "attn_scale", d_head**0.5)) - d_head**0.5) < 1e-6 * d_head,
                   "an attention scale other than sqrt(d_head)")
    _refuse_unless(_cfg(ht, "d_mlp", None) is not None, "it has no MLP width (d_mlp)")


def hooked_to_hf(ht: Any) -> torch.nn.Module:
    """The transformers model (GPT-2 or Llama architecture) with the HookedTransformer's weights."""
    _common_checks(ht)
    norm = str(_cfg(ht, "normalization_type", "None"))
    pos = str(_cfg(ht, "positional_embedding_type", "standard"))
    gated = bool(_cfg(ht, "gated_mlp", False))
    with torch.no_grad():
        if norm in ("LN", "LNPre") and pos == "standard" and not gated:
            model = _to_gpt2(ht)
        elif norm in ("RMS", "RMSPre") and pos == "rotary" and gated:
            model = _to_llama(ht)
        else:
            raise FlowroutesError(
                f"this HookedTransformer cannot be traced: normalization {norm}, {pos} positions and a "
                f"{'gated' if gated else 'plain'} MLP match no converted architecture (LayerNorm + learned "
                "positions + plain MLP: GPT-2; RMSNorm + rotary + gated MLP: Llama)"
            )
    model.eval()

    def hooked_logits(ids):
        return ht(ids, return_type="logits")

    vocab = int(ht.cfg.d_vocab_out if ht.cfg.d_vocab_out > 0 else ht.cfg.d_vocab)
    _check_logits(model, hooked_logits, vocab, "HookedTransformer", "please report this model's configuration")
    return model


def _unembedding(ht, model, d: int, vocab: int) -> None:
    """W_U [d, V] into lm_head (untied), with b_U as its bias when it is not zero."""
    w_u, b_u = ht.unembed.W_U.detach(), getattr(ht.unembed, "b_U", None)
    if _nonzero(b_u):
        model.lm_head = torch.nn.Linear(d, vocab, bias=True, dtype=w_u.dtype, device=w_u.device)
        model.lm_head.bias.copy_(b_u.detach())
    model.lm_head.weight.copy_(w_u.T)


def _to_gpt2(ht: Any) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    c = ht.cfg
    d, heads, d_head = int(c.d_model), int(c.n_heads), int(c.d_head)
    _refuse_unless(heads * d_head == d, "n_heads * d_head != d_model (GPT-2 blocks need it)")
    _refuse_unless(getattr(ht.blocks[0].attn, "_W_K", None) is None, "grouped-query attention with LayerNorm")
    vocab = int(c.d_vocab_out if c.d_vocab_out > 0 else c.d_vocab)
    _refuse_unless(vocab == int(c.d_vocab), "an unembedding vocabulary unlike the embedding's")
    act = str(c.act_fn)
    from transformers.activations import ACT2FN

    _refuse_unless(act in ACT2FN, f"the activation {act}")
    config = GPT2Config(vocab_size=vocab, n_positions=int(c.n_ctx), n_embd=d, n_layer=int(c.n_layers), n_head=heads,
                        n_inner=int(c.d_mlp), activation_function=act, layer_norm_epsilon=float(c.eps),
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        scale_attn_weights=True, attn_implementation="eager")
    model = _fresh(GPT2LMHeadModel, config).to(ht.embed.W_E.dtype).to(ht.embed.W_E.device)
    ref = ht.embed.W_E
    model.transformer.wte.weight.copy_(ht.embed.W_E)
    model.transformer.wpe.weight.copy_(ht.pos_embed.W_pos)
    for layer, block in enumerate(ht.blocks):
        hf = model.transformer.h[layer]
        for name, tl_norm in (("ln_1", block.ln1), ("ln_2", block.ln2)):
            w, b = _norm_params(tl_norm, d, ref, True)
            getattr(hf, name).weight.copy_(w)
            getattr(hf, name).bias.copy_(b)
        w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o = _attn_weights(block.attn)
        # GPT-2's Conv1D computes x @ W with W [d_in, d_out]; c_attn's outputs are q | k | v, heads side by side
        hf.attn.c_attn.weight.copy_(torch.cat([_rows(w) for w in (w_q, w_k, w_v)]).T)
        hf.attn.c_attn.bias.copy_(torch.cat([b.reshape(-1) for b in (b_q, b_k, b_v)]))
        hf.attn.c_proj.weight.copy_(w_o.reshape(heads * d_head, d))
        hf.attn.c_proj.bias.copy_(b_o)
        hf.mlp.c_fc.weight.copy_(block.mlp.W_in)
        hf.mlp.c_fc.bias.copy_(block.mlp.b_in)
        hf.mlp.c_proj.weight.copy_(block.mlp.W_out)
        hf.mlp.c_proj.bias.copy_(block.mlp.b_out)
    w, b = _norm_params(ht.ln_final, d, ref, True)
    model.transformer.ln_f.weight.copy_(w)
    model.transformer.ln_f.bias.copy_(b)
    _unembedding(ht, model, d, vocab)
    return model


def _to_llama(ht: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    c = ht.cfg
    d, heads, d_head = int(c.d_model), int(c.n_heads), int(c.d_head)
    kv = int(_cfg(ht, "n_key_value_heads", heads))
    _refuse_unless(int(_cfg(ht, "rotary_dim", d_head)) == d_head, "rotary embeddings on part of each head")
    _refuse_unless(not _cfg(ht, "rotary_adjacent_pairs", False), "rotary embeddings on adjacent pairs")
    _refuse_unless(not _cfg(ht, "use_NTK_by_parts_rope", False), "NTK-by-parts rope scaling (Llama 3.1+)")
    _refuse_unless(str(_cfg(ht, "original_architecture", "")) not in ("GemmaForCausalLM", "Gemma2ForCausalLM"),
                   "Gemma's norms and embedding scale")
    vocab = int(c.d_vocab_out if c.d_vocab_out > 0 else c.d_vocab)
    _refuse_unless(vocab == int(c.d_vocab), "an unembedding vocabulary unlike the embedding's")
    blocks = list(ht.blocks)
    attn_bias = any(_nonzero(t) for blk in blocks for t in _attn_weights(blk.attn)[4:])
    _refuse_unless(not any(_nonzero(blk.mlp.b_in) for blk in blocks),
                   "a gated MLP bias added after the product (b_in), which Llama's MLP has no place for")
    mlp_bias = any(_nonzero(blk.mlp.b_out) for blk in blocks)
    config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=int(c.d_mlp),
                         num_hidden_layers=int(c.n_layers), num_attention_heads=heads, num_key_value_heads=kv,
                         head_dim=d_head, hidden_act=str(c.act_fn), max_position_embeddings=int(c.n_ctx),
                         rms_norm_eps=float(c.eps), rope_theta=float(_cfg(ht, "rotary_base", 10000)),
                         attention_bias=attn_bias, mlp_bias=mlp_bias, tie_word_embeddings=False,
                         attn_implementation="eager")
    model = _fresh(LlamaForCausalLM, config).to(ht.embed.W_E.dtype).to(ht.embed.W_E.device)
    ref = ht.embed.W_E
    model.model.embed_tokens.weight.copy_(ht.embed.W_E)
    for layer, block in enumerate(blocks):
        hf = model.model.layers[layer]
        for name, tl_norm in (("input_layernorm", block.ln1), ("post_attention_layernorm", block.ln2)):
            getattr(hf, name).weight.copy_(_norm_params(tl_norm, d, ref, False)[0])
        w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o = _attn_weights(block.attn)
        att = hf.self_attn
        for lin, w, b in ((att.q_proj, w_q, b_q), (att.k_proj, w_k, b_k), (att.v_proj, w_v, b_v)):
            lin.weight.copy_(_rows(w))
            if lin.bias is not None:
                lin.bias.copy_(b.reshape(-1))
        att.o_proj.weight.copy_(w_o.reshape(heads * d_head, d).T)
        if att.o_proj.bias is not None:
            att.o_proj.bias.copy_(b_o)
        mlp = hf.mlp
        mlp.gate_proj.weight.copy_(block.mlp.W_gate.T)
        mlp.up_proj.weight.copy_(block.mlp.W_in.T)
        mlp.down_proj.weight.copy_(block.mlp.W_out.T)
        if mlp_bias:
            mlp.gate_proj.bias.zero_()
            mlp.up_proj.bias.zero_()
            mlp.down_proj.bias.copy_(block.mlp.b_out)
    model.model.norm.weight.copy_(_norm_params(ht.ln_final, d, ref, False)[0])
    _unembedding(ht, model, d, vocab)
    return model
