"""Quantization-aware training modules: a packed QuantLinear unpacked to a trainable dense weight
that runs fake-quantized on the module's own grid, and packed back to the real format at the end."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.algorithms.ste import expand_groups, fake_quant_ste, grid_codes
from compress.formats.quant_linear import QuantLinear
from compress.select import set_module


class FakeQuantLinear(nn.Module):
    """Training stand-in for a QuantLinear: a float weight (starting at the dequantized one) and the
    module's frozen scales/zero points; forward uses the STE fake-quantized weight.

    `latent` (the unquantized weight, e.g. the teacher's) places each weight inside its code's rounding
    bin where the original value lay, rather than on the grid point: the forward pass is unchanged
    (same codes), but small updates can now flip exactly the codes that were close to a boundary.
    """

    def __init__(self, src: QuantLinear, latent: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.qspec = src.in_features, src.out_features, src.qspec
        self.store_dtype = src.scales.dtype
        w = src.dense_weight().float()
        step = expand_groups(src.scales.float(), self.in_features, self.qspec)
        latent = None if latent is None else latent.detach().float().to(w.device)
        if latent is not None and _same_weight(latent, w, step):
            w = w + (latent - w).clamp(-0.499 * step, 0.499 * step)
        self.weight = nn.Parameter(w)
        self.register_buffer("scales", src.scales.detach().float().clone())
        self.register_buffer("zero_points", src.zero_points().detach().float().clone())
        self.register_buffer("bias", None if src.bias is None else src.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = fake_quant_ste(self.weight, self.scales, self.zero_points, self.qspec)
        return F.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def to_quant_linear(self, dtype: torch.dtype | None = None) -> QuantLinear:
        """The trained weight rounded onto the same grid and packed (what the forward pass saw)."""
        codes = grid_codes(self.weight, self.scales, self.zero_points, self.qspec)
        dtype = dtype or self.store_dtype
        return QuantLinear.from_codes(codes, self.scales, self.zero_points, self.qspec, self.in_features, self.bias, dtype)


SAME_WEIGHT_WITHIN_STEP = 0.85  # fraction of weights within one grid step of their code


def _same_weight(latent: torch.Tensor, deq: torch.Tensor, step: torch.Tensor) -> bool:
    """Is `latent` the weight `deq` was quantized from, as it stands? RTN leaves every weight within half a grid step
    of its code and GPTQ ≥ 87% within one (SmolLM2 int4 g64, every layer), where a weight rescaled since (AWQ's
    per-input scales: 10–99% per layer; a rotation) or another layer's (a depth-pruned teacher's) is not: placed at
    its bin's edge toward such a latent, every weight would flip on the first small update (QAT after AWQ: KL
    0.06 → 0.8 in 10 steps)."""
    if latent.shape != deq.shape:
        return False
    return float(((latent - deq).abs() <= step).float().mean()) >= SAME_WEIGHT_WITHIN_STEP


def unpack_for_training(model: nn.Module, modules: dict[str, nn.Module],
                        latent: dict[str, torch.Tensor] | None = None) -> dict[str, FakeQuantLinear]:
    """Swap each selected QuantLinear for a FakeQuantLinear (latent weights by name where known)."""
    swapped = {}
    latent = latent or {}
    for name, mod in modules.items():
        if isinstance(mod, QuantLinear):
            swapped[name] = FakeQuantLinear(mod, latent.get(name))
            set_module(model, name, swapped[name])
    return swapped


def pack_after_training(model: nn.Module, names: list[str], dtype: torch.dtype | None = None) -> None:
    """Swap the FakeQuantLinears at `names` back to packed QuantLinears."""
    for name in names:
        mod = model.get_submodule(name)
        if isinstance(mod, FakeQuantLinear):
            set_module(model, name, mod.to_quant_linear(dtype))
