"""Compact sparse linear: a bitmask (1 bit per weight) plus the non-zero values in row-major order.

At 50% sparsity in bf16 this is 1 + 1/8 bytes per two weights instead of 4 (≈56% of dense), and
the same holds for 2:4 (its metadata is also 4 bits per 4 weights). The module subclasses
nn.Linear and exposes a read-only dense `weight`, so a later quantizing pass (which selects
nn.Linear modules) reads the pruned weight and its zeros survive quantization; the returned
tensor is an inference tensor, so an in-place edit fails loudly instead of being lost.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from compress.formats.base import PackedLinear, register_format



def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool [N, K] → uint8 [N, ceil(K/8)], bit b of byte j = column 8j + b."""
    rows, cols = mask.shape
    bits = torch.nn.functional.pad(mask.to(torch.uint8), (0, -cols % 8)).reshape(rows, -1, 8)
    out = bits[..., 0].clone()
    for b in range(1, 8):
        out |= bits[..., b] << b
    return out


def unpack_mask(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of `pack_mask`."""
    bits = ((packed.unsqueeze(-1) >> torch.arange(8, device=packed.device, dtype=torch.uint8)) & 1) != 0
    return bits.reshape(packed.shape[0], -1)[:, :cols]


@register_format
class SparseLinear(PackedLinear, nn.Linear):
    """y = x · Wᵀ + b with W stored as bitmask + values; dense matmul fallback, 2:4 CUDA path opt-in."""

    format = "sparse"

    def __init__(self, in_features: int, out_features: int, nnz: int, bias: bool = False,
                 dtype: torch.dtype = torch.float32, pattern: str | None = None) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: there is no dense weight parameter
        self.in_features, self.out_features, self.pattern = in_features, out_features, pattern
        self.register_buffer("mask", torch.zeros(out_features, -(-in_features // 8), dtype=torch.uint8))
        self.register_buffer("values", torch.zeros(nnz, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)
        self._semi: Any = None  # cached semi-structured CUDA tensor (kernels/sparse.py), never saved

    @classmethod
    def from_dense(cls, w: torch.Tensor, bias: torch.Tensor | None = None, pattern: str | None = None,
                   dtype: torch.dtype | None = None) -> "SparseLinear":
        """Store the non-zeros of a pruned weight [N, K] (zeros are what was pruned)."""
        w = w.detach()
        keep = w != 0
        mod = cls(w.shape[1], w.shape[0], int(keep.sum()), bias is not None, dtype or w.dtype, pattern)
        mod.mask.copy_(pack_mask(keep))
        mod.values.copy_(w[keep])
        if bias is not None:
            mod.bias.copy_(bias.detach())
        return mod.to(w.device)

    def spec(self) -> dict[str, Any]:
        return {"nnz": int(self.values.numel()), "pattern": self.pattern, "sparsity": round(self.sparsity, 6)}

    @classmethod
    def from_spec(cls, in_features: int, out_features: int, bias: bool, dtype: torch.dtype,
                  spec: dict[str, Any]) -> "SparseLinear":
        return cls(in_features, out_features, int(spec["nnz"]), bias, dtype, spec.get("pattern"))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.values.numel() / max(1, self.in_features * self.out_features)

    def keep_mask(self) -> torch.Tensor:
        return unpack_mask(self.mask, self.in_features)

    def dense_weight(self) -> torch.Tensor:
        w = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return w.masked_scatter(self.keep_mask(), self.values)  # no boolean indexing: no host sync, graph-capturable

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """Dense view for passes that read weights (read-only: an inference tensor)."""
        with torch.inference_mode():
            return self.dense_weight()

    def _apply(self, fn: Any, recurse: bool = True) -> "SparseLinear":
        self._semi = None  # a device/dtype move invalidates the cached CUDA form
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from compress.kernels.sparse import sparse_linear

        return sparse_linear(x, self)
