"""SDPA attention that reads a grouped-query KV cache in place when one token is decoded.

With grouped-query attention (SmolLM2: 9 query heads share 3 key/value heads), transformers' `sdpa`
attention repeats every key and value head for its query heads before calling SDPA whenever a mask is
passed, as it always is over a static cache: each decode step copies the whole cache of every layer
(its own in-place grouping is switched off while dynamo traces, so a compiled step always copies).
For a single query token the grouping is free instead: the n_rep query heads of one KV head become
n_rep query rows of that head, (B, H, 1, D) → (B, H_kv, n_rep, D), and the mask, the same for every
head and row, broadcasts. Same math, no copy. Every other call (prefill, no GQA, a per-head mask)
goes to transformers' own `sdpa` function unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

NAME = "compress_sdpa"


def gqa_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, Q, D], key/value [B, H_kv, L, D] → [B, Q, H, D]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    one_mask = attention_mask is None or attention_mask.shape[1] == 1
    if n_rep == 1 or query.shape[2] != 1 or not one_mask or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, h, _, d = query.shape
    rows = query.reshape(b, h // n_rep, n_rep, d)  # query head i → KV head i // n_rep, as repeat_kv pairs them
    out = F.scaled_dot_product_attention(rows, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(b, h, 1, d).transpose(1, 2), None


def register() -> str:
    """Make `compress_sdpa` known to transformers (attention function and its mask, which is sdpa's); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME


def use_for_decode(model: nn.Module) -> bool:
    """Switch a model that runs transformers' `sdpa` to `compress_sdpa` (same results; no KV copy per decode
    step). Other implementations (eager, flash, a user's own) are left alone. Returns whether it switched."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    model.set_attn_implementation(register())
    return True
