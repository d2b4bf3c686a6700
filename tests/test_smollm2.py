"""The real default model on the paper's IOI prompt."""

import pytest

pytestmark = pytest.mark.slow


def test_ioi_prediction_and_routes(ioi_trace):
    tr = ioi_trace
    assert tr.tokens[1] == "ĠMary" and tr.token_texts[1] == " Mary"
    assert tr.top_tokens[-1][0] == " Mary" and tr.top_probs[-1][0] > 0.5
    assert tr.attention.shape == (30, 9, 14, 14)
    r = tr.routes(0.04)
    ids = {n.id for n in r.nodes}
    assert "x30@13" in ids  # the last position's top node
    assert any(n.layer == 0 for n in r.nodes)  # the routes reach the embeddings
    # the routes read the first " Mary" (position 1) through some attention edge
    assert any(e.kind == "attention" and r.nodes and e.source.endswith("@1") for e in r.edges)
    assert r.active_heads and all(0 <= layer < 30 and 0 <= h < 9 for layer, h in r.active_heads)
    # a lower threshold never gives a smaller graph
    assert len(tr.routes(0.02).edges) >= len(r.edges)
