"""Magnitude pruning: drop the weights of smallest |w| (the data-free baseline)."""
from __future__ import annotations

import torch

from compress.algorithms.masks import matrix_mask, nm_mask


def magnitude_mask(w: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> torch.Tensor:
    """Keep-mask of one matrix: N:M groups when `nm` is given, else the lowest `sparsity` of |w| overall."""
    scores = w.detach().float().abs()
    return nm_mask(scores, *nm) if nm else matrix_mask(scores, sparsity)


def global_threshold(weights: list[torch.Tensor], sparsity: float) -> float:
    """The |w| below which `sparsity` of all given weights lie (one threshold for the whole model)."""
    flat = torch.cat([w.detach().float().abs().reshape(-1).cpu() for w in weights])
    k = int(flat.numel() * sparsity)
    return float("-inf") if k == 0 else float(torch.kthvalue(flat, k).values)
