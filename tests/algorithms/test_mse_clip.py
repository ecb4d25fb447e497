from __future__ import annotations

import pytest
import torch

from compress.algorithms.grid import QuantSpec, compute_qparams, dequantize, quantize
from compress.algorithms.mse_clip import mse_qparams


def group_err(w, s, z, spec):
    return (dequantize(quantize(w, s, z, spec), s, z, spec) - w).pow(2).reshape(w.shape[0], -1, spec.group_for(w.shape[1])).sum(-1)


@pytest.mark.parametrize("spec, bound", [(QuantSpec(4, 32, False), 0.97), (QuantSpec(4, -1, True), 0.92), (QuantSpec(8, 64, False), 1.0)])
def test_never_worse_and_better_on_heavy_tails(spec, bound):
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((32, 128))  # outliers stretch min/max
    s0, z0 = compute_qparams(w, spec)
    s1, z1 = mse_qparams(w, spec, norm=2.0)
    e0, e1 = group_err(w, s0, z0, spec), group_err(w, s1, z1, spec)
    assert torch.all(e1 <= e0 + 1e-6)
    assert e1.sum() <= bound * e0.sum()  # 4 bits: coarse steps, clipping rare outliers pays


def test_keeps_full_range_for_weights_already_on_a_grid():
    # Codes 0..15 all used, w exactly on the grid: min/max is lossless and no shrink can beat it.
    spec = QuantSpec(4, 16, False)
    q = torch.arange(16.0).repeat(3, 1)
    w = (q - 3) * 0.1
    s, z = mse_qparams(w, spec)
    assert torch.allclose(s, torch.full((3, 1), 0.1)) and torch.equal(z, torch.full((3, 1), 3.0))
