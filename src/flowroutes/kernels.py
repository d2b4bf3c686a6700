"""Fused CPU kernel for the sub-edge proximities, compiled once with numba and cached on disk.

Computes what `importance.attention_proximities_torch` (the slow reference) computes, in one pass over
(head, target, source, coordinate): no temporaries, the acausal half and zero-attention sources skipped,
four targets per pass over a source vector, results
written in place, work spread over all cores. Knows nothing about models.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _sub_edge_proximities(alpha, f, sign, two_abs_y, rows, out):  # pragma: no cover - compiled
    n_heads, n_rows, _ = alpha.shape
    d = f.shape[2]
    n_blocks = (n_rows + 3) // 4
    zero = np.float32(0.0)
    for item in prange(n_heads * n_blocks):
        # pair long blocks with short ones so that static scheduling splits the work evenly
        q = item // n_heads
        h = item % n_heads
        b = q // 2 if q % 2 == 0 else n_blocks - 1 - q // 2
        i0 = 4 * b
        n_valid = min(4, n_rows - i0)
        # rows past the end repeat the last one with zero attention: they cost nothing and are not written
        i1 = i0 + min(1, n_valid - 1)
        i2 = i0 + min(2, n_valid - 1)
        i3 = i0 + min(3, n_valid - 1)
        last = rows[i3]
        for j in range(last + 1):
            a0 = alpha[h, i0, j] if j <= rows[i0] else zero
            a1 = alpha[h, i1, j] if n_valid > 1 and j <= rows[i1] else zero
            a2 = alpha[h, i2, j] if n_valid > 2 and j <= rows[i2] else zero
            a3 = alpha[h, i3, j] if n_valid > 3 else zero
            if a0 == 0.0 and a1 == 0.0 and a2 == 0.0 and a3 == 0.0:
                continue  # u = 0 everywhere: min(0, 2|y|) = 0
            c0 = zero
            c1 = zero
            c2 = zero
            c3 = zero
            for k in range(d):
                fk = f[h, j, k]
                u0 = a0 * sign[i0, k] * fk
                u1 = a1 * sign[i1, k] * fk
                u2 = a2 * sign[i2, k] * fk
                u3 = a3 * sign[i3, k] * fk
                c0 += min(u0, two_abs_y[i0, k] - u0)
                c1 += min(u1, two_abs_y[i1, k] - u1)
                c2 += min(u2, two_abs_y[i2, k] - u2)
                c3 += min(u3, two_abs_y[i3, k] - u3)
            out[h, i0, j] = max(c0, zero)
            if n_valid > 1:
                out[h, i1, j] = max(c1, zero)
            if n_valid > 2:
                out[h, i2, j] = max(c2, zero)
            if n_valid > 3:
                out[h, i3, j] = max(c3, zero)


def sub_edge_proximities(
    alpha: np.ndarray,
    f: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    out: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """proximity(alpha[h,i,j] f[h,j] * scale[i], y[i]) for target rows `rows` and every source j <= rows[i].

    alpha: [H, R, T], f: [H, T, d], y: [R, d], rows: [R] ascending, scale: optional [R, d] per-target
    diagonal (a linearised post-norm). Writes [H, R, T] float32 into `out` (C-contiguous, zero-filled).
    """
    n_heads, n_rows, n_tok = alpha.shape
    if out is None:
        out = np.zeros((n_heads, n_rows, n_tok), np.float32)
    sign = np.where(y >= 0, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
    if scale is not None:
        sign = (sign * scale).astype(np.float32)  # u = sign * scale * alpha * f
    two_abs_y = (2 * np.abs(y)).astype(np.float32)
    _sub_edge_proximities(
        np.ascontiguousarray(alpha, np.float32), np.ascontiguousarray(f, np.float32), sign, two_abs_y,
        np.ascontiguousarray(rows, np.int64), out,
    )
    return out
