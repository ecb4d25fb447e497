"""OWL allocation against hand-worked numbers."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.owl import outlier_ratio, owl_sparsities


def test_outlier_ratio():
    assert outlier_ratio(torch.tensor([1.0, 1.0, 1.0, 1.0, 16.0]), 3.0) == pytest.approx(0.2)  # mean 4, > 12
    assert outlier_ratio(torch.ones(10), 1.5) == 0.0


def test_more_outliers_means_less_sparsity_and_the_mean_is_kept():
    assert owl_sparsities([0.0, 1.0], [1, 1], 0.5, 0.1) == pytest.approx([0.6, 0.4])
    # unequal sizes: bonus [0, .2], size-weighted mean .15 → densities [.35, .55]
    s = owl_sparsities([0.0, 1.0], [1, 3], 0.5, 0.1)
    assert s == pytest.approx([0.65, 0.45])
    assert (s[0] * 1 + s[1] * 3) / 4 == pytest.approx(0.5)


def test_equal_ratios_give_uniform_sparsity():
    assert owl_sparsities([0.3, 0.3, 0.3], [5, 5, 5], 0.7, 0.08) == pytest.approx([0.7] * 3)
