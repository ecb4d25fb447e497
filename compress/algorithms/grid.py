"""The integer grid of weight-only quantization: scales/zero points from a range, codes, round trip.

Shared by RTN, GPTQ and AWQ. Codes are unsigned in [0, 2^bits - 1]; a symmetric grid fixes the
zero point at 2^(bits-1), an asymmetric one stores an integer zero point per group, so
    w ≈ (q - zero) * scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantSpec:
    """How a weight matrix is quantized: bit width, group size along K (-1 = per channel), symmetry."""

    bits: int = 8
    group_size: int = -1
    symmetric: bool = True

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def group_for(self, in_features: int) -> int:
        """The effective group size for a layer: per channel = the whole row, zero columns added up to whole
        bytes of codes (4 bits: K even, two per byte; 3 bits: K a multiple of 8, eight per three bytes; a zero
        never widens a range that includes 0), e.g. after pruning."""
        if self.group_size != -1:
            return self.group_size
        per = {4: 2, 3: 8}.get(self.bits, 1)
        return -(-in_features // per) * per

    def padded_in(self, in_features: int) -> int:
        """K rounded up to a whole number of groups (e.g. 576 → 640 for group 128)."""
        g = self.group_for(in_features)
        return -(-in_features // g) * g


def pad_columns(w: torch.Tensor, k_padded: int) -> torch.Tensor:
    """Zero-pad the input dimension so that groups tile it exactly."""
    return w if w.shape[1] == k_padded else torch.nn.functional.pad(w, (0, k_padded - w.shape[1]))


def qparams_from_range(wmin: torch.Tensor, wmax: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) for per-group minima/maxima; zero is integer-valued, kept as float."""
    if spec.symmetric:
        amax = torch.maximum(wmin.abs(), wmax.abs())
        half = 2 ** (spec.bits - 1)
        scale = amax / (half - 0.5) if spec.bits <= 4 else amax / (half - 1)
        zero = torch.full_like(scale, float(half))
    else:
        wmin = torch.minimum(wmin, torch.zeros_like(wmin))
        wmax = torch.maximum(wmax, torch.zeros_like(wmax))
        scale = (wmax - wmin) / spec.qmax
        zero = torch.round(-wmin / scale.clamp(min=1e-12)).clamp(0, spec.qmax)
    return scale.clamp(min=1e-10), zero


def grouped(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View a padded [N, K] weight as [N, groups, group]."""
    n, k = w.shape
    g = spec.group_for(k)
    return w.reshape(n, k // g, g)


def compute_qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max (RTN) scales and zero points, [N, groups] each, for a padded weight."""
    wg = grouped(w.float(), spec)
    return qparams_from_range(wg.amin(-1), wg.amax(-1), spec)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Integer codes (uint8 storage, values in [0, 2^bits-1]) for a padded weight."""
    wg = grouped(w.float(), spec)
    q = torch.round(wg / scale.unsqueeze(-1) + zero.unsqueeze(-1)).clamp(0, spec.qmax)
    return q.reshape(w.shape).to(torch.uint8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Float weight [N, K_padded] from codes and per-group parameters."""
    qg = grouped(q.float(), spec)
    return ((qg - zero.float().unsqueeze(-1)) * scale.float().unsqueeze(-1)).reshape(q.shape)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantize and dequantize in one go (a tool inside algorithms, never the product)."""
    k = w.shape[1]
    wp = pad_columns(w, spec.padded_in(k))
    s, z = compute_qparams(wp, spec)
    return dequantize(quantize(wp, s, z, spec), s, z, spec)[:, :k].to(w.dtype)
