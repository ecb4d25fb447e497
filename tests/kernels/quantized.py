"""Shared builder for kernel tests: a QuantLinear from a random dense weight (RTN codes)."""
from __future__ import annotations

import torch

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.formats.quant_linear import QuantLinear


def make(spec: QuantSpec, n: int, k: int, bias: bool = True, seed: int = 0) -> QuantLinear:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) / k**0.5
    b = torch.randn(n, generator=g) if bias else None
    q, s, z = rtn_quantize(w, spec)
    return QuantLinear.from_codes(q, s, z, spec, k, b, torch.float32)


def reference(x: torch.Tensor, mod: QuantLinear) -> torch.Tensor:
    """Dense float64 math on the dequantized weight: what every kernel must reproduce."""
    y = x.double() @ mod.dense_weight().double().T
    return y if mod.bias is None else y + mod.bias.double()


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref).norm() / ref.norm())
