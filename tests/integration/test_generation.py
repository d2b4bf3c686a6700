"""flowroutes.generate on tiny and planted models: the answer and its probabilities against the trace's own forward
pass, teacher forcing, stop tokens, seeds, lazy rows computed once, both attributions against their literal
implementations (tests/unit/test_attribution.py), and known answers of planted models."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import flowroutes
from flowroutes.decoding import can_decode
from flowroutes.errors import FlowroutesError
from flowroutes.generation import generate
from tests.helpers.families import FAMILIES, tiny_family
from tests.helpers.models import VOCAB, tiny_llama, word_tokenizer
from tests.helpers.planted import copy_model, planted_llama, relative_head
from tests.helpers.tolerances import (
    ALTI_ROW_SUM_ABS,
    F64_HAND,
    F64_REORDER,
    OTHER_PATH,
    SAME_ARITHMETIC,
)
from tests.unit.test_attribution import alti_by_loops, flow_by_absorption

PROMPT = "w1 w2 w3 w4 w5"


@pytest.fixture(scope="module")
def loaded():
    return flowroutes.load_model(tiny_llama(), tokenizer=word_tokenizer())


def test_greedy_answer_and_probabilities_match_the_trace(loaded):
    """Greedy: each answer token is the trace's top token at its predicting position P + k - 1, and its
    probability (from generate's raw logits, KV cache) is the trace's (a plain forward pass) to float32 precision."""
    g = generate(loaded, PROMPT, 6)
    assert g.n_prompt == 5 and g.n_answer == 6 and g.stop_reason == "length"
    assert g.trace.n_tokens == 10  # prompt + answer[:-1]
    for k in range(6):
        q = g.position(k)
        assert q == 4 + k
        assert g.trace.top_ids[q, 0] == g.answer_ids[k]
        assert g.trace.top_probs[q, 0] == pytest.approx(g.answer_probs[k], abs=OTHER_PATH)
    assert g.tokens[:5] == ["w1", "w2", "w3", "w4", "w5"]


def test_target_is_teacher_forced_with_the_same_probabilities(loaded):
    g = generate(loaded, PROMPT, 6)
    forced = generate(loaded, PROMPT, target=" ".join(g.answer_tokens))
    assert forced.stop_reason == "target"
    assert forced.answer_ids.tolist() == g.answer_ids.tolist()
    np.testing.assert_allclose(forced.answer_probs, g.answer_probs, rtol=0, atol=OTHER_PATH)
    other = generate(loaded, PROMPT, target="w7 w8 w9")
    assert other.answer_ids.tolist() == [7, 8, 9]
    for k in range(3):  # the given tokens' probabilities, wherever they rank
        q = other.position(k)
        top = other.trace.top_ids[q].tolist()
        if 7 + k in top:
            assert other.trace.top_probs[q, top.index(7 + k)] == pytest.approx(other.answer_probs[k], abs=OTHER_PATH)
        else:
            assert other.answer_probs[k] <= other.trace.top_probs[q, -1] + OTHER_PATH


def test_stop_tokens_and_seeds(loaded):
    greedy = generate(loaded, PROMPT, 6).answer_ids.tolist()  # [37, 51, 37, 92, 51, 37] on this model
    stopped = generate(loaded, PROMPT, 6, stop=[f"w{greedy[1]}"])
    assert stopped.answer_ids.tolist() == greedy[:2] and stopped.stop_reason == "stop"
    assert generate(loaded, PROMPT, 6, stop=[greedy[0]]).answer_ids.tolist() == greedy[:1]
    a, b = (generate(loaded, PROMPT, 8, sample=True, seed=s).answer_ids.tolist() for s in (3, 3))
    c = generate(loaded, PROMPT, 8, sample=True, seed=4).answer_ids.tolist()
    assert a == b and a != c and a != greedy + greedy[:2]
    with pytest.raises(FlowroutesError, match="stop token 'w1 w2' is 2 tokens"):
        generate(loaded, PROMPT, 2, stop=["w1 w2"])
    with pytest.raises(FlowroutesError, match="has no chat template"):
        generate(loaded, PROMPT, 2, chat=True)
    with pytest.raises(FlowroutesError, match="max_new_tokens must be a positive integer"):
        generate(loaded, PROMPT, 0)
    with pytest.raises(FlowroutesError, match="the target must be the answer's text, got ' '"):
        generate(loaded, PROMPT, target=" ")
    assert generate(loaded, PROMPT, 6, stop=f"w{greedy[1]}").answer_ids.tolist() == greedy[:2]  # one, not a list


def test_rows_are_computed_once_and_routes_equal_the_full_trace(loaded):
    g = generate(loaded, PROMPT, 6)
    first = g.routes(0)
    n = g.trace.n_computed_rows
    assert 0 < n < 3 * 10  # a lazy walk: only the rows it reached
    assert g.routes(0) is first and g.trace.n_computed_rows == n
    g.scores("alti")  # every row up to the last predicting position (9): 3 blocks x 10
    assert g.trace.n_computed_rows == 30
    many = g.routes([1, 2, 3, 4, 5])
    assert g.trace.n_computed_rows == 30  # nothing computed again
    full = g.trace.full()
    for k, r in zip([1, 2, 3, 4, 5], many):
        want = full.routes(0.04, g.position(k))
        assert [(e.source, e.target, e.kind) for e in r.edges] == [(e.source, e.target, e.kind) for e in want.edges]
        np.testing.assert_allclose([e.weight for e in r.edges], [e.weight for e in want.edges], rtol=0,
                                   atol=SAME_ARITHMETIC)  # the lazy trace's own rows


@pytest.mark.parametrize("family", ["llama", "stablelm_parallel"])
def test_attributions_equal_the_literal_implementations(family):
    """ALTI rows against the loops on the full trace's arrays; routes rows against the absorbing chain; the span
    attribution is the mean of the matrix's rows."""
    if family == "llama":
        loaded = flowroutes.load_model(tiny_llama(seed=1), tokenizer=word_tokenizer())
    else:
        loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    g = generate(loaded, PROMPT, 5)
    full = g.trace.full() if hasattr(g.trace, "full") else g.trace
    alti_rows, flow_rows = g.scores("alti"), g.scores("routes", 0.04)
    for k in range(g.n_answer):
        q = g.position(k)
        np.testing.assert_allclose(alti_rows[k, : q + 1], alti_by_loops(full, q)[: q + 1], atol=F64_REORDER)
        assert alti_rows[k].sum() == pytest.approx(1.0, abs=ALTI_ROW_SUM_ABS)
        want, reached = flow_by_absorption(g.routes(k))
        np.testing.assert_allclose(flow_rows[k], want, atol=F64_REORDER)
        assert g.reached()[k] == pytest.approx(reached, abs=F64_REORDER)
    np.testing.assert_allclose(g.attribution((1, 4)), alti_rows[1:4, :5].mean(axis=0), atol=F64_HAND)
    assert g.matrix("routes").shape == (5, 5)
    with pytest.raises(FlowroutesError, match="span 3:9 is not within the answer's 5 tokens"):
        g.attribution((3, 9))


def test_a_copied_token_comes_first():
    """copy_model: ten heads of layer 0 read the first word from 5 positions back and write it where the unembedding
    reads it: the greedy answer is w3, and both attributions rank prompt position 0 first (well ahead)."""
    tok = word_tokenizer()
    loaded = flowroutes.load_model(copy_model([(0, h) for h in range(10)], 1.0, 20.0), tokenizer=tok)
    g = generate(loaded, "w3 w40 w50 w60 w70 w80", 1)
    assert g.answer_tokens == ["w3"] and g.answer_probs[0] > 0.99
    for method in ("alti", "routes"):
        scores = g.attribution(method=method)
        assert int(np.argmax(scores)) == 0, (method, scores)
        assert scores[0] > 2 * np.sort(scores)[-2]  # measured: alti 0.554 vs 0.167, routes 0.516 vs 0.204


def test_an_unseen_part_of_the_prompt_gets_zero():
    """Every head of a 2-block planted model attends to the previous token alone (softmax gap 40 logits), so the
    prediction at q reads only tokens q-2..q: every earlier prompt token gets (float) zero by ALTI and exactly zero
    by the routes, and q-2..q get something."""
    model = planted_llama(VOCAB, n_layers=2, n_heads=4)
    for layer in range(2):
        for head in range(4):
            relative_head(model, layer, head, offset=1)
    g = generate(flowroutes.load_model(model, tokenizer=word_tokenizer()), "w3 w40 w50 w60 w70 w80 w11 w12", 3)
    q = g.position(0)  # 7
    alti_row, flow_row = g.matrix("alti")[0], g.matrix("routes")[0]
    assert np.all(alti_row[: q - 2] < 1e-12)  # measured: at most 1.9e-19
    assert np.all(flow_row[: q - 2] == 0.0)
    assert np.all(alti_row[q - 2:] > 0.05)
    assert g.scores("alti")[2, : g.position(2) - 2].max() < 1e-12  # later answer tokens: the same window
    # multi-hop: answer token 2 (q = P + 1) reads prompt token P - 1 and answer tokens 0 and 1, which read P - 3..P - 1
    # of the prompt: through them it reaches P - 3 and P - 2, which it does not read itself, and nothing before
    p = g.n_prompt
    direct, hops = g.matrix("alti")[2], g.matrix("alti", through_answer=True)[2]
    assert np.all(direct[: p - 1] < 1e-12) and np.all(hops[: p - 3] < 1e-12)
    assert hops[p - 3] > 0.01 and hops[p - 2] > 0.01
    assert hops.sum() == pytest.approx(1.0, abs=ALTI_ROW_SUM_ABS) and direct.sum() < 0.5
    flow = g.matrix("routes", through_answer=True)[2]
    assert np.all(flow[: p - 3] == 0.0) and flow[p - 3] > 0.0


@pytest.mark.slow
def test_smollm2_greedy_is_the_argmax_and_chat_stops_at_its_end_token(smollm2):
    """The model's generation config (sampling defaults) does not leak into greedy decoding: each answer token is
    the trace's top token where it is predicted, with the same probability; the chat template's answer ends at
    <|im_end|>, a stop token of the tokenizer."""
    g = generate(smollm2, "When Mary and John went to the store, John gave a drink to", 8)
    assert g.answer_tokens[0] == " Mary" and g.answer_probs[0] > 0.5
    for k in range(8):
        q = g.position(k)
        assert g.trace.top_ids[q, 0] == g.answer_ids[k]
        assert g.trace.top_probs[q, 0] == pytest.approx(g.answer_probs[k], abs=OTHER_PATH)
    chat = generate(smollm2, "What is the capital of France?", 24, chat=True)
    assert chat.prompt.startswith("<|im_start|>") and chat.prompt.endswith("<|im_start|>assistant\n")
    assert chat.stop_reason == "stop" and chat.answer_tokens[-1] == "<|im_end|>" and "Paris" in chat.answer_text


def test_the_notebook_display_colours_the_prompt_by_the_answers_attribution(loaded):
    """`Generation._repr_html_`: each prompt token (escaped) at an alpha of its ALTI attribution over the largest,
    the answer's tokens with their probabilities."""
    import re

    g = generate(loaded, PROMPT, 3)
    page = g._repr_html_()
    scores = g.attribution(method="alti")
    alphas = [float(a) for a in re.findall(r"rgba\(214, 39, 40, ([0-9.]+)\)", page)]
    assert alphas == [round(s / scores.max(), 2) for s in scores] and max(alphas) == 1.0
    assert all(f">{t}</span>" in page for t in g.prompt_tokens)
    for t, p in zip(g.answer_tokens, g.answer_probs):
        assert f'title="p = {p:.3f}" style="border-bottom: 2px solid rgba(31, 119, 180, {p:.2f})">{t}</span>' in page


@contextlib.contextmanager
def _counting_passes(loaded):
    """Yields [n]: the model's forward passes (calls of the outer model) while the block runs."""
    count = [0]

    def hook(*_):
        count[0] += 1

    handle = loaded.model.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


#: the families `decoding` does not trace from their cached passes, and why
NOT_DECODED = {"gpt_neo": "sliding window 3", "mistral": "sliding window 3", "gemma2": "sliding window 3",
               "gemma3_text": "sliding window 3", "bloom": "attention not recordable (ALiBi)",
               "falcon_alibi_sequential": "attention not recordable (ALiBi)", "gptj": "parallel blocks",
               "gpt_neox": "parallel blocks", "falcon": "parallel blocks", "falcon_new_arch": "parallel blocks",
               "phi": "parallel blocks", "stablelm_parallel": "parallel blocks"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_generation_is_traced_from_its_own_cached_passes(family):
    """The answer is the model's own greedy `generate`'s with its probabilities; a model `decoding` can trace makes
    one pass per answer token (prompt, then each token with the KV cache) and no other, and its trace equals the
    trace of prompt + answer[:-1] in one pass to float32 rounding; the others (sliding window 3, unrecordable
    attention, parallel blocks) generate and trace in one more pass, giving that trace itself."""
    from flowroutes.generation import _generate, stop_ids
    from flowroutes.trace import tokenize

    loaded = flowroutes.load_model(tiny_family(family), tokenizer=word_tokenizer())
    prompt_ids = tokenize(loaded, PROMPT)
    want, want_probs, _ = _generate(loaded, prompt_ids, 6, False, None, 1.0, stop_ids(loaded, None))
    with _counting_passes(loaded) as passes:
        g = generate(loaded, PROMPT, 6)
    assert g.answer_ids.tolist() == want.tolist()
    np.testing.assert_allclose(g.answer_probs, want_probs, atol=OTHER_PATH)
    decodes = can_decode(loaded, g.trace.n_tokens)
    assert decodes == (family not in NOT_DECODED)
    if decodes:
        assert passes[0] == g.n_answer
    one_pass = flowroutes.trace(loaded, input_ids=np.concatenate([g.prompt_ids, g.answer_ids[:-1]]), lazy=True)
    got, want_tr = (t.full() if hasattr(t, "full") else t for t in (g.trace, one_pass))
    for name in ("attention", "attention_residual", "ffn", "ffn_residual"):
        diff = np.abs(getattr(got, name) - getattr(want_tr, name)).max()
        assert diff <= (OTHER_PATH if decodes else 0.0), (name, diff)
    first = g.position(0)  # a decoded trace predicts at the answer's positions only (the LM head runs there)
    np.testing.assert_allclose(got.top_probs[first:], want_tr.top_probs[first:], atol=OTHER_PATH)
    if decodes:
        assert (got.top_ids[:first] == -1).all() and got.meta["predictions"] == "answer"


def test_a_target_is_traced_in_the_pass_that_gives_its_probabilities(loaded):
    with _counting_passes(loaded) as passes:
        forced = generate(loaded, PROMPT, target="w7 w8 w9")
    assert passes[0] == 1
    assert (forced.trace.top_ids[:4] == -1).all() and forced.trace.meta["predictions"] == "answer"  # LM head: P-1 on
    logits = loaded.model(input_ids=torch.as_tensor(forced.trace.input_ids)[None]).logits[0].double()
    want = torch.softmax(logits, dim=-1)[[4, 5, 6], [7, 8, 9]].detach().numpy()
    np.testing.assert_allclose(forced.answer_probs, want, rtol=OTHER_PATH)
