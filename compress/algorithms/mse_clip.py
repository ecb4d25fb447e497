"""MSE-optimal clipping: shrink each group's range while that lowers the rounding error.

Min/max ranges waste grid levels on rare outliers; searching a shrink factor per group
(the GPTQ reference quantizer's `mse` option) trades a little clipping error for finer steps
everywhere else.
"""
from __future__ import annotations

import torch

from compress.algorithms.grid import QuantSpec, grouped, qparams_from_range


def mse_qparams(w: torch.Tensor, spec: QuantSpec, *, grid: int = 100, max_shrink: float = 0.8,
                norm: float = 2.4) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) [N, G] for a padded weight [N, Kp], minimizing Σ|w - deq(q(w))|^norm per group.

    Tries ranges p·[min, max] for p = 1, 1 - 1/grid, ... down to 1 - max_shrink.
    """
    wg = grouped(w.float(), spec)
    wmin, wmax = wg.amin(-1), wg.amax(-1)
    best_s, best_z = qparams_from_range(wmin, wmax, spec)
    best_err = torch.full_like(wmin, float("inf"))
    for i in range(int(max_shrink * grid) + 1):
        p = 1 - i / grid
        s, z = qparams_from_range(p * wmin, p * wmax, spec)
        q = torch.round(wg / s.unsqueeze(-1) + z.unsqueeze(-1)).clamp(0, spec.qmax)
        err = ((q - z.unsqueeze(-1)) * s.unsqueeze(-1) - wg).abs().pow(norm).sum(-1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        best_z = torch.where(better, z, best_z)
    return best_s, best_z
