"""Kernels for SparseLinear: dense fallback everywhere; 2:4 semi-structured on CUDA when enabled.

The semi-structured path is off by default: it has not been measured faster on our GPU yet
(the foundation measured `F.linear(x, to_sparse_semi_structured(W))` 2–29× slower at M=2048).
`benchmarks/sparse24.py` measures it; set COMPRESS_SPARSE24=1 (or SEMI_STRUCTURED = True) to try it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from compress.formats.sparse import SparseLinear

SEMI_STRUCTURED = os.environ.get("COMPRESS_SPARSE24", "0") == "1"
SEMI_MIN_M = 1  # smallest token count sent to the semi-structured kernel (tune from the benchmark)


def semi_structured_ok(x: torch.Tensor, mod: "SparseLinear") -> bool:
    """cuSPARSELt/CUTLASS 2:4 needs CUDA, fp16/bf16 and in/out features that are multiples of 64."""
    return (SEMI_STRUCTURED and x.is_cuda and mod.pattern == "2:4" and x.dtype in (torch.float16, torch.bfloat16)
            and mod.in_features % 64 == 0 and mod.out_features % 64 == 0 and x.numel() // x.shape[-1] >= SEMI_MIN_M)


def semi_linear(x: torch.Tensor, mod: "SparseLinear") -> torch.Tensor:
    """y = (W_sparse · xᵀ)ᵀ: the sparse operand first, which is the layout cuSPARSELt accelerates."""
    from torch.sparse import to_sparse_semi_structured

    if mod._semi is None or mod._semi.dtype != x.dtype:
        mod._semi = to_sparse_semi_structured(mod.dense_weight().to(x.dtype))
    x2 = x.reshape(-1, x.shape[-1])
    m = x2.shape[0]
    pad = -m % 8  # the dense operand's column count must be a multiple of 8
    xt = F.pad(x2, (0, 0, 0, pad)).t() if pad else x2.t()
    y = torch.mm(mod._semi, xt).t()[:m]
    y = y.reshape(*x.shape[:-1], mod.out_features)
    return y if mod.bias is None else y + mod.bias.to(x.dtype)


def sparse_linear(x: torch.Tensor, mod: "SparseLinear") -> torch.Tensor:
    """y = x · Wᵀ + b on the best path for this call."""
    if semi_structured_ok(x, mod):
        return semi_linear(x, mod)
    return F.linear(x, mod.dense_weight().to(x.dtype), None if mod.bias is None else mod.bias.to(x.dtype))
