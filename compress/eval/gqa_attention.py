"""SDPA attention that reads a grouped-query KV cache in place when one token is decoded.

With grouped-query attention (SmolLM2: 9 query heads share 3 key/value heads), transformers' `sdpa`
attention repeats every key and value head for its query heads before calling SDPA whenever a mask is
passed, as it always is over a static cache: each decode step copies the whole cache of every layer
(its own in-place grouping is switched off while dynamo traces, so a compiled step always copies).
For a single query token the grouping is free instead: the n_rep query heads of one KV head become
n_rep query rows of that head, (B, H, 1, D) → (B, H_kv, n_rep, D), and the mask, the same for every
head and row, broadcasts. Same math, no copy. On a CPU that call goes to `native.attn_decode` (C, fp32
sums): aten's SDPA spent ~40–110 µs a call at SmolLM2's decode sizes, mostly setup, and over the whole static
cache where the kernel skips its masked (unused) positions; it also takes models without GQA. Every other call
(prefill, a per-head mask) goes to transformers' own `sdpa` function unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.kernels import native

NAME = "compress_sdpa"
NATIVE = True  # one-token attention on a CPU through `native.attn_decode`; False: aten's SDPA (benchmarks compare)


def gqa_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, Q, D], key/value [B, H_kv, L, D] → [B, Q, H, D]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n_rep = getattr(module, "num_key_value_groups", 1)
    one_mask = attention_mask is None or attention_mask.shape[1] == 1
    if query.shape[2] != 1 or not one_mask or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, h, _, d = query.shape
    rows = query.reshape(b, h // n_rep, n_rep, d)  # query head i → KV head i // n_rep, as repeat_kv pairs them
    scale = d ** -0.5 if scaling is None else scaling
    if _native_ok(rows, key, value, attention_mask):
        mask = None if attention_mask is None else attention_mask.reshape(b, key.shape[2]).contiguous()
        out = native.attn_decode(rows, key, value, mask, scale)
    elif n_rep == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    else:
        out = F.scaled_dot_product_attention(rows, key, value, attn_mask=attention_mask, scale=scale)
    return out.reshape(b, h, 1, d).transpose(1, 2), None


def _native_ok(rows: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """Whether `native.attn_decode` takes this call: CPU, fp32 or bf16, a contiguous cache, a boolean mask (or none)
    of one row per batch over the cache's length, at most 16 query heads per KV head."""
    return (NATIVE and rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.bfloat16) and key.dtype == rows.dtype
            and value.dtype == rows.dtype and key.is_contiguous() and value.is_contiguous() and rows.shape[2] <= 16
            and (mask is None or (mask.dtype == torch.bool and mask.shape[-1] == key.shape[2]
                                  and mask.numel() == rows.shape[0] * key.shape[2]))
            and native.available())


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
