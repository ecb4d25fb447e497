"""Learned rounding and clipping (SignRound, as in AutoRound): tune how each weight rounds, not what it is.

Round-to-nearest minimizes each weight's own error; what matters is the layer's output. SignRound
adds a learnable offset v ∈ [−½, ½] to every weight before rounding and learnable factors
α, β ∈ [min_range, 1] on each group's max and min, and descends the block-output error with the
*sign* of the gradient (steps of a fixed size, so a few hundred of them reach any offset in the
interval) through a straight-through round. The result is still a point on the integer grid:
codes, scales and zero points that pack like RTN's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.algorithms.grid import QuantSpec, grouped, pad_columns


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def learned_qparams(wmin: torch.Tensor, wmax: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                    spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) of `grid.qparams_from_range` for the range [β·min, α·max], differentiable in α and β."""
    if spec.symmetric:
        amax = torch.maximum((wmin * beta).abs(), (wmax * alpha).abs())
        half = 2 ** (spec.bits - 1)
        scale = amax / (half - 0.5) if spec.bits <= 4 else amax / (half - 1)
        return scale.clamp(min=1e-10), torch.full_like(scale, float(half))
    lo = torch.minimum(wmin * beta, torch.zeros_like(wmin))
    hi = torch.maximum(wmax * alpha, torch.zeros_like(wmax))
    scale = ((hi - lo) / spec.qmax).clamp(min=1e-10)
    return scale, round_ste(-lo / scale).clamp(0, spec.qmax)


class SignRoundLinear(nn.Module):
    """A linear whose forward is its weight on the learned grid; `v`, `alpha`, `beta` are the only parameters."""

    def __init__(self, lin: nn.Linear, spec: QuantSpec, min_range: float = 0.5) -> None:
        super().__init__()
        self.spec, self.min_range, self.in_features = spec, min_range, lin.in_features
        wp = pad_columns(lin.weight.detach().float(), spec.padded_in(lin.in_features))
        self.register_buffer("w", grouped(wp, spec))  # [N, G, g]
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float())
        self.wmin, self.wmax = self.w.amin(-1), self.w.amax(-1)
        self.v = nn.Parameter(torch.zeros_like(self.w))
        self.alpha = nn.Parameter(torch.ones_like(self.wmin))
        self.beta = nn.Parameter(torch.ones_like(self.wmin))

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return learned_qparams(self.wmin, self.wmax, self.alpha, self.beta, self.spec)

    def weight(self) -> torch.Tensor:
        """(clamp(round(w/s + v) + z) − z)·s as [N, K], gradients straight through the rounding."""
        s, z = (p.unsqueeze(-1) for p in self.qparams())
        q = (round_ste(self.w / s + self.v) + z).clamp(0, self.spec.qmax)
        return ((q - z) * s).reshape(self.w.shape[0], -1)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep every parameter in its interval after a step."""
        self.v.clamp_(-0.5, 0.5)
        self.alpha.clamp_(self.min_range, 1.0)
        self.beta.clamp_(self.min_range, 1.0)

    @torch.no_grad()
    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes [N, Kp] uint8, scale [N, G], zero [N, G]): what the forward computes, ready to pack."""
        s, z = self.qparams()
        q = (torch.round(self.w / s.unsqueeze(-1) + self.v) + z.unsqueeze(-1)).clamp(0, self.spec.qmax)
        return q.reshape(self.w.shape[0], -1).to(torch.uint8), s, z


def sign_step(params: list[nn.Parameter], lr: float) -> None:
    """p ← p − lr·sign(∂loss/∂p): a fixed step per weight, whatever the gradient's scale."""
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * p.grad.sign())
                p.grad = None
