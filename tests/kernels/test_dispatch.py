"""Every kernel that can run on this CPU, named explicitly, against fp64 x·Wᵀ of the unquantized weight;
and which kernel dispatch picks for each case."""
from __future__ import annotations

import copy

import pytest
import torch

from compress.algorithms.grid import QuantSpec
from compress.formats.int4_layout import aten_cpu_layout_matches
from compress.kernels import dispatch, native
from compress.kernels.dispatch import choose_kernel, quant_linear
from tests.kernels.quantized import build, check, make

SPECS = [QuantSpec(8, -1, True), QuantSpec(8, 64, False), QuantSpec(4, 32, False), QuantSpec(4, 128, True),
         QuantSpec(4, -1, False)]
CPU = torch.device("cpu")


def cpu_kernels(mod) -> list[str]:
    """The kernels that can run this module on a CPU."""
    names = ["dequant"]
    if dispatch._int8pack_ok(mod):
        names.append("int8pack_cpu")
    if dispatch._int8_per_channel(mod) and native.library() is not None:
        names += ["int8_gemv_cpu"] + (["int8_gemv_q8_cpu"] if mod.in_features % 32 == 0 else [])
    if dispatch._native_int8(torch.float32, mod):
        names.append("int8_unpack_cpu")
    if mod.layout == "cpu_int4":
        if aten_cpu_layout_matches():
            names.append("int4pack_cpu")
        if native.library() is not None:
            names += ["int4_kn_cpu", "int4_gemv_cpu", "int4_gemv_q8_cpu"]
    return names


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("m", [1, 7, 16, 17, 512])
@pytest.mark.parametrize("nk", [(64, 576), (48, 80), (70, 40)])  # SmolLM2's K=576 (not a multiple of 128); odd tiny shapes
def test_every_cpu_kernel_matches_the_unquantized_matmul(spec, m, nk):
    case = build(spec, *nk)
    x = torch.randn(m, nk[1], generator=torch.Generator().manual_seed(m))
    for name in cpu_kernels(case.mod):
        eps = 1e-6 if name == "dequant" else 2.0**-6 if "q8" in name else 2.0**-8  # bf16 / int8 activations
        check(quant_linear(x, case.mod, name), x, case, eps)
    check(quant_linear(x, case.mod), x, case)  # whatever dispatch picks


def test_dispatch_choices_on_cpu(monkeypatch):
    monkeypatch.setattr(native, "GEMV_Q8", frozenset())  # the int8-activation GEMVs: tests/kernels/test_gemv_q8.py
    int8, int4 = make(QuantSpec(8, -1, True), 64, 576), make(QuantSpec(4, 64, False), 64, 576)
    native_ok = native.library() is not None
    assert choose_kernel(CPU, 1, int8) == ("int8_gemv_cpu" if native_ok else "int8pack_cpu")
    assert choose_kernel(CPU, dispatch.CPU_GEMV_MAX_M + 1, int8) == "int8pack_cpu"
    assert choose_kernel(CPU, dispatch.CPU_INT8PACK_MAX_M + 1, int8) == "dequant"  # fp32 scales: the C unpack reads bf16
    bf16_scales = int8.to(torch.bfloat16)
    assert choose_kernel(CPU, dispatch.CPU_INT8PACK_MAX_M + 1, bf16_scales) == ("int8_unpack_cpu" if native_ok else "dequant")
    aten = "int4pack_cpu" if aten_cpu_layout_matches() else "dequant"  # AVX2: aten's kernel reads other blocks
    gemv = "int4_gemv_cpu" if native_ok else aten
    assert choose_kernel(CPU, 1, int4) == gemv
    assert choose_kernel(CPU, dispatch.CPU_GEMV_MAX_M + 1, int4) == aten
    assert choose_kernel(CPU, dispatch.CPU_INT4PACK_MAX_M, int4) == aten
    assert choose_kernel(CPU, dispatch.CPU_INT4PACK_MAX_M + 1, int4) == "dequant"
    odd = make(QuantSpec(4, 64, False), 32, 80)  # K=80 padded to 128: group 64 tiles it
    assert odd.layout == "cpu_int4" and choose_kernel(CPU, 1, odd) == gemv
    n24 = make(QuantSpec(4, 64, False), 24, 64)  # N not a multiple of 16: no tinygemm layout
    assert n24.layout == "portable" and choose_kernel(CPU, 1, n24) == "dequant"
    k40 = make(QuantSpec(8, -1, True), 16, 40)  # K % 16: bf16 int8pack is wrong there; the C GEMV is not
    assert choose_kernel(CPU, 1, k40) == ("int8_gemv_cpu" if native_ok else "dequant")
    assert choose_kernel(CPU, dispatch.CPU_GEMV_MAX_M + 1, k40) == "dequant"


def test_kernel_that_ran_is_the_one_named(monkeypatch):
    """quant_linear really calls the chosen kernel (a swapped table entry shows up in the output)."""
    case = build(QuantSpec(4, 64, False), 64, 576)
    x = torch.randn(3, 576)
    calls = []
    name = choose_kernel(CPU, 3, case.mod, x.dtype)  # aten's int4pack, or dequantize where aten's layout differs
    real = dispatch.KERNELS[name]
    monkeypatch.setitem(dispatch.KERNELS, name, lambda x2d, m: calls.append(x2d.shape) or real(x2d, m))
    check(quant_linear(x, case.mod), x, case)
    assert calls == [(3, 576)]


def test_batched_input_and_bias():
    case = build(QuantSpec(4, 32, False), 32, 64)
    x = torch.randn(2, 3, 64)
    y = quant_linear(x, case.mod)
    assert y.shape == (2, 3, 32)
    check(y, x, case)


@pytest.mark.parametrize("spec", [QuantSpec(4, 64, False), QuantSpec(4, -1, True), QuantSpec(8, -1, True), QuantSpec(8, 32, False)], ids=str)
def test_compiled_and_eager_dequantize_agree(spec, monkeypatch):
    """The prefill path's compiled dequantize is the eager function, value for value, in a bf16 model (how CPU
    packed models load). With fp32 scales Inductor skips eager's intermediate bf16 rounding of the scale: one
    bf16 step apart at most."""
    case = build(spec, 80, 576)
    x = torch.randn(100, 576, dtype=torch.bfloat16)
    fp32_scales = quant_linear(x, case.mod, "dequant")
    mod16 = copy.deepcopy(case.mod).to(torch.bfloat16)
    compiled = quant_linear(x, mod16, "dequant")
    monkeypatch.setattr(dispatch, "COMPILE_DEQUANT", False)
    assert torch.equal(quant_linear(x, mod16, "dequant"), compiled)
    check(fp32_scales, x, case)
    check(compiled, x, case)  # bf16 int4: scales and zeros read back from the kernel's table in the loop


def test_dequantize_falls_back_to_eager_when_compiling_fails(monkeypatch):
    case = build(QuantSpec(4, 64, False), 64, 576)
    x = torch.randn(100, 576)

    def no_compiler(fn, **kw):
        def f(*a):
            raise RuntimeError("no C++ compiler")
        return f

    monkeypatch.setattr(dispatch, "_COMPILED_DEQUANT", {})
    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(RuntimeWarning, match="compiled dequantize failed"):
        check(quant_linear(x, case.mod, "dequant"), x, case, eps=1e-6)
    assert dispatch._COMPILED_DEQUANT == {"dequant_weight": None}
    check(quant_linear(x, case.mod, "dequant"), x, case, eps=1e-6)  # eager from now on, silently


def test_compiled_dequantize_serves_more_shapes_than_dynamos_default_limit(monkeypatch):
    """A bench holds several models at once (≥ 11 weight shapes for SmolLM2 int4 + int8): every shape
    must get its compiled loop, not fall back to eager after dynamo's default 8 recompiles."""
    import torch._dynamo

    torch._dynamo.reset()
    monkeypatch.setattr(dispatch, "_COMPILED_DEQUANT", {})
    torch._dynamo.utils.counters.clear()
    for n in range(16, 16 * 13, 16):  # 12 shapes
        case = build(QuantSpec(8, 32, False), n, 64, bias=False)
        x = torch.randn(80, 64)
        check(quant_linear(x, case.mod, "dequant"), x, case, eps=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 12, dict(torch._dynamo.utils.counters["stats"])
