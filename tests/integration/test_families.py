"""Every supported family is exact: the capture leaves the logits alone, the parts plus constants rebuild
the model's own x^{lA} and x^l, each node's importances sum to 1 and equal eq. 1 computed literally in
float64 from those parts."""

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import run_with_capture
from flowroutes.importance import head_values
from tests.helpers.families import FAMILIES, tiny_family
from tests.helpers.models import word_tokenizer
from tests.helpers.reference import eq1
from tests.helpers.tolerances import (
    DLA_REL,
    HALF_MODEL_ABS,
    IMPORTANCE_ABS,
    IMPORTANCE_SUM_ABS,
    LOGITS_REL,
    REBUILD_REL,
)

IDS = torch.tensor([5, 17, 3, 17, 40, 8, 22, 5, 61, 2])


def rel_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_is_exact(family):
    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    model, adapter = loaded.model, loaded.adapter
    with torch.no_grad():
        plain = model(input_ids=IDS[None]).logits[0]
    caps = []
    logits = run_with_capture(loaded, IDS, caps.append)
    assert len(caps) == adapter.n_layers
    assert rel_err(logits, plain) < LOGITS_REL  # (a) capture does not change the model
    tr = flowroutes.trace(loaded, input_ids=IDS)
    # (c) every node's parts sum to 1
    total = tr.attention.sum(axis=(1, 3)) + tr.attention_residual
    for layer in range(adapter.n_layers):
        expected_ffn_sum = tr.ffn[layer] + (0 if tr.is_parallel(layer) else tr.ffn_residual[layer])
        if tr.is_parallel(layer):
            np.testing.assert_allclose(total[layer] + tr.ffn[layer], 1.0, atol=IMPORTANCE_SUM_ABS)
        else:
            np.testing.assert_allclose(total[layer], 1.0, atol=IMPORTANCE_SUM_ABS)
            np.testing.assert_allclose(expected_ffn_sum, 1.0, atol=IMPORTANCE_SUM_ABS)
    for cap in caps:
        layer = cap.layer
        assert cap.parallel == adapter.is_parallel(layer)
        f, const = head_values(cap.normed, adapter.ov_weights(layer), adapter.input_norm_bias(layer), adapter.kv_heads)
        scale = adapter.attention_post_scale(layer, cap.attn_raw)
        update = torch.einsum("hpj,hjd->pd", cap.alpha.double(), f.double()) + const.double()  # [T, d]
        if scale is not None:
            update = update * scale.double()
        # (b) the parts rebuild the model's own activations
        if cap.parallel:
            assert rel_err(cap.x_in.double() + update + cap.ffn_out.double(), cap.x_out) < REBUILD_REL
            y, extra = cap.x_out, cap.ffn_out
        else:
            assert rel_err(cap.x_in.double() + update, cap.x_mid) < REBUILD_REL
            assert rel_err(cap.x_mid.double() + cap.ffn_out.double(), cap.x_out) < REBUILD_REL
            y, extra = cap.x_mid, None
        # importances equal eq. 1 applied literally (float64) to those parts
        sc = torch.ones_like(y) if scale is None else scale
        for p in (0, 4, len(IDS) - 1):
            parts = [(cap.alpha[h, p, j].double() * f[h, j].double() * sc[p].double()).numpy()
                     for h in range(adapter.n_heads) for j in range(p + 1)]
            parts.append(cap.x_in[p].double().numpy())
            if extra is not None:
                parts.append(extra[p].double().numpy())
            want = eq1(parts, y[p].double().numpy())
            got = [*tr.attention[layer, :, p, : p + 1].reshape(-1), tr.attention_residual[layer, p]]
            if extra is not None:
                got.append(tr.ffn[layer, p])
            np.testing.assert_allclose(got, want, atol=IMPORTANCE_ABS, err_msg=f"{family} layer {layer} position {p}")


@pytest.mark.parametrize("family", ["gpt_neox", "gptj", "phi"])
def test_parallel_routes_have_no_attention_nodes(family):
    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    tr = flowroutes.trace(loaded, input_ids=IDS)
    routes = tr.routes(0.02)
    assert routes.parallel == [True] * loaded.n_layers
    assert all(n.kind == "residual" for n in routes.nodes)
    assert {e.kind for e in routes.edges} <= {"attention", "residual", "ffn"}
    assert flowroutes.Routes.from_json(routes.to_json()) == routes
    # a lazy request falls back to the full trace for parallel blocks
    assert isinstance(flowroutes.trace(loaded, input_ids=IDS, lazy=True), flowroutes.Trace)


def test_unsupported_configurations_are_refused():
    import transformers as tf

    opt_post = tf.AutoModelForCausalLM.from_config(tf.OPTConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, ffn_dim=96,
        do_layer_norm_before=False, word_embed_proj_dim=48))
    with pytest.raises(flowroutes.FlowroutesError, match="do_layer_norm_before"):
        flowroutes.load_model(opt_post, tokenizer=word_tokenizer())
    bert = tf.AutoModelForMaskedLM.from_config(tf.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1,
                                                             num_attention_heads=2, intermediate_size=64))
    with pytest.raises(flowroutes.FlowroutesError, match="not supported yet; supported: bloom"):
        flowroutes.load_model(bert, tokenizer=word_tokenizer())
    t5 = tf.AutoModelForSeq2SeqLM.from_config(tf.T5Config(vocab_size=97, d_model=32, num_layers=1, num_heads=2,
                                                          d_ff=64, d_kv=8))
    with pytest.raises(flowroutes.FlowroutesError, match="encoder-decoder"):
        flowroutes.load_model(t5, tokenizer=word_tokenizer())
    falcon_alibi = tf.AutoModelForCausalLM.from_config(tf.FalconConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, alibi=True))  # sdpa
    with pytest.raises(flowroutes.FlowroutesError, match="attn_implementation='eager'"):
        flowroutes.load_model(falcon_alibi, tokenizer=word_tokenizer())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_importances_match_float32(dtype):
    import transformers as tf

    from tests.helpers.families import FAMILIES

    torch.manual_seed(0)  # the family's own initialisation: activations of a trained model's scale
    cls, kwargs = FAMILIES["llama"]
    model = tf.AutoModelForCausalLM.from_config(cls(**kwargs)).eval()
    ref = flowroutes.trace(flowroutes.load_model(model, tokenizer=word_tokenizer()), input_ids=IDS)
    half = flowroutes.trace(flowroutes.load_model(model.to(dtype), tokenizer=word_tokenizer()), input_ids=IDS)
    assert half.attention.dtype == np.float32  # importances are computed in float32 whatever the model's dtype
    for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
        np.testing.assert_allclose(getattr(half, name), getattr(ref, name), atol=HALF_MODEL_ABS, err_msg=name)


def test_float64_importances_on_request():
    loaded = flowroutes.load_model(tiny_family("gpt2"), tokenizer=word_tokenizer())
    tr32 = flowroutes.trace(loaded, input_ids=IDS)
    tr64 = flowroutes.trace(loaded, input_ids=IDS, precision="float64")
    assert tr64.attention.dtype == np.float64 and tr64.ffn.dtype == np.float64
    np.testing.assert_allclose(tr64.attention, tr32.attention, atol=IMPORTANCE_ABS)
    with pytest.raises(flowroutes.FlowroutesError, match="precision"):
        flowroutes.trace(loaded, input_ids=IDS, precision="float8")


def test_nan_activations_name_the_layer():
    model = tiny_family("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    loaded = flowroutes.load_model(model, tokenizer=word_tokenizer())
    with pytest.raises(flowroutes.FlowroutesError, match="NaN or Inf activations in layer 1"):
        flowroutes.trace(loaded, input_ids=IDS)


def test_attention_that_hides_its_weights_is_refused():
    model = tiny_family("gpt2")
    attn = model.transformer.h[0].attn
    forward = attn.forward
    attn.forward = lambda *a, **k: (forward(*a, **k)[0], None)
    loaded = flowroutes.load_model(model, tokenizer=word_tokenizer())
    with pytest.raises(flowroutes.FlowroutesError, match="does not return attention weights"):
        flowroutes.trace(loaded, input_ids=IDS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trace_matches_cpu():
    model = tiny_family("llama")
    cpu = flowroutes.trace(flowroutes.load_model(model, tokenizer=word_tokenizer()), input_ids=IDS)
    gpu = flowroutes.trace(flowroutes.load_model(model, tokenizer=word_tokenizer(), device="cuda"), input_ids=IDS)
    np.testing.assert_allclose(gpu.attention, cpu.attention, atol=1e-4)
    np.testing.assert_allclose(gpu.ffn, cpu.ffn, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_adapter_finds_final_norm_unembedding_and_neurons(family):
    """The logit lens (final norm + unembedding) of the top residual gives the model's own logits, and the
    neurons times their output rows plus the bias give the FFN output (where the FFN has one projection)."""
    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    adapter = loaded.adapter
    caps = []
    got = {}
    if adapter.down_projection_name is not None:
        module, w_out = adapter.down_projection(0)
        module.register_forward_hook(lambda m, a, o: got.update(a=a[0].detach().clone(), o=o.detach().clone()))
    logits = run_with_capture(loaded, IDS, caps.append)
    top = caps[-1].x_out
    lens = adapter.final_norm()(top) @ adapter.unembedding().T
    if adapter.unembedding_bias() is not None:
        lens = lens + adapter.unembedding_bias()
    if family != "gemma2":  # Gemma 2 soft-caps its logits after the unembedding
        assert rel_err(lens, logits) < LOGITS_REL
    if adapter.down_projection_name is not None:
        neurons = got["a"].reshape(-1, got["a"].shape[-1])  # [T, F]
        bias = module.bias if module.bias is not None else 0.0
        rebuilt = neurons @ w_out + bias
        assert rel_err(rebuilt, got["o"].reshape(rebuilt.shape)) < REBUILD_REL


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - {"mixtral"}))  # experts: no neurons to capture
def test_direct_logit_attribution_adds_up_through_the_adapters_final_norm(family):
    """The final norm, linearised as the adapter describes the family's norms (centred or not, scaled by w + offset),
    gives components whose direct effects add up to the logit computed by the norm module itself: W_U[t] . N(x^L_p)."""
    from flowroutes import inspection as ins

    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    internals = ins.capture_internals(loaded, IDS.numpy())
    p, target = len(IDS) - 1, 7
    direction = ins.target_direction(loaded, target)
    d = ins.direct_logit_attribution(loaded, internals, p, direction)
    total = np.sum(d["heads"]) + sum(d["ffn"]) + sum(d["attention_constant"]) + d["embedding"] + d["bias"]
    norm = loaded.adapter.final_norm()
    with torch.no_grad():
        normed = norm(torch.as_tensor(internals.residual[-1, p])[None].float())[0].double().numpy()
    want = float(normed @ direction.astype(np.float64))
    assert total == pytest.approx(want, rel=DLA_REL)
