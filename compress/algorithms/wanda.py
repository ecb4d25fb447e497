"""Wanda: importance |W_ij| · ‖X_j‖₂ from calibration activations, compared within each output row.

Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs": no weight update, one
activation statistic per input channel.
"""
from __future__ import annotations

import torch

from compress.algorithms.masks import nm_mask, row_mask


class ActNorms:
    """Running Σ x_j² per input channel over every calibration token."""

    def __init__(self, in_features: int, device: torch.device | str = "cpu") -> None:
        self.sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.n = 0

    def add_batch(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(self.sq.device, torch.float32)
        self.sq += (x * x).sum(0)
        self.n += x.shape[0]

    def norms(self) -> torch.Tensor:
        """‖X_j‖₂ over all tokens seen (the scale is irrelevant to the per-row ranking)."""
        return self.sq.sqrt()


def wanda_scores(w: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W| scaled by the input channel norms, [out, in]."""
    return w.detach().float().abs() * norms.to(w.device, torch.float32).unsqueeze(0)


def wanda_mask(w: torch.Tensor, norms: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask: N:M groups when `nm` is given, else the lowest `sparsity` of each row dropped."""
    scores = wanda_scores(w, norms)
    return nm_mask(scores, *nm) if nm else row_mask(scores, sparsity)
