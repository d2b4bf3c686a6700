"""Fused CUDA kernel for the sub-edge proximities, written in Triton; the same algorithm in plain torch.

Computes what `importance.attention_proximities_torch` (the slow reference) computes,
    out[h, i, j] = max(sum_k min(u, 2|y_ik| - u), 0),  u = alpha[h, i, j] * s_ik * f[h, j, k]  (j <= rows[i]),
with s = sign(y) (times the per-target `scale` of a linearised post-norm), without materialising any
[H, R, T, d] (or [R, T, d]) temporary: one program owns a BLOCK_M x BLOCK_N tile of (target, source) pairs of
one head, keeps its attention weights and running sums in registers and walks the coordinates k one at a time,
reading a column of the signs, of 2|y| and of f (transposed copies, so that each column is contiguous). Targets
and sources are zero-padded to a multiple of PAD, so no load is masked and each thread of a tile holds a
few whole rows of four adjacent sources (about 5 float instructions per sub-edge and coordinate, nearly all
of the loop). Tiles wholly above the diagonal (every source after every target of the tile) do no work.

`sub_edge_proximities_blocked` runs the kernel's algorithm (same padding, tiles, masks and order of the sums) in plain
torch, so that its math is checked against the numba kernel where no GPU is. Knows nothing about models.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

#: tile shapes the autotuner picks from: (BLOCK_M targets, BLOCK_N sources, warps)
TILE_CONFIGS = ((64, 64, 4), (64, 64, 2), (32, 64, 2), (128, 64, 8), (64, 128, 8), (128, 128, 8))
#: targets and sources are padded to a multiple of this (every tile shape divides it): no masked loads
PAD = 128


def triton_available() -> bool:
    """Whether the Triton kernel can run here: triton importable and a CUDA device present."""
    return importlib.util.find_spec("triton") is not None and torch.cuda.is_available()


def _padded(n: int) -> int:
    return -(-n // PAD) * PAD


def _operands(alpha: torch.Tensor, f: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
              scale: torch.Tensor | None):
    """What the kernel reads, float32, contiguous, on f's device, targets padded to R' and sources to T'
    (multiples of PAD): alpha [H, R', T'], sign^T [d, R'] (times scale^T), 2|y|^T [d, R'], f^T [H, d, T'],
    rows [R'] int32. Padding is 0 (-1 for rows: a padded target has no sources)."""
    n_heads, n_rows, n_tok = alpha.shape
    d = f.shape[2]
    r_pad, t_pad = _padded(n_rows), _padded(n_tok)
    kw = dict(dtype=torch.float32, device=f.device)
    y32 = y.to(torch.float32)
    sign = torch.where(y32 >= 0, 1.0, -1.0).to(torch.float32)
    if scale is not None:
        sign = sign * scale.to(torch.float32)  # u = sign * scale * alpha * f
    a = torch.zeros(n_heads, r_pad, t_pad, **kw)
    a[:, :n_rows, :n_tok] = alpha
    sign_t = torch.zeros(d, r_pad, **kw)
    sign_t[:, :n_rows] = sign.t()
    two_abs_y_t = torch.zeros(d, r_pad, **kw)
    two_abs_y_t[:, :n_rows] = 2 * y32.abs().t()
    f_t = torch.zeros(n_heads, d, t_pad, **kw)
    f_t[:, :, :n_tok] = f.transpose(1, 2)
    rows32 = torch.full((r_pad,), -1, dtype=torch.int32, device=f.device)
    rows32[:n_rows] = rows
    return a, sign_t, two_abs_y_t, f_t, rows32


@functools.cache
def _kernel():  # pragma: no cover - needs triton and a GPU
    import triton
    import triton.language as tl

    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w) for m, n, w in TILE_CONFIGS]

    @triton.autotune(configs=configs, key=["D"])
    @triton.jit
    def sub_edge_kernel(alpha_ptr, sign_t_ptr, two_abs_y_t_ptr, f_t_ptr, rows_ptr, out_ptr, R_PAD, T_PAD, D,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        pid_n = tl.program_id(0)  # block of sources
        pid_m = tl.program_id(1)  # block of targets
        h = tl.program_id(2).to(tl.int64)
        offs_m = tl.max_contiguous(tl.multiple_of(pid_m * BLOCK_M + tl.arange(0, BLOCK_M), BLOCK_M), BLOCK_M)
        offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
        rows = tl.load(rows_ptr + offs_m)
        if pid_n * BLOCK_N <= tl.max(rows, axis=0):  # else every source follows every target: nothing to do
            causal = offs_n[None, :] <= rows[:, None]
            tile = h * R_PAD * T_PAD + offs_m[:, None].to(tl.int64) * T_PAD + offs_n[None, :]
            a = tl.where(causal, tl.load(alpha_ptr + tile), 0.0)  # [BM, BN]; u = 0 adds min(0, 2|y|) = 0
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            f_head = f_t_ptr + h * D * T_PAD
            for k in range(0, D):
                s = tl.load(sign_t_ptr + k * R_PAD + offs_m)  # [BM]
                c = tl.load(two_abs_y_t_ptr + k * R_PAD + offs_m)  # [BM]
                fk = tl.load(f_head + k * T_PAD + offs_n)  # [BN]
                u = a * (s[:, None] * fk[None, :])
                acc += tl.minimum(u, c[:, None] - u)
            tl.store(out_ptr + tile, tl.where(causal, tl.maximum(acc, 0.0), 0.0))

    return sub_edge_kernel


def sub_edge_proximities_cuda(
    alpha: torch.Tensor,
    f: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """proximity(alpha[h,i,j] f[h,j] * scale[i], y[i]) for target rows `rows` and every source j <= rows[i].

    alpha: [H, R, T], f: [H, T, d], y: [R, d], rows: [R] ascending, scale: optional [R, d], all on one CUDA
    device. Returns [H, R, T] float32 on that device (zero for j > rows[i]; a view into a padded buffer).
    """
    if f.device.type != "cuda":
        raise ValueError(f"the Triton kernel runs on CUDA tensors, got {f.device}: use kernel='numba' or 'torch'")
    n_heads, n_rows, n_tok = alpha.shape
    d = f.shape[2]
    if n_rows == 0 or n_tok == 0:
        return torch.zeros(n_heads, n_rows, n_tok, dtype=torch.float32, device=f.device)
    a, sign_t, two_abs_y_t, f_t, rows32 = _operands(alpha, f, y, rows, scale)
    r_pad, t_pad = rows32.shape[0], f_t.shape[2]
    out = torch.zeros(n_heads, r_pad, t_pad, dtype=torch.float32, device=f.device)

    def grid(meta):
        return t_pad // meta["BLOCK_N"], r_pad // meta["BLOCK_M"], n_heads

    with torch.cuda.device(f.device):
        _kernel()[grid](a, sign_t, two_abs_y_t, f_t, rows32, out, r_pad, t_pad, d)
    return out[:, :n_rows, :n_tok]


def sub_edge_proximities_blocked(
    alpha: torch.Tensor,
    f: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor,
    scale: torch.Tensor | None = None,
    block_m: int = 64,
    block_n: int = 64,
) -> torch.Tensor:
    """The Triton kernel's algorithm, tile by tile, in plain torch (any device; slow: for tests).

    Same arguments and result as `sub_edge_proximities_cuda`; block_m and block_n must divide PAD. The heads of
    a tile are computed together (in the kernel each head is its own program, which changes no sum)."""
    if PAD % block_m or PAD % block_n:
        raise ValueError(f"tile shapes must divide {PAD}, got {block_m} x {block_n}")
    n_heads, n_rows, n_tok = alpha.shape
    d = f.shape[2]
    a_all, sign_t, two_abs_y_t, f_t, rows32 = _operands(alpha, f, y, rows, scale)
    r_pad, t_pad = rows32.shape[0], f_t.shape[2]
    out = torch.zeros(n_heads, r_pad, t_pad, dtype=torch.float32, device=f.device)
    for pid_m in range(r_pad // block_m):
        offs_m = slice(pid_m * block_m, (pid_m + 1) * block_m)
        tile_rows = rows32[offs_m]
        for pid_n in range(t_pad // block_n):
            if pid_n * block_n > int(tile_rows.max()):
                continue
            offs_n = slice(pid_n * block_n, (pid_n + 1) * block_n)
            causal = torch.arange(pid_n * block_n, (pid_n + 1) * block_n, device=f.device)[None, :] \
                <= tile_rows[:, None]  # [BM, BN]
            a = torch.where(causal, a_all[:, offs_m, offs_n], 0.0)  # [H, BM, BN]
            acc = torch.zeros(n_heads, block_m, block_n, dtype=torch.float32, device=f.device)
            for k in range(d):
                s, c, fk = sign_t[k, offs_m], two_abs_y_t[k, offs_m], f_t[:, k, offs_n]  # [BM], [BM], [H, BN]
                u = a * (s[None, :, None] * fk[:, None, :])
                acc += torch.minimum(u, c[None, :, None] - u)
            out[:, offs_m, offs_n] = torch.where(causal, acc.clamp_min(0), 0.0)
    return out[:, :n_rows, :n_tok]
