"""int4 through aten's tinygemm kernels: `_weight_int4pack_mm` (CUDA) and `_weight_int4pack_mm_for_cpu`.

tinygemm computes w = (q - 8)·scale + zero_t with a float zero, from its own tiled layout, which a
QuantLinear holds in memory already (`formats/int4_layout.py`): the call is the kernel alone, so
it traces into one graph under torch.compile. Both kernels compute in bf16 with fp32 accumulation
(the CPU kernel in fp32 was 25× slower on our CPU); other input dtypes are cast around the call.
Per-channel weights use groups of the largest size tinygemm accepts that tiles K, each repeating
the channel's scale.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from compress.formats.quant_linear import QuantLinear

GROUPS = (256, 128, 64, 32)  # the group sizes tinygemm implements
KERNEL_DTYPE = torch.bfloat16


def tinygemm_group(mod: "QuantLinear") -> int | None:
    """The tinygemm group size for this module, or None when tinygemm cannot run it."""
    kp = mod.qspec.padded_in(mod.in_features)
    if mod.qspec.bits != 4 or mod.out_features % 16 != 0 or kp % 32 != 0:  # the CPU packer needs N % 16
        return None
    if mod.qspec.group_size == -1:
        return next(g for g in GROUPS if kp % g == 0)
    return mod.qspec.group_size if mod.qspec.group_size in GROUPS else None


def scales_and_zeros(mod: "QuantLinear", group: int, dtype: torch.dtype = KERNEL_DTYPE) -> torch.Tensor:
    """[K/group, N, 2]: (scale, (8 - zero)·scale), since (q - z)·s = (q - 8)·s + (8 - z)·s."""
    s, z = mod.scales.float(), mod.zero_points().float()
    if mod.qspec.group_size == -1:  # one group per row → K/group equal groups
        rep = mod.qspec.padded_in(mod.in_features) // group
        s, z = s.repeat_interleave(rep, dim=1), z.repeat_interleave(rep, dim=1)
    return torch.stack([s, (8 - z) * s], dim=-1).transpose(0, 1).contiguous().to(dtype)


def params_from_sz(sz: torch.Tensor, groups: int, asymmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inverse of `scales_and_zeros`: scales [N, groups] (a view into sz) and integer zeros (None if symmetric).

    (8 − z)·s is held in bf16, a relative error ≤ 2⁻⁹ on an integer |8 − z| ≤ 8, so rounding the
    quotient recovers z exactly wherever s ≠ 0.
    """
    rep = sz.shape[0] // groups  # per-channel: every tinygemm group repeats the row's scale
    table = sz[::rep].transpose(0, 1)  # [N, groups, 2]
    if not asymmetric:
        return table[..., 0], None
    return table[..., 0], 8 - (table[..., 1].float() / table[..., 0].float()).round()


def int4_tinygemm(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """y [M, N] = x2d [M, K] · Wᵀ through tinygemm (x padded to the packed K), in x's dtype."""
    kp = mod.qspec.padded_in(mod.in_features)
    group = tinygemm_group(mod)
    xc = x2d.to(KERNEL_DTYPE)
    if xc.shape[1] != kp:
        xc = torch.nn.functional.pad(xc, (0, kp - xc.shape[1]))
    if mod.layout == "cuda_tinygemm":
        y = torch.ops.aten._weight_int4pack_mm(xc.contiguous(), mod.qweight, group, mod.sz)
    elif mod.layout == "cpu_int4":
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xc.contiguous(), mod.qweight, group, mod.sz)
    else:
        raise RuntimeError(f"int4_tinygemm: module is in layout {mod.layout!r}, not a tinygemm layout")
    return y.to(x2d.dtype)
