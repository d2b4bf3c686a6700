"""Fused CPU kernel for eq. 1 of the attention nodes, compiled once with numba and cached on disk.

`batch_importances` computes, for a whole batch, the sub-edge proximities that `importance.attention_proximities_torch`
computes, in one pass over (prompt, head, target, source, coordinate), and normalises each node as it finishes: no
temporaries, the acausal half and zero-attention sources skipped, four targets per pass over a source vector,
results written in place, work spread over all cores. `proximities` is eq. 1's numerator for plain rows (the
residual and FFN parts). Knows nothing about models.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload


@intrinsic
def _bfloat16_bits(_typingctx, bits):
    """The float32 whose upper 16 bits are `bits` (a bfloat16 value, exactly)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 16:
        return None

    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], ir.IntType(32))
        return builder.bitcast(builder.shl(wide, ir.Constant(ir.IntType(32), 16)), ir.FloatType())

    return types.float32(bits), codegen


def _as_float(x):  # pragma: no cover - only called from compiled code
    """A head value as float32: itself, or a bfloat16 value given by its 16 bits."""
    raise NotImplementedError


@overload(_as_float)
def _as_float_impl(x):  # pragma: no cover - compiled
    if isinstance(x, types.Float):
        return lambda x: x
    if isinstance(x, types.Integer) and x.bitwidth == 16:
        return lambda x: _bfloat16_bits(x)
    return None


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _batch_importances(alpha, f, sign, two_abs_y, rows, known, n_extra, items, starts, out, inv,
                       degenerate, h0, totals, finish):  # pragma: no cover - compiled
    n_heads = alpha.shape[1]  # the heads of this call: h0 .. h0 + n_heads - 1 of the node's out.shape[1]
    d = f.shape[3]
    zero = np.float32(0.0)
    for t in prange(starts.shape[0] - 1):  # one iteration per thread, each with its own list of items
        for item in range(starts[t], starts[t + 1]):
            b = items[item, 0]
            i0 = items[item, 1]
            n_valid = items[item, 2]
            # rows past the prompt's count repeat its last row with zero attention: not written
            i1 = i0 + min(1, n_valid - 1)
            i2 = i0 + min(2, n_valid - 1)
            i3 = i0 + min(3, n_valid - 1)
            p0 = rows[b, i0]
            p1 = rows[b, i1]
            p2 = rows[b, i2]
            last = rows[b, i3]
            t0 = totals[b, i0]  # what earlier calls (head chunks) of this node found
            t1 = totals[b, i1]
            t2 = totals[b, i2]
            t3 = totals[b, i3]
            for h in range(n_heads):
                ho = h0 + h
                for j in range(last + 1):
                    a0 = alpha[b, h, i0, j] if j <= p0 else zero
                    a1 = alpha[b, h, i1, j] if n_valid > 1 and j <= p1 else zero
                    a2 = alpha[b, h, i2, j] if n_valid > 2 and j <= p2 else zero
                    a3 = alpha[b, h, i3, j] if n_valid > 3 else zero
                    c0 = zero
                    c1 = zero
                    c2 = zero
                    c3 = zero
                    if a0 != 0.0 or a1 != 0.0 or a2 != 0.0 or a3 != 0.0:  # else u = 0: min(0, 2|y|) = 0
                        for k in range(d):
                            fk = _as_float(f[h, b, j, k])
                            u0 = a0 * sign[b, i0, k] * fk
                            u1 = a1 * sign[b, i1, k] * fk
                            u2 = a2 * sign[b, i2, k] * fk
                            u3 = a3 * sign[b, i3, k] * fk
                            c0 += min(u0, two_abs_y[b, i0, k] - u0)
                            c1 += min(u1, two_abs_y[b, i1, k] - u1)
                            c2 += min(u2, two_abs_y[b, i2, k] - u2)
                            c3 += min(u3, two_abs_y[b, i3, k] - u3)
                        c0 = max(c0, zero)
                        c1 = max(c1, zero)
                        c2 = max(c2, zero)
                        c3 = max(c3, zero)
                    if j <= p0:
                        out[b, ho, i0, j] = c0
                        t0 += c0
                    if n_valid > 1 and j <= p1:
                        out[b, ho, i1, j] = c1
                        t1 += c1
                    if n_valid > 2 and j <= p2:
                        out[b, ho, i2, j] = c2
                        t2 += c2
                    if n_valid > 3:
                        out[b, ho, i3, j] = c3
                        t3 += c3
            if not finish:  # more heads to come: keep the partial sums
                for r in range(n_valid):
                    totals[b, i0 + r] = t0 if r == 0 else t1 if r == 1 else t2 if r == 2 else t3
                continue
            # eq. 1's denominator: the sub-edges, the residual and (parallel blocks) the FFN of each node
            for r in range(n_valid):
                i = i0 + r
                total = (t0 if r == 0 else t1 if r == 1 else t2 if r == 2 else t3) + known[b, i]
                _normalise(out, inv, degenerate, b, i, rows[b, i], total, n_extra)


@njit(cache=True, fastmath=True, nogil=True)
def _normalise(out, inv, degenerate, b, i, p, total, n_extra):  # pragma: no cover - compiled
    """Divide node (b, i)'s sub-edges out[b, :, i, :p+1] by its total; 0/0: every part gets an equal share."""
    n_heads = out.shape[1]
    if total == 0.0:
        degenerate[b, i] = True
        inv[b, i] = 0.0
        share = np.float32(1.0 / (n_heads * (p + 1) + 1 + n_extra))  # importance.attention_parts, compiled
        for h in range(n_heads):
            for j in range(p + 1):
                out[b, h, i, j] = share
    else:
        inv[b, i] = 1.0 / total
        scale = np.float32(1.0 / total)
        for h in range(n_heads):
            for j in range(p + 1):
                out[b, h, i, j] *= scale


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _proximities(z, y, out):  # pragma: no cover - compiled
    for n in prange(y.shape[0]):
        total = 0.0
        for k in range(y.shape[1]):
            u = z[n, k] if y[n, k] >= 0 else -z[n, k]
            total += min(u, 2 * abs(y[n, k]) - u)
        out[n] = max(total, 0.0)


def proximities(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """proximity(z[n], y[n]) = max(sum_k min(u, 2|y_k| - u), 0), u = sign(y_k) z_k, for rows [N, d] -> [N] float64
    (what `importance.proximity` computes, accumulated in float64)."""
    d = y.shape[-1]
    y2 = np.ascontiguousarray(y, np.float32).reshape(-1, d)
    out = np.empty(y2.shape[0], np.float64)
    _proximities(np.ascontiguousarray(z, np.float32).reshape(-1, d), y2, out)
    return out.reshape(y.shape[:-1])


@njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _signs(y, scale, has_scale, sign, two_abs_y):  # pragma: no cover - compiled
    for n in prange(y.shape[0]):
        for k in range(y.shape[1]):
            s = np.float32(1.0) if y[n, k] >= 0 else np.float32(-1.0)
            sign[n, k] = s * scale[n, k] if has_scale else s
            two_abs_y[n, k] = 2 * abs(y[n, k])


def schedule(rows: np.ndarray, n_rows: np.ndarray, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """Work items (prompt, first row, rows) of at most four rows each, spread over `n_threads` lists of about
    equal cost (the costliest items dealt out first, back and forth). Returns (items [N, 3], starts [threads+1])."""
    n_blocks = (n_rows + 3) // 4
    b = np.repeat(np.arange(len(n_rows)), n_blocks)
    first = np.repeat(np.cumsum(n_blocks) - n_blocks, n_blocks)
    i0 = 4 * (np.arange(len(b)) - first)
    n_valid = np.minimum(4, n_rows[b] - i0)
    cost = (rows[b, i0 + n_valid - 1] + 1) * n_valid
    order = np.argsort(-cost, kind="stable")
    turn = np.arange(len(order)) % (2 * n_threads)
    thread = np.where(turn < n_threads, turn, 2 * n_threads - 1 - turn)
    by_thread = order[np.argsort(thread, kind="stable")]
    starts = np.concatenate([[0], np.cumsum(np.bincount(thread, minlength=n_threads))])
    items = np.stack([b, i0, n_valid], axis=1)[by_thread]
    return np.ascontiguousarray(items, np.int64), starts.astype(np.int64)


def batch_importances(
    alpha: np.ndarray,
    f: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    n_rows: np.ndarray,
    known: np.ndarray,
    n_extra: int,
    out: np.ndarray,
    scale: np.ndarray | None = None,
    n_threads: int = 1,
    heads: tuple[int, np.ndarray, bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-edge importances (eq. 1, normalised) of the nodes y[b, i] of a whole batch, in one call.

    alpha: [B, H, R, T] attention rows of the targets rows[b, i] (i < n_rows[b], ascending per prompt);
    f: [H, B, T, d] head values of every source (float32, or bfloat16 given as its int16 bits: read exactly);
    y: [B, R, d] the nodes; known: [B, R] float64 the proximities of the node's other parts (residual, and the FFN
    of a parallel block: `n_extra` = 1); scale: optional [B, R, d] per-target diagonal (a linearised post-norm).
    Writes the normalised sub-edges into `out` [B, H, R, T] float32 (C-contiguous; entries j > rows[b, i] and rows
    i >= n_rows[b] are left as they are). Returns (inv [B, R] float64: 1 / the node's total, 0 where it is 0;
    degenerate [B, R] bool: 0/0, parts share equally).
    heads = (h0, totals, finish): alpha and f hold only heads h0.. of out's H (a chunk, to bound f's memory);
    totals [B, R] float64 carries the proximity sums from chunk to chunk, and the call with `finish` normalises
    (inv and degenerate mean something only after it).
    """
    shape = y.shape
    y = np.ascontiguousarray(y, np.float32).reshape(-1, shape[-1])
    sign, two_abs_y = np.empty_like(y), np.empty_like(y)
    # u = sign * scale * alpha * f
    _signs(y, y if scale is None else np.ascontiguousarray(scale, np.float32).reshape(y.shape), scale is not None,
           sign, two_abs_y)
    sign, two_abs_y = sign.reshape(shape), two_abs_y.reshape(shape)
    rows = np.ascontiguousarray(rows, np.int64)
    n_rows = np.asarray(n_rows, np.int64)
    items, starts = schedule(rows, n_rows, max(1, min(n_threads, int(n_rows.sum()))))
    inv = np.zeros(rows.shape, np.float64)
    degenerate = np.zeros(rows.shape, np.bool_)
    h0, totals, finish = heads if heads is not None else (0, np.zeros(rows.shape, np.float64), True)
    _batch_importances(
        np.ascontiguousarray(alpha, np.float32),
        np.ascontiguousarray(f, None if f.dtype == np.int16 else np.float32), sign, two_abs_y, rows,
        np.ascontiguousarray(known, np.float64), n_extra, items, starts, out, inv, degenerate, h0, totals, finish,
    )
    return inv, degenerate
