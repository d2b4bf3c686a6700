"""The paper's equations on plain arrays, in float64, one part at a time: the readable definition of every
number flowroutes computes, and the oracle every fast path is tested against (`trace(..., kernel="reference")`
runs it). Slow by design: loops over nodes and parts, no chunking, no kernels.

Notation (schema v2, docs/architecture.md): block l (0-based) reads the residual x^l, its attention writes x^{lA},
its FFN x^{l+1}. For target position p of block l:

    eq. 2   x^{lA}_p = x^l_p + sum_h sum_{j<=p} alpha[h,p,j] f_h(x^l_j) + const   (H(p+1) sub-edges + residual)
    eq. 3   x^{l+1}_p = x^{lA}_p + FFN(x^{lA}_p)                                 (FFN + residual)
    B.1     f_h(x_j) = x_j L W_V^{kv(h)} W_O^h   (the norm LN(x) = x L + beta linearised at its own scale; beta, b_V
            and b_O make `const`, which belongs to the node and to no edge)
    eq. 1   importance(z, y) = proximity(z, y) / sum over the node's parts,
            proximity(z, y) = max(||y||_1 - ||z - y||_1, 0)

A node whose proximities are all 0 gives each of its parts 1 / (number of parts). A parallel block (attention and FFN
read the same x^l) has one node x^{l+1}_p whose parts are the sub-edges, the residual and the FFN update. A post-norm
on the attention output (Gemma) multiplies every sub-edge of target p by its linearised scale `scale[p]`.

The routes (fig. 3, app. B.2) are `walk`: top-down from x^L_position; an FFN or FFN-residual edge is kept when its
importance >= tau_ffn; sub-edges and the attention residual below tau_attn are dropped, the kept ones renormalised to
sum to 1, then summed over heads into one edge per source.
"""

from __future__ import annotations

import numpy as np


# --- eq. 1 --------------------------------------------------------------------------------------------------------
def proximity(z: np.ndarray, y: np.ndarray) -> float:
    """max(||y||_1 - ||z - y||_1, 0): how much of y the part z accounts for."""
    return max(float(np.abs(y).sum() - np.abs(z - y).sum()), 0.0)


def importances(parts: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, bool]:
    """Eq. 1 for one node y = sum(parts) (+ const): each part's proximity over their sum; equal shares when every
    proximity is 0. Returns (importances [len(parts)], whether the node was 0/0)."""
    prox = np.array([proximity(np.asarray(z, np.float64), np.asarray(y, np.float64)) for z in parts])
    total = prox.sum()
    if total == 0:
        return np.full(len(parts), 1.0 / len(parts)), True
    return prox / total, False


# --- B.1: the head values -----------------------------------------------------------------------------------------
def head_values(normed: np.ndarray, value: np.ndarray, output: np.ndarray, kv_heads: list[int],
                norm_bias: np.ndarray | None = None) -> np.ndarray:
    """f_h(x_j) = (LN(x_j) - beta) W_V^{kv(h)} W_O^h for every head h and source j: [H, T, d].

    normed: [T, d] the norm's output LN(x_j); value: [KV, d, dh]; output: [H, dh, d]; kv_heads[h]: the value head
    that query head h reads; norm_bias: beta [d] or None."""
    lin = np.asarray(normed, np.float64) - (0.0 if norm_bias is None else np.asarray(norm_bias, np.float64))
    return np.stack([lin @ np.asarray(value[kv], np.float64) @ np.asarray(output[h], np.float64)
                     for h, kv in enumerate(kv_heads)])


# --- eq. 2 and 3: one block -----------------------------------------------------------------------------------------
def attention_node(alpha: np.ndarray, f: np.ndarray, x_in: np.ndarray, y: np.ndarray, p: int,
                   scale: np.ndarray | None = None, extra: np.ndarray | None = None):
    """The parts of node y[p] (eq. 2, or a parallel block's x^{l+1}_p with its FFN update `extra[p]`) and their
    importances. alpha: [H, T, T]; f: [H, T, d]; x_in, y: [T, d]; scale, extra: [T, d] or None.
    Returns (sub-edges [H, p+1], residual, FFN or None, degenerate)."""
    n_heads = f.shape[0]
    s = 1.0 if scale is None else scale[p]
    parts = [alpha[h, p, j] * f[h, j] * s for h in range(n_heads) for j in range(p + 1)] + [x_in[p]]
    if extra is not None:
        parts.append(extra[p])
    imp, degenerate = importances(parts, y[p])
    sub = imp[: n_heads * (p + 1)].reshape(n_heads, p + 1)
    return sub, imp[n_heads * (p + 1)], (imp[-1] if extra is not None else None), degenerate


def ffn_node(x_mid: np.ndarray, ffn_out: np.ndarray, x_out: np.ndarray, p: int):
    """Eq. 3's node x^{l+1}_p = x^{lA}_p + FFN(x^{lA}_p): (FFN importance, residual importance, degenerate)."""
    (ffn, res), degenerate = importances([ffn_out[p], x_mid[p]], x_out[p])
    return ffn, res, degenerate


def block(alpha, f, x_in, x_mid, ffn_out, x_out, scale=None, parallel: bool = False) -> dict[str, np.ndarray]:
    """Every importance of one block on one prompt, as a trace holds them: attention [H, T, T] (0 for j > p),
    attention_residual, ffn, ffn_residual, degenerate_attention, degenerate_ffn [T] each. All arrays float64 [T, d]
    (alpha [H, T, T], f [H, T, d]); a parallel block's single node is x^{l+1} with the FFN update as a part."""
    arrays = [None if a is None else np.asarray(a, np.float64) for a in (alpha, f, x_in, x_mid, ffn_out, x_out, scale)]
    alpha, f, x_in, x_mid, ffn_out, x_out, scale = arrays
    n_heads, n_tok = f.shape[0], f.shape[1]
    out = {"attention": np.zeros((n_heads, n_tok, n_tok))}
    out |= {k: np.zeros(n_tok) for k in ("attention_residual", "ffn", "ffn_residual")}
    out |= {k: np.zeros(n_tok, bool) for k in ("degenerate_attention", "degenerate_ffn")}
    for p in range(n_tok):
        if parallel:
            sub, res, ffn, degenerate = attention_node(alpha, f, x_in, x_out, p, scale, extra=ffn_out)
            out["ffn"][p], out["ffn_residual"][p], out["degenerate_ffn"][p] = ffn, res, degenerate
        else:
            sub, res, _, degenerate = attention_node(alpha, f, x_in, x_mid, p, scale)
            out["ffn"][p], out["ffn_residual"][p], out["degenerate_ffn"][p] = ffn_node(x_mid, ffn_out, x_out, p)
        out["attention"][:, p, : p + 1] = sub
        out["attention_residual"][p], out["degenerate_attention"][p] = res, degenerate
    return out


# --- fig. 3 and B.2: the routes -------------------------------------------------------------------------------------
def walk(attention, attention_residual, ffn, ffn_residual, position: int, tau_attn: float, tau_ffn: float,
         renormalize: bool = True, parallel: list[bool] | None = None) -> dict[tuple, float]:
    """The routes of x^L_position from a trace's arrays (attention [L, H, T, T], the others [L, T]), as
    {(kind, block, source position, target position, head): weight}; head is None for the residual and FFN edges.
    Node names follow schema v2: an edge of block l goes from x^l (or x^{lA} for FFN and FFN-residual edges) to
    x^{lA} (or x^{l+1})."""
    n_layers = attention.shape[0]
    parallel = parallel or [False] * n_layers
    edges: dict[tuple, float] = {}
    frontier = {position}  # residual nodes x^{l+1}_p reached
    for layer in range(n_layers - 1, -1, -1):
        targets = set()
        if parallel[layer]:
            targets = frontier
        else:
            for p in frontier:
                for kind, w in (("ffn", ffn[layer, p]), ("ffn-residual", ffn_residual[layer, p])):
                    if w >= tau_ffn:
                        edges[(kind, layer, p, p, None)] = float(w)
                        targets.add(p)
        reached = set()
        for p in targets:
            kept = {(h, j): float(attention[layer, h, p, j]) for h in range(attention.shape[1]) for j in range(p + 1)
                    if attention[layer, h, p, j] >= tau_attn}
            res = float(attention_residual[layer, p])
            kept_res = res >= tau_attn
            kept_ffn = parallel[layer] and ffn[layer, p] >= tau_ffn
            total = sum(kept.values()) + (res if kept_res else 0.0) + (float(ffn[layer, p]) if kept_ffn else 0.0)
            if total <= 0:
                continue
            norm = 1.0 / total if renormalize else 1.0
            for (h, j), w in kept.items():
                edges[("attention", layer, j, p, h)] = w * norm
                reached.add(j)
            if kept_res:
                edges[("residual", layer, p, p, None)] = res * norm
                reached.add(p)
            if kept_ffn:
                edges[("ffn", layer, p, p, None)] = float(ffn[layer, p]) * norm
                reached.add(p)
        frontier = reached
        if not frontier:
            break
    return edges
