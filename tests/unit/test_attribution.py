"""Token attributions (flowroutes.attribution) on hand-built arrays and routes: known answers worked out by hand, and
equality with literal float64 implementations written here with loops (ALTI's R^L) and as an absorbing Markov chain
(the routes flow)."""

from __future__ import annotations

import numpy as np
import pytest

from flowroutes.attribution import alti, routes_flow, token_matrix
from flowroutes.errors import FlowroutesError
from flowroutes.routes import Edge, Node, Routes, attention_id, extract_routes, level, residual_id
from flowroutes.trace import Trace
from tests.helpers.tolerances import ALTI_ROW_SUM_ABS, F32_STORED, F64_HAND, F64_REORDER


def hand_trace(attention, residual, ffn, parallel=None) -> Trace:
    """A Trace of the given importances: attention [L, H, T, T], residual [L, T], ffn [L, T] (ffn_residual = 1 - ffn
    in sequential blocks, the residual in parallel ones)."""
    n_layers, _, n_tok, _ = attention.shape
    parallel = parallel or [False] * n_layers
    ffn_res = np.where(np.array(parallel)[:, None], residual, 1.0 - ffn)
    return Trace(model_name="hand", prompt="", input_ids=np.arange(n_tok), tokens=[f"t{i}" for i in range(n_tok)],
                 token_texts=[f"t{i}" for i in range(n_tok)], ffn=ffn.astype(np.float32),
                 ffn_residual=ffn_res.astype(np.float32), top_ids=np.full((n_tok, 1), -1),
                 top_probs=np.full((n_tok, 1), np.nan), top_tokens=[[] for _ in range(n_tok)],
                 degenerate_ffn=np.zeros((n_layers, n_tok), bool), parallel=parallel,
                 attention=attention.astype(np.float32), attention_residual=residual.astype(np.float32),
                 degenerate_attention=np.zeros((n_layers, n_tok), bool))


def random_trace(seed: int, n_layers=3, n_heads=2, n_tok=5, parallel=None) -> Trace:
    """Importances as eq. 1 makes them: each node's parts (causal sub-edges, residual [, FFN]) sum to 1."""
    rng = np.random.default_rng(seed)
    parallel = parallel or [False] * n_layers
    attention = np.zeros((n_layers, n_heads, n_tok, n_tok))
    residual = np.zeros((n_layers, n_tok))
    ffn = rng.uniform(0.05, 0.9, (n_layers, n_tok))
    for layer in range(n_layers):
        for p in range(n_tok):
            parts = rng.uniform(0.0, 1.0, n_heads * (p + 1) + 1 + parallel[layer])
            parts[rng.uniform(size=parts.size) < 0.3] = 0.0  # some parts are 0
            parts[-1] += 0.01
            parts /= parts.sum()
            attention[layer, :, p, : p + 1] = parts[: n_heads * (p + 1)].reshape(n_heads, p + 1)
            residual[layer, p] = parts[n_heads * (p + 1)]
            if parallel[layer]:
                ffn[layer, p] = parts[-1]
    return hand_trace(attention, residual, ffn, parallel)


def alti_by_loops(tr: Trace, q: int) -> list[float]:
    """R^L[q, :] literally: R^0 = I; A^l[p][j] = sum_h attention[l][h][p][j] + [j == p] (attention_residual[l][p]
    + ffn[l][p] if block l is parallel); R^{l+1}[p][j] = sum_m A^l[p][m] R^l[m][j]."""
    n = tr.n_tokens
    r = [[1.0 if p == j else 0.0 for j in range(n)] for p in range(n)]
    for layer in range(tr.n_layers):
        a = [[0.0] * n for _ in range(n)]
        for p in range(n):
            for j in range(n):
                for h in range(tr.n_heads):
                    a[p][j] += float(tr.attention[layer, h, p, j])
                if j == p:
                    a[p][j] += float(tr.attention_residual[layer, p])
                    if tr.is_parallel(layer):
                        a[p][j] += float(tr.ffn[layer, p])
        r = [[sum(a[p][m] * r[m][j] for m in range(n)) for j in range(n)] for p in range(n)]
    return r[q]


def flow_by_absorption(routes: Routes) -> tuple[list[float], float]:
    """The routes flow as an absorbing Markov chain over the routes' nodes: a node with kept in-edges moves its mass
    along them (probability weight / sum of its in-edges' weights), the embeddings and nodes without in-edges keep
    theirs; after 2L + 1 steps (longer than any path) the mass on each x^0_j is its score."""
    ids = [n.id for n in routes.nodes]
    index = {nid: i for i, nid in enumerate(ids)}
    step = np.zeros((len(ids), len(ids)))
    for e in routes.edges:
        step[index[e.target], index[e.source]] += e.weight
    for i in range(len(ids)):
        total = step[i].sum()
        if total > 0:
            step[i] /= total
        else:
            step[i, i] = 1.0  # absorbing: an embedding, or a node where the mass stops
    mass = np.zeros(len(ids))
    mass[index[residual_id(routes.n_layers, routes.position)]] = 1.0
    for _ in range(2 * routes.n_layers + 1):
        mass = mass @ step
    scores = [0.0] * len(routes.tokens)
    for n in routes.nodes:
        if level(n) == 0:
            scores[n.position] += float(mass[index[n.id]])
    return scores, sum(scores)


def test_alti_known_answer_by_hand():
    """Two tokens, two blocks. Block 0 at p = 1: heads give 0.3 (from 0) and 0.2 (from 1), residual 0.5, so
    A^0 = [[1, 0], [0.3, 0.7]]; block 1 at p = 1: 0.6 from token 0, residual 0.4: A^1 = [[1, 0], [0.6, 0.4]].
    R^2[1] = A^1[1] A^0 = [0.6 + 0.4 * 0.3, 0.4 * 0.7] = [0.72, 0.28]. The FFN values do not matter (sequential)."""
    attention = np.zeros((2, 2, 2, 2))
    attention[0, 0, 1, 0], attention[0, 1, 1, 1] = 0.3, 0.2
    attention[1, 1, 1, 0] = 0.6
    residual = np.array([[1.0, 0.5], [1.0, 0.4]])
    tr = hand_trace(attention, residual, np.array([[0.9, 0.1], [0.2, 0.7]]))
    np.testing.assert_allclose(alti(tr, [1, 0]), [[0.72, 0.28], [1.0, 0.0]], atol=F32_STORED)
    np.testing.assert_allclose(token_matrix(tr, 0, 2), [[1.0, 0.0], [0.3, 0.7]], atol=F32_STORED)


def test_alti_parallel_block_counts_the_ffn_on_the_diagonal():
    """A parallel block at p = 1: sub-edge from 0 of 0.25, residual 0.35, FFN 0.4: A[1] = [0.25, 0.75]."""
    attention = np.zeros((1, 1, 2, 2))
    attention[0, 0, 1, 0] = 0.25
    tr = hand_trace(attention, np.array([[0.6, 0.35]]), np.array([[0.4, 0.4]]), parallel=[True])
    np.testing.assert_allclose(alti(tr, [1]), [[0.25, 0.75]], atol=F32_STORED)


@pytest.mark.parametrize("parallel", [None, [False, True, False]])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alti_equals_the_literal_loops(seed, parallel):
    tr = random_trace(seed, parallel=parallel)
    got = alti(tr, [4, 2, 3])
    for row, q in zip(got, [4, 2, 3]):
        np.testing.assert_allclose(row[: q + 1], alti_by_loops(tr, q)[: q + 1], atol=F64_REORDER, rtol=0)
        assert abs(row.sum() - 1.0) < ALTI_ROW_SUM_ABS  # eq. 1's parts sum to 1: each A^l is row-stochastic
        assert np.all(row[q + 1:] == 0.0)


def _hand_routes(edges: list[Edge], n_layers: int, n_tok: int, position: int) -> Routes:
    nodes = {}
    for e in edges:
        for nid in (e.source, e.target):
            kind = "attention" if "A@" in nid else "residual"
            layer, pos = nid[1:].replace("A", "").split("@")
            nodes[nid] = Node(nid, kind, int(layer), int(pos))
    return Routes(nodes=list(nodes.values()), edges=edges, position=position, attention_threshold=0.04,
                  ffn_threshold=0.04, renormalize=True, n_layers=n_layers, n_heads=2,
                  tokens=[f"t{i}" for i in range(n_tok)], token_texts=[f"t{i}" for i in range(n_tok)])


def test_routes_flow_known_answer_by_hand():
    """One sequential block, 3 tokens, q = 2. x^1_2 <- x^{0A}_2 by FFN 0.6 and residual 0.2 (both: mass 1 goes to
    x^{0A}_2). x^{0A}_2 <- x^0_0 (0.5), x^0_1 (0.2), and x^0_2 by attention 0.1 and residual 0.2: scores
    [0.5, 0.2, 0.3], all of the mass reached."""
    edges = [Edge(attention_id(0, 2), residual_id(1, 2), "ffn", 0, 0.6),
             Edge(attention_id(0, 2), residual_id(1, 2), "residual", 0, 0.2),
             Edge(residual_id(0, 0), attention_id(0, 2), "attention", 0, 0.5, {0: 0.5}),
             Edge(residual_id(0, 1), attention_id(0, 2), "attention", 0, 0.2, {1: 0.2}),
             Edge(residual_id(0, 2), attention_id(0, 2), "attention", 0, 0.1, {0: 0.1}),
             Edge(residual_id(0, 2), attention_id(0, 2), "residual", 0, 0.2)]
    scores, reached = routes_flow(_hand_routes(edges, 1, 3, 2))
    np.testing.assert_allclose(scores, [0.5, 0.2, 0.3], atol=F64_HAND)
    assert reached == pytest.approx(1.0)


def test_routes_flow_mass_stops_at_nodes_without_in_edges():
    """Two blocks, 2 tokens, q = 1. x^2_1 <- x^{1A}_1 (all); x^{1A}_1 <- x^1_0 (0.6), x^1_1 (residual 0.2): 0.75 goes
    to x^1_0, 0.25 to x^1_1. x^1_0 <- x^{0A}_0 <- x^0_0 (all of its 0.75); x^1_1 has no kept in-edge: its 0.25
    stops. Scores [0.75, 0], reached 0.75."""
    edges = [Edge(attention_id(1, 1), residual_id(2, 1), "residual", 1, 0.5),
             Edge(residual_id(1, 0), attention_id(1, 1), "attention", 1, 0.6, {0: 0.6}),
             Edge(residual_id(1, 1), attention_id(1, 1), "residual", 1, 0.2),
             Edge(attention_id(0, 0), residual_id(1, 0), "ffn", 0, 0.3),
             Edge(residual_id(0, 0), attention_id(0, 0), "residual", 0, 0.9)]
    scores, reached = routes_flow(_hand_routes(edges, 2, 2, 1))
    np.testing.assert_allclose(scores, [0.75, 0.0], atol=F64_HAND)
    assert reached == pytest.approx(0.75)


@pytest.mark.parametrize("parallel", [None, [False, True, False]])
@pytest.mark.parametrize("tau", [0.02, 0.1, 0.3])
def test_routes_flow_equals_the_absorbing_chain(tau, parallel):
    """On routes walked from random traces (some nodes lose every in-edge at the larger thresholds)."""
    reached_some = []
    for seed in range(4):
        tr = random_trace(seed, n_tok=6, parallel=parallel)
        for q in (5, 3):
            routes = extract_routes(tr, q, tau, tau)
            got, reached = routes_flow(routes)
            want, want_reached = flow_by_absorption(routes)
            np.testing.assert_allclose(got, want, atol=F64_REORDER)
            assert reached == pytest.approx(want_reached, abs=F64_REORDER)
            assert np.all(got[q + 1:] == 0.0)
            reached_some.append(reached)
    assert max(reached_some) <= 1.0 + F64_REORDER
    if tau == 0.3:  # the largest threshold leaves nodes without in-edges: some mass stops
        assert min(reached_some) < 1.0


def test_unknown_method_is_one_line():
    from flowroutes.attribution import check_method

    with pytest.raises(FlowroutesError, match="unknown attribution method 'shap'"):
        check_method("shap")


def test_unroll_known_answer_by_hand():
    """P = 2, K = 3. Token 0: [0.6, 0.4] from the prompt. Token 1: 0.5 from prompt 0, 0.5 from answer token 0:
    [0.5 + 0.5 * 0.6, 0.5 * 0.4] = [0.8, 0.2]. Token 2: 0.2 from prompt 1, 0.3 from answer 0, 0.5 from answer 1:
    [0.3 * 0.6 + 0.5 * 0.8, 0.2 + 0.3 * 0.4 + 0.5 * 0.2] = [0.58, 0.42]."""
    from flowroutes.attribution import unroll

    scores = np.array([[0.6, 0.4, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.2, 0.3, 0.5]])
    np.testing.assert_allclose(unroll(scores, 2), [[0.6, 0.4], [0.8, 0.2], [0.58, 0.42]], atol=F64_HAND)


def test_unroll_is_the_chains_closed_form():
    """U = (I - S_A)^-1 S_P, S_A [K, K] the (strictly lower triangular) shares from earlier answer tokens."""
    from flowroutes.attribution import unroll

    rng = np.random.default_rng(5)
    n_prompt, n_answer = 4, 6
    scores = np.zeros((n_answer, n_prompt + n_answer - 1))
    for k in range(n_answer):
        row = rng.uniform(size=n_prompt + k)
        scores[k, : n_prompt + k] = row / row.sum()
    s_a = np.zeros((n_answer, n_answer))
    s_a[:, : n_answer - 1] = scores[:, n_prompt:]
    want = np.linalg.solve(np.eye(n_answer) - s_a, scores[:, :n_prompt])
    got = unroll(scores, n_prompt)
    np.testing.assert_allclose(got, want, atol=F64_REORDER)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=F64_REORDER)
