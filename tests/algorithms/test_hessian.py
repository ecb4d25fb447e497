from __future__ import annotations

import torch

from compress.algorithms.hessian import Hessian


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
    assert h.dead.tolist() == [False, False, True, False]
    d = h.damped(0.01)
    assert d[2, 2] > 0 and torch.linalg.cholesky(d) is not None
