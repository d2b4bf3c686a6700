"""Lazy routes and batched traces agree with the plain full trace (the reference path)."""

import os

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.trace import LazyTrace
from tests.helpers.tolerances import IMPORTANCE_SUM_ABS, OTHER_PATH


def assert_same_trace(a, b, atol=OTHER_PATH):
    assert a.tokens == b.tokens
    for name in ("attention", "attention_residual", "ffn", "ffn_residual", "top_probs"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, err_msg=name)
    np.testing.assert_array_equal(a.top_ids[:, 0], b.top_ids[:, 0])


def assert_same_routes(a, b, atol=OTHER_PATH):
    assert a.nodes == b.nodes
    assert [(e.source, e.target, e.kind, sorted(e.heads)) for e in a.edges] == \
        [(e.source, e.target, e.kind, sorted(e.heads)) for e in b.edges]
    np.testing.assert_allclose([e.weight for e in a.edges], [e.weight for e in b.edges], atol=atol)
    assert a.active_heads == b.active_heads


def test_lazy_routes_equal_full_routes(tiny):
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12]
    full = flowroutes.trace(tiny, input_ids=ids)
    lazy = flowroutes.trace(tiny, input_ids=ids, lazy=True)
    assert isinstance(lazy, LazyTrace)
    for tau, pos in ((0.04, -1), (0.1, 5), (0.02, 0)):
        assert_same_routes(lazy.routes(tau, pos), full.routes(tau, pos))
    assert_same_trace(lazy.full(), full)


def test_batched_traces_equal_unbatched(tiny):
    prompts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w1 w2", "w3"]
    batched = flowroutes.trace(tiny, prompts, batch_size=3)
    assert len(batched) == 4
    for text, tr in zip(prompts, batched):
        assert_same_trace(tr, flowroutes.trace(tiny, text))
        assert tr.prompt == text


@pytest.mark.slow
def test_smollm2_lazy_and_batched(smollm2, ioi_trace):
    lazy = flowroutes.trace(smollm2, ioi_trace.prompt, lazy=True)
    for tau in (0.04, 0.01):
        assert_same_routes(lazy.routes(tau), ioi_trace.routes(tau))
    # only the rows the walk reached were computed
    assert 0 < lazy.n_computed_rows < ioi_trace.n_layers * ioi_trace.n_tokens
    other = "The war lasted from the year 1732 to the year 17"
    batched = flowroutes.trace(smollm2, [other, ioi_trace.prompt])
    assert_same_trace(batched[1], ioi_trace)
    assert_same_trace(batched[0], flowroutes.trace(smollm2, other))
    assert torch.equal(torch.as_tensor(batched[1].input_ids), torch.as_tensor(ioi_trace.input_ids))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neo", "opt", "bloom", "mistral", "qwen3", "gemma2", "olmo2"])
def test_lazy_routes_equal_full_routes_in_every_sequential_family(family):
    """Recorded-attention lazy traces (sdpa forward, eager rows on demand) and the rerun fallback (modules
    outside transformers' AttentionInterface: GPT-Neo, BLOOM) give the full trace's routes."""
    from flowroutes.capture import can_record
    from tests.helpers.families import tiny_family
    from tests.helpers.models import word_tokenizer

    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12]
    full = flowroutes.trace(loaded, input_ids=ids)
    lazy = flowroutes.trace(loaded, input_ids=ids, lazy=True)
    assert can_record(loaded) == (family not in ("gpt_neo", "bloom"))
    for tau, pos in ((0.04, -1), (0.1, 6)):
        assert_same_routes(lazy.routes(tau, pos), full.routes(tau, pos))
    assert_same_trace(lazy.full(), full)


def damp_head(loaded, head: int, factor: float) -> None:
    """Scale head `head`'s block of every layer's output projection W_O by `factor`: its values f[head] (W_V W_O of
    the normed input) scale by it, as in a head that is nearly silent."""
    cols = slice(head * loaded.adapter.head_dim, (head + 1) * loaded.adapter.head_dim)
    with torch.no_grad():
        for layer in range(loaded.n_layers):
            attn = loaded.adapter.attention_module(layer)
            if loaded.model.config.model_type == "gpt2":
                attn.c_proj.weight[cols, :] *= factor  # Conv1D: [in = H * dh, out]
            else:
                attn.o_proj.weight[:, cols] *= factor  # nn.Linear: [out, in = H * dh]


@pytest.mark.parametrize("tolerance", [1e-4, 1e-2, 1e-1])
def test_pruned_importances_stay_within_the_tolerance(tiny, tolerance):
    """Every pruned importance is within `prune` of the exact one, and the bound really skips sub-edges at every
    tolerance: head 0's values are damped by 1e-7, so each of its sub-edges has a bound alpha ||f||_1 <= ||f[0]||_1
    (~3e-6 here) below the cap tolerance * (residual proximity) / (H (p + 1)) of every row whose residual proximity
    is not tiny (above layer 0 it is >= 12 here: caps >= 2e-5 at 1e-4). Where the cap is >= ||f[0]||_1 the skip is
    certain, whatever alpha is."""
    from flowroutes.capture import run_with_capture
    from flowroutes.importance import head_values, proximity, prunable

    damp_head(tiny, 0, 1e-7)
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12, 40, 41, 42]
    exact = flowroutes.trace(tiny, input_ids=ids)
    pruned = flowroutes.trace(tiny, input_ids=ids, prune=tolerance)
    for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
        err = np.abs(getattr(pruned, name) - getattr(exact, name)).max()
        assert err <= tolerance, (name, err)
    # the sub-edges the bound skips (with non-zero attention), recomputed from the same captures
    caps = []
    run_with_capture(tiny, torch.tensor(ids), caps.append)
    adapter, rows, skipped, certain = tiny.adapter, torch.arange(len(ids)), 0, 0
    for cap in caps:
        f, _ = head_values(cap.normed, adapter.ov_weights(cap.layer), adapter.input_norm_bias(cap.layer),
                           adapter.kv_heads)
        known = proximity(cap.x_in, cap.x_mid)  # the residual's proximity: part of every node's total
        mask = prunable(cap.alpha[None], f[:, None], known[None], rows[None], tolerance)[0]  # a batch of one
        attended = cap.alpha > 0
        skipped += int((mask & attended).sum())
        # rows whose cap is at least head 0's largest ||f[0, j]||_1 (alpha <= 1): all its sub-edges there are skipped
        sure = tolerance * known / (f.shape[0] * (rows + 1)) >= f[0].abs().sum(-1).max()
        assert mask[0][sure][attended[0][sure]].all(), cap.layer
        certain += int(attended[0][sure].sum())
    assert certain >= 2 * len(ids) * (len(ids) + 1) // 2  # layers 1 and 2 at least: every row there is sure
    assert skipped >= certain > 0


def test_prune_must_be_a_tolerance(tiny):
    with pytest.raises(flowroutes.FlowroutesError, match="prune"):
        flowroutes.trace(tiny, input_ids=[1, 2, 3], prune=1.5)


def test_the_kernel_leaves_torch_threads_alone(tiny):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        flowroutes.trace(tiny, input_ids=[1, 2, 3, 4, 5])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_lazy_trace_leaves_torch_threads_alone_in_a_fresh_process():
    """The lazy engine's first numba kernel (the residual edges' proximities, during the forward pass) used to run
    outside `numba_threads`: in a fresh process, numba's OpenMP layer then put torch back from 1 thread to 2."""
    import subprocess
    import sys

    code = ("import torch, flowroutes\n"
            "from tests.helpers.models import tiny_llama, word_tokenizer\n"
            "m = flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())\n"
            "torch.set_num_threads(1)\n"
            "flowroutes.trace(m, input_ids=[1, 2, 3, 4, 5], lazy=True).routes(0.04)\n"
            "print(torch.get_num_threads())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_predictions_at_the_last_position_or_none_leave_everything_else_as_the_default(tiny):
    """predictions="last"/"none": the LM head sees only those positions; importances and the predictions that
    are made equal the default trace's."""
    prompts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9", "w10 w11 w12 w1 w2"]
    default = flowroutes.trace(tiny, prompts, batch_size=3)
    head = tiny.model.get_output_embeddings()
    seen = []
    handle = head.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[:-1])))
    try:
        last = flowroutes.trace(tiny, prompts, batch_size=3, predictions="last")
        none = flowroutes.trace(tiny, prompts, batch_size=3, predictions="none")
        lazy = flowroutes.trace(tiny, prompts[0], lazy=True, predictions="last")
    finally:
        handle.remove()
    assert seen == [(3, 1), (3, 0), (1, 1)]  # batch x positions at the LM head
    for ref, got_last, got_none in zip(default, last, none):
        for got in (got_last, got_none):
            for name in ("attention", "attention_residual", "ffn", "ffn_residual", "degenerate_attention"):
                np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
            assert got.tokens == ref.tokens
        np.testing.assert_array_equal(got_last.top_ids[-1], ref.top_ids[-1])
        np.testing.assert_allclose(got_last.top_probs[-1], ref.top_probs[-1], rtol=OTHER_PATH)
        assert got_last.top_tokens[-1] == ref.top_tokens[-1]
        assert (got_last.top_ids[:-1] == -1).all() and np.isnan(got_last.top_probs[:-1]).all()
        assert got_last.top_tokens[:-1] == [[]] * (ref.n_tokens - 1)
        assert (got_none.top_ids == -1).all() and got_none.top_tokens == [[]] * ref.n_tokens
        assert got_last.meta["predictions"] == "last" and "predictions" not in ref.meta
        route_last, route_ref = got_last.routes(0.04), ref.routes(0.04)
        assert_same_routes(route_last, route_ref)
        assert route_last.top_tokens == route_ref.top_tokens
    np.testing.assert_array_equal(lazy.top_ids[-1], default[0].top_ids[-1])
    assert_same_routes(lazy.routes(0.04), default[0].routes(0.04))


def test_predictions_must_be_all_last_or_none(tiny):
    with pytest.raises(flowroutes.FlowroutesError, match="predictions"):
        flowroutes.trace(tiny, input_ids=[1, 2, 3], predictions="first")


def test_predictions_of_a_model_that_cannot_skip_the_lm_head(tiny, monkeypatch):
    """A forward without `logits_to_keep`: the positions are picked from the full logits instead."""
    full_forward = tiny.model.forward

    def forward(input_ids=None, use_cache=None):
        return full_forward(input_ids=input_ids, use_cache=use_cache)

    prompts = ["w1 w2 w3 w4 w5 w6 w7", "w8 w9"]
    default = flowroutes.trace(tiny, prompts)
    monkeypatch.setattr(tiny.model, "forward", forward)
    for got, ref in zip(flowroutes.trace(tiny, prompts, predictions="last"), default):
        np.testing.assert_array_equal(got.top_ids[-1], ref.top_ids[-1])
        np.testing.assert_array_equal(got.top_probs[-1], ref.top_probs[-1])
        np.testing.assert_array_equal(got.attention, ref.attention)
        assert (got.top_ids[:-1] == -1).all()


@pytest.mark.parametrize("family", ["llama", "gptj", "gemma2", "falcon_new_arch", "gpt2"])
@pytest.mark.parametrize("prune", [0.0, 1e-2])
def test_one_kernel_call_per_block_equals_the_reference_path_prompt_by_prompt(family, prune):
    """The whole batch goes through the fused kernel in one call per block (sequential and parallel blocks,
    post-norm scales, pruning): each trace equals the chunked torch reference run on its prompt alone."""
    from tests.helpers.families import tiny_family
    from tests.helpers.models import word_tokenizer

    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w8 w9", "w10 w11 w12 w1 w2", "w3", "w4 w5 w6 w7 w8 w9"]
    batched = flowroutes.trace(loaded, prompts, batch_size=5, prune=prune)
    for text, tr in zip(prompts, batched):
        ref = flowroutes.trace(loaded, text, kernel="torch", prune=prune)
        assert_same_trace(tr, ref)
        for name in ("degenerate_attention", "degenerate_ffn"):
            np.testing.assert_array_equal(getattr(tr, name), getattr(ref, name))
        np.testing.assert_allclose(tr.attention.sum(axis=(1, 3)) + tr.attention_residual
                                   + (tr.ffn * np.array(tr.parallel)[:, None]), 1.0, atol=IMPORTANCE_SUM_ABS)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "mistral", "gpt_neo", "bloom", "gptj"])
def test_batched_lazy_routes_equal_the_unbatched_full_path(family):
    """trace(model, prompts, lazy=True): one forward pass per batch, then the routes of every prompt walked together,
    each block's rows of all prompts in one kernel call; routes and rows equal each prompt's own full trace."""

    from tests.helpers.families import tiny_family
    from tests.helpers.models import word_tokenizer

    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w8 w9", "w10 w11 w12 w1 w2 w3 w40", "w3", "w4 w5 w6 w7 w8 w9"]
    full = [flowroutes.trace(loaded, text) for text in prompts]
    forward = []
    handle = loaded.model.register_forward_hook(lambda *_: forward.append(1))
    try:
        lazy = flowroutes.trace(loaded, prompts, lazy=True, batch_size=8)
    finally:
        handle.remove()
    assert len(forward) == 1
    parallel = any(full[0].parallel)
    assert all(isinstance(tr, flowroutes.Trace if parallel else LazyTrace) for tr in lazy)
    for tau in (0.04, 0.1):  # (the second walk reuses the rows the first one computed)
        before = 0 if parallel else lazy[0].n_kernel_calls
        got = lazy.routes(tau)
        if not parallel:  # all five prompts' rows of a block in one kernel call: at most one call per block
            assert (0 if tau == 0.1 else 1) <= lazy[0].n_kernel_calls - before <= loaded.n_layers
        for r, ref in zip(got, full):
            assert_same_routes(r, ref.routes(tau))
    positions = [3, 0, -2, 0, 5]
    for r, ref, p in zip(lazy.routes(0.04, positions), full, positions):
        assert_same_routes(r, ref.routes(0.04, p))
    if not parallel:
        assert 0 < lazy[0].n_computed_rows < loaded.n_layers * full[0].n_tokens
        for tr, ref in zip(lazy, full):
            assert_same_trace(tr.full(), ref)
            assert_same_routes(tr.routes(0.02, 1 % ref.n_tokens), ref.routes(0.02, 1 % ref.n_tokens))


def test_the_natural_loop_over_a_lazy_batch_walks_with_the_batch(tiny):
    """`for tr in trace(model, prompts, lazy=True): tr.routes()`: the second prompt to ask walks every prompt not yet
    asked with it (so the loop costs what one batched walk costs), and every routes equals the prompt's full trace."""
    prompts = ["w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w8 w9 w3", "w10 w11 w12 w1 w2 w3 w40", "w3", "w4 w5 w6 w7"]
    full = [flowroutes.trace(tiny, text) for text in prompts]
    lazy = flowroutes.trace(tiny, prompts, lazy=True, batch_size=8)
    assert_same_routes(lazy[0].routes(0.04), full[0].routes(0.04))
    assert all(tr.n_computed_rows == 0 for tr in lazy[1:])  # the first walk is its own
    assert_same_routes(lazy[2].routes(0.04), full[2].routes(0.04))
    assert all(tr.n_computed_rows > 0 for tr in lazy)  # the second walked the batch's other prompts too
    for tr, ref in zip(lazy, full):  # each gets its routes once more: the kept ones, then walked again
        assert_same_routes(tr.routes(0.04), ref.routes(0.04))
        assert_same_routes(tr.routes(0.04), ref.routes(0.04))
    # a position beyond a shorter prompt: the shared walk leaves that prompt out instead of failing
    assert_same_routes(lazy[0].routes(0.1, 6), full[0].routes(0.1, 6))
    assert_same_routes(lazy[2].routes(0.1, 6), full[2].routes(0.1, 6))
    assert_same_routes(lazy[3].routes(0.1, 0), full[3].routes(0.1, 0))


def test_many_positions_of_one_lazy_trace(tiny):
    """Routes of many positions of one lazy trace: at the third position every row is computed at once (one call per
    block, the full trace's cost, instead of many small ones); a list of positions is walked together."""
    ids = [3, 9, 27, 81, 3, 9, 50, 2, 7, 7, 12]
    full = flowroutes.trace(tiny, input_ids=ids)
    lazy = flowroutes.trace(tiny, input_ids=ids, lazy=True)
    for p in (10, 9):
        assert_same_routes(lazy.routes(0.04, p), full.routes(0.04, p))
    assert lazy.n_computed_rows < tiny.n_layers * len(ids)
    assert_same_routes(lazy.routes(0.04, 8), full.routes(0.04, 8))
    assert lazy.n_computed_rows == tiny.n_layers * len(ids)
    assert_same_trace(lazy.full(), full)
    other = flowroutes.trace(tiny, input_ids=ids, lazy=True)
    together = other.routes(0.04, position=[10, 4, -1, 0])
    assert len(together) == 4 and other.n_computed_rows < tiny.n_layers * len(ids)
    for r, p in zip(together, (10, 4, -1, 0)):
        assert_same_routes(r, full.routes(0.04, p))
