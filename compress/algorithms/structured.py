"""Structured pruning decisions: which FFN channels, attention heads and layers to keep.

Importance scores come in three kinds, all per channel (or head): weight magnitude, calibration
activations (output norm of the unit times the norm of its outgoing weights), and first-order
Taylor |Σ g·w| over the unit's weights. Pure tensor functions; slicing is in structured_slice.py.
"""
from __future__ import annotations

import torch


def keep_count(total: int, fraction: float, round_to: int = 1, minimum: int = 1) -> int:
    """How many of `total` units remain after removing `fraction`, rounded to a multiple of `round_to`."""
    keep = total - round(total * fraction)
    if round_to > 1 and total >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return max(minimum, min(total, keep))


def top_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in ascending index order (so surviving units keep their order)."""
    return torch.sort(torch.topk(scores.float(), k).indices).values


def ffn_magnitude(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Per intermediate channel j: ‖gate_j‖·‖up_j‖·‖down_:,j‖ (the channel's weight path gain)."""
    return gate.float().norm(dim=1) * up.float().norm(dim=1) * down.float().norm(dim=0)


def ffn_activation(act_sq: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Per channel: ‖a_j‖₂ over calibration tokens times ‖down_:,j‖ (its contribution to the output)."""
    return act_sq.float().sqrt() * down.float().norm(dim=0)


def ffn_taylor(gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, g_gate: torch.Tensor, g_up: torch.Tensor,
               g_down: torch.Tensor) -> torch.Tensor:
    """Per channel: |Σ g·w| over its gate row, up row and down column (first-order loss change)."""
    return ((g_gate * gate).float().sum(1) + (g_up * up).float().sum(1) + (g_down * down).float().sum(0)).abs()


def per_head(channel_scores: torch.Tensor, heads: int) -> torch.Tensor:
    """Sum per-dimension scores [heads · head_dim] into one score per head."""
    return channel_scores.reshape(heads, -1).sum(1)


def head_magnitude(q: torch.Tensor, o: torch.Tensor, heads: int) -> torch.Tensor:
    """Per query head: ‖q rows‖·‖o columns‖ of the head (Frobenius norms)."""
    qn = q.float().reshape(heads, -1).norm(dim=1)
    on = o.float().t().reshape(heads, -1).norm(dim=1)
    return qn * on


def head_activation(attn_sq: torch.Tensor, o: torch.Tensor, heads: int) -> torch.Tensor:
    """Per query head: ‖head output‖₂ over calibration tokens times ‖o columns of the head‖."""
    return per_head(attn_sq.float(), heads).sqrt() * o.float().t().reshape(heads, -1).norm(dim=1)


def head_taylor(q: torch.Tensor, o: torch.Tensor, g_q: torch.Tensor, g_o: torch.Tensor, heads: int) -> torch.Tensor:
    """Per query head: |Σ g·w| over its q rows and o columns."""
    return (per_head((g_q * q).float().sum(1), heads) + per_head((g_o * o).float().sum(0), heads)).abs()


def kept_heads(scores: torch.Tensor, kv_heads: int, fraction: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(query heads kept, KV heads kept) under grouped-query attention.

    mode 'groups' removes whole KV groups (a group's score is the sum of its query heads);
    mode 'heads' keeps every KV head and removes the same number of query heads from each group,
    so every group still has the same size, which the attention kernels need.
    """
    heads = scores.numel()
    per = heads // kv_heads
    grouped = scores.reshape(kv_heads, per)
    if mode == "groups":
        kv = top_indices(grouped.sum(1), keep_count(kv_heads, fraction))
        q = (kv.unsqueeze(1) * per + torch.arange(per, device=scores.device)).reshape(-1)
        return q, kv
    keep = keep_count(per, fraction)
    q = torch.stack([g * per + top_indices(grouped[g], keep) for g in range(kv_heads)]).reshape(-1)
    return q, torch.arange(kv_heads, device=scores.device)


def block_influence(h_in: torch.Tensor, h_out: torch.Tensor) -> tuple[float, int]:
    """(Σ (1 - cos(h_in, h_out)) over tokens, tokens): ShortGPT's block influence, summable over batches."""
    a, b = h_in.reshape(-1, h_in.shape[-1]).float(), h_out.reshape(-1, h_out.shape[-1]).float()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float((1 - cos).sum()), cos.numel()
