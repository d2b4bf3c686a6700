"""W_OV singular vectors (sec. 5.2, fig. 11) on hand-built cases: thin SVD, topic vocabularies, the summary and the
claim. On tiny models: tests/integration/test_analyses_svd.py."""

import types

import numpy as np
import pytest
import torch

from flowroutes import report
from flowroutes.analyses import svd
from flowroutes.analyses.base import Context
from flowroutes.analyses.rows import table_from_columns
from tests.helpers.results import domains_result
from tests.helpers.tolerances import SVD_NULL_REL

OPTS = types.SimpleNamespace(n_boot=1000, seed=0, heads=[])


def test_thin_svd_equals_full_svd_of_the_product():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 15, generator=gen, dtype=torch.float64)
    s, vt = svd.thin_svd(a, b)
    _u, s_full, vt_full = torch.linalg.svd(a @ b)
    torch.testing.assert_close(s, s_full[:3])
    assert s_full[3:].abs().max() < SVD_NULL_REL * s_full[0]  # rank 3
    # the same right singular vectors up to sign
    torch.testing.assert_close((vt @ vt_full[:3].T).abs(), torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(vt @ vt.T, torch.eye(3, dtype=torch.float64))


SVD_TOKENS = {  # head -> its top tokens (one singular vector, 4 ranks)
    (0, 0): ["def", "{", "the", "x"],  # code-specific: 2 of 4 code tokens
    (0, 1): ["и", "в", "и", "of"],  # non-English-specific: 3 of 4 non-English tokens
    (1, 0): ["the", "def", "a", "b"],  # other heads: code 1/4, non-English 0
    (1, 1): ["в", "a", "b", "c"],  # code 0, non-English 1/4
}
TEXT_TOKENS = {"general": ["the", "a", "the", "of"], "code": ["def", "{", "the", "def"], "russian": ["и", "в"],
               "english": ["the", "and"]}


def _svd_result(tokens=SVD_TOKENS):
    cols = {k: [] for k in ("layer", "head", "vector", "singular_value", "rank", "token_id", "token", "score")}
    for (layer, head), words in tokens.items():
        for rank, word in enumerate(words):
            for key, value in (("layer", layer), ("head", head), ("vector", 0), ("singular_value", 1.0),
                               ("rank", rank), ("token_id", rank), ("token", word), ("score", 1.0)):
                cols[key].append(value)
    return report.Result("svd", "s", "", table_from_columns(cols), data={"boot": {"n_boot": 1000, "seed": 0}})


def test_topic_lexicons_by_hand():
    code = ["def", " def", " self", "lambda", "{", " ==", "[]", "_", "True", " kwargs", "isinstance"]
    assert all(svd.is_code(t) for t in code)
    # English words among Python's keywords and builtins, round brackets and prose punctuation are no code
    assert not any(svd.is_code(t) for t in [" and", "for", " open", "list", "(", ")", ".", ",", " the", "x", " "])
    assert all(svd.is_non_english(t) for t in [" и", "дом", "Дом", " della", " más", "ñ", " que", " gli"])
    assert not any(svd.is_non_english(t) for t in [" the", "def", " a", " in", "e", "y", " con", ""])


def test_topic_tokens_claim():
    specific = {"code": [(0, 0)], "non-english": [(0, 1)]}
    claim, = svd.claims({"svd": _svd_result(), "domains": domains_result(specific, TEXT_TOKENS)})
    # topic heads: (1 + 1 + 0 + 0) code hits and (1 + 1 + 1 + 0) non-English hits of 8 tokens = 5/8; other heads,
    # scored against both topics: 2 hits of 16 = 1/8. One topic head per topic: each replicate draws one other head
    # at random per topic, code's L1H0 (1 hit) or L1H1 (0), non-English's L1H0 (0) or L1H1 (1): 0, 1 or 2 hits of
    # 8 with chances 1/4, 1/2, 1/4, so the difference is 5/8, 1/2 or 3/8: the interval [3/8, 5/8]. Per topic: code
    # 2/4 - (1/4 or 0), non-English 3/4 - (0 or 1/4).
    assert claim.key == "svd-topic-tokens" and claim.verdict == "holds"
    assert (claim.estimate.value, claim.estimate.low, claim.estimate.high) == pytest.approx((0.5, 0.375, 0.625))
    assert claim.estimate.units == 4
    assert "code 0.375 [0.250, 0.500]" in claim.why and "non-english 0.625 [0.500, 0.750]" in claim.why
    # the code-specific head promotes only English/general words: the pooled share drops to (0 + 3) / 8 = 3/8
    tokens = dict(SVD_TOKENS)
    tokens[(0, 0)] = ["the", "of", "a", "x"]
    tokens[(1, 0)] = ["def", "{", "и", "в"]  # and another head now promotes topic tokens: 4 hits of 16
    claim, = svd.claims({"svd": _svd_result(tokens), "domains": domains_result(specific, TEXT_TOKENS)})
    assert claim.verdict == "does not hold"
    assert claim.estimate.value == pytest.approx(3 / 8 - 5 / 16)
    # without a domains result, or without code and non-English domains
    claim, = svd.claims({"svd": _svd_result()})
    assert claim.verdict == "cannot be tested" and "domains" in claim.why
    only_general = domains_result({"code": [(0, 0)]}, {"general": ["the"], "addition": ["1"]})
    claim, = svd.claims({"svd": _svd_result(), "domains": only_general})
    assert claim.verdict == "cannot be tested"
    assert svd.claims({}) == []


def test_topic_heads_that_promote_what_their_texts_hold_are_no_topic_heads():
    """The code texts are full of 'value' and 'returns' (docs about code), the russian ones of Latin 'kto' and
    'eto': the code head promotes the first two, the non-English head the others. A lexicon made from the texts (the
    rule until 2026-12-03) counted them as code and non-English; the fixed lexicons do not."""
    texts = {"general": ["the", "a", "of", "the"], "code": ["value", "returns", "value", "the"],
             "russian": ["kto", "eto"], "english": ["the", "and"]}
    tokens = dict(SVD_TOKENS)
    tokens[(0, 0)] = ["value", "returns", "value", "returns"]
    tokens[(0, 1)] = ["kto", "eto", "kto", "eto"]
    specific = {"code": [(0, 0)], "non-english": [(0, 1)]}
    claim, = svd.claims({"svd": _svd_result(tokens), "domains": domains_result(specific, texts)})
    # topic heads: 0 hits of 8; other heads: code 'def' and non-English 'в', 2 of 16
    assert claim.verdict == "does not hold"
    assert claim.estimate.value == pytest.approx(-1 / 8)
    assert claim.estimate is claim.conditions[0].quantity


def test_random_head_baseline_draws_as_many_heads_as_there_are_topic_heads():
    # one topic head, 2 hits of 4; four other heads, one of them all hits: every other head's share is 1/4, but a
    # random draw of one head is that head (share 1) a quarter of the time
    topic, other = np.array([[2.0, 4.0]]), np.array([[4.0, 4.0], [0.0, 4.0], [0.0, 4.0], [0.0, 4.0]])
    est = svd.random_head_ci({"code": (topic, other)}, {"n_boot": 2000, "seed": 0})
    assert (est.value, est.low, est.high) == pytest.approx((0.25, -0.5, 0.5))
    assert est.units == 5 and est.unit == "heads"


def test_summary_reports_the_topic_measure():
    specific = {"code": [(0, 0)], "non-english": [(0, 1)]}
    ctx = Context(_svd_result().table, 2, 2, OPTS, {}, None, {"domains": domains_result(specific, TEXT_TOKENS)})
    result = svd.summarize(ctx)
    assert result.data["heads_shown"] == [(0, 0), (0, 1)] and "final_norm" not in result.summary
    assert result.summary["topic tokens (claim svd-topic-tokens)"]["difference"].value == pytest.approx(0.5)
    assert result.summary["top_tokens"]["L0H1 v0 (sigma 1)"] == ["и", "в", "и", "of"]
