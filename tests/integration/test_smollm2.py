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


def test_default_model_cache_gives_the_same_model(tmp_path, monkeypatch, ioi_trace):
    import torch

    import flowroutes
    from flowroutes.models.cache import cache_root

    monkeypatch.setenv("FLOWROUTES_CACHE", str(tmp_path))
    first = flowroutes.load_model()  # from the GGUF, then written to the cache
    assert cache_root() == tmp_path and len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    second = flowroutes.load_model()  # from the cache
    ids = torch.as_tensor(ioi_trace.input_ids)[None]
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, second.model(ids).logits)
    assert second.tokenizer(ioi_trace.prompt)["input_ids"] == ioi_trace.input_ids.tolist()
