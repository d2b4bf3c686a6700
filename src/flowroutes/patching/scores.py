"""How two rankings of heads agree, and which heads the routes use: plain functions on [L, H] maps and traces."""

from __future__ import annotations

import warnings

import numpy as np


def active_masks(traces: list, tau: float, n_layers: int, n_heads: int) -> np.ndarray:
    """[N, L, H] bool: the head has a sub-edge in the routes of the last position of trace n at `tau`."""
    return route_masks([tr.routes(tau, position=-1) for tr in traces], n_layers, n_heads)


def route_masks(routes: list, n_layers: int, n_heads: int) -> np.ndarray:
    """[N, L, H] bool: the head is active in routes n."""
    out = np.zeros((len(routes), n_layers, n_heads), dtype=bool)
    for i, r in enumerate(routes):
        for layer, head in r.active_heads:
            out[i, layer, head] = True
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two [L, H] maps (NaN when one of them is constant)."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the k largest entries (ties broken by the lower flat index)."""
    flat = np.ravel(scores)
    return np.lexsort((np.arange(flat.size), -flat))[:k]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k(a) & top-k(b)| / k."""
    k = min(k, np.size(a))
    return len(set(top_k(a, k).tolist()) & set(top_k(b, k).tolist())) / k if k else float("nan")

