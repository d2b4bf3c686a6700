"""Eq. 1 on hand-made vectors, and the chunked attention kernel against the literal float64 formula."""

import numpy as np
import pytest
import torch

from flowroutes.importance import attention_importance, ffn_importance, normalise, proximity
from tests.helpers.reference import eq1
from tests.helpers.tolerances import F32_STORED, IMPORTANCE_ABS


def test_eq1_by_hand_with_a_clipped_part():
    # y = z1 + z2 + z3 = [3, -1];  ||y||_1 = 4
    y = torch.tensor([3.0, -1.0])
    parts = torch.tensor([[4.0, 0.0], [1.0, -1.0], [-2.0, 0.0]])
    # ||y - z1|| = |-1| + |-1| = 2 -> 2;  ||y - z2|| = 2 + 0 -> 2;  ||y - z3|| = 5 + 1 = 6 -> max(-2, 0) = 0
    prox = proximity(parts, y)
    assert prox.tolist() == [2.0, 2.0, 0.0]
    imp, degenerate = normalise(prox[None], 3)
    assert imp[0].tolist() == [0.5, 0.5, 0.0]
    assert not degenerate.any()


def test_all_zero_proximities_share_equally():
    # y = [1, 0]: z1 = [-1, 0] -> 1 - 2 < 0 -> 0;  z2 = [2, 0] -> 1 - 1 = 0
    y = torch.tensor([1.0, 0.0])
    prox = proximity(torch.tensor([[-1.0, 0.0], [2.0, 0.0]]), y)
    assert prox.tolist() == [0.0, 0.0]
    imp, degenerate = normalise(prox[None], 2)
    assert imp[0].tolist() == [0.5, 0.5] and degenerate.tolist() == [True]


def test_small_part_next_to_a_huge_coordinate_keeps_its_digits():
    # float32: 700 - |700 - 1e-4| rounds to a multiple of 2^-14 (6.1e-5); eq. 1 must still see 1e-4
    y = torch.tensor([700.0, -3.0])
    z = torch.tensor([1e-4, 0.0])
    naive = (y.abs() - (y - z).abs()).sum()
    assert float(naive) != pytest.approx(1e-4, rel=F32_STORED)  # the direct form is wrong here
    assert float(proximity(z, y)) == pytest.approx(1e-4, rel=F32_STORED)
    # and a part larger than |y| takes the other branch: |y| - |y - z| = 2|y| - z
    assert float(proximity(torch.tensor([5.0]), torch.tensor([2.0]))) == 0.0  # 2 - 3 -> clipped
    assert float(proximity(torch.tensor([3.0]), torch.tensor([2.0]))) == 1.0  # 2 - 1


def test_ffn_importance_by_hand():
    y = torch.tensor([[2.0, 2.0]])  # x^l = x^lA + FFN
    x_mid = torch.tensor([[2.0, 0.0]])  # ||y - x_mid|| = 2 -> prox 2
    ffn = torch.tensor([[0.0, 2.0]])  # prox 2
    f_imp, r_imp, degenerate = ffn_importance(x_mid, ffn, y)
    assert f_imp.tolist() == [0.5] and r_imp.tolist() == [0.5] and degenerate.tolist() == [False]


def _random_layer(seed=3, n_heads=3, n_tok=7, d=5):
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.tril(torch.softmax(torch.randn(n_heads, n_tok, n_tok, generator=gen), -1))
    alpha = alpha / alpha.sum(-1, keepdim=True)
    alpha[0, 3, 1] = 0.0  # a zero attention weight: skipped by the kernel, still exact
    f = 3 * torch.randn(n_heads, n_tok, d, generator=gen)
    x_in = torch.randn(n_tok, d, generator=gen)
    y = x_in + torch.einsum("hpj,hjd->pd", alpha, f) + 0.1
    y[2, 0] = 700.0  # a massive coordinate, as in SmolLM2's residual stream
    return alpha, f, x_in, y


@pytest.mark.parametrize("kernel,chunk", [("torch", 1), ("torch", 700), ("torch", 1 << 23), ("numba", 0)])
def test_attention_kernels_match_literal_eq1(kernel, chunk):
    alpha, f, x_in, y = _random_layer()
    n_heads, n_tok, _ = f.shape
    sub, res, degenerate, _ = attention_importance(alpha, f, x_in, y, kernel=kernel, chunk_elements=chunk)
    for p in range(n_tok):
        parts = [(alpha[h, p, j] * f[h, j]).double().numpy() for h in range(n_heads) for j in range(p + 1)]
        expected = eq1(parts + [x_in[p].double().numpy()], y[p].double().numpy())
        got = np.concatenate([sub[:, p, : p + 1].reshape(-1).numpy(), [float(res[p])]])
        np.testing.assert_allclose(got, expected, atol=IMPORTANCE_ABS)
        assert float(sub[:, p, p + 1 :].abs().sum()) == 0.0
    assert not degenerate.any()


def test_fused_kernel_equals_the_reference_on_selected_rows():
    alpha, f, x_in, y = _random_layer(seed=5, n_heads=4, n_tok=23, d=37)
    full_ref = attention_importance(alpha, f, x_in, y, kernel="torch")
    rows = torch.tensor([0, 4, 5, 17, 22])  # a subset of targets, as lazy routes ask for
    for kernel in ("torch", "numba"):
        sub, res, _, _ = attention_importance(alpha, f, x_in, y, rows=rows, kernel=kernel)
        np.testing.assert_allclose(sub.numpy(), full_ref[0][:, rows].numpy(), atol=IMPORTANCE_ABS)
        np.testing.assert_allclose(res.numpy(), full_ref[1][rows].numpy(), atol=IMPORTANCE_ABS)
