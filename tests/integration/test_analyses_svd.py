"""W_OV singular vectors (sec. 5.2, fig. 11) on tiny models: the final norm before W_U, the rows, default heads."""

import types

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.analyses import svd
from flowroutes.analyses.base import Context
from tests.helpers.models import tiny_gpt2, tiny_llama, word_tokenizer
from tests.helpers.results import domains_result
from tests.helpers.tolerances import F32_STORED, OTHER_PATH

OPTS = types.SimpleNamespace(n_boot=1000, seed=0, heads=[])


@pytest.fixture(scope="module")
def llama():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def _rank_one_llama(gain1: float):
    """Head L0H0 with W_OV = a b^T, b = (2 e0 + e1) / sqrt(5); W_U rows: token 5 = e0, token 7 = 3 e1, others 0;
    final norm weight 1 except g1 = gain1."""
    model = tiny_llama()
    d, dh = 48, 12
    with torch.no_grad():
        attn = model.model.layers[0].self_attn
        attn.v_proj.weight[:dh] = 0.0  # value head 0, read by query heads 0 and 1
        attn.v_proj.weight[0, :] = torch.linspace(-1, 1, d)  # a
        attn.o_proj.weight[:, :dh] = 0.0  # head 0's block of the output projection
        attn.o_proj.weight[0, 0], attn.o_proj.weight[1, 0] = 2.0, 1.0  # b (unnormalised)
        model.lm_head.weight.zero_()
        model.lm_head.weight[5, 0] = 1.0
        model.lm_head.weight[7, 1] = 3.0
        model.model.norm.weight.fill_(1.0)
        model.model.norm.weight[1] = gain1
    return flowroutes.load_model(model, tokenizer=word_tokenizer())


def test_final_norm_weight_is_applied_before_the_unembedding():
    # g = 1: scores 2/sqrt(5) (token 5) and 3/sqrt(5) (token 7), over sqrt(1 + eps) (the RMSNorm of a unit
    # vector): w7 on top. The tool stores each score in float32: F32_STORED
    loaded = _rank_one_llama(1.0)
    shrink = np.sqrt(1.0 + loaded.adapter.final_norm().variance_epsilon)
    rows = svd.svd_rows(loaded, [0], k=1, top=2).to_pydict()
    assert rows["token"] == ["w7", "w5"] and rows["vector"] == [0, 0]
    np.testing.assert_allclose(rows["score"], np.array([3 / 5 ** 0.5, 2 / 5 ** 0.5]) / shrink, rtol=F32_STORED)
    # the norm's weight zeroes dimension 1: token 7 scores 0 and token 5 wins
    rows = svd.svd_rows(_rank_one_llama(0.0), [0], k=1, top=2).to_pydict()
    assert rows["token"][0] == "w5" and rows["score"][0] == pytest.approx(2 / 5 ** 0.5 / shrink, rel=F32_STORED)
    assert rows["score"][1] == 0.0  # SAME_ARITHMETIC: a zero weight times anything
    assert len(rows["layer"]) == 2  # rank 1: the zero singular values give no vectors


def _expected_scores(loaded, layer, head, centre):
    ov = loaded.adapter.ov_weights(layer)
    w = (ov.value[loaded.adapter.kv_head(head)] @ ov.output[head]).double().numpy()
    _u, s, vt = np.linalg.svd(w)
    norm = loaded.adapter.final_norm()
    g = norm.weight.detach().double().numpy()
    w_u = loaded.adapter.unembedding().detach().double().numpy()
    out = []
    for v in vt[:2]:
        d = len(v)
        if centre:  # LayerNorm: (c v - mean) / sqrt(var + eps), c = sqrt(d); the bias cancels
            x = v - v.mean()
            x = x / np.sqrt(d * np.mean(x ** 2) + norm.eps)
        else:  # RMSNorm: c v / sqrt(mean((c v)^2) + eps) / c = v / sqrt(1 + eps)
            x = v / np.sqrt(1.0 + norm.variance_epsilon)
        scores = (x * g) @ w_u.T
        out.append(scores if scores.max() >= -scores.min() else -scores)
    return s, out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_svd_rows_on_a_tiny_model(family, llama):
    loaded = llama if family == "llama" else flowroutes.load_model(tiny_gpt2(), tokenizer=word_tokenizer())
    n = loaded.n_layers * loaded.n_heads
    table = svd.svd_rows(loaded, list(range(n)), k=2, top=3)
    rows = table.to_pydict()
    assert table.num_rows == n * 2 * 3
    s, expected = _expected_scores(loaded, 1, 2, centre=family == "gpt2")
    sel = [i for i in range(table.num_rows) if rows["layer"][i] == 1 and rows["head"][i] == 2]
    assert [rows["vector"][i] for i in sel] == [0, 0, 0, 1, 1, 1]
    assert rows["singular_value"][sel[0]] == pytest.approx(s[0], rel=F32_STORED)  # stored in float32
    for k in range(2):
        got = [i for i in sel if rows["vector"][i] == k]
        assert [rows["token_id"][i] for i in got] == np.argsort(-expected[k])[:3].tolist()
        np.testing.assert_allclose([rows["score"][i] for i in got], np.sort(expected[k])[::-1][:3], rtol=OTHER_PATH)
        assert [rows["token"][i] for i in got] == [f"w{rows['token_id'][i]}" for i in got]


def test_default_heads(llama):
    table = svd.svd_rows(llama, list(range(12)), k=1, top=2)
    ctx = Context(table, 3, 4, OPTS, {}, llama)
    sigma = {(r["layer"], r["head"]): r["singular_value"] for r in table.to_pylist()}
    largest = sorted(sigma, key=lambda h: -sigma[h])[:6]
    result = svd.summarize(ctx)
    assert result.data["heads_shown"] == largest and "largest first singular" in result.summary["heads_from"]
    assert "no bias" in result.summary["final_norm"]
    specific = {"code": [(0, 0), (2, 1), (0, 1)], "non-english": [(0, 1), (2, 1), (1, 0)], "addition": [(2, 1)],
                "english": [(1, 1)]}
    ctx.inputs = {"domains": domains_result(specific, {"general": ["w1"], "code": ["w2"]})}
    result = svd.summarize(ctx)
    # code: L0H0, L2H1; non-English: L0H1, then L1H0 (L2H1 taken); addition: only L2H1, already shown
    assert result.data["heads_shown"] == [(0, 0), (2, 1), (0, 1), (1, 0)]
    assert result.data["labels"][(1, 0)] == "non-english"
    ctx.opts = types.SimpleNamespace(n_boot=100, seed=0, heads=[(1, 3)])
    assert svd.summarize(ctx).data["heads_shown"] == [(1, 3)]
