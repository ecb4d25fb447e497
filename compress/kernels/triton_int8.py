"""A fused dequantize-multiply Triton kernel for int8 weights (GEMV and small-M GEMM on CUDA).

aten's `_weight_int8pack_mm` on CUDA measured 3–10× slower than bf16 (DESIGN.md §6); this
kernel reads each int8 weight once per 16 rows of x and dequantizes in registers.
Triton is optional: `available()` is False without it, and dispatch falls back to dequant+matmul.
The kernel is compiled on first use, so TRITON_INTERPRET=1 set before that runs it on a CPU.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from compress.formats.quant_linear import QuantLinear


@functools.cache
def available() -> bool:
    """Whether triton is installed (imported only when the kernel is first needed)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def int8_mm(x_ptr, w_ptr, s_ptr, z_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_sn, stride_ym,
                GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, SCALE_AFTER: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            x = tl.load(x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
            q = tl.load(w_ptr + rn[:, None] * stride_wn + kk[None, :], mask=(rn[:, None] < N) & (kk[None, :] < K), other=0)
            if SCALE_AFTER:  # per-channel symmetric: integer weights are exact in bf16, scale once at the end
                acc += tl.dot(x, tl.trans(q.to(x.dtype)))
            else:
                g = k0 // GROUP  # BLOCK_K divides GROUP (or one group spans K): one group per block
                s = tl.load(s_ptr + rn * stride_sn + g, mask=rn < N, other=0.0).to(tl.float32)
                w = q.to(tl.float32)
                if HAS_ZERO:
                    z = tl.load(z_ptr + rn * stride_sn + g, mask=rn < N, other=0.0).to(tl.float32)
                    w = w + 128.0 - z[:, None]
                acc += tl.dot(x, tl.trans((w * s[:, None]).to(x.dtype)))
        if SCALE_AFTER:
            s = tl.load(s_ptr + rn * stride_sn, mask=rn < N, other=0.0).to(tl.float32)
            acc = acc * s[None, :]
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    return int8_mm


def int8_triton(x2d: torch.Tensor, mod: "QuantLinear", block_n: int = 64) -> torch.Tensor:
    """y [M, N] = x2d [M, K] · dequant(qweight)ᵀ for an int8 QuantLinear (any group, sym or asym)."""
    m, k = x2d.shape
    n, kp = mod.qweight.shape
    group = mod.qspec.group_for(mod.in_features)
    block_k = min(128, group) if mod.qspec.group_size != -1 else 128
    x2d = x2d.contiguous()
    scales = mod.scales.contiguous()
    zeros = mod.zeros.contiguous() if mod.zeros is not None else scales
    y = torch.empty(m, n, dtype=x2d.dtype, device=x2d.device)
    grid = (-(-n // block_n), -(-m // 16))
    _kernel()[grid](x2d, mod.qweight, scales, zeros, y, m, n, k, x2d.stride(0), mod.qweight.stride(0),
                    scales.stride(0), y.stride(0), GROUP=group if mod.qspec.group_size != -1 else kp,
                    HAS_ZERO=mod.zeros is not None, SCALE_AFTER=mod.qspec.group_size == -1 and mod.zeros is None,
                    BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k)
    return y
