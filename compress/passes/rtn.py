"""`rtn`: round-to-nearest weight-only quantization into packed int8/int4 storage."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.context import Context
from compress.formats.quant_linear import QuantLinear
from compress.registry import PassConfig, option, register_pass
from compress.select import select_modules, set_module


@dataclass(frozen=True, kw_only=True)
class GridConfig(PassConfig):
    """The integer grid options every quantizing pass shares (awq: the grid of the quantizer that follows)."""

    bits: int = option(4, "bits per weight (3: packed, computed through the dequantizing path)", choices=(3, 4, 8))
    group_size: int = option(128, "weights per scale along the input dim; -1 = one scale per output channel", choices=(-1, 32, 64, 128, 256))
    symmetric: bool = option(False, "symmetric grid (no zero point); false stores an integer zero point per group")

    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.group_size, self.symmetric)


@dataclass(frozen=True, kw_only=True)
class RTNConfig(GridConfig):
    bits: int = option(8, "bits per weight (3: packed, computed through the dequantizing path)", choices=(3, 4, 8))
    group_size: int = option(-1, "weights per scale along the input dim; -1 = one scale per output channel", choices=(-1, 32, 64, 128, 256))
    symmetric: bool = option(True, "symmetric grid (no zero point); false stores an integer zero point per group")
    clip_search: bool = option(False, "MSE-searched group ranges (shrink min/max while the rounding error drops)")


def quantize_linear(lin: nn.Linear, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> QuantLinear:
    """Swap-in module for a dense linear given its new codes (shared by every quantizing pass)."""
    return QuantLinear.from_codes(codes, scale, zero, spec, lin.in_features, lin.bias, lin.weight.dtype)


@register_pass("rtn", RTNConfig)
def rtn(model: nn.Module, cfg: RTNConfig, ctx: Context) -> nn.Module:
    """Round-to-nearest weight-only quantization (no calibration data)."""
    spec = cfg.spec()
    chosen = select_modules(model, cfg.targets, cfg.ignore, ctx.where)
    for name, lin in chosen.items():
        codes, scale, zero = rtn_quantize(lin.weight, spec, cfg.clip_search)
        set_module(model, name, quantize_linear(lin, codes, scale, zero, spec))
    ctx.stats["modules"] = len(chosen)
    return model
