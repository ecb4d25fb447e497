"""Kernel micro-benchmark for the GPU machine: one linear at M = 1, 16, 2048 on Llama-3-8B shapes,
every format and backend, µs and effective GB/s; then whole-model decode through `compress bench`.

    PYTHONPATH=. python scripts/bench_kernels.py --out benchmarks/results/kernels-h100.json [--no-model]

Backends per format: `auto` (what dispatch picks), each explicit kernel that applies, and
bitsandbytes nf4 / LLM.int8 when it is installed. Effective GB/s counts the bytes a call must
read or write at least: packed weights + scales/zeros + x + y.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compress.algorithms.grid import QuantSpec  # noqa: E402
from compress.algorithms.rtn import rtn_quantize  # noqa: E402
from compress.formats.quant_linear import QuantLinear  # noqa: E402
from compress.kernels import triton_int8  # noqa: E402
from compress.kernels.dispatch import choose_kernel, quant_linear  # noqa: E402
from compress.kernels.int4_tinygemm import tinygemm_group  # noqa: E402

SHAPES = {"8b-qo": (4096, 4096), "8b-kv": (1024, 4096), "8b-up": (14336, 4096), "8b-down": (4096, 14336)}  # (N, K)
FORMATS = {"int8": QuantSpec(8, -1, True), "int4-g128": QuantSpec(4, 128, False), "int4-g64": QuantSpec(4, 64, False),
           "int4-pc": QuantSpec(4, -1, False)}


def time_us(fn: Callable[[], torch.Tensor], iters: int = 200) -> float:
    """Mean over `iters` calls between CUDA events (after warm-up), in µs."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / iters


def nbytes(*ts: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def backends(mod: QuantLinear, m: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"auto": lambda x: quant_linear(x, mod), "dequant": lambda x: quant_linear(x, mod, "dequant")}
    if mod.qspec.bits == 4 and tinygemm_group(mod) is not None:
        out["tinygemm"] = lambda x: quant_linear(x, mod, "tinygemm")
    if mod.qspec.bits == 8 and triton_int8.available():
        out["triton_int8"] = lambda x: quant_linear(x, mod, "triton_int8")
    if mod.qspec.bits == 8 and mod.qspec.symmetric and mod.qspec.group_size == -1:
        s = mod.scales[:, 0].to(torch.bfloat16)
        out["aten_int8pack"] = lambda x: torch.ops.aten._weight_int8pack_mm(x, mod.qweight, s)
    return out


def bnb_backends(w: torch.Tensor) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]]:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return {}
    n, k = w.shape
    nf4 = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    nf4.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, quant_type="nf4")
    i8 = bnb.nn.Linear8bitLt(k, n, bias=False, has_fp16_weights=False)
    i8.weight = bnb.nn.Int8Params(w.cpu(), requires_grad=False)
    nf4, i8 = nf4.cuda(), i8.cuda()
    return {"bnb-nf4": (nf4, n * k // 2), "bnb-int8": (i8, n * k)}


@torch.no_grad()
def bench_linears(ms: list[int]) -> list[dict]:
    rows = []
    for shape, (n, k) in SHAPES.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
        mods = {f: QuantLinear.from_codes(*rtn_quantize(w, spec), spec, k, None, torch.bfloat16) for f, spec in FORMATS.items()}
        bnb = bnb_backends(w)
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            io = nbytes(x) + m * n * 2
            base = time_us(lambda: F.linear(x, w))
            batch = [{"shape": shape, "N": n, "K": k, "M": m, "format": "bf16", "backend": "cublas", "us": base,
                      "GB/s": (nbytes(w) + io) / base / 1e3, "speedup": 1.0}]
            for f, mod in mods.items():
                wbytes = nbytes(mod.qweight, mod.scales, mod.zeros)
                for name, fn in backends(mod, m).items():
                    us = time_us(lambda: fn(x))
                    label = name if name != "auto" else f"auto({choose_kernel(x.device, m, mod)})"
                    batch.append({"shape": shape, "N": n, "K": k, "M": m, "format": f, "backend": label, "us": us,
                                  "GB/s": (wbytes + io) / us / 1e3, "speedup": base / us})
            for name, (layer, wb) in bnb.items():
                us = time_us(lambda: layer(x))
                batch.append({"shape": shape, "N": n, "K": k, "M": m, "format": name, "backend": "bitsandbytes", "us": us,
                              "GB/s": (wb + io) / us / 1e3, "speedup": base / us})
            rows += batch
            for r in batch:
                print(f"{r['shape']:8} M={r['M']:<5} {r['format']:10} {r['backend']:22} {r['us']:9.1f} µs {r['GB/s']:7.0f} GB/s  {r['speedup']:.2f}×", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,16,2048")
    ap.add_argument("--out", default="benchmarks/results/kernels.json")
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model `compress bench` decode runs")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU")
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "linears": bench_linears([int(v) for v in a.m.split(",")])}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {a.out}")
    if not a.no_model:  # batch-1 decode and 2048-token prefill, ratios to bf16 in the same run
        stem = Path(a.out).with_suffix("")
        for shape in ("random:llama3-8b", "random:smollm2-135m"):
            cmd = [sys.executable, "-m", "compress", "bench", shape, "recipes/int8.yaml", "recipes/int4-rtn.yaml",
                   "--prefill", "2048", "--batch", "1", "--json", f"{stem}-{shape.split(':')[1]}.json", "-q"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
