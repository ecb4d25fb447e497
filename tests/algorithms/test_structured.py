"""Structured-pruning decisions against hand-worked values."""
from __future__ import annotations

import pytest
import torch

from compress.algorithms import structured as S


def test_keep_count_rounding():
    assert S.keep_count(1536, 0.25, 8) == 1152
    assert S.keep_count(160, 0.25, 8) == 120
    assert S.keep_count(10, 0.25) == 8  # round(2.5) = 2 removed
    assert S.keep_count(4, 0.99) == 1  # never zero units
    assert S.keep_count(100, 0.3, 64) == 64


def test_top_indices_are_sorted_by_position():
    assert S.top_indices(torch.tensor([0.1, 5.0, 3.0, 4.0]), 2).tolist() == [1, 3]


def test_ffn_scores():
    gate = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # row norms 5, 1
    up = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # 1, 2
    down = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # column norms 2, 1
    assert S.ffn_magnitude(gate, up, down).tolist() == [10.0, 2.0]
    assert S.ffn_activation(torch.tensor([9.0, 16.0]), down).tolist() == [6.0, 4.0]
    g = torch.ones(2, 2)
    # |Σ g·w| per channel: gate rows 7, 1; up rows 1, 2; down cols 2, 1
    assert S.ffn_taylor(gate, up, down, g, g, g).tolist() == [10.0, 4.0]


def test_head_scores():
    q = torch.tensor([[1.0], [1.0], [0.0], [2.0]])  # 2 heads of dim 2: norms √2, 2
    o = torch.tensor([[1.0, 0.0, 3.0, 0.0]])  # columns per head: norms 1, 3
    assert torch.allclose(S.head_magnitude(q, o, 2), torch.tensor([2**0.5, 6.0]))
    assert torch.allclose(S.head_activation(torch.tensor([1.0, 3.0, 4.0, 0.0]), o, 2), torch.tensor([2.0, 6.0]))


def test_kept_heads_under_gqa():
    scores = torch.tensor([1.0, 9.0, 2.0, 3.0, 0.5, 0.4])  # 6 query heads, 3 KV groups of 2
    q, kv = S.kept_heads(scores, 3, 1 / 3, "groups")  # group sums 10, 5, 0.9 → drop group 2
    assert kv.tolist() == [0, 1] and q.tolist() == [0, 1, 2, 3]
    q, kv = S.kept_heads(scores, 3, 0.5, "heads")  # one query head per group remains
    assert kv.tolist() == [0, 1, 2] and q.tolist() == [1, 3, 4]


def test_block_influence():
    h = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert S.block_influence(h, 3 * h) == (pytest.approx(0.0), 2)
    assert S.block_influence(h, torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])) == (pytest.approx(2.0), 2)
