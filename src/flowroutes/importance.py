"""Eq. 1 of the paper and the decompositions it is applied to; the only place importances are computed.

proximity(z, y) = max(||y||_1 - ||z - y||_1, 0), importance = proximity / sum over the node's parts.
Nodes of block l (0-based; docs/architecture.md, "Nodes and layers"):
       x^{lA}_p  = x^l_p + sum_h sum_{j<=p} alpha[h,p,j] f_h(x_j) + const  (H*(p+1) sub-edges + residual)
       x^{l+1}_p = x^{lA}_p + FFN(x^{lA}_p)                               (FFN edge + residual)
with f_h(x_j) = x_j L W_OV^h, the norm linearised at its own scale (appendix B.1); biases and the
norm's beta make `const`, which belongs to the node but to no edge. Does not run models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .models.base import OVWeights

#: elements of the largest temporary of the chunked sub-edge kernel (float32: 4 bytes each)
CHUNK_ELEMENTS = 1 << 23


def proximity_terms(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-coordinate |y_k| - |y_k - z_k|, computed without cancellation.

    With s = sign(y) (+1 at 0) and u = s z:  |y| - |y - z| = min(u, 2|y| - u).  The direct form loses
    the digits of a small z next to a large y (SmolLM2's residual has entries near 700); this one
    returns u exactly whenever u <= |y|. Shapes broadcast; the result has the broadcast shape.
    """
    s = torch.where(y >= 0, 1.0, -1.0).to(z.dtype)
    u = s * z
    return torch.minimum(u, 2 * y.abs() - u)


def proximity(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(||y||_1 - ||z - y||_1, 0) over the last axis."""
    return proximity_terms(z, y).sum(-1).clamp_min(0)


def equal_share(counts: torch.Tensor | int | float) -> torch.Tensor:
    """Eq. 1's 0/0 rule, its one home: a node whose parts' proximities are all zero (their total is 0, proximities
    being >= 0) gives each of its `counts` parts (an int, or a tensor of them) the importance 1 / count, returned
    in float64. The numba kernel's `_normalise` is its compiled twin (compiled code cannot call torch)."""
    return 1.0 / torch.as_tensor(counts, dtype=torch.float64)


def normalise(prox: torch.Tensor, counts: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1's denominator: divide each node's proximities by their sum.

    prox: [N, m] proximities of N nodes (parts beyond a node's count must be 0);
    counts: number of real parts of each node (0/0 nodes: `equal_share`). Returns (importances [N, m],
    degenerate [N] bool).
    """
    total = prox.double().sum(-1)  # [N]
    degenerate = total == 0
    safe = torch.where(degenerate, torch.ones_like(total), total)
    imp = (prox.double() / safe[:, None]).to(prox.dtype)
    if bool(degenerate.any()):
        share = equal_share(counts).to(prox.dtype).expand(total.shape)  # [N]
        imp = torch.where(degenerate[:, None], share[:, None].expand_as(imp), imp)
    return imp, degenerate


def attention_parts(n_heads: int, position, extra: bool):
    """The number of parts of the attention node at target `position` (an int or a tensor of them): H (p + 1)
    sub-edges, the residual and, in a parallel block, the FFN update. A node whose proximities are all 0 gives each
    part 1 / this (`equal_share`)."""
    return n_heads * (position + 1) + 1 + int(extra)


# --- the attention block ------------------------------------------------------------------------


def head_values(normed: torch.Tensor, ov: OVWeights, norm_bias: torch.Tensor | None, kv_heads: list[int]):
    """f_h(x_j) for every head and source, and the attention block's constant term.

    normed: [(B,) T, d] the norm's output LN(x_j) = x_j L + beta; kv_heads: [H] the value head each query head
    reads (`Adapter.kv_heads`). Returns (f [(B,) H, T, d], const [d]) with
    f[h, j] = (LN(x_j) - beta) W_V^{kv(h)} W_O^h (`head_values_by_head`, what the engines use) and `head_constant`.
    """
    f = head_values_by_head(normed, ov, norm_bias, kv_heads, normed.dtype)  # [H, N, d]
    f = f.view(f.shape[0], *normed.shape[:-1], f.shape[-1]).movedim(0, -3)  # [(B,) H, T, d]
    return f, head_constant(ov, norm_bias, kv_heads, normed.dtype)


def head_constant(ov: OVWeights, norm_bias: torch.Tensor | None, kv_heads: list[int], dtype: torch.dtype):
    """The attention block's constant [d]: b_O + sum_h (beta W_V^{kv(h)} + b_V^{kv(h)}) W_O^h (attention weights of a
    row sum to 1, so it does not depend on them). It belongs to the node x^{lA}_p, to no edge."""
    value, output = ov.value.to(dtype), ov.output.to(dtype)  # [KV, d, dh], [H, dh, d]
    kv_of_head = torch.tensor(kv_heads, device=value.device)
    bias_v = torch.zeros(value.shape[0], 1, value.shape[2], dtype=dtype, device=value.device)  # [KV, 1, dh]
    if ov.value_bias is not None:
        bias_v = bias_v + ov.value_bias.to(dtype)[:, None, :]
    if norm_bias is not None:
        bias_v = bias_v + torch.matmul(norm_bias.to(dtype), value)[:, None, :]  # beta W_V
    const = torch.bmm(bias_v[kv_of_head], output).sum(0)[0]  # [d]  sum_h (beta W_V + b_V) W_O^h
    if ov.output_bias is not None:
        const = const + ov.output_bias.to(dtype)
    return const


def head_values_by_head(normed: torch.Tensor, ov: OVWeights, norm_bias: torch.Tensor | None, kv_heads: list[int],
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """f_h(x_j) as [H, N, d] for the N rows of `normed` [..., d], in `dtype` (what `head_values` computes, without
    its constant): one matrix product for the values of every head, one product per head for the outputs. Only
    this block's W_V and W_O are converted to `dtype` (a half-precision model keeps its own weights)."""
    d = normed.shape[-1]
    lin = normed.reshape(-1, d).to(dtype)
    if norm_bias is not None:
        lin = lin - norm_bias.to(dtype)  # x_j L
    n_kv, _, dh = ov.value.shape
    w_v = ov.value.permute(1, 0, 2).reshape(d, n_kv * dh).T.to(dtype)  # [KV*dh, d]: nn.Linear's own layout
    v = torch.nn.functional.linear(lin, w_v).view(-1, n_kv, dh)  # [N, KV, dh]
    return head_outputs(v.transpose(0, 1).contiguous(), ov.output, kv_heads, dtype)


def centred_values(values: torch.Tensor, ov: OVWeights, norm_bias: torch.Tensor | None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The value vectors the forward pass itself computed, values [N, KV, dh] (v_j = LN(x_j) W_V + b_V =
    x_j L W_V + beta W_V + b_V), without their constant, value head first: [KV, N, dh] in `dtype`. Through
    `head_outputs` they give f_h(x_j) = (v_j - beta W_V - b_V) W_O^h without running the value projection again, and in
    half precision from exactly the vectors the model multiplied by W_O."""
    v = values.to(dtype)
    n_kv, _, dh = ov.value.shape
    constant = torch.zeros(n_kv, dh, dtype=dtype, device=v.device)  # [KV, dh]: beta W_V + b_V
    if ov.value_bias is not None:
        constant = constant + ov.value_bias.to(v.device, dtype)
    if norm_bias is not None:
        constant = constant + torch.einsum("d,kde->ke", norm_bias.to(v.device, dtype), ov.value.to(v.device, dtype))
    return (v - constant).transpose(0, 1).contiguous()


def head_outputs(by_kv: torch.Tensor, output: torch.Tensor, kv_heads: list[int], dtype: torch.dtype) -> torch.Tensor:
    """by_kv [KV, N, dh] -> [H, N, d]: v^{kv(h)} W_O^h for the heads of `output` [H, dh, d] (kv_heads [H]: the value
    head each reads), one matrix product per head (on CPUs faster than one batched product), each head's W_O
    converted to `dtype` on its own."""
    n_rows, d = by_kv.shape[1], output.shape[-1]
    out = torch.empty(len(kv_heads), n_rows, d, dtype=dtype, device=by_kv.device)
    for h, kv in enumerate(kv_heads):
        torch.mm(by_kv[kv], output[h].to(dtype), out=out[h])
    return out


def attention_proximities_torch(
    alpha: torch.Tensor,
    f: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    chunk_elements: int = CHUNK_ELEMENTS,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The slow reference: proximity(alpha[h,i,j] f[h,j] * scale[i], y[i]) for target positions `rows`, j <= rows[i].

    alpha: [H, R, T] attention rows of the targets, f: [H, T, d], y: [R, d], rows: [R] ascending;
    scale: optional [R, d] per-target diagonal (a post-norm linearised at its own scale).
    Returns [H, R, T] (zero for j > rows[i]). Works on blocks of targets so no [H, T, T, d] tensor ever
    exists; a block reads only the sources up to its last target (the acausal half is skipped).
    """
    n_heads, n_tok, d = f.shape
    n_rows = rows.shape[0]
    out = torch.zeros(n_heads, n_rows, n_tok, dtype=f.dtype, device=f.device)
    sign = torch.where(y >= 0, 1.0, -1.0).to(f.dtype)  # [R, d]
    if scale is not None:
        sign = sign * scale.to(f.dtype)
    two_abs_y = 2 * y.abs()  # [R, d]
    i0 = 0
    while i0 < n_rows:
        # the largest block [i0, i1) with H * (i1 - i0) * (rows[i1-1] + 1) * d <= budget
        i1 = i0 + 1
        while i1 < n_rows and n_heads * (i1 + 1 - i0) * (int(rows[i1]) + 1) * d <= chunk_elements:
            i1 += 1
        src = int(rows[i1 - 1]) + 1
        u = f[:, None, :src, :] * sign[None, i0:i1, None, :]  # [H, P, J, d]  s_p * f_j
        u = u * alpha[:, i0:i1, :src, None]  # s_p * alpha[h,p,j] * f[h,j]
        terms = torch.minimum(u, two_abs_y[None, i0:i1, None, :] - u)
        out[:, i0:i1, :src] = terms.sum(-1).clamp_min(0)
        i0 = i1
    return out


def backend(kernel: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """The one choice of the code that computes sub-edge proximities, made from what is asked (`kernel`), where the
    tensors live and in what dtype. "auto": the fused numba kernel on CPU, the fused Triton kernel for float32 on
    CUDA where triton is installed, the chunked torch path otherwise and for float64 (the fused kernels compute in
    float32). Any other name is taken as asked ("reference": `flowroutes.reference`, the full engine's)."""
    if kernel != "auto":
        return kernel
    if dtype == torch.float64:
        return "torch"
    if device.type == "cpu":
        return "numba"
    from .kernels_gpu import triton_available

    return "triton" if device.type == "cuda" and dtype == torch.float32 and triton_available() else "torch"


def attention_proximities(
    alpha: torch.Tensor,
    f: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    kernel: str = "torch",
    chunk_elements: int = CHUNK_ELEMENTS,
    out: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sub-edge proximities [H, R, T] of one prompt by the chunked torch path ("torch") or the fused Triton kernel
    ("triton", float32 on CUDA). Same arguments as `attention_proximities_torch`; `out` (zeros, [H, R, T]) receives
    the result when given. The fused CPU kernel normalises as it goes: it is reached through `attention_importance`
    or `batch_attention_importance`."""
    if kernel == "triton":
        if f.dtype != torch.float32:
            raise ValueError(f"kernel='triton' computes in float32, got {f.dtype}: use kernel='torch'")
        from .kernels_gpu import sub_edge_proximities_cuda

        result = sub_edge_proximities_cuda(alpha, f, y, rows, scale)
    elif kernel == "torch":
        result = attention_proximities_torch(alpha, f, y, rows, chunk_elements, scale)
    else:
        raise ValueError(f"attention_proximities computes with 'torch' or 'triton', got {kernel!r}")
    return result if out is None else out.copy_(result)


def attention_importance(
    alpha: torch.Tensor,
    f: torch.Tensor,
    x_in: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor | None = None,
    kernel: str = "auto",
    chunk_elements: int = CHUNK_ELEMENTS,
    out: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    alpha_rows: bool = False,
    prune: float = 0.0,
):
    """Importances of the parts of the node y_p for p in `rows`: all H*(p+1) sub-edges, the residual and
    (parallel blocks) the FFN update, jointly (eq. 1).

    alpha: [H, T, T] ([H, R, T], the rows' weights only, with `alpha_rows`), f: [H, T, d], x_in, y: [T, d];
    rows: target positions (default: all, ascending);
    kernel: as `backend` takes it; the fused CPU kernel ("numba") runs as `batch_attention_importance` of a batch of
    one prompt;
    scale: optional [T, d] per-target diagonal applied to every sub-edge (a linearised post-norm);
    extra: optional [T, d] one more part of each node (the FFN update of a parallel block);
    out: an optional zero-filled [H, R, T] buffer that receives the sub-edge importances;
    prune: > 0 skips sub-edges whose proximity is certified too small to matter (see `prunable`): every
    importance then stays within `prune` of its exact value.
    Returns (sub [H, R, T], residual [R], degenerate [R] bool, extra [R] or None).
    """
    n_heads, n_tok, _ = f.shape
    if rows is None:
        rows = torch.arange(n_tok, device=f.device)
        pick = slice(None)
    else:
        pick = rows
    y_rows = y[pick]
    scale_rows = None if scale is None else scale[pick]
    alpha_r = alpha if alpha_rows else alpha[:, pick]  # [H, R, T]
    kernel = backend(kernel, f.device, f.dtype)
    if kernel == "numba":
        return _one_prompt_fused(alpha_r, f, x_in[pick], y_rows, rows, scale_rows,
                                 None if extra is None else extra[pick], prune, out)
    res = proximity(x_in[pick], y_rows)  # [R]
    extra_prox = None if extra is None else proximity(extra[pick], y_rows)
    if prune > 0:
        known = res if extra_prox is None else res + extra_prox  # a lower bound of each node's total
        alpha_r = alpha_r * ~prunable(alpha_r[None], f[:, None], known[None], rows[None], prune,
                                      None if scale_rows is None else scale_rows[None])[0]
    sub = attention_proximities(alpha_r, f, y_rows, rows, kernel, chunk_elements, out, scale_rows)  # [H, R, T]
    total = sub.sum(dim=(0, 2)).double() + res.double()  # [R]  eq. 1's denominator
    if extra_prox is not None:
        total = total + extra_prox.double()
    degenerate = total == 0
    inv = torch.where(degenerate, torch.zeros_like(total), 1.0 / total)
    sub.mul_(inv.to(sub.dtype)[None, :, None])  # normalised in place
    res_imp = (res.double() * inv).to(res.dtype)
    extra_imp = None if extra_prox is None else (extra_prox.double() * inv).to(res.dtype)
    if bool(degenerate.any()):
        share = equal_share(attention_parts(n_heads, rows.double(), extra is not None))  # [R]
        fill = degenerate[:, None] & (torch.arange(sub.shape[-1], device=sub.device)[None, :] <= rows[:, None])
        sub[:, fill] = share[:, None].expand(fill.shape)[fill].to(sub.dtype)  # [H, R, T], sources j <= p only
        res_imp = torch.where(degenerate, share.to(res_imp.dtype), res_imp)
        if extra_imp is not None:
            extra_imp = torch.where(degenerate, share.to(extra_imp.dtype), extra_imp)
    return sub, res_imp, degenerate, extra_imp


def _one_prompt_fused(alpha, f, x_in, y, rows, scale, extra, prune, out):
    """`attention_importance` by the fused CPU kernel: one prompt as a batch of one (alpha [H, R, T], f [H, T, d],
    x_in, y, scale, extra [R, d] at the rows). Results on f's device."""
    def one(t):
        return None if t is None else t[None].cpu()

    sub, res, degenerate, extra_imp = batch_attention_importance(
        one(alpha), f[:, None].cpu(), one(x_in), one(y), one(rows), [int(rows.shape[0])], scale=one(scale),
        extra=one(extra), prune=prune, out=None if out is None or out.device.type != "cpu" else out[None])
    if out is not None and out.device.type != "cpu":
        out.copy_(sub[0])
    device = f.device
    return ((out if out is not None else sub[0].to(device)), res[0].to(device), degenerate[0].to(device),
            None if extra_imp is None else extra_imp[0].to(device))


@contextlib.contextmanager
def numba_threads() -> Iterator[int]:
    """Run numba kernels on torch's thread count (yielded), and give torch its count back afterwards: numba's
    OpenMP layer shares the process's OpenMP state with torch (without this, torch set to 1 thread runs on 2
    after a kernel and oversubscribes)."""
    import numba

    threads = torch.get_num_threads()
    n_threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n_threads)
    try:
        yield n_threads
    finally:
        torch.set_num_threads(threads)


def batch_attention_importance(
    alpha: torch.Tensor,
    f: torch.Tensor | Callable[[int, int], torch.Tensor],
    x_in: torch.Tensor | None,
    y: torch.Tensor,
    rows: torch.Tensor,
    n_rows: list[int] | torch.Tensor,
    scale: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    prune: float = 0.0,
    out: torch.Tensor | None = None,
    heads_per_call: int | None = None,
    residual: torch.Tensor | None = None,
):
    """`attention_importance` for a whole batch in one call of the fused numba kernel (float32, CPU).

    alpha: [B, H, R, T] the attention rows of targets rows[b, i] (i < n_rows[b], ascending per prompt), f: [H, B, T, d]
    (`head_values_by_head` of the batch's [B, T, d]; float32, or bfloat16, read exactly without a float32 copy),
    x_in, y, scale, extra: [B, R, d] at those rows (x^l, the node, the post-norm diagonal, a parallel block's FFN
    update); out: an optional [B, H, R, T] float32 buffer whose
    entries past each row's target (j > rows[b, i]) are 0. Returns (sub [B, H, R, T], residual [B, R],
    degenerate [B, R] bool, extra [B, R] or None); entries of rows i >= n_rows[b] are meaningless.
    With `heads_per_call`, f is a function (h0, h1) -> [h1 - h0, B, T, d] called for one chunk of heads at a time,
    so that only one chunk of head values exists at once (the kernel carries each node's sums across chunks).
    `residual` [B, R] float64: the residual edges' proximities, already computed (x_in is then not read).
    """
    from .kernels import batch_importances, proximities

    n_batch, n_heads, n_slots, n_tok = alpha.shape
    rows = rows.to(torch.long)
    y_np = y.detach().float().numpy()
    step = heads_per_call or n_heads
    chunk = f if callable(f) else (lambda h0, h1: f[h0:h1])
    with numba_threads() as n_threads:
        if residual is None:
            residual = torch.from_numpy(proximities(x_in.detach().float().numpy(), y_np))  # [B, R] float64
        res = residual.to(torch.float64)
        extra_prox = None if extra is None else torch.from_numpy(proximities(extra.detach().float().numpy(), y_np))
        known = res if extra_prox is None else res + extra_prox
        if out is None:
            out = torch.zeros(n_batch, n_heads, n_slots, n_tok, dtype=torch.float32)
        totals = np.zeros(tuple(rows.shape), np.float64)
        for h0 in range(0, n_heads, step):
            h1 = min(h0 + step, n_heads)
            f_c, alpha_c = chunk(h0, h1), alpha[:, h0:h1]  # [Hc, B, T, d], [B, Hc, R, T]
            if prune > 0:
                alpha_c = alpha_c.masked_fill(prunable(alpha_c, f_c, known, rows, prune, scale, n_heads), 0.0)
            inv, degenerate = batch_importances(
                alpha_c.detach().float().numpy(), _kernel_values(f_c), y_np, rows.numpy(),
                torch.as_tensor(n_rows).numpy(), known.numpy(), int(extra is not None), out.numpy(),
                None if scale is None else scale.detach().float().numpy(), n_threads,
                heads=(h0, totals, h1 == n_heads))
            del f_c
    inv_t, degenerate_t = torch.from_numpy(inv), torch.from_numpy(degenerate)
    share = equal_share(attention_parts(n_heads, rows.double(), extra is not None))  # [B, R], for 0/0 nodes
    res_imp = torch.where(degenerate_t, share, res * inv_t).float()
    extra_imp = None if extra_prox is None else torch.where(degenerate_t, share, extra_prox * inv_t).float()
    return out, res_imp, degenerate_t, extra_imp


def _kernel_values(f: torch.Tensor) -> np.ndarray:
    """Head values as the fused kernel reads them: float32, or bfloat16 as its raw 16 bits (the kernel widens each
    value exactly, so no float32 copy of them is made)."""
    f = f.detach()
    if f.dtype == torch.bfloat16:
        return f.contiguous().view(torch.int16).numpy()
    return f.float().numpy()


def prunable(
    alpha: torch.Tensor, f: torch.Tensor, known: torch.Tensor, rows: torch.Tensor, tolerance: float,
    scale: torch.Tensor | None = None, n_heads: int | None = None,
) -> torch.Tensor:
    """Sub-edges [B, Hc, R, T] (bool) whose proximity need not be computed for importances within `tolerance`.

    alpha: [B, Hc, R, T] attention rows of the targets rows [B, R], f: [Hc, B, T, d] their heads' values (a chunk of
    the node's `n_heads` heads, default all), known: [B, R] proximities of the node's other parts, scale: optional
    [B, R, d] per-target diagonal.
    proximity(z, y) <= ||z||_1 (per coordinate |y| - |y - z| <= |z|), so a sub-edge's proximity is at most
    its bound b = alpha[h,i,j] ||f[h,j] * scale[i]||_1. Skipping (taking as 0) a set of sub-edges whose bounds
    sum to S changes every importance of the node by at most S / total', total' being the sum of what is
    computed, which includes the parts in `known` (residual, parallel FFN). So skipping each sub-edge with
    b <= tolerance * known / (H (p + 1)) keeps S <= tolerance * total' and every importance within tolerance.
    """
    n_heads = n_heads or f.shape[0]
    f_abs = f.abs().to(torch.promote_types(f.dtype, torch.float32))
    if scale is None:
        bound = alpha * f_abs.sum(-1).transpose(0, 1)[:, :, None, :]  # [B, Hc, R, T]
    else:
        bound = alpha * torch.einsum("hbtd,brd->bhrt", f_abs, scale.abs())
    cap = tolerance * known.to(bound.dtype) / (n_heads * (rows + 1))  # [B, R]
    return bound <= cap.to(bound.dtype)[:, None, :, None]


# --- the FFN ------------------------------------------------------------------------------------


def ffn_importance(x_mid: torch.Tensor, ffn_out: torch.Tensor, y: torch.Tensor):
    """Importances of the FFN output and the residual x^{lA}_p in x^{l+1}_p.

    x_mid, ffn_out, y: [T, d]. Returns (ffn [T], residual [T], degenerate [T] bool). float32 tensors on the CPU
    go through numba (one pass each, accumulated in float64), others through torch.
    """
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (x_mid, ffn_out, y)):
        from .kernels import proximities

        y_np = y.detach().numpy()
        with numba_threads():
            prox = torch.from_numpy(np.stack([proximities(ffn_out.detach().numpy(), y_np),
                                              proximities(x_mid.detach().numpy(), y_np)], axis=-1))  # [T, 2] float64
        imp, degenerate = normalise(prox, 2)
        return imp[:, 0].float(), imp[:, 1].float(), degenerate
    prox = torch.stack([proximity(ffn_out, y), proximity(x_mid, y)], dim=1)  # [T, 2]
    imp, degenerate = normalise(prox, 2)
    return imp[:, 0], imp[:, 1], degenerate

