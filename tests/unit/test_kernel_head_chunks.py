"""The fused kernel over chunks of heads: each node's proximity sums carry from chunk to chunk, so any chunking gives
the importances of one call over all heads (and of the reference path), pruned or not."""

import numpy as np
import pytest
import torch

from flowroutes.importance import attention_importance, batch_attention_importance
from tests.helpers.tolerances import HEAD_CHUNKS, IMPORTANCE_ABS


def _case(seed=0, n_batch=2, n_heads=5, n_tok=7, d=6):
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.rand(n_batch, n_heads, n_tok, n_tok, generator=gen).tril()
    alpha = alpha / alpha.sum(-1, keepdim=True)  # [B, H, R = T, T]
    alpha[0, 1, 3, 2] = 0.0  # a zero-attention sub-edge
    f = torch.randn(n_heads, n_batch, n_tok, d, generator=gen)
    x_in = torch.randn(n_batch, n_tok, d, generator=gen)
    y = x_in + torch.einsum("bhpj,hbjd->bpd", alpha, f)
    y[1, 4] = 0.0  # a node whose parts all have zero proximity: 0/0, equal shares
    x_in[1, 4] = 0.0
    rows = torch.arange(n_tok).expand(n_batch, n_tok).contiguous()
    return alpha, f, x_in, y, rows, [n_tok, n_tok - 2]


@pytest.mark.parametrize("per_call", [1, 2, 3, 5])
@pytest.mark.parametrize("prune", [0.0, 0.05])
def test_any_chunking_of_heads_gives_the_importances_of_one_call(per_call, prune):
    alpha, f, x_in, y, rows, n_rows = _case()
    whole = batch_attention_importance(alpha, f, x_in, y, rows, n_rows, prune=prune)
    asked = []

    def chunk(h0, h1):
        asked.append((h0, h1))
        return f[h0:h1]

    chunked = batch_attention_importance(alpha, chunk, x_in, y, rows, n_rows, prune=prune, heads_per_call=per_call)
    n_heads = f.shape[0]
    assert asked == [(h, min(h + per_call, n_heads)) for h in range(0, n_heads, per_call)]
    for got, want in zip(chunked, whole):
        if want is not None:
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=HEAD_CHUNKS)
    assert bool(chunked[2][1, 4])  # the 0/0 node: every part gets 1 / (H (p + 1) + 1)
    np.testing.assert_allclose(chunked[0][1, :, 4, :5].numpy(), 1 / (n_heads * 5 + 1))
    if prune == 0.0:  # and the reference path agrees, prompt by prompt
        for b, n in enumerate(n_rows):
            sub, res, _, _ = attention_importance(alpha[b, :, :n, :n], f[:, b, :n], x_in[b, :n], y[b, :n],
                                                  kernel="torch")
            np.testing.assert_allclose(chunked[0][b, :, :n, :n].numpy(), sub.numpy(), rtol=0, atol=IMPORTANCE_ABS)
            np.testing.assert_allclose(chunked[1][b, :n].numpy(), res.numpy(), rtol=0, atol=IMPORTANCE_ABS)


@pytest.mark.parametrize("prune", [0.0, 0.05])
def test_bfloat16_head_values_are_read_exactly(prune, monkeypatch):
    """bfloat16 head values go to the kernel as their 16 bits and are widened there: the importances equal those of
    the same values converted to float32 beforehand, bit for bit."""
    from flowroutes import kernels

    alpha, f, x_in, y, rows, n_rows = _case(seed=3)
    f16 = f.to(torch.bfloat16)
    seen = []
    original = kernels.batch_importances

    def spy(alpha, f, *args, **kwargs):
        seen.append(f.dtype)
        return original(alpha, f, *args, **kwargs)

    monkeypatch.setattr(kernels, "batch_importances", spy)
    got = batch_attention_importance(alpha, f16, x_in, y, rows, n_rows, prune=prune)
    assert seen == [np.int16]
    want = batch_attention_importance(alpha, f16.float(), x_in, y, rows, n_rows, prune=prune)
    for a, b in zip(got, want):
        if b is not None:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    chunked = batch_attention_importance(alpha, lambda h0, h1: f16[h0:h1], x_in, y, rows, n_rows, prune=prune,
                                         heads_per_call=2)
    np.testing.assert_allclose(chunked[0].numpy(), want[0].numpy(), rtol=0, atol=HEAD_CHUNKS)
