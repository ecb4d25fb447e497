"""Keep-masks from importance scores: per matrix, per output row, or N:M (True = keep).

Shared by magnitude, Wanda and SparseGPT, which differ only in the scores they rank. Counts are
exact (a stable sort breaks ties), so a requested 50% is 50% of each row or matrix.
"""
from __future__ import annotations

import torch


def parse_pattern(pattern: str) -> tuple[int, int]:
    """'N:M' → (n, m): keep N of every M consecutive inputs; ValueError names what is allowed."""
    try:
        n_s, m_s = pattern.split(":")
        n, m = int(n_s), int(m_s)
    except (ValueError, AttributeError):
        raise ValueError(f"pattern: expected 'N:M' such as '2:4', got {pattern!r}") from None
    if not 0 < n < m:
        raise ValueError(f"pattern: expected 'N:M' with 0 < N < M, got {pattern!r}")
    return n, m


def _prune_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of a [..., cols] score tensor with the k lowest of each row dropped; among equal
    scores the lower column goes first (what a stable sort would do), found in O(cols) by kthvalue."""
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    t = scores.kthvalue(k, dim=-1, keepdim=True).values
    less, ties = scores < t, scores == t
    need = k - less.sum(-1, keepdim=True)
    return ~(less | (ties & (ties.cumsum(-1) <= need)))


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop floor(sparsity · K) lowest scores in every output row (Wanda's comparison group)."""
    return _prune_lowest(scores, int(scores.shape[1] * sparsity))


def matrix_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop floor(sparsity · numel) lowest scores of the whole matrix (layer-wise magnitude)."""
    flat = scores.reshape(1, -1)
    return _prune_lowest(flat, int(flat.numel() * sparsity)).reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest scores in every group of m consecutive inputs of each row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"pattern {n}:{m} needs in_features divisible by {m}, got {cols}")
    groups = scores.reshape(rows, cols // m, m)
    return _prune_lowest(groups, m - n).reshape(rows, cols)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of m consecutive inputs keeps at most n weights."""
    rows, cols = mask.shape
    return cols % m == 0 and bool((mask.reshape(rows, cols // m, m).sum(-1) <= n).all())
