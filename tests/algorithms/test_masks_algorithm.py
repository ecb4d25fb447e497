"""Keep-masks against hand-worked small matrices."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms.magnitude import global_threshold, magnitude_mask
from compress.algorithms.masks import is_nm, matrix_mask, nm_mask, parse_pattern, row_mask


def test_nm_mask_keeps_two_largest_of_every_four():
    s = torch.tensor([[1.0, 4.0, 2.0, 3.0, 9.0, 0.0, 8.0, 7.0],
                      [5.0, 1.0, 1.5, 6.0, 0.1, 0.2, 0.3, 0.4]])
    want = torch.tensor([[0, 1, 0, 1, 1, 0, 1, 0],
                         [1, 0, 0, 1, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(nm_mask(s, 2, 4), want)
    assert is_nm(want, 2, 4) and not is_nm(torch.ones(2, 8, dtype=torch.bool), 2, 4)


def test_nm_mask_other_patterns_and_bad_width():
    s = torch.tensor([[3.0, 1.0, 2.0, 0.5, 4.0, 6.0, 5.0, 7.0]])
    assert torch.equal(nm_mask(s, 1, 4), torch.tensor([[1, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool))
    assert torch.equal(nm_mask(s, 4, 8), torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible by 3"):
        nm_mask(s, 1, 3)


def test_row_mask_drops_lowest_of_each_row():
    s = torch.tensor([[3.0, 1.0, 2.0, 4.0], [0.0, 9.0, 8.0, 1.0]])
    want = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(row_mask(s, 0.5), want)
    assert torch.equal(row_mask(s, 0.0), torch.ones(2, 4, dtype=torch.bool))
    assert int(row_mask(torch.rand(3, 10), 0.35).sum()) == 3 * (10 - 3)  # floor(3.5) = 3 dropped per row


def test_matrix_mask_ranks_the_whole_matrix():
    s = torch.tensor([[1.0, 5.0], [3.0, 2.0]])
    assert torch.equal(matrix_mask(s, 0.5), torch.tensor([[0, 1], [1, 0]], dtype=torch.bool))


def test_magnitude_uses_absolute_values():
    w = torch.tensor([[-4.0, 1.0, 0.5, -2.0], [0.1, -0.2, 3.0, -0.3]])
    # matrix-wide: the 4 largest of |w| are 4, 3, 2, 1 (row 0 keeps three, row 1 one)
    assert torch.equal(magnitude_mask(w, 0.5), torch.tensor([[1, 1, 0, 1], [0, 0, 1, 0]], dtype=torch.bool))
    assert torch.equal(magnitude_mask(w, 0.5, (2, 4)), torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.bool))


def test_global_threshold():
    ws = [torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 4.0], [-5.0, 6.0]])]
    assert global_threshold(ws, 0.5) == 3.0  # the 3rd smallest of 1..6: weights ≤ 3 go
    assert global_threshold(ws, 0.0) == float("-inf")


@pytest.mark.parametrize("bad", ["2-4", "4:2", "0:4", "2:2", "a:b"])
def test_parse_pattern_rejects(bad):
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern(bad)
    assert parse_pattern("2:4") == (2, 4)


def test_ties_are_broken_like_a_stable_sort():
    s = torch.randint(0, 3, (5, 40), generator=torch.Generator().manual_seed(0)).float()
    want = torch.ones_like(s, dtype=torch.bool)
    want.scatter_(-1, torch.sort(s, dim=-1, stable=True).indices[:, :13], False)
    assert torch.equal(row_mask(s, 13 / 40), want)
