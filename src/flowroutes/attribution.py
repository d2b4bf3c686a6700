"""Token attribution: how much of one prediction comes from each earlier token, by two definitions (docs/generation.md).

`alti`: ALTI's propagation (Ferrando et al., 2022) of the trace's importances through the blocks; `routes_flow`: the
mass of the top node passed down the kept edges of its routes. Plain numpy on a trace's arrays or a `Routes`: no
torch, no model.
"""

from __future__ import annotations

import numpy as np

from .errors import FlowroutesError
from .routes import Routes, level

METHODS = ("alti", "routes")


def check_method(method: str) -> str:
    """`method` if it is one of METHODS, else one FlowroutesError line."""
    if method not in METHODS:
        raise FlowroutesError(f"unknown attribution method {method!r}: use 'alti' or 'routes'")
    return method


def token_matrix(trace, layer: int, n_rows: int) -> np.ndarray:
    """A^l [n_rows, n_rows] float64 of block `layer`: A[p, j] = sum_h attention[l, h, p, j] + attention_residual[l, p]
    [j == p] (+ ffn[l, p] [j == p] for a parallel block, whose one node also has the FFN part), for p, j < n_rows.

    `trace`: a `Trace` or a `LazyTrace` (anything with `attention_rows(layer, positions)` -> (sub-edges [H, R, T],
    residual [R]), `ffn` [L, T] and `is_parallel(layer)`); a lazy trace computes (and keeps) the rows it lacks. The FFN
    node of a sequential block takes both its parts from x^{lA}_p: it mixes no positions and adds nothing here."""
    rows = list(range(n_rows))
    sub, res = trace.attention_rows(layer, rows)  # [H, R, T], [R]
    a = sub[:, :, :n_rows].astype(np.float64).sum(axis=0)  # [R, R]
    diag = res.astype(np.float64)
    if trace.is_parallel(layer):
        diag = diag + np.asarray(trace.ffn[layer, :n_rows], dtype=np.float64)
    a[rows, rows] += diag
    return a


def alti(trace, positions: list[int]) -> np.ndarray:
    """ALTI attributions [len(positions), T'] (T' = max(positions) + 1): row k is R^L[q_k, :], the share of the
    prediction at q_k = positions[k] that comes from each input token x^0_j, with R^0 = I and R^{l+1} = A^l R^l
    (`token_matrix`). Computed from the top: e_q^T A^{L-1} ... A^0. Each row sums to 1 (every A^l is row-stochastic:
    eq. 1's parts of a node sum to 1)."""
    if not positions:
        return np.zeros((0, 0))
    n_rows = max(positions) + 1
    out = np.zeros((len(positions), n_rows))
    out[np.arange(len(positions)), positions] = 1.0
    for layer in range(trace.n_layers - 1, -1, -1):
        out = out @ token_matrix(trace, layer, n_rows)
    return out


def routes_flow(routes: Routes) -> tuple[np.ndarray, float]:
    """The flow through the routes: mass 1 starts at x^L_q (q = routes.position); every node, from the top level
    down, passes its mass to its in-edges in the routes in proportion to their weights (normalised over that node's
    kept in-edges; edges of the same source add up). A node below the top with no kept in-edge keeps its mass (the
    mass stops there). Returns (scores [T]: the mass that reached each embedding x^0_j, reached: their sum, the
    share of the mass that reached the embeddings, <= 1)."""
    by_id = {n.id: n for n in routes.nodes}
    into: dict[str, list[tuple[str, float]]] = {}
    for e in routes.edges:
        into.setdefault(e.target, []).append((e.source, float(e.weight)))
    mass: dict[str, float] = {}
    top = f"x{routes.n_layers}@{routes.position}"
    mass[top] = 1.0
    scores = np.zeros(len(routes.tokens))
    for node in sorted(by_id.values(), key=lambda n: -level(n)):
        m = mass.get(node.id, 0.0)
        if m == 0.0:
            continue
        if level(node) == 0:
            scores[node.position] += m
            continue
        edges = into.get(node.id, [])
        total = sum(w for _, w in edges)
        if total <= 0.0:
            continue  # no kept in-edge: the mass stops here
        for source, w in edges:
            mass[source] = mass.get(source, 0.0) + m * w / total
    return scores, float(scores.sum())


def unroll(scores: np.ndarray, n_prompt: int) -> np.ndarray:
    """Multi-hop attribution [K, P]: what answer token k owes to the prompt when the share it takes from an earlier
    answer token j (an input the model generated, e.g. a reasoning step) is passed on to the prompt as token j's own
    attribution: U[k] = S[k, :P] + sum_{j < k} S[k, P + j] U[j]. `scores` [K, P + K - 1]: row k over the prompt,
    then answer tokens 0..K-2 (`Generation.scores`). A row of S that sums to 1 gives a row of U that sums to 1."""
    n_answer = scores.shape[0]
    out = np.zeros((n_answer, n_prompt))
    for k in range(n_answer):
        out[k] = scores[k, :n_prompt] + scores[k, n_prompt:n_prompt + k] @ out[:k]
    return out
