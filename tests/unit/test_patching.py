"""flowroutes.patching's metric and agreement helpers on hand-built numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowroutes.patching import metric_from_logits, spearman, top_k, top_k_overlap


def test_metric_from_logits_by_hand():
    from flowroutes.patching.core import TaskBatch

    logits = torch.tensor([[0.0, 1.0, 3.0, -1.0], [2.0, 0.0, 0.0, 0.0]])  # [N=2, V=4]
    b = TaskBatch(torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2), [[2], [0]], [[1], [3]], "logit_diff", [])
    assert metric_from_logits(logits, b).tolist() == pytest.approx([2.0, 2.0])
    b.kind, b.plus, b.minus = "prob_diff", [[2, 3], [0]], [[0], [1, 2]]
    p = torch.softmax(logits, dim=-1)
    assert metric_from_logits(logits, b).tolist() == pytest.approx(
        [float(p[0, 2] + p[0, 3] - p[0, 0]), float(p[1, 0] - p[1, 1] - p[1, 2])])


def test_agreement_helpers_by_hand():
    a = np.array([[0.1, 0.5], [0.9, 0.3]])
    b = np.array([[1.0, 3.0], [4.0, 2.0]])
    assert spearman(a, b) == pytest.approx(1.0)
    assert spearman(a, -b) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.zeros((2, 2)), b))
    assert top_k(a, 2).tolist() == [2, 1]
    assert top_k_overlap(a, np.array([[0.0, 0.0], [1.0, 0.0]]), 2) == 0.5
