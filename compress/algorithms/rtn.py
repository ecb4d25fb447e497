"""Round-to-nearest: codes from min/max (or MSE-searched) ranges, no data needed."""
from __future__ import annotations

import torch

from compress.algorithms.grid import QuantSpec, compute_qparams, pad_columns, quantize
from compress.algorithms.mse_clip import mse_qparams


def rtn_quantize(w: torch.Tensor, spec: QuantSpec, clip_search: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes [N, Kp], scale [N, G], zero [N, G]) for a dense weight [N, K].

    `clip_search` picks each group's range by MSE search instead of min/max.
    """
    wp = pad_columns(w.detach().float(), spec.padded_in(w.shape[1]))
    scale, zero = mse_qparams(wp, spec) if clip_search else compute_qparams(wp, spec)
    return quantize(wp, scale, zero, spec), scale, zero
