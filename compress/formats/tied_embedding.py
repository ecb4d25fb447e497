"""A token embedding that reads its rows from the packed `lm_head` it is tied to: one packed copy of the matrix.

In models with tied embeddings (SmolLM2: 49,152 × 576, a fifth of the parameters) quantizing only
`lm_head` would untie it and keep a dense embedding beside the packed head, so memory would grow.
Here the embedding looks up the head's rows and scales instead (int8, or int4 read straight from the
kernel's interleaved layout; a gather, then the same dequantization the prefill path uses): the matrix is
stored, saved and moved once, as `lm_head`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from compress.formats.quant_linear import QuantLinear


class QuantEmbedding(nn.Module):
    """ids → dequantized rows of the tied packed head (the head is referenced, not a submodule: it is saved once)."""

    def __init__(self, head: QuantLinear, padding_idx: int | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "head", head)  # bypasses nn.Module registration: no second state-dict entry
        self.num_embeddings, self.embedding_dim, self.padding_idx = head.out_features, head.in_features, padding_idx
        # the model's compute dtype, which the head's scales do not follow (they keep the format's dtype): an empty
        # buffer that every `.to(dtype)` of the model moves
        self.register_buffer("out_dtype_of", torch.empty(0, dtype=head.scales.dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head.rows(ids.reshape(-1), self.out_dtype_of.dtype).view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, tied to an int{self.head.qspec.bits} lm_head"


def tie_quantized_head(model: nn.Module) -> None:
    """After a pass: if it quantized the output head of a tied model, make the embedding read the packed head."""
    if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        return
    get_out, get_in = getattr(model, "get_output_embeddings", None), getattr(model, "get_input_embeddings", None)
    head = get_out() if get_out else None
    emb = get_in() if get_in else None
    if not isinstance(head, QuantLinear) or not isinstance(emb, nn.Embedding):
        return
    model.set_input_embeddings(QuantEmbedding(head, emb.padding_idx))


def tied_names(model: nn.Module) -> dict[str, str]:
    """{embedding module name: head module name} for the checkpoint manifest."""
    names = {id(m): n for n, m in model.named_modules()}
    return {n: names[id(m.head)] for n, m in model.named_modules() if isinstance(m, QuantEmbedding)}
