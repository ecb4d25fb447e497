"""AWQ scale search: protect the input channels that carry large activations (Lin et al. 2023).

Scaling input channel j of W by s_j (and dividing the activation by s_j, folded into the layer
before) leaves the product unchanged but shrinks the relative rounding error of salient
channels. s = mean|x|^α, with α picked on a grid to minimize the quantized output error.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.algorithms.grid import QuantSpec, fake_quantize


@dataclass(frozen=True)
class AWQResult:
    """Per-input-channel scales [K], the chosen α, and the output MSE at α and at α = 0 (plain RTN)."""

    scales: torch.Tensor
    alpha: float
    loss: float
    loss_rtn: float


def scales_for(act_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """mean|x|^α, normalized so that max·min = 1 (keeps weights in a sane range)."""
    s = act_mean.float().clamp(min=1e-4).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


@torch.no_grad()
def awq_search(x: torch.Tensor, act_mean: torch.Tensor, weights: list[torch.Tensor], spec: QuantSpec,
               grid: int = 20) -> AWQResult:
    """Best scales for linears sharing input x [T, K]: argmin_α Σ‖x·Q(W·s)ᵀ/… − x·Wᵀ‖² over α ∈ {0, 1/grid, …, 1}."""
    x = x.float()
    ws = [w.detach().float() for w in weights]
    refs = [x @ w.T for w in ws]
    best: tuple[float, float, torch.Tensor] | None = None
    loss_rtn = float("nan")
    for i in range(grid + 1):
        alpha = i / grid
        s = scales_for(act_mean, alpha)
        loss = sum(float((x @ (fake_quantize(w * s, spec) / s).T - r).pow(2).mean()) for w, r in zip(ws, refs))
        if i == 0:
            loss_rtn = loss
        if best is None or loss < best[0]:
            best = (loss, alpha, s)
    assert best is not None
    return AWQResult(best[2], best[1], best[0], loss_rtn)
