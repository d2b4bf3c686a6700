"""Lazy traces read the head values off the value vectors the forward pass recorded: f_h(x_j) = (v_j - beta W_V -
b_V) W_O^h must equal the head values computed from the normed states, LN(x_j) - beta through W_V W_O^h, in every
family whose attention can be recorded; and lazy routes must equal full ones there."""

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.capture import RecordedAttention, can_record, run_with_capture
from flowroutes.importance import centred_values, head_outputs, head_values_by_head
from tests.helpers.families import FAMILIES, tiny_family
from tests.helpers.models import word_tokenizer
from tests.helpers.tolerances import OTHER_PATH, REBUILD_REL

IDS = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12]


def _loaded(family):
    return flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_head_values_from_recorded_values_equal_those_from_the_normed_states(family):
    loaded = _loaded(family)
    adapter = loaded.adapter
    if not can_record(loaded):
        pytest.skip(f"{family}: attention outside transformers' AttentionInterface (traced from its normed states)")
    eager, recorded = [], []
    run_with_capture(loaded, torch.tensor(IDS), eager.append)
    run_with_capture(loaded, torch.tensor(IDS), recorded.append, record=True)
    assert len(recorded) == adapter.n_layers
    for cap, rec in zip(eager, recorded):
        assert isinstance(rec.attention_call, RecordedAttention)
        ov, beta = adapter.ov_weights(cap.layer), adapter.input_norm_bias(cap.layer)
        values = rec.attention_call.values[0].transpose(0, 1)  # [T, KV, dh]
        got = head_outputs(centred_values(values, ov, beta), ov.output, adapter.kv_heads, torch.float32)
        want = head_values_by_head(cap.normed, ov, beta, adapter.kv_heads)
        assert got.shape == want.shape == (adapter.n_heads, len(IDS), cap.x_out.shape[-1])
        scale = want.abs().max().item()
        assert scale > 0
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=REBUILD_REL * scale, rtol=0,
                                   err_msg=f"layer {cap.layer}")


SEQUENTIAL = [f for f in sorted(FAMILIES) if f not in ("gptj", "gpt_neox", "falcon", "falcon_new_arch", "phi",
                                                      "stablelm_parallel")]


@pytest.mark.parametrize("family", SEQUENTIAL)
def test_lazy_traces_equal_full_traces_in_every_sequential_family(family):
    loaded = _loaded(family)
    if any(loaded.adapter.is_parallel(layer) for layer in range(loaded.n_layers)):
        pytest.skip(f"{family} has parallel blocks: lazy traces are full traces there")
    full = flowroutes.trace(loaded, input_ids=IDS)
    lazy = flowroutes.trace(loaded, input_ids=IDS, lazy=True)
    got = lazy.full()
    for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
        np.testing.assert_allclose(getattr(got, name), getattr(full, name), atol=OTHER_PATH, err_msg=name)
    got_routes, want_routes = lazy.routes(0.04), full.routes(0.04)
    assert got_routes.active_heads == want_routes.active_heads
    assert len(got_routes.to_dict()["edges"]) == len(want_routes.to_dict()["edges"])


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_head_values_in_chunks_of_heads_give_the_same_lazy_routes(family, monkeypatch):
    """With room for one head's values at a time, the kernel carries each node's sums from head to head: the
    batched lazy traces equal the full ones."""
    import importlib

    lazy_module = importlib.import_module("flowroutes.lazy")
    loaded = _loaded(family)
    prompts = [IDS, IDS[:5], IDS[2:9]]
    full = flowroutes.trace(loaded, input_ids=prompts)
    whole = flowroutes.trace(loaded, input_ids=prompts, lazy=True)
    whole.routes(0.04)
    monkeypatch.setattr(lazy_module, "HEAD_VALUE_ELEMENTS", 1)  # the memory budget of the head values
    lazy = flowroutes.trace(loaded, input_ids=prompts, lazy=True)
    lazy.routes(0.04)
    # the same walk, one kernel call per head where all heads took one
    assert lazy[0].n_kernel_calls == loaded.n_heads * whole[0].n_kernel_calls > 0
    for got, want in zip(lazy, full):
        got = got.full()
        for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=OTHER_PATH, err_msg=name)


@pytest.mark.parametrize("kernel", ["numba", "torch"])
def test_lazy_traces_keep_residual_proximities_or_the_residual_itself(kernel):
    """The fused CPU kernel keeps each block's residual-edge proximities instead of x^{l-1}; the prompt-by-prompt
    kernels keep x^{l-1}. Both give the full trace's importances."""
    loaded = _loaded("llama")
    prompts = [IDS, IDS[:4]]
    full = flowroutes.trace(loaded, input_ids=prompts)
    lazy = flowroutes.trace(loaded, input_ids=prompts, lazy=True, kernel=kernel)
    batch = lazy[0].batch
    if kernel == "numba":
        assert batch.x_in[0] is None and batch.residual[0].shape == (2, len(IDS))
    else:
        assert batch.residual[0] is None and batch.x_in[0].shape[:2] == (2, len(IDS))
    for got, want in zip(lazy, full):
        got = got.full()
        for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), atol=OTHER_PATH, err_msg=name)
