"""Fused CPU kernel for the sub-edge proximities, compiled once with numba and cached on disk.

Computes what `importance.attention_proximities_torch` (the slow reference) computes, in one pass over
(head, target, source, coordinate): no temporaries, the acausal half and zero-attention sources skipped,
four targets per pass over a source vector, work spread over all cores. Knows nothing about models.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

ROW_BLOCK = 4  # targets that share one read of f[h, j, :]


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _sub_edge_proximities(alpha, f, sign, two_abs_y, rows):  # pragma: no cover - compiled
    n_heads, n_rows, n_tok = alpha.shape  # n_rows is a multiple of ROW_BLOCK
    d = f.shape[2]
    out = np.zeros((n_heads, n_rows, n_tok), dtype=np.float32)
    n_blocks = n_rows // 4
    zero = np.float32(0.0)
    for item in prange(n_heads * n_blocks):
        # pair long blocks with short ones so that static scheduling splits the work evenly
        q = item // n_heads
        h = item % n_heads
        b = q // 2 if q % 2 == 0 else n_blocks - 1 - q // 2
        i0 = 4 * b
        last = max(max(rows[i0], rows[i0 + 1]), max(rows[i0 + 2], rows[i0 + 3]))
        for j in range(last + 1):
            a0 = alpha[h, i0, j]
            a1 = alpha[h, i0 + 1, j]
            a2 = alpha[h, i0 + 2, j]
            a3 = alpha[h, i0 + 3, j]
            if a0 == 0.0 and a1 == 0.0 and a2 == 0.0 and a3 == 0.0:
                continue  # u = 0 everywhere: min(0, 2|y|) = 0
            c0 = zero
            c1 = zero
            c2 = zero
            c3 = zero
            for k in range(d):
                fk = f[h, j, k]
                u0 = a0 * sign[i0, k] * fk
                u1 = a1 * sign[i0 + 1, k] * fk
                u2 = a2 * sign[i0 + 2, k] * fk
                u3 = a3 * sign[i0 + 3, k] * fk
                c0 += min(u0, two_abs_y[i0, k] - u0)
                c1 += min(u1, two_abs_y[i0 + 1, k] - u1)
                c2 += min(u2, two_abs_y[i0 + 2, k] - u2)
                c3 += min(u3, two_abs_y[i0 + 3, k] - u3)
            out[h, i0, j] = max(c0, zero)
            out[h, i0 + 1, j] = max(c1, zero)
            out[h, i0 + 2, j] = max(c2, zero)
            out[h, i0 + 3, j] = max(c3, zero)
    return out


def sub_edge_proximities(alpha: np.ndarray, f: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """proximity(alpha[h,i,j] f[h,j], y[i]) for target rows `rows` and every source j <= rows[i].

    alpha: [H, R, T] (zero for j > rows[i]), f: [H, T, d], y: [R, d], rows: [R] ascending. Returns [H, R, T].
    """
    n_heads, n_rows, n_tok = alpha.shape
    pad = (-n_rows) % ROW_BLOCK
    sign = np.where(y >= 0, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
    two_abs_y = (2 * np.abs(y)).astype(np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if pad:  # zero-attention rows cost nothing
        alpha = np.concatenate([alpha, np.zeros((n_heads, pad, n_tok), np.float32)], axis=1)
        sign = np.concatenate([sign, np.ones((pad, sign.shape[1]), np.float32)])
        two_abs_y = np.concatenate([two_abs_y, np.zeros((pad, sign.shape[1]), np.float32)])
        rows = np.concatenate([rows, np.full(pad, rows[-1], np.int64)])
    out = _sub_edge_proximities(
        np.ascontiguousarray(alpha, np.float32), np.ascontiguousarray(f, np.float32), sign, two_abs_y, rows
    )
    return out[:, :n_rows]
