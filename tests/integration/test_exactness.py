"""The decomposition is exact: parts plus constants rebuild the model's own activations, and the
importances equal an independent float64 implementation of eq. 1. Tiny random-init models of every
supported family, and the real SmolLM2."""

import os

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import eager_attention, run_with_capture
from flowroutes.importance import head_values
from tests.helpers.reference import reference_layer
from tests.helpers.tolerances import (
    ATTENTION_ORDER_REL,
    IMPORTANCE_ABS,
    IMPORTANCE_SUM_ABS,
    KERNELS_ABS,
    LOGITS_REL,
    REBUILD_REL,
    SAME_ARITHMETIC,
)

IOI = "When Mary and John went to the store, John gave a drink to"


def _captures(loaded, ids):
    caps = []
    logits = run_with_capture(loaded, ids, caps.append)
    return caps, logits


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def check_exact(loaded, ids, tol=REBUILD_REL):
    model, adapter = loaded.model, loaded.adapter
    with torch.no_grad():
        plain = model(input_ids=ids[None]).logits[0]  # the model as the user runs it (sdpa)
        hidden = model(input_ids=ids[None], output_hidden_states=True).hidden_states
        with eager_attention(model):  # the attention the capture runs
            eager = model(input_ids=ids[None], output_hidden_states=True).hidden_states
    caps, logits = _captures(loaded, ids)
    assert len(caps) == adapter.n_layers
    # (a) the capture does not change the model's output
    assert _rel_err(logits, plain) < LOGITS_REL
    for cap in caps:
        layer = cap.layer
        # the captured residual is the model's own: bit for bit its eager run, and its sdpa run but for rounding
        assert _rel_err(cap.x_in, eager[layer][0]) == SAME_ARITHMETIC, f"layer {layer}"
        assert _rel_err(cap.x_in, hidden[layer][0]) < ATTENTION_ORDER_REL, f"layer {layer}"
        # (b) x^{lA}_p = x^{l-1}_p + sum_h sum_j alpha[h,p,j] f_h(x_j) + const
        f, const = head_values(cap.normed, adapter.ov_weights(layer), adapter.input_norm_bias(layer), adapter.kv_heads)
        rebuilt = cap.x_in.double() + torch.einsum("hpj,hjd->pd", cap.alpha.double(), f.double()) + const.double()
        assert _rel_err(rebuilt, cap.x_mid) < tol, f"layer {layer}: attention parts do not rebuild x^lA"
        # x^l_p = x^{lA}_p + FFN(x^{lA}_p)
        assert _rel_err(cap.x_mid.double() + cap.ffn_out.double(), cap.x_out) < tol
        if layer + 1 < len(caps):
            assert torch.equal(cap.x_out, caps[layer + 1].x_in)
    return caps


def test_tiny_models_are_exact(tiny):
    ids = torch.tensor([5, 17, 3, 17, 40, 8, 22, 5, 61])
    caps = check_exact(tiny, ids)
    tr = flowroutes.trace(tiny, input_ids=ids)
    # (c) every node's importances sum to 1
    np.testing.assert_allclose(tr.attention.sum(axis=(1, 3)) + tr.attention_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
    np.testing.assert_allclose(tr.ffn + tr.ffn_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
    assert np.all(np.triu(tr.attention, k=1) == 0)
    # equal to the independent float64 implementation
    for cap in caps:
        att, res, ffn, ffn_res = reference_layer(tiny.model, cap)
        np.testing.assert_allclose(tr.attention[cap.layer], att, atol=IMPORTANCE_ABS)
        np.testing.assert_allclose(tr.attention_residual[cap.layer], res, atol=IMPORTANCE_ABS)
        np.testing.assert_allclose(tr.ffn[cap.layer], ffn, atol=IMPORTANCE_ABS)
        np.testing.assert_allclose(tr.ffn_residual[cap.layer], ffn_res, atol=IMPORTANCE_ABS)


def test_the_constant_term_is_not_an_edge():
    """GPT-2 with large biases: the constant (b_O, b_V W_O, beta W_V W_O) is in y but in no part."""
    from tests.helpers.models import tiny_gpt2, word_tokenizer

    model = tiny_gpt2(seed=1)
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_proj.bias.add_(5.0)
    loaded = flowroutes.load_model(model, tokenizer=word_tokenizer())
    ids = torch.tensor([1, 2, 3, 4])
    caps = check_exact(loaded, ids)
    tr = flowroutes.trace(loaded, input_ids=ids)
    for cap in caps:
        att, res, _, _ = reference_layer(model, cap)
        np.testing.assert_allclose(tr.attention[cap.layer], att, atol=IMPORTANCE_ABS)
        np.testing.assert_allclose(tr.attention_residual[cap.layer], res, atol=IMPORTANCE_ABS)


@pytest.mark.slow
def test_smollm2_is_exact_and_matches_float64(smollm2, ioi_trace):
    ids = torch.as_tensor(ioi_trace.input_ids)
    caps = check_exact(smollm2, ids)
    assert smollm2.n_layers == 30 and smollm2.n_heads == 9 and smollm2.adapter.n_kv_heads == 3
    tr = ioi_trace
    np.testing.assert_allclose(tr.attention.sum(axis=(1, 3)) + tr.attention_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
    np.testing.assert_allclose(tr.ffn + tr.ffn_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
    worst = 0.0
    for cap in caps:
        att, res, ffn, ffn_res = reference_layer(smollm2.model, cap)
        for got, want in ((tr.attention[cap.layer], att), (tr.attention_residual[cap.layer], res),
                          (tr.ffn[cap.layer], ffn), (tr.ffn_residual[cap.layer], ffn_res)):
            worst = max(worst, float(np.abs(got - want).max()))
    print(f"\nSmolLM2 importances vs float64 eq. 1: {worst:.2e} ({torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads)")
    assert worst < IMPORTANCE_ABS, worst
    # the 0/0 node of SmolLM2 (its FFN cancels the residual at layer 10) is counted, not NaN
    assert np.isfinite(tr.attention).all() and np.isfinite(tr.ffn).all()
    assert tr.n_degenerate >= 1
    layer, pos = np.argwhere(tr.degenerate_ffn)[0]
    assert tr.ffn[layer, pos] == tr.ffn_residual[layer, pos] == 0.5


@pytest.mark.slow
def test_smollm2_fused_kernel_equals_reference_path(smollm2, ioi_trace):
    slow = flowroutes.trace(smollm2, input_ids=ioi_trace.input_ids, kernel="torch")
    np.testing.assert_allclose(ioi_trace.attention, slow.attention, atol=KERNELS_ABS)
    np.testing.assert_allclose(ioi_trace.attention_residual, slow.attention_residual, atol=KERNELS_ABS)
    np.testing.assert_array_equal(ioi_trace.ffn, slow.ffn)


def test_the_cpu_settings_asked_for_are_in_force():
    """`make test-cpus` runs these tests under other torch dispatch levels and thread counts: each run checks that
    the kernels it claims to exercise are the ones in force (an ignored variable would pass by testing nothing)."""
    want, threads = os.environ.get("ATEN_CPU_CAPABILITY"), os.environ.get("OMP_NUM_THREADS")
    if not want and not threads:
        pytest.skip("no ATEN_CPU_CAPABILITY or OMP_NUM_THREADS set: the CPU's own level and threads")
    if want:
        assert torch.backends.cpu.get_cpu_capability() == want.upper()
    if threads:
        assert torch.get_num_threads() == int(threads)
