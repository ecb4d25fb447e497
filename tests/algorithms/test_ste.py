"""Fake quantization on a fixed grid with a clipped straight-through estimator, by hand."""
from __future__ import annotations

import torch

from compress.algorithms.grid import QuantSpec
from compress.algorithms.ste import fake_quant_ste, grid_codes

SPEC = QuantSpec(bits=4, group_size=2, symmetric=False)
SCALE = torch.tensor([[0.5, 1.0]])
ZERO = torch.tensor([[8.0, 8.0]])


def test_forward_values_codes_and_gradient_by_hand():
    w = torch.tensor([[0.26, -0.74, 3.0, 100.0]], requires_grad=True)
    out = fake_quant_ste(w, SCALE, ZERO, SPEC)
    # group 0 (s=.5, z=8): 8.52 → 9 → 0.5; 6.52 → 7 → -0.5. group 1 (s=1, z=8): 11 → 3.0; 108 → 15 (clamped) → 7.0
    assert out.tolist() == [[0.5, -0.5, 3.0, 7.0]]
    out.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]  # no gradient where the weight is off the grid
    assert grid_codes(w, SCALE, ZERO, SPEC).tolist() == [[9, 7, 11, 15]]


def test_padded_groups():
    # K=3 with group 2: the second group covers column 2 and one pad column
    w = torch.tensor([[0.26, -0.74, 3.0]])
    assert fake_quant_ste(w, SCALE, ZERO, SPEC).tolist() == [[0.5, -0.5, 3.0]]
    assert grid_codes(w, SCALE, ZERO, SPEC).tolist() == [[9, 7, 11, 8]]  # pad column 0.0 → the zero point
