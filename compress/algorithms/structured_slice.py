"""Make a Llama-style model physically smaller: slice linears, heads, FFN channels; drop layers."""
from __future__ import annotations

import torch
import torch.nn as nn


def slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new nn.Linear holding lin's weight restricted to output `rows` and input `cols`."""
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        rows = rows.to(w.device)
        w, b = w[rows], (b[rows] if b is not None else None)
    if cols is not None:
        w = w[:, cols.to(w.device)]
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def prune_mlp(mlp: nn.Module, keep: torch.Tensor) -> None:
    """Keep intermediate channels `keep`: gate/up rows and down columns together."""
    mlp.gate_proj = slice_linear(mlp.gate_proj, rows=keep)
    mlp.up_proj = slice_linear(mlp.up_proj, rows=keep)
    mlp.down_proj = slice_linear(mlp.down_proj, cols=keep)
    mlp.intermediate_size = int(keep.numel())


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of whole heads in a [heads · head_dim, ...] projection."""
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)


def prune_attention(attn: nn.Module, q_heads: torch.Tensor, kv_heads: torch.Tensor) -> None:
    """Keep query heads `q_heads` (q rows, o columns) and KV heads `kv_heads` (k/v rows)."""
    hd = attn.head_dim
    q_rows, kv_rows = head_rows(q_heads, hd), head_rows(kv_heads, hd)
    attn.q_proj = slice_linear(attn.q_proj, rows=q_rows)
    attn.k_proj = slice_linear(attn.k_proj, rows=kv_rows)
    attn.v_proj = slice_linear(attn.v_proj, rows=kv_rows)
    attn.o_proj = slice_linear(attn.o_proj, cols=q_rows)
    attn.num_key_value_groups = int(q_heads.numel() // kv_heads.numel())


def drop_layers(layers: nn.ModuleList, drop: list[int]) -> nn.ModuleList:
    """The layers not in `drop`, renumbered so KV-cache slots stay contiguous."""
    kept = nn.ModuleList([layer for i, layer in enumerate(layers) if i not in set(drop)])
    for i, layer in enumerate(kept):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = i
    return kept
