"""Analyses: head shares, head roles, token words and k-NN on hand-built cases."""

import types

import numpy as np
import pytest

from flowroutes.analyses import compute
from flowroutes.analyses.vectors import knn_correct
from tests.helpers.tolerances import F32_STORED, FEW_F32_ABS


def test_head_shares_by_hand():
    att = np.zeros((1, 1, 4, 4))
    att[0, 0, 1, :2] = [0.6, 0.2]  # p=1: 0.6 of 0.8 on the previous token (j = 0)
    att[0, 0, 2, :3] = [0.1, 0.1, 0.2]  # p=2: later subword of word (1, 2): same-word share 0.1/0.4
    att[0, 0, 3, :4] = [0.0, 0.3, 0.1, 0.0]
    tr = types.SimpleNamespace(attention=att)
    s = compute.head_shares(tr, [0, 1, 1, 2])
    np.testing.assert_allclose(s["total"][0, 0], [0, 0.8, 0.4, 0.4], atol=F32_STORED)
    np.testing.assert_allclose(s["previous"][0, 0, 1:], [0.75, 0.25, 0.25], atol=FEW_F32_ABS)
    assert np.isnan(s["previous"][0, 0, 0]) and np.isnan(s["same_word"][0, 0, [0, 1, 3]]).all()
    assert s["same_word"][0, 0, 2] == pytest.approx(0.25)


def test_head_roles_by_hand():
    # 10 cases, 2 heads: head 0 has share 0.9 in 7 cases (70%: a previous-token head), head 1 in 6 only
    prev = np.full((10, 1, 2), 0.1)
    prev[:7, 0, 0] = 0.9
    prev[:6, 0, 1] = 0.9
    prev[9, 0, 0] = np.nan
    same = np.array([[[0.8, 0.9]], [[0.7, 0.9]], [[0.1, 0.6]]])  # head 1: all later subwords > 0.5
    first = np.array([[[0.0, 1e-5]], [[0.0, 0.0]], [[0.0, 0.3]], [[0.2, 1e-6]]])  # head 1 quiet in 3/4
    r = compute.head_roles(prev, same, first)
    np.testing.assert_allclose(r["previous_frequency"], [[0.7, 0.6]])
    np.testing.assert_allclose(r["merging_frequency"], [[2 / 3, 1.0]])
    np.testing.assert_allclose(r["first_quiet_frequency"], [[0.75, 0.75]])
    assert r["previous_token"].tolist() == [[True, False]]
    assert r["subword_merging"].tolist() == [[False, True]]


def test_token_words():
    text = "When Mary, 1732 x"
    offsets = [(0, 4), (4, 9), (9, 10), (10, 11), (11, 12), (12, 13), (13, 15), (15, 16), (16, 17)]
    # tokens: When | ' Mary' | ',' | ' ' | '1' | '7' | '32' | ' ' | 'x'
    words = compute.token_words(offsets, text, compute.word_spans(text))
    assert words == [0, 1, 2, 3, 3, 3, 3, 4, 4]


def test_knn_correct():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (30, 3)), rng.normal(5, 0.1, (10, 3))])
    assert knn_correct(x, np.array(["a"] * 30 + ["b"] * 10)).tolist() == [1.0] * 40
    # labels that do not follow the points: k-NN of random labels on one blob is wrong often
    labels = np.array(["a", "b"] * 20)
    assert knn_correct(rng.normal(0, 1, (40, 3)), labels).mean() < 0.8
