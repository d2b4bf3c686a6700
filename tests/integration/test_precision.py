"""Half-precision models are traced as they are (no float32 copy of their weights), exactly on their own
activations; their importances are close to the float32 model's. Models spread over devices by accelerate compute
each block where it lives (here every block mapped to the CPU, the same code path)."""

import copy

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import run_with_capture
from tests.helpers.families import tiny_family
from tests.helpers.models import tiny_llama, word_tokenizer
from tests.helpers.reference import reference_layer
from tests.helpers.tolerances import HALF_MODEL_ABS, HALF_MODEL_LAZY_ABS, HALF_MODEL_MEAN, IMPORTANCE_ABS

HALF = [torch.bfloat16, torch.float16]
IDS = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12, 40, 41]
NAMES = ("attention", "attention_residual", "ffn", "ffn_residual")


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen3"])
def test_a_half_precision_model_is_traced_exactly_on_its_own_activations(family, dtype):
    """Importances of the half-precision model equal eq. 1 in float64 on that model's own activations and weights;
    its weights stay in half precision, bit for bit (the trace upcasts copies, never the model)."""
    loaded = flowroutes.load_model(tiny_family(family).to(dtype), tokenizer=word_tokenizer())
    weights = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    tr = flowroutes.trace(loaded, input_ids=IDS)
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    for name, p in loaded.model.named_parameters():
        assert torch.equal(p, weights[name]), name
    caps = []
    run_with_capture(loaded, torch.tensor(IDS), caps.append)  # float32 copies of the model's own activations
    for cap in caps:
        want = reference_layer(loaded.model, cap)
        for name, w in zip(NAMES, want):
            np.testing.assert_allclose(getattr(tr, name)[cap.layer], w, atol=IMPORTANCE_ABS, err_msg=name)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_half_precision_lazy_and_batched_traces_keep_the_models_dtype(dtype):
    """Lazy traces keep each block's activations in the model's dtype (half the memory of float32), read the head
    values off the value vectors the forward pass computed, in that dtype, and keep the residual edges' proximities
    instead of x^{l-1}. Against the float32 model with the same
    weights, the importances differ by the model's own rounding: ~2e-3 on average, at most 2e-2 on this random-init
    model."""
    half = tiny_llama().to(dtype)
    exact = copy.deepcopy(half).float()  # the same (half-representable) weights in float32
    loaded = flowroutes.load_model(half, tokenizer=word_tokenizer())
    reference = flowroutes.load_model(exact, tokenizer=word_tokenizer())
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w8 w9 w10", "w10 w11 w12 w1 w2 w3 w40"]
    lazy = flowroutes.trace(loaded, prompts, lazy=True)
    assert lazy[0].batch.x_mid[0].dtype == dtype and lazy[0].batch.call[0].values.dtype == dtype
    # the fused CPU kernel: the residual edges' proximities instead of x^{l-1}; recorded values instead of LN(x)
    assert lazy[0].batch.x_in[0] is None and lazy[0].batch.residual[0].shape == (3, 11)
    assert lazy[0].batch.normed[0] is None
    ref = flowroutes.trace(reference, prompts, lazy=True)
    for got, want in zip(lazy, ref):
        full, full_ref = got.full(), want.full()
        for name in NAMES:
            diff = np.abs(getattr(full, name) - getattr(full_ref, name))
            np.testing.assert_array_less(diff.mean(), HALF_MODEL_MEAN, err_msg=name)
            np.testing.assert_array_less(diff.max(), HALF_MODEL_LAZY_ABS, err_msg=name)


@pytest.mark.slow
def test_smollm2_in_bfloat16_is_close_to_float32(smollm2, ioi_trace):
    """SmolLM2 cast to bfloat16: the sub-edge importances stay within 1e-2 of the float32 model's, the node
    importances within 5e-3 on average (HALF_MODEL_ABS, HALF_MODEL_MEAN) and the routes keep the same heads. (The
    largest node differences, up to ~3e-2 at the last block's first position, come from the model's own bfloat16
    activations: on those the trace is exact, see above.)"""
    half = flowroutes.load_model(copy.deepcopy(smollm2.model).to(torch.bfloat16), tokenizer=smollm2.tokenizer)
    for lazy in (False, True):
        tr = flowroutes.trace(half, ioi_trace.prompt, lazy=lazy)
        assert tr.routes(0.04).active_heads == ioi_trace.routes(0.04).active_heads
        tr = tr.full() if lazy else tr
        np.testing.assert_array_less(np.abs(tr.attention - ioi_trace.attention).max(), HALF_MODEL_ABS)
        for name in NAMES[1:]:
            diff = np.abs(getattr(tr, name) - getattr(ioi_trace, name))
            np.testing.assert_array_less(diff.mean(), HALF_MODEL_MEAN, err_msg=name)
        assert tr.top_tokens[-1][0] == ioi_trace.top_tokens[-1][0]


def test_a_model_spread_by_accelerate_computes_each_block_on_its_own_device():
    """device_map: accelerate's hooks move each block's inputs to that block's device; the importances of a block
    are computed from its own weights where they are. With every block mapped to the CPU (the same code path as
    several GPUs), full, batched and lazy traces equal those of the plain model, and say which backend they used."""
    from accelerate import dispatch_model

    model = tiny_llama()
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    device_map |= {f"model.layers.{i}": "cpu" for i in range(model.config.num_hidden_layers)}
    spread = dispatch_model(tiny_llama(), device_map=device_map, force_hooks=True)
    assert all(hasattr(block, "_hf_hook") for block in spread.model.layers)
    loaded = flowroutes.load_model(spread, tokenizer=word_tokenizer())
    plain = flowroutes.load_model(model, tokenizer=word_tokenizer())
    prompts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w1 w2"]
    for got, want in zip(flowroutes.trace(loaded, prompts), flowroutes.trace(plain, prompts)):
        assert got.meta["backend"] == want.meta["backend"] == "numba"
        for name in NAMES:
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    lazy = flowroutes.trace(loaded, prompts, lazy=True)
    for got, want in zip(lazy.routes(0.04), flowroutes.trace(plain, prompts, lazy=True).routes(0.04)):
        assert got.to_dict() == want.to_dict()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_head_values_in_the_models_precision(dtype):
    """precision="model": the head values by the model's own half-precision products, rounded once to its dtype;
    everything else in float32. Full, batched and lazy traces stay within the rounding of f (2^-8 relative for
    bfloat16) of the float32 path; for a float32 model nothing changes."""
    loaded = flowroutes.load_model(tiny_llama().to(dtype), tokenizer=word_tokenizer())
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w8 w9 w10", "w10 w11 w12 w1 w2 w3 w40"]
    exact = flowroutes.trace(loaded, prompts)
    fast = flowroutes.trace(loaded, prompts, precision="model")
    lazy_exact = flowroutes.trace(loaded, prompts, lazy=True)
    lazy_fast = flowroutes.trace(loaded, prompts, lazy=True, precision="model")
    tolerance = {torch.bfloat16: 5e-3, torch.float16: 1e-3, torch.float32: 0.0}[dtype]
    for a, b, la, lb in zip(exact, fast, lazy_exact, lazy_fast):
        assert b.meta["precision"] == lb.meta["precision"] == "model"
        for got, want in ((b, a), (lb.full(), la.full())):
            for name in NAMES:
                assert np.abs(getattr(got, name) - getattr(want, name)).max() <= tolerance, name
