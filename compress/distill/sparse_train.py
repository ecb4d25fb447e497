"""Training pruned modules with their mask held fixed: a SparseLinear becomes a dense trainable weight
that runs masked, and is packed back at the end with exactly the mask (and `pattern`) it came with.

The mask is applied in the forward (W ⊙ M) rather than by zeroing gradients and re-masking after each
optimizer step: the gradient of a pruned weight is then exactly zero by construction, so AdamW's
moments there stay zero and its decoupled weight decay (−lr·λ·w) keeps a zero at zero. Pruned latent
weights therefore stay exactly 0 with no hook into the optimizer, the trainer or a data-parallel
wrapper, and even a latent changed from outside could not leak into what the model computes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from compress.formats.sparse import SparseLinear
from compress.select import set_module


class MaskedLinear(nn.Module):
    """Training stand-in for a SparseLinear: a float weight (starting at its dense view), its packed
    mask, and a frozen bias; forward uses weight ⊙ mask."""

    resume_buffers = ("mask",)  # saved with the trainer's resume state: the weights mean nothing without it

    def __init__(self, src: SparseLinear) -> None:
        super().__init__()
        self.in_features, self.out_features, self.pattern = src.in_features, src.out_features, src.pattern
        self.store_dtype = src.values.dtype
        self.register_buffer("mask", src.mask.detach().clone())  # packed bits, as SparseLinear stores them
        self.register_buffer("keep", src.keep_mask(), persistent=False)
        self.weight = nn.Parameter(src.dense_weight().detach().float().clone())
        self.register_buffer("bias", None if src.bias is None else src.bias.detach().clone())

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def to_sparse_linear(self, dtype: torch.dtype | None = None) -> SparseLinear:
        """The trained weight stored under the original mask, bit for bit (a kept weight that trained to
        exactly 0 stays a stored value, so nnz and an N:M pattern never change)."""
        keep = self.keep
        mod = SparseLinear(self.in_features, self.out_features, int(keep.sum()), self.bias is not None,
                           dtype or self.store_dtype, self.pattern)
        with torch.no_grad():
            mod.mask.copy_(self.mask)
            mod.values.copy_(self.weight.detach()[keep])
            if self.bias is not None:
                mod.bias.copy_(self.bias)
        return mod.to(self.weight.device)


def unpack_sparse_for_training(model: nn.Module, modules: dict[str, nn.Module]) -> dict[str, MaskedLinear]:
    """Swap each selected SparseLinear for a MaskedLinear; returns them by name."""
    swapped = {}
    for name, mod in modules.items():
        if isinstance(mod, SparseLinear):
            swapped[name] = MaskedLinear(mod)
            set_module(model, name, swapped[name])
    return swapped


def pack_sparse_after_training(model: nn.Module, names: list[str], dtype: torch.dtype | None = None) -> None:
    """Swap the MaskedLinears at `names` back to SparseLinears with their original masks."""
    for name in names:
        mod = model.get_submodule(name)
        if isinstance(mod, MaskedLinear):
            set_module(model, name, mod.to_sparse_linear(dtype))
