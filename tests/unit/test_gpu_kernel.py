"""The Triton sub-edge kernel equals the chunked torch path in float64: its algorithm in plain torch everywhere, the
kernel itself on CUDA (those tests are skipped without a GPU and triton)."""

import numpy as np
import pytest
import torch

from flowroutes import kernels_gpu
from flowroutes.importance import attention_proximities, attention_proximities_torch, backend
from flowroutes.kernels_gpu import sub_edge_proximities_blocked, triton_available
from tests.helpers.tolerances import BLOCKED_PROXIMITY_REL

needs_cuda = pytest.mark.skipif(not triton_available(), reason="needs a CUDA device and triton")


def random_case(n_heads, n_tok, d, rows, seed, scaled=False, zeros=True):
    """alpha [H, R, T] (causal, row-stochastic, some exact zeros), f [H, T, d], y [R, d], rows, scale."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.as_tensor(rows, dtype=torch.long)
    logits = torch.randn(n_heads, len(rows), n_tok, generator=gen)
    causal = torch.arange(n_tok)[None, :] <= rows[:, None]
    alpha = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
    if zeros:  # whole sources with zero attention, as the kernels skip them
        alpha[:, :, 1::3] = 0.0
    f = torch.randn(n_heads, n_tok, d, generator=gen)
    y = 3 * torch.randn(len(rows), d, generator=gen)
    y[:, 0] = 0.0  # sign(0) = +1
    scale = (0.5 + torch.rand(len(rows), d, generator=gen)) if scaled else None
    return alpha, f, y, rows, scale


def float64_reference(alpha, f, y, rows, scale=None):
    """Sub-edge proximities by the torch path in float64 (eq. 1's numerators term by term), rounded to float32."""
    return attention_proximities_torch(alpha.double(), f.double(), y.double(), rows,
                                       scale=None if scale is None else scale.double()).float()


CASES = [  # n_heads, n_tok, d, rows, scaled
    (3, 11, 7, list(range(11)), False),
    (2, 37, 20, list(range(37)), True),
    (4, 29, 9, [0, 3, 4, 17, 28], False),
    (1, 1, 5, [0], False),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_blocked_algorithm_equals_the_float64_path(case):
    n_heads, n_tok, d, rows, scaled = CASES[case]
    alpha, f, y, rows, scale = random_case(n_heads, n_tok, d, rows, seed=case, scaled=scaled)
    expected = float64_reference(alpha, f, y, rows, scale)
    for block_m, block_n in ((4, 8), (16, 4), (64, 64)):  # several tiles per axis, tiles past the ends
        got = sub_edge_proximities_blocked(alpha, f, y, rows, scale, block_m, block_n)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0,
                                   atol=BLOCKED_PROXIMITY_REL * float(expected.abs().max()))
        acausal = torch.arange(n_tok)[None, :] > rows[:, None]
        assert not got[:, acausal].any()  # nothing written past each target


def test_the_triton_kernel_refuses_what_it_cannot_compute():
    alpha, f, y, rows, _ = random_case(2, 5, 3, range(5), seed=0)
    with pytest.raises(ValueError, match="float32"):
        attention_proximities(alpha.double(), f.double(), y.double(), rows, kernel="triton")
    with pytest.raises(ValueError, match="CUDA"):
        kernels_gpu.sub_edge_proximities_cuda(alpha, f, y, rows)
    assert backend("auto", f.device, f.dtype) == "numba"
    assert backend("auto", f.device, torch.float64) == "torch"  # the fused kernels compute in float32
    assert backend("torch", f.device) == "torch" and backend("reference", f.device) == "reference"


# --- on the GPU -----------------------------------------------------------------------------------


@needs_cuda
def test_auto_picks_the_triton_kernel_on_cuda():
    f = torch.zeros(1, 2, 3, device="cuda")
    assert backend("auto", f.device, f.dtype) == "triton"
    assert backend("auto", f.device, torch.float64) == "torch"


@needs_cuda
@pytest.mark.parametrize("case", range(len(CASES) + 2))
def test_cuda_kernel_equals_the_float64_path(case):
    if case < len(CASES):
        n_heads, n_tok, d, rows, scaled = CASES[case]
    elif case == len(CASES):
        n_heads, n_tok, d, rows, scaled = 8, 300, 96, list(range(300)), False
    else:  # a Llama-sized node: many tiles, d past any tile shape
        n_heads, n_tok, d, rows, scaled = 4, 200, 2048, list(range(0, 200, 3)), True
    alpha, f, y, rows, scale = random_case(n_heads, n_tok, d, rows, seed=10 + case, scaled=scaled)
    expected = float64_reference(alpha, f, y, rows, scale)
    dev = [None if t is None else t.cuda() for t in (alpha, f, y, rows, scale)]
    got = kernels_gpu.sub_edge_proximities_cuda(*dev).cpu()
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    acausal = torch.arange(n_tok)[None, :] > rows[:, None]
    assert not got[:, acausal].any()
    # the reference path on the GPU agrees too
    ref = attention_proximities(*dev[:4], kernel="torch", scale=dev[4]).cpu()
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
