"""Per-linear CPU timings that set dispatch's crossovers (`compress/kernels/dispatch.py`): SmolLM2's
linear shapes, M = 1 … 512, dense fp32 / bf16 against each int kernel and dequantize + matmul.

    PYTHONPATH=. python benchmarks/cpu_kernels.py --threads 1 --out benchmarks/results/cpu_kernels.json

Median of `--repeats` calls after warm-up, µs; the markdown table it prints is in docs/quantization.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from compress.algorithms.grid import QuantSpec
from compress.algorithms.rtn import rtn_quantize
from compress.formats.quant_linear import QuantLinear
from compress.kernels.dispatch import quant_linear

SHAPES = {"up/gate 1536×576": (1536, 576), "down 576×1536": (576, 1536), "q/o 576×576": (576, 576)}
MS = (1, 2, 4, 8, 16, 32, 64, 128, 512)


def median_us(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e6


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for label, (n, k) in SHAPES.items():
        w = torch.randn(n, k) / k**0.5
        mods = {name: QuantLinear.from_codes(*rtn_quantize(w, spec), spec, k, None, torch.bfloat16)
                for name, spec in (("int4-g64", QuantSpec(4, 64, False)), ("int8", QuantSpec(8, -1, True)))}
        for m in MS:
            x32 = torch.randn(m, k)
            x16, w16 = x32.bfloat16(), w.bfloat16()
            row = {"shape": label, "M": m, "dense fp32": median_us(lambda: F.linear(x32, w), a.repeats),
                   "dense bf16": median_us(lambda: F.linear(x16, w16), a.repeats),
                   "int4pack": median_us(lambda: quant_linear(x16, mods["int4-g64"], "int4pack_cpu"), a.repeats),
                   "int4 dequant": median_us(lambda: quant_linear(x16, mods["int4-g64"], "dequant"), a.repeats),
                   "int8pack": median_us(lambda: quant_linear(x16, mods["int8"], "int8pack_cpu"), a.repeats),
                   "int8 dequant": median_us(lambda: quant_linear(x16, mods["int8"], "dequant"), a.repeats)}
            rows.append(row)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    cols = [c for c in rows[0] if c not in ("shape", "M")]
    print("\n| shape | M | " + " | ".join(cols) + " |\n| --- | --- |" + " --- |" * len(cols))
    for r in rows:
        print(f"| {r['shape']} | {r['M']} | " + " | ".join(f"{r[c]:.0f}" for c in cols) + " |")
    if a.out:
        a.out.write_text(json.dumps({"cpu": platform.processor() or platform.machine(), "threads": a.threads,
                                     "torch": torch.__version__, "unit": "µs", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
