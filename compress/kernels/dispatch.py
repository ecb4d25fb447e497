"""Pick the kernel for a QuantLinear call by device, format and the number of rows M.

| device | format | M | kernel |
| cpu | int8 per-channel sym, C/C++ compilers | ≤ CPU_GEMV_MAX_M | streaming GEMV in C (`native`, bf16 in and out)* |
| cpu | int8 per-channel sym, K % 16 = 0 | ≤ CPU_INT8PACK_MAX_M | aten `_weight_int8pack_mm` (bf16) |
| cpu | int4 in layout cpu_int4, C/C++ compilers | ≤ CPU_GEMV_MAX_M | streaming GEMV in C (`native`, bf16 in and out)* |
| cpu | int4 in layout cpu_int4, aten's layout on this CPU (AVX512) | ≤ CPU_INT4PACK_MAX_M | aten `_weight_int4pack_mm_for_cpu` (bf16) |
| cpu | int4 in layout cpu_int4, bf16 scales, bf16/fp32 x, C compiler | larger | Wᵀ from a C unpack (`native`), dense matmul |
| cpu | int8 per-channel sym, bf16 scales, bf16/fp32 x, C compiler | larger | W from a C unpack (`native`), dense matmul |
| cuda | int4 in layout cuda_tinygemm | ≤ 16 | aten `_weight_int4pack_mm` (tinygemm, bf16) |
| cuda | int8, triton installed | ≤ 16 | Triton fused dequant-GEMM (`triton_int8`) |
| any | any | any other | dequantize to x's dtype, dense matmul (cuBLAS for prefill) |

*: `int8_gemv_q8_cpu` / `int4_gemv_q8_cpu` (x rounded to int8 blocks of 32, integer sums) for the bit widths in
`native.GEMV_Q8` (by default int8 on AVX2 CPUs without AVX512-BF16), where blocks of 32 tile K and the group.

The dequantize-then-matmul path is the universal fallback and the reference the others are tested against.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from compress.formats import int4_layout
from compress.kernels import native, triton_int8
from compress.kernels.int4_tinygemm import KERNEL_DTYPE, int4_tinygemm

if TYPE_CHECKING:
    from compress.formats.quant_linear import QuantLinear

# CPU crossovers in M, from benchmarks/cpu_kernels.py (table in docs/quantization.md): past them
# dequantize + dense matmul is faster
CPU_INT8PACK_MAX_M = 16
CPU_INT4PACK_MAX_M = 64
CPU_GEMV_MAX_M = 2  # the C GEMVs stream the weight once per row of x: int4 1.2× aten int4pack at M = 1 (call overhead included), 1.07× at M = 2
COMPILE_DEQUANT = os.environ.get("COMPRESS_COMPILE_DEQUANT", "1") != "0"  # CPU prefill path; 0 = eager
CUDA_SMALL_M = 16  # decode-sized calls; prefill (tinygemm ~25× slower than bf16 at M=2048) dequantizes. Unmeasured: bench_kernels.py


def _int8_per_channel(mod: "QuantLinear") -> bool:
    """What `_weight_int8pack_mm` and the C int8 GEMV compute: codes times one scale per output row."""
    s = mod.qspec
    return s.bits == 8 and s.symmetric and s.group_size == -1


def _int8pack_ok(mod: "QuantLinear") -> bool:
    """Per channel, and K a multiple of 16: aten's bf16 CPU kernel reads past rows otherwise (wrong results,
    even a segfault, torch 2.13)."""
    return _int8_per_channel(mod) and mod.in_features % 16 == 0


# A plain torch.library definition: `torch.library.custom_op`'s Python wrapper cost ~10 µs a call (~15 µs in a
# compiled graph) against ~2 / ~5 µs here, on ~210 calls a SmolLM2 decode step. The C kernels register theirs
# in csrc/ops.cpp.
_OPS = torch.library.Library("compress", "FRAGMENT")
_OPS.define("int8pack_mm(Tensor x, Tensor w, Tensor scales) -> Tensor")


def _int8pack_mm(x: torch.Tensor, w: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """An opaque call for torch.compile: Inductor's own lowering of this aten op fails an assertion
    on a computed input (torch 2.13, CPU), so the compiled graph calls the kernel as it is."""
    return torch.ops.aten._weight_int8pack_mm(x, w, scales)


_OPS.impl("int8pack_mm", _int8pack_mm, "CPU")
torch.library.register_fake("compress::int8pack_mm", lambda x, w, scales: x.new_empty(x.shape[0], w.shape[0]), lib=_OPS)


def _int8_scales(mod: "QuantLinear") -> torch.Tensor:
    """The per-row scales [N] in the int8 kernels' dtype."""
    return mod.scales[:, 0].to(KERNEL_DTYPE).contiguous()


def int8pack_cpu(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """aten's int8 weight-only GEMM: reads int8 weights directly, scale per output channel (bf16: the
    fp32 kernel was 14× slower on our CPU)."""
    y = torch.ops.compress.int8pack_mm(x2d.to(KERNEL_DTYPE).contiguous(), mod.qweight, _int8_scales(mod))
    return y.to(x2d.dtype)


DEQUANT_SHAPES = 64  # one compiled loop per (shape, layout, dtype): a bench holds several models' shapes at once
_COMPILED_DEQUANT: dict[str, Callable | None] = {}  # per function: compiled once built, None once it failed (then eager)


def _dequant_cpu(mod: "QuantLinear", dtype: torch.dtype) -> torch.Tensor:
    """The weight in `dtype` through `dequant_weight` compiled into one C++ loop (2.7× the eager ops on our
    CPU, which make six passes over the weight); eager where Inductor cannot build or inside a compiled graph.
    Zero points folded into the int4 kernel's table are read back inside the same loop (eagerly, their
    few small ops per call cost 3% of a SmolLM2 prefill)."""
    from compress.formats.quant_linear import dequant_from_table, dequant_weight

    tail = (mod.layout, mod.qspec.bits, mod.qspec.group_for(mod.in_features), mod.in_features, dtype)
    if mod.__dict__.get("zeros_in_sz"):
        fn, args = dequant_from_table, (mod.qweight, mod.sz, mod.scales.shape[1], *tail)
    else:
        fn, args = dequant_weight, (mod.qweight, mod.scales.contiguous(), mod.zeros, *tail)
    name = fn.__name__
    if not COMPILE_DEQUANT or torch.compiler.is_compiling() or _COMPILED_DEQUANT.get(name, 0) is None:
        return fn(*args)
    if name not in _COMPILED_DEQUANT:
        _COMPILED_DEQUANT[name] = torch.compile(fn, dynamic=False)
    try:
        with torch._dynamo.config.patch(recompile_limit=DEQUANT_SHAPES):
            return _COMPILED_DEQUANT[name](*args)
    except Exception as e:  # no C++ compiler, an Inductor bug: the eager function is always right
        warnings.warn(f"compiled dequantize failed ({type(e).__name__}); prefill dequantizes eagerly", RuntimeWarning)
        _COMPILED_DEQUANT[name] = None
        return fn(*args)


def dequant(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """Unpack to x's dtype and call a dense matmul (the weight is dequantized per call, never kept)."""
    w = _dequant_cpu(mod, x2d.dtype) if x2d.device.type == "cpu" else mod.dense_weight(x2d.dtype)
    return F.linear(x2d, w)


def int4_kn_cpu(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """Prefill-sized int4 calls: Wᵀ unpacked in C straight from the kernel's layout and table (with bf16 scales
    bit-equal to `dequant`'s weight, in a third of its unpack time), then one dense bf16 matmul, or fp32 for fp32
    x (other input dtypes are cast around it, as for tinygemm). Nothing is kept between calls."""
    kp = mod.qspec.padded_in(mod.in_features)
    dtype = torch.float32 if x2d.dtype == torch.float32 else torch.bfloat16
    wt = native.int4_cpu_kn(mod.qweight, mod.sz, mod.out_features, kp, dtype)
    return torch.mm(x2d.to(dtype), wt[: mod.in_features]).to(x2d.dtype)


def int8_unpack_cpu(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """Prefill-sized int8 calls: W = q·s unpacked in C (bit-equal to `dequant`'s weight from bf16 scales, without its
    compiled loop's frame and passes), then one dense matmul in x's dtype. Nothing is kept between calls."""
    dtype = torch.float32 if x2d.dtype == torch.float32 else torch.bfloat16
    return F.linear(x2d.to(dtype), native.int8_unpack(mod.qweight, _int8_scales(mod), dtype)).to(x2d.dtype)


def int4_gemv_cpu(x2d: torch.Tensor, mod: "QuantLinear", q8: bool = False) -> torch.Tensor:
    """Decode-sized int4 calls: one streaming pass over the packed bytes per row of x, sums in fp32 from the exact
    codes (x cast to bf16 and padded to the packed K, as for tinygemm)."""
    kp = mod.qspec.padded_in(mod.in_features)
    xc = x2d.to(torch.bfloat16)
    if xc.shape[1] != kp:
        xc = F.pad(xc, (0, kp - xc.shape[1]))
    return native.int4_gemv(xc, mod.qweight, mod.sz, mod.out_features, q8=q8).to(x2d.dtype)


def int8_gemv_cpu(x2d: torch.Tensor, mod: "QuantLinear", q8: bool = False) -> torch.Tensor:
    """Decode-sized int8 calls: one streaming pass over the codes per row of x, fp32 sums times the row's scale
    (x and scales in bf16, as for aten's int8pack)."""
    return native.int8_gemv(x2d.to(KERNEL_DTYPE), mod.qweight, _int8_scales(mod), q8=q8).to(x2d.dtype)


def int4_gemv_q8_cpu(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """`int4_gemv_cpu` with x rounded to int8 blocks of 32 and integer sums (llama.cpp's Q8_0 activations): fewer
    instructions, for CPUs where the fp32 one is bound by them (not the default anywhere yet: `native.GEMV_Q8`)."""
    return int4_gemv_cpu(x2d, mod, q8=True)


def int8_gemv_q8_cpu(x2d: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """`int8_gemv_cpu` with x rounded to int8 blocks of 32 and integer sums: the int8 decode kernel on AVX2 CPUs."""
    return int8_gemv_cpu(x2d, mod, q8=True)


def _gemv_q8(mod: "QuantLinear") -> bool:
    """The int8-activation GEMVs where `native.GEMV_Q8` chose them for this bit width on this CPU and the blocks of 32
    tile K and the groups."""
    return (mod.qspec.bits in native.GEMV_Q8 and mod.qspec.padded_in(mod.in_features) % 32 == 0
            and mod.qspec.group_for(mod.in_features) % 32 == 0)


def _native_int4(x2d_dtype: torch.dtype, mod: "QuantLinear") -> bool:
    """`int4_kn_cpu` computes exactly what `dequant` does only from a bf16 table of bf16 scales (bf16 or fp32 x:
    an fp32 model on a CPU without bf16 hardware holds its checkpoint's bf16 scales)."""
    return (mod.layout == "cpu_int4" and x2d_dtype in (torch.bfloat16, torch.float32)
            and mod.scales.dtype == torch.bfloat16 and native.available())


def _native_int8(x2d_dtype: torch.dtype, mod: "QuantLinear") -> bool:
    """`int8_unpack_cpu` computes exactly what `dequant` does from bf16 scales (the checkpoint's, in any model)."""
    return (_int8_per_channel(mod) and x2d_dtype in (torch.bfloat16, torch.float32)
            and mod.scales.dtype == torch.bfloat16 and native.available())


KERNELS: dict[str, Callable[[torch.Tensor, "QuantLinear"], torch.Tensor]] = {
    "int8pack_cpu": int8pack_cpu, "int4pack_cpu": int4_tinygemm, "tinygemm": int4_tinygemm,
    "triton_int8": triton_int8.int8_triton, "int4_kn_cpu": int4_kn_cpu, "int8_unpack_cpu": int8_unpack_cpu, "int4_gemv_cpu": int4_gemv_cpu,
    "int8_gemv_cpu": int8_gemv_cpu, "int4_gemv_q8_cpu": int4_gemv_q8_cpu, "int8_gemv_q8_cpu": int8_gemv_q8_cpu,
    "dequant": dequant,
}


def choose_kernel(device: torch.device, m: int, mod: "QuantLinear", dtype: torch.dtype = torch.bfloat16) -> str:
    """The name (in KERNELS) of the kernel for an [m, K] input of `dtype` on `device`."""
    if device.type == "cpu":
        if _int8_per_channel(mod) and m <= CPU_GEMV_MAX_M and native.available():
            return "int8_gemv_q8_cpu" if _gemv_q8(mod) else "int8_gemv_cpu"
        if _int8pack_ok(mod) and m <= CPU_INT8PACK_MAX_M:
            return "int8pack_cpu"
        if mod.layout == "cpu_int4" and m <= CPU_GEMV_MAX_M and native.available():
            return "int4_gemv_q8_cpu" if _gemv_q8(mod) else "int4_gemv_cpu"
        if mod.layout == "cpu_int4" and m <= CPU_INT4PACK_MAX_M and int4_layout.aten_cpu_layout_matches():
            return "int4pack_cpu"
        if _native_int4(dtype, mod):
            return "int4_kn_cpu"
        if _native_int8(dtype, mod):
            return "int8_unpack_cpu"
    elif device.type == "cuda" and m <= CUDA_SMALL_M:
        if mod.layout == "cuda_tinygemm":
            return "tinygemm"
        if mod.qspec.bits == 8 and triton_int8.available():
            return "triton_int8"
    return "dequant"


def quant_linear(x: torch.Tensor, mod: "QuantLinear", kernel: str | None = None) -> torch.Tensor:
    """y = x · Wᵀ + b for a packed weight, on the best kernel for this call (or the one named)."""
    m = x.numel() // x.shape[-1]
    name = kernel or choose_kernel(x.device, m, mod, x.dtype)
    y = KERNELS[name](x.reshape(m, x.shape[-1]), mod).reshape(*x.shape[:-1], mod.out_features)
    return y if mod.bias is None else y + mod.bias.to(y.dtype)


def dequant_linear(x: torch.Tensor, mod: "QuantLinear") -> torch.Tensor:
    """Reference path: unpack to the input's dtype and call a dense matmul."""
    return F.linear(x, mod.dense_weight().to(x.dtype), None if mod.bias is None else mod.bias.to(x.dtype))
