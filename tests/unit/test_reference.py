"""flowroutes.reference, the paper's equations part by part, on cases worked out by hand."""

import numpy as np

from flowroutes import reference
from tests.helpers.tolerances import F64_HAND


def test_eq1_by_hand():
    # y = z1 + z2 + z3 = [3, -1], ||y||_1 = 4: ||y - z1|| = 2 -> 2; ||y - z2|| = 2 -> 2; ||y - z3|| = 6 -> 0
    y = np.array([3.0, -1.0])
    parts = [np.array([4.0, 0.0]), np.array([1.0, -1.0]), np.array([-2.0, 0.0])]
    assert [reference.proximity(z, y) for z in parts] == [2.0, 2.0, 0.0]
    imp, degenerate = reference.importances(parts, y)
    assert imp.tolist() == [0.5, 0.5, 0.0] and not degenerate


def test_a_node_without_proximity_shares_equally():
    imp, degenerate = reference.importances([np.array([-1.0, 0.0]), np.array([2.0, 0.0])], np.array([1.0, 0.0]))
    assert imp.tolist() == [0.5, 0.5] and degenerate


def test_head_values_by_hand():
    # d = 2, one value head of width 1 read by two query heads; beta shifts the norm's output
    normed = np.array([[1.0, 2.0], [3.0, 0.0]])  # LN(x_j)
    beta = np.array([1.0, 0.0])  # x_j L = LN(x_j) - beta = [0, 2], [2, 0]
    value = np.array([[[1.0], [1.0]]])  # [KV=1, d, dh=1]: v = x0 + x1
    output = np.array([[[1.0, 0.0]], [[0.0, -2.0]]])  # [H=2, dh, d]
    f = reference.head_values(normed, value, output, [0, 0], beta)
    assert f.tolist() == [[[2.0, 0.0], [2.0, 0.0]], [[0.0, -4.0], [0.0, -4.0]]]


def test_one_block_by_hand():
    # one head, two tokens, d = 2. Target 1 reads j=0 with 1/4 and j=1 with 3/4.
    alpha = np.array([[[1.0, 0.0], [0.25, 0.75]]])
    f = np.array([[[4.0, 0.0], [0.0, 4.0]]])
    x_in = np.array([[1.0, 1.0], [2.0, -2.0]])
    x_mid = x_in + np.einsum("hpj,hjd->pd", alpha, f)  # [[5, 1], [3, 1]]
    ffn_out = np.array([[1.0, 0.0], [0.0, -1.0]])
    x_out = x_mid + ffn_out
    got = reference.block(alpha, f, x_in, x_mid, ffn_out, x_out)
    # node x^{0A}_1 = [3, 1], ||y|| = 4. Parts: 0.25*[4,0] = [1, 0] -> 4 - 3 = 1; 0.75*[0,4] = [0, 3] -> 4 - 5 = 0;
    # residual [2, -2] -> 4 - (1 + 3) = 0. Proximities [1, 0, 0]: the first sub-edge takes everything.
    assert got["attention"][0, 1].tolist() == [1.0, 0.0] and got["attention_residual"][1] == 0.0
    # node x^{0A}_0 = [5, 1]: f part [4, 0] -> 6 - 2 = 4; residual [1, 1] -> 6 - 4 = 2: 2/3 and 1/3
    assert np.allclose([got["attention"][0, 0, 0], got["attention_residual"][0]], [2 / 3, 1 / 3], rtol=0, atol=F64_HAND)
    assert got["attention"][0, 0, 1] == 0.0  # no edge from the future
    # x^1_1 = [3, 0]: FFN [0, -1] -> 3 - 3 = 0; residual [3, 1] -> 3 - 1 = 2
    assert (got["ffn"][1], got["ffn_residual"][1]) == (0.0, 1.0)


def test_the_walk_by_hand():
    """Two blocks, two tokens, one head. Block 1's FFN edge into x^2_1 is below tau, its residual edge kept; the
    attention of block 1 at target 1 keeps j=0 (0.5) and the residual (0.3) and drops j=1 (0.02 < tau), renormalised
    over what is kept (0.5 / 0.8 and 0.3 / 0.8)."""
    att = np.zeros((2, 1, 2, 2))
    att[1, 0, 1] = [0.5, 0.02]
    att[0, 0, 0, 0] = 0.9
    res = np.array([[0.1, 0.0], [0.0, 0.3]])
    ffn = np.array([[0.5, 0.0], [0.0, 0.01]])
    ffn_res = np.array([[0.5, 0.0], [0.0, 0.99]])
    edges = reference.walk(att, res, ffn, ffn_res, 1, 0.04, 0.04)
    want = {("ffn-residual", 1, 1, 1, None): 0.99, ("attention", 1, 0, 1, 0): 0.5 / 0.8,
            ("residual", 1, 1, 1, None): 0.3 / 0.8,
            # block 0: from x^1_0 (the FFN and its residual, 0.5 each), x^1_1's FFN edges (0.0 and 0.0) are dropped
            ("ffn", 0, 0, 0, None): 0.5, ("ffn-residual", 0, 0, 0, None): 0.5,
            ("attention", 0, 0, 0, 0): 0.9 / 1.0, ("residual", 0, 0, 0, None): 0.1 / 1.0}
    assert edges.keys() == want.keys()
    assert all(abs(edges[k] - w) < F64_HAND for k, w in want.items())
