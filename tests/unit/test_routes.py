"""Routes extraction on a hand-built trace whose graph is worked out by hand (fig. 3 + appendix B.2)."""

import json

import numpy as np
import pytest

from flowroutes import FlowroutesError, Routes, Trace
from tests.helpers.tolerances import F64_HAND


def hand_trace() -> Trace:
    """L=2 blocks, H=2 heads, T=3 tokens; dyadic values so comparisons with tau are exact."""
    L, H, T = 2, 2, 3
    att = np.zeros((L, H, T, T), np.float32)
    att_res = np.zeros((L, T), np.float32)
    ffn = np.zeros((L, T), np.float32)
    ffn_res = np.zeros((L, T), np.float32)
    # block 1 (writes x^2): top node x2@2
    ffn[1, 2], ffn_res[1, 2] = 0.3125, 0.6875
    att[1, 0, 2] = [0.0625, 0.25, 0.125]  # 0.0625 < tau is dropped; 0.125 == tau is kept
    att[1, 1, 2] = [0.0, 0.0, 0.3125]
    att_res[1, 2] = 0.25  # row sums to 1; kept total 0.9375
    # block 0
    ffn[0, 1], ffn_res[0, 1] = 0.0625, 0.9375  # only the residual survives
    ffn[0, 2], ffn_res[0, 2] = 0.5, 0.5
    att[0, 0, 1] = [0.5, 0.0, 0.0]
    att_res[0, 1] = 0.5
    att[0, 0, 2] = [0.09375, 0.09375, 0.09375]  # all below tau: only the residual is kept
    att[0, 1, 2] = [0.0625, 0.0625, 0.0625]
    att_res[0, 2] = 0.53125
    tokens = ["a", "b", "c"]
    return Trace(
        model_name="hand", prompt="a b c", input_ids=np.arange(3), tokens=tokens, token_texts=tokens,
        attention=att, attention_residual=att_res, ffn=ffn, ffn_residual=ffn_res,
        top_ids=np.zeros((3, 1), np.int64), top_probs=np.ones((3, 1), np.float32), top_tokens=[["a"]] * 3,
        degenerate_attention=np.zeros((L, T), bool), degenerate_ffn=np.zeros((L, T), bool),
    )


def edge_set(routes):
    return {(e.source, e.target, e.kind): (round(e.weight, 9), {h: round(w, 9) for h, w in e.heads.items()})
            for e in routes.edges}


def test_routes_by_hand():
    r = hand_trace().routes(threshold=0.125, position=-1)
    k = 0.9375  # sum of the kept parts of x1A@2
    expected = {
        ("x1A@2", "x2@2", "ffn"): (0.3125, {}),
        ("x1A@2", "x2@2", "residual"): (0.6875, {}),
        ("x1@1", "x1A@2", "attention"): (round(0.25 / k, 9), {0: round(0.25 / k, 9)}),
        ("x1@2", "x1A@2", "attention"): (round(0.4375 / k, 9), {0: round(0.125 / k, 9), 1: round(0.3125 / k, 9)}),
        ("x1@2", "x1A@2", "residual"): (round(0.25 / k, 9), {}),
        ("x0A@1", "x1@1", "residual"): (0.9375, {}),
        ("x0A@2", "x1@2", "ffn"): (0.5, {}),
        ("x0A@2", "x1@2", "residual"): (0.5, {}),
        ("x0@0", "x0A@1", "attention"): (0.5, {0: 0.5}),
        ("x0@1", "x0A@1", "residual"): (0.5, {}),
        ("x0@2", "x0A@2", "residual"): (1.0, {}),
    }
    assert edge_set(r) == expected
    assert sorted(n.id for n in r.nodes) == sorted(
        ["x2@2", "x1A@2", "x1@1", "x1@2", "x0A@1", "x0A@2", "x0@0", "x0@1", "x0@2"])
    assert r.active_heads == [(0, 0), (1, 0), (1, 1)]
    assert r.position == 2
    # every kept attention node's incoming weights sum to 1 after renormalisation
    for target in ("x1A@2", "x0A@1", "x0A@2"):
        assert sum(e.weight for e in r.edges if e.target == target) == pytest.approx(1.0)


def test_routes_without_renormalisation_and_with_separate_thresholds():
    r = hand_trace().routes(0.125, 2, renormalize=False, ffn_threshold=0.5)
    got = edge_set(r)
    assert ("x1A@2", "x2@2", "ffn") not in got  # 0.3125 < 0.5
    assert got[("x1@2", "x1A@2", "attention")] == (0.4375, {0: 0.125, 1: 0.3125})
    assert ("x0A@1", "x1@1", "residual") in got  # 0.9375 >= 0.5
    assert ("x0A@2", "x1@2", "ffn") in got  # 0.5 == 0.5 is kept
    # tau_attn = 0.3 keeps one sub-edge of x1A@2 (head 1, 0.3125; the residual 0.25 goes): renormalised to 1
    r = hand_trace().routes(0.125, 2, attention_threshold=0.3)
    att_edges = {k: v for k, v in edge_set(r).items() if k[1] == "x1A@2"}
    assert att_edges == {("x1@2", "x1A@2", "attention"): (1.0, {1: 1.0})}


def test_routes_from_another_position_and_bad_arguments():
    r = hand_trace().routes(0.125, position=0)
    assert {n.position for n in r.nodes} == {0} and r.edges == []  # all zero at position 0
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(FlowroutesError, match=r"\(0, 1\)"):
            hand_trace().routes(bad)
    for pos in (3, -4):
        with pytest.raises(FlowroutesError, match="out of range"):
            hand_trace().routes(0.1, pos)


def test_json_round_trip_and_networkx():
    r = hand_trace().routes(0.125)
    data = json.loads(r.to_json())
    assert data["schema"] == "flowroutes.routes" and data["version"] == 3
    back = Routes.from_json(r.to_json())
    assert back == r
    g = r.to_networkx()
    assert g.number_of_nodes() == len(r.nodes) and g.number_of_edges() == len(r.edges)
    assert g.nodes["x1@2"]["position"] == 2 and g.edges["x1A@2", "x2@2", "ffn"]["weight"] == 0.3125
    with pytest.raises(FlowroutesError, match="schema"):
        Routes.from_json('{"nodes": []}')
    with pytest.raises(FlowroutesError, match="version"):
        Routes.from_json(json.dumps({**data, "version": 99}))


def test_one_layer_convention_for_nodes_and_edges():
    """Schema v2: an edge's layer is its block, which is its source node's layer and its attention target's."""
    r = hand_trace().routes(0.125)
    nodes = {n.id: n for n in r.nodes}
    for e in r.edges:
        assert nodes[e.source].layer == e.layer
        target = nodes[e.target]
        assert target.layer == (e.layer if target.kind == "attention" else e.layer + 1)
        assert target.id == (f"x{target.layer}A@{target.position}" if target.kind == "attention"
                             else f"x{target.layer}@{target.position}")
    assert {n.layer for n in r.nodes if n.kind == "attention"} == {0, 1}  # blocks 0 and 1 of L = 2
    assert max(n.layer for n in r.nodes) == 2 and nodes["x2@2"].kind == "residual"  # the top x^L
    assert {(e.layer, h) for e in r.edges for h in e.heads} == set(r.active_heads)


def test_version_1_files_are_read_in_the_new_convention():
    r = hand_trace().routes(0.125)
    v1 = json.loads(r.to_json())
    v1["version"] = 1
    old_id = {}  # version 1 numbered attention nodes 1..L, the paper's x^{lA} after block l-1
    for n in v1["nodes"]:
        if n["kind"] == "attention":
            old_id[n["id"]] = f"x{n['layer'] + 1}A@{n['position']}"
            n["id"], n["layer"] = old_id[n["id"]], n["layer"] + 1
    for e in v1["edges"]:
        e["source"], e["target"] = old_id.get(e["source"], e["source"]), old_id.get(e["target"], e["target"])
    assert {n["id"] for n in v1["nodes"] if n["kind"] == "attention"} == {"x2A@2", "x1A@1", "x1A@2"}
    assert Routes.from_json(json.dumps(v1)) == r


# --- a parallel block (GPT-J, GPT-NeoX): attention and FFN both read x^l -------------------------------------------

def hand_parallel_trace() -> Trace:
    """L=2 parallel blocks, H=2 heads, T=3 tokens. A parallel block has no x^{lA} node: x^{l+1}_p = x^l_p +
    attention(x^l) + FFN(x^l_p) is one node whose parts are the sub-edges, the residual and the FFN (each node's
    parts sum to 1), thresholded and renormalised together (appendix B.2). attention_residual and ffn_residual
    hold the same residual importance there. Dyadic values, so comparisons with tau are exact."""
    L, H, T = 2, 2, 3
    att = np.zeros((L, H, T, T), np.float32)
    res = np.zeros((L, T), np.float32)
    ffn = np.zeros((L, T), np.float32)
    # block 1, the top node x2@2: 0.0625 + 0.25 + 0.125 + 0.1875 + 0.25 + 0.125 = 1
    att[1, 0, 2] = [0.0625, 0.25, 0.125]  # 0.0625 < tau is dropped; 0.125 == tau is kept
    att[1, 1, 2] = [0.0, 0.0, 0.1875]
    res[1, 2], ffn[1, 2] = 0.25, 0.125  # the FFN is kept at tau = 0.125 and dropped at tau_ffn = 0.25
    # block 0, x1@1: 0.5 + 0.0625 + 0.0625 + 0.25 + 0.125 = 1; head 1's sub-edges are below tau
    att[0, 0, 1, :2] = [0.5, 0.0]
    att[0, 1, 1, :2] = [0.0625, 0.0625]
    res[0, 1], ffn[0, 1] = 0.25, 0.125
    # block 0, x1@2: every sub-edge below tau (3 * 0.09375 + 3 * 0.0625 = 0.46875); 0.40625 + 0.125 + 0.46875 = 1
    att[0, 0, 2] = [0.09375, 0.09375, 0.09375]
    att[0, 1, 2] = [0.0625, 0.0625, 0.0625]
    res[0, 2], ffn[0, 2] = 0.40625, 0.125
    tokens = ["a", "b", "c"]
    return Trace(
        model_name="hand-parallel", prompt="a b c", input_ids=np.arange(3), tokens=tokens, token_texts=tokens,
        attention=att, attention_residual=res, ffn=ffn, ffn_residual=res.copy(), parallel=[True, True],
        top_ids=np.zeros((3, 1), np.int64), top_probs=np.ones((3, 1), np.float32), top_tokens=[["a"]] * 3,
        degenerate_attention=np.zeros((L, T), bool), degenerate_ffn=np.zeros((L, T), bool),
    )


def assert_edges(routes, expected):
    """Edges exactly `expected` {(source, target, kind): (weight, {head: weight})}, weights to F64_HAND."""
    got = {(e.source, e.target, e.kind): (e.weight, e.heads) for e in routes.edges}
    assert set(got) == set(expected)
    for key, (weight, heads) in expected.items():
        assert got[key][0] == pytest.approx(weight, abs=F64_HAND), key
        assert set(got[key][1]) == set(heads), key
        for h, w in heads.items():
            assert got[key][1][h] == pytest.approx(w, abs=F64_HAND), (key, h)


def test_parallel_routes_by_hand():
    r = hand_parallel_trace().routes(threshold=0.125, position=-1)
    # x2@2: head 0's 0.0625 from x1@0 drops; kept 0.25 + 0.125 (head 0) + 0.1875 (head 1) + 0.25 (residual)
    # + 0.125 (FFN) = 15/16, so each kept part is multiplied by 16/15 before the heads are summed per source:
    # x1@1 head 0: 0.25 * 16/15 = 4/15; x1@2 head 0: 0.125 * 16/15 = 2/15, head 1: 0.1875 * 16/15 = 3/15, the
    # attention edge 2/15 + 3/15 = 1/3; residual 0.25 * 16/15 = 4/15; FFN 0.125 * 16/15 = 2/15 (in 15ths: 4+5+4+2)
    # x1@1: head 1's 0.0625s drop; kept 0.5 + 0.25 + 0.125 = 7/8: head 0 from x0@0 4/7, residual 2/7, FFN 1/7
    # x1@2: every sub-edge drops; kept 0.40625 + 0.125 = 17/32: residual 13/17, FFN 4/17
    assert_edges(r, {
        ("x1@1", "x2@2", "attention"): (4 / 15, {0: 4 / 15}),
        ("x1@2", "x2@2", "attention"): (1 / 3, {0: 2 / 15, 1: 3 / 15}),
        ("x1@2", "x2@2", "residual"): (4 / 15, {}),
        ("x1@2", "x2@2", "ffn"): (2 / 15, {}),
        ("x0@0", "x1@1", "attention"): (4 / 7, {0: 4 / 7}),
        ("x0@1", "x1@1", "residual"): (2 / 7, {}),
        ("x0@1", "x1@1", "ffn"): (1 / 7, {}),
        ("x0@2", "x1@2", "residual"): (13 / 17, {}),
        ("x0@2", "x1@2", "ffn"): (4 / 17, {}),
    })
    # no x^{lA} nodes: every edge of block l goes from x^l to x^{l+1}; x1@0 is reached by no kept edge
    assert sorted(n.id for n in r.nodes) == sorted(["x2@2", "x1@1", "x1@2", "x0@0", "x0@1", "x0@2"])
    assert {n.kind for n in r.nodes} == {"residual"}
    assert all(e.layer == int(e.source[1]) and int(e.target[1]) == e.layer + 1 for e in r.edges)
    assert r.active_heads == [(0, 0), (1, 0), (1, 1)] and r.parallel == [True, True]
    assert json.loads(r.to_json())["blocks"] == ["parallel", "parallel"]
    for target in ("x2@2", "x1@1", "x1@2"):  # renormalised: every reached node's incoming weights sum to 1
        assert sum(e.weight for e in r.edges if e.target == target) == pytest.approx(1.0, abs=F64_HAND)


def test_parallel_routes_with_separate_thresholds_and_without_renormalisation():
    # tau_ffn = 0.25 drops x2@2's FFN (0.125) and the FFNs of block 0; tau_attn = 0.125 keeps the same sub-edges.
    # x2@2 keeps 0.25 + 0.125 + 0.1875 + 0.25 = 13/16: x1@1 0.25 * 16/13 = 4/13, x1@2 (0.125 + 0.1875) * 16/13 =
    # 2/13 + 3/13 = 5/13, residual 4/13; x1@1 keeps 0.5 + 0.25 = 3/4: 2/3 and 1/3; x1@2 keeps its residual alone: 1
    r = hand_parallel_trace().routes(0.125, 2, ffn_threshold=0.25)
    assert_edges(r, {
        ("x1@1", "x2@2", "attention"): (4 / 13, {0: 4 / 13}),
        ("x1@2", "x2@2", "attention"): (5 / 13, {0: 2 / 13, 1: 3 / 13}),
        ("x1@2", "x2@2", "residual"): (4 / 13, {}),
        ("x0@0", "x1@1", "attention"): (2 / 3, {0: 2 / 3}),
        ("x0@1", "x1@1", "residual"): (1 / 3, {}),
        ("x0@2", "x1@2", "residual"): (1.0, {}),
    })
    # without renormalisation the kept parts keep their importances: the same edges as at tau = 0.125, raw
    r = hand_parallel_trace().routes(0.125, 2, renormalize=False)
    assert_edges(r, {
        ("x1@1", "x2@2", "attention"): (0.25, {0: 0.25}),
        ("x1@2", "x2@2", "attention"): (0.3125, {0: 0.125, 1: 0.1875}),
        ("x1@2", "x2@2", "residual"): (0.25, {}),
        ("x1@2", "x2@2", "ffn"): (0.125, {}),
        ("x0@0", "x1@1", "attention"): (0.5, {0: 0.5}),
        ("x0@1", "x1@1", "residual"): (0.25, {}),
        ("x0@1", "x1@1", "ffn"): (0.125, {}),
        ("x0@2", "x1@2", "residual"): (0.40625, {}),
        ("x0@2", "x1@2", "ffn"): (0.125, {}),
    })
    # tau = 0.3: no part of x2@2 reaches it (the largest is 0.25), so the walk stops at the top node
    assert hand_parallel_trace().routes(0.3, 2).edges == []
