"""GGUF block encodings of our codes (Q8_0, Q4_0, Q4_1: 32 weights a block, fp16 parameters), and the
fp16 rounding of those parameters. Pure tensor functions: the codes are copied, never re-quantized."""
from __future__ import annotations

from typing import Any

import torch

from compress.errors import CompressError
from compress.formats import QuantLinear

FMT = "gguf"
BLOCK = 32  # weights per Q4_0 / Q4_1 / Q8_0 block (QK4_0 = QK4_1 = QK8_0 in ggml)


def refuse(what: str) -> CompressError:
    return CompressError(f"export --format {FMT}: {what}")


def _fp16_bytes(x: torch.Tensor) -> torch.Tensor:
    """fp16 values [..., 1] → their little-endian bytes [..., 2]."""
    return x.to(torch.float16).contiguous().view(torch.uint8)


def block_params(mod: QuantLinear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-32-block scale and zero [N, K/32]: each group's repeated over its blocks (padding beyond K dropped)."""
    per_group = mod.qspec.group_for(mod.in_features) // BLOCK
    blocks = mod.in_features // BLOCK
    scale = mod.scales.float().repeat_interleave(per_group, dim=1)[:, :blocks]
    zero = None if mod.zeros is None else mod.zeros.float().repeat_interleave(per_group, dim=1)[:, :blocks]
    return scale, zero


def encode_q8_0(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] (uint8, zero 128) → Q8_0 rows [N, K/32·34]: fp16 d, then 32 signed bytes."""
    n, k = codes.shape
    qs = (codes.to(torch.int16) - 128).to(torch.int8).view(torch.uint8).reshape(n, k // BLOCK, BLOCK)
    return torch.cat([_fp16_bytes(scale.unsqueeze(-1)), qs], dim=-1).reshape(n, -1)


def _nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, K] in 0..15 → [N, K/32, 16]: byte j holds element j (low nibble) and element j + 16 (high)."""
    n, k = codes.shape
    blocks = codes.to(torch.uint8).reshape(n, k // BLOCK, BLOCK)
    return blocks[..., :16] | (blocks[..., 16:] << 4)


def encode_q4_0(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int4 (zero 8) → Q4_0 rows [N, K/32·18]: fp16 d, 16 nibble bytes; value (q − 8)·d."""
    n = codes.shape[0]
    return torch.cat([_fp16_bytes(scale.unsqueeze(-1)), _nibbles(codes)], dim=-1).reshape(n, -1)


def encode_q4_1(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Asymmetric int4 → Q4_1 rows [N, K/32·20]: fp16 d, fp16 m = −zero·d, 16 nibble bytes; value q·d + m."""
    n = codes.shape[0]
    d, m = _fp16_bytes(scale.unsqueeze(-1)), _fp16_bytes((-zero * scale).unsqueeze(-1))
    return torch.cat([d, m, _nibbles(codes)], dim=-1).reshape(n, -1)


class Rounding:
    """The largest relative fp16 rounding of GGUF block scales d (and Q4_1 minimums m), and where."""

    def __init__(self) -> None:
        self.worst: dict[str, tuple[float, str]] = {}

    def add(self, field: str, exact: torch.Tensor, module: str) -> None:
        nz = exact != 0
        rel = ((exact.to(torch.float16).float() - exact).abs()[nz] / exact.abs()[nz]).max().item() if nz.any() else 0.0
        if rel >= self.worst.get(field, (-1.0, ""))[0]:
            self.worst[field] = (rel, module)

    def report(self) -> dict[str, Any]:
        """{max_rel_d, worst_d_module, max_rel_m, worst_m_module}; None for a field no block has (m: Q4_1 only)."""
        out: dict[str, Any] = {}
        for field in ("d", "m"):
            rel, module = self.worst.get(field, (None, None))
            out |= {f"max_rel_{field}": rel, f"worst_{field}_module": module if rel else None}
        return out
