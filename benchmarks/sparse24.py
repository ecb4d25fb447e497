"""2:4 semi-structured vs dense bf16 linear on CUDA, per shape and token count M (µs, median).

    python benchmarks/sparse24.py            # needs a GPU; prints a markdown table

Times three calls: dense F.linear, F.linear(x, to_sparse_semi_structured(W)) (the pattern measured
2–29× slower), and compress's path mm(W_sparse, xᵀ)ᵀ (kernels/sparse.py). Use the result to set
kernels.sparse.SEMI_STRUCTURED / SEMI_MIN_M.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from compress.algorithms.masks import nm_mask
from compress.formats.sparse import SparseLinear
from compress.kernels import sparse as K

SHAPES = [(1536, 576), (576, 1536), (4096, 4096), (14336, 4096), (4096, 14336)]
MS = [1, 16, 128, 512, 2048]


def us(fn) -> float:
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.3).median * 1e6


def main() -> None:
    from torch.sparse import to_sparse_semi_structured

    K.SEMI_STRUCTURED = True
    print("| out×in | M | dense µs | F.linear(semi) µs | mm(semi, xᵀ) µs | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, k in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        w = w * nm_mask(w.float().abs(), 2, 4)
        mod = SparseLinear.from_dense(w, pattern="2:4")
        ws = to_sparse_semi_structured(w)
        for m in MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            dense = us(lambda: F.linear(x, w))
            try:
                flin = f"{us(lambda: F.linear(x, ws)):.1f}"
            except RuntimeError as e:
                flin = f"error: {str(e)[:30]}"
            ours = us(lambda: mod(x))
            print(f"| {n}×{k} | {m} | {dense:.1f} | {flin} | {ours:.1f} | {dense / ours:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
