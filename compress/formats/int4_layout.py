"""In-memory layouts of int4 codes for aten's tinygemm kernels, and their exact inverses.

Checkpoints hold the portable layout (two codes per byte, low nibble = even column). A
QuantLinear converts to its device's kernel layout when it is built, loaded or moved, so memory
holds one copy of the weight and the forward is a single kernel call (no cache, no graph break).

- ``cpu_int4`` (`_weight_int4pack_mm_for_cpu`): uint8 [N, K/2], rows in blocks of 64 (a last
  block of N mod 64 rows, N % 16 = 0); each block is stored k-major, byte j of a full block holding
  rows j (low nibble) and j + 32 (high), of a partial block rows 2j and 2j + 1. Written here as
  reshapes, checked against aten's own converter in the tests. aten's converter writes this layout only
  where torch runs its AVX512 kernels; on AVX2-only CPUs (AMD Zen 3) it blocks 32 rows, so its kernel
  reads this layout wrongly there (`aten_cpu_layout_matches`) and only our C kernels (`kernels/native`) and
  the dequantizing path run it.
- ``cuda_tinygemm`` (`_weight_int4pack_mm`): int32 tiles made by aten's converter; the inverse
  is found by converting probe codes (`nibble_sources`), so it is exact by construction. It is
  kept once per weight shape and device (int32, 4 bytes per weight of that shape; counted by
  `cache_bytes`) for the dequantizing prefill path and for saving.
"""
from __future__ import annotations

from typing import Callable

import torch

BLOCK_N = 64  # rows per block of the CPU layout


_ATEN_MATCHES: list[bool] = []


@torch.compiler.assume_constant_result
def aten_cpu_layout_matches() -> bool:
    """Whether aten's CPU int4pack converter (and so its kernel) uses this layout on this CPU: probed once."""
    if not _ATEN_MATCHES:
        codes = torch.arange(BLOCK_N * 32, dtype=torch.int32).reshape(BLOCK_N, 32) % 16
        aten = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        _ATEN_MATCHES.append(bool(torch.equal(aten, cpu_pack(codes))))
    return _ATEN_MATCHES[0]


def _nibbles(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return b & 0x0F, b >> 4


def cpu_pack(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] → the CPU int4pack layout, uint8 [N, K/2] (same bytes as aten's converter)."""
    n, k = codes.shape
    codes = codes.to(torch.uint8)
    full = n // BLOCK_N * BLOCK_N
    parts = []
    if full:
        blk = codes[:full].reshape(-1, BLOCK_N, k)
        byte = blk[:, : BLOCK_N // 2] | (blk[:, BLOCK_N // 2:] << 4)  # [nb, 32, K]
        parts.append(byte.transpose(1, 2).reshape(-1))
    if full < n:
        rest = codes[full:]
        parts.append((rest[0::2] | (rest[1::2] << 4)).t().reshape(-1))  # [K, r/2]
    return torch.cat(parts).reshape(n, k // 2)


def cpu_unpack(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `cpu_pack`: uint8 codes [N, K]."""
    n, k = packed.shape[0], packed.shape[1] * 2
    flat = packed.reshape(-1)
    full = n // BLOCK_N * BLOCK_N
    rows = []
    if full:
        byte = flat[: full * k // 2].reshape(-1, k, BLOCK_N // 2).transpose(1, 2)  # [nb, 32, K]
        lo, hi = _nibbles(byte)
        rows.append(torch.cat([lo, hi], dim=1).reshape(full, k))
    if full < n:
        lo, hi = _nibbles(flat[full * k // 2:].reshape(k, (n - full) // 2).t())
        rows.append(torch.stack([lo, hi], dim=1).reshape(n - full, k))
    return torch.cat(rows) if len(rows) > 1 else rows[0]


def cpu_rows(packed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """uint8 codes [len(ids), K] of rows `ids` of the CPU layout, reading only their bytes (a tied embedding's
    lookup: `cpu_unpack(packed)[ids]` without unpacking the other rows)."""
    n, k = packed.shape[0], packed.shape[1] * 2
    full = n // BLOCK_N * BLOCK_N
    ids = ids.to(torch.int64)
    in_full = ids < full
    local = torch.where(in_full, ids % BLOCK_N, ids - full)
    half = BLOCK_N // 2
    # a full block is k-major with 32 bytes per column (rows j and j + 32); the last block has (n - full) / 2
    base = torch.where(in_full, ids // BLOCK_N * half * k + local % half, full * k // 2 + local // 2)
    stride = torch.where(in_full, half, max(1, (n - full) // 2))
    shift = torch.where(in_full, local // half, local % 2) * 4
    cols = torch.arange(k, device=packed.device, dtype=torch.int64)
    byte = packed.reshape(-1)[base.unsqueeze(1) + cols * stride.unsqueeze(1)]
    return ((byte.to(torch.int64) >> shift.unsqueeze(1)) & 0x0F).to(torch.uint8)


def inner_k_tiles(k: int) -> int:
    return 8 if k % 128 == 0 else 4 if k % 64 == 0 else 2


def cuda_convert(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] on a CUDA device → tinygemm's int32 tiles (aten's converter: high nibble first)."""
    hi_lo = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    return torch.ops.aten._convert_weight_to_int4pack(hi_lo, inner_k_tiles(codes.shape[1]))


def _byte_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Every nibble of a tensor's bytes, low nibble first: uint8 [2 · nbytes]."""
    lo, hi = _nibbles(packed.contiguous().view(torch.uint8).reshape(-1))
    return torch.stack([lo, hi], dim=-1).reshape(-1)


def nibble_sources(convert: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, device: torch.device) -> torch.Tensor:
    """For each nibble of `convert`'s output, the flat index (row·K + col) of the code it holds.

    Converts codes that spell out their own index four bits at a time; raises if `convert` is not a
    pure permutation of nibbles (then no exact inverse exists)."""
    idx = torch.arange(n * k, device=device, dtype=torch.int64)
    src = None
    for shift in range(0, max(4, (n * k - 1).bit_length()), 4):
        part = _byte_nibbles(convert(((idx >> shift) & 0x0F).to(torch.uint8).reshape(n, k))).to(torch.int64) << shift
        src = part if src is None else src | part
    assert src is not None
    if src.numel() != n * k or not torch.equal(torch.sort(src).values, idx):
        raise RuntimeError(f"int4 layout of [{n}, {k}] is not a permutation of nibbles; cannot invert it")
    return src


def gather_index(convert: Callable[[torch.Tensor], torch.Tensor], n: int, k: int, device: torch.device) -> torch.Tensor:
    """int32 [N·K]: the nibble of `convert`'s output that holds code i (the inverse permutation)."""
    src = nibble_sources(convert, n, k, device)
    inv = torch.empty_like(src)
    inv[src] = torch.arange(src.numel(), device=device)
    return inv.to(torch.int32)


def invert(index: torch.Tensor, packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """uint8 codes [N, K] from a kernel layout, given its `gather_index`."""
    return _byte_nibbles(packed).index_select(0, index).reshape(n, k)


_CUDA_INDEX: dict[tuple[int, int, str], torch.Tensor] = {}


def cuda_unpack(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """uint8 codes [N, K] from tinygemm's CUDA layout (index built on first use per shape and device)."""
    key = (n, k, str(packed.device))
    if key not in _CUDA_INDEX:
        _CUDA_INDEX[key] = gather_index(cuda_convert, n, k, packed.device)
    return invert(_CUDA_INDEX[key], packed, n, k)


def cache_bytes() -> int:
    """Memory held by the shared inverse-layout indices (added to a model's in-memory bytes)."""
    return sum(t.numel() * t.element_size() for t in _CUDA_INDEX.values())
