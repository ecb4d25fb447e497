"""Fake quantization on a fixed integer grid with a straight-through estimator (quantization-aware training).

The grid (per-group scale and zero point) is the one a packed `QuantLinear` already holds, so the
forward pass sees exactly the weights the packed model will have, and `grid_codes` at the end
gives the codes to pack. Gradients pass straight through rounding, and stop where the weight
has left the grid's range (clipped STE), since moving it further changes nothing.
"""
from __future__ import annotations

import torch

from compress.algorithms.grid import QuantSpec, pad_columns, quantize


def expand_groups(p: torch.Tensor, in_features: int, spec: QuantSpec) -> torch.Tensor:
    """Per-group parameters [N, G] repeated to one value per weight [N, K]."""
    return p.repeat_interleave(spec.group_for(in_features), dim=1)[:, :in_features]


def fake_quant_ste(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """(clamp(round(w/s + z), 0, qmax) − z)·s forward; ∂out/∂w = 1 inside the grid's range, 0 outside."""
    k = w.shape[1]
    s = expand_groups(scale.to(w.dtype), k, spec)
    z = expand_groups(zero.to(w.dtype), k, spec)
    x = w / s + z
    q = torch.round(x).clamp(0, spec.qmax)
    wq = (q - z) * s
    inside = (x >= -0.5) & (x <= spec.qmax + 0.5)
    w_pass = torch.where(inside, w, w.detach())
    return w_pass + (wq - w_pass).detach()


def grid_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes [N, Kp] (uint8) of a trained dense weight on the fixed grid, ready to pack."""
    wp = pad_columns(w.detach().float(), spec.padded_in(w.shape[1]))
    return quantize(wp, scale.float(), zero.float(), spec)
