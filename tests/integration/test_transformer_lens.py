"""TransformerLens models as sources: a TransformerBridge (TransformerLens 4.x, installed here) traces exactly like
the transformers model it wraps; a HookedTransformer's weights (TransformerLens 2.x lives in the peers venv, see
benchmarks/peers/test_transformer_lens.py) are converted into the matching transformers model. flowroutes never
imports transformer_lens itself."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.models.transformer_lens import transformer_lens_kind
from tests.helpers.models import tiny_gpt2, tiny_llama, word_tokenizer
from tests.helpers.tolerances import OTHER_PATH, SAME_ARITHMETIC

ROOT = Path(__file__).resolve().parents[2]  # the subprocess imports tests.helpers from there
IDS = torch.tensor([5, 17, 3, 17, 40, 8, 22, 5, 61, 2])
ARCHS = {"gpt2": (tiny_gpt2, "gpt2"), "llama": (tiny_llama, "meta-llama/Llama-3.2-1B")}


def reference(make) -> flowroutes.Trace:
    return flowroutes.trace(flowroutes.load_model(make(), tokenizer=word_tokenizer()), input_ids=IDS)


def max_diff(a: flowroutes.Trace, b: flowroutes.Trace) -> float:
    return max(float(np.abs(getattr(a, k) - getattr(b, k)).max())
               for k in ("attention", "attention_residual", "ffn", "ffn_residual"))


def bridge(arch: str):
    pytest.importorskip("transformer_lens.model_bridge")
    from transformer_lens.model_bridge import TransformerBridge

    make, name = ARCHS[arch]
    return TransformerBridge.boot_transformers(name, hf_model=make(), tokenizer=word_tokenizer())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_bridge_traces_like_the_wrapped_model(arch):
    b = bridge(arch)
    assert transformer_lens_kind(b) == "bridge"
    loaded = flowroutes.load_model(b)  # the bridge's own tokenizer
    assert type(loaded.model).__name__ == type(b.original_model).__name__
    assert loaded.tokenizer is b.tokenizer
    ref = reference(ARCHS[arch][0])
    tr = flowroutes.trace(loaded, input_ids=IDS)
    assert max_diff(tr, ref) == 0.0  # same weights, same modules: identical numbers
    np.testing.assert_allclose(tr.top_probs, ref.top_probs, rtol=0, atol=SAME_ARITHMETIC)
    assert tr.top_tokens == ref.top_tokens
    # the bridge still works and still predicts the same after flowroutes took its weights
    with torch.no_grad():
        probs = torch.softmax(b(IDS[None], return_type="logits")[0, -1].float(), -1)
    assert float(probs.max()) == pytest.approx(ref.top_probs[-1][0], abs=OTHER_PATH)  # the bridge's own forward


def test_bridge_in_compatibility_mode():
    # Llama-like: the processed weights (norms folded) live in the wrapped parameters; RMSNorm models are not
    # centred, so the importances are those of the original weights
    b = bridge("llama")
    b.enable_compatibility_mode(disable_warnings=True)
    tr = flowroutes.trace(flowroutes.load_model(b), input_ids=IDS)
    assert max_diff(tr, reference(tiny_llama)) < OTHER_PATH  # the folded weights round differently
    # GPT-2: processed q/k/v live in the bridge's split components, not in c_attn: refused, with what to do
    b = bridge("gpt2")
    b.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(flowroutes.FlowroutesError, match="before enable_compatibility_mode"):
        flowroutes.load_model(b)


def _fake_hooked(hf, module="transformer_lens.HookedTransformer"):
    """A stand-in HookedTransformer in TransformerLens' weight layout (W_Q [H, d, dh], ...), built from a tiny
    transformers GPT-2; the real one is tested against TransformerLens 2.9.0 in the peers venv."""
    c, heads = hf.config, hf.config.n_head
    d, dh = c.n_embd, c.n_embd // c.n_head
    cls = type("HookedTransformer", (), {"__module__": module,
                                          "__call__": lambda self, ids, return_type="logits": hf(ids).logits})
    ht = cls()
    ht.cfg = types.SimpleNamespace(n_layers=c.n_layer, d_model=d, n_ctx=c.n_positions, d_head=dh, n_heads=heads,
                                   d_mlp=4 * d, d_vocab=c.vocab_size, d_vocab_out=c.vocab_size, act_fn="gelu_new",
                                   normalization_type="LN", positional_embedding_type="standard", eps=1e-5,
                                   gated_mlp=False, model_name="fake-gpt2")
    ns = types.SimpleNamespace
    ht.embed, ht.pos_embed = ns(W_E=hf.transformer.wte.weight), ns(W_pos=hf.transformer.wpe.weight)
    ht.blocks = []
    for blk in hf.transformer.h:
        w, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # x @ w: [d, 3d], q | k | v
        per_head = [w[:, i * d:(i + 1) * d].reshape(d, heads, dh).permute(1, 0, 2) for i in range(3)]
        biases = [b[i * d:(i + 1) * d].reshape(heads, dh) for i in range(3)]
        attn = ns(W_Q=per_head[0], W_K=per_head[1], W_V=per_head[2], b_Q=biases[0], b_K=biases[1], b_V=biases[2],
                  W_O=blk.attn.c_proj.weight.reshape(heads, dh, d), b_O=blk.attn.c_proj.bias)
        mlp = ns(W_in=blk.mlp.c_fc.weight, b_in=blk.mlp.c_fc.bias, W_out=blk.mlp.c_proj.weight,
                 b_out=blk.mlp.c_proj.bias)
        ht.blocks.append(ns(ln1=ns(w=blk.ln_1.weight, b=blk.ln_1.bias), ln2=ns(w=blk.ln_2.weight, b=blk.ln_2.bias),
                            attn=attn, mlp=mlp))
    ht.ln_final = ns(w=hf.transformer.ln_f.weight, b=hf.transformer.ln_f.bias)
    ht.unembed = ns(W_U=hf.lm_head.weight.T, b_U=torch.zeros(c.vocab_size))
    ht.tokenizer = word_tokenizer()
    return ht


def test_hooked_transformer_layout_converts_to_gpt2():
    ht = _fake_hooked(tiny_gpt2())
    assert transformer_lens_kind(ht) == "hooked"
    loaded = flowroutes.load_model(ht)
    assert type(loaded.model).__name__ == "GPT2LMHeadModel" and loaded.name == "fake-gpt2"
    tr = flowroutes.trace(loaded, input_ids=IDS)
    ref = reference(tiny_gpt2)
    assert max_diff(tr, ref) == SAME_ARITHMETIC  # the same weights, copied into GPT-2's modules
    np.testing.assert_allclose(tr.top_probs, ref.top_probs, rtol=0, atol=SAME_ARITHMETIC)


def test_hooked_transformer_refusals():
    ht = _fake_hooked(tiny_gpt2())
    ht.cfg.use_local_attn = True
    with pytest.raises(flowroutes.FlowroutesError, match="local attention"):
        flowroutes.load_model(ht)
    ht = _fake_hooked(tiny_gpt2())
    ht.cfg.positional_embedding_type = "rotary"
    with pytest.raises(flowroutes.FlowroutesError, match="rotary positions and a plain MLP"):
        flowroutes.load_model(ht)
    ht = _fake_hooked(tiny_gpt2())
    ht.cfg.attn_scale = 1.0
    with pytest.raises(flowroutes.FlowroutesError, match="attention scale"):
        flowroutes.load_model(ht)


def test_recognised_by_class_only():
    # a class of that name outside transformer_lens is not a TransformerLens model
    assert transformer_lens_kind(_fake_hooked(tiny_gpt2(), module="elsewhere")) is None
    assert transformer_lens_kind(torch.nn.Linear(2, 2)) is None
    with pytest.raises(flowroutes.FlowroutesError, match="TransformerLens"):
        flowroutes.load_model(object())
    code = ("import sys, flowroutes; from tests.helpers.models import tiny_gpt2, word_tokenizer; "
            "flowroutes.load_model(tiny_gpt2(), tokenizer=word_tokenizer()); "
            "assert 'transformer_lens' not in sys.modules, 'imported transformer_lens'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
