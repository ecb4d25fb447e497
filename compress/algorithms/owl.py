"""OWL: non-uniform layer sparsities from outlier ratios (Yin et al. 2023, "Outlier Weighed Layerwise sparsity").

Layers with more outlier Wanda scores keep more weights; the size-weighted mean sparsity stays
the requested one, so the model-wide ratio is unchanged.
"""
from __future__ import annotations

import torch


def outlier_ratio(scores: torch.Tensor, threshold: float) -> float:
    """Fraction of scores above `threshold` × their mean (OWL's M, typically 5)."""
    s = scores.float().reshape(-1)
    return float((s > threshold * s.mean()).float().mean())


def owl_sparsities(ratios: list[float], sizes: list[int], sparsity: float, lam: float) -> list[float]:
    """Per-layer sparsities: densities spread over [0, 2λ] by outlier ratio, shifted to keep the mean.

    `sizes` are the prunable weights per layer; Σ size·sparsity / Σ size equals `sparsity`
    unless clamping to [0, 1] was needed.
    """
    r = torch.tensor(ratios, dtype=torch.float64)
    n = torch.tensor(sizes, dtype=torch.float64)
    spread = r.max() - r.min()
    bonus = (r - r.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(r)
    density = bonus - (bonus * n).sum() / n.sum() + (1 - sparsity)
    return [float(x) for x in (1 - density).clamp(0.0, 1.0)]
