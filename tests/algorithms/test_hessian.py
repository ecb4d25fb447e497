from __future__ import annotations

import pytest
import torch

from compress.algorithms.hessian import Hessian, damped, inverse_factor
from compress.errors import CompressError


def test_running_mean_equals_batch_formula():
    torch.manual_seed(0)
    xs = [torch.randn(n, 8) for n in (5, 3, 7)]
    h = Hessian(8)
    for x in xs:
        h.add_batch(x)
    X = torch.cat(xs)
    assert torch.allclose(h.H, 2 * X.T @ X / X.shape[0], atol=1e-5)


def test_damped_fixes_dead_inputs():
    h = Hessian(4)
    x = torch.randn(10, 4)
    x[:, 2] = 0
    h.add_batch(x)
    d, dead = damped(h.H, 0.01)
    assert dead.tolist() == [False, False, True, False] and d.dtype == torch.float64
    assert d[2, 2] > 0 and inverse_factor(d).shape == (4, 4)


def test_a_singular_hessian_is_a_one_line_error():
    H = torch.zeros(3, 3, dtype=torch.float64)
    H[0, 0], H[0, 1], H[1, 0], H[1, 1] = 1.0, 2.0, 2.0, 1.0  # indefinite: eigenvalues 3 and -1
    with pytest.raises(CompressError, match="not positive definite; raise `damp`"):
        inverse_factor(H)
