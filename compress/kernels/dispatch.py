"""Pick the kernel for a QuantLinear call; the dequantize-then-matmul path is the universal fallback."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from compress.formats.quant_linear import QuantLinear


def _int8_per_channel_sym(mod: "QuantLinear") -> bool:
    s = mod.qspec
    return s.bits == 8 and s.symmetric and s.group_size == -1


CPU_INT8PACK_MAX_M = 4  # measured on an AVX2 CPU: aten's int8 GEMM beats dequantize+matmul only up to M≈4


def quant_linear(x: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """y = x · Wᵀ + b for a packed weight, on the best kernel available for this call."""
    m = x.numel() // x.shape[-1]
    if _int8_per_channel_sym(mod) and x.device.type == "cpu" and m <= CPU_INT8PACK_MAX_M:
        # aten's int8 weight-only GEMM: reads int8 weights directly, scale per output channel.
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(m, -1), mod.qweight, mod.scales[:, 0].to(x.dtype))
        y = y.reshape(*x.shape[:-1], mod.out_features)
        return y if mod.bias is None else y + mod.bias
    return dequant_linear(x, mod)


def dequant_linear(x: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """Reference path: unpack to the input's dtype and call a dense matmul."""
    return F.linear(x, mod.dense_weight().to(x.dtype), None if mod.bias is None else mod.bias.to(x.dtype))
