"""Triton kernels for the optimizer's hot path.

`xxt` computes the symmetric product A = X·Xᵀ that Newton-Schulz evaluates twice per iteration
(X·Xᵀ, then A·A = A·Aᵀ because A is symmetric). Only the output tiles on and above the diagonal are
computed; each off-diagonal tile is written twice (itself and its transpose), which halves the
matmul work of a plain X @ X.mT.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _xxt_kernel(
    x_ptr, out_ptr,
    M, K,
    stride_xb, stride_xm, stride_xk,
    stride_ob, stride_om, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    # Tiles below the diagonal are the transposes of tiles above it: the mirrored store covers them.
    if pid_m > pid_n:
        return
    batch = tl.program_id(2)
    x_ptr += batch * stride_xb
    out_ptr += batch * stride_ob

    rows_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows_n = pid_n * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + cols
        a = tl.load(x_ptr + rows_m[:, None] * stride_xm + k[None, :] * stride_xk,
                    mask=(rows_m[:, None] < M) & (k[None, :] < K), other=0.0)
        # Loaded already transposed (BLOCK_K, BLOCK_M) so the dot needs no in-register transpose.
        b = tl.load(x_ptr + k[:, None] * stride_xk + rows_n[None, :] * stride_xm,
                    mask=(k[:, None] < K) & (rows_n[None, :] < M), other=0.0)
        acc = tl.dot(a, b, acc)

    result = acc.to(out_ptr.dtype.element_ty)
    in_bounds = (rows_m[:, None] < M) & (rows_n[None, :] < M)
    tl.store(out_ptr + rows_m[:, None] * stride_om + rows_n[None, :] * stride_on, result, mask=in_bounds)
    if pid_m != pid_n:
        tl.store(out_ptr + rows_n[None, :] * stride_om + rows_m[:, None] * stride_on, result, mask=in_bounds)


def _block_sizes(m: int, k: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_K, num_warps, num_stages): large tiles for the transformer's matrices
    (Hopper's tensor cores want 128-wide tiles), small ones so tiny inputs do not waste a launch."""
    if m >= 128 and k >= 64:
        return 128, 64, 8, 3
    return 64, 32, 4, 2


def xxt_triton(x: Tensor) -> Tensor:
    """X·Xᵀ over the last two dims of a 2-D or 3-D (batched) tensor with the Triton kernel.

    Accumulates in float32 and returns x's dtype. Meant for bfloat16 (Newton-Schulz); on a GPU,
    float32 inputs go through TF32 tensor cores like any tl.dot.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"xxt expects a 2-D or 3-D tensor, got shape {tuple(x.shape)}")
    batched = x if x.ndim == 3 else x.unsqueeze(0)
    b, m, k = batched.shape
    out = torch.empty((b, m, m), dtype=x.dtype, device=x.device)
    block_m, block_k, num_warps, num_stages = _block_sizes(m, k)
    tiles = triton.cdiv(m, block_m)
    _xxt_kernel[(tiles, tiles, b)](
        batched, out, m, k,
        batched.stride(0), batched.stride(1), batched.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=num_warps, num_stages=num_stages,
    )
    return out if x.ndim == 3 else out.squeeze(0)


def xxt(x: Tensor) -> Tensor:
    """X·Xᵀ over the last two dims: the Triton kernel on CUDA, the plain matmul elsewhere."""
    if x.is_cuda:
        return xxt_triton(x)
    return x @ x.mT
