"""Traces of tiny models through the Triton kernel's algorithm (CPU) and the kernel itself (CUDA, skipped without)
equal numba traces."""

import numpy as np
import pytest

import flowroutes
from flowroutes import kernels_gpu
from flowroutes.kernels_gpu import sub_edge_proximities_blocked, triton_available
from tests.helpers.models import TINY_MODELS, word_tokenizer
from tests.helpers.tolerances import KERNELS_ABS, OTHER_PATH

needs_cuda = pytest.mark.skipif(not triton_available(), reason="needs a CUDA device and triton")


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_traces_through_the_kernel_algorithm_equal_numba_traces(family, monkeypatch):
    """kernel="triton" dispatches to the kernel; with its algorithm standing in for it on CPU, every
    importance equals the numba kernel's."""
    loaded = flowroutes.load_model(TINY_MODELS[family](), tokenizer=word_tokenizer())
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12, 40, 41]
    calls = []

    def blocked(*args, **kwargs):
        calls.append(1)
        return sub_edge_proximities_blocked(*args, **kwargs, block_m=4, block_n=8)

    monkeypatch.setattr(kernels_gpu, "sub_edge_proximities_cuda", blocked)
    via_kernel = flowroutes.trace(loaded, input_ids=ids, kernel="triton")
    assert len(calls) == loaded.adapter.n_layers
    numba = flowroutes.trace(loaded, input_ids=ids, kernel="numba")
    for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
        np.testing.assert_allclose(getattr(via_kernel, name), getattr(numba, name), atol=KERNELS_ABS, err_msg=name)
    lazy = flowroutes.trace(loaded, input_ids=ids, kernel="triton", lazy=True)
    np.testing.assert_allclose(lazy.full().attention, numba.attention, atol=OTHER_PATH)


@needs_cuda
@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_cuda_traces_equal_cpu_traces(family):
    cpu = flowroutes.load_model(TINY_MODELS[family](), tokenizer=word_tokenizer())
    gpu = flowroutes.load_model(TINY_MODELS[family](), tokenizer=word_tokenizer(), device="cuda")
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12, 40, 41]
    expected = flowroutes.trace(cpu, input_ids=ids)  # numba
    for kernel in ("auto", "triton", "torch"):
        got = flowroutes.trace(gpu, input_ids=ids, kernel=kernel)
        for name in ("attention", "attention_residual", "ffn", "ffn_residual", "top_probs"):
            np.testing.assert_allclose(getattr(got, name), getattr(expected, name), atol=1e-5,
                                       err_msg=f"{kernel}: {name}")
    batched = flowroutes.trace(gpu, ["w1 w2 w3 w4 w5 w6 w7", "w8 w9"])
    for tr, text in zip(batched, ["w1 w2 w3 w4 w5 w6 w7", "w8 w9"]):
        np.testing.assert_allclose(tr.attention, flowroutes.trace(cpu, text).attention, atol=1e-5)
    lazy = flowroutes.trace(gpu, input_ids=ids, lazy=True)
    np.testing.assert_allclose(lazy.full().attention, expected.attention, atol=1e-5)
