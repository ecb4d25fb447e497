"""int4 through aten's tinygemm kernels: `_weight_int4pack_mm` (CUDA) and `_weight_int4pack_mm_for_cpu`.

tinygemm wants its own tiled layout and w = (q - 8)·scale + zero_t with a float zero, so the
QuantLinear codes are converted once per device and cached on the module (the packed
checkpoint layout stays the portable one). Per-channel weights become groups of the largest
size tinygemm accepts that tiles K, each repeating the channel's scale.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from compress.formats.quant_linear import QuantLinear

GROUPS = (256, 128, 64, 32)  # the group sizes tinygemm implements


def tinygemm_group(mod: "QuantLinear") -> int | None:
    """The tinygemm group size for this module, or None when tinygemm cannot run it."""
    kp = mod.qweight.shape[1] * 2
    if mod.qspec.bits != 4 or mod.out_features % 16 != 0 or kp % 32 != 0:  # the CPU packer needs N % 16
        return None
    if mod.qspec.group_size == -1:
        return next(g for g in GROUPS if kp % g == 0)
    return mod.qspec.group_size if mod.qspec.group_size in GROUPS else None


def _inner_k_tiles(kp: int) -> int:
    return 8 if kp % 128 == 0 else 4 if kp % 64 == 0 else 2


def scales_and_zeros(mod: "QuantLinear", group: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """[K/group, N, 2]: (scale, (8 - zero)·scale), since (q - z)·s = (q - 8)·s + (8 - z)·s."""
    s, z = mod.scales.float(), mod.zero_points().float()
    if mod.qspec.group_size == -1:  # one group per row → K/group equal groups
        rep = mod.qweight.shape[1] * 2 // group
        s, z = s.repeat_interleave(rep, dim=1), z.repeat_interleave(rep, dim=1)
    return torch.stack([s, (8 - z) * s], dim=-1).transpose(0, 1).contiguous().to(dtype)


def _packed(mod: "QuantLinear", device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
    """tinygemm weight and scales for `device` and compute `dtype`, built once and cached on the module."""
    key = (str(device), dtype, mod.qweight.data_ptr(), mod.qweight._version)
    cache = getattr(mod, "_tinygemm", None)
    if cache is not None and cache[0] == key:
        return cache[1]
    group = tinygemm_group(mod)
    assert group is not None
    codes = mod.codes()  # uint8 [N, Kp], low nibble = even column in our storage
    tiles = _inner_k_tiles(codes.shape[1])
    if device.type == "cuda":
        hi_lo = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)  # tinygemm: high nibble first
        w = torch.ops.aten._convert_weight_to_int4pack(hi_lo.to(device), tiles)
    else:
        w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).to(device), tiles)
    value = (w, scales_and_zeros(mod, group, dtype).to(device), group)
    object.__setattr__(mod, "_tinygemm", (key, value))  # a plain attribute: never saved, never moved
    return value


def int4_tinygemm(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """y [M, N] = x2d [M, K] · Wᵀ through tinygemm (x padded to the packed K).

    CUDA computes in bf16 (tinygemm's only dtype); the CPU kernel keeps x's dtype (fp32 stays exact).
    """
    dtype = torch.bfloat16 if x2d.device.type == "cuda" else x2d.dtype
    w, sz, group = _packed(mod, x2d.device, dtype)
    kp = mod.qweight.shape[1] * 2
    xc = x2d.to(dtype)
    if xc.shape[1] != kp:
        xc = torch.nn.functional.pad(xc, (0, kp - xc.shape[1]))
    if x2d.device.type == "cuda":
        y = torch.ops.aten._weight_int4pack_mm(xc.contiguous(), w, group, sz)
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xc.contiguous(), w, group, sz)
    return y.to(x2d.dtype)
