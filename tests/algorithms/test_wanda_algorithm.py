"""Wanda scores and masks against hand computation."""
from __future__ import annotations

import torch

from compress.algorithms.wanda import ActNorms, wanda_mask, wanda_scores


def test_act_norms_over_batches_equal_the_norm_of_all_tokens():
    xs = [torch.randn(5, 3), torch.randn(2, 4, 3)]
    acc = ActNorms(3)
    for x in xs:
        acc.add_batch(x)
    every = torch.cat([xs[0], xs[1].reshape(-1, 3)])
    assert acc.n == 13
    assert torch.allclose(acc.norms(), torch.linalg.vector_norm(every, dim=0))


def test_scores_and_mask_follow_activation_norms():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 1.0, 1.0, 1.0]])
    norms = torch.tensor([10.0, 1.0, 0.1, 2.0])
    assert torch.allclose(wanda_scores(w, norms), torch.tensor([[10.0, 2.0, 0.3, 1.0], [40.0, 1.0, 0.1, 2.0]]))
    # magnitude alone would keep column 2 of row 0 (|3|); the activation norm says column 0 matters more
    assert torch.equal(wanda_mask(w, norms, 0.5), torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1]], dtype=torch.bool))
    assert torch.equal(wanda_mask(w, norms, 0.5, (1, 2)), torch.tensor([[1, 0, 0, 1], [1, 0, 0, 1]], dtype=torch.bool))
